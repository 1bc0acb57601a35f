//! MNN's `<QUANT>.json` scale report: one object per op with the scales of its input and
//! output tensors, in op order (the shape of `mnn_int8/*/KL_MAX_ABS.mnn.json`).

use std::collections::BTreeMap;

use mnnq_format::Net;
use serde::Serialize;

#[derive(Serialize)]
struct TensorScale {
    #[serde(rename = "tensorIndex")]
    tensor_index: i32,
    scales: [f64; 1],
    zeropoint: [f64; 1],
}

#[derive(Serialize)]
struct OpScales {
    name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<TensorScale>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<TensorScale>,
}

/// The report as JSON text (4-space indent, as MNN writes it). Tensors without a scale are
/// left out (MNN lists them with scale 0).
pub fn scale_report(net: &Net, scales: &BTreeMap<u32, f32>) -> String {
    let list = |indexes: &Option<Vec<i32>>| -> Vec<TensorScale> {
        indexes
            .iter()
            .flatten()
            .filter_map(|&i| {
                let scale = *scales.get(&u32::try_from(i).ok()?)?;
                Some(TensorScale {
                    tensor_index: i,
                    scales: [f64::from(scale)],
                    zeropoint: [0.0],
                })
            })
            .collect()
    };
    let ops: Vec<OpScales> = net
        .oplists
        .iter()
        .flatten()
        .enumerate()
        .map(|(position, op)| OpScales {
            name: op.name.clone().unwrap_or_else(|| format!("#{position}")),
            inputs: list(&op.input_indexes),
            outputs: list(&op.output_indexes),
        })
        .collect();
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    ops.serialize(&mut serializer)
        .expect("serializing plain data cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}
