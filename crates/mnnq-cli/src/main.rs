//! `mnnq`: quantize float MNN models to int8 and run both kinds fast on a CPU.

mod commands;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mnnq",
    version,
    about = "Quantize float MNN models to int8 and run them fast"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Quantize a float model by post-training calibration (as MNN's `quantized.out`).
    Quantize(commands::quantize::Args),
    /// Describe a model: inputs, outputs, ops, parameters, quantization.
    Inspect(commands::inspect::Args),
    /// Load a model and write it back.
    Rewrite(commands::rewrite::Args),
    /// Run a model on .npy inputs and write one .npy per output.
    Run(commands::run::Args),
    /// Measure a model's latency.
    Bench(commands::bench::Args),
    /// Write the float tensor a model would see for an image, preprocessed per a config.
    Preprocess(commands::preprocess::Args),
    /// Compare an int8 model with its float model: output fidelity and per-tensor error.
    Compare(commands::compare::Args),
}

const SUBCOMMANDS: &[&str] = &[
    "quantize",
    "inspect",
    "rewrite",
    "run",
    "bench",
    "preprocess",
    "compare",
    "help",
];

/// `quantized.out` users type `mnnq ORIGIN QUANT CONFIG`: treat a first argument that is not a
/// subcommand or a flag as the start of `quantize`.
fn with_bare_quantize(mut args: Vec<OsString>) -> Vec<OsString> {
    if let Some(first) = args.get(1).and_then(|a| a.to_str()) {
        if !first.starts_with('-') && !SUBCOMMANDS.contains(&first) {
            args.insert(1, OsString::from("quantize"));
        }
    }
    args
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(with_bare_quantize(std::env::args_os().collect()));
    let result = match cli.command {
        Command::Quantize(args) => commands::quantize::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Rewrite(args) => commands::rewrite::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Preprocess(args) => commands::preprocess::run(args),
        Command::Compare(args) => commands::compare::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
