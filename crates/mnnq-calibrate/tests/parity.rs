//! compare_scales against MNN's real scale reports.

mod common;

use std::collections::HashMap;

use mnnq_calibrate::*;

#[test]
fn identical_and_perturbed_scales() {
    let Some(fixtures) = common::fixtures("identical_and_perturbed_scales") else {
        return;
    };
    for model in ["efficientnet_lite0", "ppocr_det_v4", "ppocr_cls_v2"] {
        let path = fixtures.join(format!("mnn_int8/{model}/KL_MAX_ABS.mnn.json"));
        let mnn = read_mnn_scales(&path).unwrap();
        assert!(mnn.len() > 50, "{model}: {} tensors", mnn.len());
        let ours: HashMap<TensorId, f32> = mnn.iter().map(|(&t, &s)| (t, s)).collect();
        let report = compare_scales(&ours, &path).unwrap();
        assert_eq!(report.within_tolerance, report.mnn_tensors);
        assert_eq!(report.share_within(), 1.0);
        println!(
            "{model}: {} tensors with a scale, {} with scale 0",
            report.mnn_tensors,
            report.mnn_zero_scale.len()
        );

        // Every 4th tensor 2% off, every 4th+1 0.5% off, every 4th+2 missing, one extra.
        let mut perturbed = HashMap::new();
        let mut expected_within = 0;
        let mut expected_mismatch = 0;
        for (k, (&t, &s)) in mnn.iter().filter(|(_, &s)| s != 0.0).enumerate() {
            match k % 4 {
                0 => {
                    perturbed.insert(t, s * 1.02);
                    expected_mismatch += 1;
                }
                1 => {
                    perturbed.insert(t, s * 0.995);
                    expected_within += 1;
                }
                2 => {}
                _ => {
                    perturbed.insert(t, s);
                    expected_within += 1;
                }
            }
        }
        perturbed.insert(1_000_000, 1.0);
        let report = compare_scales(&perturbed, &path).unwrap();
        assert_eq!(report.within_tolerance, expected_within);
        assert_eq!(report.mismatches.len(), expected_mismatch);
        assert_eq!(report.compared, expected_within + expected_mismatch);
        assert_eq!(
            report.missing_in_ours.len(),
            report.mnn_tensors - report.compared
        );
        assert_eq!(report.extra_in_ours, vec![1_000_000]);
        assert!(report.mismatches[0].relative_difference > 0.019);
    }
}

#[test]
fn malformed_reports_name_the_file() {
    let dir = std::env::temp_dir().join(format!("mnnq-calibrate-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("not_json.json", "{ nope"),
        (
            "two_scales.json",
            r#"[{"name":"a","outputs":[{"tensorIndex":1,"scales":[1,2]}]}]"#,
        ),
        (
            "negative.json",
            r#"[{"name":"a","outputs":[{"tensorIndex":-1,"scales":[1]}]}]"#,
        ),
        (
            "conflict.json",
            r#"[{"name":"a","outputs":[{"tensorIndex":1,"scales":[1]}]},
                {"name":"b","inputs":[{"tensorIndex":1,"scales":[2]}]}]"#,
        ),
    ];
    for (name, text) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let message = compare_scales(&HashMap::new(), &path)
            .unwrap_err()
            .to_string();
        assert!(message.contains(name), "{message}");
    }
    let missing = dir.join("absent.json");
    assert!(compare_scales(&HashMap::new(), &missing)
        .unwrap_err()
        .to_string()
        .contains("absent.json"));
    std::fs::remove_dir_all(&dir).unwrap();
}
