//! Dense int8 convolution: every supported instruction set against a naive direct convolution
//! written here from MNN's formulas (not the library's im2col or packing).

use mnnq_kernels::dispatch::Isa;
use mnnq_kernels::int8::{
    conv2d_int8_nhwc, conv2d_int8_nhwc_blocks, PackedInt8Weights, Requantize,
};
use mnnq_kernels::ConvGeometry;
use proptest::prelude::*;

/// Direct convolution over `[out_c][in_c][kh][kw]` weights; padding taps are the input zero
/// point `rq.pad` (the value 0; code 0 for symmetric inputs).
fn naive_conv(geom: &ConvGeometry, input: &[i8], w: &[i8], rq: &Requantize) -> Vec<i8> {
    let mut out = vec![0i8; geom.pixels() * geom.out_c];
    for oy in 0..geom.out_h {
        for ox in 0..geom.out_w {
            for c in 0..geom.out_c {
                let mut acc = 0i32;
                for ic in 0..geom.in_c {
                    for ky in 0..geom.kernel_h {
                        for kx in 0..geom.kernel_w {
                            let iy = (oy * geom.stride_h + ky * geom.dilation_h) as isize
                                - geom.pad_top as isize;
                            let ix = (ox * geom.stride_w + kx * geom.dilation_w) as isize
                                - geom.pad_left as isize;
                            let outside = iy < 0
                                || ix < 0
                                || iy >= geom.in_h as isize
                                || ix >= geom.in_w as isize;
                            let x = if outside {
                                rq.pad
                            } else {
                                input[(iy as usize * geom.in_w + ix as usize) * geom.in_c + ic]
                            };
                            let wv =
                                w[((c * geom.in_c + ic) * geom.kernel_h + ky) * geom.kernel_w + kx];
                            acc += x as i32 * wv as i32;
                        }
                    }
                }
                // MNN §11.4 (x86 order), spelled out independently of `Requantize::apply`.
                let y = (acc + rq.offset[c]) as f32 * rq.alpha[c] * rq.ratio + rq.bias[c];
                let y = y.max(rq.lo as f32).min(rq.hi as f32);
                out[(oy * geom.out_w + ox) * geom.out_c + c] = y.round() as i8;
            }
        }
    }
    out
}

