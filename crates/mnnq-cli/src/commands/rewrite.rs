//! `mnnq rewrite`.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model to read.
    pub input: PathBuf,
    /// Where to write it back.
    pub output: PathBuf,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`mnnq rewrite` is not implemented yet")
}
