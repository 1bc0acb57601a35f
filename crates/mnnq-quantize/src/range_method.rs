//! How the clipping range of each activation is chosen (config key `feature_range_method`).
//!
//! MNN's KL search picks the threshold whose quantized distribution is closest to the float one
//! in KL divergence. That criterion ignores *where* the clipped mass goes: on the PP-OCR
//! detector it clips the inputs of the final Sigmoid and the up-sampling adds so hard that the
//! text map disappears (see `docs/quality.md`). The alternatives here choose the range from the
//! same 2048-bin |x| histogram:
//!
//! - `KL` (default, MNN-compatible): MNN's search, bit-for-bit.
//! - `MAX`: no clipping at all (threshold = max |x|), ONNX Runtime's MinMax.
//! - `MSE`: the threshold that minimises the expected squared error of fake quantization
//!   (clipping error of the values above it + rounding error of the values below it).
//! - `AUTO`: `MSE`, but tensors that feed Sigmoid / Softmax / TanH or are graph outputs keep
//!   the full `MAX` range, because a clipped logit changes the decision, not just a value.

use std::collections::BTreeSet;

use mnnq_calibrate::AbsHistogram;

/// The value of `feature_range_method`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RangeMethod {
    /// MNN's KL search (or whatever `feature_quantize_method` says): exact MNN behaviour.
    #[default]
    Kl,
    Max,
    Mse,
    Auto,
}

impl RangeMethod {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "KL" | "MNN" => Some(Self::Kl),
            "MAX" => Some(Self::Max),
            "MSE" => Some(Self::Mse),
            "AUTO" => Some(Self::Auto),
            _ => None,
        }
    }
}

/// Extra quality keys read from the same config file (MNN ignores unknown keys).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct QualityConfig {
    pub range_method: RangeMethod,
    /// `target_cosine`: leave the most harmful convolutions float until the calibration-set
    /// output cosine reaches this value (None: no fallback).
    pub target_cosine: Option<f64>,
    /// `keep_float_op_types`: MNN op type names (e.g. "Pooling") whose inputs and outputs get
    /// no scale, so MNN runs those ops in float (casting at the int8 boundaries). Both sides
    /// matter: MNN picks the int8 kernel from the input's type.
    pub keep_float_op_types: Vec<String>,
}

impl QualityConfig {
    /// Reads `feature_range_method` and `target_cosine` from the JSON config at `path`.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the config: {e}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
        let mut out = Self::default();
        if let Some(v) = value.get("feature_range_method") {
            let name = v.as_str().ok_or_else(|| {
                format!(
                    "{}: feature_range_method must be a string (KL, MAX, MSE or AUTO)",
                    path.display()
                )
            })?;
            out.range_method = Self::parse_method(name).ok_or_else(|| {
                format!(
                    "{}: unknown feature_range_method {name:?}; use KL, MAX, MSE or AUTO",
                    path.display()
                )
            })?;
        }
        if let Some(v) = value.get("keep_float_op_types") {
            let bad = || {
                format!(
                    "{}: keep_float_op_types must be a list of op type names",
                    path.display()
                )
            };
            for name in v.as_array().ok_or_else(bad)? {
                out.keep_float_op_types
                    .push(name.as_str().ok_or_else(bad)?.to_string());
            }
        }
        if let Some(v) = value.get("target_cosine") {
            let t = v
                .as_f64()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| {
                    format!(
                        "{}: target_cosine must be a number in [0, 1]",
                        path.display()
                    )
                })?;
            out.target_cosine = Some(t);
        }
        Ok(out)
    }

    fn parse_method(name: &str) -> Option<RangeMethod> {
        RangeMethod::parse(name)
    }
}

/// Index of the bin at which the expected squared fake-quantization error is smallest.
///
/// For a threshold at bin edge `t` (value `T = t / interval`) with step `s = T / clamp`, a
/// value `x` below `T` costs its rounding error: `x^2` when it rounds to zero (`x < s/2`,
/// which keeps the many exact zeros after ReLU free), otherwise `s^2 / 12` on average; a
/// value above `T` costs `(x - T)^2`. Values are taken at bin centres.
pub fn mse_threshold_bin(histogram: &AbsHistogram, clamp: f32) -> usize {
    let counts = histogram.counts();
    let bins = counts.len();
    let width = 1.0 / f64::from(histogram.interval());
    let clamp = f64::from(clamp);
    let mut best = (f64::INFINITY, bins);
    // Candidate thresholds every 8 bins (256 candidates) keep this cheap for hundreds of tensors;
    // the error curve is smooth at that resolution.
    let mut t = 8;
    while t <= bins {
        let threshold = t as f64 * width;
        let step = threshold / clamp;
        let mut error = 0.0;
        for (i, &c) in counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let x = (i as f64 + 0.5) * width;
            let e = if x > threshold {
                (x - threshold).powi(2)
            } else if x < step / 2.0 {
                x * x
            } else {
                step * step / 12.0
            };
            error += c as f64 * e;
        }
        if error < best.0 {
            best = (error, t);
        }
        t += 8;
    }
    best.1
}

/// The feature scale for an MSE-chosen threshold (same formula shape as MNN's: threshold
/// value / clamp).
pub fn mse_scale(histogram: &AbsHistogram, clamp: f32) -> f32 {
    let t = mse_threshold_bin(histogram, clamp);
    ((t as f64) / f64::from(histogram.interval()) / f64::from(clamp)) as f32
}

