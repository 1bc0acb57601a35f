use crate::histogram::{AbsHistogram, HISTOGRAM_BINS};

/// Number of target bins of MNN's KL search (the quantized distribution's resolution).
pub const KL_TARGET_BINS: usize = 128;

/// Threshold of the MAX method: the whole range (`scale = 2047.5 * max_abs / 2048 / clamp`).
pub const MAX_THRESHOLD: usize = HISTOGRAM_BINS - 1;

/// How the threshold bin is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdMethod {
    /// MNN's KL-divergence search over thresholds 128..=2047.
    Kl,
    /// No clipping: threshold 2047. MNN uses it for small tensors (see
    /// [`small_tensor_uses_max`]). MNN's code also means to use it for graph inputs, but in
    /// MNN 3.6.1 that override does not take effect: the graph input scales in the fixtures'
    /// reports are KL scales, reproduced bit-exactly by [`ThresholdMethod::Kl`] (test
    /// `graph_input_scale_matches_mnn`). For parity, give graph inputs `Kl`.
    Max,
}

/// A feature scale and the histogram threshold it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlScale {
    pub threshold: usize,
    pub scale: f32,
}

/// MNN's "little amount of data" rule: a tensor whose `width * height < 100` at creation of
/// its statistic uses [`ThresholdMethod::Max`].
///
/// `width`/`height` are MNN's `Tensor::width()/height()`: dims 3 and 2 for NCHW-like layouts,
/// dims 2 and 1 for NHWC (`nhwc = true`). Tensors with fewer dims read extents that are 0 in
/// MNN's dimension array, so they always take MAX.
pub fn small_tensor_uses_max(shape: &[usize], nhwc: bool) -> bool {
    let (width_dim, height_dim) = if nhwc { (2, 1) } else { (3, 2) };
    let width = shape.get(width_dim).copied().unwrap_or(0);
    let height = shape.get(height_dim).copied().unwrap_or(0);
    width.saturating_mul(height) < 100
}

/// Normalises raw f32 bins the way MNN does: sum in f32 from bin 0 upwards, then divide
/// every bin by the sum.
pub fn mnn_normalise(bins: &[f32]) -> Vec<f32> {
    let mut sum = 0.0f32;
    for &b in bins {
        sum += b;
    }
    bins.iter().map(|&b| b / sum).collect()
}

/// MNN's KL threshold search (`TensorStatistic::_computeThreshold`) on a normalised
/// 2048-bin distribution `p`, reproduced operation by operation in f32.
///
/// For each candidate `i` in 128..2048: the reference distribution is `p[..i]` with the tail
/// mass folded into bin `i-1`; the quantized distribution merges `p[..i]` (the *unfolded* p)
/// into 128 bins of width `i/128` with fractional edges, then spreads each merged bin evenly
/// over its non-empty source bins; the divergence is summed without renormalisation; the
/// first strict minimum wins.
///
/// # Panics
/// If `p.len() != 2048`; callers build `p` from an [`AbsHistogram`].
pub fn kl_threshold(p: &[f32]) -> usize {
    let mut best = KL_TARGET_BINS;
    let mut min_divergence = 10000.0f32;
    for (offset, divergence) in kl_divergence_curve(p).into_iter().enumerate() {
        // Strict: the first minimum wins; a NaN divergence never wins.
        if divergence < min_divergence {
            min_divergence = divergence;
            best = KL_TARGET_BINS + offset;
        }
    }
    best
}

