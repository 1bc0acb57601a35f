//! Data-aware weight rounding (config key `weight_rounding`: `NEAREST`, MNN's, or `GPTQ`).
//!
//! Rounding each weight to its nearest int8 code minimises the error of every weight on its
//! own, not the error of the convolution's output. The output error of one output channel is
//! `e^T H e`, with `e` the weight error of that channel and `H = E[p p^T]` the second moment
//! of the input patches `p` the channel reads (calibration images, float engine). GPTQ
//! (Frantar et al., 2022, after Optimal Brain Surgeon) rounds the weights one at a time and
//! moves the rounding error of each onto the weights not yet rounded, in the direction that
//! `H` says cancels it best. The per-channel scales stay MAX_ABS's, so the file form and both
//! runtimes are unchanged; only some codes move by one.
//!
//! Measured on EfficientNet-Lite0: with nearest rounding the int8 weights alone (features
//! float) flip 6 of the 64 evaluation images' top-1; the stem convolution's 27-tap weights
//! are the largest single cost (docs/quality.md).

use std::collections::BTreeMap;

use mnnq_engine::engine::{Prepared, Step};
use mnnq_engine::ir::OpKind;
use mnnq_engine::Engine;
use rayon::prelude::*;

/// Output positions sampled per image and convolution (a stride over the output map).
const SAMPLES_PER_IMAGE: usize = 4096;
/// Patch lengths above this keep nearest rounding (H would be too large to gather).
pub const MAX_PATCH_LEN: usize = 1536;
/// Diagonal damping, as a fraction of the mean diagonal of `H`: keeps the inverse stable
/// where inputs are nearly collinear or rarely active.
const DAMPING: f64 = 0.01;

/// Input second moments of one convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct InputMoments {
    /// Patch length: `in_channels * kh * kw` (dense) or `kh * kw` (depthwise).
    pub patch_len: usize,
    /// One `patch_len x patch_len` matrix (row-major, full) per group: one for a dense
    /// convolution, one per channel for a depthwise one.
    pub second_moments: Vec<Vec<f64>>,
}

/// The input second moments of every dense and depthwise convolution whose patch fits
/// [`MAX_PATCH_LEN`], keyed by output tensor id, over `inputs` in the float `engine`.
pub fn conv_input_moments(
    engine: &Engine,
    inputs: &[Vec<f32>],
) -> Result<BTreeMap<u32, InputMoments>, String> {
    struct Wanted {
        geometry: mnnq_engine::ConvGeometry,
        depthwise: bool,
        output: u32,
    }
    let mut wanted: BTreeMap<usize, Vec<Wanted>> = BTreeMap::new();
    for step in &engine.steps {
        let Step::Node {
            node,
            inputs: slots_in,
            outputs: slots_out,
            prepared: Prepared::Conv(prepared),
        } = step
        else {
            continue;
        };
        let OpKind::Conv(params) = &engine.ir.nodes[*node].kind else {
            continue;
        };
        if params.kind.is_deconvolution() || slots_in.len() != 1 || prepared.batch() != 1 {
            continue;
        }
        let geometry = prepared.geometry();
        let depthwise = params.group > 1
            && params.group == params.in_channels
            && params.group == params.out_channels;
        if params.group != 1 && !depthwise {
            continue;
        }
        let taps = geometry.kernel_h * geometry.kernel_w;
        let patch_len = if depthwise {
            taps
        } else {
            geometry.in_c * taps
        };
        if patch_len == 0 || patch_len > MAX_PATCH_LEN {
            continue;
        }
        let input = engine.slots[slots_in[0]].tensor;
        let output = engine.slots[slots_out[0]].tensor as u32;
        wanted.entry(input).or_default().push(Wanted {
            geometry,
            depthwise,
            output,
        });
    }
    let mut sums: BTreeMap<u32, InputMoments> = BTreeMap::new();
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    crate::runner::observe_images(engine, inputs, "weight rounding", &mut |t, view, nhwc| {
        let Some(convs) = wanted.get(&t) else {
            return;
        };
        for conv in convs {
            let g = &conv.geometry;
            if view.data.len() != g.in_h * g.in_w * g.in_c {
                continue;
            }
            let image = Image {
                data: view.data,
                nhwc,
                geometry: g,
            };
            let positions = sampled_positions(g.out_h * g.out_w);
            let entry = sums.entry(conv.output).or_insert_with(|| {
                let taps = g.kernel_h * g.kernel_w;
                let (groups, len) = if conv.depthwise {
                    (g.in_c, taps)
                } else {
                    (1, g.in_c * taps)
                };
                InputMoments {
                    patch_len: len,
                    second_moments: vec![vec![0.0; len * len]; groups],
                }
            });
            let len = entry.patch_len;
            entry
                .second_moments
                .par_iter_mut()
                .enumerate()
                .for_each(|(group, moments)| {
                    let channels = if conv.depthwise {
                        group..group + 1
                    } else {
                        0..g.in_c
                    };
                    let patches = image.patches(&positions, channels);
                    add_outer_products(&patches, len, moments);
                });
            *counts.entry(conv.output).or_default() += positions.len() as u64;
        }
    })?;
    for (output, moments) in &mut sums {
        let n = counts.get(output).copied().unwrap_or(1).max(1) as f64;
        for m in &mut moments.second_moments {
            m.iter_mut().for_each(|v| *v /= n);
        }
    }
    Ok(sums)
}

