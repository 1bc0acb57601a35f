//! `mnnq quantize ORIGIN QUANT CONFIG` (also `mnnq ORIGIN QUANT CONFIG`, as `quantized.out`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use mnnq_quantize::scales::UnifyMode;
use mnnq_quantize::{quantize, write_atomically, QuantizeOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The float model to quantize.
    pub origin: PathBuf,
    /// Where to write the int8 model (the scale report goes to QUANT.json).
    pub quant: PathBuf,
    /// The calibration config (JSON, as for `quantized.out`).
    pub config: PathBuf,
    /// Calibration worker threads (0: one per core). The output does not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also write the run summary as JSON to this file.
    #[arg(long, value_name = "REPORT.json")]
    pub report: Option<PathBuf>,
    /// Unify layout/pooling scales in one pass in op-name order exactly as MNN (which can
    /// leave chained pooling/reshape ops with different input and output scales).
    #[arg(long)]
    pub mnn_unify: bool,
    /// MNN-compatible mode: exactly MNN's tool (KL ranges unless the config says otherwise,
    /// MAX_ABS weight scales, biases unchanged, MNN's single-pass unification). Without it,
    /// quality keys absent from the config take mnnq's recommended defaults (docs/quality.md).
    #[arg(long)]
    pub mnn: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let options = QuantizeOptions {
        threads: args.threads,
        progress: std::io::stderr().is_terminal(),
        unify: if args.mnn_unify || args.mnn {
            UnifyMode::MnnSinglePass
        } else {
            UnifyMode::UntilStable
        },
        on_warning: Some(|warning| eprintln!("warning: {warning}")),
        mnn_compatible: args.mnn,
    };
    let report = quantize(&args.origin, &args.quant, &args.config, &options)?;
    eprintln!("{}", report.summary());
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report).context("cannot serialize the report")?;
        write_atomically(path, json.as_bytes())?;
    }
    Ok(())
}
