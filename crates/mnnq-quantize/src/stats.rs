//! The two calibration passes (doc §4.2-4.3): per tensor a global min/max, then an |x|
//! histogram over the same images. Images are streamed (preprocess, run, fold, drop), so
//! memory does not grow with the number of images. Worker `w` of `T` takes images
//! `w, w+T, ...`; every accumulator merges exactly (min/max, integer counts), so the result
//! does not depend on `T`. Workers are still merged in a fixed order.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use mnnq_calibrate::{AbsHistogram, AdmmHistogram, RangeStats};

use crate::plan::CalibrationPlan;
use crate::progress::Progress;
use crate::QuantizeError;

/// One calibration entry as model inputs: `(input name, data)` per input, the data in the
/// input's logical row-major order (an image gives one pair).
pub type Sample = Vec<(String, Vec<f32>)>;

/// One float forward pass that shows every tracked tensor it computes.
pub trait ForwardPass {
    /// Runs the model on one calibration sample; calls `visit` with `(tensor index, data)`
    /// for every computed tensor. `data` holds every element of the tensor exactly once, in
    /// any order (the statistics here do not depend on it).
    fn forward(
        &mut self,
        sample: Sample,
        visit: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), String>;
}

/// Makes one [`ForwardPass`] per worker thread.
pub type RunnerFactory<'a> =
    dyn Fn() -> Result<Box<dyn ForwardPass + 'a>, QuantizeError> + Sync + 'a;

/// Turns calibration entry `i` (an image, or a sequence sample) into the model inputs, or
/// says why it cannot be used.
pub type ImageLoader<'a> = dyn Fn(usize) -> Result<Sample, String> + Sync + 'a;

/// Keeps per-entry work of the first pass (decoded images) for the second, within a fixed
/// byte budget, so memory stays bounded whatever the number of images. Each entry is made in
/// pass 1 and taken (removed) in pass 2, so the cache empties as pass 2 goes. What gets
/// cached only changes the time taken, never a result: a missing entry is made again.
pub struct PassCache<T> {
    budget: usize,
    /// Bytes held, and the entries.
    state: Mutex<(usize, HashMap<usize, T>)>,
}

impl<T: Clone> PassCache<T> {
    pub fn new(budget_bytes: usize) -> Self {
        PassCache {
            budget: budget_bytes,
            state: Mutex::new((0, HashMap::new())),
        }
    }

    /// Entry `index`: taken out of the cache if it is there, else made with `make` (a copy is
    /// kept when `bytes(&value)` fits in what is left of the budget).
    pub fn take_or_make<E>(
        &self,
        index: usize,
        bytes: impl Fn(&T) -> usize,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if let Ok(mut state) = self.state.lock() {
            if let Some(value) = state.1.remove(&index) {
                state.0 -= bytes(&value);
                return Ok(value);
            }
        }
        let value = make()?;
        let size = bytes(&value);
        if let Ok(mut state) = self.state.lock() {
            if state.0 + size <= self.budget {
                state.0 += size;
                state.1.insert(index, value.clone());
            }
        }
        Ok(value)
    }

    /// Bytes currently held.
    pub fn held_bytes(&self) -> usize {
        self.state.lock().map(|s| s.0).unwrap_or(0)
    }
}

/// A calibration entry that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SkippedImage {
    pub index: usize,
    pub path: PathBuf,
    pub reason: String,
}

/// The calibration inputs: file names (for messages) and how to load each.
pub struct Images<'a> {
    pub files: &'a [PathBuf],
    pub load: &'a ImageLoader<'a>,
}

/// Feature statistic collected in pass 2.
#[derive(Clone, Debug)]
pub enum Histograms {
    /// 2048-bin MNN histograms for KL (None: the tensor has no usable range).
    Kl(Vec<Option<AbsHistogram>>),
    /// Streaming ADMM histograms (None: no usable range).
    Admm(Vec<Option<AdmmHistogram>>),
}

