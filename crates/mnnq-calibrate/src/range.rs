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

    /// Folds all elements of one tensor visit into the range.
    pub fn update(&mut self, data: &[f32]) {
        let (mut lo, mut hi) = (self.min, self.max);
        for &x in data {
            // `x < lo` is false for NaN: NaN never enters the range.
            if x < lo {
                lo = x;
            }
            if x > hi {
                hi = x;
            }
        }
        self.min = lo;
        self.max = hi;
    }

    /// Combines two partial ranges; min/max are order independent.
    pub fn merge(&mut self, other: &RangeStats) {
        if other.min < self.min {
            self.min = other.min;
        }
        if other.max > self.max {
            self.max = other.max;
        }
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
