//! Per-channel weight quantization: hand-computed cases and MNN's arithmetic.

mod common;

use common::TestRng;
use mnnq_calibrate::*;

#[test]
fn max_abs_by_hand() {
    // Channel 0: max |w| = 2 -> scale 2/127; 1.0 * 63.5 = 63.5 rounds away from zero to 64.
    // Channel 1: max |w| = 0.5 -> -0.25 * 254 = -63.5 -> -64; 0.5 -> 127.
    let weights = [2.0f32, 1.0, -2.0, 0.0, -0.25, 0.5, 0.1, 0.0];
    let q = quantize_weights_max_abs(&weights, 2, 127.0).unwrap();
    assert_eq!(q.scales, vec![2.0f32 / 127.0, 0.5f32 / 127.0]);
    assert_eq!(q.codes, vec![127, 64, -127, 0, -64, 127, 25, 0]); // 0.1 * 254 = 25.4
}

#[test]
fn max_abs_zero_channel_is_finite_with_zero_codes() {
    let weights = [0.0f32, 0.0, 0.0, 1.0, -1.0, 0.5];
    let q = quantize_weights_max_abs(&weights, 2, 127.0).unwrap();
    assert_eq!(q.scales[0], ZERO_CHANNEL_SCALE);
    assert_eq!(&q.codes[..3], &[0, 0, 0]);
    assert_eq!(&q.codes[3..], &[127, -127, 64]);
    let admm = quantize_weights_admm(&weights, 2, &WeightAdmmOptions::default()).unwrap();
    assert_eq!(admm.scales[0], ZERO_CHANNEL_SCALE);
    assert!(admm.scales.iter().all(|s| s.is_finite() && *s > 0.0));
    let prepass = WeightAdmmOptions {
        mnn_max_abs_prepass: true,
        ..WeightAdmmOptions::default()
    };
    let admm = quantize_weights_admm(&weights, 2, &prepass).unwrap();
    assert_eq!(admm.scales[0], ZERO_CHANNEL_SCALE); // MNN would give NaN here
    assert_eq!(&admm.codes[..3], &[0, 0, 0]);
}

#[test]
fn bad_weights_are_errors() {
    assert!(quantize_weights_max_abs(&[1.0, 2.0, 3.0], 2, 127.0).is_err());
    assert!(quantize_weights_max_abs(&[1.0, 2.0], 0, 127.0).is_err());
    assert!(quantize_weights_max_abs(&[], 1, 127.0).is_err());
    assert!(quantize_weights_max_abs(&[1.0, f32::NAN], 1, 127.0).is_err());
    assert!(quantize_weights_max_abs(&[1.0, 2.0], 1, 200.0).is_err());
    let message = quantize_weights_max_abs(&[1.0, f32::INFINITY], 1, 127.0)
        .unwrap_err()
        .to_string();
    assert!(message.contains("weight 1"), "{message}");
}

#[test]
fn admm_by_hand() {
    // w = [1, 2, 3, 10], clamp 3 (needs >= 1; MNN's ADMM asserts clamp >= 7 only via CHECK,
    // our small clamp keeps the numbers hand-sized). alpha0 = 10 / (3 * 1.25) = 2.6666667.
    // q = round(w / alpha) = [0, 1, 1, 4 -> 3]; alpha = (2 + 3 + 30) / (0 + 1 + 1 + 9) = 35/11.
    // q = round(w / 3.1818) = [0, 1, 1, 3] again -> converged at alpha = 35/11.
    let q = quantize_weights_admm(
        &[1.0, 2.0, 3.0, 10.0],
        1,
        &WeightAdmmOptions {
            clamp: 3.0,
            ..WeightAdmmOptions::default()
        },
    )
    .unwrap();
    assert_eq!(q.scales, vec![35.0f32 / (11.0 + 1e-9)]);
    assert_eq!(q.codes, vec![0, 1, 1, 3]);
}

#[test]
fn admm_never_worse_than_its_start_and_matches_full_iteration() {
    let mut rng = TestRng::new(7);
    let channels = 8;
    let weights: Vec<f32> = (0..channels * 300)
        .map(|i| (rng.laplace() * 0.05 * (1 + i % 3) as f64) as f32)
        .collect();
    let admm = quantize_weights_admm(&weights, channels, &WeightAdmmOptions::default()).unwrap();
    for c in 0..channels {
        // Alternating minimisation only guarantees no worse than its start, max|w|/(127*1.25).
        // (It can end worse than MAX_ABS: channel 0 of this data does.)
        let w = &weights[c * 300..(c + 1) * 300];
        let start = w.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64 / (127.0 * 1.25);
        let e_start = quantization_error(w, start, 127.0);
        let e_admm = quantization_error(w, f64::from(admm.scales[c]), 127.0);
        assert!(
            e_admm <= e_start * (1.0 + 1e-6),
            "channel {c}: {e_admm} > {e_start}"
        );
    }
    // Early stop is exact: compare with the plain 1000-round loop in MNN's f32 arithmetic.
    for c in 0..channels {
        let w = &weights[c * 300..(c + 1) * 300];
        assert_eq!(
            admm.scales[c].to_bits(),
            mnn_weight_admm(w, 127.0).to_bits()
        );
    }
}

/// MNN's QuantizeWeightADMM for one channel, transcribed from the doc without early stop.
fn mnn_weight_admm(w: &[f32], clamp: f32) -> f32 {
    let max = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let mut alpha = (f64::from(max) / (f64::from(clamp) * 1.25)) as f32;
    let mut q = vec![0i8; w.len()];
    for _ in 0..1000 {
        for (qi, &wi) in q.iter_mut().zip(w) {
            *qi = (wi / (alpha + 1e-9)).round().clamp(-clamp, clamp) as i8;
        }
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for (&qi, &wi) in q.iter().zip(w) {
            s1 += wi * f32::from(qi);
            s2 += (i32::from(qi) * i32::from(qi)) as f32;
        }
        alpha = s1 / (s2 + 1e-9);
    }
    alpha
}

#[test]
fn mnn_prepass_by_hand() {
    // max |w| = 1.27 -> s = 0.01; 0.456 / 0.01 = 45.6 -> 46 -> 0.46.
    let out = fake_quantize_max_abs_mnn(&[1.27, 0.456, -0.004], 1, 127.0).unwrap();
    assert_eq!(out, vec![0.01f32 * 127.0, 0.01 * 46.0, -0.0]);
    // Channels below 1e-6 use s = max |w|: values become -1, 0 or 1 times max.
    let tiny = fake_quantize_max_abs_mnn(&[5e-7, -2e-7], 1, 127.0).unwrap();
    assert_eq!(tiny, vec![5e-7, -0.0]);
}
