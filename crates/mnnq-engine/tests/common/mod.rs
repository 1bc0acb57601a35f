//! Shared helpers of the engine's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The fixtures folder (`MNNQ_FIXTURES`, default `../shared/fixtures` next to the workspace), or
/// `None` after printing a loud `SKIPPED:` line.
pub fn fixtures(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("MNNQ_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
    if dir.join("golden").is_dir() {
        Some(dir)
    } else {
        println!("SKIPPED: {test}: fixtures not found at {}", dir.display());
        None
    }
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// (cosine, max abs error, max |reference|).
pub fn compare(got: &[f32], want: &[f32]) -> (f64, f64, f64) {
    assert_eq!(got.len(), want.len(), "length differs");
    let (mut dot, mut ng, mut nw, mut max_err, mut max_ref) =
        (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64, w as f64);
        dot += g * w;
        ng += g * g;
        nw += w * w;
        max_err = max_err.max((g - w).abs());
        max_ref = max_ref.max(w.abs());
    }
    let cos = if ng == 0.0 && nw == 0.0 {
        1.0
    } else {
        dot / (ng.sqrt() * nw.sqrt()).max(1e-300)
    };
    if got.iter().any(|v| v.is_nan()) {
        return (f64::NAN, f64::INFINITY, max_ref);
    }
    (cos, max_err, max_ref)
}

/// One golden sample of `golden/<model>/`: the input and MNN's outputs by name.
pub struct Sample {
    pub input_name: String,
    pub input: mnnq_engine::Tensor,
    pub outputs: Vec<(String, Vec<f32>)>,
}

/// The golden samples of `model` (inputs and MNN 3.6.1's outputs).
pub fn samples(root: &std::path::Path, model: &str) -> Vec<Sample> {
    let dir = root.join("golden").join(model);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let input_name = manifest["input_name"].as_str().unwrap().to_string();
    manifest["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let shape: Vec<usize> = s["input"]["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let data = read_f32(&dir.join(s["input"]["file"].as_str().unwrap()));
            let outputs = s["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o["name"].as_str().unwrap().to_string(),
                        read_f32(&dir.join(o["file"].as_str().unwrap())),
                    )
                })
                .collect();
            Sample {
                input_name: input_name.clone(),
                input: mnnq_engine::Tensor::new(shape, data),
                outputs,
            }
        })
        .collect()
}

/// The output named `name` of a run's outputs (panics naming the model when it is missing).
pub fn output_named<'a>(
    outputs: &'a [(String, mnnq_engine::Tensor)],
    model: &str,
    name: &str,
) -> &'a mnnq_engine::Tensor {
    outputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("{model}: no output {name}"))
}

/// Asserts that two runs (1 and 2 threads) gave the same output bytes.
pub fn assert_same_bytes(
    model: &str,
    one: &[(String, mnnq_engine::Tensor)],
    two: &[(String, mnnq_engine::Tensor)],
) {
    for ((name, t1), (_, t2)) in one.iter().zip(two) {
        let same = t1
            .data
            .iter()
            .zip(&t2.data)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{model} output {name}: 1 and 2 threads differ");
    }
}
