//! fp32 kernels: packed GEMM with fused epilogues, depthwise convolution, pooling, elementwise.
