//! Per-output-channel symmetric weight quantization: MAX_ABS and ADMM (doc §7).
//!
//! Weights are `channels` equal consecutive runs (MNN's grouping: `weightSize / outputCount`
//! floats per channel, true output channels for Convolution/ConvolutionDepthwise).

use crate::admm::validate_clamp;
use crate::CalibrateError;

/// Scale given to a channel whose weights are all zero. Its codes are all 0, so any finite
/// positive value decodes to the same zero weights; 1.0 (ONNX Runtime's choice for an empty
/// range) keeps every later division finite. MNN writes 0 (MAX_ABS), 0 (ADMM) or NaN (ADMM
/// after its pre-pass), all hazards for its int8 runtime.
pub const ZERO_CHANNEL_SCALE: f32 = 1.0;

/// MNN's iteration count for weight ADMM.
pub const WEIGHT_ADMM_ITERATIONS: usize = 1000;

/// Quantized weights: one scale per channel and one code per weight, `w ~ code * scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeights {
    pub scales: Vec<f32>,
    pub codes: Vec<i8>,
}

fn channel_length(weights: &[f32], channels: usize) -> Result<usize, CalibrateError> {
    if channels == 0 {
        return Err(CalibrateError::InvalidWeights(
            "zero output channels".into(),
        ));
    }
    if weights.is_empty() || !weights.len().is_multiple_of(channels) {
        return Err(CalibrateError::InvalidWeights(format!(
            "{} weights cannot be split into {channels} equal channels",
            weights.len()
        )));
    }
    if let Some(position) = weights.iter().position(|w| !w.is_finite()) {
        return Err(CalibrateError::InvalidWeights(format!(
            "weight {position} is {} (not finite)",
            weights[position]
        )));
    }
    Ok(weights.len() / channels)
}

fn abs_max(channel: &[f32]) -> f32 {
    channel.iter().fold(0.0f32, |m, w| m.max(w.abs()))
}

/// MAX_ABS (`SymmetricQuantizeWeight`): `scale = max|w| / clamp`,
/// `code = clamp(roundf(w * (clamp / max|w|)), -clamp, clamp)` (f32, half away from zero).
/// All-zero channels get [`ZERO_CHANNEL_SCALE`] and codes 0.
pub fn quantize_weights_max_abs(
    weights: &[f32],
    channels: usize,
    clamp: f32,
) -> Result<QuantizedWeights, CalibrateError> {
    validate_clamp(clamp)?;
    let length = channel_length(weights, channels)?;
    let mut scales = Vec::with_capacity(channels);
    let mut codes = Vec::with_capacity(weights.len());
    for channel in weights.chunks_exact(length) {
        let max = abs_max(channel);
        if max == 0.0 {
            scales.push(ZERO_CHANNEL_SCALE);
            codes.extend(std::iter::repeat_n(0i8, length));
            continue;
        }
        scales.push(max / clamp);
        let to_code = clamp / max;
        codes.extend(
            channel
                .iter()
                .map(|&w| (w * to_code).round().clamp(-clamp, clamp) as i8),
        );
    }
    Ok(QuantizedWeights { scales, codes })
}

