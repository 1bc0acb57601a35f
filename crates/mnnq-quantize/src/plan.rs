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
        let inputs: Vec<u32> = op
            .input_indexes
            .iter()
            .flatten()
            .filter(|&&i| i >= 0)
            .map(|&i| i as u32)
            .collect();
        let outputs: Vec<u32> = op
            .output_indexes
            .iter()
            .flatten()
            .filter(|&&i| i >= 0)
            .map(|&i| i as u32)
            .collect();
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
