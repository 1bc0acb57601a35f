//! Best-of-N GFLOP/s of the fp32 GEMM on typical pointwise-convolution shapes, plus a register-only
//! FMA loop measuring what the core delivers right now (the machine is shared, so compare
//! against that as well as against the nominal peak).
//!
//! `cargo run --release -p mnnq-kernels --example f32_gemm_gflops [repeats]`

use mnnq_kernels::dispatch::active_isa;
use mnnq_kernels::f32::{gemm, PackedWeights};
use mnnq_kernels::Activation;
use std::hint::black_box;
use timing::{best_seconds, data};

#[path = "common/timing.rs"]
mod timing;

/// 4.1 GHz x 2 FMA ports x 16 lanes x 2 FLOP.
const NOMINAL_PEAK_GFLOPS: f64 = 262.4;

const SHAPES: [(usize, usize, usize); 8] = [
    (3136, 144, 24),
    (3136, 24, 144),
    (12544, 32, 16),
    (784, 240, 40),
    (196, 480, 80),
    (196, 80, 480),
    (49, 1152, 320),
    (49, 320, 1280),
];

#[cfg(target_arch = "x86_64")]
fn fma_loop_gflops(repeats: usize) -> Option<f64> {
    if !is_x86_feature_detected!("avx512f") {
        return None;
    }
    #[target_feature(enable = "avx512f")]
    unsafe fn run(iterations: usize) -> f32 {
        use std::arch::x86_64::*;
        let mut acc = [_mm512_set1_ps(0.0); 16];
        let x = _mm512_set1_ps(0.999_999);
        let y = _mm512_set1_ps(1e-7);
        for _ in 0..iterations {
            for acc in acc.iter_mut() {
                *acc = _mm512_fmadd_ps(*acc, x, y);
            }
        }
        let mut total = _mm512_setzero_ps();
        for acc in acc {
            total = _mm512_add_ps(total, acc);
        }
        _mm512_reduce_add_ps(total)
    }
    let iterations = 20_000;
    let seconds = best_seconds(repeats, || {
        black_box(unsafe { run(black_box(iterations)) });
    });
    Some((iterations * 16 * 16 * 2) as f64 / seconds / 1e9)
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_loop_gflops(_: usize) -> Option<f64> {
    None
}

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    println!("isa {}, best of {repeats}", active_isa());
    if let Some(gflops) = fma_loop_gflops(repeats) {
        println!(
            "register-only FMA loop: {gflops:.1} GFLOP/s ({:.0}% of nominal {NOMINAL_PEAK_GFLOPS})",
            100.0 * gflops / NOMINAL_PEAK_GFLOPS
        );
    }
    println!(
        "{:>16} {:>9} {:>7} {:>9} {:>7}",
        "MxKxN", "mnnq", "%peak", "gemm", "%peak"
    );
    for (m, k, n) in SHAPES {
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let bias = data(n, 3);
        let mut out = vec![0.0f32; m * n];
        let flops = (2 * m * k * n) as f64;
        let packed = PackedWeights::pack_matrix(&b, k, n);
        let ours = flops
            / best_seconds(repeats, || {
                gemm(
                    m,
                    black_box(&a),
                    k,
                    &packed,
                    &bias,
                    Activation::Relu6,
                    &mut out,
                    n,
                )
            })
            / 1e9;
        let theirs = flops
            / best_seconds(repeats, || unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    black_box(a.as_ptr()),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            })
            / 1e9;
        println!(
            "{:>16} {ours:>9.1} {:>6.0}% {theirs:>9.1} {:>6.0}%",
            format!("{m}x{k}x{n}"),
            100.0 * ours / NOMINAL_PEAK_GFLOPS,
            100.0 * theirs / NOMINAL_PEAK_GFLOPS
        );
    }
}
