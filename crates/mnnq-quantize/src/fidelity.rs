//! Output fidelity of an int8 model against its float model, with the metrics of
//! `scripts/fidelity.py` (fixtures README, "Metric definitions"), and the share of
//! multiply-adds that the int8 runtime really runs in int8.

use mnnq_engine::{Engine, Session, Tensor};
use mnnq_format::{Model, Net};

use crate::diagnose::cosine;

/// Threshold of the text-probability maps (DBNet's usual binarisation).
pub const MAP_THRESHOLD: f32 = 0.3;

/// Fidelity of one output over a set of images.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct OutputFidelity {
    pub name: String,
    pub images: usize,
    /// Images whose two outputs were both all zero or one was (no cosine, left out as in
    /// fidelity.py).
    pub cosine_undefined: usize,
    pub cosine_mean: f64,
    pub cosine_min: f64,
    pub max_abs_error: f64,
    pub mean_abs_error: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top5_overlap: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iou_at_0_3: Option<f64>,
}

/// Indexes of the `k` largest values, largest first (ties: lower index first).
pub fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// IoU of the masks `a > threshold` and `b > threshold` (None when both are empty).
pub fn iou(a: &[f32], b: &[f32], threshold: f32) -> Option<f64> {
    let (mut inter, mut union) = (0u64, 0u64);
    for (&x, &y) in a.iter().zip(b) {
        let (p, q) = (x > threshold, y > threshold);
        inter += u64::from(p && q);
        union += u64::from(p || q);
    }
    (union > 0).then(|| inter as f64 / union as f64)
}

fn norm_is_zero(v: &[f32]) -> bool {
    v.iter().all(|&x| x == 0.0)
}

/// Fidelity of output `name` of shape `shape` over `(float, quantized)` pairs, one per image.
/// Classifier metrics when exactly one non-batch dim is above 1; IoU@0.3 for N x 1 x H x W.
pub fn output_fidelity(name: &str, shape: &[usize], pairs: &[(&[f32], &[f32])]) -> OutputFidelity {
    let non_batch: Vec<usize> = shape.iter().skip(1).copied().collect();
    let classifier = non_batch.iter().filter(|&&d| d > 1).count() == 1;
    let map = shape.len() == 4 && shape[1] == 1;
    let mut o = OutputFidelity {
        name: name.to_string(),
        images: pairs.len(),
        ..OutputFidelity::default()
    };
    let (mut cosines, mut top1, mut top5, mut ious) = (Vec::new(), 0usize, 0.0f64, Vec::new());
    let elements = shape.iter().product::<usize>();
    for &(f, q) in pairs {
        if norm_is_zero(f) || norm_is_zero(q) {
            o.cosine_undefined += 1;
        } else {
            cosines.push(cosine(f, q));
        }
        let mut sum = 0.0;
        for (&a, &b) in f.iter().zip(q) {
            let e = f64::from((a - b).abs());
            o.max_abs_error = o.max_abs_error.max(e);
            sum += e;
        }
        o.mean_abs_error += sum / f.len().max(1) as f64;
        if classifier {
            let (tf, tq) = (top_k(f, 5), top_k(q, 5));
            top1 += usize::from(tf[0] == tq[0]);
            top5 += tf.iter().filter(|c| tq.contains(c)).count() as f64 / tf.len() as f64;
        }
        if map {
            if let Some(v) = iou(f, q, MAP_THRESHOLD) {
                ious.push(v);
            }
        }
    }
    let n = pairs.len().max(1) as f64;
    o.mean_abs_error /= n;
    o.cosine_mean = cosines.iter().sum::<f64>() / cosines.len().max(1) as f64;
    o.cosine_min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
    if cosines.is_empty() {
        o.cosine_min = 0.0;
    }
    if classifier && !pairs.is_empty() {
        o.top1_agreement = Some(top1 as f64 / n);
        if elements >= 5 {
            o.top5_overlap = Some(top5 / n);
        }
    }
    if map && !ious.is_empty() {
        o.iou_at_0_3 = Some(ious.iter().sum::<f64>() / ious.len() as f64);
    }
    o
}

