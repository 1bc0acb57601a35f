//! GEMM throughput of the engine's backend on convolution-like shapes.

use mnnq_engine::backend::{gemm_rows, PackedMatrix};
use mnnq_kernels::Activation;

fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    for &(m, k, n) in &[
        (12544, 27, 32),
        (12544, 16, 96),
        (3136, 144, 24),
        (784, 240, 80),
        (196, 672, 112),
        (49, 1152, 320),
        (49, 320, 1280),
        (1, 1280, 1000),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let packed = PackedMatrix::pack(k, n, |kk, j| ((kk + j) % 5) as f32 * 0.1);
        let bias = vec![0.0f32; n + 32];
        let mut c = vec![0.0f32; m * n];
        let reps = (2e8 / (m * k * n) as f64).ceil() as usize;
        let t0 = cpu_ns();
        for _ in 0..reps {
            for p0 in (0..m).step_by(96) {
                let rows = 96.min(m - p0);
                gemm_rows(
                    &a[p0 * k..],
                    k,
                    rows,
                    &packed,
                    0,
                    n,
                    &bias,
                    Activation::Relu6,
                    &mut c[p0 * n..],
                    n,
                );
            }
        }
        let secs = (cpu_ns() - t0) as f64 * 1e-9;
        println!(
            "{m}x{k}x{n}: {:.1} GFLOP/s ({:.3} ms each)",
            2.0 * (m * k * n * reps) as f64 / secs * 1e-9,
            secs * 1e3 / reps as f64
        );
    }
}
