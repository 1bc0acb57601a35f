//! The `.mnn` file format: our own FlatBuffers schema of MNN's `Net` (in `schema/`), the Rust code
//! planus generates from it, loading and saving with clear errors, and the codecs for convolution
//! weights (plain float, IDSTQuan code-book and sparse forms, the external `.weight` sidecar).
