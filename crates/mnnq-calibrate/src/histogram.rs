use crate::{CalibrateError, RangeStats};

/// Number of bins of MNN's KL histogram.
pub const HISTOGRAM_BINS: usize = 2048;

/// Histogram of |x| over `[0, max_abs]` with MNN's binning (KL pass 2).
///
/// Counts are kept as exact `u64` integers, so partial histograms (one per image, or per
/// thread) merge to the same result in any order. [`AbsHistogram::mnn_bins`] converts a count
/// into the `f32` value MNN's own accumulation would hold (see [`mnn_bin_value`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AbsHistogram {
    max_abs: f32,
    interval: f32,
    counts: Vec<u64>,
    /// NaN elements seen (MNN has undefined behaviour for them; we skip and count them).
    nan_count: u64,
}

impl AbsHistogram {
    /// Creates the histogram for a tensor whose pass-1 range is `range`, or `None` when MNN
    /// considers the tensor invalid (`max_abs <= 1e-5`, e.g. all zero): such a tensor gets no
    /// scale at all. Also `None` for a range with an infinite end (MNN would compute an
    /// infinite scale; our tool writes no scale instead).
    pub fn for_range(range: &RangeStats) -> Option<Self> {
        if !range.is_valid() || !range.max_abs().is_finite() {
            return None;
        }
        let max_abs = range.max_abs();
        Some(Self {
            max_abs,
            // MNN: `(float)binNumber / maxValue`, an f32 division.
            interval: HISTOGRAM_BINS as f32 / max_abs,
            counts: vec![0; HISTOGRAM_BINS],
            nan_count: 0,
        })
    }

    /// Rebuilds a histogram from exact per-bin counts (e.g. saved statistics, or tests).
    /// `None` when `max_abs` is invalid for MNN (`<= 1e-5` or not finite).
    pub fn from_counts(max_abs: f32, counts: Vec<u64>) -> Result<Option<Self>, CalibrateError> {
        if counts.len() != HISTOGRAM_BINS {
            return Err(CalibrateError::HistogramBinsMismatch {
                ours: HISTOGRAM_BINS,
                theirs: counts.len(),
            });
        }
        if !(max_abs.is_finite() && max_abs > 1e-5) {
            return Ok(None);
        }
        Ok(Some(Self {
            max_abs,
            interval: HISTOGRAM_BINS as f32 / max_abs,
            counts,
            nan_count: 0,
        }))
    }

    pub fn max_abs(&self) -> f32 {
        self.max_abs
    }

    /// Bins per unit of |x| (`2048 / max_abs` in f32).
    pub fn interval(&self) -> f32 {
        self.interval
    }

    /// Exact number of elements counted in each bin.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn nan_count(&self) -> u64 {
        self.nan_count
    }

    /// The bin MNN puts `x` in, or `None` when MNN skips it (`|x| <= 1e-6`, compared in
    /// double as the C++ does) or it is NaN.
    pub fn bin_of(&self, x: f32) -> Option<usize> {
        let magnitude = x.abs();
        if magnitude.is_nan() || f64::from(magnitude) <= 1e-6 {
            return None;
        }
        // f32 product truncated toward zero, then capped at the last bin. `as usize`
        // saturates, which only matters for data outside the pass-1 range.
        let index = (magnitude * self.interval) as usize;
        Some(index.min(HISTOGRAM_BINS - 1))
    }

    /// Adds every element of one tensor visit.
    pub fn add_slice(&mut self, data: &[f32]) {
        for &x in data {
            match self.bin_of(x) {
                Some(bin) => self.counts[bin] += 1,
                None if x.is_nan() => self.nan_count += 1,
                None => {}
            }
        }
    }

    /// Adds another partial histogram built for the same range.
    pub fn merge(&mut self, other: &AbsHistogram) -> Result<(), CalibrateError> {
        if self.max_abs.to_bits() != other.max_abs.to_bits() {
            return Err(CalibrateError::HistogramRangeMismatch {
                ours: self.max_abs,
                theirs: other.max_abs,
            });
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.nan_count += other.nan_count;
        Ok(())
    }

    /// The bins as MNN's `std::vector<float>` holds them after all images: each starts at
    /// 1e-7 and had 1.0f added once per element, in f32.
    pub fn mnn_bins(&self) -> Vec<f32> {
        self.counts.iter().map(|&n| mnn_bin_value(n)).collect()
    }
}

/// The value of an f32 that starts at `1e-7f32` and has `1.0f32` added to it `count` times.
///
/// This is exactly MNN's bin after `count` elements, whatever the order of images: the f32
/// sequence is 1e-7, 1.0000001, then exact integers 2, 3, ... up to 2^24 = 16777216, where it
/// saturates (2^24 + 1 rounds back to 2^24, ties to even). Saturation is real for large
/// tensors: a PP-OCR det feature map has ~1.6M elements per image, 24 images give ~39M
/// elements, and a concentrated bin (bin 0 after a ReLU, say) can exceed 2^24. Since parity
/// with MNN is the goal, the saturated value is what we reproduce; the exact count stays
/// available in [`AbsHistogram::counts`].
pub fn mnn_bin_value(count: u64) -> f32 {
    // Walk the f32 additions until the value is an integer: from there on every further
    // +1.0 is exact until 2^24, and has no effect after.
    let mut value = 1.0e-7f32;
    let mut done = 0u64;
    while done < count && value.fract() != 0.0 {
        value += 1.0;
        done += 1;
    }
    if value.fract() != 0.0 {
        return value; // all `count` additions done before reaching an integer
    }
    const SATURATION: u64 = 1 << 24;
    if value >= SATURATION as f32 {
        return value;
    }
    let remaining = count - done;
    let exact = value as u64 + remaining;
    exact.min(SATURATION) as f32
}
