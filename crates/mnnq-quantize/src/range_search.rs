//! Output-driven refinement of activation scales (config key `range_search`).
//!
//! The usual scales are chosen tensor by tensor (KL, MSE, MAX over each tensor's own
//! histogram). That ignores how a tensor's rounding and clipping error travels to the output:
//! a project convolution without activation feeding a residual add may be better with a
//! tighter range than its own MSE optimum, a stem output with a looser one. This module
//! refines them against the model output:
//!
//! 1. Every candidate is measured in mnnq's int8 runtime (MNN's integer arithmetic): the
//!    model is written with the candidate scales (the pipeline's own rewrite) and run on a
//!    few calibration images; the criterion is the mean output cosine against the float
//!    model. (A fake-quant simulation in the float engine was tried first: its small gains
//!    did not carry over to the int8 runtime, docs/quality.md.)
//! 2. Coordinate descent in execution order: for each group of tensors that must share a
//!    scale (unification: layout ops, pooling, shared ReLU scales), every multiplier of
//!    [`MULTIPLIERS`] is tried on the whole group and the one with the best mean output
//!    cosine is kept (the current scale wins ties). Graph inputs are left alone.
//!
//! The candidates of a group are measured in parallel (one engine each) and compared in a
//! fixed order, so the result does not depend on the thread count.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use mnnq_engine::Engine;
use mnnq_format::{Model, Net};

use crate::fidelity::{mean_output_cosine, run_all};

/// Multipliers of a group's current scale tried by the search (1.0, the current scale, is
/// the baseline). Below 1 trades clipping for resolution; above 1 helps tensors whose range
/// clips values that matter downstream.
pub const MULTIPLIERS: [f32; 6] = [0.6, 0.7, 0.8, 0.9, 1.1, 1.25];

/// What the search did (part of the quantize report).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RangeSearchReport {
    /// Calibration images the search measured on.
    pub images: usize,
    /// Scale groups searched.
    pub groups: usize,
    /// Int8 models measured (candidates).
    pub evaluations: usize,
    /// Mean output cosine in the int8 runtime on the search images, before and after.
    pub cosine_before: f64,
    pub cosine_after: f64,
    /// Tensors whose scale changed: (name, multiplier of the initial scale).
    pub changed: Vec<(String, f32)>,
    pub seconds: f64,
}

/// Tensors that must share a scale, from the unification constraints: union-find over the
/// tensors of each layout op and each extra linked pair, restricted to tensors with a scale.
/// Groups are listed in execution order (first producing op position); tensors without a
/// producing op (graph inputs) and groups containing one are left out.
pub fn scale_groups(
    net: &Net,
    scales: &BTreeMap<u32, f32>,
    ops: &[mnnq_calibrate::LayoutOp],
    linked: &[(u32, u32)],
) -> Vec<Vec<u32>> {
    let mut parent: BTreeMap<u32, u32> = scales.keys().map(|&t| (t, t)).collect();
    fn root(parent: &mut BTreeMap<u32, u32>, mut t: u32) -> u32 {
        while parent[&t] != t {
            let up = parent[&parent[&t]];
            parent.insert(t, up);
            t = up;
        }
        t
    }
    let mut join = |a: u32, b: u32| {
        if parent.contains_key(&a) && parent.contains_key(&b) {
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            if ra != rb {
                parent.insert(ra.max(rb), ra.min(rb));
            }
        }
    };
    for op in ops {
        for &i in &op.inputs {
            join(i, op.output);
        }
    }
    for &(a, b) in linked {
        join(a, b);
    }
    let mut producer: HashMap<u32, usize> = HashMap::new();
    for (position, op) in net.oplists.iter().flatten().enumerate() {
        for &o in op.output_indexes.iter().flatten() {
            if o >= 0 {
                producer.entry(o as u32).or_insert(position);
            }
        }
    }
    let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let keys: Vec<u32> = parent.keys().copied().collect();
    for t in keys {
        let r = root(&mut parent, t);
        groups.entry(r).or_default().push(t);
    }
    let mut ordered: Vec<(usize, Vec<u32>)> = groups
        .into_values()
        .filter_map(|members| {
            let positions: Option<Vec<usize>> =
                members.iter().map(|t| producer.get(t).copied()).collect();
            Some((positions?.into_iter().min()?, members))
        })
        .collect();
    ordered.sort();
    ordered.into_iter().map(|(_, m)| m).collect()
}

/// Everything the search needs from the pipeline.
pub struct SearchInputs<'a> {
    /// The float model (its `origin`/`external` also serve the quantized nets).
    pub float_model: &'a Model,
    /// The float model's engine (reference outputs).
    pub float_engine: &'a Engine,
    /// Calibration inputs of the search.
    pub inputs: &'a [Vec<f32>],
    /// Worker threads (any count gives the same result).
    pub threads: usize,
    /// Tensor names for the report.
    pub names: &'a BTreeMap<u32, String>,
}

/// Mean output cosine of `net` (int8 when it has quant info) against `reference`.
fn int8_cosine(search: &SearchInputs, net: Net, reference: &[Vec<f32>]) -> Result<f64, String> {
    let model = Model {
        net,
        origin: search.float_model.origin.clone(),
        external: search.float_model.external.clone(),
    };
    let engine = Engine::from_model(&model).map_err(|e| e.to_string())?;
    let outputs: Vec<Vec<f32>> = run_all(&engine, search.inputs)?
        .into_iter()
        .map(|image| image.into_iter().flat_map(|(_, t)| t.data).collect())
        .collect();
    Ok(mean_output_cosine(reference, &outputs))
}

