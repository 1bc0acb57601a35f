//! `mnnq bench`: latency of a model on random inputs.

use std::path::PathBuf;
use std::time::Instant;

use mnnq_engine::{Engine, Session, Tensor};

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

/// Deterministic pseudo-random values in [-1, 1) (an xorshift generator; no need for quality).
fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::new(shape.to_vec(), data)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.iterations == 0 {
        anyhow::bail!("--iterations must be at least 1");
    }
    let engine = Engine::load(&args.model)?;
    let inputs: Vec<(String, Tensor)> = engine
        .input_shapes()
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| (name, random_tensor(&shape, i as u64 + 1)))
        .collect();
    let named: Vec<(&str, Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let mut session = Session::new(&engine, args.threads.unwrap_or(0))?;
    for _ in 0..args.warmup {
        session.run(&named)?;
    }
    let mut times = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let start = Instant::now();
        session.run(&named)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    };
    let (min, max) = (times[0], times[n - 1]);
    let isa = mnnq_engine::backend::isa_name();
    if args.json {
        let report = serde_json::json!({
            "model": args.model.display().to_string(),
            "median_ms": median,
            "min_ms": min,
            "max_ms": max,
            "threads": session.threads(),
            "isa": isa,
            "warmup": args.warmup,
            "iterations": args.iterations,
        });
        println!("{report}");
    } else {
        println!(
            "{}: median {median:.3} ms, min {min:.3} ms, max {max:.3} ms ({} runs, {} threads, {isa})",
            args.model.display(),
            n,
            session.threads()
        );
    }
    Ok(())
}
