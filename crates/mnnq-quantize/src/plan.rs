//! What calibration observes: the tensors that get a scale, and the ops whose scales are
//! unified afterwards. Built from the prepared engine (see [`crate::runner`]) but kept as
//! plain data so the statistics and scale code can be tested without a model.

use std::collections::BTreeMap;

use mnnq_calibrate::RangeStats;
use mnnq_calibrate::{LayoutOp, LayoutOpKind};
use mnnq_format::{Net, OpParameter, OpType, PoolType};

/// One tensor that gets statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackedTensor {
    /// Index in `Net.tensorName`.
    pub id: u32,
    /// Shape as MNN stores it (dims in the tensor's own format order).
    pub shape: Vec<usize>,
    /// MNN's format is NHWC (changes which dims MNN calls width/height).
    pub nhwc: bool,
    /// A graph input: MNN always uses the MAX threshold for it.
    pub graph_input: bool,
    /// A float constant operand of an executed op: its values, folded in once per image so
    /// its histogram weighs like MNN's (which re-reads the constant on every forward).
    pub constant: Option<Vec<f32>>,
}

impl TrackedTensor {
    /// Channel count as MNN reads it (dim 1, or the last dim for NHWC).
    pub fn channels(&self) -> Option<usize> {
        if self.nhwc {
            self.shape.last().copied()
        } else {
            self.shape.get(1).copied()
        }
    }
}

/// The set of tensors calibration tracks, in a fixed order (ascending id).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CalibrationPlan {
    pub tensors: Vec<TrackedTensor>,
    /// `slot_of[id]` = position in `tensors`.
    slot_of: Vec<Option<usize>>,
}

impl CalibrationPlan {
    pub fn new(mut tensors: Vec<TrackedTensor>) -> Self {
        tensors.sort_by_key(|t| t.id);
        tensors.dedup_by_key(|t| t.id);
        let len = tensors.iter().map(|t| t.id as usize + 1).max().unwrap_or(0);
        let mut slot_of = vec![None; len];
        for (slot, t) in tensors.iter().enumerate() {
            slot_of[t.id as usize] = Some(slot);
        }
        CalibrationPlan { tensors, slot_of }
    }

