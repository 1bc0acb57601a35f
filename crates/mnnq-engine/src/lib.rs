//! The executor: static shape inference, memory planning and op execution for float (and, next,
//! int8) MNN models.
//!
//! Load ([`Engine::load`]) runs once per model:
//! 1. `import`: the MNN `Net` (from `mnnq-format`) becomes a [`ir::ModelIr`] of ops with plain
//!    parameter structs; an unsupported op fails here with its type and name.
//! 2. `shape`: MNN's shape rules give every tensor's logical shape, dtype and MNN format (NCHW,
//!    NHWC, NC4HW4); shape arithmetic on constants (Shape, Rank, Reshape targets, slice bounds...)
//!    is folded with the same op code that runs at run time (`ops::reference`).
//! 3. `engine`: layouts (NC4HW4 -> channels-last in memory, everything else row-major; window ops
//!    get a conversion step when their input is not channels-last), the schedule
//!    ([`engine::Step`]), per-op prepared state (packed weights, pooling windows, resize
//!    coordinates) and a liveness-based arena plan ([`engine::MemoryPlan`]).
//!
//! 4. `fuse`: chains of elementwise steps (BinaryOp with a constant scalar or per-channel operand,
//!    UnaryOp, ReLU, ReLU6) are marked to run as one pass, bit-identical to the separate steps
//!    (plain runs only; observed and fake-quantized runs keep every step; `MNNQ_FUSE=0` disables).
//!
//! A model whose shapes depend on input values (Range on run-time inputs) is prepared anew per
//! run with the inputs as constants ([`Engine::is_value_dependent`], [`Engine::specialize`]).
//!
//! A [`Session`] owns the arena and a rayon pool; work is cut into pieces whose number depends on
//! the problem only, so outputs are bit-identical for any thread count (with more than one thread,
//! dense convolutions and small depthwise outputs are cut finer, which does not change any
//! output's arithmetic). MNN-exact mode (`MNNQ_MNN_EXACT=1`, off by default, see
//! `ops::window::mnn_exact_mode`) runs float convolutions, deconvolutions and sigmoid with MNN
//! 3.6.1's own arithmetic (including its Winograd, alone with `MNNQ_WINOGRAD=1`), so float models
//! give MNN's output bytes (the three shared models do; `tests/golden_mnn_exact.rs`). Convolutions run on
//! `mnnq-kernels` (f32 GEMM/depthwise), with the engine's own `backend` for grouped convolutions,
//! deconvolutions and as a fallback (`MNNQ_ENGINE_KERNELS=own`).
//!
//! For the int8 runtime: the graph, shapes, schedule and memory plan are independent of the
//! element type (slots carry a [`DType`]); an int8 mode adds prepared int8 ops (weights with
//! per-channel scales, int32 accumulation, requantization) next to [`engine::Prepared`].
//! [`Session::run_observed`] shows every tensor (logical NCHW order) to calibration, and
//! [`Session::set_fake_quant`] quantize-dequantizes chosen tensors for diagnostics.
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
pub mod fuse;
pub mod import;
pub mod int8;
pub mod ir;
pub mod ops;
pub mod session;
pub mod shape;
pub mod tensor;

pub use engine::Engine;
pub use error::EngineError;
/// The window of a prepared convolution ([`ops::window::PreparedConv::geometry`]).
pub use mnnq_kernels::ConvGeometry;
pub use session::{FakeQuant, Session};
pub use tensor::{DType, Layout, Tensor, TensorView};
