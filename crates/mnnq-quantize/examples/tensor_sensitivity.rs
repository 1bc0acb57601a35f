//! Diagnostic: how much each feature scale of an int8 model costs the output cosine on its
//! own, in the float engine (fake quantization of that one tensor, the model's int8 weights
//! decoded): `cargo run --release -p mnnq-quantize --example tensor_sensitivity -- FLOAT
//! QUANT CONFIG IMAGES_DIR N` (first N images, sorted by name).
//!
//! Prints the output cosine (mean over images) of the weights alone and of weights plus all
//! feature scales, then each tensor's loss `1 - cosine` (pooled over the images) against the
//! weights-only run. With `ONLY_TOTALS=1` it stops after the totals; `EXCLUDE=id,id` leaves
//! those tensors float and `ASYM=id:lo,...` gives them asymmetric codes over
//! `[lo, 127 * scale]` (what-if checks); `CHANNEL_GROUPS=n` gives every tensor `n` groups of
//! channels with steps of their own in the totals (`mnnq_engine::FakeQuant::channel_groups`:
//! what per-channel activation resolution would win back), `GROUPS_RANGE=a-b` only to the
//! tensors a..b in execution order (`PRINT_ORDER=1` lists that order); `STATIC_GROUPS=n` fixes
//! `n` groups and their steps per tensor from 8 calibration images instead (what channel
//! splitting would build; `SHARED_PARTITION=1` cuts each run of same-width tensors the same
//! way, as a split chain must); `WEIGHT_SENS=1` ranks
//! convolutions by the loss of their int8 weights alone instead.
//! This is how `docs/quality.md` found that det's losses are not additive along a chain.
use std::collections::BTreeMap;

use mnnq_engine::{ir::MnnFormat, Engine, FakeQuant, Session, Tensor};
use mnnq_format::Model;
use mnnq_preprocess::{preprocess_image, Config, InputSpec, Layout};
use mnnq_quantize::diagnose::{
    dequantize_conv_weights, scales_from_quant_model, zero_points_from_quant_model,
};
use mnnq_quantize::fidelity::mean_output_cosine;

/// Fixed per-channel steps of `STATIC_GROUPS` (empty without it).
type ChannelSteps = BTreeMap<u32, std::sync::Arc<[f32]>>;

fn run(
    engine: &Engine,
    inputs: &[Vec<f32>],
    fq: &BTreeMap<u32, (f32, i8)>,
    steps: &ChannelSteps,
) -> Vec<Vec<f32>> {
    let (name, shape) = engine.input_shapes().remove(0);
    let mut s = Session::new(engine, 1).unwrap();
    let channel_groups = std::env::var("CHANNEL_GROUPS")
        .ok()
        .and_then(|g| g.parse().ok());
    // GROUPS_RANGE=a-b: channel groups only for tensors a..b in execution order.
    let grouped: Option<Vec<usize>> = std::env::var("GROUPS_RANGE").ok().map(|range| {
        let (a, b) = range.split_once('-').unwrap();
        let mut order = Vec::new();
        for step in &engine.steps {
            if let mnnq_engine::engine::Step::Node { outputs, .. } = step {
                for &o in outputs {
                    let t = engine.slots[o].tensor;
                    if fq.contains_key(&(t as u32)) && !order.contains(&t) {
                        order.push(t);
                    }
                }
            }
        }
        if std::env::var("PRINT_ORDER").is_ok() {
            for (i, &t) in order.iter().enumerate() {
                let shape = engine
                    .slots
                    .iter()
                    .find(|sl| sl.tensor == t)
                    .map(|sl| sl.shape.clone());
                eprintln!("{i} {t} {} {shape:?}", engine.tensor_name(t));
            }
        }
        order.truncate(b.parse().unwrap());
        order.drain(..a.parse::<usize>().unwrap().min(order.len()));
        order
    });
    for (&t, &(scale, zero)) in fq {
        let in_first = grouped.as_ref().is_none_or(|g| g.contains(&(t as usize)));
        let quant = FakeQuant {
            scale,
            zero,
            channel_groups: channel_groups.filter(|_| in_first),
            channel_steps: steps.get(&t).filter(|_| in_first).cloned(),
        };
        s.set_fake_quant_mode(t as usize, Some(quant));
    }
    inputs
        .iter()
        .map(|x| {
            let out = s
                .run(&[(name.as_str(), Tensor::new(shape.clone(), x.clone()))])
                .unwrap();
            out[0].1.data.clone()
        })
        .collect()
}

