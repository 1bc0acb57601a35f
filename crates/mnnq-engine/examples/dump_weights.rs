//! Writes every convolution's weights and bias and every float constant of a model as raw f32
//! files (`<op name>.weight.bin`, `<op name>.bias.bin`, `<tensor name>.const.bin`) into a folder:
//! `dump_weights MODEL OUT_DIR`. Companion of `dump` for per-op comparisons with MNN, whose JSON
//! dump prints weights with six significant digits only.

use mnnq_format::{weights, Model, OpParameter};

fn raw(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (model, out) = (&args[1], std::path::PathBuf::from(&args[2]));
    let model = Model::load(model)?;
    std::fs::create_dir_all(&out)?;
    for op in model.net.oplists.iter().flatten() {
        let name = op.name.clone().unwrap_or_default().replace('/', "_");
        match &op.main {
            Some(OpParameter::Convolution2D(conv)) => {
                let w = weights::decode_conv(conv, model.external_bytes())?;
                std::fs::write(out.join(format!("{name}.weight.bin")), raw(&w.weight))?;
                std::fs::write(out.join(format!("{name}.bias.bin")), raw(&w.bias))?;
            }
            Some(OpParameter::Blob(blob)) => {
                let tensor = op
                    .output_indexes
                    .as_ref()
                    .and_then(|o| o.first())
                    .and_then(|&t| model.net.tensor_name.as_ref()?.get(t as usize).cloned())
                    .unwrap_or(name)
                    .replace('/', "_");
                if let Some(values) = &blob.float32s {
                    std::fs::write(out.join(format!("{tensor}.const.bin")), raw(values))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}
