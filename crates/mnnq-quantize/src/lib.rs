//! Post-training int8 quantization of float MNN models, as MNN's `quantized.out`
//! (`mnn-quantization.md` §1-§8): calibrate feature scales over images with the float
//! engine, quantize convolution weights per output channel, and write the modern int8 form
//! (tensor quant info, IDST weights, table-driven unary ops) plus MNN's scale report.
//!
//! Each step is a function of its own: [`runner::plan_from_engine`] (which tensors),
//! [`stats::collect_ranges`] / [`stats::collect_histograms`] (the two passes, any thread
//! count, same result), [`scales::feature_scales`] + [`scales::unify`],
//! [`rewrite::rewrite_net`], [`scale_json::scale_report`]; [`quantize`] runs them all.
//!
//! Quality (docs/quality.md): [`range_method`] (config keys, activation ranges, float head),
//! [`bias_correction`], [`fallback`] (int8-runtime float fallback under a MAC budget) and
//! [`fidelity`] (int8 runtime vs float engine: the metrics of `scripts/fidelity.py` and the
//! int8 MAC share).

pub mod bias_correction;
pub mod diagnose;
mod error;
pub mod fallback;
pub mod fidelity;
pub mod fold;
pub mod output_bias;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod range_method;
pub mod range_search;
pub mod rewrite;
pub mod runner;
pub mod scale_json;
pub mod scales;
pub mod stats;
pub mod weight_rounding;
pub mod zero_point;

pub use error::QuantizeError;
pub use pipeline::{
    quantize, scale_file_path, write_atomically, QuantizeOptions, QuantizeReport, Timings,
};
