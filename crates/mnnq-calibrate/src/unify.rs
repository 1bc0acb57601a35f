//! Scale unification (doc §4.6): MNN's int8 runtime only runs a Raster (Concat, Reshape,
//! Transpose, Slice, ...) or Pooling op in int8 when its inputs and output share one scale,
//! so the quantizer rewrites scales after computing them.

use std::collections::HashMap;

use crate::TensorId;

/// What an op means for scale unification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutOpKind {
    /// A layout op (MNN's runtime `Raster`): Concat-like when it has several inputs,
    /// Reshape/Transpose/Slice-like when it has one.
    Raster,
    /// Max or average pooling.
    Pooling,
    /// A standalone ReLU / ReLU6 op (our addition, applied only with
    /// [`UnifyOptions::share_relu_scales`]).
    Relu,
}

/// One op as unification sees it. `inputs` lists the op's tensors with a non-negative id in
/// input order (MNN records every such input of a Raster/Pooling op, tracked or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutOp {
    pub name: String,
    pub kind: LayoutOpKind,
    pub inputs: Vec<TensorId>,
    pub output: TensorId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnifyOptions {
    /// Give a standalone ReLU/ReLU6 output its input's scale, so the runtime can keep the op
    /// in int8 (MNN gives them separate scales and runs them in float). Applied in the given
    /// op order before MNN's rules, so MNN's Raster/Pooling constraints win on conflict.
    pub share_relu_scales: bool,
}

/// Applies MNN's unification to `scales` (tensor id -> scale), in MNN's order:
/// 1. Raster ops in byte-wise name order (MNN keeps them in a `std::map<std::string, ...>`;
///    for duplicate names the op listed last wins, as its record overwrites the earlier one):
///    with several inputs every input takes the output's scale, with one input the output
///    takes the input's scale;
/// 2. Pooling ops in name order: the output takes each input's scale in turn (the last wins).
///
/// Difference from MNN: where the source tensor has no scale (an invalid, all-zero tensor),
/// MNN's `std::map::operator[]` inserts and copies a zero scale; we leave the target alone,
/// since our tool never writes a zero scale.
///
/// Generic over the value moved, so a scale and zero point pair moves as one (asymmetric codes).
pub fn unify_scales<V: Copy>(
    ops: &[LayoutOp],
    scales: &mut HashMap<TensorId, V>,
    options: UnifyOptions,
) {
    if options.share_relu_scales {
        for op in ops.iter().filter(|op| op.kind == LayoutOpKind::Relu) {
            if let [input] = op.inputs[..] {
                copy_scale(scales, input, op.output);
            }
        }
    }
    for op in ops_in_name_order(ops, LayoutOpKind::Raster) {
        match op.inputs[..] {
            [] => {}
            [input] => copy_scale(scales, input, op.output),
            _ => {
                for &input in &op.inputs {
                    copy_scale(scales, op.output, input);
                }
            }
        }
    }
    for op in ops_in_name_order(ops, LayoutOpKind::Pooling) {
        for &input in &op.inputs {
            copy_scale(scales, input, op.output);
        }
    }
}

fn copy_scale<V: Copy>(scales: &mut HashMap<TensorId, V>, from: TensorId, to: TensorId) {
    if let Some(&scale) = scales.get(&from) {
        scales.insert(to, scale);
    }
}

/// Ops of one kind sorted by name (bytes), keeping only the last op of each name.
fn ops_in_name_order(ops: &[LayoutOp], kind: LayoutOpKind) -> Vec<&LayoutOp> {
    let mut by_name: std::collections::BTreeMap<&[u8], &LayoutOp> = Default::default();
    for op in ops.iter().filter(|op| op.kind == kind) {
        by_name.insert(op.name.as_bytes(), op);
    }
    by_name.into_values().collect()
}
