//! Runs a model on a raw f32 input file and writes every computed tensor as raw f32 (row-major)
//! into a folder, with an index: `dump MODEL INPUT.bin OUT_DIR`. For comparing with MNN per op.

use std::io::Write;

use mnnq_engine::{Engine, Session, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (model, input, out) = (&args[1], &args[2], std::path::PathBuf::from(&args[3]));
    let engine = Engine::load(model)?;
    let (name, shape) = engine.input_shapes().remove(0);
    let bytes = std::fs::read(input)?;
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut session = Session::new(&engine, 1)?;
    std::fs::create_dir_all(&out)?;
    let mut index = std::fs::File::create(out.join("index.txt"))?;
    let mut n = 0;
    session.run_observed(
        &[(name.as_str(), Tensor::new(shape, data))],
        &mut |_, view| {
            let file = format!("t{n}.bin");
            n += 1;
            let raw: Vec<u8> = view.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(out.join(&file), raw).unwrap();
            writeln!(index, "{}\t{}\t{:?}", file, view.name, view.shape).unwrap();
        },
    )?;
    Ok(())
}
