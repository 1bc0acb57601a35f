//! Requantization parameters and MNN's rounding rules (see `docs/mnn-quantization.md` §11).
//!
//! Every kernel, whatever its instruction set, turns an accumulator into a code with the same f32
//! operations in the same order, so the output bytes are identical across ISAs:
//! dense `y = ((acc + offset[c]) as f32 * alpha[c]) * ratio + bias[c]` (separate multiplies and
//! add, never a fused multiply-add; the order is MNN x86's, see [`Requantize`]), then
//! `y.max(lo).min(hi)`, then round half away from zero.

/// Smallest feature code. MNN clamps features to `[-127, 127]` (never -128).
pub const CODE_MIN: i8 = -127;
/// Largest feature code.
pub const CODE_MAX: i8 = 127;

/// The lower clamp bound of an int8 op's output: 0 when a ReLU or ReLU6 is fused (the 6 of ReLU6
/// is *not* applied in int8: MNN relies on the calibrated output scale instead), else -127.
pub fn lower_bound(relu_fused: bool) -> i8 {
    if relu_fused {
        0
    } else {
        CODE_MIN
    }
}

/// `f32` one below 0.5: adding it with the sign of `x` and truncating rounds half away from zero
/// exactly like `f32::round` for every finite `x` (0.5 itself is not used because `x + 0.5`
/// rounds up in f32 for the largest value below 0.5). SIMD kernels use this form; the tests check
/// it against `f32::round`.
pub const ALMOST_HALF: f32 = 0.499_999_97;

/// Round half away from zero with the add-and-truncate form the SIMD kernels use. Equal to
/// `x.round()` for every finite `x`.
#[inline(always)]
pub fn round_half_away(x: f32) -> f32 {
    (x + ALMOST_HALF.copysign(x)).trunc()
}

/// Per-output-channel requantization of a dense (group 1) int8 convolution, MNN §11.4, in the
/// exact f32 arithmetic of MNN 3.6.1's x86 kernels (AVX-512 VNNI `GemmInt8_VNNI.cpp`, checked
/// bit for bit on EfficientNet-Lite0, docs/int8-parity.md). MNN x86 feeds the GEMM `q + 128`
/// (uint8), so its accumulator is `acc_u = acc + 128 * sum_k w[c][k]`, and it removes the offset
/// in the float bias instead of in the integers:
/// `y = (acc_u as f32 * alpha[c]) * (s_in / s_out) + (b[c] - (sum_k w[c][k] * alpha[c]) * 128 * s_in) / s_out`,
/// `q = round(clamp(y, lo, hi))`. The large cancelling terms make its rounding differ from the
/// mathematically equal `acc * alpha * s_in / s_out + b / s_out` by one code in ~0.01-1 % of the
/// outputs; reproducing the order removes that.
#[derive(Clone, Debug, PartialEq)]
pub struct Requantize {
    /// `128 * sum_k w[c][k]`, added to the signed accumulator (MNN's uint8 accumulator).
    pub offset: Vec<i32>,
    /// The weight scale `alpha[c]`.
    pub alpha: Vec<f32>,
    /// `s_in / s_out`, computed once.
    pub ratio: f32,
    /// `(b[c] - (sum_k w[c][k] * alpha[c]) * 128 * s_in) / s_out`.
    pub bias: Vec<f32>,
    pub lo: i8,
    pub hi: i8,
    /// The input zero point: the code of the padding taps (im2col fills them with it).
    pub pad: i8,
}

impl Requantize {
    /// Build MNN's per-channel factors from the weight scales `alpha`, the float bias, the sum of
    /// each output channel's int8 weights, the input and output tensor scales and whether a
    /// ReLU/ReLU6 is fused.
    pub fn for_conv(
        alpha: &[f32],
        bias: &[f32],
        weight_sums: &[i32],
        s_in: f32,
        s_out: f32,
        relu_fused: bool,
    ) -> Self {
        Self::for_conv_with_zero_points(alpha, bias, weight_sums, s_in, s_out, relu_fused, 0, 0)
    }

