//! Load-time preparation: shapes, constant folding, layouts, schedule and memory plan.
//!
//! Everything here is computed once per model and shared by every [`crate::Session`]. The int8
//! runtime is meant to reuse the same steps: graph ([`ModelIr`]), shapes ([`TensorInfo`]), schedule
//! ([`Step`]) and arena plan ([`MemoryPlan`]), with other kernels in the prepared ops.

use std::collections::HashMap;

use crate::error::EngineError;
use crate::ir::{ModelIr, OpKind, PoolType};
use crate::ops::window::PreparedConv;
use crate::ops::{In, Out, Parallel};
use crate::shape::{self, InterpPlan, PoolWindow, TensorInfo};
use crate::tensor::{DType, Layout, Value};

/// Where a runtime tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// Offset (in f32 elements) into the session's arena.
    Arena(usize),
    /// Index into the engine's constant buffers.
    Const(usize),
}

/// A tensor as the executor stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub layout: Layout,
    pub location: Location,
    /// The model tensor this slot holds (a converted copy has the same tensor).
    pub tensor: usize,
}

impl Slot {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per-op state computed at load.
#[derive(Debug)]
pub enum Prepared {
    None,
    Conv(Box<PreparedConv>),
    Pool(PoolType, PoolWindow),
    /// 3-D pooling: the (H, W) window of every depth slice, then the depth window.
    Pool3D(PoolType, PoolWindow, PoolWindow),
    Interp {
        resize_type: i32,
        cubic_a: f32,
        plan: InterpPlan,
    },
}

/// One step of the schedule.
#[derive(Debug)]
pub enum Step {
    /// Run node `node` of the IR, reading `inputs` slots and writing `outputs` slots.
    Node {
        node: usize,
        inputs: Vec<usize>,
        outputs: Vec<usize>,
        prepared: Prepared,
    },
    /// Copy slot `from` into slot `to` (same logical tensor, another layout).
    Convert { from: usize, to: usize },
}

/// Arena layout: every arena slot's offset, planned from slot lifetimes.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MemoryPlan {
    /// Total arena size in f32 elements.
    pub arena_len: usize,
    /// Sum of all arena slot sizes (what the arena would be without reuse).
    pub unshared_len: usize,
}

/// A loaded float model, ready to run.
#[derive(Debug)]
pub struct Engine {
    pub ir: ModelIr,
    /// Shape, dtype and MNN format of every tensor (None: never computed, e.g. unused).
    pub infos: Vec<Option<TensorInfo>>,
    /// Values of tensors known at load (constants and everything folded from them).
    pub values: Vec<Option<Value>>,
    pub slots: Vec<Slot>,
    pub steps: Vec<Step>,
    pub memory: MemoryPlan,
    pub const_buffers: Vec<Vec<f32>>,
    /// Graph inputs: (tensor, slot).
    pub inputs: Vec<(usize, usize)>,
    /// Graph outputs: (tensor, slot).
    pub outputs: Vec<(usize, usize)>,
    /// For quantized models: the int8 schedule that replaces `steps` at run time.
    pub int8: Option<Box<crate::int8::Int8Plan>>,
    /// Chains of elementwise steps run as one pass (see [`crate::fuse`]), in schedule order.
    pub fused: Vec<crate::fuse::FusedChain>,
    /// Set when a shape depends on the values of graph inputs (e.g. Range on run-time inputs):
    /// the graph, prepared anew for each run with the inputs as constants. `steps` is empty then.
    pub deferred: Option<Box<ModelIr>>,
}

/// Elementwise fusion is on unless `MNNQ_FUSE=0` (for comparisons).
fn fusion_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("MNNQ_FUSE").map(|v| v != "0").unwrap_or(true))
}

fn is_window_op(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::Conv(_) | OpKind::Pool(_) | OpKind::Pool3D { .. } | OpKind::Interp(_)
    )
}

/// Ops whose outputs may keep a channels-last layout (they address memory through strides).
fn keeps_layout(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::Binary { .. }
            | OpKind::Unary(_)
            | OpKind::Relu { .. }
            | OpKind::Relu6 { .. }
            | OpKind::PRelu { .. }
            | OpKind::Elu { .. }
            | OpKind::Selu { .. }
            | OpKind::Scale { .. }
            | OpKind::Select
            | OpKind::Concat { .. }
    )
}

