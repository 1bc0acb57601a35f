//! Estimate of EfficientNet-Lite0's int8 run time at 1 thread from its layers' kernel times
//! (best of many runs each, summed; graph overhead, casts of the input and layout changes are
//! not included). Run: `cargo bench -p mnnq-kernels --bench int8_effnet`.

use std::time::{Duration, Instant};

use mnnq_kernels::dispatch::active_isa;
use mnnq_kernels::int8::{
    binary_int8, conv2d_int8_nhwc, depthwise_int8_nhwc, pool_int8_nhwc, BinaryInt8, BinaryScales,
    DepthwiseRequantize, PackedDepthwiseInt8, PackedInt8Weights, PoolKind, Requantize,
};
use mnnq_kernels::ConvGeometry;

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

fn codes(n: usize, salt: usize) -> Vec<i8> {
    (0..n)
        .map(|i| (((i * 37 + salt) % 255) as i32 - 127) as i8)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn geometry(h: usize, w: usize, in_c: usize, out_c: usize, k: usize, s: usize) -> ConvGeometry {
    let pad = k / 2;
    ConvGeometry {
        in_h: h,
        in_w: w,
        in_c,
        out_h: (h + 2 * pad - k) / s + 1,
        out_w: (w + 2 * pad - k) / s + 1,
        out_c,
        kernel_h: k,
        kernel_w: k,
        stride_h: s,
        stride_w: s,
        dilation_h: 1,
        dilation_w: 1,
        pad_top: pad,
        pad_left: pad,
    }
}

struct Totals {
    budget: Duration,
    dense: f64,
    depthwise: f64,
    other: f64,
    macs: f64,
}

impl Totals {
    fn conv(&mut self, label: &str, g: ConvGeometry) {
        let input = codes(g.in_h * g.in_w * g.in_c, 1);
        let w = codes(g.out_c * g.in_c * g.kernel_h * g.kernel_w, 2);
        let packed = PackedInt8Weights::pack_conv(&w, g.out_c, g.in_c, g.kernel_h, g.kernel_w);
        let rq = Requantize::for_conv(
            &vec![0.01; g.out_c],
            &vec![0.1; g.out_c],
            &vec![0; g.out_c],
            0.05,
            0.5,
            true,
        );
        let mut out = vec![0i8; g.pixels() * g.out_c];
        let t = best_of(self.budget, || {
            conv2d_int8_nhwc(&g, &input, &packed, &rq, &mut out, g.out_c, 0..g.pixels())
        });
        let macs = (g.pixels() * g.im2col_len() * g.out_c) as f64;
        println!(
            "  {label:34} {:8.1} us  {:6.1} GMAC/s",
            t * 1e6,
            macs / t / 1e9
        );
        self.dense += t;
        self.macs += macs;
    }

    fn depthwise(&mut self, label: &str, g: ConvGeometry) {
        let input = codes(g.in_h * g.in_w * g.in_c, 3);
        let w = codes(g.in_c * g.kernel_h * g.kernel_w, 4);
        let packed = PackedDepthwiseInt8::pack(&w, g.in_c, g.kernel_h, g.kernel_w);
        let rq = DepthwiseRequantize::for_depthwise(
            &vec![0.01; g.in_c],
            &vec![0.1; g.in_c],
            0.05,
            0.5,
            true,
        );
        let mut out = vec![0i8; g.pixels() * g.in_c];
        let t = best_of(self.budget, || {
            depthwise_int8_nhwc(&g, &input, &packed, &rq, &mut out, g.in_c, 0..g.out_h)
        });
        let macs = (g.pixels() * g.in_c * g.kernel_h * g.kernel_w) as f64;
        println!(
            "  {label:34} {:8.1} us  {:6.1} GMAC/s",
            t * 1e6,
            macs / t / 1e9
        );
        self.depthwise += t;
        self.macs += macs;
    }

    fn add(&mut self, label: &str, n: usize) {
        let a = codes(n, 5);
        let b = codes(n, 6);
        let mut out = vec![0i8; n];
        let sc = BinaryScales {
            s0: 0.05,
            s1: 0.04,
            s_out: 0.07,
            relu: false,
        };
        let t = best_of(self.budget, || {
            binary_int8(BinaryInt8::Add, sc, &a, &b, &mut out)
        });
        println!("  {label:34} {:8.1} us", t * 1e6);
        self.other += t;
    }
}

fn main() {
    let ms = std::env::var("MNNQ_BENCH_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut totals = Totals {
        budget: Duration::from_millis(ms),
        dense: 0.0,
        depthwise: 0.0,
        other: 0.0,
        macs: 0.0,
    };
    println!("EfficientNet-Lite0 int8 layers, ISA {}", active_isa());
    totals.conv("stem 3x3 s2 3->32 @224", geometry(224, 224, 3, 32, 3, 2));
    // (expand, kernel, stride, out channels, repeats)
    let stages = [
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    ];
    let (mut size, mut channels) = (112usize, 32usize);
    for (expand, k, first_stride, out_c, repeats) in stages {
        for r in 0..repeats {
            let stride = if r == 0 { first_stride } else { 1 };
            let mid = channels * expand;
            if expand != 1 {
                totals.conv(
                    &format!("expand {channels}->{mid} @{size}"),
                    geometry(size, size, channels, mid, 1, 1),
                );
            }
            let g = geometry(size, size, mid, mid, k, stride);
            totals.depthwise(&format!("dw{k}x{k} s{stride} {mid} @{size}"), g);
            size = g.out_h;
            totals.conv(
                &format!("project {mid}->{out_c} @{size}"),
                geometry(size, size, mid, out_c, 1, 1),
            );
            if stride == 1 && channels == out_c {
                totals.add(
                    &format!("residual add {out_c} @{size}"),
                    size * size * out_c,
                );
            }
            channels = out_c;
        }
    }
    totals.conv("head 320->1280 @7", geometry(7, 7, 320, 1280, 1, 1));
    let pool_in = codes(49 * 1280, 7);
    let mut pooled = vec![0i8; 1280];
    let g = ConvGeometry {
        kernel_h: 7,
        kernel_w: 7,
        stride_h: 1,
        stride_w: 1,
        pad_top: 0,
        pad_left: 0,
        out_h: 1,
        out_w: 1,
        ..geometry(7, 7, 1280, 1280, 1, 1)
    };
    let t = best_of(totals.budget, || {
        pool_int8_nhwc(PoolKind::Average, &g, &pool_in, &mut pooled, 1280, 0..1)
    });
    println!("  {:34} {:8.1} us", "global average pool 1280", t * 1e6);
    totals.other += t;
    totals.conv("classifier 1280->1000", geometry(1, 1, 1280, 1000, 1, 1));
    let total = totals.dense + totals.depthwise + totals.other;
    println!(
        "total {:.0} us = dense {:.0} + depthwise {:.0} + other {:.0}; {:.0} M MACs, {:.1} GMAC/s overall",
        total * 1e6,
        totals.dense * 1e6,
        totals.depthwise * 1e6,
        totals.other * 1e6,
        totals.macs / 1e6,
        totals.macs / total / 1e9
    );
}
