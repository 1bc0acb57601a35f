//! Invariants: merge order independence, scale monotonicity, ADMM monotonicity, weight codes.

use mnnq_calibrate::*;
use proptest::prelude::*;

/// Feature-like values: mostly small, some large, some exact zeros.
fn features() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            4 => -3.0f32..3.0,
            1 => -50.0f32..50.0,
            1 => Just(0.0f32),
        ],
        1..400,
    )
}

/// Splits `data` into chunks at `cuts` and returns them in the order given by `order`.
fn shuffled_chunks<'a>(data: &'a [f32], cuts: &[usize], order: &[usize]) -> Vec<&'a [f32]> {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    bounds.push(0);
    bounds.push(data.len());
    bounds.sort_unstable();
    let chunks: Vec<&[f32]> = bounds.windows(2).map(|w| &data[w[0]..w[1]]).collect();
    let mut indices: Vec<usize> = (0..chunks.len()).collect();
    for (i, &o) in order.iter().enumerate() {
        let len = indices.len();
        indices.swap(i % len, o % len);
    }
    indices.into_iter().map(|i| chunks[i]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn merging_partials_in_any_order_equals_one_pass(
        data in features(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        order in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let chunks = shuffled_chunks(&data, &cuts, &order);
        let mut whole_range = RangeStats::new();
        whole_range.update(&data);
        let mut merged_range = RangeStats::new();
        for chunk in &chunks {
            let mut partial = RangeStats::new();
            partial.update(chunk);
            merged_range.merge(&partial);
        }
        prop_assert_eq!(whole_range, merged_range);

        if let Some(mut whole) = AbsHistogram::for_range(&whole_range) {
            whole.add_slice(&data);
            let mut merged = AbsHistogram::for_range(&whole_range).unwrap();
            for chunk in &chunks {
                let mut partial = AbsHistogram::for_range(&whole_range).unwrap();
                partial.add_slice(chunk);
                merged.merge(&partial).unwrap();
            }
            prop_assert_eq!(&whole, &merged);
        }
        if let Some(mut whole) = AdmmHistogram::for_range(&whole_range, 512).unwrap() {
            whole.add_slice(&data);
            let mut merged = AdmmHistogram::for_range(&whole_range, 512).unwrap().unwrap();
            for chunk in &chunks {
                let mut partial = AdmmHistogram::for_range(&whole_range, 512).unwrap().unwrap();
                partial.add_slice(chunk);
                merged.merge(&partial).unwrap();
            }
            prop_assert_eq!(&whole, &merged);
        }
    }

    #[test]
    fn threshold_scale_is_monotonic_in_threshold_and_max_abs(
        t1 in 128usize..2048, t2 in 128usize..2048, a in 1e-4f32..1e4, b in 1e-4f32..1e4,
    ) {
        let (t_lo, t_hi) = (t1.min(t2), t1.max(t2));
        let (m_lo, m_hi) = (a.min(b), a.max(b));
        let interval = |m: f32| 2048.0f32 / m;
        prop_assert!(scale_from_threshold(t_lo, interval(m_lo), 127.0)
            <= scale_from_threshold(t_hi, interval(m_lo), 127.0));
        prop_assert!(scale_from_threshold(t_lo, interval(m_lo), 127.0)
            <= scale_from_threshold(t_lo, interval(m_hi), 127.0));
    }

    #[test]
    fn admm_iterations_never_increase_the_error(data in features(), n in 0usize..40) {
        let max_abs = data.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        prop_assume!(max_abs > 1e-5);
        let init = f64::from(max_abs) / (127.0 * 2.5);
        let before = admm_scale_exact(&data, 127.0, init, n);
        let after = admm_scale_exact(&data, 127.0, init, n + 1);
        if let (Some(before), Some(after)) = (before, after) {
            let e_before = quantization_error(&data, before, 127.0);
            let e_after = quantization_error(&data, after, 127.0);
            prop_assert!(e_after <= e_before * (1.0 + 1e-9) + 1e-12, "{} > {}", e_after, e_before);
        }
        // The histogram version: never worse than its start, and its error shrinks with
        // more iterations.
        let mut range = RangeStats::new();
        range.update(&data);
        if let Some(mut histogram) = AdmmHistogram::for_range(&range, 1024).unwrap() {
            histogram.add_slice(&data);
            let run = |iterations| {
                histogram
                    .admm_scale(&AdmmOptions { max_iterations: iterations, ..AdmmOptions::default() })
                    .unwrap()
                    .unwrap()
                    .mean_squared_error
            };
            let (start, partial, full) = (run(0), run(n), run(n + 1));
            prop_assert!(partial <= start * (1.0 + 1e-9) + 1e-15);
            prop_assert!(full <= partial * (1.0 + 1e-9) + 1e-15);
        }
    }

    #[test]
    fn max_abs_weight_codes_are_in_range_and_round_to_nearest(
        channels in 1usize..5, per_channel in 1usize..40, seed in prop::collection::vec(-5.0f32..5.0, 200),
        zero_channel in any::<bool>(),
    ) {
        let mut weights: Vec<f32> = (0..channels * per_channel).map(|i| seed[i % seed.len()] * (1 + i % 7) as f32).collect();
        if zero_channel {
            weights[..per_channel].fill(0.0);
        }
        for q in [
            quantize_weights_max_abs(&weights, channels, 127.0).unwrap(),
            quantize_weights_admm(&weights, channels, &WeightAdmmOptions { iterations: 50, ..WeightAdmmOptions::default() }).unwrap(),
        ] {
            prop_assert_eq!(q.scales.len(), channels);
            prop_assert_eq!(q.codes.len(), weights.len());
            for (c, &scale) in q.scales.iter().enumerate() {
                prop_assert!(scale.is_finite() && scale > 0.0);
                let range = c * per_channel..(c + 1) * per_channel;
                for (&w, &code) in weights[range.clone()].iter().zip(&q.codes[range]) {
                    prop_assert!((-127..=127).contains(&code));
                    // Inside the range, the code is the nearest step.
                    if (w / scale).abs() < 126.5 {
                        let error = (w - f32::from(code) * scale).abs();
                        prop_assert!(error <= scale * 0.5001, "w {} code {} scale {}", w, code, scale);
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Doubling every value (exact in f32) doubles the KL scale exactly: the bins are the same.
    #[test]
    fn kl_scale_scales_with_the_data(data in prop::collection::vec(-8.0f32..8.0, 50..2000)) {
        let scale_of = |values: &[f32]| {
            let mut range = RangeStats::new();
            range.update(values);
            AbsHistogram::for_range(&range).map(|mut h| {
                h.add_slice(values);
                kl_feature_scale(&h, ThresholdMethod::Kl, 127.0)
            })
        };
        let doubled: Vec<f32> = data.iter().map(|x| x * 2.0).collect();
        if let (Some(one), Some(two)) = (scale_of(&data), scale_of(&doubled)) {
            prop_assert_eq!(one.threshold, two.threshold);
            prop_assert_eq!(two.scale, one.scale * 2.0);
            prop_assert!((128..=2047).contains(&one.threshold));
        }
    }
}