impl Engine {
    /// Prepares a model in engine form for execution.
    pub fn from_ir(ir: ModelIr) -> Result<Engine, EngineError> {
        let tensor_count = ir.tensor_names.len();
        let mut infos: Vec<Option<TensorInfo>> = vec![None; tensor_count];
        let mut values: Vec<Option<Value>> = vec![None; tensor_count];
        let mut folded = vec![false; ir.nodes.len()];
        let name_of = |t: usize| {
            ir.tensor_names
                .get(t)
                .cloned()
                .unwrap_or_else(|| format!("#{t}"))
        };

        // 1. Shapes and constant folding, in the model's order.
        for (ni, node) in ir.nodes.iter().enumerate() {
            let op_err = |msg: String| EngineError::Op {
                op_type: node.type_name.clone(),
                op_name: node.name.clone(),
                message: msg,
            };
            for &t in node.inputs.iter().chain(&node.outputs) {
                if t >= tensor_count {
                    return Err(op_err(format!("tensor index {t} out of range")));
                }
            }
            let mut in_infos = Vec::with_capacity(node.inputs.len());
            for &t in &node.inputs {
                match &infos[t] {
                    Some(i) => in_infos.push(i),
                    None => {
                        return Err(op_err(format!(
                            "input tensor '{}' is used before any op produces it",
                            name_of(t)
                        )))
                    }
                }
            }
            let consts: Vec<Option<&Value>> =
                node.inputs.iter().map(|&t| values[t].as_ref()).collect();
            let outs = match shape::infer(node, &in_infos, &consts) {
                Ok(outs) => outs,
                Err(msg)
                    if msg.ends_with(shape::NOT_CONSTANT)
                        && node.inputs.iter().any(|&t| values[t].is_none()) =>
                {
                    return Engine::deferred(ir);
                }
                Err(msg) => return Err(op_err(msg)),
            };
            if outs.len() < node.outputs.len() {
                return Err(op_err(format!(
                    "produces {} outputs, the model lists {}",
                    outs.len(),
                    node.outputs.len()
                )));
            }
            let foldable = match &node.kind {
                OpKind::Input { .. } => false,
                OpKind::Const { .. } => true,
                OpKind::Shape { .. } | OpKind::Rank | OpKind::Size => true,
                k if is_window_op(k) => false,
                _ => !node.inputs.is_empty() && consts.iter().all(|c| c.is_some()),
            };
            if foldable {
                let results = match &node.kind {
                    OpKind::Const { value, .. } => vec![value.clone()],
                    _ => fold(node, &in_infos, &consts, &outs).map_err(op_err)?,
                };
                for (&t, v) in node.outputs.iter().zip(results) {
                    values[t] = Some(v);
                }
                folded[ni] = true;
            }
            for (&t, info) in node.outputs.iter().zip(outs) {
                infos[t] = Some(info);
            }
        }

        // 2. Outputs, and the nodes they need (dead ops are dropped).
        let mut outputs_t = ir.outputs.clone();
        if outputs_t.is_empty() {
            let consumed: std::collections::HashSet<usize> = ir
                .nodes
                .iter()
                .flat_map(|n| n.inputs.iter().copied())
                .collect();
            outputs_t = ir
                .nodes
                .iter()
                .flat_map(|n| n.outputs.iter().copied())
                .filter(|t| !consumed.contains(t))
                .collect();
        }
        for &t in &outputs_t {
            if infos.get(t).map(|i| i.is_none()).unwrap_or(true) {
                return Err(EngineError::Model(format!(
                    "output tensor '{}' is never produced",
                    name_of(t)
                )));
            }
        }
        let mut producer: HashMap<usize, usize> = HashMap::new();
        for (ni, n) in ir.nodes.iter().enumerate() {
            for &t in &n.outputs {
                producer.insert(t, ni);
            }
        }
        let mut needed = vec![false; ir.nodes.len()];
        let mut stack: Vec<usize> = outputs_t.clone();
        let mut seen = vec![false; tensor_count];
        while let Some(t) = stack.pop() {
            if std::mem::replace(&mut seen[t], true) || values[t].is_some() {
                continue;
            }
            if let Some(&ni) = producer.get(&t) {
                needed[ni] = true;
                stack.extend(ir.nodes[ni].inputs.iter().copied());
            }
        }

        // 3. Slots, layouts and steps.
        let mut slots: Vec<Slot> = Vec::new();
        let mut const_buffers: Vec<Vec<f32>> = Vec::new();
        // Per tensor: slot per layout.
        let mut slot_of: HashMap<(usize, Layout), usize> = HashMap::new();
        let mut steps: Vec<Step> = Vec::new();
        let mut graph_inputs = Vec::new();
        let info = |t: usize| infos[t].as_ref().expect("shape inferred");

        // Slot for a tensor in a given layout, adding a conversion (or a converted constant).
        #[allow(clippy::too_many_arguments)]
        fn slot_in_layout(
            t: usize,
            layout: Layout,
            slots: &mut Vec<Slot>,
            slot_of: &mut HashMap<(usize, Layout), usize>,
            steps: &mut Vec<Step>,
            const_buffers: &mut Vec<Vec<f32>>,
            values: &[Option<Value>],
            infos: &[Option<TensorInfo>],
        ) -> usize {
            let i = infos[t].as_ref().expect("shape inferred");
            let layout = layout.for_rank(i.shape.len());
            if let Some(&s) = slot_of.get(&(t, layout)) {
                return s;
            }
            if let Some(v) = &values[t] {
                // Constants are stored row-major; other layouts are converted once, here.
                let data = if layout == Layout::RowMajor {
                    v.data.clone()
                } else {
                    let mut d = vec![0.0; v.data.len()];
                    crate::ops::movement::convert(
                        &In {
                            shape: &v.shape,
                            dtype: v.dtype,
                            layout: Layout::RowMajor,
                            data: &v.data,
                        },
                        &mut Out {
                            shape: &v.shape,
                            dtype: v.dtype,
                            layout,
                            data: &mut d,
                        },
                    );
                    d
                };
                const_buffers.push(data);
                slots.push(Slot {
                    shape: i.shape.clone(),
                    dtype: i.dtype,
                    layout,
                    location: Location::Const(const_buffers.len() - 1),
                    tensor: t,
                });
                let s = slots.len() - 1;
                slot_of.insert((t, layout), s);
                return s;
            }
            // A runtime tensor in another layout: convert from any existing slot.
            let from = *slot_of
                .iter()
                .find(|((tt, _), _)| *tt == t)
                .map(|(_, s)| s)
                .expect("runtime tensor has a slot");
            slots.push(Slot {
                shape: i.shape.clone(),
                dtype: i.dtype,
                layout,
                location: Location::Arena(0),
                tensor: t,
            });
            let s = slots.len() - 1;
            slot_of.insert((t, layout), s);
            steps.push(Step::Convert { from, to: s });
            s
        }

        for (ni, node) in ir.nodes.iter().enumerate() {
            if let OpKind::Input { .. } = node.kind {
                let t = node.outputs[0];
                let i = info(t);
                slots.push(Slot {
                    shape: i.shape.clone(),
                    dtype: i.dtype,
                    layout: Layout::RowMajor,
                    location: Location::Arena(0),
                    tensor: t,
                });
                slot_of.insert((t, Layout::RowMajor), slots.len() - 1);
                graph_inputs.push((t, slots.len() - 1));
                continue;
            }
            if folded[ni] || !needed[ni] {
                continue;
            }
            let op_err = |msg: String| EngineError::Op {
                op_type: node.type_name.clone(),
                op_name: node.name.clone(),
                message: msg,
            };
            // Input slots: window ops need channels-last data; everything else reads any layout.
            let mut in_slots = Vec::new();
            for (k, &t) in node.inputs.iter().enumerate() {
                let want = if is_window_op(&node.kind) && k == 0 {
                    Some(Layout::ChannelsLast)
                } else {
                    None
                };
                let s = match want {
                    Some(l) => slot_in_layout(
                        t,
                        l,
                        &mut slots,
                        &mut slot_of,
                        &mut steps,
                        &mut const_buffers,
                        &values,
                        &infos,
                    ),
                    None => {
                        let existing =
                            [Layout::ChannelsLast, Layout::RowMajor]
                                .iter()
                                .find_map(|&l| {
                                    slot_of.get(&(t, l.for_rank(info(t).shape.len()))).copied()
                                });
                        match existing {
                            Some(s) => s,
                            None => slot_in_layout(
                                t,
                                Layout::RowMajor,
                                &mut slots,
                                &mut slot_of,
                                &mut steps,
                                &mut const_buffers,
                                &values,
                                &infos,
                            ),
                        }
                    }
                };
                in_slots.push(s);
            }
            // Output layout.
            let out_info = info(node.outputs[0]);
            let out_layout = if is_window_op(&node.kind) {
                Layout::ChannelsLast
            } else if let OpKind::ConvertTensor { dest, .. } = node.kind {
                if dest == crate::ir::MnnFormat::Nc4hw4 {
                    Layout::ChannelsLast
                } else {
                    Layout::RowMajor
                }
            } else if let OpKind::Concat { .. } = node.kind {
                // Concatenating channels-last tensors keeps them channels-last.
                in_slots
                    .first()
                    .map(|&s| slots[s].layout)
                    .unwrap_or(Layout::RowMajor)
            } else if keeps_layout(&node.kind) {
                in_slots
                    .iter()
                    .map(|&s| &slots[s])
                    .find(|s| s.shape == out_info.shape)
                    .map(|s| s.layout)
                    .unwrap_or(Layout::RowMajor)
            } else {
                Layout::RowMajor
            };
            let mut out_slots = Vec::new();
            for &t in &node.outputs {
                let i = info(t);
                slots.push(Slot {
                    shape: i.shape.clone(),
                    dtype: i.dtype,
                    layout: out_layout.for_rank(i.shape.len()),
                    location: Location::Arena(0),
                    tensor: t,
                });
                let s = slots.len() - 1;
                slot_of.insert((t, slots[s].layout), s);
                out_slots.push(s);
            }
            let in_shape = &slots[in_slots.first().copied().unwrap_or(0)].shape;
            let prepared = match &node.kind {
                OpKind::Conv(p) => {
                    let mut p = (**p).clone();
                    if p.weights.is_empty() {
                        // Weights (and bias) given as constant inputs.
                        let w = node
                            .inputs
                            .get(1)
                            .and_then(|&t| values[t].as_ref())
                            .ok_or_else(|| op_err("convolution weights must be constant".into()))?;
                        p.weights = w.to_f32();
                        if let Some(b) = node.inputs.get(2).and_then(|&t| values[t].as_ref()) {
                            p.bias = b.to_f32();
                        }
                        if p.in_channels == 0 {
                            p.in_channels = in_shape[1];
                        }
                    }
                    if p.in_channels == 0 {
                        p.in_channels = in_shape[1];
                    }
                    if p.has_output_shape {
                        let consts: Vec<Option<&Value>> =
                            node.inputs.iter().map(|&t| values[t].as_ref()).collect();
                        p.output_size = Some(
                            shape::deconv_output_size(&p, &consts, node.inputs.len())
                                .map_err(op_err)?,
                        );
                    }
                    Prepared::Conv(Box::new(PreparedConv::new(&p, in_shape).map_err(op_err)?))
                }
                OpKind::Pool(p) => {
                    let (in_h, in_w) = shape::pool_spatial(in_shape);
                    Prepared::Pool(
                        p.pool_type,
                        shape::pool_window(p, in_h, in_w).map_err(op_err)?,
                    )
                }
                OpKind::Pool3D { hw, .. } if in_shape.len() == 4 => Prepared::Pool(
                    hw.pool_type,
                    shape::pool_window(hw, in_shape[2], in_shape[3]).map_err(op_err)?,
                ),
                OpKind::Pool3D { hw, depth } => {
                    let (first, second) =
                        shape::pool3d_windows(hw, depth, in_shape).map_err(op_err)?;
                    Prepared::Pool3D(hw.pool_type, first, second)
                }
                OpKind::Interp(p) => {
                    let size = node.inputs.get(1).and_then(|&t| values[t].as_ref());
                    Prepared::Interp {
                        resize_type: p.resize_type,
                        cubic_a: p.cubic_coeff_a,
                        plan: shape::interp_plan(p, in_shape, size).map_err(op_err)?,
                    }
                }
                _ => Prepared::None,
            };
            steps.push(Step::Node {
                node: ni,
                inputs: in_slots,
                outputs: out_slots,
                prepared,
            });
        }

        // Outputs: the slot each output tensor ended in (row-major preferred).
        let mut graph_outputs = Vec::new();
        for &t in &outputs_t {
            let s = [Layout::RowMajor, Layout::ChannelsLast]
                .iter()
                .find_map(|&l| slot_of.get(&(t, l)).copied());
            let s = match s {
                Some(s) => s,
                None => slot_in_layout(
                    t,
                    Layout::RowMajor,
                    &mut slots,
                    &mut slot_of,
                    &mut steps,
                    &mut const_buffers,
                    &values,
                    &infos,
                ),
            };
            graph_outputs.push((t, s));
        }

        let memory = plan_memory(&mut slots, &steps, &graph_inputs, &graph_outputs);
        let mut engine = Engine {
            ir,
            infos,
            values,
            slots,
            steps,
            memory,
            const_buffers,
            inputs: graph_inputs,
            outputs: graph_outputs,
            int8: None,
            fused: Vec::new(),
            deferred: None,
        };
        if fusion_enabled() {
            engine.fused = crate::fuse::find_chains(&engine);
        }
        Ok(engine)
    }

