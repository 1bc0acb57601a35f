//! fp32 kernels of the float engine, NHWC activations (channels innermost).
//!
//! * [`PackedWeights`] + [`gemm`]: packed GEMM with bias and activation fused into the store.
//! * [`conv2d_nhwc`]: dense convolution (pointwise straight to GEMM, the rest by im2col of a
//!   small tile of output pixels).
//! * [`PackedDepthwise`] + [`depthwise_conv2d_nhwc`]: depthwise convolution over channel vectors.
//! * [`deconv2d_nhwc`]: transposed convolution, GEMM then a gather of the column buffer.
//! * [`max_pool2d_nhwc`], [`avg_pool2d_nhwc`], [`global_avg_pool_nhwc`]: pooling.
//!
//! Every entry point runs the kernel of [`crate::dispatch::active_isa`] (or, for the GEMM family,
//! of the ISA the weights were packed for); `*_isa` variants take the ISA explicitly for tests.
//! Work is split between threads by the caller through output row or pixel ranges; no kernel
//! splits a reduction, so results do not depend on the split.

mod col2im;
mod conv;
mod depthwise;
mod gemm;
mod pack;
mod pool;
pub mod reference;
mod simd;

pub use conv::{conv2d_nhwc, deconv2d_nhwc};
pub use depthwise::{depthwise_conv2d_nhwc, depthwise_conv2d_nhwc_isa, PackedDepthwise};
pub use gemm::gemm;
pub use pack::PackedWeights;
pub use pool::{
    avg_pool2d_nhwc, global_avg_pool_nhwc, global_avg_pool_nhwc_isa, max_pool2d_nhwc,
    pool2d_nhwc_isa, PoolKind,
};