/// Every `step`-th output position, at most [`SAMPLES_PER_IMAGE`] of them.
fn sampled_positions(pixels: usize) -> Vec<usize> {
    let step = pixels.div_ceil(SAMPLES_PER_IMAGE).max(1);
    (0..pixels).step_by(step).collect()
}

/// One observed convolution input.
struct Image<'a> {
    data: &'a [f32],
    nhwc: bool,
    geometry: &'a mnnq_engine::ConvGeometry,
}

impl Image<'_> {
    /// The input patches of `positions` over `channels`, one row each, in weight order
    /// (`[channel][ky][kx]`); taps in the padding read 0.
    fn patches(&self, positions: &[usize], channels: std::ops::Range<usize>) -> Vec<f32> {
        let g = self.geometry;
        let taps = g.kernel_h * g.kernel_w;
        let len = channels.len() * taps;
        let mut out = vec![0.0f32; positions.len() * len];
        for (row, &position) in out.chunks_exact_mut(len).zip(positions) {
            let (oy, ox) = (position / g.out_w, position % g.out_w);
            for (ci, c) in channels.clone().enumerate() {
                for ky in 0..g.kernel_h {
                    let y = (oy * g.stride_h + ky * g.dilation_h).checked_sub(g.pad_top);
                    let Some(y) = y.filter(|&y| y < g.in_h) else {
                        continue;
                    };
                    for kx in 0..g.kernel_w {
                        let x = (ox * g.stride_w + kx * g.dilation_w).checked_sub(g.pad_left);
                        let Some(x) = x.filter(|&x| x < g.in_w) else {
                            continue;
                        };
                        let index = if self.nhwc {
                            (y * g.in_w + x) * g.in_c + c
                        } else {
                            (c * g.in_h + y) * g.in_w + x
                        };
                        row[ci * taps + ky * g.kernel_w + kx] = self.data[index];
                    }
                }
            }
        }
        out
    }
}

/// `moments += sum over rows p of p p^T` (rows of length `len`).
fn add_outer_products(patches: &[f32], len: usize, moments: &mut [f64]) {
    // Per-image sums in f32 vectorize well; they are added into f64 per row block.
    let mut block = vec![0.0f32; len * len];
    for p in patches.chunks_exact(len) {
        for (i, &a) in p.iter().enumerate() {
            if a == 0.0 {
                continue;
            }
            let row = &mut block[i * len..(i + 1) * len];
            for (h, &b) in row.iter_mut().zip(p) {
                *h += a * b;
            }
        }
    }
    for (m, b) in moments.iter_mut().zip(&block) {
        *m += f64::from(*b);
    }
}

