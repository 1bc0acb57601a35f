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

/// The config keys read by [`QualityConfig::from_file`].
pub const QUALITY_KEYS: &[&str] = &[
    "feature_range_method",
    "weight_range_method",
    "bias_correction",
    "float_outputs",
    "target_cosine",
    "min_int8_mac_share",
    "fallback_images",
    "keep_float_op_types",
    "feature_zero_point",
    "range_search",
    "search_images",
    "output_bias_correction",
    "fold_affine",
    "float_vectors",
    "float_tensors",
    "weight_rounding",
];

/// Weight scale choice (config key `weight_range_method`; applies to MAX_ABS weights).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WeightRange {
    /// MNN: `max|w| / clamp` per channel.
    #[default]
    MaxAbs,
    /// Per channel, the scale minimising the squared weight error.
    Mse,
}

/// Extra quality keys read from the same config file (MNN ignores unknown keys). Keys left
/// out take the defaults of the mode: [`QualityConfig::recommended`] normally,
/// [`QualityConfig::mnn`] in MNN-compatible mode (`mnnq quantize --mnn`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QualityConfig {
    pub range_method: RangeMethod,
    /// `weight_range_method`.
    pub weight_range: WeightRange,
    /// `bias_correction`: fold the mean output shift of the weights' rounding into the bias.
    pub bias_correction: bool,
    /// `float_outputs`: graph outputs get no scale, so the ops writing them run float (a
    /// probability map or logits keep full precision; costs only the last op).
    pub float_outputs: bool,
    /// `target_cosine`: leave the most harmful convolutions float until the int8 output
    /// cosine on calibration images reaches this value (None or 0: no fallback).
    pub target_cosine: Option<f64>,
    /// `min_int8_mac_share`: the fallback never takes the int8 share of convolution
    /// multiply-adds below this.
    pub min_int8_mac_share: f64,
    /// `fallback_images`: calibration images the fallback measures on.
    pub fallback_images: usize,
    /// `keep_float_op_types`: MNN op type names (e.g. "Pooling") whose inputs and outputs get
    /// no scale, so MNN runs those ops in float (casting at the int8 boundaries). Both sides
    /// matter: MNN picks the int8 kernel from the input's type.
    pub keep_float_op_types: Vec<String>,
    /// `feature_zero_point`: tensors with a one-sided or skewed range (ReLU/ReLU6 outputs) get
    /// asymmetric codes (`crate::zero_point`) where both runtimes handle them.
    pub feature_zero_point: bool,
    /// `range_search`: refine the activation scales against the model output
    /// (`crate::range_search`).
    pub range_search: bool,
    /// `search_images`: calibration images the range search measures on.
    pub search_images: usize,
    /// `output_bias_correction`: fold the mean shift of each convolution output measured in
    /// the int8 runtime into its bias (`crate::output_bias`).
    pub output_bias_correction: bool,
    /// `fold_affine`: before calibration, fold constant Mul/Add/Sub ops into neighbouring
    /// convolutions and merge 1x1 convolution pairs (exact in float; [`crate::fold`]), so
    /// fewer tensors are rounded to int8.
    pub fold_affine: bool,
    /// `float_vectors`: tensors with one spatial position (N x C x 1 x 1: global pooling
    /// outputs and the squeeze-excite vectors computed from them) get no scale, so the tiny
    /// ops on them run float ([`vector_tensors`]).
    pub float_vectors: bool,
    /// `float_tensors`: tensor names that get no scale, so the ops writing and reading them
    /// run float in both runtimes (the "keep this layer float" control; `target_cosine`
    /// chooses such tensors automatically).
    pub float_tensors: Vec<String>,
    /// `weight_rounding`: `NEAREST` (MNN) or `GPTQ`, int8 weight codes chosen against the
    /// convolution's output error on calibration inputs ([`crate::weight_rounding`]).
    pub weight_rounding: WeightRounding,
}

