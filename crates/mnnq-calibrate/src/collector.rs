//! Per-tensor bookkeeping for the two calibration passes, fed by the executor's observer.

use std::collections::{BTreeMap, HashSet};

use rayon::prelude::*;

use crate::{
    kl_feature_scale, AbsHistogram, AdmmHistogram, AdmmOptions, CalibrateError, RangeStats,
    TensorId, ThresholdMethod,
};

/// How feature scales are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeatureMethod {
    /// MNN's KL (2048-bin |x| histogram); [`ThresholdMethod::Max`] where a tensor asks for it.
    Kl,
    /// Streaming ADMM on a fine |x| histogram of `bins` bins.
    Admm { bins: usize, options: AdmmOptions },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Pass 1: global min/max per tensor.
    Range,
    /// Pass 2: histograms over the pass-1 ranges.
    Distribution,
}

#[derive(Debug, Clone, PartialEq)]
struct TensorEntry {
    threshold: ThresholdMethod,
    range: RangeStats,
    kl: Option<AbsHistogram>,
    admm: Option<AdmmHistogram>,
}

/// Collects statistics of the tracked tensors over all calibration images, in two passes,
/// like MNN's `quantized.out`: within one image only the first visit of a tensor counts.
///
/// Images may be processed in parallel: give each worker [`FeatureCollector::partial`] and
/// [`FeatureCollector::merge`] the partials back in; all accumulators are exact integers or
/// min/max, so the result does not depend on thread count or merge order.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureCollector {
    method: FeatureMethod,
    pass: Pass,
    tensors: BTreeMap<TensorId, TensorEntry>,
    visited: HashSet<TensorId>,
}

impl FeatureCollector {
    pub fn new(method: FeatureMethod) -> Self {
        Self {
            method,
            pass: Pass::Range,
            tensors: BTreeMap::new(),
            visited: HashSet::new(),
        }
    }

    /// Declares a tensor to calibrate, with its KL threshold method (e.g. from
    /// [`crate::small_tensor_uses_max`]; ignored by ADMM). Tracking again updates the method.
    pub fn track(&mut self, tensor: TensorId, threshold: ThresholdMethod) {
        self.tensors
            .entry(tensor)
            .and_modify(|entry| entry.threshold = threshold)
            .or_insert(TensorEntry {
                threshold,
                range: RangeStats::new(),
                kl: None,
                admm: None,
            });
    }

    pub fn is_tracked(&self, tensor: TensorId) -> bool {
        self.tensors.contains_key(&tensor)
    }

    pub fn pass(&self) -> Pass {
        self.pass
    }

    /// Starts a new image: every tensor may be observed once again.
    pub fn begin_image(&mut self) {
        self.visited.clear();
    }

    /// The executor's observer: `data` is the tensor's content in logical NCHW order.
    /// Untracked tensors and repeated visits within one image are ignored.
    pub fn observe(&mut self, tensor: TensorId, data: &[f32]) {
        let Some(entry) = self.tensors.get_mut(&tensor) else {
            return;
        };
        if !self.visited.insert(tensor) {
            return;
        }
        match self.pass {
            Pass::Range => entry.range.update(data),
            Pass::Distribution => {
                if let Some(histogram) = &mut entry.kl {
                    histogram.add_slice(data);
                }
                if let Some(histogram) = &mut entry.admm {
                    histogram.add_slice(data);
                }
            }
        }
    }

    /// Ends pass 1 and builds each tensor's histogram over its range (none for invalid,
    /// all-zero tensors, which get no scale).
    pub fn start_distribution_pass(&mut self) -> Result<(), CalibrateError> {
        if self.pass != Pass::Range {
            return Err(CalibrateError::InvalidOption(
                "the distribution pass was already started".into(),
            ));
        }
        for entry in self.tensors.values_mut() {
            match self.method {
                FeatureMethod::Kl => entry.kl = AbsHistogram::for_range(&entry.range),
                FeatureMethod::Admm { bins, .. } => {
                    entry.admm = AdmmHistogram::for_range(&entry.range, bins)?
                }
            }
        }
        self.pass = Pass::Distribution;
        self.visited.clear();
        Ok(())
    }

    /// An empty collector for one worker's images in the current pass (same tensors, same
    /// ranges and empty histograms in pass 2).
    pub fn partial(&self) -> Self {
        let mut partial = self.clone();
        partial.visited.clear();
        for entry in partial.tensors.values_mut() {
            match self.pass {
                Pass::Range => entry.range = RangeStats::new(),
                Pass::Distribution => {
                    entry.kl = entry.kl.as_ref().and_then(|h| {
                        AbsHistogram::from_counts(h.max_abs(), vec![0; h.counts().len()])
                            .ok()
                            .flatten()
                    });
                    if let Some(h) = &entry.admm {
                        entry.admm = AdmmHistogram::for_range(&entry.range, h.bins())
                            .ok()
                            .flatten();
                    }
                }
            }
        }
        partial
    }

    /// Adds a worker's partial (from [`FeatureCollector::partial`] in the same pass).
    pub fn merge(&mut self, partial: &FeatureCollector) -> Result<(), CalibrateError> {
        if partial.pass != self.pass {
            return Err(CalibrateError::InvalidOption(
                "cannot merge statistics of different passes".into(),
            ));
        }
        for (tensor, theirs) in &partial.tensors {
            let Some(mine) = self.tensors.get_mut(tensor) else {
                return Err(CalibrateError::InvalidOption(format!(
                    "partial statistics for untracked tensor {tensor}"
                )));
            };
            match self.pass {
                Pass::Range => mine.range.merge(&theirs.range),
                Pass::Distribution => {
                    if let (Some(a), Some(b)) = (&mut mine.kl, &theirs.kl) {
                        a.merge(b)?;
                    }
                    if let (Some(a), Some(b)) = (&mut mine.admm, &theirs.admm) {
                        a.merge(b)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Pass-1 range of a tensor.
    pub fn range(&self, tensor: TensorId) -> Option<RangeStats> {
        self.tensors.get(&tensor).map(|entry| entry.range)
    }

    /// KL histogram of a tensor (pass 2, KL method).
    pub fn histogram(&self, tensor: TensorId) -> Option<&AbsHistogram> {
        self.tensors
            .get(&tensor)
            .and_then(|entry| entry.kl.as_ref())
    }

    /// Feature scales after pass 2, computed in parallel over tensors. Tensors without a
    /// valid range or without data get no entry (never a zero scale).
    pub fn scales(&self, clamp: f32) -> Result<BTreeMap<TensorId, f32>, CalibrateError> {
        crate::admm::validate_clamp(clamp)?;
        if self.pass != Pass::Distribution {
            return Err(CalibrateError::InvalidOption(
                "scales need the distribution pass".into(),
            ));
        }
        let entries: Vec<(&TensorId, &TensorEntry)> = self.tensors.iter().collect();
        let scales: Result<Vec<Option<(TensorId, f32)>>, CalibrateError> = entries
            .par_iter()
            .map(|&(&tensor, entry)| {
                let scale = match self.method {
                    FeatureMethod::Kl => entry
                        .kl
                        .as_ref()
                        .map(|h| kl_feature_scale(h, entry.threshold, clamp).scale),
                    FeatureMethod::Admm { options, .. } => match &entry.admm {
                        Some(h) => h
                            .admm_scale(&AdmmOptions { clamp, ..options })?
                            .map(|r| r.scale),
                        None => None,
                    },
                };
                Ok(scale
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(|s| (tensor, s)))
            })
            .collect();
        Ok(scales?.into_iter().flatten().collect())
    }
}
