//! `mnnq quantize`.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The float model to quantize.
    pub origin: PathBuf,
    /// Where to write the int8 model.
    pub quant: PathBuf,
    /// The calibration config (JSON, as for `quantized.out`).
    pub config: PathBuf,
}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`mnnq quantize` is not implemented yet")
}
