//! Exact float rewrites run before calibration (config key `fold_affine`, docs/quality.md).
//!
//! Every tensor that gets a scale is rounded once in the int8 graph. Models exported from
//! PaddlePaddle (PP-LCNetV3: "learnable affine blocks") follow each convolution and each
//! hardswish with a `Mul` by a constant and an `Add` of a constant, and the hardsigmoid of
//! their SE blocks is `Mul(1/6) -> Add(0.5) -> ReLU6(0, 1)`; each of those ops writes its own
//! int8 tensor, so a block rounds three times where one rounding carries the same information.
//! These rewrites fold such affine maps into the weights and biases of neighbouring
//! convolutions. They change nothing in float arithmetic except rounding of the folded
//! weights (checked against the original model on real images in both runtimes):
//!
//! - **Into the producer** ([`fold_into_producers`]): `conv -> (Mul|Add|Sub by a scalar or
//!   per-output-channel constant)+` becomes one conv with `w' = a w`, `b' = a b + c`. With a
//!   fused ReLU only positive multipliers fold (`relu(a y) = a relu(y)` for `a > 0`); with a
//!   fused ReLU6 nothing does (the clip bound does not scale).
//! - **Into the consumers** ([`fold_into_consumers`]): `x -> (affine by scalars)+ -> convs`.
//!   An affine map `a x + c` read only by convolutions without padding folds completely
//!   (`w' = a w`, `b' = b + c sum(w)`); a pure scale `a x` folds into any convolution (zero
//!   padding scales too). Otherwise, when the chain has two or more ops, it is reduced to a
//!   single `Add(c / a)` and `a` moves into the convolutions' weights: `a x + c = a (x + c/a)`.
//! - **Convolution pairs** ([`merge_conv_pairs`]): a convolution without activation read only
//!   by an unpadded 1x1 convolution (stride 1, no groups) becomes one convolution when that
//!   does not add multiply-adds (`W = W2 W1`, `b = W2 b1 + b2`).
//!
//! A rewritten graph keeps the tensor table as it was: ops that disappear leave their output
//! tensors unused, and a convolution that absorbs the ops after it writes the last of their
//! tensors. Tensor indexes therefore mean the same value in the original and the rewritten
//! model (the layer-wise simulation of `mnnq compare`, which fake-quantizes the original float
//! model with the int8 model's scales, relies on that); new tensors (the `x + c/a` of a
//! reduced chain and its constant) are appended at the end of the table.

use std::collections::{BTreeSet, HashMap};

use mnnq_format::{
    BinaryOpOperation, Blob, Convolution2D, DataType, MnnDataFormat, Net, Op, OpParameter, OpType,
    PadMode,
};

/// What the rewrites did (counts of ops removed from the graph and of changed convolutions).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FoldSummary {
    /// Affine ops folded into the convolution before them.
    pub into_producers: usize,
    /// Affine ops folded completely into the convolutions after them.
    pub into_consumers: usize,
    /// Affine chains reduced to one `Add` (their scale moved into the convolutions after).
    pub chains_reduced: usize,
    /// Ops those reductions removed.
    pub reduced_ops_removed: usize,
    /// Convolution pairs merged into one convolution.
    pub conv_pairs_merged: usize,
    /// Constant ops left without a reader and removed.
    pub constants_removed: usize,
    /// Ops in the graph before and after.
    pub ops_before: usize,
    pub ops_after: usize,
}

impl FoldSummary {
    /// Non-constant ops removed.
    pub fn ops_removed(&self) -> usize {
        self.into_producers
            + self.into_consumers
            + self.reduced_ops_removed
            + self.conv_pairs_merged
    }
}

/// Runs all rewrites until none applies. Models with subgraphs are left unchanged (their ops
/// refer to tensors across graphs).
pub fn fold_affine(net: &mut Net) -> FoldSummary {
    let mut summary = FoldSummary {
        ops_before: net.oplists.as_ref().map_or(0, Vec::len),
        ..FoldSummary::default()
    };
    if net.subgraphs.as_ref().is_some_and(|s| !s.is_empty())
        || net.oplists.is_none()
        || net.tensor_name.is_none()
    {
        summary.ops_after = summary.ops_before;
        return summary;
    }
    loop {
        let before = summary.clone();
        fold_into_producers(net, &mut summary);
        fold_into_consumers(net, &mut summary);
        merge_conv_pairs(net, &mut summary);
        summary.constants_removed += remove_unused_constants(net);
        if summary == before {
            break;
        }
    }
    summary.ops_after = net.oplists.as_ref().map_or(0, Vec::len);
    summary
}

/// Producer and consumers of each tensor, and the graph outputs.
struct Index {
    producer: HashMap<usize, usize>,
    /// Distinct consumer ops of each tensor, in op order.
    consumers: HashMap<usize, Vec<usize>>,
    outputs: BTreeSet<usize>,
}

fn tensor_list(v: &Option<Vec<i32>>) -> Vec<usize> {
    v.iter()
        .flatten()
        .filter_map(|&t| usize::try_from(t).ok())
        .collect()
}

