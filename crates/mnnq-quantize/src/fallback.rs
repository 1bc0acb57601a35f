//! Automatic float fallback (config key `target_cosine`), measured with the real int8
//! runtime on a few calibration images:
//!
//! The output cosine here is pooled over the images ([`pooled_output_cosine`]).
//!
//! 1. Sensitivity: for each quantized convolution, a model in which only that convolution and
//!    its segment are int8 (its input scale, the scales of its segment, its int8 weights;
//!    everything else float) runs in the int8 runtime; its loss is `1 - cosine` of the
//!    outputs against the float model.
//! 2. Greedy: starting from the fully quantized model, the convolutions with the largest loss
//!    are made float one at a time (float weights, and no scale on the tensors of the
//!    segment, so the values they write are not rounded either) until the output cosine of
//!    the whole int8 model reaches the target.
//!
//! A convolution's segment is its output and the elementwise chain after it (activations,
//! affine ops with constant operands) up to the input of the next layer ([`segment_after`]).
//! The rounding errors along such a chain are strongly correlated: on PP-OCR det, leaving
//! only `hardswish_59` float (its conv output `p2o.Add.11` still rounded at nearly the same
//! step) lowered the simulated output cosine from 0.9626 to 0.9604, while leaving the whole
//! chain float raised it, so a per-tensor choice finds nothing to gain. A step that would take the int8 share of convolution multiply-adds
//!    (as the int8 runtime's plan decides it, cascades included) below `min_int8_mac_share`
//!    is skipped.
//!
//! MNN runs such convolutions float too (no quant info on the output -> float op with casts).

use std::collections::{BTreeMap, BTreeSet};

use mnnq_engine::Engine;
use mnnq_format::{Model, Net, OpParameter, OpType};

use crate::fidelity::{mac_share, pooled_output_cosine, run_all};

/// What the fallback did (part of the quantize report).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct FallbackReport {
    pub target_cosine: f64,
    /// Calibration images used for the measurement.
    pub images: usize,
    /// Output cosine of the all-int8 model on those images, pooled over them (int8 runtime).
    pub cosine_all_int8: f64,
    pub cosine_final: f64,
    /// Convolutions left float (op names), in the order they were chosen.
    pub kept_float: Vec<String>,
    /// Loss (1 - output cosine) with only that convolution int8, largest first (op name, loss).
    pub sensitivity: Vec<(String, f64)>,
    /// Share of convolution multiply-adds still int8 after the fallback (int8 runtime plan).
    pub int8_mac_share: f64,
    /// Convolutions the MAC budget did not allow to go float.
    pub skipped_for_budget: Vec<String>,
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

/// The tensors the fallback changes: output tensors whose scale is dropped and op positions
/// that keep float weights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FallbackChoice {
    pub float_ops: BTreeSet<usize>,
    pub dropped_scales: BTreeSet<u32>,
}

/// A quantizable convolution of the fully quantized net.
struct Conv {
    position: usize,
    name: String,
    input: u32,
    output: u32,
    /// Its output and the elementwise chain after it ([`segment_after`]).
    segment: Vec<u32>,
    /// Positions of the elementwise ops of that chain.
    segment_ops: Vec<usize>,
}

/// Ops that map one data tensor to one tensor of the same shape, value by value (other
/// inputs, if any, must be constants).
fn elementwise(op_type: OpType) -> bool {
    matches!(
        op_type,
        OpType::UnaryOp
            | OpType::ReLu
            | OpType::ReLu6
            | OpType::Sigmoid
            | OpType::TanH
            | OpType::BinaryOp
            | OpType::Eltwise
    )
}

/// The tensors of `output`'s segment and the positions of the ops between them: starting at
/// `output`, while a tensor has exactly one reader and that reader is elementwise with all
/// its other inputs constant, the reader's output joins the segment.
pub fn segment_after(net: &Net, output: u32) -> (Vec<u32>, Vec<usize>) {
    let ops = net.oplists.as_deref().unwrap_or(&[]);
    let constants: BTreeSet<i32> = ops
        .iter()
        .filter(|op| op.type_ == OpType::Const)
        .flat_map(|op| op.output_indexes.iter().flatten().copied())
        .collect();
    let mut readers: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (position, op) in ops.iter().enumerate() {
        for &i in op.input_indexes.iter().flatten() {
            readers.entry(i).or_default().push(position);
        }
    }
    let outputs = crate::range_method::graph_outputs(net);
    let (mut tensors, mut positions) = (vec![output], Vec::new());
    let mut current = output as i32;
    loop {
        if outputs.contains(&(current as u32)) {
            break;
        }
        let Some([reader]) = readers.get(&current).map(Vec::as_slice) else {
            break;
        };
        let op = &ops[*reader];
        let inputs = op.input_indexes.as_deref().unwrap_or(&[]);
        let others_constant = inputs
            .iter()
            .all(|&i| i == current || constants.contains(&i));
        let (true, true, Some(&[next])) = (
            elementwise(op.type_),
            others_constant,
            op.output_indexes.as_deref(),
        ) else {
            break;
        };
        if next < 0 || tensors.contains(&(next as u32)) {
            break;
        }
        tensors.push(next as u32);
        positions.push(*reader);
        current = next;
    }
    (tensors, positions)
}