/// MNN's pre-pass (`_fake_quant_weights`, doc §7.1) that replaces conv weights by their
/// MAX_ABS fake-quantized values before ADMM: `s = max|w| / clamp` (or `s = max|w|` when
/// `max|w| < 1e-6`), `w <- s * clamp(round(w / s))`, using a division as MNN does.
/// Unlike MNN, an all-zero channel stays zero instead of turning into NaN.
pub fn fake_quantize_max_abs_mnn(
    weights: &[f32],
    channels: usize,
    clamp: f32,
) -> Result<Vec<f32>, CalibrateError> {
    validate_clamp(clamp)?;
    let length = channel_length(weights, channels)?;
    let mut out = Vec::with_capacity(weights.len());
    for channel in weights.chunks_exact(length) {
        let max = abs_max(channel);
        if max == 0.0 {
            out.extend_from_slice(channel);
            continue;
        }
        let scale = if max < 1e-6 { max } else { max / clamp };
        out.extend(
            channel
                .iter()
                .map(|&w| scale * (w / scale).round().clamp(-clamp, clamp)),
        );
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightAdmmOptions {
    pub clamp: f32,
    pub iterations: usize,
    /// Run MNN's MAX_ABS fake-quantization pre-pass first (MNN-compatible mode; MNN applies it
    /// to Convolution and ConvolutionDepthwise weights, not Deconvolution). Default false:
    /// ADMM sees the original float weights.
    pub mnn_max_abs_prepass: bool,
}

impl Default for WeightAdmmOptions {
    fn default() -> Self {
        Self {
            clamp: crate::DEFAULT_CLAMP,
            iterations: WEIGHT_ADMM_ITERATIONS,
            mnn_max_abs_prepass: false,
        }
    }
}

/// Weight ADMM (`QuantizeWeightADMM`, doc §7.4), in MNN's f32 arithmetic:
/// `alpha0 = max|w| / (clamp * 1.25)` (f64 division rounded to f32; mean |w| if clamp <= 1),
/// then up to `iterations` rounds of `q = clamp(roundf(w / (alpha + 1e-9)))`,
/// `alpha = sum(w q) / (sum(q^2) + 1e-9)`. The loop stops early once the codes repeat, which
/// gives bit-identical results (alpha depends only on the codes). Codes returned are those of
/// the final scale. All-zero channels get [`ZERO_CHANNEL_SCALE`] and codes 0.
pub fn quantize_weights_admm(
    weights: &[f32],
    channels: usize,
    options: &WeightAdmmOptions,
) -> Result<QuantizedWeights, CalibrateError> {
    let clamp = options.clamp;
    validate_clamp(clamp)?;
    let length = channel_length(weights, channels)?;
    let prepassed;
    let source = if options.mnn_max_abs_prepass {
        prepassed = fake_quantize_max_abs_mnn(weights, channels, clamp)?;
        &prepassed[..]
    } else {
        weights
    };
    const EPS: f32 = 1e-9;
    let mut scales = Vec::with_capacity(channels);
    let mut codes = Vec::with_capacity(weights.len());
    let mut channel_codes = vec![0i8; length];
    let mut next_codes = vec![0i8; length];
    for channel in source.chunks_exact(length) {
        let max = abs_max(channel);
        if max == 0.0 {
            scales.push(ZERO_CHANNEL_SCALE);
            codes.extend(std::iter::repeat_n(0i8, length));
            continue;
        }
        let mut alpha = if clamp > 1.0 {
            (f64::from(max) / (f64::from(clamp) * 1.25)) as f32
        } else {
            let mut sum = 0.0f32;
            for w in channel {
                sum += w.abs();
            }
            sum / length as f32
        };
        let quantize = |alpha: f32, out: &mut [i8]| {
            for (q, &w) in out.iter_mut().zip(channel) {
                *q = (w / (alpha + EPS)).round().clamp(-clamp, clamp) as i8;
            }
        };
        quantize(alpha, &mut channel_codes);
        for iteration in 0..options.iterations {
            let mut sum_wq = 0.0f32;
            let mut sum_qq = 0.0f32;
            for (&q, &w) in channel_codes.iter().zip(channel) {
                sum_wq += w * f32::from(q);
                // MNN: int8 * int8 in int, then added to the f32 sum.
                sum_qq += (i32::from(q) * i32::from(q)) as f32;
            }
            alpha = sum_wq / (sum_qq + EPS);
            if iteration + 1 == options.iterations {
                break;
            }
            quantize(alpha, &mut next_codes);
            if next_codes == channel_codes {
                break;
            }
            std::mem::swap(&mut channel_codes, &mut next_codes);
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            // Only reachable for pathological channels (e.g. every weight rounds to 0 at the
            // initial scale, impossible with alpha0 <= max|w|); fall back to MAX_ABS.
            alpha = max / clamp;
        }
        quantize(alpha, &mut channel_codes);
        scales.push(alpha);
        codes.extend_from_slice(&channel_codes);
    }
    Ok(QuantizedWeights { scales, codes })
}

/// Candidate scales per channel tried by [`quantize_weights_mse`]: `max|w| / clamp` times
/// 1.0, 0.99, ... down to 0.5 (51 candidates).
pub const WEIGHT_MSE_CANDIDATES: usize = 51;

/// Squared error of quantizing `channel` with step `scale`.
fn channel_error(channel: &[f32], scale: f32, clamp: f32) -> f64 {
    let inverse = 1.0 / scale;
    let mut error = 0.0f32;
    for &w in channel {
        let code = (w * inverse).round().clamp(-clamp, clamp);
        let e = w - code * scale;
        error += e * e;
    }
    f64::from(error)
}

/// MSE weight scales: per output channel, the scale among `max|w| / clamp * f` for
/// `f = 1.0, 0.99, ..., 0.5` whose codes `clamp(round(w / scale))` reconstruct the weights
/// with the least squared error. Clipping a rare large weight buys a finer step for all the
/// others, which matters for depthwise kernels (9-25 weights per channel, where one weight
/// often sets the range). Ties keep the larger scale (so MAX_ABS when nothing is better).
/// All-zero channels get [`ZERO_CHANNEL_SCALE`] and codes 0.
pub fn quantize_weights_mse(
    weights: &[f32],
    channels: usize,
    clamp: f32,
) -> Result<QuantizedWeights, CalibrateError> {
    validate_clamp(clamp)?;
    let length = channel_length(weights, channels)?;
    let mut scales = Vec::with_capacity(channels);
    let mut codes = Vec::with_capacity(weights.len());
    for channel in weights.chunks_exact(length) {
        let max = abs_max(channel);
        if max == 0.0 {
            scales.push(ZERO_CHANNEL_SCALE);
            codes.extend(std::iter::repeat_n(0i8, length));
            continue;
        }
        let mut best = (f64::INFINITY, max / clamp);
        for step in 0..WEIGHT_MSE_CANDIDATES {
            let factor = 1.0 - 0.5 * step as f32 / (WEIGHT_MSE_CANDIDATES - 1) as f32;
            let scale = max / clamp * factor;
            let error = channel_error(channel, scale, clamp);
            if error < best.0 {
                best = (error, scale);
            }
        }
        let inverse = 1.0 / best.1;
        scales.push(best.1);
        codes.extend(
            channel
                .iter()
                .map(|&w| (w * inverse).round().clamp(-clamp, clamp) as i8),
        );
    }
    Ok(QuantizedWeights { scales, codes })
}

#[cfg(test)]
mod mse_tests {
    use super::*;

    fn error(w: &[f32], q: &QuantizedWeights) -> f64 {
        w.iter()
            .zip(&q.codes)
            .map(|(&x, &c)| (f64::from(x) - f64::from(c) * f64::from(q.scales[0])).powi(2))
            .sum()
    }

    #[test]
    fn keeps_max_abs_when_clipping_costs_more() {
        // A ramp on the MAX_ABS grid is exact there.
        let ramp: Vec<f32> = (-127..=127).map(|i| i as f32 * 0.01).collect();
        let q = quantize_weights_mse(&ramp, 1, 127.0).unwrap();
        assert_eq!(q.scales, vec![1.27 / 127.0]);
        // {1.0, 0.3}: at 1/127 the error is (0.1/127)^2 = 6e-7; the mildest clip (f = 0.995)
        // already costs (0.005)^2 = 2.5e-5.
        let q = quantize_weights_mse(&[1.0, 0.3], 1, 127.0).unwrap();
        assert_eq!(q.scales[0], 1.0 / 127.0);
        assert_eq!(q.codes, vec![127, 38]);
    }

    #[test]
    fn clips_one_outlier_when_the_bulk_gains() {
        // 10000 weights of 0.015 and one of 1.27. MAX_ABS (step 0.01): each 0.015 is 1.5 steps,
        // rounds to 2, error 0.005^2 * 10000 = 0.25. At f = 0.82 (step 0.0082) it rounds to 2
        // (error 0.0014^2 * 10000 = 0.0196) and 1.27 clips to 1.0414 (error 0.0523): 0.072.
        let mut w = vec![0.015f32; 10000];
        w.push(1.27);
        let q = quantize_weights_mse(&w, 1, 127.0).unwrap();
        let max_abs = quantize_weights_max_abs(&w, 1, 127.0).unwrap();
        assert!((error(&w, &max_abs) - 0.25).abs() < 1e-3);
        let e = error(&w, &q);
        assert!(e < 0.075, "error {e}, scale {}", q.scales[0]);
        assert!(q.scales[0] < 0.0086 && q.scales[0] > 0.0078);
        assert_eq!(
            q.codes[10000], 127,
            "the outlier is clipped to the top code"
        );
    }

    #[test]
    fn zero_channel_and_per_channel_split() {
        let q = quantize_weights_mse(&[0.0, 0.0, 0.5, -0.25], 2, 127.0).unwrap();
        assert_eq!(q.scales[0], ZERO_CHANNEL_SCALE);
        assert_eq!(&q.codes[..2], &[0, 0]);
        assert_eq!(q.codes[2], 127);
        assert_eq!(q.codes[3], -64);
    }
}