    /// An engine whose shapes depend on input values: only the graph inputs are described
    /// (shapes as declared), everything else is prepared per run by [`Engine::specialize`].
    fn deferred(ir: ModelIr) -> Result<Engine, EngineError> {
        let mut slots = Vec::new();
        let mut inputs = Vec::new();
        for node in &ir.nodes {
            if let OpKind::Input { dims, dtype, .. } = &node.kind {
                let t = node.outputs[0];
                slots.push(Slot {
                    shape: dims.iter().map(|&d| d.max(0) as usize).collect(),
                    dtype: *dtype,
                    layout: Layout::RowMajor,
                    location: Location::Arena(0),
                    tensor: t,
                });
                inputs.push((t, slots.len() - 1));
            }
        }
        Ok(Engine {
            infos: vec![None; ir.tensor_names.len()],
            values: vec![None; ir.tensor_names.len()],
            slots,
            steps: Vec::new(),
            memory: MemoryPlan::default(),
            const_buffers: Vec::new(),
            inputs,
            outputs: Vec::new(),
            int8: None,
            fused: Vec::new(),
            deferred: Some(Box::new(ir.clone())),
            ir,
        })
    }

    /// Whether shapes depend on input values, so that every run prepares the model anew.
    pub fn is_value_dependent(&self) -> bool {
        self.deferred.is_some()
    }

