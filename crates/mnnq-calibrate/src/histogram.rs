use crate::simd::multiversion;
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

    /// Adds every element of one tensor visit (in any order: counts do not depend on it).
    /// Vectorized for the CPU's instruction set; every element lands in exactly the bin
    /// [`AbsHistogram::bin_of`] gives.
    pub fn add_slice(&mut self, data: &[f32]) {
        self.add_slice_with(crate::simd::active_isa(), data);
    }

    pub(crate) fn add_slice_with(&mut self, isa: crate::simd::Isa, data: &[f32]) {
        if data.len() < SMALL_SLICE {
            for &x in data {
                match self.bin_of(x) {
                    Some(bin) => self.counts[bin] += 1,
                    None if x.is_nan() => self.nan_count += 1,
                    None => {}
                }
            }
            return;
        }
        let skip_limit = skip_limit();
        // Counting goes to SPREAD interleaved copies of the bins (element k to copy k %
        // SPREAD), so runs of equal bins, common after a ReLU, do not serialise on one
        // memory counter; u32 copies are flushed into the u64 counts before they could wrap.
        let mut spread = vec![0u32; SPREAD * SLOTS];
        let mut bins = [0u16; BLOCK];
        for piece in data.chunks(FLUSH_EVERY) {
            for block in piece.chunks(BLOCK) {
                let bins = &mut bins[..block.len()];
                bin_indices(isa, block, bins, self.interval, skip_limit);
                let mut quads = bins.chunks_exact(SPREAD);
                for quad in &mut quads {
                    for (copy, &bin) in quad.iter().enumerate() {
                        spread[copy * SLOTS + bin as usize] += 1;
                    }
                }
                for &bin in quads.remainder() {
                    spread[bin as usize] += 1;
                }
            }
            for copy in spread.chunks_exact_mut(SLOTS) {
                for (count, partial) in self.counts.iter_mut().zip(&copy[..HISTOGRAM_BINS]) {
                    *count += u64::from(*partial);
                }
                self.nan_count += u64::from(copy[NAN_SLOT]);
                copy.fill(0);
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

/// Below this many elements the plain loop is cheaper than the spread counters' setup.
const SMALL_SLICE: usize = 4096;
/// Interleaved copies of the counters.
const SPREAD: usize = 4;
/// Counter slots per copy: the bins, then one for skipped near-zero values, one for NaN.
const SLOTS: usize = HISTOGRAM_BINS + 2;
const SKIP_SLOT: u16 = HISTOGRAM_BINS as u16;
const NAN_SLOT: usize = HISTOGRAM_BINS + 1;
/// Elements whose slots are computed in one vector loop.
const BLOCK: usize = 1024;
/// Elements counted between flushes of the u32 copies (far below 2^32 per counter).
const FLUSH_EVERY: usize = 1 << 30;

/// The largest f32 that MNN skips: `f64::from(m) <= 1e-6` exactly when `m <= skip_limit()`
/// (every f32 is exact in f64, so the comparison only depends on where 1e-6 falls between
/// two f32 values).
fn skip_limit() -> f32 {
    let nearest = 1e-6f64 as f32;
    if f64::from(nearest) <= 1e-6 {
        nearest
    } else {
        nearest.next_down()
    }
}

/// The counter slot of every element of `data`: [`AbsHistogram::bin_of`]'s bin, or
/// `SKIP_SLOT`, or `NAN_SLOT`. Branch-free so that it vectorizes.
#[inline(always)]
fn bin_indices_body(data: &[f32], bins: &mut [u16], interval: f32, skip_limit: f32) {
    const LAST: f32 = (HISTOGRAM_BINS - 1) as f32;
    for (bin, &x) in bins.iter_mut().zip(data) {
        let magnitude = x.abs();
        // The same f32 product as `bin_of`; capping before the conversion gives the same
        // bin as truncating then capping, since every bin edge is an integer.
        let scaled = magnitude * interval;
        let capped = if scaled < LAST { scaled } else { LAST };
        // SAFETY: `capped` is in [0, 2047] whatever `x` is (a NaN product fails `<` and
        // takes LAST), so the conversion is exact and in range. The checked `as` conversion
        // would not vectorize.
        let truncated = unsafe { capped.to_int_unchecked::<i32>() } as u16;
        let slot = if magnitude > skip_limit {
            truncated
        } else if magnitude.is_nan() {
            NAN_SLOT as u16
        } else {
            SKIP_SLOT
        };
        *bin = slot;
    }
}

multiversion! {
    fn bin_indices(data: &[f32], bins: &mut [u16], interval: f32, skip_limit: f32) -> () =
        bin_indices_body;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Isa;

    /// Element by element through `bin_of`, the definition of MNN's binning.
    fn reference(histogram: &AbsHistogram, data: &[f32]) -> (Vec<u64>, u64) {
        let mut counts = vec![0u64; HISTOGRAM_BINS];
        let mut nans = 0;
        for &x in data {
            match histogram.bin_of(x) {
                Some(bin) => counts[bin] += 1,
                None if x.is_nan() => nans += 1,
                None => {}
            }
        }
        (counts, nans)
    }

    fn empty(max_abs: f32) -> AbsHistogram {
        AbsHistogram::for_range(&RangeStats {
            min: -max_abs,
            max: max_abs * 0.5,
        })
        .unwrap()
    }

    /// Values on and next to bin edges and the skip limit, out of range, NaN, infinities,
    /// signed zeros and long runs of one value, as ReLU outputs have.
    fn awkward_data(histogram: &AbsHistogram, n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let limit = skip_limit();
        (0..n)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (state >> 33) as u32;
                let sign = if r & 1 == 0 { 1.0 } else { -1.0 };
                if (i / 64) % 3 == 0 {
                    return 0.0; // a run of zeros
                }
                let edge = (r % HISTOGRAM_BINS as u32) as f32 / histogram.interval();
                sign * match r % 13 {
                    0 => edge,
                    1 => edge.next_up(),
                    2 => edge.next_down(),
                    3 => limit,
                    4 => limit.next_up(),
                    5 => f32::NAN,
                    6 => f32::INFINITY,
                    7 => histogram.max_abs() * 3.0,
                    8 => histogram.max_abs(),
                    9 => -0.0,
                    _ => (r as f32 / u32::MAX as f32) * histogram.max_abs(),
                }
            })
            .collect()
    }

    #[test]
    fn skip_limit_is_the_last_f32_at_or_below_1e_minus_6() {
        let limit = skip_limit();
        assert!(f64::from(limit) <= 1e-6);
        assert!(f64::from(limit.next_up()) > 1e-6);
    }

    #[test]
    fn every_instruction_set_bins_like_bin_of() {
        for isa in Isa::supported() {
            for max_abs in [1.0f32, 6.0, 0.37, 1234.5] {
                for (n, seed) in [(10, 1), (4095, 2), (4096, 3), (5003, 4), (70_001, 5)] {
                    let mut histogram = empty(max_abs);
                    let data = awkward_data(&histogram, n, seed);
                    histogram.add_slice_with(isa, &data);
                    // Twice: the counters accumulate across calls.
                    histogram.add_slice_with(isa, &data[n / 3..]);
                    let (mut counts, mut nans) = reference(&histogram, &data);
                    let (more, more_nans) = reference(&histogram, &data[n / 3..]);
                    counts.iter_mut().zip(more).for_each(|(c, m)| *c += m);
                    nans += more_nans;
                    assert_eq!(histogram.counts(), &counts[..], "{isa} {max_abs} n={n}");
                    assert_eq!(histogram.nan_count(), nans, "{isa} {max_abs} n={n}");
                    if n >= SMALL_SLICE {
                        // The awkward cases are really there.
                        assert!(nans > 0 && counts[0] > 0 && counts[HISTOGRAM_BINS - 1] > 0);
                    }
                }
            }
        }
    }
}
