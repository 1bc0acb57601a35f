//! `mnnq compare --json --sensitivity` on the in-repo PP-OCR cls model, quantized with the
//! defaults (a fresh clone has everything this needs).

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
fn sensitivity_ranks_every_scaled_tensor_largest_loss_first() {
    let data = repo().join("testdata/ppocr_cls_v2");
    let dir = tempfile::tempdir().unwrap();
    let quant = dir.path().join("cls.mnn");
    let model = data.join("model.mnn");
    let config = data.join("config_repo.json");
    let out = mnnq(&[
        "quantize".as_ref(),
        model.as_os_str(),
        quant.as_os_str(),
        config.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mnnq(&[
        "compare".as_ref(),
        model.as_os_str(),
        quant.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
        "--images".as_ref(),
        data.join("calib").as_os_str(),
        "--max-images".as_ref(),
        "3".as_ref(),
        "--json".as_ref(),
        "--sensitivity".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let losses: Vec<(String, f64)> = report["sensitivity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["loss"].as_f64().unwrap(),
            )
        })
        .collect();
    // Every tensor the simulation compares has a sensitivity entry.
    let simulated = report["tensors"].as_array().unwrap().len();
    assert!(
        losses.len() >= simulated && simulated > 40,
        "{} vs {simulated}",
        losses.len()
    );
    assert!(
        losses.windows(2).all(|w| w[0].1 >= w[1].1),
        "sorted, largest first"
    );
    assert!(losses.iter().all(|(_, l)| l.is_finite() && *l > -1e-9));
    assert!(losses[0].1 > 0.0, "rounding some tensor costs something");
}
