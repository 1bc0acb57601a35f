//! Times every op of a model: `cargo run --release -p mnnq-engine --example profile -- MODEL [THREADS] [RUNS]`.

use mnnq_engine::{Engine, Session, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).ok_or("usage: profile MODEL [THREADS] [RUNS]")?;
    let threads: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let runs: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let engine = Engine::load(model)?;
    println!(
        "arena {:.1} MB (without reuse {:.1} MB), {} steps",
        engine.memory.arena_len as f64 * 4e-6,
        engine.memory.unshared_len as f64 * 4e-6,
        engine.steps.len()
    );
    let inputs: Vec<(String, Tensor)> = engine
        .input_shapes()
        .into_iter()
        .map(|(n, s)| {
            let len: usize = s.iter().product();
            (
                n,
                Tensor::new(
                    s,
                    (0..len).map(|i| ((i % 255) as f32 / 127.0) - 1.0).collect(),
                ),
            )
        })
        .collect();
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let mut session = Session::new(&engine, threads)?;
    for _ in 0..3 {
        session.run(&named)?;
    }
    // On-CPU time of this process's threads (from /proc), which a loaded machine inflates far
    // less than wall time.
    let cpu_ns = || -> u64 {
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
                    .filter_map(|s| {
                        s.split_whitespace()
                            .next()
                            .and_then(|v| v.parse::<u64>().ok())
                    })
                    .sum()
            })
            .unwrap_or(0)
    };
    let mut wall = Vec::new();
    let cpu0 = cpu_ns();
    for _ in 0..runs {
        let t = std::time::Instant::now();
        session.run(&named)?;
        wall.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cpu = (cpu_ns() - cpu0) as f64 * 1e-6 / runs as f64;
    wall.sort_by(|a, b| a.total_cmp(b));
    println!(
        "unprofiled: wall median {:.3} ms, min {:.3} ms; cpu {:.3} ms per run (all threads)",
        wall[wall.len() / 2],
        wall[0],
        cpu
    );
    session.set_profiling(true);
    for _ in 0..runs {
        session.run(&named)?;
    }
    let report = session.profile_report();
    let total: f64 = report.iter().map(|r| r.2).sum::<f64>() / runs as f64;
    let mut by_type: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    for (ty, _, ms) in &report {
        let e = by_type.entry(ty.clone()).or_default();
        e.0 += ms / runs as f64;
        e.1 += 1;
    }
    println!("total {total:.3} ms per run");
    let mut types: Vec<_> = by_type.into_iter().collect();
    types.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    for (ty, (ms, n)) in types {
        println!("{ty:>24} x{n:<4} {ms:8.3} ms");
    }
    let mut steps = report.clone();
    steps.sort_by(|a, b| b.2.total_cmp(&a.2));
    for (ty, name, ms) in steps.iter().take(15) {
        println!("{:8.3} ms  {ty} {name}", ms / runs as f64);
    }
    Ok(())
}