    /// Position of tensor `id` in [`CalibrationPlan::tensors`], if tracked.
    pub fn slot(&self, id: usize) -> Option<usize> {
        self.slot_of.get(id).copied().flatten()
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// Ops that MNN's runtime turns into `Raster` (pure data movement) when they have one data
/// input: the output takes the input's scale.
fn single_input_layout_op(op_type: OpType) -> bool {
    matches!(
        op_type,
        OpType::Reshape
            | OpType::Flatten
            | OpType::Permute
            | OpType::Transpose
            | OpType::Squeeze
            | OpType::Unsqueeze
            | OpType::ExpandDims
            | OpType::Slice
            | OpType::SliceTf
            | OpType::StridedSlice
            | OpType::ConvertTensor
            | OpType::Raster
            | OpType::Crop
            | OpType::DepthToSpace
            | OpType::SpaceToDepth
            | OpType::BatchToSpaceNd
            | OpType::SpaceToBatchNd
            | OpType::Tile
    )
}

/// Nearest-neighbour resize is a pure gather: MNN runs it as a Raster too (its scale file
/// shows every nearest Interp with equal input and output scales).
fn is_nearest_interp(op: &mnnq_format::Op) -> bool {
    match (&op.type_, &op.main) {
        (OpType::Interp, Some(OpParameter::Interp(p))) => p.resize_type == 1,
        _ => false,
    }
}

/// An op's input and output tensor ids, in slot order (negative slots, i.e. absent optional
/// operands, left out).
fn tensor_ids(op: &mnnq_format::Op) -> (Vec<u32>, Vec<u32>) {
    let ids = |slots: &Option<Vec<i32>>| -> Vec<u32> {
        slots
            .iter()
            .flatten()
            .filter(|&&i| i >= 0)
            .map(|&i| i as u32)
            .collect()
    };
    (ids(&op.input_indexes), ids(&op.output_indexes))
}

/// The ops whose scales [`mnnq_calibrate::unify_scales`] ties together, with their data
/// inputs (shape/size operands are not data and are left out). Slice-like ops with several
/// outputs give one entry per output. `skip` names ops the config excludes. With
/// `share_relu`, standalone ReLU ops are included (their output takes the input's scale).
pub fn layout_ops(net: &Net, skip: &[String], share_relu: bool) -> Vec<LayoutOp> {
    let mut ops = Vec::new();
    for (position, op) in net.oplists.iter().flatten().enumerate() {
        let name = op.name.clone().unwrap_or_else(|| format!("#{position}"));
        if skip.contains(&name) {
            continue;
        }
        let (inputs, outputs) = tensor_ids(op);
        let (Some(&first), false) = (inputs.first(), outputs.is_empty()) else {
            continue;
        };
        let kind = match op.type_ {
            OpType::Concat => {
                if let [output] = outputs[..] {
                    ops.push(LayoutOp {
                        name: name.clone(),
                        kind: LayoutOpKind::Raster,
                        inputs: inputs.clone(),
                        output,
                    });
                }
                continue;
            }
            OpType::Pooling | OpType::Pooling3D => LayoutOpKind::Pooling,
            // Only plain ReLU: a ReLU6 whose input exceeds 6 would lose resolution on its
            // [0, 6] output (measured up to 26x coarser scales on PP-OCR det), and MNN runs
            // standalone ReLU6 in float anyway.
            OpType::ReLu if share_relu => LayoutOpKind::Relu,
            t if single_input_layout_op(t) || is_nearest_interp(op) => LayoutOpKind::Raster,
            _ => continue,
        };
        for &output in &outputs {
            ops.push(LayoutOp {
                name: name.clone(),
                kind,
                inputs: vec![first],
                output,
            });
        }
    }
    ops
}

/// Max-pooling ops that MNN's x86 int8 kernel computes wrongly, as (data input, output)
/// tensor ids: those whose input was seen negative during calibration.
///
/// MNN's x86 CPU backend stores int8 activations as `q + 128` in unsigned bytes, but its int8
/// max-pool kernel (`MNNMaxPoolInt8_` in `x86_x64/FunctionDispatcher.cpp`) compares those bytes
/// as *signed* int8, so it ranks codes 0 < 1 < ... < 127 < -127 < ... < -1: a window holding
/// both a negative and a non-negative code returns the largest negative one (docs/quality.md,
/// "PP-OCR cls v2"). Inputs that are never negative (after a ReLU) are pooled correctly.
/// `ranges` is indexed like `plan.tensors`.
pub fn signed_max_pools(
    net: &Net,
    plan: &CalibrationPlan,
    ranges: &[RangeStats],
    skip: &[String],
) -> Vec<(u32, u32)> {
    let mut pools = Vec::new();
    for op in net.oplists.iter().flatten() {
        let is_max = match (&op.type_, &op.main) {
            (OpType::Pooling, Some(OpParameter::Pool(p))) => p.type_ == PoolType::Maxpool,
            (OpType::Pooling3D, Some(OpParameter::Pool3D(p))) => p.type_ == PoolType::Maxpool,
            _ => false,
        };
        if !is_max || op.name.as_ref().is_some_and(|n| skip.contains(n)) {
            continue;
        }
        let input = op.input_indexes.iter().flatten().copied().find(|&i| i >= 0);
        let output = op
            .output_indexes
            .iter()
            .flatten()
            .copied()
            .find(|&i| i >= 0);
        let (Some(input), Some(output)) = (input, output) else {
            continue;
        };
        let seen_negative = plan
            .slot(input as usize)
            .and_then(|slot| ranges.get(slot))
            .is_some_and(|range| range.min < 0.0 && range.min <= range.max);
        if seen_negative {
            pools.push((input as u32, output as u32));
        }
    }
    pools
}

/// Names of the tensors, for reports.
pub fn tensor_names(net: &Net) -> BTreeMap<u32, String> {
    net.tensor_name
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, n)| (i as u32, n.clone()))
        .collect()
}

