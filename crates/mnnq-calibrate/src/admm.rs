//! Feature scales by ADMM (alternating least squares of the quantization error), computed
//! from a fine histogram so it streams over any number of images in bounded memory.
//!
//! MNN's feature ADMM (`computeScaleADMM`) packs all images into one batch and iterates over
//! every element; its layout handling is broken for NCHW models (doc §5). This version keeps,
//! per bin of |x|, the exact element count and the exact sum of |x| (fixed point, u128), and
//! runs the same iteration on bins:
//!   q_b = clamp(round(mean_b / alpha)),  alpha = sum_b q_b * S_b / sum_b q_b^2 * n_b.
//! Because the quantizer is odd-symmetric (zero point 0), q(x) * x and q(x)^2 depend on |x|
//! only, so a histogram of |x| loses nothing but the position of elements inside a bin. All
//! elements of a bin share one code, chosen from the bin mean; this is the exact minimiser of
//! the bin's error for a shared code, so every iteration still never increases the error.
//! Only bins straddling a rounding boundary differ from the all-data ADMM.

use crate::{CalibrateError, RangeStats};

/// Bins of the fine |x| histogram; 4096 quant steps' worth of resolution at max_abs/127 and
/// 24 bytes per bin (~390 KB per tensor).
pub const DEFAULT_ADMM_BINS: usize = 1 << 14;
/// MNN's iteration count for feature ADMM.
pub const FEATURE_ADMM_ITERATIONS: usize = 300;
/// MNN's initial feature scale is `max_abs / (clamp * 2.5)`.
pub const FEATURE_ADMM_INIT_DIVISOR: f64 = 2.5;

/// Fixed point used for the exact per-bin sums: |x| / max_abs in units of 2^-52.
const SUM_FRACTION_BITS: i32 = 52;
/// Fixed point of the global sum of squares: (|x| / max_abs)^2 in units of 2^-40.
const SQUARE_FRACTION_BITS: i32 = 40;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmmOptions {
    /// Quantized range is [-clamp, clamp].
    pub clamp: f32,
    /// Maximum number of iterations (stops earlier once the codes no longer change).
    pub max_iterations: usize,
    /// Initial scale = max_abs / (clamp * init_divisor).
    pub init_divisor: f64,
}