fn quantized_convs(quantized: &Net) -> Vec<Conv> {
    let mut out = Vec::new();
    for (position, op) in quantized.oplists.iter().flatten().enumerate() {
        let Some(OpParameter::Convolution2D(conv)) = &op.main else {
            continue;
        };
        if conv.quan_parameter.is_none() {
            continue;
        }
        if let (Some(&[i]), Some(&[o])) =
            (op.input_indexes.as_deref(), op.output_indexes.as_deref())
        {
            let (segment, segment_ops) = segment_after(quantized, o as u32);
            out.push(Conv {
                position,
                name: op.name.clone().unwrap_or_else(|| format!("#{position}")),
                input: i as u32,
                output: o as u32,
                segment,
                segment_ops,
            });
        }
    }
    out
}

/// `quantized` with the ops in `float_ops` given back their float parameters (from `float`,
/// same op positions) and quant info kept only on tensors for which `keep_scale` holds.
pub fn mixed_net(
    quantized: &Net,
    float: &Net,
    float_ops: &dyn Fn(usize) -> bool,
    keep_scale: &dyn Fn(u32) -> bool,
) -> Net {
    let mut net = quantized.clone();
    if let (Some(ops), Some(float_ops_list)) = (net.oplists.as_mut(), float.oplists.as_ref()) {
        for (position, (op, f)) in ops.iter_mut().zip(float_ops_list).enumerate() {
            if float_ops(position) && op.type_ == f.type_ {
                op.main = f.main.clone();
                op.external_path = f.external_path.clone();
            }
        }
    }
    for d in net.extra_tensor_describe.iter_mut().flatten() {
        if d.index < 0 || !keep_scale(d.index as u32) {
            d.quant_info = None;
        }
    }
    net
}

/// Runs a net (int8 when it has quant info) on `inputs`; outputs concatenated per image.
fn run_net(
    net: Net,
    float_model: &Model,
    inputs: &[Vec<f32>],
) -> Result<(Vec<Vec<f32>>, f64), String> {
    let model = Model {
        net,
        origin: float_model.origin.clone(),
        external: float_model.external.clone(),
    };
    let engine = Engine::from_model(&model).map_err(|e| e.to_string())?;
    let share = mac_share(&model.net, &engine).int8_share;
    let outputs = run_all(&engine, inputs)?
        .into_iter()
        .map(|image| image.into_iter().flat_map(|(_, t)| t.data).collect())
        .collect();
    Ok((outputs, share))
}

