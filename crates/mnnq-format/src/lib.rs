//! The `.mnn` file format: our own FlatBuffers schema of MNN's `Net` (in `schema/`), the Rust code
//! planus generates from it, loading and saving with clear errors, and the codecs for convolution
//! weights (plain float, IDSTQuan code-book and sparse forms, the external `.weight` sidecar).
//!
//! Everything in the schema is re-exported at the crate root: `Net`, `Op`, `OpType`,
//! `OpParameter`, `Convolution2D`, `IDSTQuan`, `TensorDescribe`, ... are owned planus types that
//! can be built, edited and written back with [`Model::to_bytes`] / [`Model::save`].

#[cfg(test)]
mod doc_check;
mod error;
mod external;
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

/// MNN's own spelling of enum values (planus renames them to Rust style, e.g. `ReLU6` becomes
/// `OpType::ReLu6`), for messages and reports.
pub mod names {
    use crate::{DataType, MnnDataFormat, OpType};

    /// `"Convolution"`, `"ReLU6"`, `"Pooling3D"`, ...
    pub fn op_type(value: OpType) -> &'static str {
        crate::schema_layout::op_type(value as i64).unwrap_or("?")
    }

    /// `"DT_FLOAT"`, `"DT_INT8"`, ...
    pub fn data_type(value: DataType) -> &'static str {
        crate::schema_layout::data_type(value as i64).unwrap_or("?")
    }

    /// `"NCHW"`, `"NHWC"`, `"NC4HW4"`, ...
    pub fn data_format(value: MnnDataFormat) -> &'static str {
        crate::schema_layout::data_format(value as i64).unwrap_or("?")
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_enum_value_has_its_mnn_name() {
            assert!(OpType::ENUM_VALUES.iter().all(|&t| op_type(t) != "?"));
            assert_eq!(op_type(OpType::ReLu6), "ReLU6");
            assert_eq!(op_type(OpType::Convolution), "Convolution");
            assert_eq!(data_type(DataType::DtInt8), "DT_INT8");
            assert_eq!(data_format(MnnDataFormat::Nc4hw4), "NC4HW4");
        }
    }
}
