//! Feature scales by ADMM (alternating least squares of the quantization error), computed
//! from a fine histogram so it streams over any number of images in bounded memory.
//!
//! MNN's feature ADMM (`computeScaleADMM`) packs all images into one batch and iterates over
//! every element; its layout handling is broken for NCHW models (doc §5). This version keeps,
//! per bin of |x|, the exact element count and the exact sum of |x| (fixed point, u128), and
//! runs the same iteration (q = clamp(round(x / alpha)), alpha = sum(q x) / sum(q^2)) on the
//! distribution the histogram describes (see `BinModel`). Because the quantizer is
//! odd-symmetric (zero point 0), q(x) x and q(x)^2 depend on |x| only, so a histogram of |x|
//! loses nothing but the position of elements inside a bin. Each step is an exact
//! minimisation on that distribution, so the modelled error never increases.

use crate::{CalibrateError, RangeStats};

/// Bins of the fine |x| histogram: 24 bytes per bin, ~390 KB per tensor (measured scale error
/// against the all-data ADMM: < 5e-5 relative; 4096 bins: < 2e-4).
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
    /// Maximum number of iterations (stops earlier once alpha moves by < 1e-12 relative).
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
    /// Iterations run.
    pub iterations: usize,
    /// Alpha settled before `max_iterations` (MNN always runs all 300; near a fixed point
    /// ADMM creeps slowly, so on smooth data 300 is typically reached).
    pub converged: bool,
    /// Mean squared quantization error at `scale` over all elements (zeros included), on the
    /// distribution the histogram models.
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

    /// Runs ADMM on the histogram. `None` when no non-zero element was seen.
    pub fn admm_scale(&self, options: &AdmmOptions) -> Result<Option<AdmmResult>, CalibrateError> {
        validate_clamp(options.clamp)?;
        if !(options.init_divisor.is_finite() && options.init_divisor > 0.0) {
            return Err(CalibrateError::InvalidOption(format!(
                "ADMM init divisor must be a positive number, got {}",
                options.init_divisor
            )));
        }
        let model = BinModel::new(self);
        if model.total_count == 0.0 {
            return Ok(None);
        }
        let levels = options.clamp as usize;
        let sum_of_squares = self.fixed_square_sum as f64 * 2f64.powi(-SQUARE_FRACTION_BITS);

        // Values are in units of max_abs. With codes q(x) = min(clamp, round(x / alpha)):
        //   sum q x   = sum_k sum_{x >= (k - 1/2) alpha} x        (k = 1..=clamp)
        //   sum q^2   = sum_k (2k - 1) #{x >= (k - 1/2) alpha}
        let moments = |alpha: f64| -> (f64, f64) {
            let (mut qx, mut qq) = (0.0, 0.0);
            for k in 1..=levels {
                let (count, sum) = model.at_or_above((k as f64 - 0.5) * alpha);
                if count == 0.0 {
                    break;
                }
                qx += sum;
                qq += (2 * k - 1) as f64 * count;
            }
            (qx, qq)
        };

        let mut alpha = 1.0 / (f64::from(options.clamp) * options.init_divisor);
        let mut iterations = 0;
        let mut converged = false;
        while iterations < options.max_iterations {
            let (qx, qq) = moments(alpha);
            if qq == 0.0 {
                break;
            }
            let next = qx / qq;
            iterations += 1;
            let settled = (next - alpha).abs() <= 1e-12 * alpha;
            alpha = next;
            if settled {
                converged = true;
                break;
            }
        }
        let (qx, qq) = moments(alpha);
        let unit_error = (sum_of_squares - 2.0 * alpha * qx + alpha * alpha * qq).max(0.0);
        let max_abs = f64::from(self.max_abs);
        let elements = model.total_count + self.zero_count as f64;
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

/// The histogram as a continuous distribution of |x| / max_abs: inside each bin a density
/// whose mass and mean are exactly the bin's count and mean, so the model is a consistent
/// distribution and each ADMM step is an exact minimisation on it (the error never rises).
/// The in-bin shape is a power law in the position t in [0, 1]: `(k+1) t^k` when the mean
/// position m >= 1/2 (k = (2m-1)/(1-m)), mirrored `(k+1) (1-t)^k` below (k = (1-2m)/m);
/// k = 0 is uniform. Splitting a bin at an arbitrary point then moves a fraction of its
/// elements, as the all-data iteration does, instead of the whole bin: without it the
/// iteration stalls early at a fixed point of the coarse problem (measured: 0.6% off the
/// all-data scale on a Gaussian with outliers, against < 0.01% with it).
struct BinModel {
    bin_width: f64,
    counts: Vec<f64>,
    shapes: Vec<BinShape>,
    /// Count and sum of |x| in bins >= b.
    count_from: Vec<f64>,
    sum_from: Vec<f64>,
    total_count: f64,
}

#[derive(Clone, Copy)]
enum BinShape {
    /// Density (k+1) t^k: mass towards the top of the bin.
    Rising(f64),
    /// Density (k+1) (1-t)^k: mass towards the bottom.
    Falling(f64),
}

impl BinShape {
    fn for_mean_position(m: f64) -> Self {
        // Keep k finite: a bin holding only values on its upper edge (the maximum itself)
        // has m = 1; 1e-12 off changes its modelled sum by a negligible 1e-12 relative.
        let m = m.clamp(1e-12, 1.0 - 1e-12);
        if m >= 0.5 {
            BinShape::Rising((2.0 * m - 1.0) / (1.0 - m))
        } else {
            BinShape::Falling((1.0 - 2.0 * m) / m)
        }
    }

    /// Mass and first moment (of t) of the part of the bin above position tau.
    fn above(self, tau: f64) -> (f64, f64) {
        match self {
            BinShape::Rising(k) => (
                1.0 - tau.powf(k + 1.0),
                (k + 1.0) / (k + 2.0) * (1.0 - tau.powf(k + 2.0)),
            ),
            BinShape::Falling(k) => {
                let rest = (1.0 - tau).powf(k + 1.0);
                (rest, rest - (k + 1.0) / (k + 2.0) * rest * (1.0 - tau))
            }
        }
    }
}

impl BinModel {
    fn new(histogram: &AdmmHistogram) -> Self {
        let bins = histogram.counts.len();
        let bin_width = 1.0 / bins as f64;
        let sum_unit = 2f64.powi(-SUM_FRACTION_BITS);
        let mut counts = Vec::with_capacity(bins);
        let mut shapes = Vec::with_capacity(bins);
        for (b, (&n, &fixed_sum)) in histogram
            .counts
            .iter()
            .zip(&histogram.fixed_sums)
            .enumerate()
        {
            let n = n as f64;
            counts.push(n);
            let mean_position = if n == 0.0 {
                0.5
            } else {
                (fixed_sum as f64 * sum_unit / n - b as f64 * bin_width) / bin_width
            };
            shapes.push(BinShape::for_mean_position(mean_position));
        }
        let mut count_from = vec![0.0; bins + 1];
        let mut sum_from = vec![0.0; bins + 1];
        let (mut running_count, mut running_sum) = (0u128, 0u128);
        for b in (0..bins).rev() {
            running_count += u128::from(histogram.counts[b]);
            running_sum += histogram.fixed_sums[b];
            count_from[b] = running_count as f64;
            sum_from[b] = running_sum as f64 * sum_unit;
        }
        Self {
            bin_width,
            total_count: count_from[0],
            counts,
            shapes,
            count_from,
            sum_from,
        }
    }

    /// Count and sum of the values >= `threshold`.
    fn at_or_above(&self, threshold: f64) -> (f64, f64) {
        let bins = self.counts.len();
        let position = threshold / self.bin_width;
        if position >= bins as f64 {
            return (0.0, 0.0);
        }
        let bin = position.max(0.0) as usize;
        let tau = (position - bin as f64).clamp(0.0, 1.0);
        let n = self.counts[bin];
        let (mass_above, moment_above) = self.shapes[bin].above(tau);
        let low = bin as f64 * self.bin_width;
        let count = self.count_from[bin + 1] + n * mass_above;
        let sum = self.sum_from[bin + 1] + n * (low * mass_above + self.bin_width * moment_above);
        (count, sum)
    }
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
