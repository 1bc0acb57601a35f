//! Feature scales from the collected statistics (doc §4.4-4.6, §5), never zero or NaN.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use mnnq_calibrate::{
    kl_feature_scale, small_tensor_uses_max, unify_scales, AdmmOptions, LayoutOp, RangeStats,
    ThresholdMethod, UnifyOptions,
};

use crate::plan::CalibrationPlan;
use crate::range_method::RangeMethod;
use crate::stats::Histograms;
use crate::QuantizeError;

/// Why a tracked tensor got no scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoScaleReason {
    /// Never computed during calibration (e.g. only reached through a skipped op).
    NotSeen,
    /// max |x| <= 1e-5 over all images (all zero): MNN would write scale 0.
    NoRange,
    /// Contains NaN/inf, or the method gave a non-finite or non-positive scale.
    NotFinite,
}

/// Feature scale of every tensor that has one, and why the others have none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureScales {
    pub scales: BTreeMap<u32, f32>,
    /// Zero points of the tensors with asymmetric codes (value = `(q - zero) * scale`); a
    /// tensor not listed has zero point 0.
    pub zero_points: BTreeMap<u32, i8>,
    pub missing: BTreeMap<u32, NoScaleReason>,
    /// Tensors whose KL search was replaced by the MAX threshold (graph inputs, small tensors).
    pub max_threshold: usize,
}

fn usable(scale: f32) -> bool {
    scale.is_finite() && scale > 0.0
}

/// Scales before unification. KL: MNN's threshold search, MAX for graph inputs and tensors
/// with width*height < 100 (MNN's dims). ADMM: the streaming histogram ADMM.
pub fn feature_scales(
    plan: &CalibrationPlan,
    ranges: &[RangeStats],
    histograms: &Histograms,
    clamp: f32,
) -> Result<FeatureScales, QuantizeError> {
    feature_scales_with(plan, ranges, histograms, clamp, &|_| RangeMethod::Kl)
}

/// [`feature_scales`] with the range method of each tensor (by id) chosen by `method`
/// (`crate::range_method`); `RangeMethod::Kl` everywhere is MNN's behaviour.
pub fn feature_scales_with(
    plan: &CalibrationPlan,
    ranges: &[RangeStats],
    histograms: &Histograms,
    clamp: f32,
    method: &(dyn Fn(u32) -> RangeMethod + Sync),
) -> Result<FeatureScales, QuantizeError> {
    // Each tensor's scale depends on its own statistics only: compute them in parallel
    // (rayon balances the uneven KL costs), collected in tensor order.
    let per_tensor: Vec<Result<TensorOutcome, QuantizeError>> = (0..plan.len())
        .into_par_iter()
        .map(|slot| {
            let m = method(plan.tensors[slot].id);
            tensor_scale(plan, slot, ranges, histograms, clamp, m)
        })
        .collect();
    let mut out = FeatureScales::default();
    for (tensor, result) in plan.tensors.iter().zip(per_tensor) {
        let (scale, reason, used_max) = result?;
        if used_max {
            out.max_threshold += 1;
        }
        match (scale, reason) {
            (Some(s), _) => {
                out.scales.insert(tensor.id, s);
            }
            (None, Some(r)) => {
                out.missing.insert(tensor.id, r);
            }
            (None, None) => {
                out.missing.insert(tensor.id, NoScaleReason::NoRange);
            }
        }
    }
    Ok(out)
}

/// One tensor's scale, or why it has none, and whether the MAX threshold was used.
type TensorOutcome = (Option<f32>, Option<NoScaleReason>, bool);

