use std::path::PathBuf;

/// Errors of this crate: bad arguments from the caller or an unreadable MNN scale report.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("cannot merge histograms built for different ranges (max |x| {ours} vs {theirs})")]
    HistogramRangeMismatch { ours: f32, theirs: f32 },
    #[error("cannot merge histograms with different bin counts ({ours} vs {theirs})")]
    HistogramBinsMismatch { ours: usize, theirs: usize },
    #[error("invalid weights: {0}")]
    InvalidWeights(String),
    #[error("invalid clamp value {0}: must be an integer in [1, 127]")]
    InvalidClamp(f32),
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("cannot read MNN scale report {path}: {source}")]
    ReportIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("MNN scale report {path} is malformed: {message}")]
    ReportFormat { path: PathBuf, message: String },
}
