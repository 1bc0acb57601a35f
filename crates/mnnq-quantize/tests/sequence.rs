//! `"input_type": "sequence"` calibration: sample folders of `<inputName>.txt` / `.npy` files
//! (as mnnq-preprocess reads them), or one `.npy` file per sample for a one-input model.

use std::path::{Path, PathBuf};

use mnnq_calibrate::{scale_from_threshold, MAX_THRESHOLD};
use mnnq_format::Model;
use mnnq_preprocess::{calibration_files, preprocess_image, write_npy_f32, Config, InputSpec};
use mnnq_quantize::plan::tensor_names;
use mnnq_quantize::{quantize, QuantizeOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("MNNQ_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/fixtures"));
    if dir.join("images/textline").is_dir() {
        Some(dir)
    } else {
        println!(
            "SKIPPED: {test}: fixtures not found at {} (set MNNQ_FIXTURES)",
            dir.display()
        );
        None
    }
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

/// Text the way MNN's sequence files hold numbers; printing the f64 widening of each f32
/// makes the f64 parse and f32 rounding give back the same f32.
fn write_txt(path: &Path, data: &[f32]) {
    let text: Vec<String> = data.iter().map(|&x| format!("{}", f64::from(x))).collect();
    std::fs::write(path, text.join(" ")).unwrap();
}

/// A two-input model (y = a + b, all [1, 4, 5, 6]) calibrated from three sample folders, `a`
/// as text and `b` as .npy. Each tensor is small (5 x 6 < 100), so MNN's MAX threshold
/// applies and its scale follows from max |x| over all samples, computed here directly.
#[test]
fn two_input_model_calibrates_from_sample_folders() {
    let model = repo().join("crates/mnnq-engine/tests/conformance/add_same_shape/model.mnn");
    if !model.is_file() {
        println!("SKIPPED: {} not found", model.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples");
    let shape = [1usize, 4, 5, 6];
    let mut all = [Vec::new(), Vec::new(), Vec::new()];
    for k in 0..3usize {
        let folder = samples.join(format!("sample{k}"));
        std::fs::create_dir_all(&folder).unwrap();
        // The largest |a| is in sample 2 and the largest |b| in sample 0, so every sample
        // must have been used for the scales to come out right.
        let a: Vec<f32> = (0..120)
            .map(|i| ((i * 7 + k * 3) % 23) as f32 * 0.173 * (1.0 + k as f32) - 1.9)
            .collect();
        let b: Vec<f32> = (0..120)
            .map(|i| ((i * 11 + k) % 19) as f32 * -0.31 / (1.0 + k as f32) + 0.7)
            .collect();
        let y: Vec<f32> = a.iter().zip(&b).map(|(x, z)| x + z).collect();
        write_txt(&folder.join("a.txt"), &a);
        write_npy_f32(&folder.join("b.npy"), &shape, &b).unwrap();
        all[0].extend(a);
        all[1].extend(b);
        all[2].extend(y);
    }
    let config = dir.path().join("config.json");
    write_json(
        &config,
        &serde_json::json!({
            "input_type": "sequence",
            "path": samples.display().to_string(),
            "feature_quantize_method": "KL",
            "weight_quantize_method": "MAX_ABS",
        }),
    );
    let out = dir.path().join("q.mnn");
    let report = quantize(&model, &out, &config, &QuantizeOptions::default()).unwrap();
    assert_eq!(report.images_used, 3);
    assert!(report.images_skipped.is_empty());

    let names = tensor_names(&Model::load(&model).unwrap().net);
    let id = |name: &str| *names.iter().find(|(_, n)| n.as_str() == name).unwrap().0;
    for (name, values) in ["a", "b", "y"].iter().zip(&all) {
        let max_abs = values.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let expected = scale_from_threshold(MAX_THRESHOLD, 2048.0 / max_abs, 127.0);
        assert_eq!(
            report.scales.get(&id(name)),
            Some(&expected),
            "tensor {name}"
        );
    }
    assert!(out.is_file());

    // Per-pass wall times are in the summary and in the `--report` JSON.
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "load",
        "range_pass",
        "histogram_pass",
        "scales",
        "rewrite_and_write",
        "total",
    ] {
        let seconds = json["seconds"][key].as_f64();
        assert!(seconds.is_some_and(|s| s >= 0.0), "seconds.{key}: {json}");
    }
    assert!(report.summary().contains("range pass"));
    assert!(report.summary().contains("histogram pass"));
}

/// The same images fed as preprocessed `.npy` tensors (one file per sample, and one folder
/// holding `<inputName>.txt`) give the very same int8 model and scale file as image
/// calibration.
#[test]
fn sequence_of_preprocessed_images_equals_image_calibration() {
    let Some(fixtures) = fixtures("sequence_of_preprocessed_images_equals_image_calibration")
    else {
        return;
    };
    let model = repo().join("testdata/ppocr_cls_v2/model.mnn");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixtures.join("configs/ppocr_cls_v2.json")).unwrap();
    let mut image_config: serde_json::Value = serde_json::from_str(&text).unwrap();
    image_config["path"] = fixtures
        .join("images/textline")
        .display()
        .to_string()
        .into();
    image_config["used_image_num"] = 5.into();
    let image_config_path = dir.path().join("image.json");
    write_json(&image_config_path, &image_config);

    let (config, _) = Config::from_file(&image_config_path).unwrap();
    let spec = InputSpec::from_config(&config).unwrap();
    let input_name = mnnq_engine::Engine::load(&model).unwrap().input_shapes()[0]
        .0
        .clone();
    let samples = dir.path().join("samples");
    std::fs::create_dir_all(&samples).unwrap();
    for (k, image) in calibration_files(&config).unwrap().iter().enumerate() {
        let data = preprocess_image(image, &config, &spec).unwrap();
        if k == 1 {
            // A sample folder with the input as text.
            let folder = samples.join(format!("s{k}"));
            std::fs::create_dir_all(&folder).unwrap();
            write_txt(&folder.join(format!("{input_name}.txt")), &data);
        } else {
            write_npy_f32(&samples.join(format!("s{k}.npy")), &spec.shape(), &data).unwrap();
        }
    }
    let mut sequence_config = image_config.clone();
    sequence_config["input_type"] = "sequence".into();
    sequence_config["path"] = samples.display().to_string().into();
    let sequence_config_path = dir.path().join("sequence.json");
    write_json(&sequence_config_path, &sequence_config);

    let options = QuantizeOptions::default();
    let from_images = dir.path().join("images.mnn");
    let from_sequence = dir.path().join("sequence.mnn");
    quantize(&model, &from_images, &image_config_path, &options).unwrap();
    let report = quantize(&model, &from_sequence, &sequence_config_path, &options).unwrap();
    assert_eq!(report.images_used, 5);
    assert_eq!(
        std::fs::read(&from_images).unwrap(),
        std::fs::read(&from_sequence).unwrap()
    );
    let scale_file = |p: &Path| std::fs::read(format!("{}.json", p.display())).unwrap();
    assert_eq!(scale_file(&from_images), scale_file(&from_sequence));
}