impl Index {
    fn new(net: &Net) -> Index {
        let ops = net.oplists.as_deref().unwrap_or_default();
        let mut producer = HashMap::new();
        let mut consumers: HashMap<usize, Vec<usize>> = HashMap::new();
        for (position, op) in ops.iter().enumerate() {
            for t in tensor_list(&op.input_indexes) {
                let list = consumers.entry(t).or_default();
                if list.last() != Some(&position) {
                    list.push(position);
                }
            }
            for t in tensor_list(&op.output_indexes) {
                producer.insert(t, position);
            }
        }
        let names = net.tensor_name.as_deref().unwrap_or_default();
        let outputs = match net.output_name.as_deref() {
            Some(listed) if !listed.is_empty() => listed
                .iter()
                .filter_map(|n| names.iter().position(|m| m == n))
                .collect(),
            // MNN's rule without outputName: produced and never read.
            _ => producer
                .keys()
                .copied()
                .filter(|t| !consumers.contains_key(t))
                .collect(),
        };
        Index {
            producer,
            consumers,
            outputs,
        }
    }

    fn consumers(&self, tensor: usize) -> &[usize] {
        self.consumers.get(&tensor).map_or(&[], Vec::as_slice)
    }

    /// The tensor is read by exactly one op, `op`, and is not a graph output.
    fn only_read_by(&self, tensor: usize, op: usize) -> bool {
        self.consumers(tensor) == [op] && !self.outputs.contains(&tensor)
    }
}

/// `x -> a x + c`, with `a` and `c` either one value (a scalar) or one value per channel.
#[derive(Clone, Debug, PartialEq)]
struct Affine {
    mul: Vec<f32>,
    add: Vec<f32>,
}

fn at(v: &[f32], i: usize) -> f32 {
    if v.len() == 1 {
        v[0]
    } else {
        v[i]
    }
}

impl Affine {
    fn identity() -> Affine {
        Affine {
            mul: vec![1.0],
            add: vec![0.0],
        }
    }

    fn channels(&self) -> usize {
        self.mul.len().max(self.add.len())
    }

    fn is_scalar(&self) -> bool {
        self.channels() == 1
    }

    /// `next(self(x))`, or None when both are per-channel with different channel counts.
    fn then(&self, next: &Affine) -> Option<Affine> {
        let n = [self.channels(), next.channels()]
            .into_iter()
            .max()
            .unwrap_or(1);
        if [
            self.mul.len(),
            self.add.len(),
            next.mul.len(),
            next.add.len(),
        ]
        .iter()
        .any(|&l| l != 1 && l != n)
        {
            return None;
        }
        let mul_len = if self.mul.len() == 1 && next.mul.len() == 1 {
            1
        } else {
            n
        };
        let mul = (0..mul_len)
            .map(|i| at(&self.mul, i) * at(&next.mul, i))
            .collect();
        let add = (0..n)
            .map(|i| at(&self.add, i) * at(&next.mul, i) + at(&next.add, i))
            .collect();
        Some(Affine { mul, add })
    }

    fn has_offset(&self) -> bool {
        self.add.iter().any(|&c| c != 0.0)
    }
}

/// The value of a float constant usable as a scalar or as a per-channel vector of an NCHW
/// tensor (shapes `[]`, `[1]`, ... with one element, `[C,1,1]`, `[1,C,1,1]`).
fn constant_coefficients(op: &Op) -> Option<Vec<f32>> {
    if op.type_ != OpType::Const {
        return None;
    }
    let Some(OpParameter::Blob(blob)) = &op.main else {
        return None;
    };
    if blob.data_type != DataType::DtFloat {
        return None;
    }
    let values = blob.float32s.as_ref()?;
    let dims = blob.dims.clone().unwrap_or_default();
    if dims.iter().any(|&d| d < 0) || dims.len() > 4 {
        return None;
    }
    let count: usize = dims.iter().map(|&d| d as usize).product();
    if values.len() != count && !(dims.is_empty() && values.len() == 1) {
        return None;
    }
    if values.len() == 1 {
        return Some(values.clone());
    }
    let channel_first = matches!(
        blob.data_format,
        MnnDataFormat::Nchw | MnnDataFormat::Nc4hw4
    );
    let per_channel = matches!(dims[..], [_, 1, 1] | [1, _, 1, 1]);
    (channel_first && per_channel && values.iter().all(|v| v.is_finite())).then(|| values.clone())
}

