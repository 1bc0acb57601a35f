//! Running a prepared model: one arena per session, reused across runs.

use std::collections::HashMap;

use crate::engine::{Engine, Location, Prepared, Step};
use crate::error::EngineError;
use crate::ir::OpKind;
use crate::ops::{elementwise, movement, reference, window, In, Out, Parallel};
use crate::tensor::{DType, Layout, Tensor, TensorView, Value};

/// An execution context for one engine: its memory and worker threads.
pub struct Session<'e> {
    engine: &'e Engine,
    arena: Vec<f32>,
    pool: Option<rayon::ThreadPool>,
    threads: usize,
    /// Fake quantization (quantize-dequantize right after the tensor is made), per tensor.
    fake_quant: HashMap<usize, FakeQuant>,
    /// Accumulated time per step when profiling is on.
    profile: Option<Vec<std::time::Duration>>,
    /// int8 codes of the slots a quantized model keeps in int8 (empty for float models).
    int8_codes: crate::int8::Int8Buffers,
    /// Observers see float tensors in memory order (set only by `run_observed_unordered`).
    observe_memory_order: bool,
    /// Models whose shapes depend on input values: the last input values and the model
    /// prepared for them.
    specialized: Option<Specialized>,
}

/// Input values (by tensor) and the model prepared for them.
type Specialized = (Vec<(usize, Value)>, Box<Engine>);