/// The value of `weight_rounding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WeightRounding {
    /// Each weight to its nearest code (MNN).
    #[default]
    Nearest,
    /// GPTQ: rounding errors moved onto the weights not yet rounded, weighted by the input
    /// second moments.
    Gptq,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self::recommended()
    }
}

impl QualityConfig {
    /// Exactly MNN's tool.
    pub fn mnn() -> Self {
        QualityConfig {
            range_method: RangeMethod::Kl,
            weight_range: WeightRange::MaxAbs,
            bias_correction: false,
            float_outputs: false,
            target_cosine: None,
            min_int8_mac_share: 0.8,
            fallback_images: 8,
            keep_float_op_types: Vec::new(),
            feature_zero_point: false,
            range_search: false,
            search_images: 8,
            output_bias_correction: false,
            fold_affine: false,
            float_vectors: false,
            float_tensors: Vec::new(),
            weight_rounding: WeightRounding::Nearest,
        }
    }

    /// mnnq's defaults (docs/quality.md): each technique measured not to hurt on the shared
    /// models.
    pub fn recommended() -> Self {
        QualityConfig {
            range_method: RangeMethod::Auto,
            // MSE weight scales gained little on EfficientNet and lost on PP-OCR det.
            weight_range: WeightRange::MaxAbs,
            bias_correction: true,
            float_outputs: true,
            target_cosine: None,
            feature_zero_point: true,
            fold_affine: true,
            // Measured on det: pools then run float over whole maps (+13 % int8 time) for no
            // fidelity gain; cls gains cosine 0.9927 -> 0.9983 (docs/quality.md). Opt-in.
            float_vectors: false,
            ..Self::mnn()
        }
    }

    /// Reads the quality keys from the JSON config at `path`; absent keys keep `defaults`.
    pub fn from_file(path: &std::path::Path, defaults: QualityConfig) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the config: {e}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
        let keys: std::collections::BTreeMap<String, serde_json::Value> = match value {
            serde_json::Value::Object(map) => map.into_iter().collect(),
            _ => {
                return Err(format!(
                    "{}: the config must be a JSON object",
                    path.display()
                ))
            }
        };
        Self::from_keys(path, &keys, defaults)
    }

    /// The quality keys among a config's keys (`mnnq_preprocess::Config::extra` holds the
    /// keys MNN's format does not define, so the file is read once); `path` names the file
    /// in errors. Absent keys keep `defaults`.
    pub fn from_keys(
        path: &std::path::Path,
        value: &std::collections::BTreeMap<String, serde_json::Value>,
        defaults: QualityConfig,
    ) -> Result<Self, String> {
        let mut out = defaults;
        let p = path.display();
        if let Some(v) = value.get("feature_range_method") {
            let name = v.as_str().ok_or_else(|| {
                format!("{p}: feature_range_method must be a string (KL, MAX, MSE or AUTO)")
            })?;
            out.range_method = RangeMethod::parse(name).ok_or_else(|| {
                format!("{p}: unknown feature_range_method {name:?}; use KL, MAX, MSE or AUTO")
            })?;
        }
        if let Some(v) = value.get("weight_range_method") {
            out.weight_range = match v.as_str().map(str::to_ascii_uppercase).as_deref() {
                Some("MAX_ABS") => WeightRange::MaxAbs,
                Some("MSE") => WeightRange::Mse,
                _ => {
                    return Err(format!(
                        "{p}: weight_range_method must be \"MAX_ABS\" or \"MSE\""
                    ))
                }
            };
        }
        let flag = |key: &str| -> Result<Option<bool>, String> {
            value
                .get(key)
                .map(|v| {
                    v.as_bool()
                        .ok_or_else(|| format!("{p}: {key} must be true or false"))
                })
                .transpose()
        };
        if let Some(b) = flag("bias_correction")? {
            out.bias_correction = b;
        }
        if let Some(b) = flag("float_outputs")? {
            out.float_outputs = b;
        }
        if let Some(b) = flag("feature_zero_point")? {
            out.feature_zero_point = b;
        }
        if let Some(b) = flag("range_search")? {
            out.range_search = b;
        }
        if let Some(b) = flag("output_bias_correction")? {
            out.output_bias_correction = b;
        }
        if let Some(b) = flag("fold_affine")? {
            out.fold_affine = b;
        }
        if let Some(b) = flag("float_vectors")? {
            out.float_vectors = b;
        }
        if let Some(v) = value.get("keep_float_op_types") {
            let bad = || format!("{p}: keep_float_op_types must be a list of op type names");
            for name in v.as_array().ok_or_else(bad)? {
                out.keep_float_op_types
                    .push(name.as_str().ok_or_else(bad)?.to_string());
            }
        }
        if let Some(v) = value.get("weight_rounding") {
            out.weight_rounding = match v.as_str().map(str::to_ascii_uppercase).as_deref() {
                Some("NEAREST") => WeightRounding::Nearest,
                Some("GPTQ") => WeightRounding::Gptq,
                _ => {
                    return Err(format!(
                        "{p}: weight_rounding must be \"NEAREST\" or \"GPTQ\""
                    ))
                }
            };
        }
        if let Some(v) = value.get("float_tensors") {
            let bad = || format!("{p}: float_tensors must be a list of tensor names");
            for name in v.as_array().ok_or_else(bad)? {
                out.float_tensors
                    .push(name.as_str().ok_or_else(bad)?.to_string());
            }
        }
        if let Some(v) = value.get("target_cosine") {
            let t = v
                .as_f64()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| format!("{p}: target_cosine must be a number in [0, 1]"))?;
            out.target_cosine = (t > 0.0).then_some(t);
        }
        if let Some(v) = value.get("min_int8_mac_share") {
            out.min_int8_mac_share = v
                .as_f64()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| format!("{p}: min_int8_mac_share must be a number in [0, 1]"))?;
        }
        if let Some(v) = value.get("fallback_images") {
            out.fallback_images = v
                .as_u64()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{p}: fallback_images must be a positive integer"))?
                as usize;
        }
        if let Some(v) = value.get("search_images") {
            out.search_images = v
                .as_u64()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{p}: search_images must be a positive integer"))?
                as usize;
        }
        Ok(out)
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