/// Images whose argmax differs (classifiers), as indices.
fn flips(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<usize> {
    let argmax = |v: &[f32]| {
        (0..v.len())
            .max_by(|&i, &j| v[i].total_cmp(&v[j]))
            .unwrap_or(0)
    };
    (0..a.len())
        .filter(|&i| argmax(&a[i]) != argmax(&b[i]))
        .collect()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (config, _) = Config::from_file(std::path::Path::new(&a[3])).unwrap();
    let float_model = Model::load(&a[1]).unwrap();
    let quant_model = Model::load(&a[2]).unwrap();
    let n: usize = a[5].parse().unwrap();
    let scales = scales_from_quant_model(&quant_model.net);
    let zeros = zero_points_from_quant_model(&quant_model.net);
    let engine = Engine::from_model(&float_model).unwrap();
    let mut wq = quant_model.clone();
    dequantize_conv_weights(&mut wq.net).unwrap();
    for d in wq.net.extra_tensor_describe.iter_mut().flatten() {
        d.quant_info = None;
    }
    let wq_engine = Engine::from_model(&wq).unwrap();
    let (it, slot) = engine.inputs[0];
    let shape = engine.slots[slot].shape.clone();
    let layout = match engine.infos[it].as_ref().map(|i| i.format) {
        Some(MnnFormat::Nhwc) => Layout::Nhwc,
        _ => Layout::Nchw,
    };
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let (spec, _) =
        InputSpec::for_model_input(&config, engine.tensor_name(it), layout, &dims).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&a[4])
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.truncate(n);
    let inputs: Vec<Vec<f32>> = files
        .iter()
        .map(|f| preprocess_image(f, &config, &spec).unwrap())
        .collect();
    let no_steps = ChannelSteps::new();
    let reference = run(&engine, &inputs, &BTreeMap::new(), &no_steps);
    let exclude: Vec<u32> = std::env::var("EXCLUDE")
        .map(|v| v.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or_default();
    // ASYM=id:lo,... : asymmetric codes over [lo, 127 * scale].
    let asym: BTreeMap<u32, f32> = std::env::var("ASYM")
        .map(|v| {
            v.split(',')
                .map(|x| {
                    let (a, b) = x.split_once(':').unwrap();
                    (a.parse().unwrap(), b.parse().unwrap())
                })
                .collect()
        })
        .unwrap_or_default();
    let all: BTreeMap<u32, (f32, i8)> = scales
        .iter()
        .filter(|(t, _)| !exclude.contains(t))
        .map(|(&t, &s)| match asym.get(&t) {
            Some(&lo) => {
                let hi = 127.0 * s;
                let scale = (hi - lo) / 254.0;
                let zero = (-127.0 - lo / scale).floor().max(-127.0);
                (t, (scale, zero as i8))
            }
            None => (t, (s, zeros.get(&t).copied().unwrap_or(0))),
        })
        .collect();
    let t0 = std::time::Instant::now();
    let wref = run(&wq_engine, &inputs, &BTreeMap::new(), &no_steps);
    println!(
        "weights only      {:.5} ({:?}) argmax flips {:?}",
        mean_output_cosine(&reference, &wref),
        t0.elapsed(),
        flips(&reference, &wref)
    );
    let t0 = std::time::Instant::now();
    let steps = match std::env::var("STATIC_GROUPS") {
        Ok(g) => static_group_steps(&wq_engine, &config, &spec, &all, g.parse().unwrap()),
        Err(_) => ChannelSteps::new(),
    };
    let both = run(&wq_engine, &inputs, &all, &steps);
    println!(
        "both              {:.5} ({:?}) argmax flips {:?}",
        mean_output_cosine(&reference, &both),
        t0.elapsed(),
        flips(&reference, &both)
    );
    let features = run(&engine, &inputs, &all, &steps);
    println!(
        "features only     {:.5} argmax flips {:?}",
        mean_output_cosine(&reference, &features),
        flips(&reference, &features)
    );
    if std::env::var("WEIGHT_SENS").is_ok() {
        // Each convolution's int8 weights alone (the others keep their float weights).
        let float_params: std::collections::HashMap<String, mnnq_format::OpParameter> = float_model
            .net
            .oplists
            .iter()
            .flatten()
            .filter_map(|op| Some((op.name.clone()?, op.main.clone()?)))
            .collect();
        let conv_names: Vec<String> = wq
            .net
            .oplists
            .iter()
            .flatten()
            .filter(|op| {
                matches!(op.main, Some(mnnq_format::OpParameter::Convolution2D(_)))
                    && op
                        .name
                        .as_ref()
                        .is_some_and(|n| float_params.contains_key(n))
            })
            .filter_map(|op| op.name.clone())
            .collect();
        let mut losses = Vec::new();
        for keep in &conv_names {
            let mut m = wq.clone();
            for op in m.net.oplists.iter_mut().flatten() {
                let Some(name) = op.name.clone() else {
                    continue;
                };
                if &name != keep {
                    if let Some(p) = float_params.get(&name) {
                        if matches!(p, mnnq_format::OpParameter::Convolution2D(_)) {
                            op.main = Some(p.clone());
                        }
                    }
                }
            }
            let e = Engine::from_model(&m).unwrap();
            let out = run(&e, &inputs, &BTreeMap::new(), &no_steps);
            losses.push((
                1.0 - mean_output_cosine(&reference, &out),
                keep.clone(),
                flips(&reference, &out),
            ));
        }
        losses.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap());
        for (l, name, f) in losses.iter().take(25) {
            println!("{l:.6} {name:40} flips {f:?}");
        }
        return;
    }
    if std::env::var("ONLY_TOTALS").is_ok() {
        return;
    }
    // The per-tensor ranking is `mnnq compare --sensitivity`'s (pooled cosine), here with the
    // int8 weights decoded and any ASYM/EXCLUDE changes applied.
    let scales: BTreeMap<u32, f32> = all.iter().map(|(&t, &(s, _))| (t, s)).collect();
    let zero_points: BTreeMap<u32, i8> = all.iter().map(|(&t, &(_, z))| (t, z)).collect();
    let losses =
        mnnq_quantize::diagnose::tensor_sensitivity(&wq_engine, &scales, &zero_points, &inputs)
            .unwrap();
    let total: f64 = losses.iter().map(|l| l.loss).sum();
    println!("sum of single-tensor losses {total:.5}");
    for l in losses {
        let (scale, zero) = all[&l.id];
        println!(
            "{:.6} {:4} {:30} scale {scale:.5} zero {zero}",
            l.loss, l.id, l.name
        );
    }
}

