//! Which feature tensors may get asymmetric int8 codes (config key `feature_zero_point`).
//!
//! A ReLU/ReLU6 output (most of EfficientNet-Lite0) spends half of a symmetric code range on
//! values that never occur; an asymmetric code (value = `(q - zero) * scale`, codes
//! [-127, 127]) halves the rounding step there. MNN 3.6.1's CPU runtime honours zero points in
//! dense and depthwise convolution (also their padding and fused ReLU clamp), the casts, int8
//! BinaryOp and average pooling, but its x86 int8 max pool compares the stored bytes as signed
//! and is wrong as soon as codes straddle 0 (docs/int8-parity.md, `scripts/asym_probe.py`).
//! mnnq's int8 runtime takes zero points in convolutions, pools, casts and copies and runs the
//! ops that compute on values (tables, binary ops, interpolation) in float when a zero point
//! is involved. So a tensor is a candidate when its writer and every reader are among:
//! convolution, depthwise convolution, average pooling and the pure data-movement ops; and,
//! because unification copies a scale and zero point across concat/reshape/pooling, only when
//! every tensor tied to it by those ops is a candidate too.

use std::collections::{BTreeMap, BTreeSet};

use mnnq_calibrate::LayoutOp;
use mnnq_format::{Net, Op, OpParameter, OpType, PoolType};

// Not UnaryOp: its tables take zero points in both runtimes (the rewrite writes them with
// both), but on PP-OCR cls asymmetric hardswish outputs measured worse (eval_textline cosine
// 0.9962 -> 0.9937, top-1 98.3 % -> 96.7 %, the same in MNN) and PP-OCR det has none.

/// Skew limit of the default rule: asymmetric when `min >= -SKEW_RATIO * max`.
pub const SKEW_RATIO: f32 = 0.1;

/// Whether `op` handles asymmetric codes on every tensor it reads and writes, in both runtimes.
fn takes_zero_points(op: &Op) -> bool {
    match op.type_ {
        OpType::Convolution | OpType::ConvolutionDepthwise => {
            matches!(op.main, Some(OpParameter::Convolution2D(_)))
        }
        OpType::Pooling => {
            matches!(&op.main, Some(OpParameter::Pool(p)) if p.type_ == PoolType::Avepool)
        }
        OpType::Pooling3D => {
            matches!(&op.main, Some(OpParameter::Pool3D(p)) if p.type_ == PoolType::Avepool)
        }
        OpType::Concat
        | OpType::Reshape
        | OpType::ConvertTensor
        | OpType::Squeeze
        | OpType::Unsqueeze
        | OpType::ExpandDims
        | OpType::Flatten
        | OpType::Permute
        | OpType::Transpose => true,
        _ => false,
    }
}

/// Tensors that may get a zero point: written and read only by ops that take zero points, not
/// graph inputs or outputs, and tied by `layout_ops` (unification) only to such tensors.
pub fn asymmetric_candidates(net: &Net, layout_ops: &[LayoutOp]) -> BTreeSet<u32> {
    let mut fine: BTreeMap<u32, bool> = BTreeMap::new();
    let mut mark = |id: i32, ok: bool| {
        if let Ok(id) = u32::try_from(id) {
            let entry = fine.entry(id).or_insert(true);
            *entry &= ok;
        }
    };
    let mut written = BTreeSet::new();
    for op in net.oplists.iter().flatten() {
        let ok = takes_zero_points(op);
        for &i in op.input_indexes.iter().flatten() {
            mark(i, ok);
        }
        for &o in op.output_indexes.iter().flatten() {
            mark(o, ok);
            written.insert(o);
        }
    }
    for id in crate::range_method::graph_outputs(net) {
        mark(id as i32, false);
    }
    // Tensors no op writes are graph inputs or constants.
    for (&id, ok) in fine.iter_mut() {
        if !written.contains(&(id as i32)) {
            *ok = false;
        }
    }
    // Unification groups: all or nothing.
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    fn find(parent: &mut BTreeMap<u32, u32>, x: u32) -> u32 {
        let p = *parent.get(&x).unwrap_or(&x);
        if p == x {
            return x;
        }
        let root = find(parent, p);
        parent.insert(x, root);
        root
    }
    for op in layout_ops {
        for &i in &op.inputs {
            let (a, b) = (find(&mut parent, i), find(&mut parent, op.output));
            if a != b {
                parent.insert(a, b);
            }
        }
    }
    let ids: Vec<u32> = fine.keys().copied().collect();
    let mut group_ok: BTreeMap<u32, bool> = BTreeMap::new();
    for &id in &ids {
        let root = find(&mut parent, id);
        *group_ok.entry(root).or_insert(true) &= fine[&id];
    }
    ids.into_iter()
        .filter(|&id| {
            let root = find(&mut parent, id);
            group_ok[&root]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnnq_format::{Convolution2D, Convolution2DCommon, Pool};

    fn op(type_: OpType, main: Option<OpParameter>, inputs: &[i32], outputs: &[i32]) -> Op {
        Op {
            type_,
            main,
            input_indexes: Some(inputs.to_vec()),
            output_indexes: Some(outputs.to_vec()),
            name: Some(format!("op{}", outputs[0])),
            ..Op::default()
        }
    }

    fn conv(relu6: bool) -> Option<OpParameter> {
        Some(OpParameter::Convolution2D(Box::new(Convolution2D {
            common: Some(Box::new(Convolution2DCommon {
                relu6,
                ..Convolution2DCommon::default()
            })),
            ..Convolution2D::default()
        })))
    }

    fn pool(type_: PoolType) -> Option<OpParameter> {
        Some(OpParameter::Pool(Box::new(Pool {
            type_,
            ..Pool::default()
        })))
    }

    #[test]
    fn relu6_conv_output_between_convolutions_is_a_candidate_but_not_before_a_max_pool() {
        // 0 (input) -> conv+relu6 -> 1 -> conv -> 2 -> conv+relu6 -> 3 -> maxpool -> 4
        // -> conv -> 5 (output); 1 also -> avgpool -> 6 -> conv -> 7 (output).
        let net = Net {
            oplists: Some(vec![
                op(OpType::Input, None, &[], &[0]),
                op(OpType::Convolution, conv(true), &[0], &[1]),
                op(OpType::Convolution, conv(false), &[1], &[2]),
                op(OpType::Convolution, conv(true), &[2], &[3]),
                op(OpType::Pooling, pool(PoolType::Maxpool), &[3], &[4]),
                op(OpType::Convolution, conv(false), &[4], &[5]),
                op(OpType::Pooling, pool(PoolType::Avepool), &[1], &[6]),
                op(OpType::Convolution, conv(false), &[6], &[7]),
            ]),
            tensor_name: Some((0..8).map(|i| format!("t{i}")).collect()),
            output_name: Some(vec!["t5".into(), "t7".into()]),
            ..Net::default()
        };
        let layout = crate::plan::layout_ops(&net, &[], true);
        let c = asymmetric_candidates(&net, &layout);
        assert!(c.contains(&1), "conv output read by a conv and an avg pool");
        assert!(c.contains(&6), "avg pool output read by a conv");
        assert!(c.contains(&2));
        assert!(!c.contains(&0), "graph input");
        assert!(
            !c.contains(&3) && !c.contains(&4),
            "a max pool (MNN's x86 bug)"
        );
        assert!(!c.contains(&5) && !c.contains(&7), "graph outputs");
    }
}