/// Upper Cholesky factor `U` of `H^-1` (`H^-1 = U^T U`), after damping `H` and giving unused
/// inputs (zero diagonal) a unit diagonal. None when `H` is not positive definite even then.
pub fn inverse_cholesky_upper(moments: &[f64], len: usize) -> Option<Vec<f64>> {
    let mut h = moments.to_vec();
    let mean_diagonal = (0..len).map(|i| h[i * len + i]).sum::<f64>() / len.max(1) as f64;
    let damping = DAMPING * mean_diagonal.max(f64::MIN_POSITIVE);
    for i in 0..len {
        if h[i * len + i] <= 0.0 {
            h[i * len + i] = 1.0;
        }
        h[i * len + i] += damping;
    }
    let l = cholesky_lower(&h, len)?;
    // H^-1 = L^-T L^-1: invert L (lower triangular), then form the product.
    let mut l_inv = vec![0.0; len * len];
    for col in 0..len {
        for row in col..len {
            let mut sum = if row == col { 1.0 } else { 0.0 };
            for k in col..row {
                sum -= l[row * len + k] * l_inv[k * len + col];
            }
            l_inv[row * len + col] = sum / l[row * len + row];
        }
    }
    let mut inverse = vec![0.0; len * len];
    for i in 0..len {
        for j in i..len {
            let start = i.max(j);
            let v: f64 = (start..len)
                .map(|k| l_inv[k * len + i] * l_inv[k * len + j])
                .sum();
            inverse[i * len + j] = v;
            inverse[j * len + i] = v;
        }
    }
    let lower = cholesky_lower(&inverse, len)?;
    // U = lower^T.
    let mut upper = vec![0.0; len * len];
    for i in 0..len {
        for j in i..len {
            upper[i * len + j] = lower[j * len + i];
        }
    }
    Some(upper)
}

/// Lower Cholesky factor of a symmetric positive definite `len x len` matrix.
fn cholesky_lower(a: &[f64], len: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; len * len];
    for i in 0..len {
        for j in 0..=i {
            let mut sum = a[i * len + j];
            for k in 0..j {
                sum -= l[i * len + k] * l[j * len + k];
            }
            if i == j {
                if sum <= 0.0 || !sum.is_finite() {
                    return None;
                }
                l[i * len + i] = sum.sqrt();
            } else {
                l[i * len + j] = sum / l[j * len + j];
            }
        }
    }
    Some(l)
}

/// The int8 codes of one output channel's weights at `scale`, rounded in order with each
/// rounding error moved onto the later weights through `upper` ([`inverse_cholesky_upper`]).
pub fn round_channel(weights: &[f32], scale: f32, clamp: f32, upper: &[f64]) -> Vec<i8> {
    let len = weights.len();
    let mut w: Vec<f64> = weights.iter().map(|&v| f64::from(v)).collect();
    let scale = f64::from(scale);
    let clamp = f64::from(clamp);
    // The largest weight keeps its code +-clamp (its nearest one before any update): MNN's
    // runtime derives its int8 weight arithmetic from the channel's largest code, and gave
    // different outputs from ours when the error feedback had moved that code to 126.
    let pinned = (0..len)
        .max_by(|&a, &b| w[a].abs().total_cmp(&w[b].abs()).then(b.cmp(&a)))
        .map(|i| (i, (w[i] / scale).round().clamp(-clamp, clamp)));
    let mut codes = Vec::with_capacity(len);
    for i in 0..len {
        let code = match pinned {
            Some((p, code)) if p == i => code,
            _ => (w[i] / scale).round().clamp(-clamp, clamp),
        };
        codes.push(code as i8);
        let error = (w[i] - code * scale) / upper[i * len + i];
        for j in i + 1..len {
            w[j] -= error * upper[i * len + j];
        }
    }
    codes
}

