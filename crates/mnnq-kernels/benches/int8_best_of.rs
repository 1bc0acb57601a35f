//! Best-of-many timing of the int8 convolution on a busy machine: criterion's mean is dominated
//! by time slices lost to other processes, the minimum over many short runs is not.
//! Run: `cargo bench -p mnnq-kernels --bench int8_best_of`. Prints GMAC/s and the fraction of
//! 525 GMAC/s (one Zen 5 core with `vpdpbusd`). `MNNQ_BENCH_FILTER=dw3x3` keeps shapes whose
//! label contains the text, `MNNQ_BENCH_ISA=avx512vnni` one instruction set, `MNNQ_BENCH_MS` the
//! time per measurement.

use std::time::{Duration, Instant};

use mnnq_kernels::dispatch::Isa;
use mnnq_kernels::int8::{
    conv2d_int8_nhwc, depthwise_int8_nhwc, DepthwiseRequantize, PackedDepthwiseInt8,
    PackedInt8Weights, Requantize,
};
use mnnq_kernels::ConvGeometry;

const PEAK_GMACS: f64 = 525.0;

/// (label, out_h, out_w, in_c, out_c, kernel, stride)
const SHAPES: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("pw M=3136 K=144 N=24", 56, 56, 144, 24, 1, 1),
    ("pw M=196 K=480 N=80", 14, 14, 480, 80, 1, 1),
    ("pw M=784 K=40 N=240", 28, 28, 40, 240, 1, 1),
    ("pw M=49 K=1152 N=320", 7, 7, 1152, 320, 1, 1),
    ("pw M=3136 K=24 N=144", 56, 56, 24, 144, 1, 1),
    ("pw M=196 K=192 N=1152", 14, 14, 192, 1152, 1, 1),
    ("3x3s2 M=12544 K=27 N=32", 112, 112, 3, 32, 3, 2),
    // The stem's GEMM alone (its im2col rows as a pointwise input), to see what im2col costs.
    ("pw M=12544 K=27 N=32", 112, 112, 27, 32, 1, 1),
    ("pw M=12544 K=28 N=32", 112, 112, 28, 32, 1, 1),
    ("pw M=12544 K=28 N=64", 112, 112, 28, 64, 1, 1),
    ("pw M=12544 K=128 N=32", 112, 112, 128, 32, 1, 1),
    ("3x3 M=1600 K=576 N=64", 40, 40, 64, 64, 3, 1),
];

/// Depthwise: (label, out_h, out_w, channels, kernel, stride)
const DEPTHWISE: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("dw3x3 112x112x32", 112, 112, 32, 3, 1),
    ("dw3x3s2 56x56x96", 56, 56, 96, 3, 2),
    ("dw3x3 56x56x144", 56, 56, 144, 3, 1),
    ("dw5x5 28x28x240", 28, 28, 240, 5, 1),
    ("dw5x5 14x14x672", 14, 14, 672, 5, 1),
    ("dw5x5 7x7x1152", 7, 7, 1152, 5, 1),
];

