//! Every fp32 kernel, for every ISA this CPU supports (called directly, not through `MNNQ_ISA`),
//! against the naive reference in `mnnq_kernels::f32::reference`, on generated shapes: sizes
//! from 1 up past the tile and cache blocks, strides, dilations, paddings, activations.
//!
//! Results may differ from the reference by accumulation order only, so the tolerance is a few
//! ulps of the sum of absolute products (computed by running the reference on absolute values).
//! Splitting the work (pixel or row ranges) must not change a single bit.

use mnnq_kernels::dispatch::Isa;
use mnnq_kernels::f32::{self as kernels, reference, PackedDepthwise, PackedWeights, PoolKind};
use mnnq_kernels::{Activation, ConvGeometry};
use proptest::prelude::*;

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn abs(values: &[f32]) -> Vec<f32> {
    values.iter().map(|v| v.abs()).collect()
}

fn activation(index: u8) -> Activation {
    match index % 4 {
        0 => Activation::None,
        1 => Activation::Relu,
        2 => Activation::Relu6,
        _ => Activation::Clamp {
            min: -0.5,
            max: 0.75,
        },
    }
}

/// `got` matches `want` within a few ulps of `magnitude` (the sum of absolute terms).
fn assert_close(got: &[f32], want: &[f32], magnitude: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(magnitude).enumerate() {
        let tolerance = 4.0 * f32::EPSILON * m + 1e-7;
        assert!(
            (g - w).abs() <= tolerance,
            "{what}: element {i}: got {g}, want {w} (tolerance {tolerance})"
        );
    }
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Output size of a window along one axis, or `None` when the window does not fit.
fn out_size(
    input: usize,
    pad_begin: usize,
    pad_end: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let span = (kernel - 1) * dilation + 1;
    (input + pad_begin + pad_end)
        .checked_sub(span)
        .map(|room| room / stride + 1)
}

/// A forward window geometry from generated parameters, when it yields at least one output.
#[allow(clippy::too_many_arguments)]
fn window(
    (in_h, in_w, in_c, out_c): (usize, usize, usize, usize),
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (dh, dw): (usize, usize),
    (pt, pl, pb, pr): (usize, usize, usize, usize),
) -> Option<ConvGeometry> {
    // Padding smaller than the window, as frameworks require.
    let (pt, pb) = (pt % kh.max(1), pb % kh.max(1));
    let (pl, pr) = (pl % kw.max(1), pr % kw.max(1));
    Some(ConvGeometry {
        in_h,
        in_w,
        in_c,
        out_h: out_size(in_h, pt, pb, kh, sh, dh)?,
        out_w: out_size(in_w, pl, pr, kw, sw, dw)?,
        out_c,
        kernel_h: kh,
        kernel_w: kw,
        stride_h: sh,
        stride_w: sw,
        dilation_h: dh,
        dilation_w: dw,
        pad_top: pt,
        pad_left: pl,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn gemm_matches_reference(
        // Past the AVX-512 row block (192) now and then.
        m in prop_oneof![4 => 1usize..70, 1 => 180usize..420],
        k in prop_oneof![1usize..20, 20usize..600],
        n in prop_oneof![1usize..40, 40usize..100],
        lda_extra in 0usize..3,
        ldc_extra in 0usize..5,
        with_bias: bool,
        act in 0u8..4,
        split in 0usize..420,
        seed: u64,
    ) {
        let (lda, ldc) = (k + lda_extra, n + ldc_extra);
        let a = data((m - 1) * lda + k, seed);
        let b = data(k * n, seed + 1);
        let bias = if with_bias { data(n, seed + 2) } else { Vec::new() };
        let act = activation(act);
        // Reference on the dense copy of A.
        let dense_a: Vec<f32> = (0..m).flat_map(|i| a[i * lda..i * lda + k].to_vec()).collect();
        let mut want = vec![0.0; m * n];
        reference::gemm(m, k, n, &dense_a, &b, &bias, act, &mut want);
        let mut magnitude = vec![0.0; m * n];
        reference::gemm(m, k, n, &abs(&dense_a), &abs(&b), &abs(&bias), Activation::None, &mut magnitude);
        const SENTINEL: f32 = 1234.5;
        for isa in Isa::supported() {
            let packed = PackedWeights::pack_matrix_for(isa, &b, k, n);
            let mut c = vec![SENTINEL; (m - 1) * ldc + n];
            kernels::gemm(m, &a, lda, &packed, &bias, act, &mut c, ldc);
            let got: Vec<f32> = (0..m).flat_map(|i| c[i * ldc..i * ldc + n].to_vec()).collect();
            assert_close(&got, &want, &magnitude, &format!("gemm {isa} m={m} k={k} n={n}"));
            // Columns past n in each row (the rest of a wider tensor) stay untouched.
            for i in 0..m - 1 {
                prop_assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == SENTINEL));
            }
            // Two row ranges computed separately give the same bits.
            let split = split % m;
            let mut parts = vec![SENTINEL; (m - 1) * ldc + n];
            let (top, bottom) = parts.split_at_mut(split * ldc);
            if split > 0 {
                kernels::gemm(split, &a, lda, &packed, &bias, act, top, ldc);
            }
            kernels::gemm(m - split, &a[split * lda..], lda, &packed, &bias, act, bottom, ldc);
            prop_assert_eq!(bits(&parts), bits(&c), "gemm {} split at {}", isa, split);
        }
    }

    #[test]
    fn conv2d_matches_reference(
        // Fewer than 32 input channels go through im2col, more through per-tap GEMM passes.
        size in (1usize..10, 1usize..10, prop_oneof![1usize..20, 32usize..48], 1usize..40),
        kernel in (1usize..6, 1usize..6),
        stride in (1usize..4, 1usize..4),
        dilation in (1usize..3, 1usize..3),
        pads in (0usize..5, 0usize..5, 0usize..5, 0usize..5),
        with_bias: bool,
        act in 0u8..4,
        split in 0usize..100,
        seed: u64,
    ) {
        let Some(g) = window(size, kernel, stride, dilation, pads) else { return Ok(()) };
        check_conv(&g, with_bias, activation(act), split, seed);
    }

    #[test]
    fn depthwise_matches_reference(
        // Wide channel counts with large kernels split into channel blocks.
        size in (1usize..12, 1usize..20, prop_oneof![3 => 1usize..40, 1 => 150usize..200]),
        kernel in (1usize..6, 1usize..6),
        stride in (1usize..4, 1usize..4),
        dilation in (1usize..3, 1usize..3),
        pads in (0usize..5, 0usize..5, 0usize..5, 0usize..5),
        with_bias: bool,
        act in 0u8..4,
        split in 0usize..20,
        seed: u64,
    ) {
        let (h, w, c) = size;
        let Some(g) = window((h, w, c, c), kernel, stride, dilation, pads) else { return Ok(()) };
        let input = data(h * w * c, seed);
        let weights = data(c * g.kernel_h * g.kernel_w, seed + 1);
        let bias = if with_bias { data(c, seed + 2) } else { Vec::new() };
        let act = activation(act);
        let len = g.out_h * g.out_w * c;
        let mut want = vec![0.0; len];
        reference::depthwise_conv2d_nhwc(&g, &input, &weights, &bias, act, &mut want);
        let mut magnitude = vec![0.0; len];
        reference::depthwise_conv2d_nhwc(&g, &abs(&input), &abs(&weights), &abs(&bias), Activation::None, &mut magnitude);
        let packed = PackedDepthwise::pack(&weights, c, g.kernel_h, g.kernel_w);
        for isa in Isa::supported() {
            let mut got = vec![0.0; len];
            kernels::depthwise_conv2d_nhwc_isa(isa, &g, &input, &packed, &bias, act, &mut got, 0..g.out_h);
            assert_close(&got, &want, &magnitude, &format!("depthwise {isa} {g:?}"));
            let split = split % g.out_h;
            let row = g.out_w * c;
            let mut parts = vec![0.0; len];
            let (top, bottom) = parts.split_at_mut(split * row);
            kernels::depthwise_conv2d_nhwc_isa(isa, &g, &input, &packed, &bias, act, top, 0..split);
            kernels::depthwise_conv2d_nhwc_isa(isa, &g, &input, &packed, &bias, act, bottom, split..g.out_h);
            prop_assert_eq!(bits(&parts), bits(&got), "depthwise {} split at row {}", isa, split);
        }
    }

    #[test]
    fn deconv2d_matches_reference(
        size in (1usize..7, 1usize..7, 1usize..12, 1usize..20),
        kernel in (1usize..5, 1usize..5),
        stride in (1usize..4, 1usize..4),
        dilation in (1usize..3, 1usize..3),
        pads in (0usize..4, 0usize..4),
        output_padding in (0usize..3, 0usize..3),
        with_bias: bool,
        act in 0u8..4,
        split in 0usize..40,
        seed: u64,
    ) {
        let (in_h, in_w, in_c, out_c) = size;
        let (kh, kw) = kernel;
        let (sh, sw) = stride;
        let (dh, dw) = dilation;
        let (pt, pl) = (pads.0 % kh, pads.1 % kw);
        // ONNX: out = (in - 1) * stride + (k - 1) * dilation + 1 - pad_begin - pad_end + output_padding.
        let out_h = ((in_h - 1) * sh + (kh - 1) * dh + 1 + output_padding.0 % sh).checked_sub(2 * pt);
        let out_w = ((in_w - 1) * sw + (kw - 1) * dw + 1 + output_padding.1 % sw).checked_sub(2 * pl);
        let (Some(out_h), Some(out_w)) = (out_h, out_w) else { return Ok(()) };
        if out_h == 0 || out_w == 0 { return Ok(()) }
        let g = ConvGeometry {
            in_h, in_w, in_c, out_h, out_w, out_c,
            kernel_h: kh, kernel_w: kw, stride_h: sh, stride_w: sw,
            dilation_h: dh, dilation_w: dw, pad_top: pt, pad_left: pl,
        };
        let input = data(in_h * in_w * in_c, seed);
        let weights = data(in_c * out_c * kh * kw, seed + 1);
        let bias = if with_bias { data(out_c, seed + 2) } else { Vec::new() };
        let act = activation(act);
        let len = out_h * out_w * out_c;
        let mut want = vec![0.0; len];
        reference::deconv2d_nhwc(&g, &input, &weights, &bias, act, &mut want);
        let mut magnitude = vec![0.0; len];
        reference::deconv2d_nhwc(&g, &abs(&input), &abs(&weights), &abs(&bias), Activation::None, &mut magnitude);
        for isa in Isa::supported() {
            let packed = PackedWeights::pack_deconv_for(isa, &weights, in_c, out_c, kh, kw);
            let mut got = vec![0.0; len];
            kernels::deconv2d_nhwc(&g, &input, &packed, &bias, act, &mut got, 0..out_h);
            assert_close(&got, &want, &magnitude, &format!("deconv {isa} {g:?}"));
            let split = split % out_h;
            let row = out_w * out_c;
            let mut parts = vec![0.0; len];
            let (top, bottom) = parts.split_at_mut(split * row);
            kernels::deconv2d_nhwc(&g, &input, &packed, &bias, act, top, 0..split);
            kernels::deconv2d_nhwc(&g, &input, &packed, &bias, act, bottom, split..out_h);
            prop_assert_eq!(bits(&parts), bits(&got), "deconv {} split at row {}", isa, split);
        }
    }

    /// A deconvolution whose kernel tiles the output (stride = kernel: the detection heads'
    /// 2x2 up-sampling) takes the copy path; the same deconvolution with one more output
    /// column (ONNX output_padding) takes the general gather. They must agree to the bit on
    /// the shared columns, and the copy path must match the reference.
    #[test]
    fn tiled_deconv_matches_the_general_gather(
        size in (1usize..6, 1usize..9, 1usize..12, 1usize..40),
        kernel in (1usize..4, 1usize..4),
        with_bias: bool,
        act in 0u8..4,
        split in 0usize..40,
        seed: u64,
    ) {
        let (in_h, in_w, in_c, out_c) = size;
        let (kh, kw) = kernel;
        let tiled = ConvGeometry {
            in_h, in_w, in_c, out_h: in_h * kh, out_w: in_w * kw, out_c,
            kernel_h: kh, kernel_w: kw, stride_h: kh, stride_w: kw,
            dilation_h: 1, dilation_w: 1, pad_top: 0, pad_left: 0,
        };
        let wider = ConvGeometry { out_w: in_w * kw + 1, ..tiled };
        let input = data(in_h * in_w * in_c, seed);
        let weights = data(in_c * out_c * kh * kw, seed + 1);
        let bias = if with_bias { data(out_c, seed + 2) } else { Vec::new() };
        let act = activation(act);
        let (out_h, row) = (tiled.out_h, tiled.out_w * out_c);
        let mut want = vec![0.0; out_h * row];
        reference::deconv2d_nhwc(&tiled, &input, &weights, &bias, act, &mut want);
        let mut magnitude = vec![0.0; want.len()];
        reference::deconv2d_nhwc(&tiled, &abs(&input), &abs(&weights), &abs(&bias), Activation::None, &mut magnitude);
        for isa in Isa::supported() {
            let packed = PackedWeights::pack_deconv_for(isa, &weights, in_c, out_c, kh, kw);
            let mut got = vec![0.0; want.len()];
            let split = split % out_h;
            let (top, bottom) = got.split_at_mut(split * row);
            kernels::deconv2d_nhwc(&tiled, &input, &packed, &bias, act, top, 0..split);
            kernels::deconv2d_nhwc(&tiled, &input, &packed, &bias, act, bottom, split..out_h);
            assert_close(&got, &want, &magnitude, &format!("tiled deconv {isa} {tiled:?}"));
            let wide_row = wider.out_w * out_c;
            let mut general = vec![0.0; out_h * wide_row];
            kernels::deconv2d_nhwc(&wider, &input, &packed, &bias, act, &mut general, 0..out_h);
            let shared: Vec<f32> = general.chunks(wide_row).flat_map(|r| r[..row].to_vec()).collect();
            prop_assert_eq!(bits(&got), bits(&shared), "tiled deconv {} vs general gather", isa);
        }
    }

    #[test]
    fn pooling_matches_reference(
        size in (1usize..10, 1usize..12, 1usize..40),
        kernel in (1usize..5, 1usize..5),
        stride in (1usize..4, 1usize..4),
        pads in (0usize..4, 0usize..4, 0usize..4, 0usize..4),
        kind in 0u8..3,
        split in 0usize..20,
        seed: u64,
    ) {
        let (h, w, c) = size;
        let Some(g) = window((h, w, c, c), kernel, stride, (1, 1), pads) else { return Ok(()) };
        let (kind, average) = match kind {
            0 => (PoolKind::Max, None),
            1 => (PoolKind::Average { count_include_pad: false }, Some(false)),
            _ => (PoolKind::Average { count_include_pad: true }, Some(true)),
        };
        let input = data(h * w * c, seed);
        let len = g.out_h * g.out_w * c;
        let mut want = vec![0.0; len];
        reference::pool2d_nhwc(&g, &input, average, &mut want);
        let mut magnitude = vec![0.0; len];
        reference::pool2d_nhwc(&g, &abs(&input), average, &mut magnitude);
        for isa in Isa::supported() {
            let mut got = vec![0.0; len];
            kernels::pool2d_nhwc_isa(isa, kind, &g, &input, &mut got, 0..g.out_h);
            assert_close(&got, &want, &magnitude, &format!("pool {kind:?} {isa} {g:?}"));
            let split = split % g.out_h;
            let mut parts = vec![0.0; len];
            let (top, bottom) = parts.split_at_mut(split * g.out_w * c);
            kernels::pool2d_nhwc_isa(isa, kind, &g, &input, top, 0..split);
            kernels::pool2d_nhwc_isa(isa, kind, &g, &input, bottom, split..g.out_h);
            prop_assert_eq!(bits(&parts), bits(&got), "pool {:?} {} split at row {}", kind, isa, split);
        }
    }

    #[test]
    fn global_avg_pool_matches_mean(pixels in 1usize..300, channels in 1usize..150, seed: u64) {
        let input = data(pixels * channels, seed);
        let want: Vec<f32> = (0..channels)
            .map(|ch| (0..pixels).map(|p| input[p * channels + ch]).sum::<f32>() * (1.0 / pixels as f32))
            .collect();
        for isa in Isa::supported() {
            let mut got = vec![0.0; channels];
            kernels::global_avg_pool_nhwc_isa(isa, pixels, channels, &input, &mut got);
            // Same summation order as the reference: identical bits.
            prop_assert_eq!(bits(&got), bits(&want), "global average {}", isa);
        }
    }
}

fn check_conv(g: &ConvGeometry, with_bias: bool, act: Activation, split: usize, seed: u64) {
    let input = data(g.in_h * g.in_w * g.in_c, seed);
    let weights = data(g.out_c * g.in_c * g.kernel_h * g.kernel_w, seed + 1);
    let bias = if with_bias {
        data(g.out_c, seed + 2)
    } else {
        Vec::new()
    };
    let len = g.pixels() * g.out_c;
    let mut want = vec![0.0; len];
    reference::conv2d_nhwc(g, &input, &weights, &bias, act, &mut want);
    let mut magnitude = vec![0.0; len];
    reference::conv2d_nhwc(
        g,
        &abs(&input),
        &abs(&weights),
        &abs(&bias),
        Activation::None,
        &mut magnitude,
    );
    for isa in Isa::supported() {
        let packed =
            PackedWeights::pack_conv_for(isa, &weights, g.out_c, g.in_c, g.kernel_h, g.kernel_w);
        let mut got = vec![0.0; len];
        kernels::conv2d_nhwc(g, &input, &packed, &bias, act, &mut got, 0..g.pixels());
        assert_close(&got, &want, &magnitude, &format!("conv {isa} {g:?}"));
        let split = split % g.pixels();
        let mut parts = vec![0.0; len];
        let (head, tail) = parts.split_at_mut(split * g.out_c);
        kernels::conv2d_nhwc(g, &input, &packed, &bias, act, head, 0..split);
        kernels::conv2d_nhwc(g, &input, &packed, &bias, act, tail, split..g.pixels());
        assert_eq!(
            bits(&parts),
            bits(&got),
            "conv {isa} split at pixel {split}"
        );
    }
}

/// Shapes of EfficientNet-Lite0 and PP-OCR det layers, larger than the generated ones: the
/// stem (3x3 stride 2, 3 channels), pointwise convs across the im2col tile and cache blocks.
#[test]
fn conv2d_network_shapes() {
    let shapes = [
        // (in_h, in_w, in_c, out_c, k, stride, pad)
        (33, 33, 3, 32, 3, 2, 1),
        (28, 28, 40, 240, 1, 1, 0),
        (14, 14, 480, 80, 1, 1, 0),
        (7, 7, 1152, 320, 1, 1, 0),
        (20, 20, 96, 24, 3, 1, 1),
        (9, 9, 16, 16, 1, 2, 0),
    ];
    for (i, &(h, w, in_c, out_c, k, s, p)) in shapes.iter().enumerate() {
        let g = window((h, w, in_c, out_c), (k, k), (s, s), (1, 1), (p, p, p, p)).unwrap();
        check_conv(&g, true, Activation::Relu6, g.pixels() / 3, 100 + i as u64);
    }
}

/// 2x2 stride-2 deconvolution of a 1x2 single-channel image, worked by hand: each input pixel
/// stamps `value * kernel` onto its own 2x2 output block.
#[test]
fn deconv_2x2_stride_2_by_hand() {
    let g = ConvGeometry {
        in_h: 1,
        in_w: 2,
        in_c: 1,
        out_h: 2,
        out_w: 4,
        out_c: 1,
        kernel_h: 2,
        kernel_w: 2,
        stride_h: 2,
        stride_w: 2,
        dilation_h: 1,
        dilation_w: 1,
        pad_top: 0,
        pad_left: 0,
    };
    let input = [1.0, 2.0];
    let weights = [1.0, 2.0, 3.0, 4.0]; // [in_c][out_c][ky][kx]
    let want = [
        1.5, 2.5, 2.5, 4.5, // row 0: 1*[1 2] + 0.5, 2*[1 2] + 0.5
        3.5, 4.5, 6.5, 8.5, // row 1: 1*[3 4] + 0.5, 2*[3 4] + 0.5
    ];
    for isa in Isa::supported() {
        let packed = PackedWeights::pack_deconv_for(isa, &weights, 1, 1, 2, 2);
        let mut got = [0.0; 8];
        kernels::deconv2d_nhwc(
            &g,
            &input,
            &packed,
            &[0.5],
            Activation::None,
            &mut got,
            0..2,
        );
        assert_eq!(got, want, "{isa}");
    }
}

/// A 2x3 by 3x2 product with bias and ReLU6, worked by hand.
#[test]
fn gemm_by_hand() {
    let a = [1.0, 2.0, 3.0, -1.0, 0.5, 2.0];
    let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // row-major 3x2
    let bias = [0.5, -10.0];
    // Row 0: [1+3, 2+3] + bias = [4.5, -5] -> ReLU6 [4.5, 0]; row 1: [1, 2.5] + bias = [1.5, -7.5] -> [1.5, 0].
    for isa in Isa::supported() {
        let packed = PackedWeights::pack_matrix_for(isa, &b, 3, 2);
        let mut c = [9.0; 4];
        kernels::gemm(2, &a, 3, &packed, &bias, Activation::Relu6, &mut c, 2);
        assert_eq!(c, [4.5, 0.0, 1.5, 0.0], "{isa}");
    }
}

/// The sigmoid's own exponential: within 3 ulp of the exact sigmoid (f64) over [-80, 80], where
/// the result is a normal float; beyond, it saturates to 1 or to below 1e-37 (the clamp of the
/// exponential's input). The same bits on every instruction set and for the scalar form.
#[test]
fn sigmoid_is_accurate_and_the_same_on_every_isa() {
    use mnnq_kernels::f32::activation::{sigmoid, sigmoid_in_place_isa};
    let xs: Vec<f32> = (-400_000..=400_000).map(|i| i as f32 * 2.5e-4).collect();
    let mut worst = 0.0f64;
    for &x in xs.iter().filter(|x| x.abs() <= 80.0) {
        let exact = 1.0 / (1.0 + (-(x as f64)).exp());
        let got = sigmoid(x) as f64;
        worst = worst.max((got - exact).abs() / exact);
    }
    assert!(
        worst < 3.0 * f32::EPSILON as f64 / 2.0,
        "worst relative error {worst:e}"
    );
    assert_eq!(sigmoid(0.0), 0.5);
    assert_eq!(sigmoid(200.0), 1.0);
    assert!(sigmoid(-200.0) >= 0.0 && sigmoid(-200.0) < 1e-37);
    let scalar: Vec<u32> = xs.iter().map(|&x| sigmoid(x).to_bits()).collect();
    for isa in Isa::supported() {
        let mut v = xs.clone();
        sigmoid_in_place_isa(isa, &mut v);
        let bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        assert!(
            bits == scalar,
            "{isa}: vector sigmoid differs from the scalar form"
        );
    }
}
