//! The executor: static shape inference, memory planning and op execution for float (and, next,
//! int8) MNN models. Hot loops live in `backend` (to be replaced by `mnnq-kernels`); this crate
//! decides what runs where.
//!
//! ```no_run
//! # fn main() -> Result<(), mnnq_engine::EngineError> {
//! use mnnq_engine::{Engine, Session, Tensor};
//! let engine = Engine::load("model.mnn")?;
//! let mut session = Session::new(&engine, 1)?;
//! let outputs = session.run(&[("input", Tensor::zeros(&[1, 3, 224, 224]))])?;
//! # Ok(()) }
//! ```

pub mod backend;
pub mod engine;
pub mod error;
pub mod import;
pub mod int8;
pub mod ir;
pub mod ops;
pub mod session;
pub mod shape;
pub mod tensor;

pub use engine::Engine;
pub use error::EngineError;
pub use session::Session;
pub use tensor::{DType, Layout, Tensor, TensorView};