    /// [`Self::for_conv`] for asymmetric input and output codes (value = `(q - z) * s`), in MNN's
    /// order (`CPUConvolution.cpp` `updateInputOutputScale`): the input zero point joins the
    /// x86 offset, `bias[c] = (b[c] - (sum_k w * alpha[c]) * (z_in + 128) * s_in) / s_out + z_out`,
    /// padding taps are code `z_in` (the value 0), and a fused ReLU clamps at `z_out`.
    #[allow(clippy::too_many_arguments)]
    pub fn for_conv_with_zero_points(
        alpha: &[f32],
        bias: &[f32],
        weight_sums: &[i32],
        s_in: f32,
        s_out: f32,
        relu_fused: bool,
        z_in: i8,
        z_out: i8,
    ) -> Self {
        assert!(
            alpha.len() == bias.len() && alpha.len() == weight_sums.len(),
            "Requantize::for_conv: {} weight scales, {} bias values, {} weight sums",
            alpha.len(),
            bias.len(),
            weight_sums.len()
        );
        Requantize {
            offset: weight_sums.iter().map(|&s| 128 * s).collect(),
            alpha: alpha.to_vec(),
            ratio: s_in / s_out,
            bias: bias
                .iter()
                .zip(alpha)
                .zip(weight_sums)
                .map(|((&b, &a), &sum)| {
                    let centred = (b - (sum as f32 * a) * (f32::from(z_in) + 128.0) * s_in) / s_out;
                    if z_out == 0 {
                        centred
                    } else {
                        centred + f32::from(z_out)
                    }
                })
                .collect(),
            lo: if relu_fused {
                z_out.max(CODE_MIN)
            } else {
                CODE_MIN
            },
            hi: CODE_MAX,
            pad: z_in,
        }
    }

    pub fn channels(&self) -> usize {
        self.alpha.len()
    }

    /// The reference epilogue for one signed accumulator `sum q_in * w` of channel `c`.
    #[inline(always)]
    pub fn apply(&self, acc: i32, c: usize) -> i8 {
        let y = acc.wrapping_add(self.offset[c]) as f32 * self.alpha[c] * self.ratio + self.bias[c];
        let y = y.max(self.lo as f32).min(self.hi as f32);
        y.round() as i8
    }
}

/// Per-channel requantization of an int8 depthwise convolution, MNN §11.5:
/// `q = clamp(round((acc + bias[c]) * multiplier[c]), lo, hi)` with an integer bias.
#[derive(Clone, Debug, PartialEq)]
pub struct DepthwiseRequantize {
    /// `max(alpha[c], 1e-6) * (s_in / s_out)`.
    pub multiplier: Vec<f32>,
    /// `trunc(b[c] / (s_in * max(alpha[c], 1e-6)))` (truncation toward zero, as MNN does).
    pub bias: Vec<i32>,
    pub lo: i8,
    pub hi: i8,
    /// The input zero point: the code of the padding taps.
    pub pad: i8,
}

impl DepthwiseRequantize {
    pub fn for_depthwise(
        alpha: &[f32],
        bias: &[f32],
        s_in: f32,
        s_out: f32,
        relu_fused: bool,
    ) -> Self {
        Self::for_depthwise_with_zero_points(alpha, bias, s_in, s_out, relu_fused, 0, 0)
    }