/// Runs one op. Inputs and outputs are in the layouts the schedule chose.
pub fn execute_node(
    kind: &OpKind,
    prepared: &Prepared,
    ins: &[In],
    outs: &mut [Out],
    consts: &[Option<&Value>],
    par: &Parallel,
) -> Result<(), String> {
    match (kind, prepared) {
        (OpKind::Conv(_), Prepared::Conv(conv)) => {
            conv.run(ins[0].data, outs[0].data, par);
            Ok(())
        }
        (OpKind::Pool(_) | OpKind::Pool3D { .. }, Prepared::Pool(pool_type, w)) => {
            // Channels-last [N, L, C] memory is an [N, L, 1, C] image.
            let s = ins[0].shape;
            let image = [s[0], s[1], s[2], s.get(3).copied().unwrap_or(1)];
            window::pool(*pool_type, w, &image, ins[0].data, outs[0].data, par);
            Ok(())
        }
        (OpKind::Pool3D { .. }, Prepared::Pool3D(pool_type, first, second)) => {
            // Channels-last [N, D, H, W, C] memory: N*D images of H x W, then N images of
            // D x (OH*OW) for the depth window.
            let s = ins[0].shape;
            let (n, c, d) = (s[0], s[1], s[2]);
            let mut slices = vec![0.0f32; n * d * first.out_h * first.out_w * c];
            window::pool(
                *pool_type,
                first,
                &[n * d, c, s[3], s[4]],
                ins[0].data,
                &mut slices,
                par,
            );
            let depth_image = [n, c, d, first.out_h * first.out_w];
            window::pool(*pool_type, second, &depth_image, &slices, outs[0].data, par);
            Ok(())
        }
        (
            OpKind::Interp(_),
            Prepared::Interp {
                resize_type,
                cubic_a,
                plan,
            },
        ) => window::interp(
            *resize_type,
            *cubic_a,
            plan,
            ins[0].shape,
            ins[0].data,
            outs[0].data,
            par,
        ),
        (OpKind::Conv(_) | OpKind::Pool(_) | OpKind::Pool3D { .. } | OpKind::Interp(_), _) => {
            Err("window op was not prepared".into())
        }
        (OpKind::Binary { op, relu }, _) => {
            elementwise::binary(*op, *relu, &ins[0], &ins[1], &mut outs[0], par);
            Ok(())
        }
        (OpKind::Unary(op), _) => {
            elementwise::unary(*op, &ins[0], &mut outs[0], par);
            Ok(())
        }
        (OpKind::Relu { slope }, _) => {
            let s = *slope;
            elementwise::map(
                &ins[0],
                &mut outs[0],
                par,
                move |x| if x < 0.0 { x * s } else { x },
            );
            Ok(())
        }
        (OpKind::Relu6 { min, max }, _) => {
            let (lo, hi) = (*min, *max);
            elementwise::map(&ins[0], &mut outs[0], par, move |x| x.max(lo).min(hi));
            Ok(())
        }
        (OpKind::Elu { alpha }, _) => {
            let a = *alpha;
            elementwise::map(&ins[0], &mut outs[0], par, move |x| {
                if x < 0.0 {
                    a * (x.exp() - 1.0)
                } else {
                    x
                }
            });
            Ok(())
        }
        (OpKind::Selu { scale, alpha }, _) => {
            let (s, a) = (*scale, *alpha);
            elementwise::map(&ins[0], &mut outs[0], par, move |x| {
                if x < 0.0 {
                    s * a * (x.exp() - 1.0)
                } else {
                    s * x
                }
            });
            Ok(())
        }
        (OpKind::PRelu { slopes }, _) => {
            let single = slopes.len() == 1;
            elementwise::per_channel(&ins[0], &mut outs[0], |x, c| {
                let s = if single {
                    slopes[0]
                } else {
                    slopes.get(c).copied().unwrap_or(0.0)
                };
                if x < 0.0 {
                    x * s
                } else {
                    x
                }
            });
            Ok(())
        }
        (OpKind::Scale { scale, bias }, _) => {
            elementwise::per_channel(&ins[0], &mut outs[0], |x, c| {
                x * scale.get(c).copied().unwrap_or(1.0) + bias.get(c).copied().unwrap_or(0.0)
            });
            Ok(())
        }
        (OpKind::Eltwise { kind, coeff }, _) => {
            elementwise::eltwise(*kind, coeff, ins, &mut outs[0]);
            Ok(())
        }
        (OpKind::Select, _) => {
            elementwise::select(&ins[0], &ins[1], &ins[2], &mut outs[0]);
            Ok(())
        }
        (OpKind::Concat { axis }, _) => {
            let a = crate::shape::norm_axis(*axis as i64, ins[0].shape.len())?;
            movement::concat(ins, a, &mut outs[0]);
            Ok(())
        }
        (OpKind::ConvertTensor { source, dest }, _) => {
            let x = &ins[0];
            let rank = x.shape.len();
            if rank >= 3 && source.is_channels_first() != dest.is_channels_first() {
                // NHWC <-> channels-first: a logical permutation of the dims.
                let perm: Vec<usize> = if dest.is_channels_first() {
                    let mut p = vec![0, rank - 1];
                    p.extend(1..rank - 1);
                    p
                } else {
                    let mut p = vec![0];
                    p.extend(2..rank);
                    p.push(1);
                    p
                };
                movement::permute(x, &perm, &mut outs[0]);
            } else {
                movement::convert(x, &mut outs[0]);
            }
            Ok(())
        }
        (OpKind::Input { .. } | OpKind::Const { .. }, _) => {
            Err("inputs and constants are not executed".into())
        }
        _ => reference::run(kind, ins, outs, consts),
    }
}

