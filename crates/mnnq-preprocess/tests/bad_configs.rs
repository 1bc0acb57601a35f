//! Table-driven config checks: every bad config gives an error naming the config file and the
//! offending key; accepted oddities give a warning.

use std::path::{Path, PathBuf};

use mnnq_preprocess::{calibration_files, Config, FeatureMethod, ImageFormat, InputSpec};

/// Expected outcome of one config.
enum Expect {
    /// `Config::from_file` fails; the error names this key (None: no single key).
    ParseError(Option<&'static str>),
    /// Parses, but `InputSpec::from_config` fails naming this key.
    SpecError(&'static str),
    /// Parses with a warning containing this text, and the check holds.
    Warns(&'static str, fn(&Config) -> bool),
    /// Parses without warnings and the check holds.
    Accepts(fn(&Config) -> bool),
}

/// A 1x1 24-bit BMP, enough to make a folder non-empty.
fn tiny_bmp() -> Vec<u8> {
    let mut bmp = Vec::new();
    bmp.extend_from_slice(b"BM");
    bmp.extend_from_slice(&(58u32).to_le_bytes());
    bmp.extend_from_slice(&[0, 0, 0, 0]);
    bmp.extend_from_slice(&(54u32).to_le_bytes());
    bmp.extend_from_slice(&(40u32).to_le_bytes());
    bmp.extend_from_slice(&(1i32).to_le_bytes());
    bmp.extend_from_slice(&(1i32).to_le_bytes());
    bmp.extend_from_slice(&(1u16).to_le_bytes());
    bmp.extend_from_slice(&(24u16).to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    bmp.extend_from_slice(&[10, 20, 30, 0]);
    bmp
}

struct Workspace {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn workspace() -> Workspace {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::write(root.join("images/a.bmp"), tiny_bmp()).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("hidden_only/sub")).unwrap();
    std::fs::write(root.join("hidden_only/.a.bmp"), tiny_bmp()).unwrap();
    std::fs::write(root.join("a_file"), b"x").unwrap();
    std::fs::create_dir_all(root.join("configs")).unwrap();
    Workspace { _dir: dir, root }
}

/// A valid config with `patch` merged in (`null` removes a key).
fn config_text(images: &Path, patch: &str) -> String {
    let mut base = serde_json::json!({
        "format": "RGB",
        "mean": [127.0, 127.0, 127.0],
        "normal": [0.0078125, 0.0078125, 0.0078125],
        "width": 8,
        "height": 6,
        "path": images.to_str().unwrap(),
        "used_image_num": 0,
        "feature_quantize_method": "KL",
        "weight_quantize_method": "MAX_ABS"
    });
    let patch: serde_json::Value = serde_json::from_str(patch).unwrap();
    for (key, value) in patch.as_object().unwrap() {
        if value.is_null() {
            base.as_object_mut().unwrap().remove(key);
        } else {
            base[key] = value.clone();
        }
    }
    base.to_string()
}

#[test]
fn every_config_case_has_its_expected_outcome() {
    let ws = workspace();
    let images = ws.root.join("images");
    let with = |patch: &str| config_text(&images, patch);
    let cases: Vec<(&str, String, Expect)> = vec![
        ("not JSON", "{\"format\": ".into(), Expect::ParseError(None)),
        (
            "top level is a list",
            "[1, 2]".into(),
            Expect::ParseError(None),
        ),
        (
            "missing path",
            with(r#"{"path": null}"#),
            Expect::ParseError(Some("path")),
        ),
        (
            "path is a number",
            with(r#"{"path": 12}"#),
            Expect::ParseError(Some("path")),
        ),
        (
            "path does not exist",
            with(r#"{"path": "/nonexistent/mnnq/images"}"#),
            Expect::ParseError(Some("path")),
        ),
        (
            "path is a file",
            format!(
                "{{\"path\": {:?}, \"width\": 8, \"height\": 8}}",
                ws.root.join("a_file").to_str().unwrap()
            ),
            Expect::ParseError(Some("path")),
        ),
        (
            "empty folder",
            format!(
                "{{\"format\": \"RGB\", \"path\": {:?}}}",
                ws.root.join("empty").to_str().unwrap()
            ),
            Expect::ParseError(Some("path")),
        ),
        (
            "only dot-files and sub-folders",
            format!(
                "{{\"format\": \"RGB\", \"path\": {:?}}}",
                ws.root.join("hidden_only").to_str().unwrap()
            ),
            Expect::ParseError(Some("path")),
        ),
        (
            "unknown format",
            with(r#"{"format": "YUV"}"#),
            Expect::ParseError(Some("format")),
        ),
        (
            "format is a number",
            with(r#"{"format": 3}"#),
            Expect::ParseError(Some("format")),
        ),
        (
            "mean too short",
            with(r#"{"mean": [127, 127]}"#),
            Expect::ParseError(Some("mean")),
        ),
        (
            "single mean is not broadcast",
            with(r#"{"mean": [127]}"#),
            Expect::ParseError(Some("mean")),
        ),
        (
            "mean is a string",
            with(r#"{"mean": "127"}"#),
            Expect::ParseError(Some("mean")),
        ),
        (
            "normal holds a string",
            with(r#"{"normal": [1, "a", 1]}"#),
            Expect::ParseError(Some("normal")),
        ),
        (
            "GRAY with three means",
            with(r#"{"format": "GRAY"}"#),
            Expect::ParseError(Some("mean")),
        ),
        (
            "width zero",
            with(r#"{"width": 0}"#),
            Expect::ParseError(Some("width")),
        ),
        (
            "width fractional",
            with(r#"{"width": 224.5}"#),
            Expect::ParseError(Some("width")),
        ),
        (
            "width as string",
            with(r#"{"width": "224"}"#),
            Expect::ParseError(Some("width")),
        ),
        (
            "height negative",
            with(r#"{"height": -5}"#),
            Expect::ParseError(Some("height")),
        ),
        (
            "height absurd",
            with(r#"{"height": 1000000}"#),
            Expect::ParseError(Some("height")),
        ),
        (
            "unknown feature method",
            with(r#"{"feature_quantize_method": "MINMAX"}"#),
            Expect::ParseError(Some("feature_quantize_method")),
        ),
        (
            "unknown weight method",
            with(r#"{"weight_quantize_method": "KL"}"#),
            Expect::ParseError(Some("weight_quantize_method")),
        ),
        (
            "feature clamp too big",
            with(r#"{"feature_clamp_value": 200}"#),
            Expect::ParseError(Some("feature_clamp_value")),
        ),
        (
            "weight clamp zero",
            with(r#"{"weight_clamp_value": 0}"#),
            Expect::ParseError(Some("weight_clamp_value")),
        ),
        (
            "quant bits 16",
            with(r#"{"quant_bits": 16}"#),
            Expect::ParseError(Some("quant_bits")),
        ),
        (
            "crop above one",
            with(r#"{"center_crop_h": 1.5}"#),
            Expect::ParseError(Some("center_crop_h")),
        ),
        (
            "crop zero",
            with(r#"{"center_crop_w": 0}"#),
            Expect::ParseError(Some("center_crop_w")),
        ),
        (
            "negative image count",
            with(r#"{"used_image_num": -1}"#),
            Expect::ParseError(Some("used_image_num")),
        ),
        (
            "skip list holds a number",
            with(r#"{"skip_quant_op_names": ["conv1", 3]}"#),
            Expect::ParseError(Some("skip_quant_op_names")),
        ),
        (
            "debug as string",
            with(r#"{"debug": "yes"}"#),
            Expect::ParseError(Some("debug")),
        ),
        (
            "winogradOpt as number",
            with(r#"{"winogradOpt": 1}"#),
            Expect::ParseError(Some("winogradOpt")),
        ),
        (
            "unknown input type",
            with(r#"{"input_type": "video"}"#),
            Expect::ParseError(Some("input_type")),
        ),
        (
            "inputs entry without name",
            with(r#"{"inputs": [{"shape": [1, 3]}]}"#),
            Expect::ParseError(Some("inputs")),
        ),
        (
            "batch size zero",
            with(r#"{"batch_size": 0}"#),
            Expect::ParseError(Some("batch_size")),
        ),
        (
            "no width and no model",
            with(r#"{"width": null}"#),
            Expect::SpecError("width"),
        ),
        (
            "no height and no model",
            with(r#"{"height": null}"#),
            Expect::SpecError("height"),
        ),
        (
            "unknown key is kept",
            with(r#"{"target_cosine": 0.99}"#),
            Expect::Warns("target_cosine", |c| c.extra.contains_key("target_cosine")),
        ),
        (
            "documented but unread key",
            with(r#"{"model": "m.mnn"}"#),
            Expect::Warns("not read", |c| c.extra.contains_key("model")),
        ),
        (
            "missing format means BGR",
            with(r#"{"format": null}"#),
            Expect::Warns("BGR", |c| c.format == ImageFormat::Bgr),
        ),
        (
            "used_sample_num wins",
            with(r#"{"used_image_num": 5, "used_sample_num": 2}"#),
            Expect::Warns("used_sample_num", |c| c.used_sample_num == 2),
        ),
        (
            "4-bit clamps weights to 7",
            with(r#"{"quant_bits": 4}"#),
            Expect::Warns("quant_bits", |c| c.weight_clamp_value == 7),
        ),
        (
            "winogradOpt true without EMA",
            with(r#"{"winogradOpt": true}"#),
            Expect::Warns("EMA", |c| !c.winograd_opt),
        ),
        (
            "EMA parses with winograd on",
            with(r#"{"feature_quantize_method": "EMA"}"#),
            Expect::Accepts(|c| c.feature_quantize_method == FeatureMethod::Ema && c.winograd_opt),
        ),
        (
            "EMA with winogradOpt false",
            with(r#"{"feature_quantize_method": "EMA", "winogradOpt": false}"#),
            Expect::Accepts(|c| !c.winograd_opt),
        ),
        (
            "all MNN keys",
            with(
                r#"{"used_image_num": null, "used_sample_num": 1, "feature_clamp_value": 120, "weight_clamp_value": 100, "quant_bits": 8, "skip_quant_op_names": ["a"], "batch_size": 4, "center_crop_h": 0.875, "center_crop_w": 0.875, "input_type": "image", "inputs": [{"name": "x", "shape": [1, 3, 6, 8], "value": 0}], "debug": true, "winogradOpt": false}"#,
            ),
            Expect::Accepts(|c| {
                c.feature_clamp_value == 120
                    && c.weight_clamp_value == 100
                    && c.batch_size == Some(4)
                    && c.center_crop_h == 0.875
                    && c.debug
                    && c.inputs.len() == 1
                    && c.skip_quant_op_names == ["a"]
            }),
        ),
        (
            "integral float width",
            with(r#"{"width": 8.0}"#),
            Expect::Accepts(|c| c.width == Some(8)),
        ),
    ];
    assert!(cases.len() >= 20);

    let config_path = ws.root.join("configs/case.json");
    let mut failures = Vec::new();
    for (name, text, expect) in &cases {
        std::fs::write(&config_path, text).unwrap();
        let parsed = Config::from_file(&config_path);
        let outcome: Result<(), String> = (|| {
            let check_error =
                |error: &dyn std::fmt::Display, key: Option<&str>, got_key: Option<&str>| {
                    let message = error.to_string();
                    if !message.contains(config_path.to_str().unwrap()) {
                        return Err(format!("error does not name the config: {message}"));
                    }
                    if key.is_some() && got_key != key {
                        return Err(format!("expected key {key:?}, got {got_key:?}: {message}"));
                    }
                    if let Some(key) = key {
                        if !message.contains(key) {
                            return Err(format!("message does not name {key}: {message}"));
                        }
                    }
                    Ok(())
                };
            match expect {
                Expect::ParseError(key) => match &parsed {
                    Ok(_) => Err("parsed, expected an error".into()),
                    Err(e) => check_error(e, *key, e.key()),
                },
                Expect::SpecError(key) => {
                    let (config, _) = parsed.as_ref().map_err(|e| format!("parse failed: {e}"))?;
                    match InputSpec::from_config(config) {
                        Ok(spec) => Err(format!("built {spec:?}, expected an error")),
                        Err(e) => check_error(&e, Some(key), e.key()),
                    }
                }
                Expect::Warns(text, check) => {
                    let (config, warnings) =
                        parsed.as_ref().map_err(|e| format!("parse failed: {e}"))?;
                    if !warnings.iter().any(|w| w.message.contains(text)) {
                        return Err(format!("no warning containing {text:?}: {warnings:?}"));
                    }
                    if !check(config) {
                        return Err(format!("check failed on {config:?}"));
                    }
                    Ok(())
                }
                Expect::Accepts(check) => {
                    let (config, warnings) =
                        parsed.as_ref().map_err(|e| format!("parse failed: {e}"))?;
                    if !warnings.is_empty() {
                        return Err(format!("unexpected warnings {warnings:?}"));
                    }
                    if !check(config) {
                        return Err(format!("check failed on {config:?}"));
                    }
                    Ok(())
                }
            }
        })();
        if let Err(problem) = outcome {
            failures.push(format!("{name}: {problem}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn relative_path_falls_back_to_the_config_folder_and_its_parent() {
    let ws = workspace();
    // Relative to the config's parent folder (as the shared fixtures' configs are).
    let config_path = ws.root.join("configs/rel.json");
    std::fs::write(
        &config_path,
        r#"{"format": "RGB", "width": 4, "height": 4, "path": "images/"}"#,
    )
    .unwrap();
    let (config, warnings) = Config::from_file(&config_path).unwrap();
    assert_eq!(config.path, ws.root.join("images/"));
    assert!(config.path.is_dir());
    assert!(warnings
        .iter()
        .any(|w| w.message.contains("working directory")));
    assert_eq!(calibration_files(&config).unwrap().len(), 1);
}

#[test]
fn file_list_is_sorted_bytewise_and_limited_to_the_first_n() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("imgs");
    std::fs::create_dir_all(images.join("sub.bmp")).unwrap();
    for name in [
        "b.bmp",
        "B.bmp",
        "a10.bmp",
        "a2.bmp",
        ".hidden.bmp",
        "_x.bmp",
    ] {
        std::fs::write(images.join(name), tiny_bmp()).unwrap();
    }
    let config_path = dir.path().join("c.json");
    let write = |limit: usize| {
        std::fs::write(
            &config_path,
            config_text(&images, &format!("{{\"used_image_num\": {limit}}}")),
        )
        .unwrap();
        Config::from_file(&config_path).unwrap().0
    };
    let names = |files: Vec<PathBuf>| -> Vec<String> {
        files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    // Byte order: uppercase before '_' before lowercase; digits compare as characters.
    assert_eq!(
        names(calibration_files(&write(0)).unwrap()),
        ["B.bmp", "_x.bmp", "a10.bmp", "a2.bmp", "b.bmp"]
    );
    assert_eq!(
        names(calibration_files(&write(2)).unwrap()),
        ["B.bmp", "_x.bmp"]
    );
}

#[test]
fn model_input_hook_fills_missing_sizes_and_checks_channels() {
    use mnnq_preprocess::Layout;
    let ws = workspace();
    let images = ws.root.join("images");
    let config_path = ws.root.join("configs/model.json");
    let load = |patch: &str| {
        std::fs::write(&config_path, config_text(&images, patch)).unwrap();
        Config::from_file(&config_path).unwrap().0
    };
    // Size missing from the config: taken from the model (NHWC dims are [n, h, w, c]).
    let config = load(r#"{"width": null, "height": null}"#);
    let (spec, warnings) =
        InputSpec::for_model_input(&config, "x", Layout::Nhwc, &[1, 48, 192, 3]).unwrap();
    assert_eq!((spec.height, spec.width, spec.channels), (48, 192, 3));
    assert_eq!(spec.shape(), [1, 48, 192, 3]);
    assert!(warnings.is_empty());
    // Neither config nor model gives the width.
    let error =
        InputSpec::for_model_input(&config, "x", Layout::Nchw, &[1, 3, 48, -1]).unwrap_err();
    assert_eq!(error.key(), Some("width"));
    // Config wins over a different model size, with a warning (MNN resizes the input).
    let config = load("{}");
    let (spec, warnings) =
        InputSpec::for_model_input(&config, "x", Layout::Nchw, &[1, 3, 224, 224]).unwrap();
    assert_eq!((spec.height, spec.width), (6, 8));
    assert_eq!(warnings.len(), 2);
    // A model with 1 channel cannot take RGB.
    let error = InputSpec::for_model_input(&config, "x", Layout::Nchw, &[1, 1, 6, 8]).unwrap_err();
    assert_eq!(error.key(), Some("format"));
    // Not a 4-D input.
    assert!(InputSpec::for_model_input(&config, "x", Layout::Nchw, &[1, 128]).is_err());
}

#[test]
fn folder_emptied_after_parsing_is_reported_by_the_file_list() {
    let ws = workspace();
    let images = ws.root.join("images");
    let config_path = ws.root.join("configs/later.json");
    std::fs::write(&config_path, config_text(&images, "{}")).unwrap();
    let (config, _) = Config::from_file(&config_path).unwrap();
    std::fs::remove_file(images.join("a.bmp")).unwrap();
    let error = calibration_files(&config).unwrap_err();
    assert_eq!(error.key(), Some("path"));
    assert!(error.to_string().contains(config_path.to_str().unwrap()));
}
