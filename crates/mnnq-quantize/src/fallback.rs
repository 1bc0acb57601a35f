//! Automatic float fallback (config key `target_cosine`): measure how much each quantized
//! convolution's output range costs at the model outputs, then leave the most harmful ones
//! float until the calibration-set output cosine (fake-quantized activations vs float, in the
//! float engine) reaches the target.
//!
//! A convolution is left float by giving its output tensor no scale: the rewrite then keeps it
//! float (and so does any convolution that reads only that tensor), and MNN runs those ops in
//! float with casts at the int8 boundaries.

use std::collections::{BTreeMap, BTreeSet};

use mnnq_engine::{Engine, Session, Tensor};
use mnnq_format::{Net, OpParameter, OpType};

use crate::diagnose::cosine;

/// What the fallback did (part of the quantize report).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct FallbackReport {
    pub target_cosine: f64,
    /// Calibration images used for the measurement.
    pub images: usize,
    pub cosine_all_int8: f64,
    pub cosine_final: f64,
    /// Output tensors left without a scale (their convolutions stay float), most harmful first.
    pub kept_float: Vec<String>,
    /// Share of convolution multiply-adds still int8 after the fallback.
    pub int8_mac_share: f64,
}

/// Multiply-adds of each convolution, keyed by output tensor.
pub fn conv_macs(net: &Net, engine: &Engine) -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    for (position, op) in net.oplists.iter().flatten().enumerate() {
        if !matches!(
            op.type_,
            OpType::Convolution | OpType::ConvolutionDepthwise | OpType::Deconvolution
        ) {
            continue;
        }
        let (Some(OpParameter::Convolution2D(conv)), Some(&input), Some(&output)) = (
            &op.main,
            op.input_indexes.as_ref().and_then(|v| v.first()),
            op.output_indexes.as_ref().and_then(|v| v.first()),
        ) else {
            continue;
        };
        let Some(common) = conv.common.as_ref() else {
            continue;
        };
        let shape_of = |t: i32| {
            engine
                .infos
                .get(t as usize)
                .and_then(|i| i.as_ref())
                .map(|i| i.shape.clone())
                .unwrap_or_default()
        };
        let (in_shape, out_shape) = (shape_of(input), shape_of(output));
        let kernel = (common.kernel_x.max(1) * common.kernel_y.max(1)) as u64;
        let group = common.group.max(1) as u64;
        let elems = |s: &[usize]| s.iter().product::<usize>() as u64;
        let channels = |s: &[usize]| s.get(1).copied().unwrap_or(1) as u64;
        let macs = if op.type_ == OpType::Deconvolution {
            elems(&in_shape) * kernel * (channels(&out_shape) / group).max(1)
        } else {
            elems(&out_shape) * kernel * (channels(&in_shape) / group).max(1)
        };
        let name = op.name.clone().unwrap_or_else(|| format!("#{position}"));
        out.insert(output as u32, (name, macs));
    }
    out
}

/// Int8 share of the multiply-adds when the convolutions whose output (or input) tensor has
/// no scale stay float.
pub fn int8_mac_share(
    net: &Net,
    macs: &BTreeMap<u32, (String, u64)>,
    scales: &BTreeMap<u32, f32>,
) -> f64 {
    let mut inputs: BTreeMap<u32, u32> = BTreeMap::new();
    for op in net.oplists.iter().flatten() {
        if let (Some(&i), Some(&o)) = (
            op.input_indexes.as_ref().and_then(|v| v.first()),
            op.output_indexes.as_ref().and_then(|v| v.first()),
        ) {
            if macs.contains_key(&(o as u32)) {
                inputs.insert(o as u32, i as u32);
            }
        }
    }
    let total: u64 = macs.values().map(|m| m.1).sum();
    let int8: u64 = macs
        .iter()
        .filter(|(o, _)| {
            scales.contains_key(o) && inputs.get(o).is_some_and(|i| scales.contains_key(i))
        })
        .map(|(_, m)| m.1)
        .sum();
    if total == 0 {
        1.0
    } else {
        int8 as f64 / total as f64
    }
}

/// Mean output cosine (all outputs concatenated) of the fake-quantized run vs `reference`.
fn output_cosine(
    session: &mut Session,
    input_name: &str,
    input_shape: &[usize],
    inputs: &[Vec<f32>],
    reference: &[Vec<f32>],
) -> Result<f64, String> {
    let mut total = 0.0;
    for (input, reference) in inputs.iter().zip(reference) {
        let outputs = session
            .run(&[(input_name, Tensor::new(input_shape.to_vec(), input.clone()))])
            .map_err(|e| e.to_string())?;
        let flat: Vec<f32> = outputs.into_iter().flat_map(|(_, t)| t.data).collect();
        total += cosine(reference, &flat);
    }
    Ok(total / inputs.len().max(1) as f64)
}

/// Removes from `scales` the conv output scales that matter most, until the fake-quantized
/// output cosine on `inputs` reaches `target` (or a quarter of the convolutions are float).
pub fn apply_fallback(
    net: &Net,
    engine: &Engine,
    scales: &mut BTreeMap<u32, f32>,
    inputs: &[Vec<f32>],
    target: f64,
) -> Result<FallbackReport, String> {
    let [(input_name, input_shape)] = &engine.input_shapes()[..] else {
        return Err("the float fallback needs a model with one input".into());
    };
    let macs = conv_macs(net, engine);
    let mut clean = Session::new(engine, 1).map_err(|e| e.to_string())?;
    let mut reference = Vec::new();
    for input in inputs {
        let outputs = clean
            .run(&[(
                input_name.as_str(),
                Tensor::new(input_shape.clone(), input.clone()),
            )])
            .map_err(|e| e.to_string())?;
        reference.push(
            outputs
                .into_iter()
                .flat_map(|(_, t)| t.data)
                .collect::<Vec<f32>>(),
        );
    }
    drop(clean);
    let mut session = Session::new(engine, 1).map_err(|e| e.to_string())?;
    for (&id, &scale) in scales.iter() {
        session.set_fake_quant(id as usize, Some(scale));
    }
    let measure = |s: &mut Session| output_cosine(s, input_name, input_shape, inputs, &reference);
    let base = measure(&mut session)?;
    let mut report = FallbackReport {
        target_cosine: target,
        images: inputs.len(),
        cosine_all_int8: base,
        cosine_final: base,
        ..FallbackReport::default()
    };
    if base < target {
        // Sensitivity: the output cosine with one conv output left float.
        let candidates: Vec<u32> = macs
            .keys()
            .copied()
            .filter(|t| scales.contains_key(t))
            .collect();
        let mut gains: Vec<(f64, u32)> = Vec::new();
        for &t in &candidates {
            session.set_fake_quant(t as usize, None);
            gains.push((measure(&mut session)? - base, t));
            session.set_fake_quant(t as usize, Some(scales[&t]));
        }
        gains.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let limit = candidates.len().div_ceil(4);
        let mut current = base;
        let mut removed = BTreeSet::new();
        for &(gain, t) in gains.iter().take(limit) {
            if current >= target || gain <= 0.0 {
                break;
            }
            session.set_fake_quant(t as usize, None);
            current = measure(&mut session)?;
            removed.insert(t);
            report
                .kept_float
                .push(engine.tensor_name(t as usize).to_string());
        }
        report.cosine_final = current;
        for t in removed {
            scales.remove(&t);
        }
    }
    report.int8_mac_share = int8_mac_share(net, &macs, scales);
    Ok(report)
}