/// `STATIC_GROUPS=n`: each tensor's channels sorted by the share of its range they need on 8
/// calibration images (the config's), cut into `n` groups of equal count, each group's step
/// the tensor's step times its largest share (never coarser): the fixed groups channel
/// splitting would build.
fn static_group_steps(
    engine: &Engine,
    config: &Config,
    spec: &InputSpec,
    quant: &BTreeMap<u32, (f32, i8)>,
    groups: usize,
) -> ChannelSteps {
    let files = mnnq_preprocess::calibration_files(config).unwrap();
    let (name, shape) = engine.input_shapes().remove(0);
    let mut session = Session::new(engine, 1).unwrap();
    // Tensor -> per channel (largest value, largest negated value).
    let mut peaks: BTreeMap<u32, Vec<(f32, f32)>> = BTreeMap::new();
    for file in files.iter().take(8) {
        let x = preprocess_image(file, config, spec).unwrap();
        session
            .run_observed(
                &[(name.as_str(), Tensor::new(shape.clone(), x))],
                &mut |t, view| {
                    if !quant.contains_key(&(t as u32)) || view.shape.len() < 2 {
                        return;
                    }
                    let channels = view.shape[1];
                    let inner = view.data.len() / view.shape[0] / channels;
                    let entry = peaks
                        .entry(t as u32)
                        .or_insert_with(|| vec![(0.0, 0.0); channels]);
                    for (i, &v) in view.data.iter().enumerate() {
                        let c = (i / inner) % channels;
                        entry[c] = (entry[c].0.max(v), entry[c].1.max(-v));
                    }
                },
            )
            .unwrap();
    }
    // Each tensor's per-channel share of its range.
    let quant_of = |t: u32| {
        let (scale, zero) = quant[&t];
        FakeQuant {
            scale,
            zero,
            channel_groups: None,
            channel_steps: None,
        }
    };
    let needs: BTreeMap<u32, Vec<f32>> = peaks
        .into_iter()
        .map(|(t, per_channel)| {
            let q = quant_of(t);
            let need = per_channel
                .iter()
                .map(|&(up, down)| q.range_share(up, down))
                .collect();
            (t, need)
        })
        .collect();
    // The partition each tensor uses: its own, or with SHARED_PARTITION=1 one per run of
    // tensors in execution order from a dense convolution's output to the next (a per-channel
    // chain such as conv output -> hardswish -> offset -> depthwise -> hardswish, which
    // splitting must cut the same way),
    // ordered by the largest share a channel needs anywhere in the run.
    let mut partition_of: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let by_share = |need: &[f32]| {
        let mut order: Vec<usize> = (0..need.len()).collect();
        order.sort_by(|&a, &b| need[a].total_cmp(&need[b]));
        order
    };
    if std::env::var("SHARED_PARTITION").is_ok() {
        // (tensor, written by a dense convolution) in execution order.
        let mut order: Vec<(u32, bool)> = Vec::new();
        for step in &engine.steps {
            if let mnnq_engine::engine::Step::Node { node, outputs, .. } = step {
                let dense = matches!(&engine.ir.nodes[*node].kind,
                    mnnq_engine::ir::OpKind::Conv(p) if p.group == 1);
                for &o in outputs {
                    let t = engine.slots[o].tensor as u32;
                    if needs.contains_key(&t) && !order.iter().any(|&(u, _)| u == t) {
                        order.push((t, dense));
                    }
                }
            }
        }
        let mut runs: Vec<Vec<u32>> = Vec::new();
        for (t, dense) in order {
            match runs.last_mut() {
                Some(run) if !dense && needs[&run[0]].len() == needs[&t].len() => run.push(t),
                _ => runs.push(vec![t]),
            }
        }
        for run in runs {
            let mut combined = vec![0f32; needs[&run[0]].len()];
            for t in &run {
                for (c, &n) in needs[t].iter().enumerate() {
                    combined[c] = combined[c].max(n);
                }
            }
            let shared = by_share(&combined);
            for t in run {
                partition_of.insert(t, shared.clone());
            }
        }
    }
    needs
        .iter()
        .map(|(&t, need)| {
            let q = quant_of(t);
            let order = partition_of.remove(&t).unwrap_or_else(|| by_share(need));
            let mut steps = vec![q.scale; need.len()];
            for group in order.chunks(need.len().div_ceil(groups)) {
                let largest = group.iter().map(|&c| need[c]).fold(0f32, f32::max);
                for &c in group {
                    steps[c] = q.step_for_share(largest);
                }
            }
            (t, steps.into())
        })
        .collect()
}