/// The graph output tensors (`Net.outputName`).
pub fn graph_outputs(net: &mnnq_format::Net) -> BTreeSet<u32> {
    let names: Vec<String> = net.tensor_name.clone().unwrap_or_default();
    net.output_name
        .iter()
        .flatten()
        .filter_map(|o| names.iter().position(|n| n == o).map(|i| i as u32))
        .collect()
}

/// Share of all convolution multiply-adds below which a convolution near an output counts as
/// The tracked tensors `float_vectors` treats (the pipeline leaves them without a scale, except
/// a pooling output, which keeps its own calibrated scale): rank-4 tensors with a single
/// spatial position (N x C x 1 x 1), such as a global average pool's output and the
/// squeeze-excite gate computed from it. A per-tensor int8 scale serves them badly: the pool
/// shares its input's scale (MNN pools int8 only between equal scales) while its averages span
/// a small part of that range (on PP-OCR det v4, 6-18 %: SQNR 3-8 dB), and the error reaches
/// every pixel through the gate. The ops on them cost next to nothing in float.
pub fn vector_tensors(plan: &crate::plan::CalibrationPlan) -> Vec<u32> {
    plan.tensors
        .iter()
        .filter(|t| {
            let spatial: Option<usize> = match (t.shape.len(), t.nhwc) {
                (4, false) => Some(t.shape[2] * t.shape[3]),
                (4, true) => Some(t.shape[1] * t.shape[2]),
                _ => None,
            };
            spatial == Some(1) && !t.graph_input
        })
        .map(|t| t.id)
        .collect()
}

/// Output tensor -> data input tensor of every Pooling / Pooling3D op.
pub fn pooling_outputs(net: &mnnq_format::Net) -> std::collections::HashMap<u32, u32> {
    net.oplists
        .iter()
        .flatten()
        .filter(|op| {
            matches!(
                op.type_,
                mnnq_format::OpType::Pooling | mnnq_format::OpType::Pooling3D
            )
        })
        .filter_map(|op| {
            let input = *op.input_indexes.as_ref()?.first()?;
            let output = *op.output_indexes.as_ref()?.first()?;
            Some((u32::try_from(output).ok()?, u32::try_from(input).ok()?))
        })
        .collect()
}

