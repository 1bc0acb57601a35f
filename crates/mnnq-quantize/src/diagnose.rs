//! Where quantization loses accuracy: every tensor with a scale is fake-quantized (symmetric
//! int8, quantize-dequantize) in the float engine, so the error of each tensor includes the
//! error propagated from everything before it, and is compared with the same tensor of a clean
//! float run. Weights stay float here: this measures activation ranges, which is where MNN's
//! KL loses the shared models (per-channel MAX_ABS weights cost little; see `docs/quality.md`).

use std::collections::{BTreeMap, HashMap};

use mnnq_engine::{Engine, Session, Tensor};
use mnnq_format::Net;

/// Accumulated comparison of one tensor (float reference vs fake-quantized run).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct TensorError {
    pub id: u32,
    pub name: String,
    /// Type of the op that writes it ("input" for graph inputs).
    pub producer: String,
    pub scale: f32,
    /// Cosine of the flattened tensors, all images pooled.
    pub cosine: f64,
    /// Signal-to-quantization-noise ratio in dB: 10 log10(sum f^2 / sum (f - q)^2).
    pub sqnr_db: f64,
    /// Share of the float values outside the representable range (clipped by it):
    /// [(-clamp - zero) * scale, (clamp - zero) * scale], i.e. [-clamp*scale, clamp*scale] for
    /// symmetric codes.
    pub overflow: f64,
    /// How far the range is below the values seen: the larger of max(float) / upper end and
    /// min(float) / lower end (the latter only when the lower end is negative).
    pub max_over_range: f64,
    #[serde(skip)]
    sums: Sums,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Sums {
    ff: f64,
    qq: f64,
    fq: f64,
    ee: f64,
    clipped: u64,
    count: u64,
    max: f64,
    min: f64,
}

impl Sums {
    /// `range` is the representable interval `[lo, hi]` and `step` the scale.
    fn add(&mut self, float: &[f32], quant: &[f32], range: (f32, f32), step: f32) {
        for (&f, &q) in float.iter().zip(quant) {
            let (f, q) = (f64::from(f), f64::from(q));
            self.ff += f * f;
            self.qq += q * q;
            self.fq += f * q;
            self.ee += (f - q) * (f - q);
            self.max = self.max.max(f);
            self.min = self.min.min(f);
        }
        // A value at an end itself is representable: count only what lies half a step beyond.
        let (lo, hi) = (range.0 - 0.5 * step, range.1 + 0.5 * step);
        self.clipped += float.iter().filter(|&&f| f < lo || f > hi).count() as u64;
        self.count += float.len() as u64;
    }

    fn max_over_range(&self, (lo, hi): (f32, f32)) -> f64 {
        let above = if hi > 0.0 {
            self.max / f64::from(hi)
        } else {
            0.0
        };
        let below = if lo < 0.0 {
            self.min / f64::from(lo)
        } else {
            0.0
        };
        above.max(below)
    }
}

/// Cosine of two flattened vectors (1 when both are zero, 0 when only one is).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += f64::from(x) * f64::from(y);
        aa += f64::from(x) * f64::from(x);
        bb += f64::from(y) * f64::from(y);
    }
    cosine_from(ab, aa, bb)
}

fn cosine_from(ab: f64, aa: f64, bb: f64) -> f64 {
    if aa == 0.0 && bb == 0.0 {
        1.0
    } else if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Feature scales stored in an int8 model's tensor descriptions (tensor index -> scale).
pub fn scales_from_quant_model(net: &Net) -> BTreeMap<u32, f32> {
    net.extra_tensor_describe
        .iter()
        .flatten()
        .filter_map(|d| {
            let q = d.quant_info.as_ref()?;
            (q.scale.is_finite() && q.scale > 0.0 && d.index >= 0)
                .then_some((d.index as u32, q.scale))
        })
        .collect()
}

/// Zero points stored in an int8 model's tensor descriptions (only the non-zero ones).
pub fn zero_points_from_quant_model(net: &Net) -> BTreeMap<u32, i8> {
    net.extra_tensor_describe
        .iter()
        .flatten()
        .filter_map(|d| {
            let q = d.quant_info.as_ref()?;
            let integer = q.zero != 0.0 && q.zero.fract() == 0.0 && q.zero.abs() <= 127.0;
            (integer && d.index >= 0).then_some((d.index as u32, q.zero as i8))
        })
        .collect()
}

/// Replaces every quantized convolution's int8 weights by their float values (codes times
/// scales), so the float engine can run an int8 model with exactly its quantized weights.
pub fn dequantize_conv_weights(net: &mut Net) -> Result<usize, String> {
    use mnnq_format::OpParameter;
    let mut changed = 0;
    for op in net.oplists.iter_mut().flatten() {
        let name = op.name.clone().unwrap_or_default();
        let conv = match op.main.as_mut() {
            Some(OpParameter::Convolution2D(c)) => c,
            _ => continue,
        };
        if conv.quan_parameter.is_none() {
            continue;
        }
        let decoded = mnnq_format::weights::decode_conv(conv, None)
            .map_err(|e| format!("op {name:?}: cannot decode its int8 weights: {e}"))?;
        conv.weight = Some(decoded.weight);
        if !decoded.bias.is_empty() {
            conv.bias = Some(decoded.bias);
        }
        conv.quan_parameter = None;
        changed += 1;
    }
    Ok(changed)
}

/// Per-image float and fake-quantized graph outputs, plus per-tensor errors.
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    /// Tensors in execution order.
    pub tensors: Vec<TensorError>,
    /// For each image, each output: (name, float, fake-quantized).
    pub outputs: Vec<Vec<(String, Tensor, Tensor)>>,
}

