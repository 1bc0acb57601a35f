//! Writes a few small valid models into a folder, as a starting corpus for `fuzz/`.
//! Usage: cargo run -p mnnq-format --example write_fuzz_seeds -- OUT_DIR

use mnnq_format::weights::encode_idst_int8;
use mnnq_format::{
    Attribute, Blob, Convolution2D, Convolution2DCommon, DataType, Extra, Input, LoopParam, Model,
    NamedAttrList, Net, Op, OpParameter, OpType, RegionCommand, TensorDescribe, TensorQuantInfo,
};

fn op(type_: OpType, main: Option<OpParameter>, inputs: &[i32], outputs: &[i32]) -> Op {
    Op {
        type_,
        main,
        input_indexes: Some(inputs.to_vec()),
        output_indexes: Some(outputs.to_vec()),
        name: Some(format!("{type_:?}")),
        ..Default::default()
    }
}

fn net(ops: Vec<Op>, tensors: usize) -> Net {
    Net {
        oplists: Some(ops),
        tensor_name: Some((0..tensors).map(|i| format!("t{i}")).collect()),
        output_name: Some(vec![format!("t{}", tensors - 1)]),
        ..Default::default()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: write_fuzz_seeds OUT_DIR")?;
    std::fs::create_dir_all(&out)?;
    let input = op(
        OpType::Input,
        Some(OpParameter::Input(Box::new(Input {
            dims: Some(vec![1, 2, 3, 3]),
            dtype: DataType::DtFloat,
            ..Default::default()
        }))),
        &[],
        &[0],
    );
    let weights: Vec<f32> = (0..36).map(|i| (i as f32 - 18.0) * 0.05).collect();
    let conv = |quantized: bool| Convolution2D {
        common: Some(Box::new(Convolution2DCommon {
            kernel_x: 3,
            kernel_y: 3,
            output_count: 2,
            input_count: 2,
            ..Default::default()
        })),
        weight: (!quantized).then(|| weights.clone()),
        bias: Some(vec![0.5, -0.5]),
        quan_parameter: quantized
            .then(|| Box::new(encode_idst_int8(&weights, &[0.01, 0.02], 8).unwrap())),
        ..Default::default()
    };
    let conv_op = |quantized| {
        op(
            OpType::Convolution,
            Some(OpParameter::Convolution2D(Box::new(conv(quantized)))),
            &[0],
            &[1],
        )
    };
    let mut seeds = vec![
        ("input", net(vec![input.clone()], 1)),
        ("conv_float", net(vec![input.clone(), conv_op(false)], 2)),
        ("conv_int8", {
            let mut n = net(vec![input.clone(), conv_op(true)], 2);
            n.extra_tensor_describe = Some(vec![TensorDescribe {
                index: 1,
                quant_info: Some(Box::new(TensorQuantInfo {
                    scale: 0.1,
                    type_: DataType::DtInt8,
                    ..Default::default()
                })),
                ..Default::default()
            }]);
            n
        }),
    ];
    let constant = op(
        OpType::Const,
        Some(OpParameter::Blob(Box::new(Blob {
            dims: Some(vec![2]),
            data_type: DataType::DtInt32,
            int32s: Some(vec![1, 2]),
            ..Default::default()
        }))),
        &[],
        &[0],
    );
    seeds.push(("const", net(vec![constant], 1)));
    let attribute = Attribute {
        key: Some("k".into()),
        i: 3,
        func: Some(Box::new(NamedAttrList {
            name: Some("f".into()),
            attr: Some(vec![Attribute {
                key: Some("inner".into()),
                s: Some("v".into()),
                ..Default::default()
            }]),
        })),
        ..Default::default()
    };
    let extra = op(
        OpType::Extra,
        Some(OpParameter::Extra(Box::new(Extra {
            type_: Some("Custom".into()),
            engine: Some("Tests".into()),
            info: Some(vec![1, 2, 3]),
            attr: Some(vec![attribute]),
            vector: false,
        }))),
        &[0],
        &[1],
    );
    seeds.push(("extra", net(vec![input.clone(), extra], 2)));
    let inner = op(OpType::UnaryOp, None, &[0], &[1]);
    let looped = op(
        OpType::While,
        Some(OpParameter::LoopParam(Box::new(LoopParam {
            tensor_number: 2,
            loop_number: 2,
            commands: Some(vec![RegionCommand {
                op: Some(Box::new(inner)),
                steps: Some(vec![1, 1]),
                ..Default::default()
            }]),
            ..Default::default()
        }))),
        &[0],
        &[1],
    );
    seeds.push(("loop", net(vec![input, looped], 2)));
    for (name, net) in seeds {
        let bytes = Model::new(net, name).to_bytes()?;
        std::fs::write(format!("{out}/{name}.mnn"), bytes)?;
    }
    Ok(())
}