/// Best time of `run` within `budget`.
fn best_of(budget: Duration, mut run: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed() < budget {
        let t = Instant::now();
        run();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

/// Measured ceiling: 24 independent `vpdpbusd` chains on registers, no loads. Returns GMAC/s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vpdpbusd_ceiling(iterations: usize) -> f64 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_epi32(std::hint::black_box(0x0101_0101));
    let b = _mm512_set1_epi32(std::hint::black_box(0x0102_0301));
    let mut acc = [_mm512_setzero_si512(); 24];
    let t = Instant::now();
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = _mm512_dpbusd_epi32(*x, a, b);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(&acc);
    (iterations * 24 * 64) as f64 / secs / 1e9
}

/// Same ceiling for `vpdpwssd` (i16 pairs; the depthwise kernels' instruction). Returns
/// instructions per nanosecond.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vpdpwssd_rate(iterations: usize) -> f64 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_epi32(std::hint::black_box(0x0001_0001));
    let b = _mm512_set1_epi32(std::hint::black_box(0x0002_0001));
    let mut acc = [_mm512_setzero_si512(); 24];
    let t = Instant::now();
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = _mm512_dpwssd_epi32(*x, a, b);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(&acc);
    (iterations * 24) as f64 / secs / 1e9
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("MNNQ_BENCH_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1500),
    );
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx512Vnni.is_supported() {
        // SAFETY: VNNI support checked just above.
        let best = (0..20)
            .map(|_| unsafe { vpdpbusd_ceiling(200_000) })
            .fold(0.0, f64::max);
        println!("vpdpbusd register-only ceiling on this machine: {best:.1} GMAC/s");
        // SAFETY: as above.
        let wssd = (0..20)
            .map(|_| unsafe { vpdpwssd_rate(200_000) })
            .fold(0.0, f64::max);
        println!(
            "vpdpbusd {:.2} per ns, vpdpwssd {wssd:.2} per ns",
            best / 64.0
        );
    }
    let only = std::env::var("MNNQ_BENCH_ISA")
        .ok()
        .and_then(|s| Isa::parse(&s));
    let filter = std::env::var("MNNQ_BENCH_FILTER").unwrap_or_default();
    for &(label, out_h, out_w, in_c, out_c, k, stride) in SHAPES {
        if !label.contains(&filter) {
            continue;
        }
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
        let macs = (geom.pixels() * in_c * k * k * out_c) as f64;
        let mut out = vec![0i8; geom.pixels() * out_c];
        for isa in Isa::supported().into_iter().rev() {
            if only.is_some_and(|o| o != isa) {
                continue;
            }
            let packed = PackedInt8Weights::pack_conv_for(isa, &w, out_c, in_c, k, k);
            let start = Instant::now();
            let mut best = f64::INFINITY;
            while start.elapsed() < budget {
                let t = Instant::now();
                conv2d_int8_nhwc(
                    &geom,
                    &input,
                    &packed,
                    &rq,
                    &mut out,
                    out_c,
                    0..geom.pixels(),
                );
                best = best.min(t.elapsed().as_secs_f64());
            }
            let gmacs = macs / best / 1e9;
            println!(
                "{label:26} {:>10}  best {:>9.1} us  {gmacs:7.1} GMAC/s  {:5.1}% of VNNI peak",
                isa.name(),
                best * 1e6,
                100.0 * gmacs / PEAK_GMACS
            );
        }
    }
    for &(label, out_h, out_w, c, k, stride) in DEPTHWISE {
        if !label.contains(&filter) {
            continue;
        }
        let pad = k / 2;
        let geom = ConvGeometry {
            in_h: out_h * stride,
            in_w: out_w * stride,
            in_c: c,
            out_h,
            out_w,
            out_c: c,
            kernel_h: k,
            kernel_w: k,
            stride_h: stride,
            stride_w: stride,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: pad,
            pad_left: pad,
        };
        let input: Vec<i8> = (0..geom.in_h * geom.in_w * c)
            .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
            .collect();
        let w: Vec<i8> = (0..c * k * k)
            .map(|i| ((i * 91 % 255) as i32 - 127) as i8)
            .collect();
        let rq = DepthwiseRequantize::for_depthwise(&vec![0.01; c], &vec![0.1; c], 0.05, 0.5, true);
        let macs = (geom.pixels() * c * k * k) as f64;
        let mut out = vec![0i8; geom.pixels() * c];
        for isa in Isa::supported().into_iter().rev() {
            if only.is_some_and(|o| o != isa) {
                continue;
            }
            let packed = PackedDepthwiseInt8::pack_for(isa, &w, c, k, k);
            let best = best_of(budget, || {
                depthwise_int8_nhwc(&geom, &input, &packed, &rq, &mut out, c, 0..out_h)
            });
            println!(
                "{label:26} {:>10}  best {:>9.1} us  {:7.1} GMAC/s",
                isa.name(),
                best * 1e6,
                macs / best / 1e9
            );
        }
    }
}
