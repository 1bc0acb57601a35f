//! Output bias correction (config key `output_bias_correction`), measured in the int8 runtime.
//!
//! `bias_correction` removes the mean shift that the rounding of a convolution's own weights
//! causes, assuming float inputs. What remains is the shift the int8 model really has at each
//! convolution output: from activation rounding and clipping (a clipped range biases the
//! mean), from the requantization, and propagated from earlier layers. Here the written int8
//! model runs in mnnq's int8 runtime (MNN's arithmetic) on a few calibration images, the
//! per-channel mean of every convolution output is compared with the float model's, and the
//! difference is subtracted from the convolution's float bias (MNN keeps biases float).
//!
//! Convolutions are corrected one at a time in execution order (one int8 engine build and
//! run over the images each), so each correction sees the corrected layers before it. The
//! result is kept only if it raises the output cosine on other calibration images than the
//! ones the means came from (on PP-OCR det it raised the cosine on its own images and lowered
//! it on held-out ones). Outputs
//! with fewer than [`MIN_SAMPLES_PER_CHANNEL`] values per channel over the images (e.g. a
//! classifier's logits) are left alone: their means would be fitted to the images.
//!
//! Observed values are after any fused activation (ReLU6), so a channel mostly clipped is
//! under-corrected, never over-corrected.

use std::collections::BTreeSet;

use mnnq_engine::Engine;
use mnnq_format::{Model, Net, OpParameter, OpType};

use crate::bias_correction::channel_means;
use crate::fidelity::mean_output_cosine;

/// Values per channel (spatial positions times images) below which a convolution output is
/// not corrected.
pub const MIN_SAMPLES_PER_CHANNEL: usize = 64;

/// What the correction did (part of the quantize report).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct OutputBiasReport {
    pub images: usize,
    /// Convolutions whose bias is corrected.
    pub convolutions: usize,
    /// Output cosine (int8 runtime) on the images the means came from, before and after.
    pub cosine_before: f64,
    pub cosine_after: f64,
    /// Images of the acceptance check (other calibration images when there are enough).
    pub check_images: usize,
    /// Output cosine on the check images, before and after.
    pub check_cosine_before: f64,
    pub check_cosine_after: f64,
    /// False when the correction did not raise the cosine on the check images (biases left
    /// unchanged).
    pub applied: bool,
    pub seconds: f64,
}

/// Convolutions to correct: (op position, output tensor) of every Convolution /
/// ConvolutionDepthwise with a bias of one value per output channel.
fn corrected_convs(net: &Net) -> Vec<(usize, u32, usize)> {
    let mut out = Vec::new();
    for (position, op) in net.oplists.iter().flatten().enumerate() {
        if !matches!(op.type_, OpType::Convolution | OpType::ConvolutionDepthwise) {
            continue;
        }
        let (Some(OpParameter::Convolution2D(conv)), Some(&[o])) =
            (&op.main, op.output_indexes.as_deref())
        else {
            continue;
        };
        let channels = conv
            .common
            .as_ref()
            .map_or(0, |c| c.output_count.max(0) as usize);
        if o >= 0 && channels > 0 && conv.bias.as_ref().is_some_and(|b| b.len() == channels) {
            out.push((position, o as u32, channels));
        }
    }
    out
}

fn bias_mut(net: &mut Net, position: usize) -> Option<&mut Vec<f32>> {
    match &mut net.oplists.as_mut()?.get_mut(position)?.main {
        Some(OpParameter::Convolution2D(conv)) => conv.bias.as_mut(),
        _ => None,
    }
}

/// Corrects the biases of `quantized` (the int8 net as written) in place; see the module doc.
/// `float_engine` is the float model's engine; `template` gives `origin`/`external` for
/// building the int8 engine (its net is not used). The means are measured on `inputs`; the
/// correction is kept only if it raises the output cosine on `check_inputs` (other images, so
/// that a correction fitted to `inputs` alone is refused; `inputs` themselves when empty).
pub fn correct_output_bias(
    template: &Model,
    float_engine: &Engine,
    quantized: &mut Net,
    inputs: &[Vec<f32>],
    check_inputs: &[Vec<f32>],
) -> Result<OutputBiasReport, String> {
    let start = std::time::Instant::now();
    let check_inputs = if check_inputs.is_empty() {
        inputs
    } else {
        check_inputs
    };
    let no_tensors = BTreeSet::new();
    let (_, check_reference) = channel_means(float_engine, &no_tensors, check_inputs)?;
    let check_cosine = |engine: &Engine| -> Result<f64, String> {
        let (_, outputs) = channel_means(engine, &no_tensors, check_inputs)?;
        Ok(mean_output_cosine(&check_reference, &outputs))
    };
    let convs = corrected_convs(quantized);
    let wanted: BTreeSet<u32> = convs.iter().map(|c| c.1).collect();
    let (float_means, reference) = channel_means(float_engine, &wanted, inputs)?;
    // Enough values per channel for a mean that is not fitted to the images.
    let convs: Vec<(usize, u32, usize)> = convs
        .into_iter()
        .filter(|&(_, o, channels)| {
            float_engine
                .infos
                .get(o as usize)
                .and_then(|i| i.as_ref())
                .is_some_and(|i| {
                    i.shape.iter().product::<usize>() / channels * inputs.len()
                        >= MIN_SAMPLES_PER_CHANNEL
                })
                && float_means.get(&o).is_some_and(|m| m.len() == channels)
        })
        .collect();
    let mut report = OutputBiasReport {
        images: inputs.len(),
        check_images: check_inputs.len(),
        convolutions: convs.len(),
        ..OutputBiasReport::default()
    };
    let build = |net: Net| -> Result<(Engine, Net), String> {
        let model = Model {
            net,
            origin: template.origin.clone(),
            external: template.external.clone(),
        };
        let engine = Engine::from_model(&model).map_err(|e| e.to_string())?;
        Ok((engine, model.net))
    };
    let mut current = quantized.clone();
    let mut cosine_before = None;
    // In execution order, one convolution at a time: its correction must see the already
    // corrected convolutions before it (correcting all at once over-corrects the later ones
    // for shifts that the earlier corrections then remove).
    for &(position, output, _) in &convs {
        let (engine, net) = build(current)?;
        let (int8_means, outputs) = channel_means(&engine, &BTreeSet::from([output]), inputs)?;
        if cosine_before.is_none() {
            cosine_before = Some(mean_output_cosine(&reference, &outputs));
            report.check_cosine_before = check_cosine(&engine)?;
        }
        drop(engine);
        current = net;
        let (Some(f), Some(q)) = (float_means.get(&output), int8_means.get(&output)) else {
            continue;
        };
        if let Some(bias) = bias_mut(&mut current, position) {
            for ((b, &mf), &mq) in bias.iter_mut().zip(f).zip(q) {
                *b -= (mq - mf) as f32;
            }
        }
    }
    if convs.is_empty() {
        report.seconds = start.elapsed().as_secs_f64();
        return Ok(report);
    }
    let (engine, net) = build(current)?;
    let (_, outputs) = channel_means(&engine, &no_tensors, inputs)?;
    report.check_cosine_after = check_cosine(&engine)?;
    drop(engine);
    report.cosine_before = cosine_before.unwrap_or(f64::NEG_INFINITY);
    report.cosine_after = mean_output_cosine(&reference, &outputs);
    report.applied = report.check_cosine_after > report.check_cosine_before;
    if report.applied {
        *quantized = net;
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