/// Chooses the convolutions to leave float (see the module doc). `quantized` is the float
/// model fully rewritten to int8; `reference` the float model's outputs on `inputs`
/// (concatenated per image).
pub fn choose_fallback(
    float_model: &Model,
    quantized: &Net,
    inputs: &[Vec<f32>],
    reference: &[Vec<f32>],
    target: f64,
    min_int8_share: f64,
) -> Result<(FallbackChoice, FallbackReport), String> {
    let convs = quantized_convs(quantized);
    let mut report = FallbackReport {
        target_cosine: target,
        images: inputs.len(),
        ..FallbackReport::default()
    };
    let (all_int8, share) = run_net(quantized.clone(), float_model, inputs)?;
    report.cosine_all_int8 = pooled_output_cosine(reference, &all_int8);
    report.cosine_final = report.cosine_all_int8;
    report.int8_mac_share = share;
    let mut choice = FallbackChoice::default();
    if report.cosine_all_int8 >= target {
        return Ok((choice, report));
    }
    // Cost of leaving a convolution float: its multiply-adds plus those of the convolutions
    // reading its output (they lose their input scale and go float with it).
    let macs = {
        let model = Model {
            net: quantized.clone(),
            origin: float_model.origin.clone(),
            external: float_model.external.clone(),
        };
        let engine = Engine::from_model(&model).map_err(|e| e.to_string())?;
        conv_macs(quantized, &engine)
    };
    let cost = |conv: &Conv| -> f64 {
        let own = macs.get(&conv.output).map_or(0, |m| m.1);
        let readers: u64 = convs
            .iter()
            .filter(|c| conv.segment.contains(&c.input))
            .map(|c| macs.get(&c.output).map_or(0, |m| m.1))
            .sum();
        (own + readers).max(1) as f64
    };
    // 1. Sensitivity of each convolution alone.
    let mut losses: Vec<(f64, usize)> = Vec::new();
    for (k, conv) in convs.iter().enumerate() {
        let net = mixed_net(
            quantized,
            &float_model.net,
            &|p| p != conv.position && !conv.segment_ops.contains(&p),
            &|t| t == conv.input || conv.segment.contains(&t),
        );
        let (outputs, _) = run_net(net, float_model, inputs)?;
        losses.push((1.0 - pooled_output_cosine(reference, &outputs), k));
    }
    losses.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    report.sensitivity = losses
        .iter()
        .map(|&(loss, k)| (convs[k].name.clone(), loss))
        .collect();
    // 2. Greedy, largest loss per multiply-add made float first (a knapsack heuristic for
    // the MAC budget).
    let mut order = losses.clone();
    order.sort_by(|a, b| {
        (b.0 / cost(&convs[b.1]))
            .total_cmp(&(a.0 / cost(&convs[a.1])))
            .then(a.1.cmp(&b.1))
    });
    for &(loss, k) in &order {
        if report.cosine_final >= target || loss <= 0.0 {
            break;
        }
        let conv = &convs[k];
        let mut trial = choice.clone();
        trial.float_ops.insert(conv.position);
        trial.float_ops.extend(conv.segment_ops.iter().copied());
        trial.dropped_scales.extend(conv.segment.iter().copied());
        let net = mixed_net(
            quantized,
            &float_model.net,
            &|p| trial.float_ops.contains(&p),
            &|t| !trial.dropped_scales.contains(&t),
        );
        let (outputs, share) = run_net(net, float_model, inputs)?;
        if share < min_int8_share {
            report.skipped_for_budget.push(conv.name.clone());
            continue;
        }
        let cosine = pooled_output_cosine(reference, &outputs);
        // A step that does not help is not kept (rounding can interact).
        if cosine <= report.cosine_final {
            continue;
        }
        choice = trial;
        report.cosine_final = cosine;
        report.int8_mac_share = share;
        report.kept_float.push(conv.name.clone());
    }
    Ok((choice, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnnq_format::{Op, TensorDescribe, TensorQuantInfo};

    use crate::plan::test_op as graph_op;

    #[test]
    fn a_segment_runs_through_activations_and_constant_affine_ops_to_the_next_layer() {
        // 0 -> conv -> 1 -> hardswish -> 2 -> add(2, const 3) -> 4 -> conv -> 5
        //   -> relu -> 6, read by a conv (7) and by an add with a data tensor (8).
        let net = Net {
            oplists: Some(vec![
                graph_op(OpType::Input, &[], &[0]),
                graph_op(OpType::Convolution, &[0], &[1]),
                graph_op(OpType::UnaryOp, &[1], &[2]),
                graph_op(OpType::Const, &[], &[3]),
                graph_op(OpType::BinaryOp, &[2, 3], &[4]),
                graph_op(OpType::ConvolutionDepthwise, &[4], &[5]),
                graph_op(OpType::ReLu, &[5], &[6]),
                graph_op(OpType::Convolution, &[6], &[7]),
                graph_op(OpType::BinaryOp, &[6, 7], &[8]),
            ]),
            output_name: Some(vec!["op8".into()]),
            tensor_name: Some((0..9).map(|i| format!("op{i}")).collect()),
            ..Net::default()
        };
        // Through the unary op and the add of a constant, then a convolution reads 4.
        assert_eq!(segment_after(&net, 1), (vec![1, 2, 4], vec![2, 4]));
        // Through the ReLU; 6 has two readers, so the segment ends there.
        assert_eq!(segment_after(&net, 5), (vec![5, 6], vec![6]));
        // An add of two data tensors is not part of a segment, and a graph output ends one.
        assert_eq!(segment_after(&net, 7), (vec![7], vec![]));
        assert_eq!(segment_after(&net, 8), (vec![8], vec![]));
    }

    #[test]
    fn mixed_net_restores_float_ops_and_strips_scales() {
        let op = |name: &str, relu: bool| Op {
            name: Some(name.into()),
            type_: OpType::ReLu,
            main: Some(OpParameter::Relu(Box::new(mnnq_format::Relu {
                slope: if relu { 0.0 } else { 0.5 },
            }))),
            ..Op::default()
        };
        let describe = |index: i32| TensorDescribe {
            index,
            quant_info: Some(Box::new(TensorQuantInfo {
                scale: 0.1,
                ..TensorQuantInfo::default()
            })),
            ..TensorDescribe::default()
        };
        let quantized = Net {
            oplists: Some(vec![op("a", true), op("b", true)]),
            extra_tensor_describe: Some(vec![describe(0), describe(1), describe(2)]),
            ..Net::default()
        };
        let float = Net {
            oplists: Some(vec![op("a", false), op("b", false)]),
            ..Net::default()
        };
        let mixed = mixed_net(&quantized, &float, &|p| p == 1, &|t| t != 1);
        let ops = mixed.oplists.unwrap();
        assert_eq!(ops[0].main, quantized.oplists.as_ref().unwrap()[0].main);
        assert_eq!(ops[1].main, float.oplists.as_ref().unwrap()[1].main);
        let scales: Vec<bool> = mixed
            .extra_tensor_describe
            .unwrap()
            .iter()
            .map(|d| d.quant_info.is_some())
            .collect();
        assert_eq!(scales, vec![true, false, true]);
    }
}
