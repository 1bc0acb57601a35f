//! Depthwise convolution, pooling, casts and binary ops: every supported ISA against naive
//! references written here from MNN's formulas, plus hand-computed rounding cases.

use mnnq_kernels::dispatch::Isa;
use mnnq_kernels::int8::elementwise::{
    binary_channel_values_int8_with, binary_int8_with, float_to_int8_with,
    float_to_int8_zero_point, int8_to_float_with, int8_to_float_zero_point,
};
use mnnq_kernels::int8::pool::{average_code, pool_int8_nhwc_with};
use mnnq_kernels::int8::{
    depthwise_int8_nhwc, BinaryInt8, BinaryScales, DepthwiseRequantize, PackedDepthwiseInt8,
    PoolKind,
};
use mnnq_kernels::ConvGeometry;
use proptest::prelude::*;

fn geometry(
    in_h: usize,
    in_w: usize,
    c: usize,
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
        in_c: c,
        out_h: (in_h + 2 * pad - span) / stride + 1,
        out_w: (in_w + 2 * pad - span) / stride + 1,
        out_c: c,
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

/// The valid input taps of output pixel (oy, ox): (input offset of the pixel, tap index).
fn taps(g: &ConvGeometry, oy: usize, ox: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for ky in 0..g.kernel_h {
        for kx in 0..g.kernel_w {
            let iy = (oy * g.stride_h + ky * g.dilation_h) as isize - g.pad_top as isize;
            let ix = (ox * g.stride_w + kx * g.dilation_w) as isize - g.pad_left as isize;
            if iy >= 0 && ix >= 0 && (iy as usize) < g.in_h && (ix as usize) < g.in_w {
                v.push((
                    (iy as usize * g.in_w + ix as usize) * g.in_c,
                    ky * g.kernel_w + kx,
                ));
            }
        }
    }
    v
}

/// Padding taps count as the input zero point `rq.pad` (0 for symmetric inputs).
fn naive_depthwise(g: &ConvGeometry, input: &[i8], w: &[i8], rq: &DepthwiseRequantize) -> Vec<i8> {
    let c = g.in_c;
    let kk = g.kernel_h * g.kernel_w;
    let mut out = vec![0i8; g.pixels() * c];
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for ch in 0..c {
                let valid = taps(g, oy, ox);
                let inside: i32 = valid
                    .iter()
                    .map(|&(at, t)| input[at + ch] as i32 * w[ch * kk + t] as i32)
                    .sum();
                let padding: i32 = (0..kk)
                    .filter(|t| !valid.iter().any(|&(_, v)| v == *t))
                    .map(|t| rq.pad as i32 * w[ch * kk + t] as i32)
                    .sum();
                let acc = inside + padding;
                let y = (acc + rq.bias[ch]) as f32 * rq.multiplier[ch];
                let q = (y.round() as i32).clamp(rq.lo as i32, rq.hi as i32);
                out[(oy * g.out_w + ox) * c + ch] = q as i8;
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn depthwise_every_isa_matches_naive(
        in_h in 1usize..14, in_w in 1usize..14, c in 1usize..100,
        k in prop::sample::select(vec![1usize, 3, 5]), stride in 1usize..3, dilation in 1usize..3,
        pad in 0usize..3, relu: bool, extra_ldc in 0usize..3, split in 0usize..14, seed: u64,
    ) {
        let Some(g) = geometry(in_h, in_w, c, k, stride, dilation, pad) else { return Ok(()); };
        let input = codes(in_h * in_w * c, seed, -127);
        let w = codes(c * k * k, seed ^ 77, -128);
        let alpha: Vec<f32> = (0..c).map(|i| 0.002 + 0.004 * ((i as u64 + seed) % 9) as f32).collect();
        let bias: Vec<f32> = (0..c).map(|i| (i as f32 * 0.731) % 3.0 - 1.5).collect();
        let rq = DepthwiseRequantize::for_depthwise(&alpha, &bias, 0.03, 0.02 * k as f32, relu);
        let expected = naive_depthwise(&g, &input, &w, &rq);
        let ldc = c + extra_ldc;
        for isa in Isa::supported() {
            let packed = PackedDepthwiseInt8::pack_for(isa, &w, c, k, k);
            let mut out = vec![99i8; g.pixels() * ldc];
            let split = split.min(g.out_h);
            depthwise_int8_nhwc(&g, &input, &packed, &rq, &mut out, ldc, 0..split);
            depthwise_int8_nhwc(&g, &input, &packed, &rq, &mut out, ldc, split..g.out_h);
            for p in 0..g.pixels() {
                prop_assert_eq!(&out[p * ldc..p * ldc + c], &expected[p * c..(p + 1) * c], "{} pixel {}", isa, p);
                prop_assert!(out[p * ldc + c..(p + 1) * ldc].iter().all(|&b| b == 99));
            }
        }
    }

    /// Images wide enough for long runs of interior pixels (every tap inside), which the AVX-512
    /// kernels compute 4 pixels at a time, with channel counts that leave a partial block of 32
    /// or an odd number of blocks (passes of 1 to 4 blocks). 5x5 outputs up to 28 wide run on a
    /// padded copy of their rows, wider ones check the padding per tap: both are covered.
    #[test]
    fn depthwise_wide_images_match_naive(
        in_h in 5usize..24, in_w in 9usize..44, c in prop::sample::select(vec![1usize, 8, 16, 31, 32, 48, 64, 80, 96, 100, 144]),
        k in prop::sample::select(vec![3usize, 5]), stride in 1usize..3, pad in 0usize..3,
        relu: bool, seed: u64,
    ) {
        let Some(g) = geometry(in_h, in_w, c, k, stride, 1, pad) else { return Ok(()); };
        let input = codes(in_h * in_w * c, seed, -127);
        let w = codes(c * k * k, seed ^ 91, -128);
        let alpha: Vec<f32> = (0..c).map(|i| 0.002 + 0.004 * ((i as u64 + seed) % 9) as f32).collect();
        let bias: Vec<f32> = (0..c).map(|i| (i as f32 * 0.377) % 3.0 - 1.5).collect();
        let rq = DepthwiseRequantize::for_depthwise(&alpha, &bias, 0.03, 0.02 * k as f32, relu);
        let expected = naive_depthwise(&g, &input, &w, &rq);
        for isa in Isa::supported() {
            let packed = PackedDepthwiseInt8::pack_for(isa, &w, c, k, k);
            let mut out = vec![99i8; g.pixels() * c];
            depthwise_int8_nhwc(&g, &input, &packed, &rq, &mut out, c, 0..g.out_h);
            prop_assert_eq!(&out, &expected, "{}", isa);
        }
    }

    /// Asymmetric codes, on images wide enough for the 4-pixel AVX-512 runs, with channel
    /// counts that leave partial blocks (the VNNI kernel's 32-channel tail).
    #[test]
    fn depthwise_with_zero_points_every_isa_matches_naive(
        in_h in 1usize..20, in_w in 1usize..40,
        c in prop::sample::select(vec![1usize, 8, 16, 17, 32, 48, 64, 96, 144]),
        k in prop::sample::select(vec![1usize, 3, 5]), stride in 1usize..3, pad in 0usize..3,
        relu: bool, z_in in -127i8..=127, z_out in -127i8..=127, seed: u64,
    ) {
        let Some(g) = geometry(in_h, in_w, c, k, stride, 1, pad) else { return Ok(()); };
        let input = codes(in_h * in_w * c, seed, -127);
        let w = codes(c * k * k, seed ^ 91, -128);
        let alpha: Vec<f32> = (0..c).map(|i| 0.002 + 0.004 * ((i as u64 + seed) % 9) as f32).collect();
        let bias: Vec<f32> = (0..c).map(|i| (i as f32 * 0.377) % 3.0 - 1.5).collect();
        let sums: Vec<i32> = w.chunks(k * k).map(|t| t.iter().map(|&v| v as i32).sum()).collect();
        let rq = DepthwiseRequantize::for_depthwise_with_zero_points(
            &alpha, &bias, 0.03, 0.02 * k as f32, relu, z_in, z_out,
        )
        .with_weight_sums(&sums);
        let expected = naive_depthwise(&g, &input, &w, &rq);
        for isa in Isa::supported() {
            let packed = PackedDepthwiseInt8::pack_for(isa, &w, c, k, k);
            let mut out = vec![99i8; g.pixels() * c];
            depthwise_int8_nhwc(&g, &input, &packed, &rq, &mut out, c, 0..g.out_h);
            prop_assert_eq!(&out, &expected, "{}", isa);
        }
    }

    #[test]
    fn casts_with_zero_points_match_formula(
        values in prop::collection::vec(-300.0f32..300.0, 0..100), scale in 0.01f32..3.0,
        zero in -127i8..=127,
    ) {
        let inv = 1.0 / scale;
        let expected: Vec<i8> = values
            .iter()
            .map(|&x| (x * inv + zero as f32).round().clamp(-127.0, 127.0) as i8)
            .collect();
        let mut q = vec![0i8; values.len()];
        float_to_int8_zero_point(&values, scale, zero, &mut q);
        prop_assert_eq!(&q, &expected);
        let mut back = vec![0f32; q.len()];
        int8_to_float_zero_point(&q, scale, zero, &mut back);
        let exact: Vec<f32> = q.iter().map(|&v| (v as i32 - zero as i32) as f32 * scale).collect();
        prop_assert_eq!(back, exact);
    }

    #[test]
    fn pooling_every_isa_matches_naive(
        in_h in 1usize..12, in_w in 1usize..12, c in 1usize..80, k in 1usize..5, stride in 1usize..3,
        pad in 0usize..2, average: bool, seed: u64,
    ) {
        let pad = pad.min(k - 1);
        let Some(g) = geometry(in_h, in_w, c, k, stride, 1, pad) else { return Ok(()); };
        let input = codes(in_h * in_w * c, seed, -127);
        let mut expected = vec![0i8; g.pixels() * c];
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let t = taps(&g, oy, ox);
                for ch in 0..c {
                    let vals = t.iter().map(|&(at, _)| input[at + ch] as i64);
                    expected[(oy * g.out_w + ox) * c + ch] = if average {
                        let sum: i64 = vals.sum();
                        ((sum * ((1i64 << 24) / t.len() as i64)) >> 24) as i8
                    } else {
                        vals.max().unwrap() as i8
                    };
                }
            }
        }
        let kind = if average { PoolKind::Average } else { PoolKind::Max };
        for isa in Isa::supported() {
            let mut out = vec![0i8; g.pixels() * c];
            pool_int8_nhwc_with(isa, kind, &g, &input, &mut out, c, 0..g.out_h);
            prop_assert_eq!(&out, &expected, "{}", isa);
        }
    }

    #[test]
    fn casts_every_isa_match_formula(values in prop::collection::vec(-300.0f32..300.0, 0..100), scale in 0.01f32..3.0) {
        let mut halves = values.clone();
        // Exact halves after the reciprocal multiply, with scale 1 / 2^k exact.
        halves.extend((-260..260).map(|i| i as f32 * 0.5));
        for &(s, xs) in &[(scale, &values), (0.5, &halves), (1.0, &halves), (0.0, &values)] {
            let inv = if s == 0.0 { 0.0 } else { 1.0 / s };
            let expected: Vec<i8> = xs.iter().map(|&x| (x * inv).round().clamp(-127.0, 127.0) as i8).collect();
            for isa in Isa::supported() {
                let mut q = vec![0i8; xs.len()];
                float_to_int8_with(isa, xs, s, &mut q);
                prop_assert_eq!(&q, &expected, "{} scale {}", isa, s);
                let mut back = vec![0f32; q.len()];
                int8_to_float_with(isa, &q, s, &mut back);
                let exact: Vec<f32> = q.iter().map(|&v| v as f32 * s).collect();
                prop_assert_eq!(back, exact);
            }
        }
    }

    #[test]
    fn binary_every_isa_matches_formula(
        n in 1usize..700, c in 1usize..20, bcast in 0usize..3, op in 0usize..5, relu: bool, seed: u64,
        s0 in 0.01f32..0.2, s1 in 0.01f32..0.2, s_out in 0.01f32..0.3,
    ) {
        let op = [BinaryInt8::Add, BinaryInt8::Sub, BinaryInt8::Mul, BinaryInt8::Max, BinaryInt8::Min][op];
        let len = n * c;
        let a = codes(len, seed, -127);
        let b = codes([len, c, 1][bcast], seed ^ 5, -127);
        let sc = BinaryScales { s0, s1, s_out, relu };
        let inv = 1.0 / s_out;
        let expected: Vec<i8> = (0..len).map(|i| {
            let x = a[i] as f32 * s0;
            let y = b[i % b.len()] as f32 * s1;
            let v = match op {
                BinaryInt8::Add => x + y,
                BinaryInt8::Sub => x - y,
                BinaryInt8::Mul => x * y,
                BinaryInt8::Max => x.max(y),
                BinaryInt8::Min => x.min(y),
            };
            ((v * inv).round() as i32).clamp(if relu { 0 } else { -127 }, 127) as i8
        }).collect();
        for isa in Isa::supported() {
            let mut out = vec![0i8; len];
            binary_int8_with(isa, op, sc, &a, &b, &mut out);
            prop_assert_eq!(&out, &expected, "{}", isa);
            // The broadcast operand first: Sub is not symmetric, so the order must be kept.
            let mut swapped = vec![0i8; len];
            binary_int8_with(isa, BinaryInt8::Sub, sc, &b, &a, &mut swapped);
            let expected_swapped: Vec<i8> = (0..len).map(|i| {
                let v = b[i % b.len()] as f32 * s0 - a[i] as f32 * s1;
                ((v * inv).round() as i32).clamp(if relu { 0 } else { -127 }, 127) as i8
            }).collect();
            prop_assert_eq!(&swapped, &expected_swapped, "{} broadcast first operand", isa);
        }
    }
}