/// A BinaryOp `x (+|-|*) const` or `const (+|-|*) x`: its variable input, the map, and the
/// constant's tensor.
fn affine_op(net: &Net, index: &Index, position: usize) -> Option<(usize, Affine, usize)> {
    let ops = net.oplists.as_deref()?;
    let op = &ops[position];
    if op.type_ != OpType::BinaryOp {
        return None;
    }
    let Some(OpParameter::BinaryOp(param)) = &op.main else {
        return None;
    };
    if param.activation_type != 0 || tensor_list(&op.output_indexes).len() != 1 {
        return None;
    }
    let inputs = tensor_list(&op.input_indexes);
    let [first, second] = inputs[..] else {
        return None;
    };
    let constant = |t: usize| {
        index
            .producer
            .get(&t)
            .and_then(|&p| constant_coefficients(&ops[p]))
    };
    let (variable, k, const_tensor, const_first) = match (constant(first), constant(second)) {
        (None, Some(k)) => (first, k, second, false),
        (Some(k), None) => (second, k, first, true),
        _ => return None,
    };
    if !k.iter().all(|v| v.is_finite()) {
        return None;
    }
    let ones = vec![1.0; k.len()];
    let zeros = vec![0.0; k.len()];
    let map = match param.op_type {
        BinaryOpOperation::Mul => Affine { mul: k, add: zeros },
        BinaryOpOperation::Add => Affine { mul: ones, add: k },
        BinaryOpOperation::Sub if !const_first => Affine {
            mul: ones,
            add: k.iter().map(|v| -v).collect(),
        },
        BinaryOpOperation::Sub => Affine {
            mul: vec![-1.0; k.len()],
            add: k,
        },
        _ => return None,
    };
    Some((variable, map, const_tensor))
}

/// A float convolution whose weights can be edited: inline float weights, one input, one
/// output. Returns its output channel count.
fn editable_conv(op: &Op) -> Option<usize> {
    if !matches!(op.type_, OpType::Convolution | OpType::ConvolutionDepthwise) {
        return None;
    }
    let Some(OpParameter::Convolution2D(conv)) = &op.main else {
        return None;
    };
    let common = conv.common.as_ref()?;
    let weight = conv.weight.as_ref()?;
    let out = usize::try_from(common.output_count).ok()?;
    let plain = conv.quan_parameter.is_none()
        && conv.sparse_parameter.is_none()
        && conv.symmetric_quan.is_none()
        && conv.external.as_ref().is_none_or(Vec::is_empty)
        && op.external_path.is_none();
    let bias_ok = conv
        .bias
        .as_ref()
        .is_none_or(|b| b.is_empty() || b.len() == out);
    let io_ok =
        tensor_list(&op.input_indexes).len() == 1 && tensor_list(&op.output_indexes).len() == 1;
    (plain
        && bias_ok
        && io_ok
        && out > 0
        && !weight.is_empty()
        && weight.len() % out == 0
        && weight.iter().all(|w| w.is_finite()))
    .then_some(out)
}

fn conv_mut(op: &mut Op) -> &mut Convolution2D {
    match &mut op.main {
        Some(OpParameter::Convolution2D(conv)) => conv,
        _ => unreachable!("checked by editable_conv"),
    }
}

fn conv_ref(op: &Op) -> &Convolution2D {
    match &op.main {
        Some(OpParameter::Convolution2D(conv)) => conv,
        _ => unreachable!("checked by editable_conv"),
    }
}

/// The convolution reads no padding: every output is a sum over real input values only.
fn unpadded(conv: &Convolution2D) -> bool {
    let Some(c) = conv.common.as_ref() else {
        return false;
    };
    let one_tap = c.kernel_x.max(1) == 1 && c.kernel_y.max(1) == 1;
    match c.pad_mode {
        PadMode::Valid => true,
        // SAME pads only what the kernel reaches past the edge: nothing for 1x1.
        PadMode::Same => one_tap,
        _ => match c.pads.as_deref() {
            Some(p) if !p.is_empty() => p.iter().all(|&v| v <= 0),
            _ => c.pad_x <= 0 && c.pad_y <= 0,
        },
    }
}

/// `w' = a w`, `b' = a b + c` per output channel.
fn apply_to_outputs(conv: &mut Convolution2D, out: usize, map: &Affine) {
    let weight = conv.weight.as_mut().expect("checked by editable_conv");
    let per_channel = weight.len() / out;
    for (o, chunk) in weight.chunks_mut(per_channel).enumerate() {
        let a = at(&map.mul, o);
        chunk.iter_mut().for_each(|w| *w *= a);
    }
    let mut bias = conv
        .bias
        .take()
        .filter(|b| b.len() == out)
        .unwrap_or(vec![0.0; out]);
    for (o, b) in bias.iter_mut().enumerate() {
        *b = *b * at(&map.mul, o) + at(&map.add, o);
    }
    conv.bias = Some(bias);
}

/// For an input map `a x + c` (scalars): `w' = a w`, `b' = b + c sum(w)` per output channel.
fn apply_to_inputs(conv: &mut Convolution2D, out: usize, a: f32, c: f32) {
    let weight = conv.weight.as_mut().expect("checked by editable_conv");
    let per_channel = weight.len() / out;
    let mut bias = conv
        .bias
        .take()
        .filter(|b| b.len() == out)
        .unwrap_or(vec![0.0; out]);
    for (chunk, b) in weight.chunks_mut(per_channel).zip(bias.iter_mut()) {
        if c != 0.0 {
            // Summed in f64: a long sum in f32 would add its own rounding.
            let sum: f64 = chunk.iter().map(|&w| f64::from(w)).sum();
            *b = (f64::from(*b) + f64::from(c) * sum) as f32;
        }
        chunk.iter_mut().for_each(|w| *w *= a);
    }
    conv.bias = Some(bias);
}