impl<'e> Session<'e> {
    /// A session with `threads` worker threads (0: one per available core).
    pub fn new(engine: &'e Engine, threads: usize) -> Result<Session<'e>, EngineError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let pool = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| {
                        EngineError::Run(format!("cannot start {threads} threads: {e}"))
                    })?,
            )
        } else {
            None
        };
        Ok(Session {
            engine,
            arena: vec![0.0; engine.memory.arena_len],
            pool,
            threads,
            fake_quant: HashMap::new(),
            profile: None,
            int8_codes: crate::int8::Int8Buffers::for_engine(engine),
            observe_memory_order: false,
            specialized: None,
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn engine(&self) -> &Engine {
        self.engine
    }

    /// Quantize-dequantize tensor `tensor` with `scale` (symmetric int8) right after it is
    /// computed, or stop doing so with `None`. For diagnosing quantization error per tensor.
    pub fn set_fake_quant(&mut self, tensor: usize, scale: Option<f32>) {
        self.set_fake_quant_with_zero_point(tensor, scale.map(|s| (s, 0)));
    }

    /// [`Self::set_fake_quant`] with asymmetric codes: `(q - zero) * scale`, `q` in [-127, 127].
    pub fn set_fake_quant_with_zero_point(&mut self, tensor: usize, quant: Option<(f32, i8)>) {
        self.set_fake_quant_mode(
            tensor,
            quant.map(|(scale, zero)| FakeQuant {
                scale,
                zero,
                channel_groups: None,
                channel_steps: None,
            }),
        );
    }

    /// The general form of [`Self::set_fake_quant`]: see [`FakeQuant`].
    pub fn set_fake_quant_mode(&mut self, tensor: usize, quant: Option<FakeQuant>) {
        match quant {
            Some(q) => self.fake_quant.insert(tensor, q),
            None => self.fake_quant.remove(&tensor),
        };
    }

    /// Starts (or stops) timing every step of later runs.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![std::time::Duration::ZERO; self.engine.steps.len()]);
    }

    /// Accumulated time per step since profiling started: (op type, op name, milliseconds).
    /// Layout conversions the engine inserted are reported as type `Convert`.
    pub fn profile_report(&self) -> Vec<(String, String, f64)> {
        let Some(times) = &self.profile else {
            return Vec::new();
        };
        self.engine
            .steps
            .iter()
            .zip(times)
            .map(|(step, t)| {
                let (ty, name) = match step {
                    Step::Node { node, .. } => {
                        let n = &self.engine.ir.nodes[*node];
                        (n.type_name.clone(), n.name.clone())
                    }
                    Step::Convert { to, .. } => (
                        "Convert".to_string(),
                        self.engine
                            .tensor_name(self.engine.slots[*to].tensor)
                            .to_string(),
                    ),
                };
                (ty, name, t.as_secs_f64() * 1e3)
            })
            .collect()
    }

    /// Runs the model on named inputs (logical row-major); returns every output, row-major.
    pub fn run(&mut self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>, EngineError> {
        self.run_impl(inputs, &mut |_, _| {}, false)
    }

    /// As [`Session::run`], also showing every computed tensor (graph inputs included) to
    /// `observer` as `(tensor index, view)` in logical row-major order, right after it is made.
    pub fn run_observed(
        &mut self,
        inputs: &[(&str, Tensor)],
        observer: &mut dyn FnMut(usize, &TensorView),
    ) -> Result<Vec<(String, Tensor)>, EngineError> {
        self.run_impl(inputs, observer, true)
    }

    /// As [`Session::run_observed`], but a float tensor's `view.data` is its storage in memory
    /// order (channels-last tensors are not reordered to logical order): every logical element
    /// exactly once, no padding, in an unspecified order. For statistics that do not depend on
    /// element order (min/max, histograms), it saves a reordering copy per tensor. Integer
    /// tensors, and the int8 path, still show row-major data.
    pub fn run_observed_unordered(
        &mut self,
        inputs: &[(&str, Tensor)],
        observer: &mut dyn FnMut(usize, &TensorView),
    ) -> Result<Vec<(String, Tensor)>, EngineError> {
        self.observe_memory_order = true;
        let result = self.run_impl(inputs, observer, true);
        self.observe_memory_order = false;
        result
    }

    fn run_impl(
        &mut self,
        inputs: &[(&str, Tensor)],
        observer: &mut dyn FnMut(usize, &TensorView),
        observing: bool,
    ) -> Result<Vec<(String, Tensor)>, EngineError> {
        let engine = self.engine;
        if engine.is_value_dependent() {
            return self.run_value_dependent(inputs);
        }
        // Inputs.
        for &(t, s) in &engine.inputs {
            let name = engine.tensor_name(t);
            let given = inputs
                .iter()
                .find(|(n, _)| *n == name)
                .or_else(|| {
                    if engine.inputs.len() == 1 && inputs.len() == 1 {
                        inputs.first()
                    } else {
                        None
                    }
                })
                .ok_or_else(|| EngineError::Run(format!("missing input '{name}'")))?;
            let slot = &engine.slots[s];
            if given.1.shape != slot.shape {
                return Err(EngineError::Run(format!(
                    "input '{name}' has shape {:?}, the model expects {:?}",
                    given.1.shape, slot.shape
                )));
            }
            if given.1.data.len() != slot.len() {
                return Err(EngineError::Run(format!(
                    "input '{name}' data does not match its shape"
                )));
            }
            let Location::Arena(off) = slot.location else {
                return Err(EngineError::Run("graph input without arena memory".into()));
            };
            let dst = &mut self.arena[off..off + slot.len()];
            if slot.dtype == DType::I32 {
                for (d, &v) in dst.iter_mut().zip(&given.1.data) {
                    *d = crate::tensor::i32_to_bits(v as i32);
                }
            } else {
                dst.copy_from_slice(&given.1.data);
            }
            if observing {
                self.observe(s, observer);
            }
        }
        let pool = self.pool.take();
        let result = match engine.int8.as_deref() {
            Some(plan) => plan.run(
                engine,
                &mut self.arena,
                &mut self.int8_codes,
                &Parallel {
                    pool: pool.as_ref(),
                },
                observing.then_some(observer),
            ),
            None => self.run_steps(pool.as_ref(), observer, observing),
        };
        self.pool = pool;
        result?;
        // Outputs.
        let mut results = Vec::new();
        for &(t, s) in &engine.outputs {
            let slot = &engine.slots[s];
            let input = slot_in(engine, self.arena.as_mut_ptr(), slot);
            results.push((
                engine.tensor_name(t).to_string(),
                Tensor::new(slot.shape.clone(), input.to_row_major_f32()),
            ));
        }
        Ok(results)
    }

    /// Runs a model whose shapes depend on input values: prepares it for these values (reused
    /// while they repeat) and runs that.
    fn run_value_dependent(
        &mut self,
        inputs: &[(&str, Tensor)],
    ) -> Result<Vec<(String, Tensor)>, EngineError> {
        let engine = self.engine;
        let mut values = Vec::new();
        for &(t, s) in &engine.inputs {
            let name = engine.tensor_name(t);
            let given = inputs
                .iter()
                .find(|(n, _)| *n == name)
                .or_else(|| (engine.inputs.len() == 1 && inputs.len() == 1).then(|| &inputs[0]))
                .ok_or_else(|| EngineError::Run(format!("missing input '{name}'")))?;
            let tensor = &given.1;
            if tensor.data.len() != tensor.shape.iter().product::<usize>() {
                return Err(EngineError::Run(format!(
                    "input '{name}' data does not match its shape"
                )));
            }
            let value = match engine.slots[s].dtype {
                DType::I32 => {
                    let ints: Vec<i32> = tensor.data.iter().map(|&v| v as i32).collect();
                    Value::from_i32(tensor.shape.clone(), &ints)
                }
                DType::F32 => Value::from_f32(tensor.shape.clone(), tensor.data.clone()),
            };
            values.push((t, value));
        }
        let reuse = matches!(&self.specialized, Some((v, _)) if *v == values);
        if !reuse {
            let prepared = engine.specialize(&values)?;
            self.specialized = Some((values, Box::new(prepared)));
        }
        let (_, prepared) = self.specialized.as_ref().expect("prepared above");
        let mut session = Session::new(prepared, self.threads)?;
        session.run(&[])
    }

    fn run_steps(
        &mut self,
        pool: Option<&rayon::ThreadPool>,
        observer: &mut dyn FnMut(usize, &TensorView),
        observing: bool,
    ) -> Result<(), EngineError> {
        let engine = self.engine;
        let par = Parallel { pool };
        // Fused elementwise chains, unless every tensor has to be seen.
        let fused: &[crate::fuse::FusedChain] = if observing || !self.fake_quant.is_empty() {
            &[]
        } else {
            &engine.fused
        };
        let mut next_chain = 0;
        let mut skip_until = 0;
        for (step_index, step) in engine.steps.iter().enumerate() {
            if step_index < skip_until {
                continue;
            }
            let started = self.profile.is_some().then(step_clock);
            if let Some(chain) = fused.get(next_chain).filter(|c| c.first == step_index) {
                // SAFETY: the arena is this engine's.
                unsafe { chain.run(engine, self.arena.as_mut_ptr(), &par) };
                next_chain += 1;
                skip_until = chain.last + 1;
                if let (Some(start), Some(times)) = (started, self.profile.as_mut()) {
                    times[step_index] += step_clock().saturating_sub(start);
                }
                continue;
            }
            match step {
                Step::Convert { from, to } => {
                    let (src, dst) = (&engine.slots[*from], &engine.slots[*to]);
                    let arena = self.arena.as_mut_ptr();
                    let input = slot_in(engine, arena, src);
                    let mut output = slot_out(arena, dst);
                    movement::convert(&input, &mut output);
                }
                Step::Node {
                    node,
                    inputs,
                    outputs,
                    prepared,
                } => {
                    let n = &engine.ir.nodes[*node];
                    let arena = self.arena.as_mut_ptr();
                    let ins: Vec<In> = inputs
                        .iter()
                        .map(|&s| slot_in(engine, arena, &engine.slots[s]))
                        .collect();
                    let mut outs: Vec<Out> = outputs
                        .iter()
                        .map(|&s| slot_out(arena, &engine.slots[s]))
                        .collect();
                    let consts: Vec<Option<&Value>> = n
                        .inputs
                        .iter()
                        .map(|&t| engine.values[t].as_ref())
                        .collect();
                    execute_node(&n.kind, prepared, &ins, &mut outs, &consts, &par).map_err(
                        |m| EngineError::Op {
                            op_type: n.type_name.clone(),
                            op_name: n.name.clone(),
                            message: m,
                        },
                    )?;
                    drop(outs);
                    for &s in outputs {
                        let t = engine.slots[s].tensor;
                        if let Some(quant) = self.fake_quant.get(&t) {
                            let slot = &engine.slots[s];
                            if let Location::Arena(off) = slot.location {
                                quant.apply(
                                    &mut self.arena[off..off + slot.len()],
                                    &slot.shape,
                                    slot.layout,
                                );
                            }
                        }
                        if observing {
                            self.observe(s, observer);
                        }
                    }
                }
            }
            if let (Some(start), Some(times)) = (started, self.profile.as_mut()) {
                times[step_index] += step_clock().saturating_sub(start);
            }
        }
        Ok(())
    }

    fn observe(&mut self, s: usize, observer: &mut dyn FnMut(usize, &TensorView)) {
        let engine = self.engine;
        let slot = &engine.slots[s];
        let input = slot_in(engine, self.arena.as_mut_ptr(), slot);
        let reordered;
        let data: &[f32] = if self.observe_memory_order && slot.dtype == DType::F32 {
            // A slot holds exactly `shape.product()` elements (no channel padding).
            input.data
        } else {
            reordered = input.to_row_major_f32();
            &reordered
        };
        observer(
            slot.tensor,
            &TensorView {
                name: engine.tensor_name(slot.tensor),
                shape: &slot.shape,
                dtype: slot.dtype,
                data,
            },
        );
    }
}

/// How a diagnostic run rounds one float tensor to int8 codes and back.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeQuant {
    /// The step between codes; values are `(q - zero) * scale` with `q` in [-127, 127].
    pub scale: f32,
    pub zero: i8,
    /// A what-if that no int8 file can express: split each image's channels (dim 1), sorted
    /// by the share of the tensor's range their values need ([`Self::range_share`]), into
    /// this many groups of equal count, and give each group a finer step where its values
    /// need only part of that range ([`Self::step_for_share`]). It measures how much of a
    /// model's loss per-channel activation resolution could win back (a per-image oracle).
    /// `None`: one step for the whole tensor.
    pub channel_groups: Option<std::num::NonZeroUsize>,
    /// Another what-if: a fixed step per channel (dim 1), for example one per group of
    /// channels chosen from calibration data, as channel splitting would fix them. Takes
    /// precedence over `scale` and `channel_groups`.
    pub channel_steps: Option<std::sync::Arc<[f32]>>,
}