#[test]
fn pooling_average_uses_shifted_reciprocal_not_division() {
    // 3 codes summing to 2: 2 * floor(2^24 / 3) >> 24 = 0 (2/3 floors to 0).
    assert_eq!(average_code(2, 3), 0);
    // Sum -1 over 3: floor(-1/3) = -1 with the arithmetic shift (division would give 0).
    assert_eq!(average_code(-1, 3), -1);
    // 9 * 127 over 9: floor(2^24/9) = 1864135; 1143 * 1864135 = 2130706305 >> 24 = 126 (not 127).
    assert_eq!(average_code(9 * 127, 9), 126);
    assert_eq!(average_code(4 * 127, 4), 127, "powers of two are exact");
    // Hand case through the kernel: a 2x2 window over one channel with codes 1, 2, 3, -7.
    let g = geometry(2, 2, 1, 2, 1, 1, 0).unwrap();
    for isa in Isa::supported() {
        let mut out = [0i8];
        pool_int8_nhwc_with(
            isa,
            PoolKind::Average,
            &g,
            &[1, 2, 3, -7],
            &mut out,
            1,
            0..1,
        );
        assert_eq!(out[0], -1, "{isa}: sum -1 over 4 floors to -1");
        pool_int8_nhwc_with(isa, PoolKind::Max, &g, &[1, 2, 3, -7], &mut out, 1, 0..1);
        assert_eq!(out[0], 3, "{isa}");
    }
}

