//! `mnnq quantize`'s check of the model it wrote, on the in-repo PP-OCR cls model (a fresh
//! clone has everything this needs).

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn mnnq(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mnnq"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn quantize_checks_the_written_model_and_reports_it() {
    let data = repo().join("testdata/ppocr_cls_v2");
    let dir = tempfile::tempdir().unwrap();
    let (model, config) = (data.join("model.mnn"), data.join("config_repo.json"));
    let quant = dir.path().join("cls.mnn");
    let report = dir.path().join("report.json");

    // Held-out images given: the check says so and the report carries its figures.
    let out = mnnq(&[
        "quantize".as_ref(),
        model.as_os_str(),
        quant.as_os_str(),
        config.as_os_str(),
        "--check".as_ref(),
        data.join("calib").as_os_str(),
        "--check-images".as_ref(),
        "3".as_ref(),
        "--report".as_ref(),
        report.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("check on 3 held-out image(s)"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let check = &json["check"];
    assert_eq!(check["images_from"], "held-out");
    assert_eq!(check["images"].as_array().unwrap().len(), 3);
    let output = &check["outputs"][0];
    assert_eq!(output["name"], "save_infer_model/scale_0.tmp_1");
    let cosine = output["cosine_mean"].as_f64().unwrap();
    assert!(cosine > 0.9 && cosine <= 1.0 + 1e-6, "{output}");

    // Without a folder: the first calibration images, labelled as not held out.
    let out = mnnq(&[
        "quantize".as_ref(),
        model.as_os_str(),
        quant.as_os_str(),
        config.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("check on 8 calibration image(s)") && stderr.contains("not a held-out"),
        "{stderr}"
    );

    // --no-check: no check line.
    let out = mnnq(&[
        "quantize".as_ref(),
        model.as_os_str(),
        quant.as_os_str(),
        config.as_os_str(),
        "--no-check".as_ref(),
    ]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("check on"));
}

#[test]
fn a_missing_check_folder_fails_before_anything_is_written() {
    let data = repo().join("testdata/ppocr_cls_v2");
    let dir = tempfile::tempdir().unwrap();
    let quant = dir.path().join("cls.mnn");
    let missing = dir.path().join("no_such_folder");
    let out = mnnq(&[
        "quantize".as_ref(),
        data.join("model.mnn").as_os_str(),
        quant.as_os_str(),
        data.join("config_repo.json").as_os_str(),
        "--check".as_ref(),
        missing.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no_such_folder"), "{stderr}");
    assert!(!quant.exists(), "nothing written");
}