/// Ops across which MNN's runtime hands a tensor's quant info to a neighbour that has none
/// (`Pipeline::encode`: Raster commands, ReLU, ReLU6, Pooling, Interp, CropAndResize,
/// ROIPooling; docs/mnn-quantization.md §11.1).
fn propagates_quant_info(op_type: OpType) -> bool {
    single_input_layout_op(op_type)
        || matches!(
            op_type,
            OpType::ReLu
                | OpType::ReLu6
                | OpType::Pooling
                | OpType::Pooling3D
                | OpType::Interp
                | OpType::CropAndResize
                | OpType::RoiPooling
        )
}

/// Global average pools between an int8 input and a float output (the start of a float
/// head), rewritten as a Reduction MEAN over height and width, which is the same value in
/// float. MNN carries quant info across a pool (see [`propagation_blockers`]): a pool whose
/// output has its own blocker scale still writes int8, so MNN rounded EfficientNet's
/// 1280 pooled features to steps of 0.043 before the float classifier, where our runtime
/// kept them float (logits cosine 0.99976 between the runtimes). MNN does not carry quant
/// info across a Reduction and has no int8 Reduction: it dequantizes the input and writes a
/// float mean, as our runtime does. Returns the output tensors of the rewritten pools.
pub fn float_global_pools_as_means(net: &mut Net, scales: &BTreeMap<u32, f32>) -> Vec<u32> {
    let mut rewritten = Vec::new();
    for op in net.oplists.iter_mut().flatten() {
        let global_average = match (&op.type_, &op.main) {
            (OpType::Pooling, Some(OpParameter::Pool(p))) => {
                p.is_global && p.type_ == PoolType::Avepool
            }
            (OpType::Pooling3D, Some(OpParameter::Pool3D(p))) => {
                p.is_global && p.type_ == PoolType::Avepool
            }
            _ => false,
        };
        let (data, outputs) = tensor_ids(op);
        let (true, [input], [output]) = (global_average, &data[..], &outputs[..]) else {
            continue;
        };
        if !scales.contains_key(input) || scales.contains_key(output) {
            continue;
        }
        op.type_ = OpType::Reduction;
        op.main = Some(OpParameter::ReductionParam(Box::new(
            mnnq_format::ReductionParam {
                operation: mnnq_format::ReductionType::Mean,
                dim: Some(vec![2, 3]),
                coeff: 0.0,
                keep_dims: true,
                d_type: mnnq_format::DataType::DtFloat,
            },
        )));
        rewritten.push(*output);
    }
    rewritten
}

/// Scales that keep the tensors the quantizer left float, float in MNN too.
///
/// MNN gives a tensor without quant info the quant info of its neighbour across a
/// propagating op (pooling, layout copies, ReLU, Interp). A float head that starts at such
/// an op (EfficientNet's global average pool, then a Reshape, before the float classifier)
/// would then be pooled and copied in int8 at the input's scale: the classifier's input
/// is rounded, which cost 4.7 points of top-1 agreement in MNN that our runtime did not
/// show. A tensor with its own, different scale is not overwritten, and an op between
/// unequal scales runs float (Pooling and Raster need equal scales for int8), so such a
/// tensor gets one: its calibrated scale when that differs from its neighbour's, else the
/// next float above the neighbour's. Repeated along the chain until no propagating op has a
/// scaled side and an unscaled side. Only single-input, single-output ops are considered
/// (MNN propagates from a single neighbour only).
pub fn propagation_blockers(
    net: &Net,
    scales: &BTreeMap<u32, f32>,
    calibrated: &BTreeMap<u32, f32>,
) -> BTreeMap<u32, f32> {
    let mut all = scales.clone();
    let mut added = BTreeMap::new();
    let pick = |id: u32, neighbour: f32| match calibrated.get(&id) {
        Some(&own) if own > 0.0 && own != neighbour => own,
        _ => neighbour.next_up(),
    };
    loop {
        let mut changed = false;
        for op in net.oplists.iter().flatten() {
            if !propagates_quant_info(op.type_) {
                continue;
            }
            let (data, outputs) = tensor_ids(op);
            let (Some(&input), [output]) = (data.first(), &outputs[..]) else {
                continue;
            };
            // Shape operands (Reshape's second input, Interp's sizes) are not data.
            let output = *output;
            match (all.get(&input).copied(), all.get(&output).copied()) {
                (Some(s), None) => {
                    let blocker = pick(output, s);
                    all.insert(output, blocker);
                    added.insert(output, blocker);
                    changed = true;
                }
                (None, Some(s)) => {
                    let blocker = pick(input, s);
                    all.insert(input, blocker);
                    added.insert(input, blocker);
                    changed = true;
                }
                _ => {}
            }
        }
        if !changed {
            return added;
        }
    }
}