fn fused_activation(conv: &Convolution2D) -> (bool, bool) {
    conv.common
        .as_ref()
        .map_or((false, false), |c| (c.relu, c.relu6))
}

fn set_single_output(op: &mut Op, tensor: usize) {
    op.output_indexes = Some(vec![tensor as i32]);
}

fn remove_ops(net: &mut Net, removed: &BTreeSet<usize>) {
    if removed.is_empty() {
        return;
    }
    let ops = net.oplists.take().unwrap_or_default();
    net.oplists = Some(
        ops.into_iter()
            .enumerate()
            .filter(|(i, _)| !removed.contains(i))
            .map(|(_, op)| op)
            .collect(),
    );
}

/// Folds `conv -> affine ops` into the convolution.
pub fn fold_into_producers(net: &mut Net, summary: &mut FoldSummary) {
    let index = Index::new(net);
    let mut removed = BTreeSet::new();
    let count = net.oplists.as_ref().map_or(0, Vec::len);
    for position in 0..count {
        let ops = net.oplists.as_deref().unwrap_or_default();
        let Some(out) = editable_conv(&ops[position]) else {
            continue;
        };
        let (relu, relu6) = fused_activation(conv_ref(&ops[position]));
        if relu6 {
            continue;
        }
        let mut tensor = tensor_list(&ops[position].output_indexes)[0];
        let mut map = Affine::identity();
        let mut chain = Vec::new();
        while let [next] = index.consumers(tensor) {
            if index.outputs.contains(&tensor) {
                break;
            }
            let Some((variable, step, _)) = affine_op(net, &index, *next) else {
                break;
            };
            if variable != tensor || (step.channels() != 1 && step.channels() != out) {
                break;
            }
            // After a fused ReLU only a positive scale commutes with it.
            if relu && (step.has_offset() || step.mul.iter().any(|&a| a <= 0.0)) {
                break;
            }
            let Some(combined) = map.then(&step) else {
                break;
            };
            map = combined;
            chain.push(*next);
            tensor = tensor_list(&ops[*next].output_indexes)[0];
        }
        if chain.is_empty() {
            continue;
        }
        let op = &mut net.oplists.as_mut().expect("checked")[position];
        apply_to_outputs(conv_mut(op), out, &map);
        set_single_output(op, tensor);
        summary.into_producers += chain.len();
        removed.extend(chain);
    }
    remove_ops(net, &removed);
}

/// Appends a tensor name and returns its index.
fn new_tensor(net: &mut Net, name: String) -> usize {
    let names = net.tensor_name.as_mut().expect("checked by fold_affine");
    names.push(name);
    if net.tensor_number > 0 {
        net.tensor_number = names.len() as i32;
    }
    names.len() - 1
}

/// Appends a scalar float constant tensor and returns its index and the op that writes it.
fn new_scalar_constant(net: &mut Net, name: String, value: f32) -> (usize, Op) {
    let tensor = new_tensor(net, name.clone());
    let op = Op {
        type_: OpType::Const,
        name: Some(name),
        output_indexes: Some(vec![tensor as i32]),
        main: Some(OpParameter::Blob(Box::new(Blob {
            dims: Some(vec![]),
            data_format: MnnDataFormat::Nchw,
            data_type: DataType::DtFloat,
            float32s: Some(vec![value]),
            ..Blob::default()
        }))),
        ..Op::default()
    };
    (tensor, op)
}

