//! Comparison of our feature scales with the `<model>.mnn.json` report of MNN's
//! `quantized.out`: an array of `{"name", "inputs": [{"tensorIndex", "scales": [s],
//! "zeropoint": [z]}], "outputs": [...]}`, one object per non-Raster op.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{CalibrateError, TensorId};

/// Relative difference within which a scale counts as matching MNN's (1%).
pub const PARITY_TOLERANCE: f64 = 0.01;

#[derive(Debug, Clone, PartialEq)]
pub struct ScaleMismatch {
    pub tensor: TensorId,
    pub ours: f32,
    pub mnn: f32,
    /// |ours - mnn| / mnn.
    pub relative_difference: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParityReport {
    /// Tensors with a non-zero scale in MNN's report (the parity population).
    pub mnn_tensors: usize,
    /// Of those, tensors we have a scale for.
    pub compared: usize,
    /// Of those, tensors within [`PARITY_TOLERANCE`].
    pub within_tolerance: usize,
    /// MNN tensors we have no scale for (count as failures in [`ParityReport::share_within`]).
    pub missing_in_ours: Vec<TensorId>,
    /// Tensors MNN gave scale 0 (invalid, all-zero tensors): excluded from the population.
    pub mnn_zero_scale: Vec<TensorId>,
    /// Tensors we have a scale for that MNN's report does not list.
    pub extra_in_ours: Vec<TensorId>,
    /// Compared tensors outside the tolerance, worst first.
    pub mismatches: Vec<ScaleMismatch>,
}

impl ParityReport {
    /// Share of MNN's tensors whose scale we match within 1% (missing ones count as misses).
    /// The parity bar is >= 0.95.
    pub fn share_within(&self) -> f64 {
        if self.mnn_tensors == 0 {
            return 0.0;
        }
        self.within_tolerance as f64 / self.mnn_tensors as f64
    }
}

#[derive(Deserialize)]
struct ReportOp {
    name: String,
    #[serde(default)]
    inputs: Vec<ReportTensor>,
    #[serde(default)]
    outputs: Vec<ReportTensor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportTensor {
    tensor_index: i64,
    scales: Vec<f64>,
}

/// Reads MNN's scale report into tensor id -> scale. A tensor listed several times (as one
/// op's output and other ops' input) must carry the same scale everywhere.
pub fn read_mnn_scales(path: &Path) -> Result<BTreeMap<TensorId, f32>, CalibrateError> {
    let text = std::fs::read_to_string(path).map_err(|source| CalibrateError::ReportIo {
        path: path.to_path_buf(),
        source,
    })?;
    let malformed = |message: String| CalibrateError::ReportFormat {
        path: PathBuf::from(path),
        message,
    };
    let ops: Vec<ReportOp> = serde_json::from_str(&text)
        .map_err(|e| malformed(format!("not an MNN scale report: {e}")))?;
    let mut scales = BTreeMap::new();
    for op in &ops {
        for tensor in op.inputs.iter().chain(&op.outputs) {
            let id = TensorId::try_from(tensor.tensor_index).map_err(|_| {
                malformed(format!(
                    "op {:?} has tensor index {}",
                    op.name, tensor.tensor_index
                ))
            })?;
            let [scale] = tensor.scales[..] else {
                return Err(malformed(format!(
                    "op {:?}, tensor {id}: expected one scale, found {}",
                    op.name,
                    tensor.scales.len()
                )));
            };
            let scale = scale as f32;
            if let Some(&previous) = scales.get(&id) {
                if previous != scale {
                    return Err(malformed(format!(
                        "tensor {id} listed with scales {previous} and {scale} (op {:?})",
                        op.name
                    )));
                }
            }
            scales.insert(id, scale);
        }
    }
    Ok(scales)
}

/// Compares our scales with MNN's report at `mnn_json_path`.
pub fn compare_scales(
    ours: &HashMap<TensorId, f32>,
    mnn_json_path: &Path,
) -> Result<ParityReport, CalibrateError> {
    let mnn = read_mnn_scales(mnn_json_path)?;
    let mut report = ParityReport {
        mnn_tensors: 0,
        compared: 0,
        within_tolerance: 0,
        missing_in_ours: Vec::new(),
        mnn_zero_scale: Vec::new(),
        extra_in_ours: Vec::new(),
        mismatches: Vec::new(),
    };
    for (&tensor, &mnn_scale) in &mnn {
        if mnn_scale == 0.0 {
            report.mnn_zero_scale.push(tensor);
            continue;
        }
        report.mnn_tensors += 1;
        let Some(&our_scale) = ours.get(&tensor) else {
            report.missing_in_ours.push(tensor);
            continue;
        };
        report.compared += 1;
        let relative_difference =
            (f64::from(our_scale) - f64::from(mnn_scale)).abs() / f64::from(mnn_scale).abs();
        if relative_difference <= PARITY_TOLERANCE {
            report.within_tolerance += 1;
        } else {
            report.mismatches.push(ScaleMismatch {
                tensor,
                ours: our_scale,
                mnn: mnn_scale,
                relative_difference,
            });
        }
    }
    let mut extra: Vec<TensorId> = ours
        .keys()
        .copied()
        .filter(|t| !mnn.contains_key(t))
        .collect();
    extra.sort_unstable();
    report.extra_in_ours = extra;
    report.mismatches.sort_by(|a, b| {
        b.relative_difference
            .total_cmp(&a.relative_difference)
            .then(a.tensor.cmp(&b.tensor))
    });
    Ok(report)
}
