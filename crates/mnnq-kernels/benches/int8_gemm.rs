//! int8 convolution throughput on typical EfficientNet-Lite / PP-OCR shapes, per instruction set.
//!
//! Criterion's "thrpt" line is in G elements/s with one element = one multiply-accumulate, i.e.
//! GMAC/s. Peak for one Zen 5 core with `vpdpbusd` is about 525 GMAC/s.
//! Run: `cargo bench -p mnnq-kernels --bench int8_gemm` (set `MNNQ_BENCH_ISA=avx512vnni` to
//! bench one instruction set only).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mnnq_kernels::dispatch::Isa;
use mnnq_kernels::int8::{conv2d_int8_nhwc, PackedInt8Weights, Requantize};
use mnnq_kernels::ConvGeometry;

/// (label, out_h, out_w, in_c, out_c, kernel, stride)
const SHAPES: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("pw_3136x144x24", 56, 56, 144, 24, 1, 1),
    ("pw_196x480x80", 14, 14, 480, 80, 1, 1),
    ("pw_784x40x240", 28, 28, 40, 240, 1, 1),
    ("pw_49x1152x320", 7, 7, 1152, 320, 1, 1),
    ("pw_3136x24x144", 56, 56, 24, 144, 1, 1),
    ("c3x3s2_12544x27x32", 112, 112, 3, 32, 3, 2),
    ("c3x3_1600x576x64", 40, 40, 64, 64, 3, 1),
];

fn bench(c: &mut Criterion) {
    let only = std::env::var("MNNQ_BENCH_ISA")
        .ok()
        .and_then(|s| Isa::parse(&s));
    let mut group = c.benchmark_group("int8_conv");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    for &(label, out_h, out_w, in_c, out_c, k, stride) in SHAPES {
        let pad = k / 2;
        let geom = ConvGeometry {
            in_h: out_h * stride,
            in_w: out_w * stride,
            in_c,
            out_h,
            out_w,
            out_c,
            kernel_h: k,
            kernel_w: k,
            stride_h: stride,
            stride_w: stride,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: pad,
            pad_left: pad,
        };
        let input: Vec<i8> = (0..geom.in_h * geom.in_w * in_c)
            .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
            .collect();
        let w: Vec<i8> = (0..out_c * in_c * k * k)
            .map(|i| ((i * 91 % 255) as i32 - 127) as i8)
            .collect();
        let rq = Requantize::for_conv(
            &vec![0.01; out_c],
            &vec![0.1; out_c],
            &vec![0; out_c],
            0.05,
            0.5,
            true,
        );
        let macs = (geom.pixels() * in_c * k * k * out_c) as u64;
        group.throughput(Throughput::Elements(macs));
        let mut out = vec![0i8; geom.pixels() * out_c];
        for isa in Isa::supported() {
            if only.is_some_and(|o| o != isa) || isa == Isa::Portable {
                continue;
            }
            let packed = PackedInt8Weights::pack_conv_for(isa, &w, out_c, in_c, k, k);
            group.bench_function(BenchmarkId::new(label, isa.name()), |b| {
                b.iter(|| {
                    conv2d_int8_nhwc(
                        &geom,
                        &input,
                        &packed,
                        &rq,
                        &mut out,
                        out_c,
                        0..geom.pixels(),
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
