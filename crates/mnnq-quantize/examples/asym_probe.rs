//! Probe (docs/int8-parity.md, "Asymmetric features"): rewrite the quant info of the ReLU/ReLU6
//! convolution outputs of an int8 model written by `mnnq quantize` to the asymmetric form
//! (zero point -128, scale = range / 255, codes [-128, 127]) and spread the change to the
//! tensors that must share it (copies and pools between them), to see what MNN's runtime does
//! with non-zero zero points.
//!
//! Usage: `cargo run --release -p mnnq-quantize --example asym_probe IN.mnn OUT.mnn [LOWEST]`
//! (LOWEST = the lowest code and zero point, -128 by default; -127 keeps codes in [-127, 127]).

use std::collections::BTreeSet;

use mnnq_format::{Model, OpParameter, OpType};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (input, output, lowest) = match args.as_slice() {
        [i, o] => (i, o, -128.0f32),
        [i, o, l] if l.parse::<f32>().is_ok() => (i, o, l.parse().unwrap_or(-128.0)),
        _ => {
            eprintln!("usage: asym_probe IN.mnn OUT.mnn [LOWEST]");
            std::process::exit(2);
        }
    };
    let mut model = Model::load(input).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let net = &mut model.net;
    let ops = net.oplists.clone().unwrap_or_default();
    let describes = net.extra_tensor_describe.get_or_insert_with(Vec::new);
    let scale_of = |describes: &Vec<mnnq_format::TensorDescribe>, id: i32| {
        describes
            .iter()
            .find(|d| d.index == id)
            .and_then(|d| d.quant_info.as_ref())
            .map(|q| q.scale)
    };

    // Seeds: outputs of convolutions with a fused ReLU/ReLU6.
    let mut chosen: BTreeSet<i32> = BTreeSet::new();
    for op in &ops {
        if !matches!(op.type_, OpType::Convolution | OpType::ConvolutionDepthwise) {
            continue;
        }
        let Some(OpParameter::Convolution2D(conv)) = &op.main else {
            continue;
        };
        let fused = conv.common.as_ref().is_some_and(|c| c.relu || c.relu6);
        let out = op.output_indexes.as_ref().and_then(|o| o.first().copied());
        if let (true, Some(out)) = (fused, out) {
            if scale_of(describes, out).is_some() {
                chosen.insert(out);
            }
        }
    }
    // Spread across ops whose input and output must share one quantization.
    let copies = [
        OpType::Pooling,
        OpType::Pooling3D,
        OpType::Raster,
        OpType::Reshape,
        OpType::ConvertTensor,
        OpType::Concat,
        OpType::ReLu,
        OpType::ReLu6,
        OpType::Interp,
    ];
    loop {
        let before = chosen.len();
        for op in ops.iter().filter(|op| copies.contains(&op.type_)) {
            let ins = op.input_indexes.clone().unwrap_or_default();
            let outs = op.output_indexes.clone().unwrap_or_default();
            let all: Vec<i32> = ins.iter().chain(outs.iter()).copied().collect();
            if all.iter().any(|t| chosen.contains(t)) {
                for t in all {
                    if scale_of(describes, t).is_some() {
                        chosen.insert(t);
                    }
                }
            }
        }
        if chosen.len() == before {
            break;
        }
    }
    for d in describes.iter_mut() {
        if !chosen.contains(&d.index) {
            continue;
        }
        if let Some(q) = d.quant_info.as_mut() {
            let range = q.scale * q.max;
            q.scale = range / (127.0 - lowest);
            q.zero = lowest;
            q.min = lowest;
            q.max = 127.0;
        }
    }
    eprintln!("{} tensor(s) made asymmetric", chosen.len());
    model.save(output).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
}
