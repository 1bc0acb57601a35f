//! int8 kernels with MNN's arithmetic (`docs/mnn-quantization.md` §11): u8 x s8 GEMM (AVX-512
//! VNNI, AVX-512, AVX2, portable) with a fused requantize epilogue for dense convolutions,
//! depthwise convolution, pooling, casts and elementwise binary ops.
//!
//! Feature codes are i8 in `[-127, 127]` with zero point 0, NHWC (channels innermost). Every
//! instruction set produces exactly the bytes of the portable reference.

pub mod conv;
pub mod pack;
pub mod requant;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use conv::conv2d_int8_nhwc;
pub use pack::{PackedInt8Weights, WeightLayout};
pub use requant::{DepthwiseRequantize, Requantize};
pub mod depthwise;
pub mod elementwise;
pub mod pool;

pub use depthwise::{depthwise_int8_nhwc, PackedDepthwiseInt8};
pub use elementwise::{binary_int8, float_to_int8, int8_to_float, BinaryInt8, BinaryScales};
pub use pool::{pool_int8_nhwc, PoolKind};
