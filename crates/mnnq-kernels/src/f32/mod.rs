//! fp32 kernels of the float engine, NHWC activations (channels innermost).
//!
//! * [`PackedWeights`] + [`gemm`]: packed GEMM, `C = act(A B + bias)`, with bias, clamp and
//!   store fused into the micro-kernel's last step and `ldc` so `C` can be a channel slice of a
//!   wider tensor. Micro-kernels (rows x columns of `C` in registers): AVX-512 12 x 32 (and
//!   12 x 16 for a narrow last panel), AVX2 6 x 16 (6 x 8), portable 4 x 16 (4 x 8); edge
//!   rows by smaller monomorphised tiles, edge columns by masked loads/stores of `C`.
//! * [`conv2d_nhwc`]: dense convolution, any kernel/stride/dilation/padding. Pointwise goes
//!   straight to the GEMM; 32+ input channels run one GEMM pass per kernel tap on the input in
//!   place; fewer (the 3-channel stem) gather a tile of output pixels by im2col into a small
//!   per-thread buffer.
//! * [`PackedDepthwise`] + [`depthwise_conv2d_nhwc`]: depthwise convolution over channel vectors,
//!   register-blocked rows for 3- and 5-wide kernels at stride 1 and 2, a generic path for the
//!   rest, border pixels with clipped tap ranges.
//! * [`deconv2d_nhwc`]: transposed convolution (groups = 1), GEMM into a column buffer, then a
//!   gather (col2im) with bias and activation.
//! * [`max_pool2d_nhwc`], [`avg_pool2d_nhwc`], [`global_avg_pool_nhwc`]: pooling.
//! * [`activation::sigmoid_in_place`]: the sigmoid with a vectorised exponential of its own.
//!
//! Instruction set: [`PackedWeights`] is packed for [`crate::dispatch::active_isa`] (or the ISA
//! given to a `*_for` constructor) and every GEMM-based kernel runs that ISA's micro-kernels;
//! the other entry points use `active_isa()`, with `*_isa` variants taking it explicitly (tests
//! compare every supported ISA that way). Work is split between threads by the caller through
//! output pixel or row ranges; no kernel splits a reduction, so the output bytes do not depend on
//! the split.

pub mod activation;
mod col2im;
mod conv;
mod depthwise;
mod gemm;
pub mod mnn_exact;
mod pack;
mod pool;
pub mod reference;
mod simd;
mod winograd;

pub use conv::{conv2d_nhwc, deconv2d_nhwc};
pub use depthwise::{depthwise_conv2d_nhwc, depthwise_conv2d_nhwc_isa, PackedDepthwise};
pub use gemm::gemm;
pub use pack::PackedWeights;
pub use pool::{
    avg_pool2d_nhwc, global_avg_pool_nhwc, global_avg_pool_nhwc_isa, max_pool2d_nhwc,
    pool2d_nhwc_isa, PoolKind,
};
pub use winograd::{
    mnn_winograd_unit, winograd_conv3x3_nhwc, WinogradWeights, WINOGRAD_TILE_BATCH,
};
