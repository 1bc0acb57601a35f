//! `mnnq run`: run a model on .npy inputs and write one float32 .npy per output.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use mnnq_engine::{Engine, Session, Tensor};
use npyz::WriterBuilder;

#[derive(clap::Args)]
pub struct Args {
    /// The model to run.
    pub model: PathBuf,
    /// Inputs as NAME=FILE.npy (or FILE.npy alone for a single-input model).
    #[arg(long = "input", required = true)]
    pub inputs: Vec<String>,
    /// Folder for the outputs: one float32 .npy per output, `/` in names replaced by `_`.
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Reads a .npy file of any common numeric type as f32.
pub fn read_npy(path: &Path) -> anyhow::Result<Tensor> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file))
        .with_context(|| format!("{}: not a .npy file", path.display()))?;
    if npy.order() == npyz::Order::Fortran {
        bail!(
            "{}: Fortran-ordered arrays are not supported",
            path.display()
        );
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let type_str = match npy.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => bail!("{}: unsupported dtype {other:?}", path.display()),
    };
    let bad = |e: std::io::Error| anyhow::anyhow!("{}: {e}", path.display());
    let data: Vec<f32> = match &type_str[1..] {
        "f4" => npy.into_vec::<f32>().map_err(bad)?,
        "f8" => npy
            .into_vec::<f64>()
            .map_err(bad)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "i4" => npy
            .into_vec::<i32>()
            .map_err(bad)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "i8" => npy
            .into_vec::<i64>()
            .map_err(bad)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "u1" => npy
            .into_vec::<u8>()
            .map_err(bad)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "i1" => npy
            .into_vec::<i8>()
            .map_err(bad)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => bail!("{}: unsupported dtype {other}", path.display()),
    };
    if data.len() != shape.iter().product::<usize>() {
        bail!("{}: data does not match shape {shape:?}", path.display());
    }
    Ok(Tensor::new(shape, data))
}

/// Writes a float32 .npy through a temporary file renamed into place.
pub fn write_npy(path: &Path, tensor: &Tensor) -> anyhow::Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let tmp = folder.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<()> {
        let file = File::create(&tmp)?;
        let mut buf = BufWriter::new(file);
        let shape: Vec<u64> = tensor.shape.iter().map(|&d| d as u64).collect();
        let mut writer = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut buf)
            .begin_nd()?;
        writer.extend(tensor.data.iter().copied())?;
        writer.finish()?;
        buf.flush()?;
        buf.into_inner()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("{}: cannot write", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let engine = Engine::load(&args.model)?;
    let model_inputs = engine.input_shapes();
    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for spec in &args.inputs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) if !n.is_empty() && !Path::new(spec).exists() => (n.to_string(), f),
            _ => {
                if model_inputs.len() != 1 || args.inputs.len() != 1 {
                    bail!(
                        "the model has inputs {:?}: give each as NAME=FILE.npy",
                        model_inputs.iter().map(|(n, _)| n).collect::<Vec<_>>()
                    );
                }
                (model_inputs[0].0.clone(), spec.as_str())
            }
        };
        if !model_inputs.iter().any(|(n, _)| *n == name) {
            bail!("the model has no input named '{name}'");
        }
        inputs.push((name, read_npy(Path::new(file))?));
    }
    let mut session = Session::new(&engine, args.threads.unwrap_or(0))?;
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let outputs = session.run(&named)?;
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("{}: cannot create", args.output_dir.display()))?;
    for (name, tensor) in outputs {
        let path = args
            .output_dir
            .join(format!("{}.npy", name.replace('/', "_")));
        write_npy(&path, &tensor)?;
        println!("{} {:?} -> {}", name, tensor.shape, path.display());
    }
    Ok(())
}
