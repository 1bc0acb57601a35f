//! int8 kernels with MNN's arithmetic (`docs/mnn-quantization.md` §11).
//!
//! Feature codes are i8 in `[-127, 127]` with zero point 0, NHWC (channels innermost). Every
//! instruction set (AVX-512 VNNI, AVX-512, AVX2, portable) produces exactly the bytes of the
//! portable reference: integer accumulation is exact, and the f32 epilogues use the same
//! operations in the same order everywhere (separate multiply and add, no FMA; round half away
//! from zero, which SIMD code computes as `trunc(y + copysign(0.49999997, y))`).
//!
//! * Dense convolution ([`conv2d_int8_nhwc`]): weights packed once ([`PackedInt8Weights`]),
//!   per-channel [`Requantize`] fused into the GEMM micro-kernel's store. Pointwise convolutions
//!   read the input directly; others im2col a chunk of pixels into per-thread scratch.
//! * Depthwise convolution ([`depthwise_int8_nhwc`], [`PackedDepthwiseInt8`],
//!   [`DepthwiseRequantize`]) with MNN's truncated integer bias.
//! * Pooling ([`pool_int8_nhwc`]), casts ([`float_to_int8`], [`int8_to_float`]) and binary ops
//!   ([`binary_int8`]).
//! * Elementwise int8 -> int8 functions as exact 256-entry tables ([`CodeTable`],
//!   [`lookup_int8`]) and strided byte copies ([`copy_strided_i8`]).
//!
//! Work is split by the caller over output pixels or rows; K is never split, so the bytes do not
//! depend on the thread count. Kernels keep their scratch in thread-locals.

#[cfg(target_arch = "x86_64")]
pub mod amx;
pub mod conv;
pub mod depthwise;
pub mod elementwise;
pub mod lut;
pub mod movement;
pub mod pack;
pub mod pool;
pub mod requant;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use conv::{conv2d_int8_nhwc, conv2d_int8_nhwc_blocks};
pub use depthwise::{depthwise_int8_nhwc, PackedDepthwiseInt8};
pub use elementwise::{
    binary_channel_values_int8, binary_int8, float_to_int8, float_to_int8_zero_point,
    int8_to_float, int8_to_float_zero_point, BinaryInt8, BinaryScales,
};
pub use lut::{lookup_int8, CodeTable};
pub use movement::copy_strided_i8;
pub use pack::{PackedInt8Weights, WeightLayout};
pub use pool::{pool_int8_nhwc, PoolKind};
pub use requant::{DepthwiseRequantize, Requantize};
