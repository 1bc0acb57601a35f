use crate::simd::multiversion;

/// Running minimum and maximum of a tensor over all calibration images (KL pass 1).
///
/// Initialised exactly as MNN's `TensorStatistic` (min = +1e5, max = -1e5), so a tensor whose
/// values all exceed 1e5 keeps min = 1e5, as in MNN. NaN elements are ignored, which is what
/// MNN's `std::min`/`std::max` fold does with a NaN second argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RangeStats {
    pub min: f32,
    pub max: f32,
}

impl Default for RangeStats {
    fn default() -> Self {
        Self::new()
    }
}

impl RangeStats {
    /// MNN's initial range: min = 100000, max = -100000.
    pub const INITIAL_MIN: f32 = 100_000.0;
    pub const INITIAL_MAX: f32 = -100_000.0;

    pub fn new() -> Self {
        Self {
            min: Self::INITIAL_MIN,
            max: Self::INITIAL_MAX,
        }
    }

    /// Folds all elements of one tensor visit into the range (vectorized for the CPU's
    /// instruction set; the result does not depend on it, nor on the order of `data`).
    pub fn update(&mut self, data: &[f32]) {
        self.update_with(crate::simd::active_isa(), data);
    }

    pub(crate) fn update_with(&mut self, isa: crate::simd::Isa, data: &[f32]) {
        let (lo, hi) = min_max(isa, data, self.min, self.max);
        self.min = positive_zero(lo);
        self.max = positive_zero(hi);
    }

    /// Combines two partial ranges; min/max are order independent.
    pub fn merge(&mut self, other: &RangeStats) {
        if other.min < self.min {
            self.min = other.min;
        }
        if other.max > self.max {
            self.max = other.max;
        }
        self.min = positive_zero(self.min);
        self.max = positive_zero(self.max);
    }

    /// `max(|max|, |min|)` in f32, as MNN computes it before building the histogram.
    pub fn max_abs(&self) -> f32 {
        let a = self.max.abs();
        let b = self.min.abs();
        if a < b {
            b
        } else {
            a
        }
    }

    /// MNN's validity test: a tensor with `max_abs <= 1e-5` gets no histogram and no scale.
    pub fn is_valid(&self) -> bool {
        self.max_abs() > 1e-5f32
    }
}

/// `-0.0` becomes `+0.0`. `min`/`max` keep the first of equal values, so which zero ends a
/// range would depend on element order and thread count; only `|min|` and `|max|` are used,
/// so the sign of a zero end carries no information and is fixed to `+`.
fn positive_zero(x: f32) -> f32 {
    if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// Independent running min/max per lane, so the compiler can keep them in vector registers.
const LANES: usize = 32;

/// `(min, max)` of `lo`, `hi` and `data`, ignoring NaN. Exact: min and max of the same
/// values in any grouping are the same values (up to the sign of zero, see [`positive_zero`]).
#[inline(always)]
fn min_max_body(data: &[f32], lo: f32, hi: f32) -> (f32, f32) {
    // `x < lo` and `x > hi` are false for NaN: NaN never enters the range.
    #[inline(always)]
    fn fold(x: f32, lo: f32, hi: f32) -> (f32, f32) {
        (if x < lo { x } else { lo }, if x > hi { x } else { hi })
    }
    let chunks = data.chunks_exact(LANES);
    let tail = chunks.remainder();
    let (mut lo, mut hi) = (lo, hi);
    if data.len() >= LANES {
        let mut lows = [lo; LANES];
        let mut highs = [hi; LANES];
        for chunk in chunks {
            for k in 0..LANES {
                (lows[k], highs[k]) = fold(chunk[k], lows[k], highs[k]);
            }
        }
        for k in 0..LANES {
            (lo, _) = fold(lows[k], lo, hi);
            (_, hi) = fold(highs[k], lo, hi);
        }
    }
    for &x in tail {
        (lo, hi) = fold(x, lo, hi);
    }
    (lo, hi)
}

multiversion! {
    fn min_max(data: &[f32], lo: f32, hi: f32) -> (f32, f32) = min_max_body;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Isa;

    /// The plain element-by-element fold, MNN's `std::min`/`std::max` loop.
    fn reference(data: &[f32]) -> (f32, f32) {
        let (mut lo, mut hi) = (RangeStats::INITIAL_MIN, RangeStats::INITIAL_MAX);
        for &x in data {
            if x < lo {
                lo = x;
            }
            if x > hi {
                hi = x;
            }
        }
        (positive_zero(lo), positive_zero(hi))
    }

    /// Deterministic pseudo-random values with NaN, infinities, zeros of both signs,
    /// subnormals and the extremes sprinkled in.
    fn awkward_data(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (state >> 33) as u32;
                match r % 97 {
                    0 => f32::NAN,
                    1 => -0.0,
                    2 => 0.0,
                    3 => f32::from_bits(r % 1000), // subnormal
                    4 if n > 500 => f32::INFINITY,
                    5 if n > 500 => f32::NEG_INFINITY,
                    6 => f32::MAX,
                    _ => (r as f32 / u32::MAX as f32 - 0.45) * 3.0e5,
                }
            })
            .collect()
    }

    #[test]
    fn every_instruction_set_matches_the_scalar_fold() {
        for isa in Isa::supported() {
            for (n, seed) in [
                (0, 1),
                (1, 2),
                (31, 3),
                (32, 4),
                (33, 5),
                (1000, 6),
                (4099, 7),
            ] {
                let data = awkward_data(n, seed);
                for start in 0..3.min(n + 1) {
                    let slice = &data[start..];
                    let mut range = RangeStats::new();
                    range.update_with(isa, slice);
                    let (lo, hi) = reference(slice);
                    assert_eq!(
                        (range.min.to_bits(), range.max.to_bits()),
                        (lo.to_bits(), hi.to_bits()),
                        "{isa} n={n} start={start}"
                    );
                }
            }
        }
    }

    #[test]
    fn element_order_and_splitting_do_not_change_the_range() {
        let mut data: Vec<f32> = (0..777)
            .map(|i| ((i * 37 % 101) as f32 - 60.0) * 0.5)
            .collect();
        data[5] = -0.0;
        data[400] = f32::NAN;
        let mut whole = RangeStats::new();
        whole.update(&data);
        data.reverse();
        let mut parts = RangeStats::new();
        let mut other = RangeStats::new();
        parts.update(&data[..300]);
        other.update(&data[300..]);
        parts.merge(&other);
        assert_eq!(whole, parts);
        assert_eq!((whole.min, whole.max), (-30.0, 20.0));
    }

    #[test]
    fn a_zero_end_is_positive_whatever_the_order() {
        for data in [[-0.0f32, 0.0, 1.0], [0.0, -0.0, 1.0]] {
            let mut range = RangeStats::new();
            range.update(&data);
            assert_eq!(range.min.to_bits(), 0.0f32.to_bits());
        }
    }
}