/// Writes the int8 net for a set of feature scales (tensor id -> scale).
pub type QuantizeWith<'a> = dyn Fn(&BTreeMap<u32, f32>) -> Result<Net, String> + Sync + 'a;

/// Refines `scales` (see the module doc). `quantize` writes the int8 net for a set of scales
/// (the pipeline's rewrite); `unify` restores the exact unification relations after a group
/// moved (e.g. a max pool's one-ulp offset) and must only touch tensors already in the map.
pub fn search_scales(
    search: &SearchInputs,
    scales: &BTreeMap<u32, f32>,
    groups: &[Vec<u32>],
    quantize: &QuantizeWith,
    unify: &dyn Fn(&mut BTreeMap<u32, f32>),
) -> Result<(BTreeMap<u32, f32>, RangeSearchReport), String> {
    let start = Instant::now();
    let reference: Vec<Vec<f32>> = run_all(search.float_engine, search.inputs)?
        .into_iter()
        .map(|image| image.into_iter().flat_map(|(_, t)| t.data).collect())
        .collect();
    let measure = |s: &BTreeMap<u32, f32>| -> Result<f64, String> {
        int8_cosine(search, quantize(s)?, &reference)
    };
    let mut report = RangeSearchReport {
        images: search.inputs.len(),
        groups: groups.len(),
        ..RangeSearchReport::default()
    };
    let mut best_cosine = measure(scales)?;
    report.evaluations += 1;
    report.cosine_before = best_cosine;
    let workers = search.threads.max(1);
    let mut current = scales.clone();
    for group in groups {
        let mut trials: Vec<BTreeMap<u32, f32>> = Vec::new();
        for &m in &MULTIPLIERS {
            let mut trial = current.clone();
            for t in group {
                if let Some(s) = trial.get_mut(t) {
                    *s *= m;
                }
            }
            unify(&mut trial);
            if trial != current {
                trials.push(trial);
            }
        }
        // Candidates in parallel, `workers` at a time; results by candidate index.
        let mut cosines: Vec<f64> = Vec::with_capacity(trials.len());
        for chunk in trials.chunks(workers) {
            let results: Vec<Result<f64, String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|trial| scope.spawn(|| measure(trial)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("a range search thread panicked".into()))
                    })
                    .collect()
            });
            for r in results {
                cosines.push(r?);
            }
        }
        report.evaluations += trials.len();
        let mut chosen = None;
        for (k, &c) in cosines.iter().enumerate() {
            if c > best_cosine {
                best_cosine = c;
                chosen = Some(k);
            }
        }
        if let Some(k) = chosen {
            current = trials.swap_remove(k);
        }
    }
    report.cosine_after = best_cosine;
    report.changed = current
        .iter()
        .filter(|(t, s)| scales.get(t) != Some(s))
        .map(|(t, s)| {
            let name = search
                .names
                .get(t)
                .cloned()
                .unwrap_or_else(|| format!("#{t}"));
            (name, s / scales[t])
        })
        .collect();
    report.seconds = start.elapsed().as_secs_f64();
    Ok((current, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnnq_calibrate::{LayoutOp, LayoutOpKind};
    use mnnq_format::Op;

    fn op(inputs: &[i32], outputs: &[i32]) -> Op {
        Op {
            input_indexes: Some(inputs.to_vec()),
            output_indexes: Some(outputs.to_vec()),
            ..Op::default()
        }
    }

    #[test]
    fn groups_follow_unification_links_in_execution_order() {
        // input 0 -> op0 -> 1 -> op1 -> 2 ; op2: concat(2, 3') where 3 is written by op3 later.
        let net = Net {
            oplists: Some(vec![
                op(&[0], &[1]),
                op(&[1], &[2]),
                op(&[2, 4], &[3]),
                op(&[1], &[4]),
                op(&[3], &[5]),
            ]),
            ..Net::default()
        };
        let scales: BTreeMap<u32, f32> = (0..6).map(|t| (t, 1.0)).collect();
        let concat = LayoutOp {
            name: "concat".into(),
            kind: LayoutOpKind::Raster,
            inputs: vec![2, 4],
            output: 3,
        };
        let groups = scale_groups(&net, &scales, &[concat], &[(5, 1)]);
        // Tensor 0 (graph input) has no producer: left out. 1 and 5 are linked (first
        // produced at op 0); 2, 3, 4 share the concat's scale (first produced at op 1).
        assert_eq!(groups, vec![vec![1, 5], vec![2, 3, 4]]);
    }

    #[test]
    fn search_keys_are_read_and_checked() {
        use crate::range_method::QualityConfig;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            QualityConfig::from_file(&path, QualityConfig::recommended())
        };
        let q = read("{}").unwrap();
        assert!(!q.range_search && !q.output_bias_correction);
        assert_eq!(q.search_images, 8);
        let q =
            read(r#"{"range_search": true, "output_bias_correction": true, "search_images": 3}"#)
                .unwrap();
        assert!(q.range_search && q.output_bias_correction);
        assert_eq!(q.search_images, 3);
        let error = read(r#"{"search_images": 0}"#).unwrap_err();
        assert!(error.contains("search_images"), "{error}");
        let error = read(r#"{"output_bias_correction": "yes"}"#).unwrap_err();
        assert!(error.contains("output_bias_correction"), "{error}");
    }
}
