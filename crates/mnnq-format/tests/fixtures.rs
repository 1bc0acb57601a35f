//! Every `.mnn` fixture loads, and writing it back gives a structurally equal `Net`.

use std::path::PathBuf;

use mnnq_format::{Model, OpParameter, OpType};

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

fn fixture_models(root: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for sub in ["models", "mnn_int8"] {
        let mut stack = vec![root.join(sub)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "mnn") {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_fixture_model_loads_and_round_trips() {
    let Some(root) = fixtures() else { return };
    let models = fixture_models(&root);
    assert!(
        models.len() >= 6,
        "expected 3 float and 3 int8 models, found {models:?}"
    );
    for path in models {
        let model = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let ops = model.net.oplists.as_ref().unwrap();
        assert!(!ops.is_empty(), "{}", path.display());
        let bytes = model.to_bytes().unwrap();
        let again = Model::from_bytes(&bytes, "rewritten").unwrap();
        // MNN's int8 models contain NaN alphas, so `==` on f32 cannot be used: compare the
        // deterministic serialization of both (equal bytes <=> equal values, bit for bit).
        assert!(
            again.to_bytes().unwrap() == bytes,
            "{} changed on rewrite",
            path.display()
        );
        assert_eq!(again.net.oplists.as_ref().map(Vec::len), Some(ops.len()));
    }
}

#[test]
fn efficientnet_has_the_documented_ops() {
    let Some(root) = fixtures() else { return };
    let model = Model::load(root.join("models/efficientnet_lite0.mnn")).unwrap();
    let ops = model.net.oplists.as_ref().unwrap();
    assert_eq!(ops.len(), 79);
    let count = |t: OpType| ops.iter().filter(|op| op.type_ == t).count();
    assert_eq!(count(OpType::Convolution), 34);
    assert_eq!(count(OpType::ConvolutionDepthwise), 16);
    let input = ops.iter().find(|op| op.type_ == OpType::Input).unwrap();
    match &input.main {
        Some(OpParameter::Input(input)) => {
            assert_eq!(input.dims.as_deref(), Some(&[1, 3, 224, 224][..]))
        }
        other => panic!("Input op has parameter {other:?}"),
    }
}