/// A sample without the file an input needs is skipped with a message naming it.
#[test]
fn a_sample_missing_an_input_is_skipped_and_named() {
    let model = repo().join("crates/mnnq-engine/tests/conformance/add_same_shape/model.mnn");
    if !model.is_file() {
        println!("SKIPPED: {} not found", model.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples");
    for (k, inputs) in [["a", "b"].as_slice(), ["a"].as_slice()].iter().enumerate() {
        let folder = samples.join(format!("s{k}"));
        std::fs::create_dir_all(&folder).unwrap();
        for name in inputs.iter() {
            write_txt(&folder.join(format!("{name}.txt")), &[0.5; 120]);
        }
    }
    let config = dir.path().join("config.json");
    write_json(
        &config,
        &serde_json::json!({ "input_type": "sequence", "path": samples.display().to_string() }),
    );
    let report = quantize(
        &model,
        &dir.path().join("q.mnn"),
        &config,
        &QuantizeOptions::default(),
    )
    .unwrap();
    assert_eq!(report.images_used, 1);
    assert_eq!(report.images_skipped.len(), 1);
    let skipped = &report.images_skipped[0];
    assert!(skipped.path.ends_with("s1"), "{skipped:?}");
    assert!(skipped.reason.contains("b.txt"), "{}", skipped.reason);
}
