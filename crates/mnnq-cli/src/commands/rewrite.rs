//! `mnnq rewrite`: load a model and write it back (a check that reading and writing lose nothing).

use std::path::{Path, PathBuf};

use mnnq_format::Model;

#[derive(clap::Args)]
pub struct Args {
    /// The model to read.
    pub input: PathBuf,
    /// Where to write it back (never the input itself).
    pub output: PathBuf,
}

/// Whether two paths name the same file (after resolving links, when the output exists).
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if same_file(&args.input, &args.output) {
        anyhow::bail!(
            "refusing to overwrite the input {}: choose another output path",
            args.input.display()
        );
    }
    let model = Model::load(&args.input)?;
    // Written to a temporary file in the output folder, then renamed: never a partial model.
    model.save(&args.output)?;
    eprintln!(
        "wrote {}{}",
        args.output.display(),
        if model.external.is_some() {
            " and its .weight file"
        } else {
            ""
        }
    );
    Ok(())
}