/// An op named `op<first output>` reading `inputs` and writing `outputs`, for hand-built
/// test graphs.
#[cfg(test)]
pub(crate) fn test_op(type_: OpType, inputs: &[i32], outputs: &[i32]) -> mnnq_format::Op {
    mnnq_format::Op {
        type_,
        input_indexes: Some(inputs.to_vec()),
        output_indexes: Some(outputs.to_vec()),
        name: Some(format!("op{}", outputs[0])),
        ..mnnq_format::Op::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnnq_format::Op;

    use super::test_op as op;

    #[test]
    fn only_global_average_pools_from_int8_into_float_become_means() {
        let pool = |type_: PoolType, is_global: bool, input: i32, output: i32| Op {
            main: Some(OpParameter::Pool3D(Box::new(mnnq_format::Pool3D {
                type_,
                is_global,
                ..mnnq_format::Pool3D::default()
            }))),
            ..op(OpType::Pooling3D, &[input], &[output])
        };
        // 0 -> avg(global) -> 1 (float): rewritten. 0 -> max(global) -> 2 (float), 0 ->
        // avg(not global) -> 3 (float), 0 -> avg(global) -> 4 (int8): kept.
        let mut net = Net {
            oplists: Some(vec![
                op(OpType::Input, &[], &[0]),
                pool(PoolType::Avepool, true, 0, 1),
                pool(PoolType::Maxpool, true, 0, 2),
                pool(PoolType::Avepool, false, 0, 3),
                pool(PoolType::Avepool, true, 0, 4),
            ]),
            ..Net::default()
        };
        let scales = BTreeMap::from([(0, 0.1f32), (4, 0.2)]);
        assert_eq!(float_global_pools_as_means(&mut net, &scales), vec![1]);
        let ops = net.oplists.unwrap();
        assert_eq!(ops[1].type_, OpType::Reduction);
        let Some(OpParameter::ReductionParam(p)) = &ops[1].main else {
            panic!("no ReductionParam");
        };
        assert_eq!(p.operation, mnnq_format::ReductionType::Mean);
        assert_eq!(p.dim.as_deref(), Some(&[2, 3][..]));
        assert!(p.keep_dims);
        assert!(ops[2..].iter().all(|o| o.type_ == OpType::Pooling3D));
    }

    #[test]
    fn a_float_head_behind_a_pool_and_a_reshape_gets_scales_unequal_to_its_neighbours() {
        // 0 (input) -> conv -> 1 -> pool -> 2 -> reshape(2, shape 5) -> 3 -> conv -> 4
        let net = Net {
            oplists: Some(vec![
                op(OpType::Input, &[], &[0]),
                op(OpType::Convolution, &[0], &[1]),
                op(OpType::Pooling, &[1], &[2]),
                op(OpType::Reshape, &[2, 5], &[3]),
                op(OpType::Convolution, &[3], &[4]),
            ]),
            ..Net::default()
        };
        let scales = BTreeMap::from([(0, 0.01f32), (1, 0.05)]);
        // The pool output was calibrated at its own scale; the reshape output was not.
        let calibrated = BTreeMap::from([(0, 0.01f32), (1, 0.05), (2, 0.02)]);
        let added = propagation_blockers(&net, &scales, &calibrated);
        assert_eq!(
            added.get(&2),
            Some(&0.02),
            "own calibrated scale, unlike the input's"
        );
        let reshape = *added.get(&3).expect("the reshape output needs one too");
        assert!(reshape != 0.02 && reshape > 0.0);
        assert_eq!(reshape, 0.02f32.next_up());
        assert!(!added.contains_key(&4), "a convolution does not propagate");
        assert!(!added.contains_key(&5), "a shape operand is not data");
        // Nothing to block when every neighbour across a propagating op has a scale.
        let all = BTreeMap::from([(0, 0.01f32), (1, 0.05), (2, 0.05), (3, 0.05)]);
        assert!(propagation_blockers(&net, &all, &calibrated).is_empty());
    }
}
