//! `mnnq preprocess`: the float tensor a model would see for one image, per a calibration
//! config, written as float32 `.npy`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mnnq_preprocess::{Config, InputSpec, InputType};

#[derive(clap::Args)]
pub struct Args {
    /// The image to preprocess.
    pub image: PathBuf,
    /// The calibration config (JSON).
    #[arg(long)]
    pub config: PathBuf,
    /// Where to write the float32 tensor.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Take the input layout (and a missing width/height) from this model.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (config, warnings) = Config::from_file(&args.config)?;
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    if config.input_type != InputType::Image {
        anyhow::bail!(
            "config {}: input_type is \"sequence\"; `mnnq preprocess` only prepares images",
            args.config.display()
        );
    }
    let spec = match &args.model {
        Some(model) => input_spec_from_model(&config, model)?,
        None => InputSpec::from_config(&config)?,
    };
    let tensor = mnnq_preprocess::preprocess_image(&args.image, &config, &spec)?;
    mnnq_preprocess::write_npy_f32(&args.output, &spec.shape(), &tensor)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(())
}

/// HOOK(format): wire `--model` here once `mnnq-format` (branch `format`) is merged.
/// Load the model, take its first input's name, layout (NCHW / NC4HW4 -> `Layout::Nchw`,
/// NHWC -> `Layout::Nhwc`) and 4-D dims (<= 0 = unknown), and return
/// `InputSpec::for_model_input(config, name, layout, &dims)`, printing its warnings.
fn input_spec_from_model(_config: &Config, model: &Path) -> anyhow::Result<InputSpec> {
    anyhow::bail!(
        "--model {} is not supported yet: reading the model's input needs the model format crate; run without --model (NCHW, size from the config)",
        model.display()
    )
}
