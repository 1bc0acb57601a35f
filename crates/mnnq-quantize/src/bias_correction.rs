//! Bias correction (config key `bias_correction`): rounding the weights of a channel to int8
//! shifts the mean of that output channel by `sum_k (w_q[k] - w[k]) * E[x_k]`, where `E[x_k]`
//! is the mean of the input channel tap `k` reads. That shift passes through every later layer
//! as a systematic error (no averaging cancels it). MNN keeps the bias float in its int8
//! format, so subtracting the expected shift there removes it at no run-time cost.
//!
//! `E[x]` is the per-channel mean of each convolution input over the calibration images,
//! measured in the float engine; border taps that read padding are not distinguished (their
//! share is small except on tiny feature maps).

use std::collections::{BTreeMap, BTreeSet};

use mnnq_engine::Engine;
use mnnq_format::{Net, OpType};

/// Per-channel mean of every input tensor of a Convolution / ConvolutionDepthwise, keyed by
/// tensor id, over `inputs` (preprocessed images) in the float `engine`.
pub fn conv_input_channel_means(
    net: &Net,
    engine: &Engine,
    inputs: &[Vec<f32>],
) -> Result<BTreeMap<u32, Vec<f32>>, String> {
    let mut wanted = BTreeSet::new();
    for op in net.oplists.iter().flatten() {
        if matches!(op.type_, OpType::Convolution | OpType::ConvolutionDepthwise) {
            if let Some(&[i]) = op.input_indexes.as_deref() {
                if i >= 0 {
                    wanted.insert(i as u32);
                }
            }
        }
    }
    let (means, _) = channel_means(engine, &wanted, inputs)?;
    Ok(means
        .into_iter()
        .map(|(t, m)| (t, m.into_iter().map(|v| v as f32).collect()))
        .collect())
}

/// Per-channel means by tensor id.
pub type ChannelMeans = BTreeMap<u32, Vec<f64>>;

/// Per-channel mean of each tensor in `wanted` (logical channel dim) and the outputs
/// concatenated per image, from `engine` (float or int8) on `inputs`.
pub fn channel_means(
    engine: &Engine,
    wanted: &BTreeSet<u32>,
    inputs: &[Vec<f32>],
) -> Result<(ChannelMeans, Vec<Vec<f32>>), String> {
    let mut sums: BTreeMap<u32, (Vec<f64>, usize)> = BTreeMap::new();
    let outputs = crate::runner::observe_images(
        engine,
        inputs,
        "measuring channel means",
        &mut |t, view, nhwc| {
            if !wanted.contains(&(t as u32)) {
                return;
            }
            let (sum, count) = sums.entry(t as u32).or_default();
            accumulate_channel_sums(view.shape, nhwc, view.data, sum);
            *count += view.data.len();
        },
    )?;
    let means = sums
        .into_iter()
        .map(|(t, (sum, count))| {
            let per_channel = (count / sum.len().max(1)).max(1) as f64;
            (t, sum.into_iter().map(|s| s / per_channel).collect())
        })
        .collect();
    Ok((means, outputs))
}

/// Adds the values of a tensor of `shape` (channel dim 1, or last when `nhwc`) into
/// per-channel `sums` (resized to the channel count).
pub fn accumulate_channel_sums(shape: &[usize], nhwc: bool, data: &[f32], sums: &mut Vec<f64>) {
    let (outer, channels, inner) = if nhwc {
        let c = shape.last().copied().unwrap_or(1).max(1);
        (data.len() / c, c, 1)
    } else {
        let c = shape.get(1).copied().unwrap_or(1).max(1);
        let outer = shape.first().copied().unwrap_or(1).max(1);
        (outer, c, data.len() / (outer * c).max(1))
    };
    if sums.len() != channels {
        sums.resize(channels, 0.0);
    }
    for o in 0..outer {
        for (c, sum) in sums.iter_mut().enumerate() {
            let start = (o * channels + c) * inner;
            if nhwc {
                *sum += f64::from(data[o * channels + c]);
            } else {
                *sum += data[start..start + inner]
                    .iter()
                    .map(|&v| f64::from(v))
                    .sum::<f64>();
            }
        }
    }
}

