//! Errors of loading and running models.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    /// The model file could not be read or decoded (the message names the file).
    #[error("{0}")]
    Load(String),
    /// The model file was decoded but cannot be run.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// The model is inconsistent as a whole.
    #[error("model: {0}")]
    Model(String),
    /// One op is unsupported or malformed.
    #[error("op {op_type} '{op_name}': {message}")]
    Op {
        op_type: String,
        op_name: String,
        message: String,
    },
    /// Bad run-time input or resources.
    #[error("{0}")]
    Run(String),
}
