//! `mnnq bench`.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model to time.
    pub model: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// Print JSON (with `median_ms`) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`mnnq bench` is not implemented yet")
}