    /// The model prepared for these input values (each graph input becomes a constant).
    pub fn specialize(&self, inputs: &[(usize, Value)]) -> Result<Engine, EngineError> {
        let Some(ir) = self.deferred.as_deref() else {
            return Err(EngineError::Run(
                "the model does not depend on input values".into(),
            ));
        };
        let mut ir = ir.clone();
        for node in &mut ir.nodes {
            if let OpKind::Input { format, .. } = node.kind {
                let t = node.outputs[0];
                let value = inputs
                    .iter()
                    .find(|(i, _)| *i == t)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        EngineError::Run(format!("missing input '{}'", ir.tensor_names[t]))
                    })?;
                node.kind = OpKind::Const { value, format };
            }
        }
        let engine = Engine::from_ir(ir)?;
        if engine.deferred.is_some() {
            return Err(EngineError::Model(
                "a shape depends on values that are not known even with the inputs given".into(),
            ));
        }
        Ok(engine)
    }

    /// Names and logical shapes of the model's inputs.
    pub fn input_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.inputs
            .iter()
            .map(|&(t, s)| (self.ir.tensor_names[t].clone(), self.slots[s].shape.clone()))
            .collect()
    }

    /// Names and logical shapes of the model's outputs.
    pub fn output_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.outputs
            .iter()
            .map(|&(t, s)| (self.ir.tensor_names[t].clone(), self.slots[s].shape.clone()))
            .collect()
    }

    /// The name of tensor `t`.
    pub fn tensor_name(&self, t: usize) -> &str {
        &self.ir.tensor_names[t]
    }
}

