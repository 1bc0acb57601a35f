//! `mnnq rewrite`: load a model and write it back (a check that reading and writing lose
//! nothing), optionally with the quantizer's exact float folding applied (`--fold-affine`).

use std::path::{Path, PathBuf};

use mnnq_format::Model;

#[derive(clap::Args)]
pub struct Args {
    /// The model to read.
    pub input: PathBuf,
    /// Where to write it back (never the input itself).
    pub output: PathBuf,
    /// Apply the quantizer's exact float rewrites first (config key `fold_affine`: constant
    /// Mul/Add/Sub folded into convolutions, 1x1 convolution pairs merged). The output is a
    /// float model that computes the same function.
    #[arg(long)]
    pub fold_affine: bool,
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
    let mut model = Model::load(&args.input)?;
    if args.fold_affine {
        let fold = mnnq_quantize::fold::fold_affine(&mut model.net);
        eprintln!(
            "fold_affine: ops {} -> {} ({} folded into the convolution before, {} into the convolutions after, {} chain(s) reduced to one Add, {} convolution pair(s) merged, {} constant(s) dropped)",
            fold.ops_before,
            fold.ops_after,
            fold.into_producers,
            fold.into_consumers,
            fold.chains_reduced,
            fold.conv_pairs_merged,
            fold.constants_removed
        );
    }
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
