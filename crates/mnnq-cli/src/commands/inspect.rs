//! `mnnq inspect`: what a model contains — inputs, outputs, op types, parameters, quantization.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use mnnq_format::weights::{decode_conv, storage_of, WeightStorage};
use mnnq_format::{names, Blob, DataType, Model, Net, OpParameter};
use mnnq_graph::Graph;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// The model to describe.
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    model: String,
    mnn_version: Option<String>,
    source: String,
    biz_code: Option<String>,
    op_count: usize,
    tensor_count: usize,
    inputs: Vec<TensorReport>,
    outputs: Vec<TensorReport>,
    /// Op type (MNN's name) -> count, sorted by name.
    op_types: BTreeMap<&'static str, usize>,
    parameters: Parameters,
    quantization: Quantization,
    external_weights: bool,
}

#[derive(Serialize)]
struct TensorReport {
    name: String,
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    dims: Option<Vec<i32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    layout: Option<&'static str>,
}

/// Values and bytes of embedded weights, biases and constants: Convolution2D (decoded weight
/// count, stored bytes), Const blobs, Scale, BatchNorm, LayerNorm, GroupNorm, InnerProduct,
/// MatMul, PReLU, Convolution3D.
#[derive(Serialize, Default)]
struct Parameters {
    count: u64,
    bytes: u64,
}

#[derive(Serialize, Default)]
struct Quantization {
    /// True when any convolution stores int8 (IDST) weights or any tensor has quantInfo.
    quantized: bool,
    convolutions: usize,
    /// Storage form -> number of convolutions ("float", "external_float", "idst_type1", ...).
    weight_storage: BTreeMap<String, usize>,
    /// Convolutions whose quanParameter carries PTQ feature scales (scaleIn != 0): the form
    /// MNN's quantization tool writes and its runtime executes in int8.
    ptq_convolutions: usize,
    weight_bits: BTreeMap<i32, usize>,
    tensors_with_quant_info: usize,
    /// quantInfo type (MNN's name) -> count.
    quant_info_types: BTreeMap<&'static str, usize>,
}

fn blob_values_and_bytes(blob: &Blob) -> (u64, u64) {
    let len = |n: usize, size: u64| (n as u64, n as u64 * size);
    if let Some(v) = &blob.float32s {
        len(v.len(), 4)
    } else if let Some(v) = &blob.int32s {
        len(v.len(), 4)
    } else if let Some(v) = &blob.int64s {
        len(v.len(), 8)
    } else if let Some(v) = &blob.uint8s {
        len(v.len(), 1)
    } else if let Some(v) = &blob.int8s {
        len(v.len(), 1)
    } else if let Some(external) = blob.external.as_ref().filter(|e| e.len() > 1) {
        let bytes = external[1].max(0) as u64;
        let element = match blob.data_type {
            DataType::DtInt64 | DataType::DtDouble => 8,
            DataType::DtInt8 | DataType::DtUint8 | DataType::DtBool => 1,
            DataType::DtHalf | DataType::DtInt16 | DataType::DtUint16 | DataType::DtBfloat16 => 2,
            _ => 4,
        };
        (bytes / element, bytes)
    } else {
        (0, 0)
    }
}

fn floats(values: &[Option<&Vec<f32>>]) -> (u64, u64) {
    let n: usize = values.iter().flatten().map(|v| v.len()).sum();
    (n as u64, 4 * n as u64)
}

fn storage_name(storage: WeightStorage) -> String {
    match storage {
        WeightStorage::None => "from_input_tensor".into(),
        WeightStorage::Float => "float".into(),
        WeightStorage::ExternalFloat => "external_float".into(),
        WeightStorage::Idst {
            idst_type,
            external,
            sparse_float,
        } => {
            let mut name = if sparse_float {
                "sparse_float".to_string()
            } else {
                format!("idst_type{idst_type}")
            };
            if external {
                name.push_str("_external");
            }
            name
        }
    }
}

