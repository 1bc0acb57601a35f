use std::path::PathBuf;

/// Why a model could not be quantized. Every variant names the file or the op concerned.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Config(#[from] mnnq_preprocess::ConfigError),
    #[error(transparent)]
    Format(#[from] mnnq_format::FormatError),
    #[error("cannot prepare model {model} for calibration: {message}")]
    Engine { model: String, message: String },
    #[error("calibration run failed on {}: {message}", image.display())]
    Run { image: PathBuf, message: String },
    #[error("{0}")]
    Calibrate(#[from] mnnq_calibrate::CalibrateError),
    #[error("op {op:?}: {message}")]
    Op { op: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("no calibration image of {} could be used ({skipped} skipped)", folder.display())]
    NoImages { folder: PathBuf, skipped: usize },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