/// Computes one tensor's [`TensorOutcome`].
fn tensor_scale(
    plan: &CalibrationPlan,
    slot: usize,
    ranges: &[RangeStats],
    histograms: &Histograms,
    clamp: f32,
    range_method: RangeMethod,
) -> Result<TensorOutcome, QuantizeError> {
    let tensor = &plan.tensors[slot];
    {
        let range = &ranges[slot];
        let reason = if range.min > range.max {
            Some(NoScaleReason::NotSeen)
        } else if !(range.min.is_finite() && range.max.is_finite()) {
            Some(NoScaleReason::NotFinite)
        } else if !range.is_valid() {
            Some(NoScaleReason::NoRange)
        } else {
            None
        };
        if let Some(reason) = reason {
            return Ok((None, Some(reason), false));
        }
        let mut used_max = false;
        let scale = match histograms {
            Histograms::Kl(h) => h[slot].as_ref().map(|h| {
                let use_max =
                    tensor.graph_input || small_tensor_uses_max(&tensor.shape, tensor.nhwc);
                used_max = use_max;
                let method = if use_max {
                    ThresholdMethod::Max
                } else {
                    ThresholdMethod::Kl
                };
                match range_method {
                    RangeMethod::Max => crate::range_method::max_scale(h, clamp),
                    RangeMethod::Mse if !use_max => crate::range_method::mse_scale(h, clamp),
                    _ => kl_feature_scale(h, method, clamp).scale,
                }
            }),
            Histograms::Admm(h) => match &h[slot] {
                Some(h) => h
                    .admm_scale(&AdmmOptions {
                        clamp,
                        ..AdmmOptions::default()
                    })?
                    .map(|r| r.scale),
                None => None,
            },
        };
        Ok(match scale {
            Some(s) if usable(s) => (Some(s), None, used_max),
            Some(_) => (None, Some(NoScaleReason::NotFinite), used_max),
            None => (None, Some(NoScaleReason::NoRange), used_max),
        })
    }
}

/// How far unification goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnifyMode {
    /// One pass in op-name order, exactly as MNN: in a chain (pool -> pool, reshape -> pool)
    /// a later op in name order can copy a scale that an earlier one then changes, leaving
    /// an op with different input and output scales.
    MnnSinglePass,
    /// MNN's pass, repeated until nothing changes (the default) (at most 16 passes), so every chain ends
    /// consistent. Differs from MNN only where MNN leaves an op inconsistent.
    #[default]
    UntilStable,
}

/// Applies the unification rules (doc §4.6, plus standalone ReLU sharing its input's scale)
/// in place. Returns the number of passes run.
///
/// `float_max_pools` (input, output) are max pools MNN's x86 int8 kernel gets wrong
/// ([`crate::plan::signed_max_pools`]). Except in [`UnifyMode::MnnSinglePass`] (parity), each
/// one's output gets the next float above its input scale: MNN runs a Pooling in int8 only
/// when both scales are equal, so it pools in float instead, and requantizing `q * s` with
/// `1 / next_up(s)` gives back exactly `q` for every |q| <= 127 (the codes are unchanged).
/// Leaving the output without a scale would not do: MNN copies the input's quant info to it.
pub fn unify(
    scales: &mut FeatureScales,
    ops: &[LayoutOp],
    share_relu: bool,
    mode: UnifyMode,
    float_max_pools: &[(u32, u32)],
) -> usize {
    // A scale and its zero point move together.
    let mut map: HashMap<u32, (f32, i8)> = scales
        .scales
        .iter()
        .map(|(&k, &v)| (k, (v, scales.zero_points.get(&k).copied().unwrap_or(0))))
        .collect();
    let max_passes = match mode {
        UnifyMode::MnnSinglePass => 1,
        UnifyMode::UntilStable => 16,
    };
    let mut passes = 0;
    while passes < max_passes {
        let before = map.clone();
        unify_scales(
            ops,
            &mut map,
            UnifyOptions {
                share_relu_scales: share_relu,
            },
        );
        if mode == UnifyMode::UntilStable {
            for &(input, output) in float_max_pools {
                if let Some(&(scale, zero)) = map.get(&input) {
                    if usable(scale) {
                        map.insert(output, (scale.next_up(), zero));
                    }
                }
            }
        }
        if mode == UnifyMode::UntilStable {
            align_raster_inputs(ops, &mut map);
        }
        passes += 1;
        if map == before {
            break;
        }
    }
    for (id, (scale, zero)) in map {
        if usable(scale) {
            scales.scales.insert(id, scale);
            scales.missing.remove(&id);
            if zero == 0 {
                scales.zero_points.remove(&id);
            } else {
                scales.zero_points.insert(id, zero);
            }
        }
    }
    passes
}

/// A tensor whose calibrated range is one-sided or nearly so: `min >= -ratio * max`, max > 0.
pub fn is_skewed(range: &RangeStats, ratio: f32) -> bool {
    range.max > 0.0 && range.min >= -ratio * range.max
}