/// GPTQ codes for a whole convolution: `weights` `[out][patch]` with per-channel `scales`;
/// `moments` one matrix (dense) or one per output channel (depthwise). None when a matrix
/// cannot be factored (the caller keeps nearest rounding).
pub fn round_conv(
    weights: &[f32],
    scales: &[f32],
    clamp: f32,
    moments: &InputMoments,
) -> Option<Vec<i8>> {
    let len = moments.patch_len;
    let channels = scales.len();
    if len == 0 || weights.len() != channels * len {
        return None;
    }
    let uppers: Vec<Vec<f64>> = moments
        .second_moments
        .par_iter()
        .map(|m| inverse_cholesky_upper(m, len))
        .collect::<Option<_>>()?;
    if uppers.len() != 1 && uppers.len() != channels {
        return None;
    }
    let codes: Vec<Vec<i8>> = weights
        .par_chunks_exact(len)
        .zip(scales)
        .enumerate()
        .map(|(c, (w, &s))| {
            let upper = &uppers[if uppers.len() == 1 { 0 } else { c }];
            if w.iter().all(|&v| v == 0.0) {
                vec![0; len]
            } else {
                round_channel(w, s, clamp, upper)
            }
        })
        .collect();
    Some(codes.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_error(w: &[f32], codes: &[i8], scale: f32, h: &[f64]) -> f64 {
        let len = w.len();
        let e: Vec<f64> = w
            .iter()
            .zip(codes)
            .map(|(&w, &q)| f64::from(w) - f64::from(q) * f64::from(scale))
            .collect();
        (0..len)
            .flat_map(|i| (0..len).map(move |j| (i, j)))
            .map(|(i, j)| e[i] * h[i * len + j] * e[j])
            .sum()
    }

    #[test]
    fn uncorrelated_inputs_give_nearest_rounding() {
        // H diagonal: the errors of different weights do not interact, so moving one onto
        // another cannot help and every code is the nearest one.
        let h = vec![2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5];
        let upper = inverse_cholesky_upper(&h, 3).unwrap();
        let w = [0.26f32, -0.74, 0.55];
        assert_eq!(round_channel(&w, 0.1, 127.0, &upper), vec![3, -7, 6]);
    }

    #[test]
    fn two_identical_inputs_by_hand() {
        // Inputs always equal (x, x): only w0 + w1 = 0.28 reaches the output. Nearest
        // rounding at step 0.1 gives codes (1, 1), sum 0.2, off by 0.08. With H damped to
        // [[1.01, 1], [1, 1.01]], H^-1 = [[50.25, -49.75], [-49.75, 50.25]] and its upper
        // factor has U00 = 7.0887, U01 = -7.0182. Rounding w0 to 0.1 leaves error
        // 0.04 / 7.0887 = 0.005643, and w1 becomes 0.14 + 0.005643 * 7.0182 = 0.1796 ->
        // code 2: sum 0.3, off by 0.02.
        let h = vec![1.0, 1.0, 1.0, 1.0];
        let upper = inverse_cholesky_upper(&h, 2).unwrap();
        let w = [0.14f32, 0.14];
        let codes = round_channel(&w, 0.1, 127.0, &upper);
        assert_eq!(codes, vec![1, 2]);
        let nearest = [1i8, 1];
        assert!(output_error(&w, &codes, 0.1, &h) < output_error(&w, &nearest, 0.1, &h));
    }

    #[test]
    fn gptq_beats_nearest_on_average_on_correlated_inputs() {
        // A fixed correlated H (inputs sharing a common component) and pseudo-random weights.
        let len = 6;
        let mut h = vec![0.0f64; len * len];
        for i in 0..len {
            for j in 0..len {
                h[i * len + j] = if i == j { 1.0 } else { 0.6 };
            }
        }
        let upper = inverse_cholesky_upper(&h, len).unwrap();
        let mut seed = 12345u32;
        let mut better = 0;
        let (mut total_gptq, mut total_nearest) = (0.0, 0.0);
        for _ in 0..50 {
            let w: Vec<f32> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect();
            let scale = 0.05;
            let nearest: Vec<i8> = w.iter().map(|&v| (v / scale).round() as i8).collect();
            let codes = round_channel(&w, scale, 127.0, &upper);
            let (g, n) = (
                output_error(&w, &codes, scale, &h),
                output_error(&w, &nearest, scale, &h),
            );
            total_gptq += g;
            total_nearest += n;
            if g < n {
                better += 1;
            }
        }
        // Greedy, so not better on every draw (24 of 50 better, the rest mostly equal),
        // but the summed output error halves (0.038 against 0.077).
        assert!(better >= 20, "better on {better} of 50");
        assert!(
            total_gptq < 0.6 * total_nearest,
            "gptq {total_gptq} nearest {total_nearest}"
        );
    }

    #[test]
    fn patches_read_padding_as_zero_in_weight_order() {
        // 1 channel 2x2 input (NCHW 1,2,3,4), 2x2 kernel, stride 1, pad 1: output 3x3.
        let geometry = mnnq_engine::ConvGeometry {
            in_h: 2,
            in_w: 2,
            in_c: 1,
            out_h: 3,
            out_w: 3,
            out_c: 1,
            kernel_h: 2,
            kernel_w: 2,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: 1,
            pad_left: 1,
        };
        let data = [1.0f32, 2.0, 3.0, 4.0];
        let image = Image {
            data: &data,
            nhwc: false,
            geometry: &geometry,
        };
        // Position 0 (top-left): only tap (1,1) is inside, reading 1. Position 4 (centre):
        // all four taps inside.
        let p = image.patches(&[0, 4], 0..1);
        assert_eq!(p, vec![0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(sampled_positions(10), (0..10).collect::<Vec<_>>());
        assert_eq!(
            sampled_positions(3 * SAMPLES_PER_IMAGE).len(),
            SAMPLES_PER_IMAGE
        );
    }
}