/// Runs every input through the clean float engine and through the engine with each tensor of
/// `scales` fake-quantized, and compares them tensor by tensor.
/// `quant_engine` is usually `engine` itself (float weights); built from the int8 model it also
/// includes the weight quantization (its weights decode to the int8 values times their scales).
pub fn diagnose(
    engine: &Engine,
    quant_engine: &Engine,
    scales: &BTreeMap<u32, f32>,
    inputs: &[Vec<f32>],
    clamp: f32,
) -> Result<Diagnosis, String> {
    diagnose_with_zero_points(
        engine,
        quant_engine,
        scales,
        &BTreeMap::new(),
        inputs,
        clamp,
    )
}

/// [`diagnose`] where the tensors in `zero_points` have asymmetric codes (the fake
/// quantization and the overflow and range columns use them).
pub fn diagnose_with_zero_points(
    engine: &Engine,
    quant_engine: &Engine,
    scales: &BTreeMap<u32, f32>,
    zero_points: &BTreeMap<u32, i8>,
    inputs: &[Vec<f32>],
    clamp: f32,
) -> Result<Diagnosis, String> {
    let [(input_name, input_shape)] = &engine.input_shapes()[..] else {
        return Err(format!(
            "diagnosis needs a model with one input, this one has {}",
            engine.inputs.len()
        ));
    };
    let mut clean = Session::new(engine, 1).map_err(|e| e.to_string())?;
    let mut quant = Session::new(quant_engine, 1).map_err(|e| e.to_string())?;
    for (&id, &scale) in scales {
        let zero = zero_points.get(&id).copied().unwrap_or(0);
        quant.set_fake_quant_with_zero_point(id as usize, Some((scale, zero)));
    }
    let producers = producer_types(engine);
    let mut order: Vec<u32> = Vec::new();
    let mut sums: HashMap<u32, Sums> = HashMap::new();
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut out = Diagnosis::default();
    for input in inputs {
        let tensor = Tensor::new(input_shape.clone(), input.clone());
        // Keep only the tensors that get fake-quantized: one image's worth at a time.
        let mut reference: HashMap<u32, Vec<f32>> = HashMap::new();
        let float_outputs = clean
            .run_observed(&[(input_name.as_str(), tensor.clone())], &mut |t, view| {
                let t = t as u32;
                if scales.contains_key(&t) {
                    reference.insert(t, view.data.to_vec());
                }
            })
            .map_err(|e| e.to_string())?;
        let quant_outputs = quant
            .run_observed(&[(input_name.as_str(), tensor)], &mut |t, view| {
                let t = t as u32;
                let (Some(float), Some(&scale)) = (reference.get(&t), scales.get(&t)) else {
                    return;
                };
                if !sums.contains_key(&t) {
                    order.push(t);
                    names.insert(t, view.name.to_string());
                }
                let zero = f32::from(zero_points.get(&t).copied().unwrap_or(0));
                let range = ((-clamp - zero) * scale, (clamp - zero) * scale);
                sums.entry(t)
                    .or_default()
                    .add(float, view.data, range, scale);
            })
            .map_err(|e| e.to_string())?;
        out.outputs.push(
            float_outputs
                .into_iter()
                .zip(quant_outputs)
                .map(|((name, f), (_, q))| (name, f, q))
                .collect(),
        );
    }
    out.tensors = order
        .into_iter()
        .map(|id| {
            let s = sums.remove(&id).unwrap_or_default();
            let scale = scales[&id];
            let zero = f32::from(zero_points.get(&id).copied().unwrap_or(0));
            let range = ((-clamp - zero) * scale, (clamp - zero) * scale);
            TensorError {
                id,
                name: names.remove(&id).unwrap_or_default(),
                producer: producers
                    .get(&(id as usize))
                    .cloned()
                    .unwrap_or_else(|| "input".into()),
                scale,
                cosine: cosine_from(s.fq, s.ff, s.qq),
                sqnr_db: if s.ee == 0.0 {
                    f64::INFINITY
                } else {
                    10.0 * (s.ff / s.ee).log10()
                },
                overflow: if s.count == 0 {
                    0.0
                } else {
                    s.clipped as f64 / s.count as f64
                },
                max_over_range: s.max_over_range(range),
                sums: s,
            }
        })
        .collect();
    Ok(out)
}

