//! Naive fp32 reference implementations: obviously correct loops, no blocking, no SIMD.
//! Tests compare every kernel and ISA against these.

use crate::geometry::Activation;

/// `C = act(A B + bias)` with `A` `m x k` row-major, `B` `k x n` row-major, `C` `m x n`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b_kn: &[f32],
    bias: &[f32],
    act: Activation,
    c: &mut [f32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0.0f32;
            for p in 0..k {
                sum += a[i * k + p] * b_kn[p * n + j];
            }
            c[i * n + j] = act.apply(sum + bias.get(j).copied().unwrap_or(0.0));
        }
    }
}
