//! The `.mnn` file format: our own FlatBuffers schema of MNN's `Net` (in `schema/`), the Rust code
//! planus generates from it, loading and saving with clear errors, and the codecs for convolution
//! weights (plain float, IDSTQuan code-book and sparse forms, the external `.weight` sidecar).
//!
//! Everything in the schema is re-exported at the crate root: `Net`, `Op`, `OpType`,
//! `OpParameter`, `Convolution2D`, `IDSTQuan`, `TensorDescribe`, ... are owned planus types that
//! can be built, edited and written back with [`Model::to_bytes`] / [`Model::save`].

mod error;
mod model;
mod verify;
#[rustfmt::skip]
mod schema_layout;

#[rustfmt::skip]
#[allow(clippy::all, clippy::pedantic, missing_docs, unused_imports, dead_code, non_camel_case_types)]
mod generated;

pub mod weights;

pub use error::FormatError;
pub use generated::mnn::*;
pub use model::{ExternalData, Model, SIDECAR_SUFFIX};
pub use verify::{Limits, VerifyError};

/// The planus runtime the generated types belong to (for callers that need its traits).
pub use planus;
