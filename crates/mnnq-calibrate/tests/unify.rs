//! Scale unification over plain op data.

use std::collections::HashMap;

use mnnq_calibrate::*;

fn op(name: &str, kind: LayoutOpKind, inputs: &[TensorId], output: TensorId) -> LayoutOp {
    LayoutOp {
        name: name.into(),
        kind,
        inputs: inputs.to_vec(),
        output,
    }
}

#[test]
fn concat_inputs_take_output_scale_and_reshape_output_takes_input() {
    let mut scales = HashMap::from([(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4), (5, 0.5)]);
    let ops = [
        op("concat", LayoutOpKind::Raster, &[1, 2], 3),
        op("reshape", LayoutOpKind::Raster, &[4], 5),
    ];
    unify_scales(&ops, &mut scales, UnifyOptions::default());
    assert_eq!(
        scales,
        HashMap::from([(1, 0.3), (2, 0.3), (3, 0.3), (4, 0.4), (5, 0.4)])
    );
}

#[test]
fn rasters_run_in_name_order_not_list_order() {
    // t1 -reshape "b"-> t2 -reshape "a"-> t3. Name order runs "a" first (t3 := t2 = 0.2),
    // then "b" (t2 := t1 = 0.1): t3 keeps the old 0.2, as MNN does. List order would give 0.1.
    let ops = [
        op("b", LayoutOpKind::Raster, &[1], 2),
        op("a", LayoutOpKind::Raster, &[2], 3),
    ];
    let mut scales = HashMap::from([(1, 0.1), (2, 0.2), (3, 0.3)]);
    unify_scales(&ops, &mut scales, UnifyOptions::default());
    assert_eq!(scales, HashMap::from([(1, 0.1), (2, 0.1), (3, 0.2)]));
    // Byte order: "B" < "a".
    let ops = [
        op("a", LayoutOpKind::Raster, &[1], 2),
        op("B", LayoutOpKind::Raster, &[2], 3),
    ];
    let mut scales = HashMap::from([(1, 0.1), (2, 0.2), (3, 0.3)]);
    unify_scales(&ops, &mut scales, UnifyOptions::default());
    assert_eq!(scales[&3], 0.2);
}

#[test]
fn pooling_after_rasters_and_shared_concat_input_takes_last() {
    // t1 feeds concat "c1" (-> t3) and concat "c2" (-> t5): "c2" runs last, t1 = 0.5.
    // Pool "p" (t3 -> t6) runs after all rasters, so it sees t3 = 0.3 unchanged.
    let ops = [
        op("p", LayoutOpKind::Pooling, &[3], 6),
        op("c2", LayoutOpKind::Raster, &[1, 4], 5),
        op("c1", LayoutOpKind::Raster, &[1, 2], 3),
    ];
    let mut scales = HashMap::from([(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4), (5, 0.5), (6, 0.6)]);
    unify_scales(&ops, &mut scales, UnifyOptions::default());
    assert_eq!(
        scales,
        HashMap::from([(1, 0.5), (2, 0.3), (3, 0.3), (4, 0.5), (5, 0.5), (6, 0.3)])
    );
}

#[test]
fn duplicate_names_keep_the_last_op_and_missing_sources_write_nothing() {
    let ops = [
        op("r", LayoutOpKind::Raster, &[1], 2),
        op("r", LayoutOpKind::Raster, &[3], 4),
        op("c", LayoutOpKind::Raster, &[5, 6], 7), // output 7 has no scale
    ];
    let mut scales = HashMap::from([(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4), (5, 0.5)]);
    unify_scales(&ops, &mut scales, UnifyOptions::default());
    assert_eq!(
        scales,
        HashMap::from([(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.3), (5, 0.5)])
    );
}

#[test]
fn relu_shares_input_scale_only_when_asked_and_mnn_rules_win() {
    let ops = [
        op("relu1", LayoutOpKind::Relu, &[1], 2),
        op("relu2", LayoutOpKind::Relu, &[3], 4),
        op("concat", LayoutOpKind::Raster, &[4, 5], 6),
    ];
    let base = HashMap::from([(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4), (5, 0.5), (6, 0.6)]);
    let mut plain = base.clone();
    unify_scales(&ops, &mut plain, UnifyOptions::default());
    assert_eq!(plain[&2], 0.2);
    let mut shared = base.clone();
    unify_scales(
        &ops,
        &mut shared,
        UnifyOptions {
            share_relu_scales: true,
        },
    );
    assert_eq!(shared[&2], 0.1);
    assert_eq!(shared[&4], 0.6); // the concat constraint overrides the relu sharing
}
