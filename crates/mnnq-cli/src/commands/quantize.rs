//! `mnnq quantize ORIGIN QUANT CONFIG` (also `mnnq ORIGIN QUANT CONFIG`, as `quantized.out`).
//!
//! After writing QUANT it checks it: QUANT in mnnq's int8 runtime against ORIGIN in the float
//! engine, on `--check DIR` images (held out from calibration: the honest figure) or else on
//! the first calibration images, with `mnnq compare`'s output metrics.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mnnq_engine::Engine;
use mnnq_format::Model;
use mnnq_preprocess::Config;
use mnnq_quantize::fidelity::{compare_outputs, run_all, OutputFidelity};
use mnnq_quantize::scales::UnifyMode;
use mnnq_quantize::{quantize, write_atomically, QuantizeOptions};

use super::compare::{image_files, model_inputs, output_line};

/// Calibration images the check uses when no `--check` folder is given.
const CHECK_CALIBRATION_IMAGES: usize = 8;

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
    /// Check the written model on these images (ones the calibration did not use), instead
    /// of on the first calibration images.
    #[arg(long, value_name = "DIR")]
    pub check: Option<PathBuf>,
    /// Images of the check at most (0: all).
    #[arg(long, default_value_t = 16)]
    pub check_images: usize,
    /// Skip the check.
    #[arg(long, conflicts_with = "check")]
    pub no_check: bool,
}

/// What the check found, for the report.
#[derive(serde::Serialize)]
struct Check {
    /// "held-out" (`--check`) or "calibration".
    images_from: &'static str,
    images: Vec<PathBuf>,
    outputs: Vec<OutputFidelity>,
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
    // A bad --check folder is an error before any work, not after.
    let check_files = match &args.check {
        Some(dir) => Some(image_files(dir)?),
        None => None,
    };
    let report = quantize(&args.origin, &args.quant, &args.config, &options)?;
    eprintln!("{}", report.summary());
    let check = if args.no_check {
        None
    } else {
        match check_model(&args, check_files) {
            Ok(check) => {
                let mut text = format!(
                    "check on {} {} image(s), mnnq int8 runtime vs float{}:\n",
                    check.images.len(),
                    check.images_from,
                    if check.images_from == "calibration" {
                        " (not a held-out measure: --check DIR for that)"
                    } else {
                        ""
                    }
                );
                for output in &check.outputs {
                    output_line(&mut text, "  output", output);
                }
                eprint!("{text}");
                Some(check)
            }
            // The model is written; a check that cannot run (a model with two inputs, a
            // sequence-mode config) is only reported.
            Err(e) => {
                eprintln!("check skipped: {e:#}");
                None
            }
        }
    };
    if let Some(path) = &args.report {
        let mut json = serde_json::to_value(&report).context("cannot serialize the report")?;
        if let (Some(check), Some(map)) = (check, json.as_object_mut()) {
            map.insert("check".into(), serde_json::to_value(check)?);
        }
        let text = serde_json::to_string_pretty(&json)?;
        write_atomically(path, text.as_bytes())?;
    }
    Ok(())
}

/// Runs the check: the written model against the original on the check images.
fn check_model(args: &Args, held_out: Option<Vec<PathBuf>>) -> anyhow::Result<Check> {
    let (config, _) = Config::from_file(&args.config)?;
    let (mut files, images_from) = match held_out {
        Some(files) => (files, "held-out"),
        None => {
            let mut files = mnnq_preprocess::calibration_files(&config)?;
            files.truncate(CHECK_CALIBRATION_IMAGES);
            (files, "calibration")
        }
    };
    if args.check_images > 0 {
        files.truncate(args.check_images);
    }
    let load = |path: &Path| -> anyhow::Result<Engine> {
        let model = Model::load(path)?;
        Engine::from_model(&model).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    let float_engine = load(&args.origin)?;
    let int8_engine = load(&args.quant)?;
    let inputs = model_inputs(&float_engine, &args.origin, &config, &files)?;
    let float_runs = run_all(&float_engine, &inputs)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.origin.display()))?;
    let int8_runs = run_all(&int8_engine, &inputs)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.quant.display()))?;
    Ok(Check {
        images_from,
        images: files,
        outputs: compare_outputs(&float_runs, &int8_runs),
    })
}