impl Default for AdmmOptions {
    fn default() -> Self {
        Self {
            clamp: crate::DEFAULT_CLAMP,
            max_iterations: FEATURE_ADMM_ITERATIONS,
            init_divisor: FEATURE_ADMM_INIT_DIVISOR,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmmResult {
    /// The feature scale (always finite and > 0).
    pub scale: f32,
    /// Iterations run (the last one found the codes unchanged when `converged`).
    pub iterations: usize,
    pub converged: bool,
    /// Mean squared quantization error at `scale`, with every element of a bin given the
    /// bin's code.
    pub mean_squared_error: f64,
}

/// Streaming |x| histogram for ADMM, built for the pass-1 range of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmmHistogram {
    max_abs: f32,
    counts: Vec<u64>,
    /// Exact sums of round(|x| / max_abs * 2^52) per bin.
    fixed_sums: Vec<u128>,
    /// Exact sum of round((|x| / max_abs)^2 * 2^40) over all elements.
    fixed_square_sum: u128,
    /// Elements with x == 0 (code 0, no contribution) and NaN (skipped).
    zero_count: u64,
    nan_count: u64,
}

impl AdmmHistogram {
    /// `None` for tensors MNN treats as invalid (max_abs <= 1e-5): no scale.
    pub fn for_range(range: &RangeStats, bins: usize) -> Result<Option<Self>, CalibrateError> {
        if bins < 2 {
            return Err(CalibrateError::InvalidOption(format!(
                "ADMM histogram needs at least 2 bins, got {bins}"
            )));
        }
        if !range.is_valid() || !range.max_abs().is_finite() {
            return Ok(None);
        }
        Ok(Some(Self {
            max_abs: range.max_abs(),
            counts: vec![0; bins],
            fixed_sums: vec![0; bins],
            fixed_square_sum: 0,
            zero_count: 0,
            nan_count: 0,
        }))
    }

    pub fn max_abs(&self) -> f32 {
        self.max_abs
    }

    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    /// Number of elements with a non-zero value counted so far.
    pub fn element_count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn add_slice(&mut self, data: &[f32]) {
        let bins = self.counts.len();
        let to_unit = 1.0 / f64::from(self.max_abs);
        let sum_one = 2f64.powi(SUM_FRACTION_BITS);
        let square_one = 2f64.powi(SQUARE_FRACTION_BITS);
        for &x in data {
            if x.is_nan() {
                self.nan_count += 1;
                continue;
            }
            if x == 0.0 {
                self.zero_count += 1;
                continue;
            }
            // Values past the pass-1 range (should not happen) are clipped to it.
            let unit = (f64::from(x.abs()) * to_unit).min(1.0);
            let bin = ((unit * bins as f64) as usize).min(bins - 1);
            self.counts[bin] += 1;
            self.fixed_sums[bin] += (unit * sum_one).round() as u128;
            self.fixed_square_sum += (unit * unit * square_one).round() as u128;
        }
    }

    /// Adds a partial histogram of the same tensor; integer sums make this order independent.
    pub fn merge(&mut self, other: &AdmmHistogram) -> Result<(), CalibrateError> {
        if self.max_abs.to_bits() != other.max_abs.to_bits() {
            return Err(CalibrateError::HistogramRangeMismatch {
                ours: self.max_abs,
                theirs: other.max_abs,
            });
        }
        if self.counts.len() != other.counts.len() {
            return Err(CalibrateError::HistogramBinsMismatch {
                ours: self.counts.len(),
                theirs: other.counts.len(),
            });
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        for (mine, theirs) in self.fixed_sums.iter_mut().zip(&other.fixed_sums) {
            *mine += theirs;
        }
        self.fixed_square_sum += other.fixed_square_sum;
        self.zero_count += other.zero_count;
        self.nan_count += other.nan_count;
        Ok(())
    }

    /// Runs ADMM on the bins. `None` when no non-zero element was seen.
    pub fn admm_scale(&self, options: &AdmmOptions) -> Result<Option<AdmmResult>, CalibrateError> {
        validate_clamp(options.clamp)?;
        if !(options.init_divisor.is_finite() && options.init_divisor > 0.0) {
            return Err(CalibrateError::InvalidOption(format!(
                "ADMM init divisor must be a positive number, got {}",
                options.init_divisor
            )));
        }
        let bins = self.counts.len();
        let sum_unit = 2f64.powi(-SUM_FRACTION_BITS);
        // Representative |x| of each bin (in units of max_abs): the mean, kept inside the bin
        // so the sequence stays non-decreasing; the centre for empty bins.
        let mut representative = Vec::with_capacity(bins);
        // Prefix sums: counts (exact in f64 up to 2^53 elements) and sums of |x|.
        let mut prefix_count = Vec::with_capacity(bins + 1);
        let mut prefix_sum = Vec::with_capacity(bins + 1);
        let (mut running_count, mut running_sum) = (0u128, 0u128);
        prefix_count.push(0.0f64);
        prefix_sum.push(0.0f64);
        for b in 0..bins {
            let lo = b as f64 / bins as f64;
            let hi = (b + 1) as f64 / bins as f64;
            let n = self.counts[b];
            let rep = if n == 0 {
                0.5 * (lo + hi)
            } else {
                (self.fixed_sums[b] as f64 * sum_unit / n as f64).clamp(lo, hi)
            };
            representative.push(rep);
            running_count += u128::from(n);
            running_sum += self.fixed_sums[b];
            prefix_count.push(running_count as f64);
            prefix_sum.push(running_sum as f64 * sum_unit);
        }
        let total = running_count as f64;
        if total == 0.0 {
            return Ok(None);
        }
        let clamp = f64::from(options.clamp);
        let levels = options.clamp as usize;
        let sum_of_squares = self.fixed_square_sum as f64 * 2f64.powi(-SQUARE_FRACTION_BITS);

        // Level boundaries: boundary[k] = first bin whose code is >= k (k = 1..=clamp).
        let boundaries_for = |alpha: f64| -> Vec<usize> {
            (1..=levels)
                .map(|k| representative.partition_point(|&r| code(r, alpha, clamp) < k as f64))
                .collect()
        };
        // sum q*|x| and sum q^2 from the boundaries.
        let moments = |boundaries: &[usize]| -> (f64, f64) {
            let (mut qx, mut qq) = (0.0, 0.0);
            for k in 1..=levels {
                let from = boundaries[k - 1];
                let to = if k < levels { boundaries[k] } else { bins };
                let kf = k as f64;
                qx += kf * (prefix_sum[to] - prefix_sum[from]);
                qq += kf * kf * (prefix_count[to] - prefix_count[from]);
            }
            (qx, qq)
        };

        let mut alpha = 1.0 / (clamp * options.init_divisor);
        let mut boundaries = boundaries_for(alpha);
        let mut iterations = 0;
        let mut converged = false;
        while iterations < options.max_iterations {
            let (qx, qq) = moments(&boundaries);
            if qq == 0.0 {
                break;
            }
            alpha = qx / qq;
            iterations += 1;
            let next = boundaries_for(alpha);
            if next == boundaries {
                converged = true;
                break;
            }
            boundaries = next;
        }
        let (qx, qq) = moments(&boundaries_for(alpha));
        let unit_error = (sum_of_squares - 2.0 * alpha * qx + alpha * alpha * qq).max(0.0);
        let max_abs = f64::from(self.max_abs);
        let elements = total + self.zero_count as f64;
        let scale = (alpha * max_abs) as f32;
        if !(scale.is_finite() && scale > 0.0) {
            return Ok(None);
        }
        Ok(Some(AdmmResult {
            scale,
            iterations,
            converged,
            mean_squared_error: unit_error * max_abs * max_abs / elements,
        }))
    }
}

/// Code of a non-negative value: round half away from zero, capped at `clamp`.
fn code(value: f64, alpha: f64, clamp: f64) -> f64 {
    (value / alpha).round().min(clamp)
}

pub(crate) fn validate_clamp(clamp: f32) -> Result<(), CalibrateError> {
    if clamp.is_finite() && (1.0..=127.0).contains(&clamp) && clamp.fract() == 0.0 {
        Ok(())
    } else {
        Err(CalibrateError::InvalidClamp(clamp))
    }
}

/// Reference ADMM over every element (f64 accumulation): the iteration the histogram version
/// approximates. Returns `None` if the data has no non-zero finite element.
pub fn admm_scale_exact(
    data: &[f32],
    clamp: f32,
    init_scale: f64,
    iterations: usize,
) -> Option<f64> {
    let clamp = f64::from(clamp);
    let mut alpha = init_scale;
    for _ in 0..iterations {
        let (mut qx, mut qq) = (0.0f64, 0.0f64);
        for &x in data.iter().filter(|x| x.is_finite()) {
            let x = f64::from(x);
            let q = (x / alpha).round().clamp(-clamp, clamp);
            qx += q * x;
            qq += q * q;
        }
        if qq == 0.0 {
            return None;
        }
        alpha = qx / qq;
    }
    (alpha.is_finite() && alpha > 0.0).then_some(alpha)
}

/// Sum of squared errors of symmetric quantization with `scale`, in f64.
pub fn quantization_error(data: &[f32], scale: f64, clamp: f32) -> f64 {
    let clamp = f64::from(clamp);
    data.iter()
        .filter(|x| x.is_finite())
        .map(|&x| {
            let x = f64::from(x);
            let q = (x / scale).round().clamp(-clamp, clamp);
            (x - q * scale).powi(2)
        })
        .sum()
}