fn describe(model: &Model, path: &str) -> anyhow::Result<Report> {
    let net: &Net = &model.net;
    let graph = Graph::new(net).with_context(|| format!("{path}: invalid graph"))?;
    let mut op_types = BTreeMap::new();
    let mut parameters = Parameters::default();
    let mut quantization = Quantization::default();
    let mut add = |(count, bytes): (u64, u64)| {
        parameters.count += count;
        parameters.bytes += bytes;
    };
    for op in graph.ops() {
        *op_types.entry(names::op_type(op.type_)).or_insert(0) += 1;
        match &op.main {
            Some(OpParameter::Convolution2D(conv)) => {
                quantization.convolutions += 1;
                let storage = storage_of(conv);
                *quantization
                    .weight_storage
                    .entry(storage_name(storage))
                    .or_insert(0) += 1;
                if storage == WeightStorage::None {
                    continue;
                }
                let op_name = op.name.as_deref().unwrap_or("unnamed");
                let decoded = decode_conv(conv, model.external_bytes())
                    .map_err(|e| anyhow::anyhow!("{path}: op {op_name}: {e}"))?;
                let stored_bytes = match conv.quan_parameter.as_deref() {
                    Some(quan) => {
                        if quan.scale_in != 0.0 {
                            quantization.ptq_convolutions += 1;
                        }
                        if matches!(quan.type_, 1 | 2 | 4) {
                            *quantization
                                .weight_bits
                                .entry(quan.a_max_or_bits)
                                .or_insert(0) += 1;
                        }
                        let buffer = quan.buffer.as_ref().map_or(0, Vec::len);
                        let alpha = quan.alpha.as_ref().map_or(0, Vec::len) * 4
                            + quan.alpha_fp16.as_ref().map_or(0, Vec::len) * 2;
                        let index = quan.index.as_ref().map_or(0, Vec::len) * 4;
                        let external = conv
                            .external
                            .as_ref()
                            .filter(|e| e.len() > 1)
                            .map_or(0, |e| e[1..].iter().map(|&b| b.max(0) as usize).sum());
                        (buffer + alpha + index) as u64 + external as u64
                    }
                    None => 4 * decoded.weight.len() as u64,
                };
                let bias_bytes = if conv.quan_parameter.is_some() || conv.bias.is_some() {
                    4 * decoded.bias.len() as u64
                } else {
                    0 // already counted in the external float sizes
                };
                add((
                    (decoded.weight.len() + decoded.bias.len()) as u64,
                    stored_bytes + bias_bytes,
                ));
            }
            Some(OpParameter::Blob(blob)) => add(blob_values_and_bytes(blob)),
            Some(OpParameter::Scale(p)) => {
                add(floats(&[p.scale_data.as_ref(), p.bias_data.as_ref()]))
            }
            Some(OpParameter::BatchNorm(p)) => add(floats(&[
                p.slope_data.as_ref(),
                p.mean_data.as_ref(),
                p.var_data.as_ref(),
                p.bias_data.as_ref(),
                p.adata.as_ref(),
                p.bdata.as_ref(),
            ])),
            Some(OpParameter::LayerNorm(p)) => add(floats(&[p.gamma.as_ref(), p.beta.as_ref()])),
            Some(OpParameter::GroupNorm(p)) => add(floats(&[p.gamma.as_ref(), p.beta.as_ref()])),
            Some(OpParameter::InnerProduct(p)) => {
                add(floats(&[p.weight.as_ref(), p.bias.as_ref()]))
            }
            Some(OpParameter::MatMul(p)) => add(floats(&[p.weight.as_ref(), p.bias.as_ref()])),
            Some(OpParameter::PRelu(p)) => add(floats(&[p.slope.as_ref()])),
            Some(OpParameter::Convolution3D(p)) => {
                add(floats(&[p.weight.as_ref(), p.bias.as_ref()]))
            }
            _ => {}
        }
    }
    for describe in net.extra_tensor_describe.iter().flatten() {
        if let Some(info) = &describe.quant_info {
            quantization.tensors_with_quant_info += 1;
            // MNN's runtime reads DT_INVALID as DT_INT8.
            *quantization
                .quant_info_types
                .entry(names::data_type(info.type_))
                .or_insert(0) += 1;
        }
    }
    quantization.quantized = quantization.tensors_with_quant_info > 0
        || quantization.weight_storage.keys().any(|k| {
            k.starts_with("idst_type1")
                || k.starts_with("idst_type2")
                || k.starts_with("idst_type4")
        });
    let tensor = |index: usize| TensorReport {
        name: graph.tensor_name(index).to_string(),
        index,
        dims: None,
        data_type: None,
        layout: None,
    };
    Ok(Report {
        model: path.to_string(),
        mnn_version: net.extra_info.as_ref().and_then(|e| e.version.clone()),
        source: format!("{:?}", net.source_type).to_uppercase(),
        biz_code: net.biz_code.clone(),
        op_count: graph.ops().len(),
        tensor_count: graph.tensor_count(),
        inputs: graph
            .inputs()
            .iter()
            .map(|input| TensorReport {
                dims: Some(input.dims.clone()),
                data_type: Some(names::data_type(input.dtype)),
                layout: Some(names::data_format(input.dformat)),
                ..tensor(input.tensor)
            })
            .collect(),
        outputs: graph.outputs().iter().map(|&t| tensor(t)).collect(),
        op_types,
        parameters,
        quantization,
        external_weights: model.external.is_some(),
    })
}

fn print_text(report: &Report) {
    println!("model: {}", report.model);
    println!(
        "MNN version: {}   source: {}   ops: {}   tensors: {}",
        report.mnn_version.as_deref().unwrap_or("unknown"),
        report.source,
        report.op_count,
        report.tensor_count
    );
    for input in &report.inputs {
        println!(
            "input  {} {:?} {} {}",
            input.name,
            input.dims.as_deref().unwrap_or_default(),
            input.data_type.unwrap_or("?"),
            input.layout.unwrap_or("?")
        );
    }
    for output in &report.outputs {
        println!("output {} (tensor {})", output.name, output.index);
    }
    println!("op types:");
    for (name, count) in &report.op_types {
        println!("  {name:<24} {count}");
    }
    println!(
        "parameters: {} values, {} bytes{}",
        report.parameters.count,
        report.parameters.bytes,
        if report.external_weights {
            " (some in the .weight file)"
        } else {
            ""
        }
    );
    let q = &report.quantization;
    println!(
        "quantized: {}   convolutions: {} ({} with PTQ int8 scales)",
        if q.quantized { "yes" } else { "no" },
        q.convolutions,
        q.ptq_convolutions
    );
    for (storage, count) in &q.weight_storage {
        println!("  weights {storage:<20} {count}");
    }
    for (bits, count) in &q.weight_bits {
        println!("  {bits}-bit weights in {count} convolutions");
    }
    println!("tensors with quantInfo: {}", q.tensors_with_quant_info);
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = Model::load(&args.model)?;
    let report = describe(&model, &args.model.display().to_string())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}