/// Runs `engine` (float or int8: an engine built from a quantized model runs the int8 runtime)
/// on every input; returns, per image, each output as (name, tensor).
pub fn run_all(engine: &Engine, inputs: &[Vec<f32>]) -> Result<Vec<Vec<(String, Tensor)>>, String> {
    let [(input_name, input_shape)] = &engine.input_shapes()[..] else {
        return Err(format!(
            "the model needs exactly one input, it has {}",
            engine.inputs.len()
        ));
    };
    let mut session = Session::new(engine, 1).map_err(|e| e.to_string())?;
    inputs
        .iter()
        .map(|input| {
            session
                .run(&[(
                    input_name.as_str(),
                    Tensor::new(input_shape.clone(), input.clone()),
                )])
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Fidelity of every output: `float` and `quant` are [`run_all`] results on the same inputs.
pub fn compare_outputs(
    float: &[Vec<(String, Tensor)>],
    quant: &[Vec<(String, Tensor)>],
) -> Vec<OutputFidelity> {
    let Some(first) = float.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(index, (name, tensor))| {
            let pairs: Vec<(&[f32], &[f32])> = float
                .iter()
                .zip(quant)
                .map(|(f, q)| (f[index].1.data.as_slice(), q[index].1.data.as_slice()))
                .collect();
            output_fidelity(name, &tensor.shape, &pairs)
        })
        .collect()
}

/// Mean over images of the cosine of all outputs concatenated (the fallback's criterion).
pub fn mean_output_cosine(float: &[Vec<f32>], quant: &[Vec<f32>]) -> f64 {
    let total: f64 = float.iter().zip(quant).map(|(f, q)| cosine(f, q)).sum();
    total / float.len().max(1) as f64
}

/// Cosine of all images' outputs taken as one vector. Unlike [`mean_output_cosine`], an image
/// whose float output is nearly all zero (a detector's map of a picture without text) weighs
/// as little as its output: its per-image cosine compares noise with noise (0.016 on one of
/// PP-OCR det's calibration images, against 0.94-0.99 on the others) and would decide a
/// search on its own.
pub fn pooled_output_cosine(float: &[Vec<f32>], quant: &[Vec<f32>]) -> f64 {
    let (mut dot, mut float_norm, mut quant_norm) = (0.0f64, 0.0f64, 0.0f64);
    for (f, q) in float.iter().zip(quant) {
        for (&a, &b) in f.iter().zip(q) {
            let (a, b) = (f64::from(a), f64::from(b));
            dot += a * b;
            float_norm += a * a;
            quant_norm += b * b;
        }
    }
    if float_norm == 0.0 || quant_norm == 0.0 {
        return if float_norm == quant_norm { 1.0 } else { 0.0 };
    }
    dot / (float_norm.sqrt() * quant_norm.sqrt())
}

/// Where the multiply-adds of a model run in the int8 runtime.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct MacShare {
    /// Multiply-adds of all convolutions (Convolution, ConvolutionDepthwise, Deconvolution).
    pub total_macs: u64,
    pub int8_macs: u64,
    /// `int8_macs / total_macs` (1 when there is no convolution).
    pub int8_share: f64,
    /// Convolutions that run float in the int8 runtime: (op name, multiply-adds).
    pub float_convolutions: Vec<(String, u64)>,
}

/// The int8 share of convolution multiply-adds of `engine`, built from the int8 model `net`
/// (decided by the int8 runtime's own plan: an op counts as int8 only if it runs int8).
pub fn mac_share(net: &Net, engine: &Engine) -> MacShare {
    let macs = crate::fallback::conv_macs(net, engine);
    let mut int8_outputs = std::collections::BTreeSet::new();
    if let Some(plan) = engine.int8.as_deref() {
        for &(node, is_int8) in &plan.node_is_int8 {
            if is_int8 {
                int8_outputs.extend(engine.ir.nodes[node].outputs.iter().map(|&o| o as u32));
            }
        }
    }
    let mut share = MacShare::default();
    for (output, (name, m)) in &macs {
        share.total_macs += m;
        if int8_outputs.contains(output) {
            share.int8_macs += m;
        } else {
            share.float_convolutions.push((name.clone(), *m));
        }
    }
    share.int8_share = if share.total_macs == 0 {
        1.0
    } else {
        share.int8_macs as f64 / share.total_macs as f64
    };
    share
}

/// Builds the engine of an in-memory model (int8 when it carries quant info).
pub fn engine_of(model: &Model) -> Result<Engine, String> {
    Engine::from_model(model).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {

    #[test]
    fn pooled_cosine_weighs_images_by_their_output() {
        // Image 1: outputs (3, 4) and (3, 4): aligned. Image 2: (0.01, 0) and (0, 0.01):
        // orthogonal, per-image cosine 0. Pooled: dot 25, norms sqrt(25.0001) each.
        let float = vec![vec![3.0, 4.0], vec![0.01, 0.0]];
        let quant = vec![vec![3.0, 4.0], vec![0.0, 0.01]];
        let pooled = pooled_output_cosine(&float, &quant);
        assert!((pooled - 25.0 / 25.0001).abs() < 1e-6, "{pooled}");
        assert!((mean_output_cosine(&float, &quant) - 0.5).abs() < 1e-6);
        // All-zero outputs on both sides agree; zero against non-zero does not.
        assert_eq!(pooled_output_cosine(&[vec![0.0]], &[vec![0.0]]), 1.0);
        assert_eq!(pooled_output_cosine(&[vec![0.0]], &[vec![1.0]]), 0.0);
    }

    use super::*;

    #[test]
    fn classifier_metrics_by_hand() {
        // Image 1: same top-1 (index 2), top-5 sets differ in one element (4/5).
        let f1 = [0.0, 1.0, 9.0, 3.0, 4.0, 5.0, -1.0];
        let q1 = [0.0, 1.0, 9.0, 3.0, 4.0, -5.0, 6.0];
        // Image 2: top-1 differs.
        let f2 = [1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let q2 = [2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let o = output_fidelity("logits", &[1, 7], &[(&f1, &q1), (&f2, &q2)]);
        assert_eq!(o.top1_agreement, Some(0.5));
        // top5(f1) = {2,5,4,3,1}, top5(q1) = {2,6,4,3,1}: 4 shared. Image 2: ties broken by
        // index, top5(f2) = {1,0,2,3,4} = top5(q2) as sets: 5 shared. Mean (0.8 + 1.0) / 2.
        assert!((o.top5_overlap.unwrap() - 0.9).abs() < 1e-12);
        // Largest difference: index 5 of image 1, |5 - (-5)|.
        assert_eq!(o.max_abs_error, 10.0);
        assert!(o.iou_at_0_3.is_none());
    }

    #[test]
    fn map_iou_by_hand_and_zero_maps_have_no_cosine() {
        let f = [0.9f32, 0.8, 0.1, 0.0];
        let q = [0.9f32, 0.2, 0.4, 0.0];
        // Masks {0,1} and {0,2}: intersection 1, union 3.
        assert!((iou(&f, &q, 0.3).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(iou(&[0.0, 0.1], &[0.2, 0.0], 0.3), None);
        let zero = [0.0f32; 4];
        let o = output_fidelity("map", &[1, 1, 2, 2], &[(&f, &q), (&f, &zero)]);
        assert_eq!(o.cosine_undefined, 1);
        assert!((o.cosine_mean - cosine(&f, &q)).abs() < 1e-12);
        // Image 2: the int8 mask is empty, the float one is not: IoU 0.
        assert!((o.iou_at_0_3.unwrap() - (1.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!(o.top1_agreement.is_none());
    }
}
