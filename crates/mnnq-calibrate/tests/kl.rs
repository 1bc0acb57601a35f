//! KL histogram, threshold search and scale formula: hand-computed cases, an independent f32
//! reference (kl_reference.py, numbers pasted below) and MNN's own scales for real tensors.

mod common;

use mnnq_calibrate::*;

fn histogram_from_counts(max_abs: f32, counts: Vec<u64>) -> AbsHistogram {
    AbsHistogram::from_counts(max_abs, counts)
        .unwrap()
        .expect("valid range")
}

#[test]
fn range_starts_like_mnn_and_ignores_nan() {
    let mut range = RangeStats::new();
    assert_eq!((range.min, range.max), (100_000.0, -100_000.0));
    range.update(&[0.5, f32::NAN, -2.0, 1.5]);
    assert_eq!((range.min, range.max), (-2.0, 1.5));
    assert_eq!(range.max_abs(), 2.0);
    // MNN quirk kept: values all above 1e5 never lower the initial min.
    let mut big = RangeStats::new();
    big.update(&[2e5, 3e5]);
    assert_eq!((big.min, big.max), (100_000.0, 3e5));
}

#[test]
fn invalid_tensors_get_no_histogram() {
    let mut zeros = RangeStats::new();
    zeros.update(&[0.0; 16]);
    assert!(AbsHistogram::for_range(&zeros).is_none());
    let mut tiny = RangeStats::new();
    tiny.update(&[1e-5, -1e-5]); // max_abs == 1e-5 is still invalid (strict >)
    assert!(AbsHistogram::for_range(&tiny).is_none());
    let mut small = RangeStats::new();
    small.update(&[2e-5]);
    assert!(AbsHistogram::for_range(&small).is_some());
}

#[test]
fn binning_matches_mnn_by_hand() {
    let mut range = RangeStats::new();
    range.update(&[-2.0, 1.0]);
    let h = AbsHistogram::for_range(&range).unwrap();
    assert_eq!(h.interval(), 1024.0);
    assert_eq!(h.bin_of(0.5), Some(512));
    assert_eq!(h.bin_of(-1.5), Some(1536));
    assert_eq!(h.bin_of(2.0), Some(2047)); // 2048 capped at the last bin
    assert_eq!(h.bin_of(0.0), None);
    // The skip test is |x| <= 1e-6 in double: 1e-6f32 is 9.99999997e-7 < 1e-6 (skipped), the
    // next f32 up is above it (counted, bin 0).
    assert_eq!(h.bin_of(1e-6), None);
    let just_above = f32::from_bits(1e-6f32.to_bits() + 1);
    assert!(f64::from(just_above) > 1e-6);
    assert_eq!(h.bin_of(just_above), Some(0));
    assert_eq!(h.bin_of(f32::NAN), None);

    // interval = 2048/3 rounds to 682.6667f32; 3.0 * interval = 2048.0001 -> capped, and
    // 1.5 * interval = 1024.00005 -> 1024 in f32.
    let mut range3 = RangeStats::new();
    range3.update(&[3.0]);
    let h3 = AbsHistogram::for_range(&range3).unwrap();
    assert_eq!(h3.interval(), 682.666_7_f32);
    assert_eq!(h3.bin_of(3.0), Some(2047));
    assert_eq!(h3.bin_of(1.5), Some(1024));
    // 0.0014648438 = 1/682.6667 rounded: the f32 product lands just below 1.0 -> bin 0.
    let x = 1.0f32 / h3.interval();
    let product = x * h3.interval();
    assert_eq!(h3.bin_of(x), Some(product as usize));
}

#[test]
fn histogram_counts_and_merges_exactly() {
    let mut range = RangeStats::new();
    range.update(&[-4.0, 4.0]);
    let mut whole = AbsHistogram::for_range(&range).unwrap();
    let mut first = whole.clone();
    let mut second = whole.clone();
    let a = [0.1f32, -0.1, 3.99, 4.0, 0.0, 1e-7, f32::NAN];
    let b = [2.0f32, -2.0, 0.1];
    whole.add_slice(&a);
    whole.add_slice(&b);
    first.add_slice(&a);
    second.add_slice(&b);
    second.merge(&first).unwrap();
    assert_eq!(second, whole);
    let counts = whole.counts();
    assert_eq!(counts[51], 3); // 0.1 * 512 = 51.2
    assert_eq!(counts[1024], 2);
    assert_eq!(counts[2042] + counts[2047], 2); // 3.99 * 512 = 2042.88, 4.0 -> capped
    assert_eq!(counts.iter().sum::<u64>(), 7);
    assert_eq!(whole.nan_count(), 1);

    let mut other_range = RangeStats::new();
    other_range.update(&[5.0]);
    let other = AbsHistogram::for_range(&other_range).unwrap();
    assert!(whole.merge(&other).is_err());
}

