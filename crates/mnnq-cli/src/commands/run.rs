//! `mnnq run`.

use std::path::PathBuf;

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

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`mnnq run` is not implemented yet")
}
