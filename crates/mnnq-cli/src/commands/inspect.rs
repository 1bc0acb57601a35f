//! `mnnq inspect`.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model to describe.
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`mnnq inspect` is not implemented yet")
}