#[test]
fn depthwise_hand_computed_truncated_bias() {
    // 1x1 depthwise, one channel: w = 3, x = 2, acc = 6; alpha 0.5, b = 0.9, s_in = 1:
    // B = trunc(0.9 / 0.5) = 1; m = 0.5 * (1 / 2) = 0.25; (6 + 1) * 0.25 = 1.75 -> 2.
    let g = geometry(1, 1, 1, 1, 1, 1, 0).unwrap();
    let rq = DepthwiseRequantize::for_depthwise(&[0.5], &[0.9], 1.0, 2.0, false);
    assert_eq!(rq.bias, vec![1]);
    for isa in Isa::supported() {
        let packed = PackedDepthwiseInt8::pack_for(isa, &[3], 1, 1, 1);
        let mut out = [0i8];
        depthwise_int8_nhwc(&g, &[2], &packed, &rq, &mut out, 1, 0..1);
        assert_eq!(out[0], 2, "{isa}");
        // x = -2: (-6 + 1) * 0.25 = -1.25 -> -1.
        depthwise_int8_nhwc(&g, &[-2], &packed, &rq, &mut out, 1, 0..1);
        assert_eq!(out[0], -1, "{isa}");
    }
}

#[test]
fn depthwise_hand_computed_zero_points_and_padding() {
    // 3x3 ones, m = 1, b = 0, on a 1x1 image with padding 1: z_in = -100, z_out = -27.
    // The input code -90 is the value 10 (in units of s_in); the 8 padding taps are 0; so the
    // result is 10, i.e. the code 10 + z_out = -17.
    let g = geometry(1, 1, 1, 3, 1, 1, 1).unwrap();
    let rq = DepthwiseRequantize::for_depthwise_with_zero_points(
        &[1.0],
        &[0.0],
        1.0,
        1.0,
        false,
        -100,
        -27,
    )
    .with_weight_sums(&[9]);
    // trunc(0) + 100 * 9 + trunc(-27 / 1) = 873.
    assert_eq!(rq.bias, vec![873]);
    for isa in Isa::supported() {
        let packed = PackedDepthwiseInt8::pack_for(isa, &[1; 9], 1, 3, 3);
        let mut out = [0i8];
        depthwise_int8_nhwc(&g, &[-90], &packed, &rq, &mut out, 1, 0..1);
        assert_eq!(out[0], -17, "{isa}");
    }
}