/// Op type name of the node that writes each tensor.
fn producer_types(engine: &Engine) -> HashMap<usize, String> {
    let mut out = HashMap::new();
    for node in &engine.ir.nodes {
        for &o in &node.outputs {
            out.insert(o, node.type_name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-12);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0], &[0.0]), 1.0);
        assert_eq!(cosine(&[0.0], &[3.0]), 0.0);
    }

    #[test]
    fn sums_count_clipped_values_and_noise() {
        // Symmetric codes, scale 1/127 * 2: range [-2, 2], half a step beyond is clipped.
        let step = 2.0 / 127.0;
        let mut s = Sums::default();
        s.add(
            &[1.0, -3.0, 0.5, 2.0],
            &[1.0, -2.0, 0.5, 2.0],
            (-2.0, 2.0),
            step,
        );
        assert_eq!(s.clipped, 1);
        assert_eq!(s.ee, 1.0);
        assert_eq!(s.ff, 1.0 + 9.0 + 0.25 + 4.0);
        assert_eq!(s.max_over_range((-2.0, 2.0)), 1.5, "-3 against -2");
    }

    #[test]
    fn asymmetric_range_counts_values_against_its_own_ends() {
        // Zero point -127, clamp 127, scale 0.5: codes [-127, 127] mean [0, 127].
        let (clamp, zero, scale) = (127.0f32, -127.0f32, 0.5f32);
        let range = ((-clamp - zero) * scale, (clamp - zero) * scale);
        assert_eq!(range, (0.0, 127.0));
        let mut s = Sums::default();
        // 100 fits (it would overflow a symmetric range of 63.5); -1 and 130 do not.
        s.add(
            &[100.0, -1.0, 130.0, 0.1],
            &[100.0, 0.0, 127.0, 0.0],
            range,
            scale,
        );
        assert_eq!(s.clipped, 2);
        assert_eq!(s.max_over_range(range), 130.0 / 127.0);
    }
}

/// The cost of one tensor's rounding on its own (`mnnq compare --sensitivity`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TensorLoss {
    pub id: u32,
    pub name: String,
    /// `1 - cosine` of the graph outputs (pooled over the images) when only this tensor is
    /// fake-quantized, against the same engine with none.
    pub loss: f64,
}

/// For each tensor of `scales`, the output loss when only that tensor is fake-quantized in
/// `engine` (float weights, or decoded int8 weights when built from the int8 model), largest
/// first. Losses of tensors along one chain of elementwise ops are not additive (their
/// rounding errors are correlated; docs/quality.md), so this ranks where rounding hurts; it
/// does not predict what leaving several tensors float gains.
pub fn tensor_sensitivity(
    engine: &Engine,
    scales: &BTreeMap<u32, f32>,
    zero_points: &BTreeMap<u32, i8>,
    inputs: &[Vec<f32>],
) -> Result<Vec<TensorLoss>, String> {
    use rayon::prelude::*;
    let [(input_name, input_shape)] = &engine.input_shapes()[..] else {
        return Err(format!(
            "sensitivity needs a model with one input, this one has {}",
            engine.inputs.len()
        ));
    };
    let run = |fake: Option<(u32, f32, i8)>| -> Result<Vec<Vec<f32>>, String> {
        let mut session = Session::new(engine, 1).map_err(|e| e.to_string())?;
        if let Some((id, scale, zero)) = fake {
            session.set_fake_quant_with_zero_point(id as usize, Some((scale, zero)));
        }
        inputs
            .iter()
            .map(|x| {
                let outputs = session
                    .run(&[(
                        input_name.as_str(),
                        Tensor::new(input_shape.clone(), x.clone()),
                    )])
                    .map_err(|e| e.to_string())?;
                Ok(outputs.into_iter().flat_map(|(_, t)| t.data).collect())
            })
            .collect()
    };
    let reference = run(None)?;
    // Scales of tensors this engine does not have (a folded int8 model against an unfolded
    // float one) cannot be placed.
    let known: Vec<(u32, f32)> = scales
        .iter()
        .filter(|(&id, _)| (id as usize) < engine.infos.len())
        .map(|(&id, &scale)| (id, scale))
        .collect();
    let mut losses: Vec<TensorLoss> = known
        .par_iter()
        .map(|&(id, scale)| {
            let zero = zero_points.get(&id).copied().unwrap_or(0);
            let outputs = run(Some((id, scale, zero)))?;
            Ok(TensorLoss {
                id,
                name: engine.tensor_name(id as usize).to_string(),
                loss: 1.0 - crate::fidelity::pooled_output_cosine(&reference, &outputs),
            })
        })
        .collect::<Result<_, String>>()?;
    losses.sort_by(|a, b| b.loss.total_cmp(&a.loss).then(a.id.cmp(&b.id)));
    Ok(losses)
}
