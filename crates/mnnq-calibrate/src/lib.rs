//! Statistics over calibration runs and the scales computed from them: feature ranges and
//! histograms, KL and ADMM feature scales, MAX_ABS and ADMM per-channel weight scales, the
//! scale unification rules for layout and pooling ops, and a parity check against the scale
//! report MNN's own quantization tool writes.
//!
//! Everything here works on plain data (slices of f32 in logical NCHW order, tensor ids, op
//! kinds) so it can be tested without the executor. The KL path reproduces MNN 3.6.1's
//! `quantized.out` arithmetic (f32 where MNN uses f32, f64 where C++ promotes to double).
//!
//! [`FeatureCollector`] runs the whole feature flow for all tracked tensors from the executor's
//! observer callback. Underneath, per tensor (two passes over the calibration images, as MNN):
//! 1. pass 1: [`RangeStats::update`] with every image's tensor data;
//! 2. [`AbsHistogram::for_range`] (KL) or [`AdmmHistogram::for_range`] (ADMM);
//! 3. pass 2: `add_slice` per image (per-image partials may be built in parallel and merged in
//!    any order: all accumulators are exact integers);
//! 4. [`kl_feature_scale`] or [`AdmmHistogram::admm_scale`];
//! 5. over all tensors: [`unify_scales`].

mod admm;
mod collector;
mod error;
mod histogram;
mod kl;
mod parity;
mod range;
mod simd;
mod unify;
mod weights;

pub use admm::{
    admm_scale_exact, quantization_error, AdmmHistogram, AdmmOptions, AdmmResult,
    DEFAULT_ADMM_BINS, FEATURE_ADMM_INIT_DIVISOR, FEATURE_ADMM_ITERATIONS,
};
pub use collector::{FeatureCollector, FeatureMethod, Pass};
pub use error::CalibrateError;
pub use histogram::{mnn_bin_value, AbsHistogram, HISTOGRAM_BINS};
pub use kl::{
    kl_divergence_curve, kl_feature_scale, kl_threshold, mnn_normalise, scale_from_threshold,
    small_tensor_uses_max, KlScale, ThresholdMethod, KL_TARGET_BINS, MAX_THRESHOLD,
};
pub use parity::{compare_scales, read_mnn_scales, ParityReport, ScaleMismatch, PARITY_TOLERANCE};
pub use range::RangeStats;
pub use unify::{unify_scales, LayoutOp, LayoutOpKind, UnifyOptions};
pub use weights::{
    fake_quantize_max_abs_mnn, quantize_weights_admm, quantize_weights_max_abs, QuantizedWeights,
    WeightAdmmOptions, WEIGHT_ADMM_ITERATIONS, ZERO_CHANNEL_SCALE,
};

/// Index of a tensor in the model (`Net.tensorName` position, MNN's `tensorIndex`).
pub type TensorId = u32;

/// MNN's default feature and weight clamp: codes in [-127, 127].
pub const DEFAULT_CLAMP: f32 = 127.0;
