//! int8 kernels: u8 x s8 GEMM (VNNI, AVX-VNNI, AVX2, portable) with a fused requantize epilogue,
//! int8 depthwise convolution and pooling, with MNN's rounding.
