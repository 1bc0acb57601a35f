//! Times every convolution-like layer of a network with the fp32 kernels, one thread, synthetic
//! data, best of N per layer (CPU time), and prints the total per kind: an estimate of the float
//! engine's time before the elementwise ops and the graph overhead.
//!
//! `cargo run --release -p mnnq-kernels --example f32_network_layers -- \
//!     crates/mnnq-kernels/examples/layers/efficientnet_lite0.txt [repeats] [-v]`

use mnnq_kernels::f32::{
    avg_pool2d_nhwc, conv2d_nhwc, deconv2d_nhwc, depthwise_conv2d_nhwc, gemm, global_avg_pool_nhwc,
    max_pool2d_nhwc, PackedDepthwise, PackedWeights,
};
use mnnq_kernels::{Activation, ConvGeometry};
use std::collections::BTreeMap;
use timing::{best_seconds, data};

#[path = "common/timing.rs"]
mod timing;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: f32_network_layers LAYERS.txt [repeats] [-v]");
    let repeats: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let verbose = args.iter().any(|a| a == "-v");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut totals: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (line_no, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let n: Vec<usize> = fields[1..]
            .iter()
            .map(|f| {
                f.parse()
                    .unwrap_or_else(|_| panic!("{path}:{}: bad number {f}", line_no + 1))
            })
            .collect();
        let kind = fields[0];
        let seed = line_no as u32;
        let (seconds, flops) = match kind {
            "gap" => {
                let (pixels, channels) = (n[0], n[1]);
                let input = data(pixels * channels, seed);
                let mut out = vec![0.0; channels];
                let s = best_seconds(repeats, || {
                    global_avg_pool_nhwc(pixels, channels, &input, &mut out)
                });
                (s, (pixels * channels) as f64)
            }
            "fc" => {
                let (m, k, nn) = (n[0], n[1], n[2]);
                let a = data(m * k, seed);
                let packed = PackedWeights::pack_matrix(&data(k * nn, seed + 1), k, nn);
                let bias = data(nn, seed + 2);
                let mut out = vec![0.0; m * nn];
                let s = best_seconds(repeats, || {
                    gemm(m, &a, k, &packed, &bias, Activation::None, &mut out, nn)
                });
                (s, (2 * m * k * nn) as f64)
            }
            _ => {
                let g = ConvGeometry {
                    in_h: n[0],
                    in_w: n[1],
                    in_c: n[2],
                    out_h: n[3],
                    out_w: n[4],
                    out_c: n[5],
                    kernel_h: n[6],
                    kernel_w: n[7],
                    stride_h: n[8],
                    stride_w: n[9],
                    dilation_h: n[10],
                    dilation_w: n[11],
                    pad_top: n[12],
                    pad_left: n[13],
                };
                let input = data(g.in_h * g.in_w * g.in_c, seed);
                let taps = g.kernel_h * g.kernel_w;
                let bias = data(g.out_c, seed + 2);
                let mut out = vec![0.0; g.out_h * g.out_w * g.out_c];
                let act = Activation::Relu6;
                match kind {
                    "conv" => {
                        let packed = PackedWeights::pack_conv(
                            &data(g.out_c * g.in_c * taps, seed + 1),
                            g.out_c,
                            g.in_c,
                            g.kernel_h,
                            g.kernel_w,
                        );
                        let s = best_seconds(repeats, || {
                            conv2d_nhwc(&g, &input, &packed, &bias, act, &mut out, 0..g.pixels())
                        });
                        (s, (2 * g.pixels() * g.out_c * g.in_c * taps) as f64)
                    }
                    "dw" => {
                        let packed = PackedDepthwise::pack(
                            &data(g.in_c * taps, seed + 1),
                            g.in_c,
                            g.kernel_h,
                            g.kernel_w,
                        );
                        let s = best_seconds(repeats, || {
                            depthwise_conv2d_nhwc(
                                &g,
                                &input,
                                &packed,
                                &bias,
                                act,
                                &mut out,
                                0..g.out_h,
                            )
                        });
                        (s, (2 * g.pixels() * g.out_c * taps) as f64)
                    }
                    "deconv" => {
                        let packed = PackedWeights::pack_deconv(
                            &data(g.in_c * g.out_c * taps, seed + 1),
                            g.in_c,
                            g.out_c,
                            g.kernel_h,
                            g.kernel_w,
                        );
                        let s = best_seconds(repeats, || {
                            deconv2d_nhwc(&g, &input, &packed, &bias, act, &mut out, 0..g.out_h)
                        });
                        (s, (2 * g.in_h * g.in_w * g.in_c * g.out_c * taps) as f64)
                    }
                    "maxpool" => {
                        let s = best_seconds(repeats, || {
                            max_pool2d_nhwc(&g, &input, &mut out, 0..g.out_h)
                        });
                        (s, (g.pixels() * g.out_c * taps) as f64)
                    }
                    "avgpool" => {
                        let s = best_seconds(repeats, || {
                            avg_pool2d_nhwc(&g, &input, false, &mut out, 0..g.out_h)
                        });
                        (s, (g.pixels() * g.out_c * taps) as f64)
                    }
                    other => panic!("{path}:{}: unknown layer kind {other}", line_no + 1),
                }
            }
        };
        let label = if kind == "conv" && n[6] * n[7] == 1 && n[8] * n[9] == 1 {
            "conv1x1"
        } else {
            kind
        };
        if verbose {
            println!(
                "{:>8} {:<60} {:>8.1} us {:>6.1} GFLOP/s",
                label,
                line,
                seconds * 1e6,
                flops / seconds / 1e9
            );
        }
        let entry = totals.entry(label.to_string()).or_default();
        entry.0 += seconds;
        entry.1 += flops;
    }
    let mut total = 0.0;
    for (kind, (seconds, flops)) in &totals {
        println!(
            "{kind:>8}: {:>8.3} ms  {:>6.1} GFLOP/s",
            seconds * 1e3,
            flops / seconds / 1e9
        );
        total += seconds;
    }
    println!("   total: {:>8.3} ms", total * 1e3);
}
