//! Fused elementwise chains (`mnnq_engine::fuse`) give the same output bytes as the separate ops:
//! a plain run (fused) against an observed run (every tensor stored, no fusion), on the real
//! models, with 1 and 2 threads.

mod common;

use mnnq_engine::{Engine, Session, Tensor};

fn check(model: &str, min_chains: usize) {
    let Some(root) = common::fixtures(model) else {
        return;
    };
    let engine = Engine::load(root.join("models").join(format!("{model}.mnn"))).unwrap();
    assert!(
        engine.fused.len() >= min_chains,
        "{model}: {} fused chains, expected at least {min_chains}",
        engine.fused.len()
    );
    let input = root.join("golden").join(model).join("input_0.bin");
    let (name, shape) = engine.input_shapes()[0].clone();
    let x = Tensor::new(shape, common::read_f32(&input));
    for threads in [1, 2] {
        let mut session = Session::new(&engine, threads).unwrap();
        let fused = session.run(&[(name.as_str(), x.clone())]).unwrap();
        let separate = session
            .run_observed(&[(name.as_str(), x.clone())], &mut |_, _| {})
            .unwrap();
        for ((n, a), (_, b)) in fused.iter().zip(&separate) {
            let differing = a
                .data
                .iter()
                .zip(&b.data)
                .filter(|(p, q)| p.to_bits() != q.to_bits())
                .count();
            assert_eq!(
                differing, 0,
                "{model} output {n}, {threads} threads: fused != separate"
            );
        }
    }
}

#[test]
fn det_fused_chains_match_separate_ops() {
    // PP-OCR det: affine blocks (x * a + b) around HardSwish after most convolutions.
    check("ppocr_det_v4", 20);
}

#[test]
fn cls_fused_chains_match_separate_ops() {
    check("ppocr_cls_v2", 1);
}