/// Evaluates a node whose inputs are all known at load.
fn fold(
    node: &crate::ir::Node,
    in_infos: &[&TensorInfo],
    consts: &[Option<&Value>],
    outs: &[TensorInfo],
) -> Result<Vec<Value>, String> {
    let ins: Vec<In> = in_infos
        .iter()
        .zip(consts)
        .map(|(i, c)| In {
            shape: &i.shape,
            dtype: i.dtype,
            layout: Layout::RowMajor,
            data: c.map(|v| v.data.as_slice()).unwrap_or(&[]),
        })
        .collect();
    let mut buffers: Vec<Vec<f32>> = outs
        .iter()
        .take(node.outputs.len())
        .map(|o| vec![0.0; o.shape.iter().product()])
        .collect();
    {
        let mut out_views: Vec<Out> = buffers
            .iter_mut()
            .zip(outs)
            .map(|(b, o)| Out {
                shape: &o.shape,
                dtype: o.dtype,
                layout: Layout::RowMajor,
                data: b.as_mut_slice(),
            })
            .collect();
        crate::session::execute_node(
            &node.kind,
            &Prepared::None,
            &ins,
            &mut out_views,
            consts,
            &Parallel::sequential(),
        )?;
    }
    Ok(buffers
        .into_iter()
        .zip(outs)
        .map(|(data, o)| Value {
            shape: o.shape.clone(),
            dtype: o.dtype,
            data,
        })
        .collect())
}