/// Folds `x -> scalar affine ops -> convolutions` into the convolutions (see the module doc).
pub fn fold_into_consumers(net: &mut Net, summary: &mut FoldSummary) {
    let index = Index::new(net);
    let count = net.oplists.as_ref().map_or(0, Vec::len);
    let mut removed = BTreeSet::new();
    let mut new_constants = Vec::new();
    for start in 0..count {
        if removed.contains(&start) {
            continue;
        }
        let Some((source, first, _)) = affine_op(net, &index, start) else {
            continue;
        };
        // Start only at the head of a chain: the op before is not an affine op whose
        // output only this op reads.
        if let Some(&p) = index.producer.get(&source) {
            if index.only_read_by(source, start) && affine_op(net, &index, p).is_some() {
                continue;
            }
        }
        if !first.is_scalar() {
            continue;
        }
        let ops = net.oplists.as_deref().unwrap_or_default();
        let mut map = first;
        let mut chain = vec![start];
        let mut tensor = tensor_list(&ops[start].output_indexes)[0];
        while let [next] = index.consumers(tensor) {
            if index.outputs.contains(&tensor) {
                break;
            }
            let Some((variable, step, _)) = affine_op(net, &index, *next) else {
                break;
            };
            let Some(combined) = map.then(&step).filter(|_| step.is_scalar()) else {
                break;
            };
            if variable != tensor {
                break;
            }
            map = combined;
            chain.push(*next);
            tensor = tensor_list(&ops[*next].output_indexes)[0];
        }
        let readers = index.consumers(tensor);
        if readers.is_empty() || index.outputs.contains(&tensor) {
            continue;
        }
        let all_convs = readers.iter().all(|&r| {
            editable_conv(&ops[r]).is_some() && tensor_list(&ops[r].input_indexes) == [tensor]
        });
        if !all_convs {
            continue;
        }
        let (a, c) = (map.mul[0], map.add[0]);
        let all_unpadded = readers.iter().all(|&r| unpadded(conv_ref(&ops[r])));
        let last = *chain.last().expect("not empty");
        let readers = readers.to_vec();
        if c == 0.0 || all_unpadded {
            let ops = net.oplists.as_mut().expect("checked");
            for r in readers {
                let out = editable_conv(&ops[r]).expect("checked");
                apply_to_inputs(conv_mut(&mut ops[r]), out, a, c);
                ops[r].input_indexes = Some(vec![source as i32]);
            }
            summary.into_consumers += chain.len();
            removed.extend(chain);
        } else if chain.len() >= 2 && a != 0.0 && (c / a).is_finite() {
            // a x + c = a (x + c/a): one Add stays, the scale goes into the weights.
            let offset = c / a;
            let name = net.tensor_name.as_ref().expect("checked")[tensor].clone();
            let (const_tensor, const_op) =
                new_scalar_constant(net, format!("{name}__folded_offset"), offset);
            new_constants.push(const_op);
            // x + c/a is not the value of the chain's last tensor (a x + c): it gets a new
            // tensor, so every original index keeps its meaning.
            let shifted = new_tensor(net, format!("{name}__folded"));
            let ops = net.oplists.as_mut().expect("checked");
            for &r in &readers {
                let out = editable_conv(&ops[r]).expect("checked");
                apply_to_inputs(conv_mut(&mut ops[r]), out, a, 0.0);
                ops[r].input_indexes = Some(vec![shifted as i32]);
            }
            let op = &mut ops[last];
            op.output_indexes = Some(vec![shifted as i32]);
            op.type_ = OpType::BinaryOp;
            op.main = Some(OpParameter::BinaryOp(Box::new(mnnq_format::BinaryOp {
                op_type: BinaryOpOperation::Add,
                t: DataType::DtFloat,
                activation_type: 0,
            })));
            op.input_indexes = Some(vec![source as i32, const_tensor as i32]);
            summary.chains_reduced += 1;
            summary.reduced_ops_removed += chain.len() - 1;
            removed.extend(chain[..chain.len() - 1].iter().copied());
        }
    }
    remove_ops(net, &removed);
    if !new_constants.is_empty() {
        // Constants have no inputs: at the front they precede every reader.
        let ops = net.oplists.take().unwrap_or_default();
        net.oplists = Some(new_constants.into_iter().chain(ops).collect());
    }
}

/// Merges `conv1 -> 1x1 conv2` into one convolution when that does not add multiply-adds.
pub fn merge_conv_pairs(net: &mut Net, summary: &mut FoldSummary) {
    let index = Index::new(net);
    let count = net.oplists.as_ref().map_or(0, Vec::len);
    let mut removed = BTreeSet::new();
    for second in 0..count {
        let ops = net.oplists.as_deref().unwrap_or_default();
        let op2 = &ops[second];
        if op2.type_ != OpType::Convolution || editable_conv(op2).is_none() {
            continue;
        }
        let input = tensor_list(&op2.input_indexes)[0];
        let Some(&first) = index.producer.get(&input) else {
            continue;
        };
        if removed.contains(&first) || !index.only_read_by(input, second) {
            continue;
        }
        let op1 = &ops[first];
        if op1.type_ != OpType::Convolution || editable_conv(op1).is_none() {
            continue;
        }
        let (c1, c2) = (conv_ref(op1), conv_ref(op2));
        let (k1, k2) = (
            c1.common.as_ref().expect("checked"),
            c2.common.as_ref().expect("checked"),
        );
        if k1.relu || k1.relu6 || k1.group.max(1) != 1 || k2.group.max(1) != 1 {
            continue;
        }
        let pointwise = k2.kernel_x.max(1) == 1
            && k2.kernel_y.max(1) == 1
            && k2.stride_x.max(1) == 1
            && k2.stride_y.max(1) == 1
            && k2.dilate_x.max(1) == 1
            && k2.dilate_y.max(1) == 1
            && unpadded(c2);
        if !pointwise {
            continue;
        }
        let mid = k1.output_count as usize;
        let out = k2.output_count as usize;
        let w1 = c1.weight.as_ref().expect("checked");
        let w2 = c2.weight.as_ref().expect("checked");
        if w2.len() != out * mid {
            continue;
        }
        // Weights per output channel of conv1: input channels x kernel taps.
        let taps = w1.len() / mid;
        if taps * out > taps * mid + mid * out {
            continue;
        }
        let b1 = c1
            .bias
            .clone()
            .filter(|b| b.len() == mid)
            .unwrap_or(vec![0.0; mid]);
        let b2 = c2
            .bias
            .clone()
            .filter(|b| b.len() == out)
            .unwrap_or(vec![0.0; out]);
        let mut weight = vec![0.0f32; out * taps];
        let mut bias = vec![0.0f32; out];
        for o in 0..out {
            let mut acc = vec![0.0f64; taps];
            let mut b = f64::from(b2[o]);
            for m in 0..mid {
                let k = f64::from(w2[o * mid + m]);
                b += k * f64::from(b1[m]);
                for (a, &w) in acc.iter_mut().zip(&w1[m * taps..(m + 1) * taps]) {
                    *a += k * f64::from(w);
                }
            }
            for (dst, a) in weight[o * taps..(o + 1) * taps].iter_mut().zip(acc) {
                *dst = a as f32;
            }
            bias[o] = b as f32;
        }
        let mut common = k1.as_ref().clone();
        common.output_count = k2.output_count;
        common.relu = k2.relu;
        common.relu6 = k2.relu6;
        let inputs = op1.input_indexes.clone();
        let op2 = &mut net.oplists.as_mut().expect("checked")[second];
        let conv = conv_mut(op2);
        conv.common = Some(Box::new(common));
        conv.weight = Some(weight);
        conv.bias = Some(bias);
        op2.input_indexes = inputs;
        removed.insert(first);
        summary.conv_pairs_merged += 1;
    }
    remove_ops(net, &removed);
}

