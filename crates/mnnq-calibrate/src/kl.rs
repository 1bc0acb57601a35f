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
    assert_eq!(p.len(), HISTOGRAM_BINS, "KL search needs exactly 2048 bins");
    let mut candidates = Candidates::new(p);
    let count = HISTOGRAM_BINS - KL_TARGET_BINS;

    // The answer is the smallest i among those with the smallest divergence below 10000
    // (MNN's running strict minimum from 10000, in i order). A cheap f64 estimate with a
    // rigorous error bound around MNN's f32 value rules most candidates out; only the rest
    // get the exact f32 evaluation (a logf per bin), and they decide.
    let bounds: Vec<Option<(f64, f64)>> = (KL_TARGET_BINS..HISTOGRAM_BINS)
        .map(|i| {
            let folded = candidates.build(i);
            candidates.estimate(i, folded)
        })
        .collect();
    let mut exact: Vec<Option<f32>> = vec![None; count];
    let mut evaluate = |candidates: &mut Candidates, i: usize| -> f32 {
        *exact[i - KL_TARGET_BINS].get_or_insert_with(|| {
            let folded = candidates.build(i);
            candidates.divergence(i, folded)
        })
    };
    // The candidate with the lowest upper bound gives a divergence to beat.
    let mut to_beat = f64::INFINITY;
    if let Some((offset, _)) = bounds
        .iter()
        .enumerate()
        .filter_map(|(o, b)| b.map(|(_, upper)| (o, upper)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
    {
        let d = evaluate(&mut candidates, KL_TARGET_BINS + offset);
        if !d.is_nan() {
            to_beat = f64::from(d);
        }
    }
    let mut best = KL_TARGET_BINS;
    let mut min_divergence = 10000.0f32;
    for (offset, bound) in bounds.iter().enumerate() {
        // A lower bound above an actual divergence: this candidate cannot be the minimum
        // (nor tie with it).
        if bound.is_some_and(|(lower, _)| lower > to_beat) {
            continue;
        }
        let i = KL_TARGET_BINS + offset;
        let divergence = evaluate(&mut candidates, i);
        // Strict: the first minimum wins; a NaN divergence never wins.
        if divergence < min_divergence {
            min_divergence = divergence;
            best = i;
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
    let mut candidates = Candidates::new(p);
    (KL_TARGET_BINS..HISTOGRAM_BINS)
        .map(|i| {
            let folded = candidates.build(i);
            candidates.divergence(i, folded)
        })
        .collect()
}

/// The distributions of each candidate threshold `i`, built as MNN builds them, with scratch
/// space reused across candidates.
struct Candidates<'p> {
    p: &'p [f32],
    /// `tails[i]`: the running tail MNN holds when it reaches candidate `i`.
    tails: Vec<f32>,
    /// nonzero_before[k]: bins of p[..k] that are not zero (a target bin's spread count).
    nonzero_before: Vec<u32>,
    expanded: Vec<f32>,
    terms: Vec<f32>,
}

impl<'p> Candidates<'p> {
    fn new(p: &'p [f32]) -> Self {
        // Mass beyond the candidate threshold, maintained by subtraction exactly as MNN does
        // (the f32 drift of this running value is part of MNN's result).
        let mut tail = 0.0f32;
        for &v in &p[KL_TARGET_BINS..] {
            tail += v;
        }
        let mut tails = vec![0.0f32; HISTOGRAM_BINS];
        for (i, slot) in tails.iter_mut().enumerate().skip(KL_TARGET_BINS) {
            *slot = tail;
            tail -= p[i];
        }
        let mut nonzero_before = vec![0u32; HISTOGRAM_BINS + 1];
        for (k, &v) in p.iter().enumerate() {
            nonzero_before[k + 1] = nonzero_before[k] + u32::from(v != 0.0);
        }
        Self {
            p,
            tails,
            nonzero_before,
            expanded: vec![0.0; HISTOGRAM_BINS],
            terms: vec![0.0; HISTOGRAM_BINS],
        }
    }

    /// Fills `expanded[..i]` with candidate `i`'s quantized distribution and returns the
    /// reference distribution's last bin (the tail folded into bin `i - 1`; the others are
    /// `p[..i - 1]`).
    fn build(&mut self, i: usize) -> f32 {
        let p = self.p;
        let folded = p[i - 1] + self.tails[i];
        let mut edges = [TargetBinEdges::default(); KL_TARGET_BINS];
        for (j, edge) in edges.iter_mut().enumerate() {
            *edge = TargetBinEdges::new(j, i);
        }
        let mut merged = [0.0f32; KL_TARGET_BINS];
        for (merged_j, edge) in merged.iter_mut().zip(&edges) {
            // Summed in MNN's order: left part, right part, then the whole bins in order.
            let mut sum = 0.0f32;
            if edge.has_left_part() {
                sum += edge.left_scale() * p[edge.left_upper - 1];
            }
            if edge.has_right_part() {
                sum += edge.right_scale() * p[edge.right_lower];
            }
            for &v in &p[edge.left_upper..edge.right_lower] {
                sum += v;
            }
            *merged_j = sum;
        }

        let expanded = &mut self.expanded[..i];
        expanded.fill(0.0);
        for (&merged_j, edge) in merged.iter().zip(&edges) {
            let left_used = edge.has_left_part() && p[edge.left_upper - 1] != 0.0;
            let right_used = edge.has_right_part() && p[edge.right_lower] != 0.0;
            let left_scale = if left_used { edge.left_scale() } else { 0.0 };
            let right_scale = if right_used { edge.right_scale() } else { 0.0 };
            // MNN adds the edge fractions, then 1.0 per non-empty whole bin. Every partial sum
            // is a multiple of 1/128 below 2^17, exact in f32, so adding the count at once
            // gives the same value.
            let whole =
                self.nonzero_before[edge.right_lower] - self.nonzero_before[edge.left_upper];
            let count = left_scale + right_scale + whole as f32;
            if count == 0.0 {
                continue;
            }
            let share = merged_j / count;
            if left_used {
                expanded[edge.left_upper - 1] += share * left_scale;
            }
            // MNN writes one element past its buffer when the last edge lands on i (its UB);
            // that part has no bin here and is dropped. With i/128 exact it does not occur.
            if right_used && edge.right_lower < i {
                expanded[edge.right_lower] += share * right_scale;
            }
            // Whole bins belong to this target bin only: their `0 + share` is `share`.
            let end = edge.right_lower.min(i);
            for (e, &v) in expanded[edge.left_upper..end]
                .iter_mut()
                .zip(&p[edge.left_upper..end])
            {
                *e = if v != 0.0 { share } else { 0.0 };
            }
        }
        folded
    }

    /// MNN's f32 divergence of the candidate last [built](Candidates::build).
    fn divergence(&mut self, i: usize, folded: f32) -> f32 {
        let terms = &mut self.terms[..i];
        kl_terms(
            &self.p[..i - 1],
            &self.expanded[..i - 1],
            &mut terms[..i - 1],
        );
        terms[i - 1] = kl_term(folded, self.expanded[i - 1]);
        // MNN's running f32 sum, in bin order. Empty reference bins give a term of +0.0,
        // which leaves the sum unchanged (it is never -0.0), as MNN's skipping them does.
        let mut divergence = 0.0f32;
        for &t in terms.iter() {
            divergence += t;
        }
        divergence
    }

    /// `(lower, upper)` bounds of [`Candidates::divergence`] for the candidate last built,
    /// from an f64 estimate without `logf`; `None` where the bound does not apply (a bin
    /// whose f32 ratio `P/E` is not a normal number, e.g. a negative folded tail), so the
    /// candidate must be evaluated exactly.
    ///
    /// MNN's value is the f32 running sum of `t_k = fl(P fl(logf(fl(P/E))))`. With `u = 2^-24`:
    /// `fl(P/E)` is within a relative `u` of `P/E`; logf is within a few ulp (glibc: < 1),
    /// taken here as `2^-21 |ln|`; the product adds a relative `u`. So each term is within
    /// `2^-20 P (|ln(P/E)| + 1)` of the real `P ln(P/E)`. The running sum of `n` terms adds at
    /// most `γ_n Σ|t_k|`, `γ_n = n u / (1 - n u)`. The estimate itself (f64 logarithm within
    /// `1e-13 (1 + |ln|)`, f64 sums) is off by far less than the margin added for it.
    fn estimate(&self, i: usize, folded: f32) -> Option<(f64, f64)> {
        let mut totals = estimate_terms(
            crate::simd::active_isa(),
            &self.p[..i - 1],
            &self.expanded[..i - 1],
        );
        totals.add(folded, self.expanded[i - 1]);
        if totals.irregular {
            return None;
        }
        let n = i as f64;
        let u = f64::powi(2.0, -24);
        let gamma = n * u / (1.0 - n * u);
        let term_error = f64::powi(2.0, -20) * totals.weight + 1e-12 * (totals.weight + 1.0);
        let sum_error = gamma * (totals.abs_sum + term_error) + n * f64::EPSILON * totals.abs_sum;
        let margin = (term_error + sum_error) * 1.01 + 1e-30;
        Some((totals.sum - margin, totals.sum + margin))
    }
}

/// Running totals of the estimate: the sum of the terms, of their magnitudes, and the
/// error weight `Σ P (|ln(P/E)| + 1)`.
#[derive(Clone, Copy, Default)]
struct EstimateTotals {
    sum: f64,
    abs_sum: f64,
    weight: f64,
    /// A bin the bound does not cover.
    irregular: bool,
}

impl EstimateTotals {
    fn add(&mut self, p: f32, e: f32) {
        let (term, weight, irregular) = estimate_term(p, e);
        self.sum += term;
        self.abs_sum += term.abs();
        self.weight += weight;
        self.irregular |= irregular;
    }
}

/// One bin of the estimate: `(term, error weight, irregular)`. Branch-free so the loop over
/// bins vectorizes.
#[inline(always)]
fn estimate_term(p: f32, e: f32) -> (f64, f64, bool) {
    let ratio32 = p / e;
    let skip = p == 0.0;
    let one = !skip && e == 0.0;
    let normal = !skip && !one;
    // MNN's f32 ratio must be a positive normal number for the bound on logf to hold.
    let irregular = normal && !(f32::MIN_POSITIVE..=f32::MAX).contains(&ratio32);
    let ratio = if normal {
        f64::from(p) / f64::from(e)
    } else {
        1.0
    };
    let ln = ln_estimate(if irregular { 1.0 } else { ratio });
    let p64 = f64::from(p);
    let term = if normal {
        p64 * ln
    } else if one {
        1.0
    } else {
        0.0
    };
    let weight = if normal { p64 * (ln.abs() + 1.0) } else { 0.0 };
    (term, weight, irregular)
}

/// Lanes of independent f64 accumulators in the estimate loop.
const ESTIMATE_LANES: usize = 8;

#[inline(always)]
fn estimate_terms_body(p: &[f32], expanded: &[f32]) -> EstimateTotals {
    let mut sums = [0.0f64; ESTIMATE_LANES];
    let mut abs_sums = [0.0f64; ESTIMATE_LANES];
    let mut weights = [0.0f64; ESTIMATE_LANES];
    let mut irregular = [false; ESTIMATE_LANES];
    let p_chunks = p.chunks_exact(ESTIMATE_LANES);
    let e_chunks = expanded.chunks_exact(ESTIMATE_LANES);
    let (p_tail, e_tail) = (p_chunks.remainder(), e_chunks.remainder());
    for (pc, ec) in p_chunks.zip(e_chunks) {
        for k in 0..ESTIMATE_LANES {
            let (term, weight, odd) = estimate_term(pc[k], ec[k]);
            sums[k] += term;
            abs_sums[k] += term.abs();
            weights[k] += weight;
            irregular[k] |= odd;
        }
    }
    let mut totals = EstimateTotals {
        sum: sums.iter().sum(),
        abs_sum: abs_sums.iter().sum(),
        weight: weights.iter().sum(),
        irregular: irregular.iter().any(|&b| b),
    };
    for (&pk, &ek) in p_tail.iter().zip(e_tail) {
        totals.add(pk, ek);
    }
    totals
}

crate::simd::multiversion! {
    fn estimate_terms(p: &[f32], expanded: &[f32]) -> EstimateTotals = estimate_terms_body;
}

/// Natural logarithm of a positive normal f64, within `1e-13 (1 + |ln x|)`: `x = 2^k m` with
/// `m` in `[sqrt(1/2), sqrt(2))`, `ln m = 2 atanh(s)`, `s = (m - 1) / (m + 1)`, `|s| < 0.172`,
/// series to `s^15` (the rest is below `2e-14`). Branch-free, so it vectorizes.
#[inline(always)]
fn ln_estimate(x: f64) -> f64 {
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let high = mantissa > std::f64::consts::SQRT_2;
    let m = if high { mantissa * 0.5 } else { mantissa };
    let k = (exponent + i64::from(high)) as f64;
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 2.0 / 15.0;
    let series = series * s2 + 2.0 / 13.0;
    let series = series * s2 + 2.0 / 11.0;
    let series = series * s2 + 2.0 / 9.0;
    let series = series * s2 + 2.0 / 7.0;
    let series = series * s2 + 2.0 / 5.0;
    let series = series * s2 + 2.0 / 3.0;
    let series = series * s2 + 2.0;
    k * std::f64::consts::LN_2 + s * series
}

/// One bin's contribution to MNN's divergence `sum P ln(P/E)`: nothing where `P == 0`, 1
/// where `E == 0`, else `P * logf(P / E)`.
#[inline]
fn kl_term(p: f32, e: f32) -> f32 {
    if p == 0.0 {
        0.0
    } else if e == 0.0 {
        1.0
    } else {
        p * (p / e).ln()
    }
}

/// [`kl_term`] for every bin. Neighbouring bins often repeat both values (empty source bins
/// spread over one target bin have the same `P` and `E`); a repeat reuses the previous term,
/// which is the same f32 since the term is a function of `(P, E)` only.
fn kl_terms(reference: &[f32], expanded: &[f32], terms: &mut [f32]) {
    let (mut last_p, mut last_e, mut last_term) = (f32::NAN, f32::NAN, 0.0f32);
    for ((&p, &e), term) in reference.iter().zip(expanded).zip(terms.iter_mut()) {
        if p.to_bits() != last_p.to_bits() || e.to_bits() != last_e.to_bits() {
            (last_p, last_e, last_term) = (p, e, kl_term(p, e));
        }
        *term = last_term;
    }
}

/// Edges of target bin `j` of the `i`-bin candidate in source-bin coordinates, with MNN's
/// rounding. Target bin `j` covers `[j * i / 128, (j + 1) * i / 128)`; MNN computes those
/// edges in f32, where they are exact (at most 18 significant bits), so integer arithmetic
/// gives the same `ceil`, `floor` and fractions.
#[derive(Clone, Copy, Default)]
struct TargetBinEdges {
    /// `start * 128` and `end * 128`.
    start_128: usize,
    end_128: usize,
    left_upper: usize,
    right_lower: usize,
}

impl TargetBinEdges {
    fn new(j: usize, i: usize) -> Self {
        let start_128 = j * i;
        let end_128 = (j + 1) * i;
        Self {
            start_128,
            end_128,
            left_upper: start_128.div_ceil(KL_TARGET_BINS),
            right_lower: end_128 / KL_TARGET_BINS,
        }
    }
    /// The bin starts inside source bin `left_upper - 1`.
    fn has_left_part(&self) -> bool {
        self.left_upper * KL_TARGET_BINS > self.start_128
    }
    /// `left_upper - start`, exact.
    fn left_scale(&self) -> f32 {
        (self.left_upper * KL_TARGET_BINS - self.start_128) as f32 / KL_TARGET_BINS as f32
    }
    /// The bin ends inside source bin `right_lower`.
    fn has_right_part(&self) -> bool {
        self.right_lower * KL_TARGET_BINS < self.end_128
    }
    /// `end - right_lower`, exact.
    fn right_scale(&self) -> f32 {
        (self.end_128 - self.right_lower * KL_TARGET_BINS) as f32 / KL_TARGET_BINS as f32
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward transcription of MNN's loop this file used before it was optimised
    /// (checked against MNN's scales by the parity tests at the time); the optimised curve
    /// must equal it bit for bit.
    mod straightforward {
        use super::super::{HISTOGRAM_BINS, KL_TARGET_BINS};

        pub(super) fn curve_before_optimisation(p: &[f32]) -> Vec<f32> {
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
                    let edges = OldEdges::new(j, width);
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
                    let edges = OldEdges::new(j, width);
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
        struct OldEdges {
            start: f32,
            end: f32,
            left_upper: usize,
            right_lower: usize,
        }

        impl OldEdges {
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
    }

    fn lcg(seed: u64) -> impl FnMut() -> u32 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        }
    }

    fn distribution(counts: &[u64]) -> Vec<f32> {
        let bins: Vec<f32> = counts.iter().map(|&c| crate::mnn_bin_value(c)).collect();
        mnn_normalise(&bins)
    }

    /// MNN's choice on a full curve: the running strict minimum from 10000.
    fn threshold_of_curve(curve: &[f32]) -> usize {
        let mut best = KL_TARGET_BINS;
        let mut min_divergence = 10000.0f32;
        for (offset, &divergence) in curve.iter().enumerate() {
            if divergence < min_divergence {
                min_divergence = divergence;
                best = KL_TARGET_BINS + offset;
            }
        }
        best
    }

    /// The optimised curve equals the straightforward one bit for bit, and the pruned search
    /// picks the threshold the full curve gives.
    fn assert_same_curve(name: &str, p: &[f32]) {
        let new = kl_divergence_curve(p);
        let old = straightforward::curve_before_optimisation(p);
        let bits = |c: &[f32]| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&new), bits(&old), "{name}");
        assert_eq!(kl_threshold(p), threshold_of_curve(&old), "{name}");
    }

    #[test]
    fn every_estimate_bounds_the_exact_divergence() {
        let mut next = lcg(11);
        for round in 0..4 {
            let counts: Vec<u64> = (0..HISTOGRAM_BINS)
                .map(|b| {
                    let base = (5e5 * (-(b as f64) / (30.0 + 200.0 * round as f64)).exp()) as u64;
                    base + u64::from(next() % 3)
                })
                .collect();
            let p = distribution(&counts);
            let mut candidates = Candidates::new(&p);
            let mut irregular = 0;
            for i in KL_TARGET_BINS..HISTOGRAM_BINS {
                let folded = candidates.build(i);
                let exact = f64::from(candidates.divergence(i, folded));
                let Some((lower, upper)) = candidates.estimate(i, folded) else {
                    // Only where the folded tail drifted to zero or below.
                    assert!(folded <= 0.0, "round {round} i={i}: folded {folded}");
                    irregular += 1;
                    continue;
                };
                assert!(
                    lower <= exact && exact <= upper,
                    "round {round} i={i}: {lower} {exact} {upper}"
                );
                // Tight enough to rule candidates out.
                assert!(
                    upper - lower < 1e-3 * (1.0 + exact.abs()),
                    "{lower} {upper}"
                );
            }
            assert!(
                irregular < 100,
                "round {round}: {irregular} irregular candidates"
            );
        }
    }

    #[test]
    fn ln_estimate_is_within_its_stated_error() {
        let mut next = lcg(3);
        let mut values = vec![
            1.0,
            2.0,
            0.5,
            std::f64::consts::SQRT_2,
            1e-30,
            1e30,
            1.0 + 1e-9,
        ];
        values.extend((0..20_000).map(|_| {
            let m = 1.0 + f64::from(next()) / f64::from(u32::MAX);
            m * f64::powi(2.0, (next() % 200) as i32 - 100)
        }));
        for x in values {
            let error = (ln_estimate(x) - x.ln()).abs();
            assert!(
                error <= 1e-13 * (1.0 + x.ln().abs()),
                "ln({x}): off by {error}"
            );
        }
    }

    #[test]
    fn ties_and_flat_curves_pick_the_first_minimum() {
        // Uniform mass: many candidates have close or equal divergences.
        let flat = distribution(&vec![1000u64; HISTOGRAM_BINS]);
        assert_same_curve("flat", &flat);
        // All mass in the first bins: every candidate from 128 on folds the same tail.
        let mut head = vec![0u64; HISTOGRAM_BINS];
        head[..64].iter_mut().for_each(|c| *c = 777);
        assert_same_curve("head", &distribution(&head));
    }

    #[test]
    fn optimised_curve_equals_the_straightforward_one_bit_for_bit() {
        let mut next = lcg(7);
        // Dense, sparse, decaying, spiky, all-empty-but-one, and raw (unnormalised, with
        // exact zeros, which MNN's 1e-7 start never gives but the function accepts).
        let mut cases: Vec<(String, Vec<f32>)> = Vec::new();
        for round in 0..6 {
            let dense: Vec<u64> = (0..HISTOGRAM_BINS)
                .map(|_| u64::from(next() % 1000))
                .collect();
            cases.push((format!("dense {round}"), distribution(&dense)));
            let sparse: Vec<u64> = (0..HISTOGRAM_BINS)
                .map(|_| {
                    if next().is_multiple_of(7) {
                        u64::from(next() % 50)
                    } else {
                        0
                    }
                })
                .collect();
            cases.push((format!("sparse {round}"), distribution(&sparse)));
            let scale = 20.0 + f64::from(next() % 400);
            let decaying: Vec<u64> = (0..HISTOGRAM_BINS)
                .map(|b| (1e6 * (-(b as f64) / scale).exp()) as u64)
                .collect();
            cases.push((format!("decaying {round}"), distribution(&decaying)));
            let mut spiky = vec![0u64; HISTOGRAM_BINS];
            for _ in 0..5 {
                spiky[next() as usize % HISTOGRAM_BINS] = u64::from(next() % 100_000);
            }
            cases.push((format!("spiky {round}"), distribution(&spiky)));
            let raw: Vec<f32> = (0..HISTOGRAM_BINS)
                .map(|_| {
                    if next().is_multiple_of(3) {
                        0.0
                    } else {
                        (next() % 100) as f32 * 1e-4
                    }
                })
                .collect();
            cases.push((format!("raw {round}"), raw));
        }
        let mut one = vec![0u64; HISTOGRAM_BINS];
        one[0] = 1_000_000;
        cases.push(("one bin".into(), distribution(&one)));
        for (name, p) in &cases {
            assert_same_curve(name, p);
        }
    }

    #[test]
    fn real_feature_histograms_give_the_same_curve() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut checked = 0;
        for model in ["efficientnet_lite0", "ppocr_cls_v2"] {
            let path = dir.join(format!("{model}_feature_histograms.json"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                println!("SKIPPED: {} not found", path.display());
                continue;
            };
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            let tensors = json["tensors"].as_array().expect("a tensors array");
            // A spread of tensors keeps the test quick.
            for tensor in tensors.iter().step_by(7).take(12) {
                let mut counts = vec![0u64; HISTOGRAM_BINS];
                let bins = tensor["bins"].as_array().expect("bins");
                for (bin, count) in bins
                    .iter()
                    .zip(tensor["counts"].as_array().expect("counts"))
                {
                    counts[bin.as_u64().unwrap() as usize] = count.as_u64().unwrap();
                }
                assert_same_curve(model, &distribution(&counts));
                checked += 1;
            }
        }
        if checked == 0 {
            println!("SKIPPED: no real histograms found");
        }
    }
}