#[test]
fn mnn_bin_value_follows_f32_accumulation_and_saturates() {
    // Direct simulation of MNN's `bin += 1.0f` from 1e-7f, checked at every count up to
    // past 2^24.
    let mut value = 1.0e-7f32;
    let mut count = 0u64;
    assert_eq!(mnn_bin_value(0), value);
    while count < (1 << 24) + 8 {
        value += 1.0;
        count += 1;
        if count < 8 || count.is_multiple_of(4099) || count > (1 << 24) - 8 {
            assert_eq!(
                mnn_bin_value(count).to_bits(),
                value.to_bits(),
                "count {count}"
            );
        }
    }
    assert_eq!(mnn_bin_value(1), 1.000_000_1);
    assert_eq!(mnn_bin_value(2), 2.0);
    assert_eq!(mnn_bin_value(1 << 24), 16_777_216.0);
    assert_eq!(mnn_bin_value(39_000_000), 16_777_216.0);
}

#[test]
fn scale_formula_by_hand() {
    // (t + 0.5) / interval / clamp in double, rounded once to f32.
    assert_eq!(
        scale_from_threshold(2047, 2048.0, 127.0),
        (2047.5f64 / 2048.0 / 127.0) as f32
    );
    assert_eq!(
        scale_from_threshold(128, 512.0, 127.0),
        (128.5f64 / 512.0 / 127.0) as f32
    );
    // MAX method on max_abs = 4: 2047.5 * 4 / 2048 / 127.
    let h = histogram_from_counts(4.0, vec![1; HISTOGRAM_BINS]);
    let max = kl_feature_scale(&h, ThresholdMethod::Max, 127.0);
    assert_eq!(max.threshold, 2047);
    assert_eq!(max.scale, (2047.5f64 * 4.0 / 2048.0 / 127.0) as f32);
}

#[test]
fn small_tensor_rule() {
    assert!(small_tensor_uses_max(&[1, 1280, 7, 7], false)); // 49 < 100
    assert!(!small_tensor_uses_max(&[1, 32, 10, 10], false)); // 100 is not < 100
    assert!(small_tensor_uses_max(&[1, 1000], false)); // missing extents read 0
    assert!(small_tensor_uses_max(&[1, 9, 11, 64], true)); // NHWC: w = dim 2, h = dim 1
    assert!(!small_tensor_uses_max(&[1, 10, 10, 3], true));
}

/// A KL case: counts per bin, max |x|, and what kl_reference.py printed (the scale is the
/// f32 result printed as the exact f64 it widens to).
fn check_reference_case(name: &str, counts: Vec<u64>, max_abs: f32, threshold: usize, scale: f64) {
    let h = histogram_from_counts(max_abs, counts);
    let got = kl_feature_scale(&h, ThresholdMethod::Kl, 127.0);
    assert_eq!(got.threshold, threshold, "{name}: threshold");
    assert_eq!(f64::from(got.scale), scale, "{name}: scale");
}

fn counts_from(f: impl Fn(f64) -> f64) -> Vec<u64> {
    (0..HISTOGRAM_BINS).map(|b| f(b as f64) as u64).collect()
}

// Numbers from `kl_reference.py` (numpy float32 emulation written from the doc, run once).
#[test]
fn kl_reference_three_spikes() {
    let mut counts = vec![0u64; HISTOGRAM_BINS];
    counts[10] = 5000;
    counts[500] = 300;
    counts[1500] = 7;
    check_reference_case(
        "three_spikes",
        counts,
        3.0,
        128,
        0.001_482_145_045_883_953_6,
    );
}

#[test]
fn kl_reference_exponential() {
    let counts = counts_from(|b| 100_000.0 * (-b / 150.0).exp());
    check_reference_case("exponential", counts, 6.0, 1624, 0.037_474_624_812_603);
}

#[test]
fn kl_reference_head_and_far_tail() {
    let mut counts = vec![0u64; HISTOGRAM_BINS];
    for (b, c) in counts.iter_mut().enumerate().take(100) {
        *c = 1000 - 7 * b as u64;
    }
    counts[2047] = 3;
    check_reference_case(
        "head_and_far_tail",
        counts,
        1.5,
        128,
        0.000_741_072_522_941_976_8,
    );
}