/// cheap enough to run float under `float_outputs`.
pub const CHEAP_CONV_SHARE: f64 = 0.01;

/// The tensors `float_outputs` leaves without a scale: each graph output, and walking back
/// from it through single-data-input ops (layout, pooling, activations, softmax, and
/// convolutions with under [`CHEAP_CONV_SHARE`] of the multiply-adds) the tensors they read,
/// so the head of the network (e.g. global pooling + classifier, or the last up-sampling +
/// Sigmoid of a map) runs float on the int8 features. The walk stops at an expensive
/// convolution (its output keeps its scale, so it stays int8) and after an op with several
/// data inputs. `conv_macs` is [`crate::fallback::conv_macs`].
pub fn float_head_tensors(
    net: &mnnq_format::Net,
    conv_macs: &std::collections::BTreeMap<u32, (String, u64)>,
) -> BTreeSet<u32> {
    use mnnq_format::OpType;
    let total: u64 = conv_macs.values().map(|m| m.1).sum();
    let ops = net.oplists.as_deref().unwrap_or(&[]);
    let mut producer = std::collections::HashMap::new();
    for (position, op) in ops.iter().enumerate() {
        for &o in op.output_indexes.iter().flatten() {
            producer.insert(o as u32, position);
        }
    }
    let mut out = BTreeSet::new();
    let mut stack: Vec<u32> = graph_outputs(net).into_iter().collect();
    while let Some(tensor) = stack.pop() {
        if !out.insert(tensor) {
            continue;
        }
        let Some(op) = producer.get(&tensor).map(|&p| &ops[p]) else {
            continue;
        };
        let walk_on = matches!(
            op.type_,
            OpType::Convolution
                | OpType::ConvolutionDepthwise
                | OpType::Deconvolution
                | OpType::Reshape
                | OpType::Flatten
                | OpType::Squeeze
                | OpType::Unsqueeze
                | OpType::ConvertTensor
                | OpType::Permute
                | OpType::Transpose
                | OpType::Pooling
                | OpType::Pooling3D
                | OpType::UnaryOp
                | OpType::Sigmoid
                | OpType::TanH
                | OpType::Softmax
                | OpType::ReLu
                | OpType::ReLu6
                | OpType::Interp
        );
        let Some(&input) = op.input_indexes.as_ref().and_then(|v| v.first()) else {
            continue;
        };
        if !walk_on || input < 0 {
            continue;
        }
        let input = input as u32;
        // The op writing `input`: an expensive convolution keeps its output scale. A
        // deconvolution never counts as expensive: mnnq's int8 runtime runs it float anyway,
        // so leaving its output float costs nothing there.
        let expensive = producer.get(&input).is_some_and(|&p| {
            ops[p].type_ != OpType::Deconvolution
                && conv_macs
                    .get(&input)
                    .is_some_and(|m| total > 0 && m.1 as f64 >= CHEAP_CONV_SHARE * total as f64)
        });
        if !expensive {
            stack.push(input);
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
    fn float_head_walks_back_to_the_first_expensive_convolution() {
        use mnnq_format::{Net, Op, OpType};
        use std::collections::BTreeMap;
        // x(0) -conv A-> 1 -pool-> 2 -conv B (cheap)-> 3 -reshape-> 4 (output)
        let op = |t: OpType, i: i32, o: i32| Op {
            type_: t,
            input_indexes: Some(vec![i]),
            output_indexes: Some(vec![o]),
            ..Op::default()
        };
        let net = Net {
            oplists: Some(vec![
                op(OpType::Convolution, 0, 1),
                op(OpType::Pooling, 1, 2),
                op(OpType::Convolution, 2, 3),
                op(OpType::Reshape, 3, 4),
            ]),
            tensor_name: Some((0..5).map(|i| format!("t{i}")).collect()),
            output_name: Some(vec!["t4".into()]),
            ..Net::default()
        };
        let macs = BTreeMap::from([(1, ("A".into(), 1000)), (3, ("B".into(), 5))]);
        // B has 0.5 % of the MACs: float; A's output (read by the pool) keeps its scale.
        let head: Vec<u32> = float_head_tensors(&net, &macs).into_iter().collect();
        assert_eq!(head, vec![2, 3, 4]);
        // When B is expensive too, only the reshape's output is left float.
        let macs = BTreeMap::from([(1, ("A".into(), 1000)), (3, ("B".into(), 500))]);
        let head: Vec<u32> = float_head_tensors(&net, &macs).into_iter().collect();
        assert_eq!(head, vec![4]);
    }

    #[test]
    fn quality_keys_default_by_mode_and_bad_values_are_errors() {
        let dir = std::env::temp_dir().join(format!("mnnq_quality_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.json");
        std::fs::write(
            &path,
            r#"{"bias_correction": false, "target_cosine": 0.99}"#,
        )
        .unwrap();
        let q = QualityConfig::from_file(&path, QualityConfig::recommended()).unwrap();
        assert_eq!(q.range_method, RangeMethod::Auto);
        assert!(!q.bias_correction && q.float_outputs);
        assert_eq!(q.target_cosine, Some(0.99));
        assert!(q.feature_zero_point, "zero points by default in mnnq mode");
        let q = QualityConfig::from_file(&path, QualityConfig::mnn()).unwrap();
        assert_eq!(q.range_method, RangeMethod::Kl);
        assert!(!q.float_outputs);
        assert!(!q.feature_zero_point, "symmetric under --mnn");
        std::fs::write(&path, r#"{"feature_zero_point": false}"#).unwrap();
        let q = QualityConfig::from_file(&path, QualityConfig::recommended()).unwrap();
        assert!(!q.feature_zero_point);
        std::fs::write(&path, r#"{"feature_zero_point": "yes"}"#).unwrap();
        let e = QualityConfig::from_file(&path, QualityConfig::mnn()).unwrap_err();
        assert!(e.contains("feature_zero_point"), "{e}");
        std::fs::write(&path, r#"{"weight_range_method": "L1"}"#).unwrap();
        let e = QualityConfig::from_file(&path, QualityConfig::mnn()).unwrap_err();
        assert!(
            e.contains("weight_range_method") && e.contains("c.json"),
            "{e}"
        );
        std::fs::write(&path, r#"{"bias_correction": 1}"#).unwrap();
        assert!(QualityConfig::from_file(&path, QualityConfig::mnn()).is_err());
        std::fs::write(&path, r#"{"float_tensors": ["a", "b/c"]}"#).unwrap();
        let q = QualityConfig::from_file(&path, QualityConfig::recommended()).unwrap();
        assert_eq!(q.float_tensors, ["a", "b/c"]);
        std::fs::write(&path, r#"{"weight_rounding": "gptq"}"#).unwrap();
        let q = QualityConfig::from_file(&path, QualityConfig::recommended()).unwrap();
        assert_eq!(q.weight_rounding, WeightRounding::Gptq);
        std::fs::write(&path, r#"{"weight_rounding": "adaround"}"#).unwrap();
        let e = QualityConfig::from_file(&path, QualityConfig::recommended()).unwrap_err();
        assert!(e.contains("weight_rounding"), "{e}");
        std::fs::write(&path, r#"{"float_tensors": "a"}"#).unwrap();
        let e = QualityConfig::from_file(&path, QualityConfig::mnn()).unwrap_err();
        assert!(e.contains("float_tensors"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_methods_and_rejects_others() {
        assert_eq!(RangeMethod::parse("mse"), Some(RangeMethod::Mse));
        assert_eq!(RangeMethod::parse("AUTO"), Some(RangeMethod::Auto));
        assert_eq!(RangeMethod::parse("percentile"), None);
    }
}
