//! MNN's int8 models (written by MNN 3.6.1's `quantized.out`, KL + MAX_ABS) run by our int8
//! runtime against MNN's own int8 outputs on the golden inputs, and bit-identical for 1 and 2
//! threads.

mod common;

use std::path::{Path, PathBuf};

use mnnq_engine::{Engine, Session, Tensor};

struct Case {
    input_name: String,
    input: Tensor,
    /// (output name, MNN's int8 output).
    outputs: Vec<(String, Vec<f32>)>,
    /// (output name, MNN's float output of the float model).
    float_outputs: Vec<(String, Vec<f32>)>,
}

/// Golden inputs of `golden_dir` with MNN's int8 outputs listed in `int8_dir`'s manifest.
fn cases(golden_dir: &Path, int8_dir: &Path) -> Vec<Case> {
    let read_json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    };
    let golden = read_json(golden_dir.join("manifest.json"));
    let quant = read_json(int8_dir.join("quant_outputs_manifest.json"));
    let input_name = golden["input_name"].as_str().unwrap().to_string();
    let golden_samples = golden["samples"].as_array().unwrap();
    quant["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let image = q["image"].as_str().unwrap();
            let g = golden_samples
                .iter()
                .find(|g| g["image"] == image)
                .expect("image in golden manifest");
            let shape: Vec<usize> = g["input"]["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let input = Tensor::new(
                shape,
                common::read_f32(&golden_dir.join(g["input"]["file"].as_str().unwrap())),
            );
            let outputs = q["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o["name"].as_str().unwrap().to_string(),
                        common::read_f32(&int8_dir.join(o["file"].as_str().unwrap())),
                    )
                })
                .collect();
            let float_outputs = g["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o["name"].as_str().unwrap().to_string(),
                        common::read_f32(&golden_dir.join(o["file"].as_str().unwrap())),
                    )
                })
                .collect();
            Case {
                input_name: input_name.clone(),
                input,
                outputs,
                float_outputs,
            }
        })
        .collect()
}

/// How our int8 outputs must agree with MNN's int8 outputs (project issue #6 asks cosine >= 0.999;
/// docs/int8-parity.md says which models meet it and why the others do not).
#[derive(Clone, Copy)]
enum Agreement {
    MinCosine(f64),
    /// Every output value bit-identical to MNN's.
    Exact,
}

/// Runs every case at 1 and 2 threads; checks equal bytes and agreement with MNN's int8 outputs,
/// and prints the cosine against MNN's float outputs of the float model for context.
fn check(model: &Path, cases: &[Case], agreement: Agreement) {
    let engine = Engine::load(model).unwrap_or_else(|e| panic!("{e}"));
    let plan = engine
        .int8
        .as_deref()
        .expect("the model is recognised as quantized");
    let (int8_ops, float_ops) = plan.op_counts();
    assert!(int8_ops > 0, "no op runs int8");
    let mut one = Session::new(&engine, 1).unwrap();
    let mut two = Session::new(&engine, 2).unwrap();
    for case in cases {
        let inputs = [(case.input_name.as_str(), case.input.clone())];
        let got = one.run(&inputs).unwrap();
        let got2 = two.run(&inputs).unwrap();
        for ((name, t1), (_, t2)) in got.iter().zip(&got2) {
            let b1: Vec<u32> = t1.data.iter().map(|v| v.to_bits()).collect();
            let b2: Vec<u32> = t2.data.iter().map(|v| v.to_bits()).collect();
            assert!(b1 == b2, "{name}: 1 and 2 threads differ");
        }
        for (name, want) in &case.outputs {
            let t = &got
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no output {name}"))
                .1;
            let (cos, err, max_ref) = common::compare(&t.data, want);
            println!(
                "{}: {name}: cosine {cos:.6}, max abs err {err:.4} (max |MNN| {max_ref:.4}); {int8_ops} ops int8, {float_ops} float",
                model.display()
            );
            if let Some((_, float)) = case.float_outputs.iter().find(|(n, _)| n == name) {
                let (fcos, ferr, _) = common::compare(&t.data, float);
                let (mcos, _, _) = common::compare(want, float);
                println!("    vs MNN float: ours cosine {fcos:.6} (max abs err {ferr:.4}), MNN int8 cosine {mcos:.6}");
            }
            match agreement {
                Agreement::MinCosine(min) => assert!(cos >= min, "{name}: cosine {cos} < {min}"),
                Agreement::Exact => {
                    let same = t.data.len() == want.len()
                        && t.data
                            .iter()
                            .zip(want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{name}: not bit-identical to MNN (cosine {cos}, max abs err {err})"
                    );
                }
            }
        }
    }
}