#[test]
fn binary_hand_computed_halves_and_relu() {
    // 3 * 0.5 + 2 * 0.5 = 2.5 -> 3 with s_out 1; relu clamps -2.5 -> 0.
    for isa in Isa::supported() {
        let sc = BinaryScales {
            s0: 0.5,
            s1: 0.5,
            s_out: 1.0,
            relu: false,
        };
        let mut out = [0i8; 2];
        binary_int8_with(isa, BinaryInt8::Add, sc, &[3, -3], &[2, -2], &mut out);
        assert_eq!(out, [3, -3], "{isa}");
        let relu = BinaryScales { relu: true, ..sc };
        binary_int8_with(isa, BinaryInt8::Add, relu, &[3, -3], &[2], &mut out);
        assert_eq!(out, [3, 0], "{isa}: scalar broadcast, relu");
    }
}

/// The formula of `binary_channel_values_int8`, one element at a time with `f32::round`.
fn naive_channel_values(
    op: BinaryInt8,
    a: &[i8],
    s0: f32,
    channel: &[f32],
    channel_first: bool,
    s_out: f32,
    relu: bool,
) -> Vec<i8> {
    let inv = if s_out == 0.0 { 0.0 } else { 1.0 / s_out };
    a.iter()
        .enumerate()
        .map(|(i, &q)| {
            let x = q as f32 * s0;
            let c = channel[i % channel.len()];
            let (l, r) = if channel_first { (c, x) } else { (x, c) };
            let v = match op {
                BinaryInt8::Add => l + r,
                BinaryInt8::Sub => l - r,
                BinaryInt8::Mul => l * r,
                BinaryInt8::Max => l.max(r),
                BinaryInt8::Min => l.min(r),
            };
            let lo = if relu { 0.0 } else { -127.0 };
            (v * inv).max(lo).min(127.0).round() as i8
        })
        .collect()
}