/// The divergence MNN computes for every candidate threshold `i` in 128..2048 (element
/// `i - 128`), for diagnostics. NaN where f32 drift of the running tail makes the folded bin
/// negative (MNN gets the same NaN, which never wins the minimum).
///
/// # Panics
/// If `p.len() != 2048`.
pub fn kl_divergence_curve(p: &[f32]) -> Vec<f32> {
    assert_eq!(p.len(), HISTOGRAM_BINS, "KL search needs exactly 2048 bins");
    let mut curve = Vec::with_capacity(HISTOGRAM_BINS - KL_TARGET_BINS);

    // Mass beyond the candidate threshold, maintained by subtraction exactly as MNN does (the
    // f32 drift of this running value is part of MNN's result).
    let mut tail = 0.0f32;
    for &v in &p[KL_TARGET_BINS..] {
        tail += v;
    }

    let mut reference = vec![0.0f32; HISTOGRAM_BINS];
    let mut expanded = vec![0.0f32; HISTOGRAM_BINS];
    let mut merged = [0.0f32; KL_TARGET_BINS];

    for i in KL_TARGET_BINS..HISTOGRAM_BINS {
        reference[..i].copy_from_slice(&p[..i]);
        reference[i - 1] += tail;
        tail -= p[i];

        // i / 128 is exact in f32, and so are all the bin edges j * width below.
        let width = i as f32 / KL_TARGET_BINS as f32;

        merged.fill(0.0);
        for (j, merged_j) in merged.iter_mut().enumerate() {
            let edges = TargetBinEdges::new(j, width);
            if edges.has_left_part() {
                *merged_j += edges.left_scale() * p[edges.left_upper - 1];
            }
            if edges.has_right_part() {
                *merged_j += edges.right_scale() * p[edges.right_lower];
            }
            for &v in &p[edges.left_upper..edges.right_lower] {
                *merged_j += v;
            }
        }

        let expanded = &mut expanded[..i];
        expanded.fill(0.0);
        for (j, &merged_j) in merged.iter().enumerate() {
            let edges = TargetBinEdges::new(j, width);
            let left_scale = if edges.has_left_part() {
                edges.left_scale()
            } else {
                0.0
            };
            let right_scale = if edges.has_right_part() {
                edges.right_scale()
            } else {
                0.0
            };
            let left_used = edges.has_left_part() && p[edges.left_upper - 1] != 0.0;
            let right_used = edges.has_right_part() && p[edges.right_lower] != 0.0;

            let mut count = 0.0f32;
            if left_used {
                count += left_scale;
            }
            if right_used {
                count += right_scale;
            }
            for &v in &p[edges.left_upper..edges.right_lower] {
                if v != 0.0 {
                    count += 1.0;
                }
            }
            if count == 0.0 {
                continue;
            }
            let share = merged_j / count;
            if left_used {
                expanded[edges.left_upper - 1] += share * left_scale;
            }
            // MNN writes one element past its buffer when the last edge lands on i (its UB);
            // that part has no bin here and is dropped. With i/128 exact it does not occur.
            if right_used && edges.right_lower < i {
                expanded[edges.right_lower] += share * right_scale;
            }
            for k in edges.left_upper..edges.right_lower.min(i) {
                if p[k] != 0.0 {
                    expanded[k] += share;
                }
            }
        }

        curve.push(mnn_kl_divergence(&reference[..i], expanded));
    }
    curve
}

/// Edges of target bin `j` in source-bin coordinates, with MNN's integer rounding.
struct TargetBinEdges {
    start: f32,
    end: f32,
    left_upper: usize,
    right_lower: usize,
}

impl TargetBinEdges {
    fn new(j: usize, width: f32) -> Self {
        let start = j as f32 * width;
        let end = start + width;
        Self {
            start,
            end,
            left_upper: start.ceil() as usize,
            right_lower: end.floor() as usize,
        }
    }
    /// The bin starts inside source bin `left_upper - 1`.
    fn has_left_part(&self) -> bool {
        self.left_upper as f32 > self.start
    }
    fn left_scale(&self) -> f32 {
        self.left_upper as f32 - self.start
    }
    /// The bin ends inside source bin `right_lower`.
    fn has_right_part(&self) -> bool {
        (self.right_lower as f32) < self.end
    }
    fn right_scale(&self) -> f32 {
        self.end - self.right_lower as f32
    }
}

/// `sum P ln(P/E)` over bins with `P != 0`, adding 1 where `E == 0`, in f32 (`logf`).
fn mnn_kl_divergence(reference: &[f32], expanded: &[f32]) -> f32 {
    let mut result = 0.0f32;
    for (&p, &e) in reference.iter().zip(expanded) {
        if p != 0.0 {
            if e == 0.0 {
                result += 1.0;
            } else {
                result += p * (p / e).ln();
            }
        }
    }
    result
}

/// MNN's scale formula `((float)t + 0.5) / interval / clamp`: the `0.5` literal is a double,
/// so the division runs in f64 and the result is rounded once to f32.
pub fn scale_from_threshold(threshold: usize, interval: f32, clamp: f32) -> f32 {
    ((threshold as f32 as f64 + 0.5) / f64::from(interval) / f64::from(clamp)) as f32
}

/// The feature scale of one tensor from its complete histogram (`finishAndCompute`).
pub fn kl_feature_scale(histogram: &AbsHistogram, method: ThresholdMethod, clamp: f32) -> KlScale {
    let threshold = match method {
        ThresholdMethod::Max => MAX_THRESHOLD,
        ThresholdMethod::Kl => kl_threshold(&mnn_normalise(&histogram.mnn_bins())),
    };
    KlScale {
        threshold,
        scale: scale_from_threshold(threshold, histogram.interval(), clamp),
    }
}