impl FakeQuant {
    /// The share of the tensor's reach (how far its codes go above and below zero) that
    /// values peaking at `up` above and `down` below zero need, on the tighter side.
    pub fn range_share(&self, up: f32, down: f32) -> f32 {
        let z = f32::from(self.zero);
        let (reach_up, reach_down) = (self.scale * (127.0 - z), self.scale * (127.0 + z));
        let side = |peak: f32, reach: f32| if peak > 0.0 { peak / reach } else { 0.0 };
        side(up, reach_up).max(side(down, reach_down))
    }

    /// The step for values needing `share` of the reach: finer in proportion, never coarser
    /// than `scale` (the zero point stays).
    pub fn step_for_share(&self, share: f32) -> f32 {
        if share > 0.0 && share < 1.0 {
            self.scale * share
        } else {
            self.scale
        }
    }

    /// Quantize-dequantize `data`, a tensor of logical `shape` stored in `layout`.
    pub fn apply(&self, data: &mut [f32], shape: &[usize], layout: Layout) {
        let round_trip = |v: f32, scale: f32| {
            let z = f32::from(self.zero);
            ((v / scale + z).round().clamp(-127.0, 127.0) - z) * scale
        };
        if self.channel_groups.is_none() && self.channel_steps.is_none() {
            for v in data.iter_mut() {
                *v = round_trip(*v, self.scale);
            }
            return;
        }
        let batch = shape.first().copied().unwrap_or(1).max(1);
        let channels = shape.get(1).copied().unwrap_or(1).max(1);
        let inner = data.len() / batch / channels;
        let channels_last = layout == Layout::ChannelsLast && shape.len() >= 3;
        let index = |n: usize, c: usize, i: usize| {
            if channels_last {
                (n * inner + i) * channels + c
            } else {
                (n * channels + c) * inner + i
            }
        };
        if let Some(steps) = &self.channel_steps {
            assert_eq!(steps.len(), channels, "one fake-quant step per channel");
            for n in 0..batch {
                for (c, &step) in steps.iter().enumerate() {
                    for i in 0..inner {
                        let v = &mut data[index(n, c, i)];
                        *v = round_trip(*v, step);
                    }
                }
            }
            return;
        }
        let Some(groups) = self.channel_groups else {
            return;
        };
        for n in 0..batch {
            let mut by_need: Vec<(f32, usize)> = (0..channels)
                .map(|c| {
                    let (up, down) = (0..inner).fold((0f32, 0f32), |(u, d), i| {
                        let v = data[index(n, c, i)];
                        (u.max(v), d.max(-v))
                    });
                    (self.range_share(up, down), c)
                })
                .collect();
            by_need.sort_by(|a, b| a.0.total_cmp(&b.0));
            for group in by_need.chunks(channels.div_ceil(groups.get())) {
                let scale = self.step_for_share(group.last().map_or(0.0, |g| g.0));
                for &(_, c) in group {
                    for i in 0..inner {
                        let v = &mut data[index(n, c, i)];
                        *v = round_trip(*v, scale);
                    }
                }
            }
        }
    }
}