/// What one pass runs over: the tracked tensors, the images, the workers.
pub struct Pass<'a> {
    pub plan: &'a CalibrationPlan,
    pub images: &'a Images<'a>,
    /// Worker threads (at least 1; at most one per image).
    pub threads: usize,
    pub make_runner: &'a RunnerFactory<'a>,
    pub progress: &'a dyn Progress,
}

/// A worker's result, or the index of the image it failed on and why.
type WorkerResult<A> = Result<(A, Vec<SkippedImage>), (usize, QuantizeError)>;

/// Runs one pass over all images with `pass.threads` workers. `fold(acc, slot, data)` adds
/// one tensor's data of one image; accumulators are merged in worker order.
fn run_pass<A: Send>(
    pass: &Pass,
    init: &(dyn Fn() -> A + Sync),
    fold: &(dyn Fn(&mut A, usize, &[f32]) + Sync),
    merge: &dyn Fn(&mut A, A) -> Result<(), QuantizeError>,
) -> Result<(A, Vec<SkippedImage>), QuantizeError> {
    let Pass {
        plan,
        images,
        threads,
        make_runner,
        progress,
    } = *pass;
    let count = images.files.len();
    let threads = threads.clamp(1, count.max(1));
    let done = AtomicUsize::new(0);
    let first_error: Mutex<Option<(usize, QuantizeError)>> = Mutex::new(None);
    let worker = |w: usize| -> WorkerResult<A> {
        let mut runner = make_runner().map_err(|e| (w, e))?;
        let mut acc = init();
        let mut skipped = Vec::new();
        let mut seen = vec![false; plan.len()];
        for index in (w..count).step_by(threads) {
            if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                break;
            }
            let input = match (images.load)(index) {
                Ok(input) => input,
                Err(reason) => {
                    skipped.push(SkippedImage {
                        index,
                        path: images.files[index].clone(),
                        reason,
                    });
                    progress.advance(done.fetch_add(1, Ordering::Relaxed) + 1);
                    continue;
                }
            };
            seen.iter_mut().for_each(|s| *s = false);
            runner
                .forward(input, &mut |tensor, data| {
                    if let Some(slot) = plan.slot(tensor) {
                        // MNN counts a tensor once per forward (its first visit).
                        if !seen[slot] {
                            seen[slot] = true;
                            fold(&mut acc, slot, data);
                        }
                    }
                })
                .map_err(|message| {
                    (
                        index,
                        QuantizeError::Run {
                            image: images.files[index].clone(),
                            message,
                        },
                    )
                })?;
            for (slot, tensor) in plan.tensors.iter().enumerate() {
                if let (Some(values), false) = (&tensor.constant, seen[slot]) {
                    fold(&mut acc, slot, values);
                }
            }
            progress.advance(done.fetch_add(1, Ordering::Relaxed) + 1);
        }
        Ok((acc, skipped))
    };
    let results: Vec<WorkerResult<A>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let worker = &worker;
                let first_error = &first_error;
                scope.spawn(move || {
                    let result = worker(w);
                    if let Err((index, _)) = &result {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert((*index, QuantizeError::Usage(String::new())));
                        }
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err((
                        usize::MAX,
                        QuantizeError::Usage("a calibration worker panicked".into()),
                    ))
                })
            })
            .collect()
    });
    let mut total: Option<A> = None;
    let mut skipped = Vec::new();
    // Report the failure of the earliest image, whatever the thread count.
    let mut failure: Option<(usize, QuantizeError)> = None;
    for result in results {
        match result {
            Ok((acc, mut s)) => {
                skipped.append(&mut s);
                match &mut total {
                    None => total = Some(acc),
                    Some(t) => merge(t, acc)?,
                }
            }
            Err((index, error)) => {
                if failure.as_ref().is_none_or(|(i, _)| index < *i) {
                    failure = Some((index, error));
                }
            }
        }
    }
    if let Some((_, error)) = failure {
        return Err(error);
    }
    skipped.sort_by_key(|s| s.index);
    Ok((total.unwrap_or_else(init), skipped))
}