#[test]
fn kl_reference_flat() {
    check_reference_case(
        "flat",
        vec![50; HISTOGRAM_BINS],
        0.75,
        2047,
        0.005_904_069_636_017_084,
    );
}

/// The graph input of each fixture model, rebuilt exactly from MNN's own preprocessing of all
/// calibration images (tests/input_values.py), through our range, histogram and KL code, must
/// give the scale MNN's quantized.out reported for that tensor.
///
/// Finding: MNN 3.6.1 does NOT apply its MAX rule to the graph input (the override looks the
/// tensor up by a pointer that does not match): the reported input scales are KL scales
/// (threshold 2034 for EfficientNet-Lite0), and the MAX scale would miss by > 0.6%.
#[test]
fn graph_input_scale_matches_mnn() {
    let Some(fixtures) = common::fixtures("graph_input_scale_matches_mnn") else {
        return;
    };
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for (model, input_name) in [
        ("efficientnet_lite0", "input"),
        ("ppocr_det_v4", "x"),
        ("ppocr_cls_v2", "x"),
    ] {
        let values: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(data.join(format!("{model}_input_values.json"))).unwrap(),
        )
        .unwrap();
        let pairs: Vec<(f32, u64)> = values["values"]
            .as_array()
            .unwrap()
            .iter()
            .zip(values["counts"].as_array().unwrap())
            .map(|(v, c)| (v.as_f64().unwrap() as f32, c.as_u64().unwrap()))
            .collect();
        let stream = |visit: &mut dyn FnMut(&[f32])| {
            for &(value, count) in &pairs {
                visit(&vec![value; count as usize]);
            }
        };
        let mut range = RangeStats::new();
        stream(&mut |chunk| range.update(chunk));
        let mut histogram = AbsHistogram::for_range(&range).unwrap();
        stream(&mut |chunk| histogram.add_slice(chunk));
        let kl = kl_feature_scale(&histogram, ThresholdMethod::Kl, 127.0);
        let max = kl_feature_scale(&histogram, ThresholdMethod::Max, 127.0);

        let report_path = fixtures.join(format!("mnn_int8/{model}/KL_MAX_ABS.mnn.json"));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
        let input_op = report
            .as_array()
            .unwrap()
            .iter()
            .find(|op| op["name"] == input_name)
            .unwrap();
        let tensor = &input_op["outputs"][0];
        let mnn_scale = tensor["scales"][0].as_f64().unwrap() as f32;
        println!(
            "{model}: max_abs {} threshold {} scale {} (MNN {mnn_scale}, MAX would be {})",
            range.max_abs(),
            kl.threshold,
            kl.scale,
            max.scale
        );
        assert_eq!(kl.scale, mnn_scale, "{model}: KL scale of the graph input");
        assert!(
            (max.scale / mnn_scale - 1.0).abs() > 0.005,
            "{model}: MAX is distinguishable"
        );

        let ours = std::collections::HashMap::from([(
            tensor["tensorIndex"].as_u64().unwrap() as TensorId,
            kl.scale,
        )]);
        let parity = compare_scales(&ours, &report_path).unwrap();
        assert_eq!(parity.compared, 1);
        assert_eq!(parity.within_tolerance, 1);
    }
}

#[test]
fn kl_reference_two_bumps() {
    // MNN's Q-from-unfolded-p matters here: the TensorRT variant picks 128 (kl_reference.py).
    let counts = counts_from(|b| {
        2000.0 * (-((b - 400.0) / 120.0).powi(2)).exp()
            + 300.0 * (-((b - 1200.0) / 200.0).powi(2)).exp()
    });
    check_reference_case("two_bumps", counts, 4.0, 1678, 0.025_813_546_031_713_486);
}

#[test]
fn kl_reference_half_normal() {
    // Also 128 under the TensorRT variant (kl_reference.py).
    let counts = counts_from(|b| 50_000.0 * (-(b / 500.0).powi(2) / 2.0).exp());
    check_reference_case("half_normal", counts, 2.5, 2047, 0.019_680_233_672_261_238);
    let start = std::time::Instant::now();
    let h = histogram_from_counts(
        2.5,
        counts_from(|b| 50_000.0 * (-(b / 500.0).powi(2) / 2.0).exp()),
    );
    let _ = kl_feature_scale(&h, ThresholdMethod::Kl, 127.0);
    println!("one KL search: {:?}", start.elapsed());
}