    /// [`Self::for_depthwise`] for asymmetric codes, in MNN's integer form
    /// (`CPUConvolution.cpp`): `bias[c] = trunc(b / (s_in * alpha')) - z_in * sum_taps w +
    /// trunc(z_out / multiplier[c])` (the output zero point goes through the multiplier, so
    /// it is exact only up to the truncation, as in MNN), padding taps are code `z_in`, and a
    /// fused ReLU clamps at `z_out`.
    pub fn for_depthwise_with_zero_points(
        alpha: &[f32],
        bias: &[f32],
        s_in: f32,
        s_out: f32,
        relu_fused: bool,
        z_in: i8,
        z_out: i8,
    ) -> Self {
        assert_eq!(
            alpha.len(),
            bias.len(),
            "DepthwiseRequantize::for_depthwise: {} weight scales but {} bias values",
            alpha.len(),
            bias.len()
        );
        let ratio = s_in / s_out;
        let floored: Vec<f32> = alpha.iter().map(|&a| a.max(1e-6)).collect();
        let multiplier: Vec<f32> = floored.iter().map(|&a| a * ratio).collect();
        DepthwiseRequantize {
            // `as i32` truncates toward zero (and saturates), like C's `(int32_t)` cast for
            // every value that C defines. The `- z_in * sum w` part needs the weights: it is
            // added by [`Self::with_weight_sums`].
            bias: floored
                .iter()
                .zip(bias)
                .zip(&multiplier)
                .map(|((&a, &b), &m)| {
                    let centred = (b / (s_in * a)) as i32;
                    if z_out == 0 {
                        centred
                    } else {
                        centred.saturating_add((f32::from(z_out) / m) as i32)
                    }
                })
                .collect(),
            multiplier,
            lo: if relu_fused {
                z_out.max(CODE_MIN)
            } else {
                CODE_MIN
            },
            hi: CODE_MAX,
            pad: z_in,
        }
    }

    /// Folds `- z_in * sum_taps w[c]` into the bias (`weight_sums[c]` = sum of channel c's
    /// taps); a no-op for a zero input zero point.
    pub fn with_weight_sums(mut self, weight_sums: &[i32]) -> Self {
        assert_eq!(
            weight_sums.len(),
            self.bias.len(),
            "one weight sum per channel"
        );
        if self.pad != 0 {
            for (b, &sum) in self.bias.iter_mut().zip(weight_sums) {
                *b = b.wrapping_sub(i32::from(self.pad) * sum);
            }
        }
        self
    }

    pub fn channels(&self) -> usize {
        self.multiplier.len()
    }

