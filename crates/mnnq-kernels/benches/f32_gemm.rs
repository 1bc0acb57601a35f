//! fp32 GEMM throughput on shapes typical of EfficientNet-Lite0 / MobileNetV3 pointwise
//! convolutions, ours against the `gemm` crate, one thread.
//!
//! `cargo bench -p mnnq-kernels --bench f32_gemm`; throughput is reported in elements/s where one
//! element is one floating-point operation (2 per multiply-add), i.e. the figure is FLOP/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mnnq_kernels::dispatch::active_isa;
use mnnq_kernels::f32::{gemm, PackedWeights};
use mnnq_kernels::Activation;
use std::hint::black_box;
use std::time::Duration;

/// (M pixels, K, N).
const SHAPES: [(usize, usize, usize); 6] = [
    (3136, 144, 24),
    (3136, 24, 144),
    (784, 240, 40),
    (196, 480, 80),
    (196, 80, 480),
    (49, 1152, 320),
];

fn data(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn bench_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("f32_gemm");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    for &(m, k, n) in &SHAPES {
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let bias = data(n, 3);
        let mut out = vec![0.0f32; m * n];
        let shape = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));

        let packed = PackedWeights::pack_matrix(&b, k, n);
        group.bench_function(
            BenchmarkId::new(format!("mnnq_{}", active_isa()), &shape),
            |bench| {
                bench.iter(|| {
                    gemm(
                        m,
                        black_box(&a),
                        k,
                        &packed,
                        &bias,
                        Activation::Relu6,
                        &mut out,
                        n,
                    );
                })
            },
        );

        group.bench_function(BenchmarkId::new("gemm_crate", &shape), |bench| {
            bench.iter(|| unsafe {
                // dst = 0 * dst + 1 * lhs * rhs, all row-major, one thread.
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
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