fn run_all_isas(
    geom: &ConvGeometry,
    input: &[i8],
    w: &[i8],
    rq: &Requantize,
    ldc: usize,
    split: usize,
) {
    let expected = naive_conv(geom, input, w, rq);
    let pixels = geom.pixels();
    // Every ISA, and on CPUs with AMX also the VNNI kernel alone (AMX packs run AMX tiles for
    // whole 16-row blocks and VNNI for the rest).
    let mut variants = Vec::new();
    for isa in Isa::supported() {
        let packed = PackedInt8Weights::pack_conv_for(
            isa,
            w,
            geom.out_c,
            geom.in_c,
            geom.kernel_h,
            geom.kernel_w,
        );
        if packed.uses_amx() {
            variants.push((
                "avx512vnni without amx".to_string(),
                packed.clone().without_amx(),
            ));
            variants.push(("amx".to_string(), packed));
        } else {
            variants.push((isa.to_string(), packed));
        }
    }
    for (isa, packed) in variants {
        // Sentinel bytes between rows (ldc > out_c) must survive.
        let mut out = vec![99i8; pixels * ldc];
        let split = split.min(pixels);
        conv2d_int8_nhwc(geom, input, &packed, rq, &mut out, ldc, 0..split);
        conv2d_int8_nhwc(geom, input, &packed, rq, &mut out, ldc, split..pixels);
        // The same outputs computed in two halves of the channel blocks (how the engine splits
        // layers with few pixels over threads) into a second buffer.
        let blocks = packed.blocks.len();
        let mut by_blocks = vec![99i8; pixels * ldc];
        for range in [0..blocks / 2, blocks / 2..blocks] {
            conv2d_int8_nhwc_blocks(
                geom,
                input,
                &packed,
                rq,
                &mut by_blocks,
                ldc,
                0..pixels,
                range,
            );
        }
        assert_eq!(by_blocks, out, "{isa}: split over channel blocks differs");
        for p in 0..pixels {
            assert_eq!(
                &out[p * ldc..p * ldc + geom.out_c],
                &expected[p * geom.out_c..(p + 1) * geom.out_c],
                "{isa}: pixel {p} differs for {geom:?}"
            );
            assert!(
                out[p * ldc + geom.out_c..(p + 1) * ldc]
                    .iter()
                    .all(|&b| b == 99),
                "{isa}: wrote past out_c"
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn geometry(
    in_h: usize,
    in_w: usize,
    in_c: usize,
    out_c: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
) -> Option<ConvGeometry> {
    let span = dilation * (k - 1) + 1;
    if in_h + 2 * pad < span || in_w + 2 * pad < span {
        return None;
    }
    Some(ConvGeometry {
        in_h,
        in_w,
        in_c,
        out_h: (in_h + 2 * pad - span) / stride + 1,
        out_w: (in_w + 2 * pad - span) / stride + 1,
        out_c,
        kernel_h: k,
        kernel_w: k,
        stride_h: stride,
        stride_w: stride,
        dilation_h: dilation,
        dilation_w: dilation,
        pad_top: pad,
        pad_left: pad,
    })
}

fn codes(len: usize, seed: u64, lo: i32) -> Vec<i8> {
    // xorshift: deterministic, no extra dependency.
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (lo + (s % (128 - lo as i64) as u64) as i32) as i8
        })
        .collect()
}

fn requant(out_c: usize, k: usize, seed: u64, relu: bool) -> Requantize {
    // Scales that spread outputs over the whole code range (and beyond, to exercise the clamp).
    let alpha: Vec<f32> = (0..out_c)
        .map(|c| 0.004 + 0.003 * ((c as u64 * 7 + seed) % 11) as f32)
        .collect();
    let bias: Vec<f32> = (0..out_c)
        .map(|c| ((c as f32 * 1.37 + seed as f32) % 5.0) - 2.5)
        .collect();
    let s_in = 0.05;
    let s_out = 0.05 * 0.02 * (k as f32).sqrt() * 4.0;
    let sums: Vec<i32> = (0..out_c)
        .map(|c| (c as i32 * 37).wrapping_add(seed as i32) % 2001 - 1000)
        .collect();
    Requantize::for_conv(&alpha, &bias, &sums, s_in, s_out, relu)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_isa_matches_naive_convolution(
        in_h in 1usize..12, in_w in 1usize..12, in_c in 1usize..40, out_c in 1usize..75,
        k in prop::sample::select(vec![1usize, 3, 5]), stride in 1usize..3, dilation in 1usize..3,
        pad in 0usize..3, relu: bool, extra_ldc in 0usize..3, split in 0usize..200, seed: u64,
    ) {
        let Some(geom) = geometry(in_h, in_w, in_c, out_c, k, stride, dilation, pad) else {
            return Ok(());
        };
        let input = codes(in_h * in_w * in_c, seed, -127);
        let w = codes(out_c * in_c * k * k, seed ^ 0xABCD, -128);
        let rq = requant(out_c, in_c * k * k, seed, relu);
        run_all_isas(&geom, &input, &w, &rq, out_c + extra_ldc, split);
    }

    /// Asymmetric input and output codes: padding taps are the input zero point.
    #[test]
    fn every_isa_matches_naive_convolution_with_zero_points(
        in_h in 1usize..10, in_w in 1usize..10, in_c in 1usize..40, out_c in 1usize..70,
        k in prop::sample::select(vec![1usize, 3, 5]), stride in 1usize..3,
        pad in 0usize..3, relu: bool, z_in in -127i8..=127, z_out in -127i8..=127, seed: u64,
    ) {
        let Some(geom) = geometry(in_h, in_w, in_c, out_c, k, stride, 1, pad) else {
            return Ok(());
        };
        let input = codes(in_h * in_w * in_c, seed, -127);
        let w = codes(out_c * in_c * k * k, seed ^ 0xABCD, -128);
        let base = requant(out_c, in_c * k * k, seed, relu);
        let sums: Vec<i32> = (0..out_c)
            .map(|c| w[c * in_c * k * k..(c + 1) * in_c * k * k].iter().map(|&v| v as i32).sum())
            .collect();
        let s_out = base.ratio.recip() * 0.05;
        let rq = Requantize::for_conv_with_zero_points(
            &base.alpha, &vec![0.3; out_c], &sums, 0.05, s_out, relu, z_in, z_out,
        );
        prop_assert_eq!(rq.pad, z_in);
        prop_assert_eq!(rq.lo, if relu { z_out.max(-127) } else { -127 });
        run_all_isas(&geom, &input, &w, &rq, out_c, geom.pixels() / 2);
    }

    #[test]
    fn every_isa_matches_on_pointwise_shapes(
        pixels in 1usize..700, in_c in 1usize..100, out_c in 1usize..140, relu: bool, seed: u64,
    ) {
        let geom = geometry(1, pixels, in_c, out_c, 1, 1, 1, 0).unwrap();
        let input = codes(pixels * in_c, seed, -127);
        let w = codes(out_c * in_c, seed ^ 0x1234, -128);
        let rq = requant(out_c, in_c, seed, relu);
        run_all_isas(&geom, &input, &w, &rq, out_c, pixels / 2);
    }
}

#[test]
fn accumulators_beyond_f32_precision_round_identically() {
    // 1200 * 127 * 127 = 19_354_800 > 2^24: the i32 -> f32 conversion itself rounds.
    let in_c = 1200;
    let geom = geometry(1, 3, in_c, 20, 1, 1, 1, 0).unwrap();
    let mut input = vec![127i8; 3 * in_c];
    input[in_c] = 126;
    input[2 * in_c] = -127;
    let w = vec![127i8; 20 * in_c];
    let rq = Requantize::for_conv(&[1e-7; 20], &[0.0; 20], &[0; 20], 0.5, 1.0, false);
    run_all_isas(&geom, &input, &w, &rq, 20, 1);
}

#[test]
fn huge_infinite_and_nan_values_clamp_like_the_reference() {
    // Values beyond the i32 range convert to i32::MIN in SIMD; infinity times a zero accumulator
    // or inf - inf gives NaN, which the reference's `max(lo)` turns into `lo`. Each channel
    // exercises one case, with and without a fused ReLU, over 3 tile widths.
    for out_c in [16, 40, 64] {
        let geom = geometry(1, 9, 8, out_c, 1, 1, 1, 0).unwrap();
        let input = codes(9 * 8, 5, -127);
        let w = codes(out_c * 8, 6, -128);
        let cases: [(f32, f32); 8] = [
            (1e30, 0.0),
            (-1e30, 0.0),
            (f32::INFINITY, 0.0),
            (f32::INFINITY, f32::NEG_INFINITY),
            (0.0, f32::NAN),
            (1.0, 3e9),
            (1.0, -3e9),
            (0.01, -127.49),
        ];
        for relu in [false, true] {
            let rq = Requantize {
                offset: vec![0; out_c],
                alpha: (0..out_c).map(|c| cases[c % 8].0).collect(),
                ratio: 1.0,
                bias: (0..out_c).map(|c| cases[c % 8].1).collect(),
                lo: if relu { 0 } else { -127 },
                hi: 127,
                pad: 0,
            };
            run_all_isas(&geom, &input, &w, &rq, out_c, 4);
        }
    }
}

#[test]
fn hand_computed_zero_points_and_padding() {
    // 3x3 kernel of ones (alpha 0.5: each weight 0.5) on a 1x1 image with padding 1: only the
    // centre tap sees the image. z_in = -100, z_out = -50, s_in = 0.125, s_out = 0.25, b = 1.
    // Input code -90 is the value (-90 + 100) * 0.125 = 1.25; padding is the value 0.
    // y = 1.25 * 0.5 + 1 = 1.625 -> 1.625 / 0.25 = 6.5, plus z_out: -43.5 -> -44 (half away).
    let geom = geometry(1, 1, 1, 1, 3, 1, 1, 1).unwrap();
    let rq =
        Requantize::for_conv_with_zero_points(&[0.5], &[1.0], &[9], 0.125, 0.25, false, -100, -50);
    // With a fused ReLU the clamp is at z_out (the value 0): a negative result gives -50.
    let relu =
        Requantize::for_conv_with_zero_points(&[0.5], &[-3.0], &[9], 0.125, 0.25, true, -100, -50);
    for isa in Isa::supported() {
        let packed = PackedInt8Weights::pack_conv_for(isa, &[1; 9], 1, 1, 3, 3);
        let mut out = [0i8];
        conv2d_int8_nhwc(&geom, &[-90], &packed, &rq, &mut out, 1, 0..1);
        assert_eq!(out[0], -44, "{isa}");
        // The value 1.25 * 0.5 - 3 = -2.375 < 0: clamped to the code of 0.
        conv2d_int8_nhwc(&geom, &[-90], &packed, &relu, &mut out, 1, 0..1);
        assert_eq!(out[0], -50, "{isa}: ReLU clamps at the output zero point");
    }
}

#[test]
fn hand_computed_pointwise_case() {
    // One pixel, 2 channels in, 1 out: acc = 3*2 + (-1)*5 = 1; y = 1 * 2.5 + 0 = 2.5 -> 3.
    let geom = geometry(1, 1, 2, 1, 1, 1, 1, 0).unwrap();
    let rq = Requantize::for_conv(&[2.5], &[0.0], &[0], 1.0, 1.0, false);
    for isa in Isa::supported() {
        let packed = PackedInt8Weights::pack_conv_for(isa, &[2, 5], 1, 2, 1, 1);
        let mut out = [0i8];
        conv2d_int8_nhwc(&geom, &[3, -1], &packed, &rq, &mut out, 1, 0..1);
        assert_eq!(out[0], 3, "{isa}");
        conv2d_int8_nhwc(&geom, &[-3, 1], &packed, &rq, &mut out, 1, 0..1);
        assert_eq!(out[0], -3, "{isa}: -2.5 rounds away from zero");
    }
}

/// Stem-like convolutions (few input channels: kernel rows of at most 16 bytes, which im2col
/// moves 16 bytes at a time along rows of interior pixels) on images wide enough for long runs,
/// with and without padding, split at pixels that cut runs, up to the input's last byte.
#[test]
fn stem_shapes_match_naive_convolution() {
    for (in_c, k, stride, pad, size) in [
        (3, 3, 2, 1, 57),
        (3, 3, 2, 0, 56),
        (3, 3, 1, 1, 33),
        (1, 5, 1, 2, 30),
        (5, 3, 2, 1, 41),
        (2, 3, 1, 0, 20),
    ] {
        let geom = geometry(size, size, in_c, 32, k, stride, 1, pad).unwrap();
        let input = codes(size * size * in_c, 7 + in_c as u64, -127);
        let w = codes(32 * in_c * k * k, 11, -128);
        let rq = requant(32, in_c * k * k, 3, false);
        for split in [0, 1, geom.out_w / 2 + 3, geom.pixels() - 1] {
            run_all_isas(&geom, &input, &w, &rq, 32, split);
        }
    }
}