fn shared_model(model: &str, agreement: Agreement) {
    let Some(root) = common::fixtures(model) else {
        return;
    };
    let int8_dir = root.join("mnn_int8").join(model);
    let cases = cases(&root.join("golden").join(model), &int8_dir);
    check(&int8_dir.join("KL_MAX_ABS.mnn"), &cases, agreement);
}

#[test]
fn int8_efficientnet_lite0_matches_mnn() {
    // Every op of this model runs with MNN x86's exact arithmetic (docs/int8-parity.md), so the
    // logits are bit-identical; any change of the requantize order shows here first.
    shared_model("efficientnet_lite0", Agreement::Exact);
}

#[test]
fn int8_ppocr_cls_matches_mnn() {
    // Not MIN_COSINE on purpose: MNN's x86 int8 max pool compares `q + 128` bytes as signed, so
    // at pool2d_9 (over negative hardswish values) it returns a wrong code in 65 % of the
    // windows (docs/int8-parity.md). We pool correctly: golden sample 0 then agrees with MNN's
    // *float* output at 1.000000 and with MNN's int8 output at 0.9964; the other two samples
    // are 1.000000 either way.
    shared_model("ppocr_cls_v2", Agreement::MinCosine(0.996));
}

#[test]
fn int8_ppocr_det_matches_mnn() {
    // MNN's int8 det map is nearly all zeros (max 0.02-0.5 where the float map reaches 1; cosine
    // vs float 0.03-0.06): its KL scales kill the map at the final Sigmoid table. A cosine of two
    // such maps says little, so the bar is bit-identity: every op (int8 convs, scalar-constant
    // and SE-gate BinaryOps, tables, float Deconvolution/Interp) matches MNN's arithmetic
    // (docs/int8-parity.md), and any drift shows here.
    shared_model("ppocr_det_v4", Agreement::Exact);
}

/// The in-repo copy: needs no shared fixtures.
#[test]
fn int8_ppocr_cls_in_repo() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/ppocr_cls_v2");
    let cases = cases(&data.join("golden"), &data.join("mnn_int8"));
    check(
        &data.join("mnn_int8/KL_MAX_ABS.mnn"),
        &cases,
        Agreement::MinCosine(0.996),
    );
}

/// With `MNNQ_INT8_MNN_MAX_POOL` (read when the int8 plan is built, so it runs in a child
/// process), our max pool orders codes as MNN's x86 kernel does, and the in-repo cls model then
/// gives MNN's int8 bytes exactly, including golden sample 0 (0.9964 with the correct pool).
#[test]
fn int8_ppocr_cls_in_repo_with_mnn_max_pool_order_is_exact() {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "mnn_max_pool_order_child",
            "--test-threads=1",
        ])
        .env("MNNQ_INT8_MNN_MAX_POOL", "1")
        .status()
        .unwrap();
    assert!(status.success(), "the child test failed: {status}");
}

#[test]
#[ignore = "run by int8_ppocr_cls_in_repo_with_mnn_max_pool_order_is_exact with its variable set"]
fn mnn_max_pool_order_child() {
    assert!(
        std::env::var_os("MNNQ_INT8_MNN_MAX_POOL").is_some(),
        "run through int8_ppocr_cls_in_repo_with_mnn_max_pool_order_is_exact"
    );
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/ppocr_cls_v2");
    let cases = cases(&data.join("golden"), &data.join("mnn_int8"));
    check(
        &data.join("mnn_int8/KL_MAX_ABS.mnn"),
        &cases,
        Agreement::Exact,
    );
}

/// PP-OCR det's hardswish/affine chains, squeeze-excite, FPN adds, upsampling and concat (here
/// with unequal scales, requantized by tables) all have int8 forms (issue #6): only the two
/// Deconvolutions (float in MNN too) stay float.
#[test]
fn int8_ppocr_det_runs_all_but_deconvolution_int8() {
    let Some(root) = common::fixtures("ppocr_det_v4") else {
        return;
    };
    let model = root.join("mnn_int8/ppocr_det_v4/KL_MAX_ABS.mnn");
    let engine = Engine::load(&model).unwrap_or_else(|e| panic!("{e}"));
    let plan = engine.int8.as_deref().expect("quantized");
    let float_ops: Vec<String> = plan
        .node_is_int8
        .iter()
        .filter(|(_, int8)| !int8)
        .map(|(n, _)| {
            let node = &engine.ir.nodes[*n];
            format!("{} {}", node.type_name, node.name)
        })
        .collect();
    assert!(
        float_ops.iter().all(|t| t.starts_with("Deconvolution ")),
        "ops left float: {float_ops:?}"
    );
    assert_eq!(float_ops.len(), 2, "{float_ops:?}");
}
