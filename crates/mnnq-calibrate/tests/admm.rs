//! Feature ADMM on the streaming histogram against the exact all-data iteration.

mod common;

use common::TestRng;
use mnnq_calibrate::*;

fn streamed(data: &[f32], bins: usize, images: usize) -> AdmmResult {
    let mut range = RangeStats::new();
    for image in data.chunks(data.len().div_ceil(images)) {
        range.update(image);
    }
    let mut histogram = AdmmHistogram::for_range(&range, bins).unwrap().unwrap();
    for image in data.chunks(data.len().div_ceil(images)) {
        let mut partial = AdmmHistogram::for_range(&range, bins).unwrap().unwrap();
        partial.add_slice(image);
        histogram.merge(&partial).unwrap();
    }
    histogram
        .admm_scale(&AdmmOptions::default())
        .unwrap()
        .unwrap()
}

fn exact(data: &[f32]) -> f64 {
    let max_abs = data.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    admm_scale_exact(data, 127.0, f64::from(max_abs) / (127.0 * 2.5), 300).unwrap()
}

fn check(name: &str, data: &[f32]) {
    let want = exact(data);
    for bins in [DEFAULT_ADMM_BINS, 1 << 16, 1 << 12] {
        let got = streamed(data, bins, 7);
        let relative = (f64::from(got.scale) / want - 1.0).abs();
        println!(
            "{name}: bins {bins}: histogram {} exact {want} rel {relative:.2e} iterations {} converged {}",
            got.scale, got.iterations, got.converged
        );
        // The brief's bar is 0.5%; measured < 0.07% at 4096 bins and < 0.01% at the default.
        assert!(
            relative < 0.001,
            "{name}: bins {bins}: {} vs {want}",
            got.scale
        );
        // The reported error is the error at that scale.
        let direct = quantization_error(data, f64::from(got.scale), 127.0) / data.len() as f64;
        assert!(
            (got.mean_squared_error / direct - 1.0).abs() < 0.02,
            "{name}: error {} vs {direct}",
            got.mean_squared_error
        );
    }
}

#[test]
fn histogram_admm_matches_exact_on_gaussian() {
    let mut rng = TestRng::new(1);
    let data: Vec<f32> = (0..200_000).map(|_| rng.normal() as f32).collect();
    check("gaussian", &data);
}

#[test]
fn histogram_admm_matches_exact_on_relu_laplace() {
    let mut rng = TestRng::new(2);
    let data: Vec<f32> = (0..200_000)
        .map(|_| (rng.laplace() * 0.3).max(0.0) as f32)
        .collect();
    check("relu_laplace", &data);
}

#[test]
fn histogram_admm_matches_exact_with_outliers() {
    // Heavy tail: a few huge values make max_abs far larger than the useful range, so the
    // scale ends far below max_abs / 127 and few bins span a quantization step.
    let mut rng = TestRng::new(3);
    let mut data: Vec<f32> = (0..200_000).map(|_| rng.normal() as f32).collect();
    for k in 0..20 {
        data[k * 9973] = 40.0 + k as f32;
    }
    check("outliers", &data);
}

#[test]
fn admm_by_hand() {
    // Values 1, 2, ..., 127 and one 254: starting at alpha = 254 / (127 * 2.5) = 0.8, the
    // iteration moves alpha to where the equation alpha = sum(qx)/sum(q^2) holds; with data
    // exactly on a grid of step 1 plus 254 (which clamps), alpha = 1 is a fixed point:
    // codes 1..127 for 1..127 and 127 for 254 give sum(qx) = S + 127*254, sum(q^2) = S2 + 127^2.
    let mut data: Vec<f32> = (1..=127).map(|v| v as f32).collect();
    data.push(254.0);
    let s: f64 = (1..=127).map(|v| (v * v) as f64).sum();
    let fixed_point = (s + 127.0 * 254.0) / (s + 127.0 * 127.0);
    let exact_alpha = admm_scale_exact(&data, 127.0, 1.0, 1).unwrap();
    assert!((exact_alpha - fixed_point).abs() < 1e-12);
    let got = streamed(&data, 1 << 16, 1);
    // The histogram version reaches the same fixed point (within bin resolution).
    let reference = admm_scale_exact(&data, 127.0, 254.0 / (127.0 * 2.5), 300).unwrap();
    assert!((f64::from(got.scale) / reference - 1.0).abs() < 1e-4);
    assert!(got.converged);
}

#[test]
fn invalid_and_empty_inputs() {
    let mut zeros = RangeStats::new();
    zeros.update(&[0.0; 8]);
    assert!(AdmmHistogram::for_range(&zeros, 1024).unwrap().is_none());
    let mut range = RangeStats::new();
    range.update(&[1.0]);
    assert!(AdmmHistogram::for_range(&range, 1).is_err());
    let empty = AdmmHistogram::for_range(&range, 1024).unwrap().unwrap();
    assert!(empty.admm_scale(&AdmmOptions::default()).unwrap().is_none());
    let bad_clamp = AdmmOptions {
        clamp: 0.0,
        ..AdmmOptions::default()
    };
    assert!(empty.admm_scale(&bad_clamp).is_err());
    let mut other = AdmmHistogram::for_range(&range, 2048).unwrap().unwrap();
    assert!(other.merge(&empty).is_err());
}
