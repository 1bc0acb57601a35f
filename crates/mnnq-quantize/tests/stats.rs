//! The calibration passes on a synthetic "model": results do not depend on the thread count,
//! constants are folded once per image, and unreadable images are skipped and reported.

use std::path::PathBuf;

use mnnq_quantize::plan::{CalibrationPlan, TrackedTensor};
use mnnq_quantize::progress::Silent;
use mnnq_quantize::stats::{
    collect_histograms, collect_ranges, ForwardPass, HistogramKind, Histograms, Images, Pass,
    Sample,
};
use mnnq_quantize::QuantizeError;

/// Tensor 0 is the input; tensor 1 = 3 * input - 1; tensor 2 = input^2 (not tracked).
struct Toy;

impl ForwardPass for Toy {
    fn forward(
        &mut self,
        mut sample: Sample,
        visit: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), String> {
        let (_, input) = sample.remove(0);
        visit(0, &input);
        let doubled: Vec<f32> = input.iter().map(|x| 3.0 * x - 1.0).collect();
        visit(1, &doubled);
        // A second visit of the same tensor in one forward is ignored (MNN counts the first).
        visit(1, &[1000.0]);
        let squared: Vec<f32> = input.iter().map(|x| x * x).collect();
        visit(2, &squared);
        Ok(())
    }
}

fn plan() -> CalibrationPlan {
    let tensor = |id, constant| TrackedTensor {
        id,
        shape: vec![1, 1, 16, 16],
        nhwc: false,
        graph_input: id == 0,
        constant,
    };
    CalibrationPlan::new(vec![
        tensor(0, None),
        tensor(1, None),
        tensor(5, Some(vec![0.5, -2.0])),
    ])
}

fn image(i: usize) -> Result<Sample, String> {
    if i == 3 {
        return Err("not an image".into());
    }
    let data = (0..256)
        .map(|k| (((k * 31 + i * 17) % 101) as f32 - 50.0) / (7.0 + i as f32))
        .collect();
    Ok(vec![("x".to_string(), data)])
}

fn run(threads: usize) -> (Vec<mnnq_calibrate::RangeStats>, Histograms, Vec<usize>) {
    let plan = plan();
    let files: Vec<PathBuf> = (0..9)
        .map(|i| PathBuf::from(format!("img{i}.png")))
        .collect();
    let load = image;
    let images = Images {
        files: &files,
        load: &load,
    };
    let factory = || -> Result<Box<dyn ForwardPass>, QuantizeError> { Ok(Box::new(Toy)) };
    let pass = Pass {
        plan: &plan,
        images: &images,
        threads,
        make_runner: &factory,
        progress: &Silent,
    };
    let (ranges, skipped) = collect_ranges(&pass).unwrap();
    let hist = collect_histograms(&pass, &ranges, HistogramKind::Kl).unwrap();
    (ranges, hist, skipped.iter().map(|s| s.index).collect())
}

#[test]
fn same_statistics_for_any_thread_count() {
    let (r1, h1, s1) = run(1);
    for threads in [2, 3, 8] {
        let (r, h, s) = run(threads);
        assert_eq!(r, r1, "ranges with {threads} threads");
        assert_eq!(s, s1);
        match (&h, &h1) {
            (Histograms::Kl(a), Histograms::Kl(b)) => {
                assert_eq!(a, b, "histograms with {threads} threads")
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(s1, vec![3], "the unreadable image is skipped and reported");
}

#[test]
fn ranges_match_a_direct_computation() {
    let (ranges, hist, _) = run(2);
    let used: Vec<Vec<f32>> = (0..9)
        .filter_map(|i| image(i).ok())
        .map(|mut sample| sample.remove(0).1)
        .collect();
    let min0 = used.iter().flatten().copied().fold(f32::INFINITY, f32::min);
    let max0 = used
        .iter()
        .flatten()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    assert_eq!((ranges[0].min, ranges[0].max), (min0, max0));
    // The second visit (1000.0) must not count.
    assert!(ranges[1].max < 1000.0);
    assert_eq!(
        (ranges[2].min, ranges[2].max),
        (-2.0, 0.5),
        "constant folded"
    );
    let Histograms::Kl(h) = hist else {
        unreachable!()
    };
    // The constant contributes its 2 values once per used image (8 images).
    let total: u64 = h[2].as_ref().unwrap().counts().iter().sum();
    assert_eq!(total, 16);
    let total0: u64 = h[0].as_ref().unwrap().counts().iter().sum();
    let nonzero = used.iter().flatten().filter(|x| x.abs() > 1e-6).count() as u64;
    assert_eq!(total0, nonzero);
}