/// Pass 1: global min/max of every tracked tensor over all images.
pub fn collect_ranges(pass: &Pass) -> Result<(Vec<RangeStats>, Vec<SkippedImage>), QuantizeError> {
    let n = pass.plan.len();
    run_pass(
        pass,
        &|| vec![RangeStats::new(); n],
        &|acc: &mut Vec<RangeStats>, slot, data| acc[slot].update(data),
        &|total: &mut Vec<RangeStats>, other| {
            for (t, o) in total.iter_mut().zip(&other) {
                t.merge(o);
            }
            Ok(())
        },
    )
}

/// Which histogram pass 2 builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistogramKind {
    Kl,
    /// ADMM histogram with this many bins.
    Admm(usize),
}

/// Pass 2: |x| histograms over the pass-1 ranges.
pub fn collect_histograms(
    pass: &Pass,
    ranges: &[RangeStats],
    kind: HistogramKind,
) -> Result<Histograms, QuantizeError> {
    let (histograms, _) = match kind {
        HistogramKind::Kl => {
            let init = || {
                ranges
                    .iter()
                    .map(AbsHistogram::for_range)
                    .collect::<Vec<_>>()
            };
            let (h, s) = run_pass(
                pass,
                &init,
                &|acc: &mut Vec<Option<AbsHistogram>>, slot, data| {
                    if let Some(h) = &mut acc[slot] {
                        h.add_slice(data);
                    }
                },
                &|total: &mut Vec<Option<AbsHistogram>>, other| {
                    for (t, o) in total.iter_mut().zip(&other) {
                        if let (Some(t), Some(o)) = (t, o) {
                            t.merge(o)?;
                        }
                    }
                    Ok(())
                },
            )?;
            (Histograms::Kl(h), s)
        }
        HistogramKind::Admm(bins) => {
            // Building the empty histograms once validates the ranges before any work.
            let template: Vec<Option<AdmmHistogram>> = ranges
                .iter()
                .map(|r| AdmmHistogram::for_range(r, bins))
                .collect::<Result<_, _>>()?;
            let init = || template.clone();
            let (h, s) = run_pass(
                pass,
                &init,
                &|acc: &mut Vec<Option<AdmmHistogram>>, slot, data| {
                    if let Some(h) = &mut acc[slot] {
                        h.add_slice(data);
                    }
                },
                &|total: &mut Vec<Option<AdmmHistogram>>, other| {
                    for (t, o) in total.iter_mut().zip(&other) {
                        if let (Some(t), Some(o)) = (t, o) {
                            t.merge(o)?;
                        }
                    }
                    Ok(())
                },
            )?;
            (Histograms::Admm(h), s)
        }
    };
    Ok(histograms)
}

#[cfg(test)]
mod tests {
    use super::PassCache;

    #[test]
    fn pass_cache_keeps_within_budget_and_hands_each_entry_back_once() {
        let cache: PassCache<Vec<u8>> = PassCache::new(25);
        let made = std::cell::Cell::new(0);
        let make = |i: usize| {
            made.set(made.get() + 1);
            Ok::<_, ()>(vec![i as u8; 10])
        };
        for i in 0..4 {
            assert_eq!(
                cache.take_or_make(i, Vec::len, || make(i)),
                Ok(vec![i as u8; 10])
            );
        }
        // Two entries of 10 bytes fit in 25.
        assert_eq!(cache.held_bytes(), 20);
        for i in 0..4 {
            assert_eq!(
                cache.take_or_make(i, Vec::len, || make(i)),
                Ok(vec![i as u8; 10])
            );
        }
        // Entries 0 and 1 came from the cache, 2 and 3 were made again (and cached then).
        assert_eq!(made.get(), 6);
        assert_eq!(cache.held_bytes(), 20);
        // An error is passed on and nothing is kept.
        assert_eq!(
            cache.take_or_make(9, Vec::len, || Err::<Vec<u8>, _>(())),
            Err(())
        );
    }
}