/// Levels of an asymmetric code: codes `[-clamp, clamp]`, `2 * clamp` steps.
fn asymmetric_steps(clamp: f32) -> f32 {
    2.0 * clamp
}

/// Gives the tensors in `candidates` whose range is skewed ([`is_skewed`] with
/// `skew_ratio`) asymmetric codes: the range `[lo, hi]` with `lo = min(0, observed min)` and
/// `hi` chosen by the tensor's range method on the |x| histogram for `2 * clamp` steps (MSE:
/// the one-sided MSE threshold; MAX: the observed max; KL: its symmetric threshold), mapped to
/// codes `[-clamp, clamp]`: `scale = (hi - lo) / (2 clamp)`, `zero = round(-clamp - lo / scale)`.
/// Returns how many tensors became asymmetric. Only for KL-type histograms (not ADMM).
#[allow(clippy::too_many_arguments)]
pub fn make_asymmetric(
    scales: &mut FeatureScales,
    plan: &CalibrationPlan,
    ranges: &[RangeStats],
    histograms: &Histograms,
    clamp: f32,
    candidates: &std::collections::BTreeSet<u32>,
    skew_ratio: f32,
    method: &(dyn Fn(u32) -> RangeMethod + Sync),
) -> usize {
    let Histograms::Kl(hists) = histograms else {
        return 0;
    };
    let steps = asymmetric_steps(clamp);
    let mut changed = 0;
    for (slot, tensor) in plan.tensors.iter().enumerate() {
        let id = tensor.id;
        let (Some(&symmetric), Some(h)) = (scales.scales.get(&id), hists[slot].as_ref()) else {
            continue;
        };
        let range = &ranges[slot];
        if !candidates.contains(&id) || !is_skewed(range, skew_ratio) {
            continue;
        }
        let lo = range.min.min(0.0);
        let hi = match method(id) {
            RangeMethod::Max => range.max,
            RangeMethod::Mse | RangeMethod::Auto => {
                crate::range_method::mse_scale(h, steps) * steps
            }
            RangeMethod::Kl => symmetric * clamp,
        }
        .min(range.max);
        // NaN-safe: a NaN bound is skipped too.
        if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let scale = (hi - lo) / steps;
        let zero = (-clamp - lo / scale).round().clamp(-clamp, clamp);
        if !usable(scale) || zero == 0.0 {
            continue;
        }
        scales.scales.insert(id, scale);
        scales.zero_points.insert(id, zero as i8);
        changed += 1;
    }
    changed
}

