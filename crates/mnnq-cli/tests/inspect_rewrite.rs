//! `mnnq inspect --json` against the documented fixture facts, and `mnnq rewrite` round trips.

use std::path::{Path, PathBuf};
use std::process::Command;

use mnnq_format::Model;

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("MNNQ_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("SKIPPED: fixtures not found at {}", dir.display());
        None
    }
}

fn mnnq(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mnnq"))
        .args(args)
        .output()
        .unwrap()
}

fn inspect_json(path: &Path) -> serde_json::Value {
    let out = mnnq(&["inspect".as_ref(), path.as_os_str(), "--json".as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (model, op count, op type counts) as listed in fixtures/README.md ("Op types inside the
/// float .mnn files").
type Documented = (&'static str, usize, &'static [(&'static str, u64)]);
const DOCUMENTED: &[Documented] = &[
    (
        "efficientnet_lite0",
        79,
        &[
            ("Convolution", 34),
            ("ConvolutionDepthwise", 16),
            ("BinaryOp", 10),
            ("Pooling3D", 1),
            ("Reshape", 3),
            ("Shape", 1),
            ("Rank", 1),
            ("Unsqueeze", 1),
            ("SliceTf", 2),
            ("Concat", 1),
            ("Const", 6),
            ("ConvertTensor", 2),
            ("Input", 1),
        ],
    ),
    (
        "ppocr_det_v4",
        374,
        &[
            ("Convolution", 48),
            ("ConvolutionDepthwise", 14),
            ("Deconvolution", 2),
            ("BinaryOp", 145),
            ("UnaryOp", 25),
            ("Pooling3D", 10),
            ("ReLU6", 10),
            ("Interp", 6),
            ("Concat", 1),
            ("Const", 110),
            ("ConvertTensor", 2),
            ("Input", 1),
        ],
    ),
    (
        "ppocr_cls_v2",
        151,
        &[
            ("Convolution", 43),
            ("ConvolutionDepthwise", 11),
            ("BinaryOp", 35),
            ("UnaryOp", 18),
            ("Pooling3D", 10),
            ("Pooling", 1),
            ("ReLU6", 9),
            ("Softmax", 1),
            ("Reshape", 4),
            ("Flatten", 1),
            ("Shape", 2),
            ("Rank", 1),
            ("Unsqueeze", 1),
            ("SliceTf", 2),
            ("Concat", 1),
            ("Const", 8),
            ("ConvertTensor", 2),
            ("Input", 1),
        ],
    ),
];

#[test]
fn inspect_agrees_with_the_fixture_readme() {
    let Some(root) = fixtures() else { return };
    let shapes = [
        ("efficientnet_lite0", "input", [1, 3, 224, 224], "logits"),
        ("ppocr_det_v4", "x", [1, 3, 640, 640], "sigmoid_0.tmp_0"),
        (
            "ppocr_cls_v2",
            "x",
            [1, 3, 48, 192],
            "save_infer_model/scale_0.tmp_1",
        ),
    ];
    for (&(name, op_count, counts), (_, input, dims, output)) in DOCUMENTED.iter().zip(shapes) {
        let report = inspect_json(&root.join(format!("models/{name}.mnn")));
        assert_eq!(report["op_count"], op_count, "{name}");
        let types = report["op_types"].as_object().unwrap();
        assert_eq!(types.len(), counts.len(), "{name}: {types:?}");
        for &(op_type, count) in counts {
            assert_eq!(types[op_type], count, "{name} {op_type}");
        }
        assert_eq!(report["inputs"][0]["name"], input);
        assert_eq!(report["inputs"][0]["dims"], serde_json::json!(dims));
        assert_eq!(report["inputs"][0]["data_type"], "DT_FLOAT");
        assert_eq!(report["inputs"][0]["layout"], "NCHW");
        assert_eq!(report["outputs"][0]["name"], output);
        assert_eq!(report["mnn_version"], "3.6.1");
        assert_eq!(report["quantization"]["quantized"], false);
        let convs = counts
            .iter()
            .filter(|(t, _)| t.starts_with("Convolution") || t.starts_with("Deconvolution"));
        assert_eq!(
            report["quantization"]["convolutions"],
            convs.map(|c| c.1).sum::<u64>()
        );
        assert!(report["parameters"]["count"].as_u64().unwrap() > 10_000);

        // MNN's int8 model of the same network: same ops, int8 weights, scales on tensors.
        let int8 = inspect_json(&root.join(format!("mnn_int8/{name}/KL_MAX_ABS.mnn")));
        assert_eq!(int8["quantization"]["quantized"], true, "{name}");
        assert!(int8["quantization"]["ptq_convolutions"].as_u64().unwrap() > 10);
        assert!(
            int8["quantization"]["tensors_with_quant_info"]
                .as_u64()
                .unwrap()
                > 10
        );
        assert_eq!(
            int8["quantization"]["weight_bits"]["8"],
            int8["quantization"]["ptq_convolutions"]
        );
        // Same number of weight values, far fewer bytes.
        assert!(int8["parameters"]["bytes"].as_u64() < report["parameters"]["bytes"].as_u64());
    }
}

#[test]
fn rewrite_round_trips_every_fixture_and_refuses_its_input() {
    let Some(root) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut paths: Vec<PathBuf> = ["efficientnet_lite0", "ppocr_det_v4", "ppocr_cls_v2"]
        .iter()
        .flat_map(|m| {
            [
                root.join(format!("models/{m}.mnn")),
                root.join(format!("mnn_int8/{m}/KL_MAX_ABS.mnn")),
            ]
        })
        .collect();
    paths.sort();
    for (i, path) in paths.iter().enumerate() {
        let out = dir.path().join(format!("{i}.mnn"));
        let status = mnnq(&["rewrite".as_ref(), path.as_os_str(), out.as_os_str()]);
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let original = Model::load(path).unwrap();
        let rewritten = Model::load(&out).unwrap();
        // Bit-exact comparison (NaN scales make f32 `==` useless): both serialize identically.
        assert!(
            original.to_bytes().unwrap() == rewritten.to_bytes().unwrap(),
            "{}",
            path.display()
        );
    }
    let copy = dir.path().join("0.mnn");
    let refused = mnnq(&["rewrite".as_ref(), copy.as_os_str(), copy.as_os_str()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refusing"));
    let missing = mnnq(&[
        "rewrite".as_ref(),
        dir.path().join("nope.mnn").as_os_str(),
        dir.path().join("x.mnn").as_os_str(),
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.mnn"));
    assert!(!dir.path().join("x.mnn").exists());
}

/// `mnnq rewrite --fold-affine` on the in-repo PP-OCR cls model: fewer ops, same function.
#[test]
fn rewrite_fold_affine_keeps_the_function() {
    let model =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/ppocr_cls_v2/model.mnn");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("folded.mnn");
    let status = mnnq(&[
        "rewrite".as_ref(),
        model.as_os_str(),
        out.as_os_str(),
        "--fold-affine".as_ref(),
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let original = Model::load(&model).unwrap();
    let folded = Model::load(&out).unwrap();
    let ops = |m: &Model| m.net.oplists.as_ref().map_or(0, Vec::len);
    assert!(
        ops(&folded) < ops(&original),
        "{} -> {}",
        ops(&original),
        ops(&folded)
    );
    let input: Vec<f32> = (0..3 * 48 * 192)
        .map(|i| (i as f32 * 0.013).sin())
        .collect();
    let run = |m: &Model| {
        let engine = mnnq_engine::Engine::from_model(m).unwrap();
        mnnq_quantize::fidelity::run_all(&engine, std::slice::from_ref(&input)).unwrap()[0]
            .iter()
            .map(|(_, t)| t.data.clone())
            .collect::<Vec<_>>()
    };
    let (a, b) = (run(&original), run(&folded));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() < 1e-5, "{p} vs {q}");
        }
    }
}