    /// The reference epilogue for one accumulator of channel `c`. The clamp is done in f32
    /// before rounding; with integer bounds that equals rounding first and clamping the integer.
    #[inline(always)]
    pub fn apply(&self, acc: i32, c: usize) -> i8 {
        let y = acc.wrapping_add(self.bias[c]) as f32 * self.multiplier[c];
        let y = y.max(self.lo as f32).min(self.hi as f32);
        y.round() as i8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_truncate_rounding_matches_f32_round_near_every_half() {
        // Every half-integer in the code range and the 64 floats on either side of it.
        for twice in -300i32..=300 {
            let half = twice as f32 / 2.0;
            let mut below = half;
            let mut above = half;
            for _ in 0..64 {
                below = f32::from_bits(if below > 0.0 {
                    below.to_bits() - 1
                } else if below == 0.0 {
                    0x8000_0001
                } else {
                    below.to_bits() + 1
                });
                above = f32::from_bits(if above >= 0.0 {
                    above.to_bits() + 1
                } else {
                    above.to_bits() - 1
                });
                for x in [half, below, above] {
                    assert_eq!(round_half_away(x), x.round(), "x = {x:e}");
                }
            }
        }
        for x in [
            0.0f32, -0.0, 1e-30, -1e-30, 8388607.5, 8388608.0, 1e30, -1e30,
        ] {
            assert_eq!(round_half_away(x), x.round(), "x = {x:e}");
        }
    }

    #[test]
    fn dense_epilogue_follows_mnn_order_and_rounds_half_away() {
        // alpha 1, ratio 0.5, no weights summed, bias 0: acc 5 -> 2.5 -> 3; -5 -> -3; 3 -> 2.
        let rq = Requantize::for_conv(&[1.0], &[0.0], &[0], 0.5, 1.0, false);
        assert_eq!(rq.ratio, 0.5);
        assert_eq!(rq.apply(5, 0), 3);
        assert_eq!(rq.apply(-5, 0), -3);
        assert_eq!(rq.apply(3, 0), 2);
        assert_eq!(rq.apply(1000, 0), 127);
        assert_eq!(rq.apply(-1000, 0), -127, "codes never reach -128");
        let relu = Requantize::for_conv(&[1.0], &[0.0], &[0], 0.5, 1.0, true);
        assert_eq!(relu.apply(-5, 0), 0);
        // Bias term b / s_out: 0.25 / 0.5 = 0.5, so acc 0 gives 0.5 -> 1.
        let biased = Requantize::for_conv(&[2.0], &[0.25], &[0], 0.25, 0.5, false);
        assert_eq!(biased.bias, vec![0.5]);
        assert_eq!(biased.apply(0, 0), 1);
        assert_eq!(biased.apply(-1, 0), -1, "-1 + 0.5 = -0.5 rounds away to -1");
    }

    #[test]
    fn dense_epilogue_works_on_the_uint8_accumulator_like_mnn_x86() {
        // Weights summing to 3: offset 384 and the bias carries -3 * alpha * 128 * s_in / s_out.
        let rq = Requantize::for_conv(&[0.5], &[1.0], &[3], 0.25, 0.5, false);
        assert_eq!(rq.offset, vec![384]);
        assert_eq!(rq.bias, vec![(1.0 - 1.5 * 128.0 * 0.25) / 0.5]);
        // Mathematically acc * 0.5 * 0.5 + 2: acc 10 -> 4.5 -> 5, acc -10 -> -0.5 -> -1.
        assert_eq!(rq.apply(10, 0), 5);
        assert_eq!(rq.apply(-10, 0), -1);
        // Where the two orders differ in f32, the MNN one is what `apply` computes.
        let (alpha, s_in, s_out, b, sum) = (
            0.000_311_7_f32,
            0.367_242_f32,
            0.047_233_f32,
            0.91_f32,
            -5170,
        );
        let rq = Requantize::for_conv(&[alpha], &[b], &[sum], s_in, s_out, false);
        let mut orders_differ = 0;
        for acc in -200_000..200_000 {
            let mnn = ((acc + 128 * sum) as f32 * alpha) * (s_in / s_out)
                + (b - (sum as f32 * alpha) * 128.0 * s_in) / s_out;
            let naive = acc as f32 * (alpha * (s_in / s_out)) + b / s_out;
            let code = |y: f32| y.clamp(-127.0, 127.0).round() as i8;
            assert_eq!(rq.apply(acc, 0), code(mnn));
            orders_differ += usize::from(code(mnn) != code(naive));
        }
        assert!(
            orders_differ > 0,
            "the range must contain a case the order decides"
        );
    }

    #[test]
    fn depthwise_bias_truncates_toward_zero_and_alpha_is_floored() {
        // b / (s_in * alpha) = 1.7 / (0.5 * 2) = 1.7 -> 1; -1.7 -> -1 (not -2).
        let rq = DepthwiseRequantize::for_depthwise(&[2.0, 2.0], &[1.7, -1.7], 0.5, 1.0, false);
        assert_eq!(rq.bias, vec![1, -1]);
        assert_eq!(rq.multiplier, vec![1.0, 1.0]);
        // (acc + B) * m: (2 + 1) * 1 = 3; (2 - 1) = 1.
        assert_eq!(rq.apply(2, 0), 3);
        assert_eq!(rq.apply(2, 1), 1);
        let floored = DepthwiseRequantize::for_depthwise(&[0.0], &[0.0], 1.0, 1.0, true);
        assert_eq!(floored.multiplier, vec![1e-6]);
        assert_eq!(floored.apply(-3_000_000, 0), 0, "ReLU clamps to 0");
        assert_eq!(floored.apply(1_500_000, 0), 2, "1.5 rounds away from zero");
        let half = DepthwiseRequantize::for_depthwise(&[0.5], &[0.0], 1.0, 1.0, false);
        assert_eq!(half.apply(-3, 0), -2, "-1.5 rounds away from zero");
    }
}