proptest! {
    #[test]
    fn channel_values_binary_every_isa_matches_formula(
        op_index in 0usize..5,
        channels in 1usize..40,
        pixels in 1usize..20,
        seed in any::<u64>(),
        s0 in 0.01f32..1.0,
        s_out in 0.01f32..1.0,
        channel_first in any::<bool>(),
        relu in any::<bool>(),
        values in prop::collection::vec(-3.0f32..3.0, 40),
    ) {
        let op = [BinaryInt8::Add, BinaryInt8::Sub, BinaryInt8::Mul, BinaryInt8::Max, BinaryInt8::Min][op_index];
        let a = codes(channels * pixels, seed, -127);
        let channel = &values[..channels];
        let want = naive_channel_values(op, &a, s0, channel, channel_first, s_out, relu);
        for isa in Isa::supported() {
            let mut got = vec![0i8; a.len()];
            binary_channel_values_int8_with(isa, op, &a, s0, channel, channel_first, s_out, relu, &mut got);
            prop_assert_eq!(&got, &want, "isa {}", isa);
        }
    }
}

#[test]
fn channel_values_binary_hand_computed() {
    // Mul by per-channel 0.5 and 0.25, s0 1, s_out 0.5: codes 3, 3 -> 1.5 / 0.5 = 3 and
    // 0.75 / 0.5 = 1.5 -> 2 (half away from zero); -3 -> -1.5 -> -2.
    let mut out = [0i8; 4];
    binary_channel_values_int8_with(
        Isa::Portable,
        BinaryInt8::Mul,
        &[3, 3, 5, -3],
        1.0,
        &[0.5, 0.25],
        false,
        0.5,
        false,
        &mut out,
    );
    assert_eq!(out, [3, 2, 5, -2]);
}