/// The scale that covers the whole observed range.
pub fn max_scale(histogram: &AbsHistogram, clamp: f32) -> f32 {
    histogram.max_abs() / clamp
}

/// Tensors whose range must not be clipped under `AUTO`: inputs of Sigmoid / TanH / Softmax
/// (and of UnaryOp Sigmoid/TanH) and the graph outputs.
pub fn saturation_sensitive_tensors(net: &mnnq_format::Net) -> BTreeSet<u32> {
    use mnnq_format::{OpParameter, OpType, UnaryOpOperation};
    let mut out = BTreeSet::new();
    let names: Vec<String> = net.tensor_name.clone().unwrap_or_default();
    for op in net.oplists.iter().flatten() {
        let squashing = match op.type_ {
            OpType::Sigmoid | OpType::TanH | OpType::Softmax => true,
            OpType::UnaryOp => matches!(
                &op.main,
                Some(OpParameter::UnaryOp(u))
                    if matches!(u.op_type, UnaryOpOperation::Sigmoid | UnaryOpOperation::Tanh)
            ),
            _ => false,
        };
        if squashing {
            out.extend(op.input_indexes.iter().flatten().map(|&i| i as u32));
        }
    }
    for output in net.output_name.iter().flatten() {
        if let Some(i) = names.iter().position(|n| n == output) {
            out.insert(i as u32);
        }
    }
    out
}

/// Input and output tensors of the ops whose type name (MNN's, as `{:?}` of `OpType`) is in
/// `types`.
pub fn outputs_of_op_types(net: &mnnq_format::Net, types: &[String]) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    if types.is_empty() {
        return out;
    }
    for op in net.oplists.iter().flatten() {
        let name = format!("{:?}", op.type_);
        if types.iter().any(|t| t.eq_ignore_ascii_case(&name)) {
            out.extend(op.output_indexes.iter().flatten().map(|&o| o as u32));
            out.extend(op.input_indexes.iter().flatten().map(|&i| i as u32));
        }
    }
    out
}

/// The method each tensor actually uses (`AUTO` resolved per tensor).
pub fn per_tensor_method(
    method: RangeMethod,
    sensitive: &BTreeSet<u32>,
    tensor: u32,
) -> RangeMethod {
    match method {
        RangeMethod::Auto if sensitive.contains(&tensor) => RangeMethod::Max,
        RangeMethod::Auto => RangeMethod::Mse,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnnq_calibrate::RangeStats;

    fn histogram(data: &[f32]) -> AbsHistogram {
        let mut range = RangeStats::new();
        range.update(data);
        let mut h = AbsHistogram::for_range(&range).unwrap();
        h.add_slice(data);
        h
    }

    #[test]
    fn uniform_data_is_not_clipped_and_one_far_outlier_is() {
        // Uniform values: clipping anything costs more than it saves in rounding.
        let uniform: Vec<f32> = (0..20000)
            .map(|i| (i as f32 / 20000.0) * 4.0 - 2.0)
            .collect();
        let h = histogram(&uniform);
        assert!(mse_threshold_bin(&h, 127.0) >= 2040);
        // 200000 values in [-1, 1] and one at 10: the error (10 - T)^2 + 200000 (T/127)^2 / 12
        // is smallest at T = 10 / (1 + 200000 / (127^2 * 12)) = 4.92 (computed by hand).
        let mut spiky: Vec<f32> = (0..200_000)
            .map(|i| (i as f32 / 200_000.0) * 2.0 - 1.0)
            .collect();
        spiky.push(10.0);
        let h = histogram(&spiky);
        let threshold = mse_scale(&h, 127.0) * 127.0;
        assert!((threshold - 4.92).abs() < 0.2, "threshold {threshold}");
    }

    #[test]
    fn mse_threshold_matches_a_brute_force_search() {
        // Laplace-like data: the best clipping point is strictly inside the range.
        let data: Vec<f32> = (1..20000)
            .map(|i| -((i as f32) / 20000.0).ln() * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let h = histogram(&data);
        let t = mse_threshold_bin(&h, 127.0);
        assert!(t > 8 && t < 2048, "threshold bin {t}");
        // The chosen threshold's real fake-quant error is no worse than MAX's.
        let error = |threshold: f32| -> f64 {
            let step = threshold / 127.0;
            data.iter()
                .map(|&x| {
                    let q = (x / step).round().clamp(-127.0, 127.0) * step;
                    f64::from(x - q).powi(2)
                })
                .sum()
        };
        let chosen = mse_scale(&h, 127.0) * 127.0;
        assert!(error(chosen) < error(h.max_abs()));
    }

    #[test]
    fn auto_keeps_sensitive_tensors_at_max() {
        let sensitive: BTreeSet<u32> = [3].into_iter().collect();
        assert_eq!(
            per_tensor_method(RangeMethod::Auto, &sensitive, 3),
            RangeMethod::Max
        );
        assert_eq!(
            per_tensor_method(RangeMethod::Auto, &sensitive, 4),
            RangeMethod::Mse
        );
        assert_eq!(
            per_tensor_method(RangeMethod::Kl, &sensitive, 3),
            RangeMethod::Kl
        );
    }

    #[test]
    fn parses_methods_and_rejects_others() {
        assert_eq!(RangeMethod::parse("mse"), Some(RangeMethod::Mse));
        assert_eq!(RangeMethod::parse("AUTO"), Some(RangeMethod::Auto));
        assert_eq!(RangeMethod::parse("percentile"), None);
    }
}
