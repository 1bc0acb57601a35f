//! Our preprocessing against MNN 3.6.1's own `ImageProcess` output
//! (`fixtures/golden/preprocess/`, uint8 1xCxHxW before normalisation).

use std::path::PathBuf;

use mnnq_preprocess::{preprocess_batch, preprocess_image, Config, InputSpec};

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("MNNQ_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
    if dir.join("golden/preprocess/manifest.json").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: fixtures not found at {} (set MNNQ_FIXTURES)",
            dir.display()
        );
        None
    }
}

fn read_u8_npy(path: &std::path::Path) -> (Vec<u64>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<u8>().unwrap())
}

#[test]
fn matches_mnn_image_process_on_every_golden_sample() {
    let Some(root) = fixtures() else { return };
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("golden/preprocess/manifest.json")).unwrap(),
    )
    .unwrap();
    let entries = manifest.as_array().unwrap();
    assert!(!entries.is_empty());
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for entry in entries {
        let config_path = root.join(entry["config"].as_str().unwrap());
        let image = root.join(entry["image"].as_str().unwrap());
        let (reference_shape, reference) =
            read_u8_npy(&root.join(entry["output"].as_str().unwrap()));
        let (config, _warnings) = Config::from_file(&config_path).unwrap();
        let spec = InputSpec::from_config(&config).unwrap();
        assert_eq!(
            reference_shape,
            spec.shape().iter().map(|&d| d as u64).collect::<Vec<_>>()
        );
        let tensor = preprocess_image(&image, &config, &spec).unwrap();
        assert_eq!(tensor.len(), reference.len());
        let plane = spec.height * spec.width;
        let (mut equal, mut max_diff) = (0usize, 0i32);
        for (i, (&value, &expected)) in tensor.iter().zip(&reference).enumerate() {
            let c = i / plane;
            let sample = (value / config.normal[c] + config.mean[c]).round() as i32;
            let diff = (sample - i32::from(expected)).abs();
            if diff == 0 {
                equal += 1;
            }
            max_diff = max_diff.max(diff);
        }
        let percent = 100.0 * equal as f64 / reference.len() as f64;
        let line = format!(
            "{}: {equal}/{} identical ({percent:.4}%), max |diff| {max_diff}",
            entry["output"].as_str().unwrap(),
            reference.len()
        );
        eprintln!("{line}");
        if percent < 99.0 || max_diff > 1 {
            failures.push(line.clone());
        }
        report.push(line);
    }
    assert!(failures.is_empty(), "below the bar: {failures:#?}");
}

#[test]
fn parallel_batch_equals_sequential_in_file_order() {
    let Some(root) = fixtures() else { return };
    let (config, _) = Config::from_file(&root.join("configs/ppocr_cls_v2.json")).unwrap();
    let spec = InputSpec::from_config(&config).unwrap();
    let mut files = mnnq_preprocess::calibration_files(&config).unwrap();
    files.truncate(12);
    let parallel = preprocess_batch(&files, &config, &spec);
    for (path, result) in files.iter().zip(parallel) {
        let sequential = preprocess_image(path, &config, &spec).unwrap();
        let parallel = result.unwrap();
        let same_bits = sequential
            .iter()
            .zip(&parallel)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same_bits && sequential.len() == parallel.len(),
            "{}",
            path.display()
        );
    }
}

/// The float network inputs of `golden/<model>/` were made by MNN's own ImageProcess from
/// Pillow-decoded pixels; for PNG sources Pillow and stb agree, so our tensor must be
/// bit-identical there (this checks normalisation and layout on top of the 8-bit samples).
#[test]
fn float_inputs_bit_identical_to_mnn_for_png_sources() {
    let Some(root) = fixtures() else { return };
    let mut compared = 0;
    for model in ["efficientnet_lite0", "ppocr_det_v4", "ppocr_cls_v2"] {
        let folder = root.join("golden").join(model);
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join("manifest.json")).unwrap())
                .unwrap();
        let (config, _) =
            Config::from_file(&root.join(manifest["config"].as_str().unwrap())).unwrap();
        let spec = InputSpec::from_config(&config).unwrap();
        for sample in manifest["samples"].as_array().unwrap() {
            let image = sample["image"].as_str().unwrap();
            if !image.ends_with(".png") {
                continue;
            }
            let bytes =
                std::fs::read(folder.join(sample["input"]["file"].as_str().unwrap())).unwrap();
            let reference: Vec<u32> = bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let ours: Vec<u32> = preprocess_image(&root.join(image), &config, &spec)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert!(
                ours == reference,
                "{model} {image}: float input differs from MNN's"
            );
            compared += 1;
        }
    }
    assert!(compared >= 4, "only {compared} PNG samples found");
}