/// Removes Const ops whose tensor nobody reads and that are not graph outputs.
fn remove_unused_constants(net: &mut Net) -> usize {
    let index = Index::new(net);
    let ops = net.oplists.as_deref().unwrap_or_default();
    let removed: BTreeSet<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.type_ == OpType::Const)
        .filter(|(_, op)| {
            tensor_list(&op.output_indexes)
                .iter()
                .all(|&t| index.consumers(t).is_empty() && !index.outputs.contains(&t))
        })
        .map(|(i, _)| i)
        .collect();
    remove_ops(net, &removed);
    removed.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnnq_format::{Convolution2DCommon, Input, Model, UnaryOp, UnaryOpOperation};

    /// Builds a net op by op; tensors are named and numbered in order of creation.
    #[derive(Default)]
    struct Builder {
        ops: Vec<Op>,
        names: Vec<String>,
    }

    impl Builder {
        fn tensor(&mut self, name: &str) -> i32 {
            self.names.push(name.into());
            (self.names.len() - 1) as i32
        }

        fn push(
            &mut self,
            type_: OpType,
            main: Option<OpParameter>,
            inputs: &[i32],
            name: &str,
        ) -> i32 {
            let out = self.tensor(name);
            self.ops.push(Op {
                type_,
                main,
                name: Some(name.into()),
                input_indexes: Some(inputs.to_vec()),
                output_indexes: Some(vec![out]),
                ..Op::default()
            });
            out
        }

        fn input(&mut self, dims: &[i32]) -> i32 {
            let main = OpParameter::Input(Box::new(Input {
                dims: Some(dims.to_vec()),
                dtype: DataType::DtFloat,
                dformat: MnnDataFormat::Nchw,
            }));
            self.push(OpType::Input, Some(main), &[], "x")
        }

        fn constant(&mut self, dims: &[i32], values: &[f32], name: &str) -> i32 {
            let main = OpParameter::Blob(Box::new(Blob {
                dims: Some(dims.to_vec()),
                data_format: MnnDataFormat::Nchw,
                data_type: DataType::DtFloat,
                float32s: Some(values.to_vec()),
                ..Blob::default()
            }));
            self.push(OpType::Const, Some(main), &[], name)
        }

        fn binary(&mut self, op: BinaryOpOperation, a: i32, b: i32, name: &str) -> i32 {
            let main = OpParameter::BinaryOp(Box::new(mnnq_format::BinaryOp {
                op_type: op,
                t: DataType::DtFloat,
                activation_type: 0,
            }));
            self.push(OpType::BinaryOp, Some(main), &[a, b], name)
        }

        fn hardswish(&mut self, x: i32, name: &str) -> i32 {
            let main = OpParameter::UnaryOp(Box::new(UnaryOp {
                op_type: UnaryOpOperation::Hardswish,
                ..UnaryOp::default()
            }));
            self.push(OpType::UnaryOp, Some(main), &[x], name)
        }

        /// A convolution with deterministic pseudo-random weights and biases.
        #[allow(clippy::too_many_arguments)]
        fn conv(
            &mut self,
            x: i32,
            cin: i32,
            cout: i32,
            kernel: i32,
            pad: i32,
            depthwise: bool,
            relu: bool,
            name: &str,
        ) -> i32 {
            let per_out = if depthwise { 1 } else { cin } * kernel * kernel;
            let count = (per_out * cout) as usize;
            let seed = self.names.len() as f32;
            let weight = (0..count)
                .map(|i| (i as f32 * 0.7 + seed).sin() * 0.8)
                .collect();
            let bias = (0..cout).map(|i| (i as f32 + seed).cos() * 0.3).collect();
            let main = OpParameter::Convolution2D(Box::new(Convolution2D {
                common: Some(Box::new(Convolution2DCommon {
                    kernel_x: kernel,
                    kernel_y: kernel,
                    pad_x: pad,
                    pad_y: pad,
                    input_count: cin,
                    output_count: cout,
                    group: if depthwise { cout } else { 1 },
                    relu,
                    ..Convolution2DCommon::default()
                })),
                weight: Some(weight),
                bias: Some(bias),
                ..Convolution2D::default()
            }));
            let type_ = if depthwise {
                OpType::ConvolutionDepthwise
            } else {
                OpType::Convolution
            };
            self.push(type_, Some(main), &[x], name)
        }

        fn net(self, outputs: &[i32]) -> Net {
            Net {
                output_name: Some(
                    outputs
                        .iter()
                        .map(|&o| self.names[o as usize].clone())
                        .collect(),
                ),
                oplists: Some(self.ops),
                tensor_name: Some(self.names),
                ..Net::default()
            }
        }
    }

    /// Runs the net on a fixed input in the float engine: every output, flattened.
    fn run(net: &Net, input_len: usize) -> Vec<Vec<f32>> {
        let model = Model::new(net.clone(), "test");
        let engine = mnnq_engine::Engine::from_model(&model).expect("engine");
        let input: Vec<f32> = (0..input_len)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        crate::fidelity::run_all(&engine, &[input]).expect("run")[0]
            .iter()
            .map(|(_, t)| t.data.clone())
            .collect()
    }

    fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.len(), y.len());
            for (p, q) in x.iter().zip(y) {
                assert!((p - q).abs() <= 1e-4 * (1.0 + p.abs()), "{p} vs {q}");
            }
        }
    }

    fn op_types(net: &Net) -> Vec<OpType> {
        net.oplists.iter().flatten().map(|o| o.type_).collect()
    }

    const INPUT: usize = 2 * 5 * 5;

    /// conv -> Mul(s) -> Add(per channel) -> hardswish -> Mul(s) -> (s - x) -> 1x1 conv.
    #[test]
    fn learnable_affine_blocks_fold_into_both_convolutions() {
        let mut b = Builder::default();
        let x = b.input(&[1, 2, 5, 5]);
        let c = b.conv(x, 2, 3, 3, 1, false, false, "conv1");
        let k1 = b.constant(&[1], &[1.7], "k1");
        let m = b.binary(BinaryOpOperation::Mul, k1, c, "mul1");
        let k2 = b.constant(&[3, 1, 1], &[0.5, -1.0, 2.0], "k2");
        let a = b.binary(BinaryOpOperation::Add, m, k2, "add1");
        let h = b.hardswish(a, "hswish");
        let k3 = b.constant(&[], &[0.6], "k3");
        let m2 = b.binary(BinaryOpOperation::Mul, h, k3, "mul2");
        let k4 = b.constant(&[1, 1, 1, 1], &[0.25], "k4");
        let s = b.binary(BinaryOpOperation::Sub, k4, m2, "sub");
        let y = b.conv(s, 3, 2, 1, 0, false, false, "conv2");
        let net = b.net(&[y]);
        let expected = run(&net, INPUT);
        let mut folded = net.clone();
        let summary = fold_affine(&mut folded);
        assert_eq!(summary.into_producers, 2);
        assert_eq!(summary.into_consumers, 2);
        assert_eq!(summary.constants_removed, 4);
        assert_eq!(
            op_types(&folded),
            [
                OpType::Input,
                OpType::Convolution,
                OpType::UnaryOp,
                OpType::Convolution
            ]
        );
        // The tensor table is unchanged and the first conv writes the Add's tensor.
        assert_eq!(folded.tensor_name, net.tensor_name);
        let ops = folded.oplists.as_ref().unwrap();
        assert_eq!(ops[1].output_indexes, Some(vec![a]));
        assert_eq!(ops[3].input_indexes, Some(vec![h]));
        assert_close(&run(&folded, INPUT), &expected);
    }

    #[test]
    fn fused_relu_takes_only_positive_scales() {
        for (scale, folded_ops) in [(2.0f32, 1usize), (-2.0, 0)] {
            let mut b = Builder::default();
            let x = b.input(&[1, 2, 5, 5]);
            let c = b.conv(x, 2, 3, 3, 1, false, true, "conv");
            let k = b.constant(&[1], &[scale], "k");
            let m = b.binary(BinaryOpOperation::Mul, c, k, "mul");
            let k2 = b.constant(&[1], &[0.5], "k2");
            let a = b.binary(BinaryOpOperation::Add, m, k2, "add");
            let net = b.net(&[a]);
            let expected = run(&net, INPUT);
            let mut folded = net.clone();
            let summary = fold_affine(&mut folded);
            assert_eq!(summary.into_producers, folded_ops, "scale {scale}");
            assert_eq!(summary.ops_removed(), folded_ops, "scale {scale}");
            assert_close(&run(&folded, INPUT), &expected);
        }
    }

    /// hardswish -> Mul -> Add -> padded depthwise conv: the Add stays (padding would see
    /// the offset), the scale moves into the weights.
    #[test]
    fn padded_consumer_keeps_one_add() {
        let mut b = Builder::default();
        let x = b.input(&[1, 2, 5, 5]);
        let h = b.hardswish(x, "hswish");
        let k = b.constant(&[1], &[0.8], "k");
        let m = b.binary(BinaryOpOperation::Mul, h, k, "mul");
        let k2 = b.constant(&[1], &[-0.4], "k2");
        let a = b.binary(BinaryOpOperation::Add, m, k2, "add");
        let y = b.conv(a, 2, 2, 3, 1, true, false, "dw");
        let net = b.net(&[y]);
        let expected = run(&net, INPUT);
        let mut folded = net.clone();
        let summary = fold_affine(&mut folded);
        assert_eq!(summary.chains_reduced, 1);
        assert_eq!(summary.ops_removed(), 1);
        assert_eq!(
            op_types(&folded),
            [
                OpType::Const,
                OpType::Input,
                OpType::UnaryOp,
                OpType::BinaryOp,
                OpType::ConvolutionDepthwise
            ]
        );
        // The Add writes a new tensor (x - 0.5 is not the old tensor's value 0.8 x - 0.4).
        let names = folded.tensor_name.as_ref().unwrap();
        assert_eq!(names.len(), net.tensor_name.as_ref().unwrap().len() + 2);
        let ops = folded.oplists.as_ref().unwrap();
        assert_eq!(ops[3].output_indexes, Some(vec![names.len() as i32 - 1]));
        assert_eq!(ops[4].input_indexes, Some(vec![names.len() as i32 - 1]));
        assert!(!ops.iter().any(|o| o.output_indexes == Some(vec![a])));
        assert_close(&run(&folded, INPUT), &expected);
    }

    /// A tensor with a second reader, or that is a graph output, is not folded away.
    #[test]
    fn shared_or_output_tensors_stay() {
        let mut b = Builder::default();
        let x = b.input(&[1, 2, 5, 5]);
        let c = b.conv(x, 2, 3, 3, 1, false, false, "conv");
        let k = b.constant(&[1], &[1.5], "k");
        let m = b.binary(BinaryOpOperation::Mul, c, k, "mul");
        let h = b.hardswish(c, "second reader");
        let net = b.net(&[m, h]);
        let mut folded = net.clone();
        assert_eq!(fold_affine(&mut folded).ops_removed(), 0);
        assert_eq!(folded, net);

        let mut b = Builder::default();
        let x = b.input(&[1, 2, 5, 5]);
        let c = b.conv(x, 2, 3, 3, 1, false, false, "conv");
        let k = b.constant(&[1], &[1.5], "k");
        let m = b.binary(BinaryOpOperation::Mul, c, k, "mul");
        let net = b.net(&[m, c]);
        let mut folded = net.clone();
        assert_eq!(fold_affine(&mut folded).ops_removed(), 0);
        // A per-channel constant of another length does not fold either.
        let mut b = Builder::default();
        let x = b.input(&[1, 2, 5, 5]);
        let c = b.conv(x, 2, 3, 3, 1, false, false, "conv");
        let k = b.constant(&[2, 1, 1], &[1.5, 2.0], "k");
        let m = b.binary(BinaryOpOperation::Mul, c, k, "mul");
        let net = b.net(&[m]);
        let mut folded = net.clone();
        assert_eq!(fold_affine(&mut folded).ops_removed(), 0);
    }

    #[test]
    fn conv_pairs_merge_only_without_extra_work() {
        // 2 -> 4 (3x3) -> 3 (1x1): 18*3 = 54 <= 18*4 + 4*3 = 84 multiply-adds: merged.
        let mut b = Builder::default();
        let x = b.input(&[1, 2, 5, 5]);
        let c = b.conv(x, 2, 4, 3, 1, false, false, "conv1");
        let y = b.conv(c, 4, 3, 1, 0, false, true, "conv2");
        let net = b.net(&[y]);
        let expected = run(&net, INPUT);
        let mut folded = net.clone();
        assert_eq!(fold_affine(&mut folded).conv_pairs_merged, 1);
        assert_eq!(op_types(&folded), [OpType::Input, OpType::Convolution]);
        assert_close(&run(&folded, INPUT), &expected);
        // 2 -> 1 -> 4 (a bottleneck): merging would cost more, so it stays.
        let mut b = Builder::default();
        let x = b.input(&[1, 2, 5, 5]);
        let c = b.conv(x, 2, 1, 3, 1, false, false, "conv1");
        let y = b.conv(c, 1, 4, 1, 0, false, false, "conv2");
        let net = b.net(&[y]);
        let mut folded = net.clone();
        assert_eq!(fold_affine(&mut folded).conv_pairs_merged, 0);
    }
}