/// The clock profiles use: this thread's on-CPU time where Linux exposes it (a loaded machine
/// inflates wall time), else wall time since the first call. With more than one thread the
/// workers' time is not included.
fn step_clock() -> std::time::Duration {
    if let Some(ns) = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
    {
        return std::time::Duration::from_nanos(ns);
    }
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// A read view of a slot. The arena pointer is shared by the views of one step; the schedule
/// guarantees that a step's outputs never overlap its inputs.
fn slot_in<'a>(engine: &'a Engine, arena: *mut f32, slot: &'a crate::engine::Slot) -> In<'a> {
    let data: &[f32] = match slot.location {
        // SAFETY: the memory plan keeps the slot inside the arena, and no output of the current
        // step overlaps it.
        Location::Arena(off) => unsafe { std::slice::from_raw_parts(arena.add(off), slot.len()) },
        Location::Const(i) => &engine.const_buffers[i],
    };
    In {
        shape: &slot.shape,
        dtype: slot.dtype,
        layout: slot.layout,
        data,
    }
}

fn slot_out<'a>(arena: *mut f32, slot: &'a crate::engine::Slot) -> Out<'a> {
    let Location::Arena(off) = slot.location else {
        unreachable!("outputs always live in the arena")
    };
    // SAFETY: as `slot_in`; outputs of one step are planned disjoint from each other.
    let data = unsafe { std::slice::from_raw_parts_mut(arena.add(off), slot.len()) };
    Out {
        shape: &slot.shape,
        dtype: slot.dtype,
        layout: slot.layout,
        data,
    }
}

#[allow(dead_code)]
fn _layout_is_used(_: Layout) {}