/// Assigns arena offsets to slots with overlapping lifetimes kept apart (greedy, largest first).
fn plan_memory(
    slots: &mut [Slot],
    steps: &[Step],
    inputs: &[(usize, usize)],
    outputs: &[(usize, usize)],
) -> MemoryPlan {
    let n = slots.len();
    let never = usize::MAX;
    let mut first = vec![never; n];
    let mut last = vec![0usize; n];
    for &(_, s) in inputs {
        first[s] = 0;
    }
    for (i, step) in steps.iter().enumerate() {
        let t = i + 1;
        let (reads, writes): (Vec<usize>, Vec<usize>) = match step {
            Step::Node {
                inputs, outputs, ..
            } => (inputs.clone(), outputs.clone()),
            Step::Convert { from, to } => (vec![*from], vec![*to]),
        };
        for s in writes {
            first[s] = first[s].min(t);
            last[s] = last[s].max(t);
        }
        for s in reads {
            last[s] = last[s].max(t);
        }
    }
    let end = steps.len() + 1;
    for &(_, s) in outputs {
        last[s] = end;
    }
    let mut order: Vec<usize> = (0..n)
        .filter(|&s| matches!(slots[s].location, Location::Arena(_)) && first[s] != never)
        .collect();
    order.sort_by_key(|&s| (std::cmp::Reverse(slots[s].len()), s));
    // Rounded to 16 floats so every tensor starts on a 64-byte boundary of the arena.
    let size = |s: &Slot| s.len().div_ceil(16) * 16;
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (offset, size, first, last)
    let mut arena_len = 0;
    let mut unshared = 0;
    for s in order {
        let need = size(&slots[s]);
        unshared += need;
        let mut conflicts: Vec<(usize, usize)> = placed
            .iter()
            .filter(|p| !(p.3 < first[s] || last[s] < p.2))
            .map(|p| (p.0, p.1))
            .collect();
        conflicts.sort_unstable();
        let mut offset = 0;
        for (o, sz) in conflicts {
            if offset + need <= o {
                break;
            }
            offset = offset.max(o + sz);
        }
        placed.push((offset, need, first[s], last[s]));
        slots[s].location = Location::Arena(offset);
        arena_len = arena_len.max(offset + need);
    }
    MemoryPlan {
        arena_len,
        unshared_len: unshared,
    }
}
