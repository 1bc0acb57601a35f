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
    /// A second model (e.g. the float original of an int8 model) timed in the same run, runs
    /// interleaved with the first so both see the same machine load; prints both medians and
    /// the ratio.
    #[arg(long, value_name = "MODEL")]
    pub compare: Option<PathBuf>,
}

/// A loaded model with its session and inputs.
struct Timed<'e> {
    session: Session<'e>,
    inputs: Vec<(String, Tensor)>,
    times: Vec<f64>,
}

impl<'e> Timed<'e> {
    fn new(engine: &'e Engine, threads: usize) -> anyhow::Result<Timed<'e>> {
        let inputs = engine
            .input_shapes()
            .into_iter()
            .enumerate()
            .map(|(i, (name, shape))| (name, random_tensor(&shape, i as u64 + 1)))
            .collect();
        Ok(Timed {
            session: Session::new(engine, threads)?,
            inputs,
            times: Vec::new(),
        })
    }

    fn run_once(&mut self) -> anyhow::Result<f64> {
        let named: Vec<(&str, Tensor)> = self
            .inputs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        let start = Instant::now();
        self.session.run(&named)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    }

    /// (median, min, max) of the timed runs.
    fn stats(&self) -> (f64, f64, f64) {
        let mut t = self.times.clone();
        t.sort_by(|a, b| a.total_cmp(b));
        let n = t.len();
        let median = if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2.0
        };
        (median, t[0], t[n - 1])
    }
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

/// On-CPU time of all this process's threads (Linux), which a busy machine inflates far less
/// than wall time; `None` elsewhere.
fn process_cpu_ns() -> Option<u64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum(),
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.iterations == 0 {
        anyhow::bail!("--iterations must be at least 1");
    }
    let engine = Engine::load(&args.model)?;
    let other = args.compare.as_ref().map(Engine::load).transpose()?;
    let threads = args.threads.unwrap_or(0);
    let mut models = vec![Timed::new(&engine, threads)?];
    if let Some(other) = &other {
        models.push(Timed::new(other, threads)?);
    }
    for _ in 0..args.warmup {
        for m in &mut models {
            m.run_once()?;
        }
    }
    // With --compare this is the CPU time of both models' runs, per pair of runs.
    let cpu_start = process_cpu_ns();
    for _ in 0..args.iterations {
        for m in &mut models {
            let t = m.run_once()?;
            m.times.push(t);
        }
    }
    let cpu_ms = process_cpu_ns()
        .zip(cpu_start)
        .map(|(end, start)| (end - start) as f64 * 1e-6 / args.iterations as f64);
    let isa = mnnq_engine::backend::isa_name();
    let kind = |e: &Engine| if e.int8.is_some() { "int8" } else { "float" };
    let (median, min, max) = models[0].stats();
    let n = args.iterations;
    let threads = models[0].session.threads();
    if args.json {
        let mut report = serde_json::json!({
            "model": args.model.display().to_string(),
            "runtime": kind(&engine),
            "median_ms": median,
            "min_ms": min,
            "max_ms": max,
            "threads": threads,
            "isa": isa,
            "warmup": args.warmup,
            "iterations": args.iterations,
            "cpu_ms_per_run": cpu_ms,
        });
        if let (Some(path), Some(other), Some(m)) = (&args.compare, &other, models.get(1)) {
            let (m2, min2, max2) = m.stats();
            report["compare"] = serde_json::json!({
                "model": path.display().to_string(),
                "runtime": kind(other),
                "median_ms": m2,
                "min_ms": min2,
                "max_ms": max2,
            });
            report["speedup"] = serde_json::json!(m2 / median);
        }
        println!("{report}");
    } else {
        let cpu = cpu_ms
            .map(|c| format!(", cpu {c:.3} ms/run"))
            .unwrap_or_default();
        println!(
            "{} ({}): median {median:.3} ms, min {min:.3} ms, max {max:.3} ms ({n} runs, {threads} threads, {isa}{cpu})",
            args.model.display(),
            kind(&engine),
        );
        if let (Some(path), Some(other), Some(m)) = (&args.compare, &other, models.get(1)) {
            let (m2, min2, max2) = m.stats();
            println!(
                "{} ({}): median {m2:.3} ms, min {min2:.3} ms, max {max2:.3} ms (runs interleaved)",
                path.display(),
                kind(other),
            );
            println!(
                "ratio: {:.2}x ({} median / {} median)",
                m2 / median,
                path.display(),
                args.model.display()
            );
        }
    }
    Ok(())
}
