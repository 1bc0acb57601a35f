//! `mnnq preprocess`.

use std::path::PathBuf;

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

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`mnnq preprocess` is not implemented yet")
}