/// A one-input layout op (nearest Interp, reshape, ...) whose output scale was set by a
/// Concat after it gives that scale to its input too. MNN's single pass copies the input's
/// scale forward and then the Concat overwrites the output, so the op is left between two
/// scales, where MNN's int8 nearest Interp does not requantize as our runtime does (on PP-OCR
/// det v4, 83 % of the up-sampled branch's codes differed, up to 18; the map lost 0.012 of
/// cosine in MNN). Equal scales make it a byte copy in every runtime.
fn align_raster_inputs<V: Copy>(ops: &[LayoutOp], map: &mut HashMap<u32, V>) {
    use mnnq_calibrate::LayoutOpKind;
    let single_input: HashMap<u32, u32> = ops
        .iter()
        .filter(|op| op.kind == LayoutOpKind::Raster)
        .filter_map(|op| match op.inputs[..] {
            [input] => Some((op.output, input)),
            _ => None,
        })
        .collect();
    for concat in ops
        .iter()
        .filter(|op| op.kind == LayoutOpKind::Raster && op.inputs.len() > 1)
    {
        let Some(&scale) = map.get(&concat.output) else {
            continue;
        };
        for &input in &concat.inputs {
            // Up the chain of one-input layout ops before this Concat input (bounded: a
            // malformed cycle must not loop forever).
            let mut tensor = input;
            for _ in 0..=single_input.len() {
                map.insert(tensor, scale);
                match single_input.get(&tensor) {
                    Some(&before) => tensor = before,
                    None => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::TrackedTensor;
    use mnnq_calibrate::AbsHistogram;

    fn tensor(id: u32, shape: &[usize], graph_input: bool) -> TrackedTensor {
        TrackedTensor {
            id,
            shape: shape.to_vec(),
            nhwc: false,
            graph_input,
            constant: None,
        }
    }

    #[test]
    fn float_max_pool_outputs_get_the_next_scale_up_except_in_parity_mode() {
        use mnnq_calibrate::LayoutOpKind;
        // 0 -> maxpool -> 1 -> reshape -> 2: the reshape must follow the adjusted scale.
        let ops = vec![
            LayoutOp {
                name: "pool".into(),
                kind: LayoutOpKind::Pooling,
                inputs: vec![0],
                output: 1,
            },
            LayoutOp {
                name: "reshape".into(),
                kind: LayoutOpKind::Raster,
                inputs: vec![1],
                output: 2,
            },
        ];
        let start = FeatureScales {
            scales: [(0, 0.038_065), (1, 0.5), (2, 0.25)].into_iter().collect(),
            ..Default::default()
        };
        let mut stable = start.clone();
        unify(&mut stable, &ops, true, UnifyMode::UntilStable, &[(0, 1)]);
        let up = 0.038_065f32.next_up();
        assert_eq!(stable.scales[&1], up);
        assert_eq!(stable.scales[&2], up);
        // Dequantize then requantize with the reciprocal, as MNN's casts do: codes survive.
        for q in -127i32..=127 {
            let x = q as f32 * 0.038_065f32;
            assert_eq!((x * (1.0 / up)).round() as i32, q);
        }
        let mut parity = start;
        unify(&mut parity, &ops, true, UnifyMode::MnnSinglePass, &[(0, 1)]);
        assert_eq!(parity.scales[&1], 0.038_065);
    }

    #[test]
    fn relu6_output_gets_zero_point_at_the_lowest_code_and_a_halved_step() {
        // Tensor 1: ReLU6-like values in [0, 6]; tensor 2: two-sided; tensor 3: skewed but not a
        // candidate.
        let plan = CalibrationPlan::new(vec![
            tensor(1, &[1, 8, 32, 32], false),
            tensor(2, &[1, 8, 32, 32], false),
            tensor(3, &[1, 8, 32, 32], false),
        ]);
        let relu6: Vec<f32> = (0..8192).map(|i| (i % 601) as f32 / 100.0).collect();
        let signed: Vec<f32> = relu6.iter().map(|&x| x - 3.0).collect();
        let data = [&relu6, &signed, &relu6];
        let mut ranges = vec![RangeStats::new(); 3];
        for (r, d) in ranges.iter_mut().zip(data) {
            r.update(d);
        }
        let hist: Vec<Option<AbsHistogram>> = ranges
            .iter()
            .zip(data)
            .map(|(r, d)| {
                AbsHistogram::for_range(r).map(|mut h| {
                    h.add_slice(d);
                    h
                })
            })
            .collect();
        let histograms = Histograms::Kl(hist);
        let method = |_| RangeMethod::Max;
        let mut out = feature_scales_with(&plan, &ranges, &histograms, 127.0, &method).unwrap();
        let symmetric = out.scales[&1];
        let candidates: std::collections::BTreeSet<u32> = [1, 2].into_iter().collect();
        let changed = make_asymmetric(
            &mut out,
            &plan,
            &ranges,
            &histograms,
            127.0,
            &candidates,
            0.1,
            &method,
        );
        assert_eq!(changed, 1);
        assert_eq!(out.zero_points.get(&1), Some(&-127), "0 is the lowest code");
        // MAX range [0, 6] over 254 steps: half the symmetric step.
        assert!(
            (out.scales[&1] - 6.0 / 254.0).abs() < 1e-6,
            "{}",
            out.scales[&1]
        );
        assert!(out.scales[&1] < 0.51 * symmetric);
        assert!(
            !out.zero_points.contains_key(&2),
            "two-sided range stays symmetric"
        );
        assert!(!out.zero_points.contains_key(&3), "not a candidate");
        // Codes of 0 and 6 are the ends of the range.
        let (s, z) = (out.scales[&1], -127.0f32);
        assert_eq!((0.0f32 / s + z).round(), -127.0);
        assert_eq!((6.0f32 / s + z).round(), 127.0);
    }

    #[test]
    fn unification_moves_the_zero_point_with_the_scale() {
        use mnnq_calibrate::LayoutOpKind;
        // concat(0, 1) -> 2: the inputs take the output's scale and zero point.
        let ops = vec![LayoutOp {
            name: "concat".into(),
            kind: LayoutOpKind::Raster,
            inputs: vec![0, 1],
            output: 2,
        }];
        let mut s = FeatureScales {
            scales: [(0, 0.5), (1, 0.25), (2, 0.03)].into_iter().collect(),
            zero_points: [(0, -127), (2, -120)].into_iter().collect(),
            ..Default::default()
        };
        unify(&mut s, &ops, true, UnifyMode::UntilStable, &[]);
        assert_eq!(s.scales[&0], 0.03);
        assert_eq!(s.scales[&1], 0.03);
        assert_eq!(s.zero_points.get(&0), Some(&-120));
        assert_eq!(s.zero_points.get(&1), Some(&-120));
        // And a symmetric output makes its inputs symmetric.
        let mut s = FeatureScales {
            scales: [(0, 0.5), (1, 0.25), (2, 0.03)].into_iter().collect(),
            zero_points: [(0, -127)].into_iter().collect(),
            ..Default::default()
        };
        unify(&mut s, &ops, true, UnifyMode::UntilStable, &[]);
        assert!(s.zero_points.is_empty());
    }

    #[test]
    fn a_concat_bound_interp_gives_its_scale_to_its_input() {
        use mnnq_calibrate::LayoutOpKind;
        // 0 -> interp -> 1; concat(1, 2) -> 3 (PP-OCR det's FPN): MNN's pass order leaves the
        // interp between 0's and 3's scales, repeated unification must not.
        let ops = vec![
            LayoutOp {
                name: "interp".into(),
                kind: LayoutOpKind::Raster,
                inputs: vec![0],
                output: 1,
            },
            LayoutOp {
                name: "concat".into(),
                kind: LayoutOpKind::Raster,
                inputs: vec![1, 2],
                output: 3,
            },
        ];
        let start = FeatureScales {
            scales: [(0, 9.6f32), (1, 9.6), (2, 20.0), (3, 19.6)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let mut stable = start.clone();
        unify(&mut stable, &ops, true, UnifyMode::UntilStable, &[]);
        for t in 0..4 {
            assert_eq!(stable.scales[&t], 19.6, "tensor {t}");
        }
        let mut parity = start;
        unify(&mut parity, &ops, true, UnifyMode::MnnSinglePass, &[]);
        // MNN's single pass, in op-name order (concat before interp): unchanged.
        assert_eq!(parity.scales[&0], 9.6);
        assert_eq!(parity.scales[&1], 9.6);
        assert_eq!(parity.scales[&3], 19.6);
    }

    #[test]
    fn max_fallback_for_inputs_and_small_tensors_and_no_zero_scales() {
        let plan = CalibrationPlan::new(vec![
            tensor(0, &[1, 3, 32, 32], true),
            tensor(1, &[1, 8, 4, 4], false),
            tensor(2, &[1, 8, 32, 32], false),
            tensor(3, &[1, 8, 32, 32], false),
        ]);
        let data: Vec<f32> = (0..8192).map(|i| ((i % 97) as f32 - 48.0) / 10.0).collect();
        let mut ranges = vec![RangeStats::new(); 4];
        for r in &mut ranges[..3] {
            r.update(&data);
        }
        ranges[3].update(&[0.0; 16]);
        let hist: Vec<Option<AbsHistogram>> = ranges
            .iter()
            .map(|r| {
                AbsHistogram::for_range(r).map(|mut h| {
                    h.add_slice(&data);
                    h
                })
            })
            .collect();
        let out = feature_scales(&plan, &ranges, &Histograms::Kl(hist), 127.0).unwrap();
        let max_abs = 4.8f32;
        let max_scale = ((2047.0f64 + 0.5) / f64::from(2048.0 / max_abs) / 127.0) as f32;
        assert_eq!(out.scales[&0], max_scale, "graph input uses MAX");
        assert_eq!(out.scales[&1], max_scale, "4x4 tensor uses MAX");
        assert!(out.scales[&2] <= max_scale && out.scales[&2] > 0.0);
        assert_eq!(out.missing.get(&3), Some(&NoScaleReason::NoRange));
        assert_eq!(out.max_threshold, 2);
    }
}