/// Subtracts from `bias` the mean output shift caused by replacing `weights` by `quantized`
/// (both `[out][in / group][kernel]`), for input channel means `input_means`.
/// `groups` is 1 for a dense convolution and the channel count for a depthwise one.
/// Returns false (bias untouched) when the sizes do not fit together.
pub fn correct_bias(
    weights: &[f32],
    quantized: &[f32],
    bias: &mut [f32],
    groups: usize,
    kernel_area: usize,
    input_means: &[f32],
) -> bool {
    let out_channels = bias.len();
    if out_channels == 0
        || groups == 0
        || kernel_area == 0
        || weights.len() != quantized.len()
        || !weights.len().is_multiple_of(out_channels)
        || !out_channels.is_multiple_of(groups)
    {
        return false;
    }
    let per_out = weights.len() / out_channels;
    if !per_out.is_multiple_of(kernel_area) {
        return false;
    }
    let in_per_group = per_out / kernel_area;
    if input_means.len() != in_per_group * groups {
        return false;
    }
    let out_per_group = out_channels / groups;
    for (c, b) in bias.iter_mut().enumerate() {
        let group = c / out_per_group;
        let mut shift = 0.0f64;
        for j in 0..in_per_group {
            let mean = f64::from(input_means[group * in_per_group + j]);
            let base = c * per_out + j * kernel_area;
            let delta: f64 = (base..base + kernel_area)
                .map(|k| f64::from(quantized[k]) - f64::from(weights[k]))
                .sum();
            shift += delta * mean;
        }
        *b = (f64::from(*b) - shift) as f32;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_conv_by_hand() {
        // 2 outputs, 2 inputs, 1x2 kernel. Input means (2, -1).
        // Out 0: delta = (+0.1, 0 | -0.2, 0.05) -> 0.1*2 + (-0.15)*(-1) = 0.35.
        // Out 1: delta = (0, 0 | 0.5, 0.5) -> 1.0 * (-1) = -1.0.
        let w = [1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 1.0, 1.0];
        let q = [1.1, 2.0, 2.8, 4.05, 0.0, 0.0, 1.5, 1.5];
        let mut bias = [0.5f32, 0.0];
        assert!(correct_bias(&w, &q, &mut bias, 1, 2, &[2.0, -1.0]));
        assert!((bias[0] - (0.5 - 0.35)).abs() < 1e-6, "{bias:?}");
        assert!((bias[1] - 1.0).abs() < 1e-6, "{bias:?}");
    }

    #[test]
    fn corrected_bias_removes_the_mean_shift_of_a_real_1x1_conv() {
        // y = W x + b on inputs with non-zero means: after correction, the mean over the
        // inputs of (W_q x + b') equals the mean of (W x + b) exactly (1x1 conv, no padding).
        let w = [0.31f32, -0.77, 0.12, 0.05];
        let q = [0.3f32, -0.8, 0.1, 0.1];
        let xs = [[1.0f32, 2.0], [3.0, -1.0], [2.0, 5.0]];
        let means = [2.0f32, 2.0];
        let b = [0.1f32, -0.2];
        let mut corrected = b;
        assert!(correct_bias(&w, &q, &mut corrected, 1, 1, &means));
        for c in 0..2 {
            let mean = |w: &[f32], b: f32| {
                xs.iter()
                    .map(|x| w[c * 2] * x[0] + w[c * 2 + 1] * x[1] + b)
                    .sum::<f32>()
                    / 3.0
            };
            assert!((mean(&w, b[c]) - mean(&q, corrected[c])).abs() < 1e-5);
        }
    }

    #[test]
    fn depthwise_uses_its_own_channel_and_bad_sizes_are_refused() {
        // Depthwise 2 channels, 3 taps: delta sums 0.3 and -0.6, means 10 and 1.
        let w = [0.0f32; 6];
        let q = [0.1f32, 0.1, 0.1, -0.2, -0.2, -0.2];
        let mut bias = [0.0f32; 2];
        assert!(correct_bias(&w, &q, &mut bias, 2, 3, &[10.0, 1.0]));
        assert!((bias[0] + 3.0).abs() < 1e-5 && (bias[1] - 0.6).abs() < 1e-5);
        assert!(!correct_bias(&w, &q, &mut bias, 2, 3, &[10.0]));
    }

    #[test]
    fn channel_sums_nchw_and_nhwc() {
        let mut sums = Vec::new();
        // 1x2x1x2 NCHW: channel 0 = {1, 2}, channel 1 = {3, 4}.
        accumulate_channel_sums(&[1, 2, 1, 2], false, &[1.0, 2.0, 3.0, 4.0], &mut sums);
        assert_eq!(sums, vec![3.0, 7.0]);
        let mut sums = Vec::new();
        // 1x1x2x2 NHWC: pixels (1,3), (2,4).
        accumulate_channel_sums(&[1, 1, 2, 2], true, &[1.0, 3.0, 2.0, 4.0], &mut sums);
        assert_eq!(sums, vec![3.0, 7.0]);
    }
}
