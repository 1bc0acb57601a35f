use std::path::PathBuf;

/// Why a model could not be read or written. Every variant names the file (or the origin string
/// given to [`crate::Model::from_bytes`]) so that messages make sense on their own.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: not a valid MNN model: {detail}")]
    Malformed { origin: String, detail: String },
    #[error("{origin}: external weights: {detail}")]
    External { origin: String, detail: String },
    #[error("{origin}: cannot write the model: {detail}")]
    Write { origin: String, detail: String },
}

impl FormatError {
    pub(crate) fn malformed(origin: &str, detail: impl Into<String>) -> Self {
        FormatError::Malformed {
            origin: origin.to_string(),
            detail: detail.into(),
        }
    }
}
