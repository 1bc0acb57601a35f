//! FeatureCollector: the two-pass flow over images, first-visit rule, partial merges.

mod common;

use common::TestRng;
use mnnq_calibrate::*;

fn images(seed: u64) -> Vec<[Vec<f32>; 3]> {
    let mut rng = TestRng::new(seed);
    (0..5)
        .map(|_| {
            [
                (0..3000).map(|_| rng.normal() as f32).collect(),
                (0..3000)
                    .map(|_| (rng.laplace() * 0.2).max(0.0) as f32)
                    .collect(),
                vec![0.0; 100],
            ]
        })
        .collect()
}

fn run(method: FeatureMethod, workers: usize) -> std::collections::BTreeMap<TensorId, f32> {
    let data = images(11);
    let mut collector = FeatureCollector::new(method);
    collector.track(10, ThresholdMethod::Kl);
    collector.track(11, ThresholdMethod::Kl);
    collector.track(12, ThresholdMethod::Kl);
    for pass in 0..2 {
        if pass == 1 {
            collector.start_distribution_pass().unwrap();
        }
        // Images dealt round-robin to `workers` partials, merged back in reverse order.
        let mut partials: Vec<FeatureCollector> =
            (0..workers).map(|_| collector.partial()).collect();
        for (i, image) in data.iter().enumerate() {
            let worker = &mut partials[i % workers];
            worker.begin_image();
            for (k, tensor) in image.iter().enumerate() {
                worker.observe(10 + k as TensorId, tensor);
                // A second visit in the same image (a tensor read by two ops) is ignored.
                worker.observe(10 + k as TensorId, &[1000.0]);
                worker.observe(99, tensor); // untracked
            }
        }
        for partial in partials.iter().rev() {
            collector.merge(partial).unwrap();
        }
    }
    collector.scales(127.0).unwrap()
}

#[test]
fn kl_flow_matches_direct_computation_and_ignores_repeat_visits() {
    let scales = run(FeatureMethod::Kl, 1);
    assert!(!scales.contains_key(&12), "all-zero tensor gets no scale");
    let data = images(11);
    for k in 0..2 {
        let all: Vec<f32> = data
            .iter()
            .flat_map(|image| image[k].iter().copied())
            .collect();
        let mut range = RangeStats::new();
        range.update(&all);
        let mut histogram = AbsHistogram::for_range(&range).unwrap();
        histogram.add_slice(&all);
        let direct = kl_feature_scale(&histogram, ThresholdMethod::Kl, 127.0).scale;
        assert_eq!(scales[&(10 + k as TensorId)], direct);
    }
}

#[test]
fn results_do_not_depend_on_worker_count() {
    for method in [
        FeatureMethod::Kl,
        FeatureMethod::Admm {
            bins: 4096,
            options: AdmmOptions::default(),
        },
    ] {
        let one = run(method, 1);
        for workers in [2, 3, 5] {
            let many = run(method, workers);
            assert_eq!(one.len(), many.len());
            for (tensor, scale) in &one {
                assert_eq!(
                    scale.to_bits(),
                    many[tensor].to_bits(),
                    "{method:?} {workers}"
                );
            }
        }
    }
}

#[test]
fn admm_flow_is_close_to_exact() {
    let scales = run(
        FeatureMethod::Admm {
            bins: DEFAULT_ADMM_BINS,
            options: AdmmOptions::default(),
        },
        2,
    );
    let data = images(11);
    for k in 0..2 {
        let all: Vec<f32> = data
            .iter()
            .flat_map(|image| image[k].iter().copied())
            .collect();
        let max_abs = all.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let exact = admm_scale_exact(&all, 127.0, f64::from(max_abs) / (127.0 * 2.5), 300).unwrap();
        let ours = f64::from(scales[&(10 + k as TensorId)]);
        assert!(
            (ours / exact - 1.0).abs() < 1e-3,
            "tensor {k}: {ours} vs {exact}"
        );
    }
}

#[test]
fn misuse_is_an_error() {
    let mut collector = FeatureCollector::new(FeatureMethod::Kl);
    collector.track(1, ThresholdMethod::Kl);
    assert!(collector.scales(127.0).is_err()); // still in pass 1
    let range_partial = collector.partial();
    collector.start_distribution_pass().unwrap();
    assert!(collector.start_distribution_pass().is_err());
    assert!(collector.merge(&range_partial).is_err());
}
