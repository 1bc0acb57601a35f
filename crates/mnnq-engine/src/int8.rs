//! The int8 runtime: runs MNN's quantized models (`Net.extraTensorDescribe[].quantInfo` plus
//! IDST-coded convolution weights) with MNN's integer arithmetic (`docs/mnn-quantization.md`
//! §10-§11).
//!
//! The float engine's preparation is reused as is: shapes, constant folding, layouts, schedule and
//! arena plan. [`Int8Plan::build`] walks that schedule and decides per op whether it runs int8
//! (MNN's rules, §10/§11.1); int8 ops read and write an i8 twin of the float slots they use,
//! in the same layout. Casts are inserted on demand, once per slot: `FloatToInt8` where an int8 op
//! reads a value that only exists as float, `Int8ToFloat` where a float op (or the caller) reads a
//! value that only exists as int8. Because every read of a float slot happens at a step where the
//! float schedule also reads it, the float arena plan stays valid.
//!
//! Ops that run int8 (all else runs float on dequantized weights/values, as in MNN):
//! * Convolution (group 1) and ConvolutionDepthwise with one input, IDST weights (type 1/2/4,
//!   symmetric, one alpha per output channel) and quant info on input and output tensors;
//!   tensor scales are used (a zero tensor scale keeps the op float: MNN's IDST
//!   `scaleIn`/`scaleOut` fallback would still meet a zero-scale cast);
//! * Pooling / Pooling3D (max, average) with equal in/out scales; the average uses MNN's x86
//!   formula ([`average_pool_x86_row`]);
//! * BinaryOp Add/Sub/Mul/Max/Min when every operand has a scale and the same shape and layout
//!   as the output, is a scalar, or holds one value per channel of a channels-last output
//!   (shape [1, C, 1, 1]: the squeeze-excite multiply), with MNN's formula (§11.7);
//! * elementwise functions of one int8 tensor, as one exact 256-entry table ([`CodeTable`]),
//!   each MNN's own per-op int8 function: UnaryOp (its `tableInt8`, else the float function at
//!   each code, requantized: MNN's float detour between casts), ReLU (any slope) and ReLU6/clamp
//!   between any two scales (`clamp(round(f(q * s_in) / s_out))`, the float op between casts,
//!   or MNN's int8 ReLU where the scales are equal), and a BinaryOp with a scalar constant (the
//!   constant quantized with its own tensor scale, then §11.7's int8 formula at each code, as
//!   [`binary_int8`] computes it; a constant without scale: the float detour). Chains of these
//!   whose intermediate tensors have no other reader are composed table-then-table into one
//!   table (`MNNQ_INT8_NO_FUSE=1` turns that off so every tensor can be observed); composition
//!   is exact, so the bytes equal the step-by-step int8 run, i.e. MNN's;
//! * `MNNQ_INT8_PRECISE=1` (opt-in, not MNN's bytes, slightly better fidelity): a fused chain is
//!   computed in float across its joints (no rounding of intermediate tensors, scalar
//!   constants unquantized), and a per-channel BinaryOp whose short operand comes from such a
//!   chain (the squeeze-excite `x * hardsigmoid(..)`) takes the chain's float values directly
//!   (no rounding of the excitation vector);
//! * Interp nearest (row copies; a table when the scales differ) and bilinear (the float
//!   kernel's weights on the codes, requantized);
//! * Concat (an input of another scale requantized by a table first) and layout/shape-only
//!   ops between equal scales (MNN's Raster byte copy): strided byte copies
//!   ([`copy_strided_i8`]); Permute/Transpose and channels-last reshapes move exactly widened
//!   codes through the float op.
//!
//! Diagnostics: `MNNQ_INT8_FLOAT_OPS=Type1,Type2` keeps those op types float (to bisect
//! differences), `MNNQ_INT8_TRACE=1` prints each op's decision at load, `MNNQ_INT8_PROFILE=1`
//! per-category times of each run (`=ops`: per int8 op).
//!
//! Agreement with MNN 3.6.1 (x86, AVX-512 VNNI; docs/int8-parity.md): dense convolutions use
//! MNN x86's exact requantize order ([`Requantize`]); depthwise, casts, unary tables and
//! BinaryOps already matched, so EfficientNet-Lite0's codes are bit-identical op by op.
//! Deliberate difference: MNN's x86 int8 max pool compares `q + 128` bytes as signed (wrong when
//! a window mixes negative and non-negative codes); we pool correctly. PP-OCR det v4 is
//! bit-identical too (all 250 compared tensors and the map).

use std::collections::HashMap;

use mnnq_format::{Convolution2D, Net, OpParameter};
use mnnq_kernels::int8::{
    binary_channel_values_int8, binary_int8, conv2d_int8_nhwc_blocks, copy_strided_i8,
    depthwise_int8_nhwc, float_to_int8, float_to_int8_zero_point, int8_to_float_zero_point,
    lookup_int8, pool_int8_nhwc, BinaryInt8, BinaryScales, CodeTable, DepthwiseRequantize,
    PackedDepthwiseInt8, PackedInt8Weights, PoolKind, Requantize,
};
use mnnq_kernels::ConvGeometry;

use crate::engine::{Engine, Location, Prepared, Slot, Step};
use crate::error::EngineError;
use crate::ir::{BinaryOperation, ConvKind, OpKind, PoolType};
use crate::ops::{In, Out, Parallel};
use crate::tensor::Value;

/// Codes per work item of a table lookup (independent of the thread count).
const LOOKUP_CHUNK: usize = 1 << 16;

/// Longest period a broadcast BinaryOp operand is tiled to.
const BINARY_PERIOD: usize = 4096;

/// Smallest number of output pixels per work item of a dense int8 convolution when it is split
/// over threads: a multiple of every micro-kernel's row count. Every output is one whole
/// accumulation whatever the split, so the bytes never depend on the thread count.
const CONV_MIN_PIXELS_PER_TASK: usize = 48;

/// Work items per thread a layer is cut into, so threads that start late or run slower (a shared
/// machine) still finish together.
const TASKS_PER_THREAD: usize = 4;

/// How a dense convolution of `pixels` output pixels and `blocks` channel blocks is cut for
/// `threads` threads: (pixels per task, channel blocks per task). One task at one thread; layers
/// with few pixels are split over channel blocks too.
fn conv_split(pixels: usize, blocks: usize, threads: usize) -> (usize, usize) {
    if threads <= 1 {
        return (pixels.max(1), blocks.max(1));
    }
    let wanted = threads * TASKS_PER_THREAD;
    let pixel_tasks = (pixels / CONV_MIN_PIXELS_PER_TASK).clamp(1, wanted);
    let per_task = pixels.div_ceil(pixel_tasks).max(1);
    let block_groups = wanted.div_ceil(pixel_tasks).min(blocks).max(1);
    (per_task, blocks.div_ceil(block_groups))
}

/// Output rows per work item of a depthwise convolution or pooling over `rows` rows.
fn row_split(rows: usize, threads: usize) -> usize {
    if threads <= 1 {
        rows.max(1)
    } else {
        rows.div_ceil(threads * TASKS_PER_THREAD).max(1)
    }
}

/// Sum of each output channel's int8 weights (`codes` row-major by output channel): MNN x86's
/// uint8-input compensation term ([`Requantize`]).
fn weight_sums(codes: &[i8], out_c: usize) -> Vec<i32> {
    let per_channel = codes.len() / out_c.max(1);
    codes
        .chunks(per_channel.max(1))
        .take(out_c)
        .map(|row| row.iter().map(|&w| i32::from(w)).sum())
        .collect()
}

/// What an op does when it runs int8.
#[derive(Debug)]
pub enum Int8Op {
    /// Dense (group 1) convolution.
    Conv {
        geom: ConvGeometry,
        batch: usize,
        weights: Box<PackedInt8Weights>,
        requant: Requantize,
    },
    Depthwise {
        geom: ConvGeometry,
        batch: usize,
        weights: Box<PackedDepthwiseInt8>,
        requant: DepthwiseRequantize,
    },
    Pool {
        kind: PoolKind,
        geom: ConvGeometry,
        batch: usize,
        /// `MNNQ_INT8_MNN_MAX_POOL`: order codes as MNN 3.6.1's x86 int8 max pool does (it
        /// compares the `q + 128` bytes as signed, so every non-negative code ranks below every
        /// negative one; docs/int8-parity.md). Off by default: we pool correctly.
        mnn_byte_order: bool,
    },
    Binary {
        op: BinaryInt8,
        scales: BinaryScales,
    },
    /// Any elementwise int8 -> int8 function of one tensor as a 256-entry table (exact): UnaryOp
    /// (MNN's `tableInt8`, or the float function requantized), ReLU/ReLU6/clamp between any
    /// scales, a BinaryOp with a scalar constant, and chains of these fused into one table.
    Lookup(Box<CodeTable>),
    /// Binary op of a full tensor (scale `s0`) with a per-channel operand written by a chain
    /// that nothing else reads (the squeeze-excite multiply): the operand's codes are the
    /// chain's input codes, turned into float values by `values` (the chain without its final
    /// rounding), so the excitation is never rounded to its own tensor's scale.
    ChannelBinary {
        op: BinaryInt8,
        s0: f32,
        values: Box<[f32; 256]>,
        channel_first: bool,
        s_out: f32,
        relu: bool,
    },
    /// A [`Chain`] while the plan is built; turned into a `Lookup` when pushed.
    Chain(Box<Chain>),
    /// Concat along `axis` (logical): byte copies; an input whose scale differs from the
    /// output's is first requantized by its table (MNN runs such a concat in float).
    Concat {
        axis: usize,
        tables: Vec<Option<Box<CodeTable>>>,
    },
    /// The same elements in another memory order or shape (ConvertTensor, Reshape of row-major
    /// tensors, Squeeze, ...) between equal scales: one strided byte copy.
    Copy,
    /// Nearest-neighbour Interp (NHWC): row copies, then `table` when the scales differ.
    InterpNearest {
        plan: crate::shape::InterpPlan,
        round: bool,
        table: Option<Box<CodeTable>>,
    },
    /// Bilinear Interp (NHWC) on codes: the float kernel's arithmetic on `q * s_in`, requantized.
    InterpBilinear {
        plan: crate::shape::InterpPlan,
        s_in: f32,
        s_out: f32,
    },
    /// Pure data movement between tensors of one scale (MNN's Raster int8 byte copy) that has no
    /// direct form above (Permute, Transpose, channels-last Reshape): the float op runs on
    /// exactly widened codes.
    Move,
}

/// One elementwise stage of a chain, on float values.
#[derive(Clone, Debug)]
pub enum Stage {
    /// `op(x, c)` (or `op(c, x)` when the constant comes first), then `max(., 0)` for a fused
    /// ReLU.
    Scalar {
        op: BinaryOperation,
        c: f32,
        const_first: bool,
        relu: bool,
    },
    Unary(crate::ir::UnaryOperation),
    /// `x > 0 ? x : x * slope` (ReLU for slope 0).
    Leaky(f32),
    /// `min(max(x, lo), hi)` (ReLU6, clamp).
    Clamp(f32, f32),
    /// MNN's int8 table between its own scales: FloatToInt8 with `s_in`, look up, Int8ToFloat
    /// with `s_out`. `function` is the float function it tabulates (UnaryOp's operation).
    Table {
        s_in: f32,
        /// The zero points of the table's input and output codes.
        z_in: i8,
        table: Box<CodeTable>,
        s_out: f32,
        z_out: i8,
        function: Option<crate::ir::UnaryOperation>,
    },
}

impl Stage {
    fn eval(&self, x: f32) -> f32 {
        match self {
            Stage::Scalar {
                op,
                c,
                const_first,
                relu,
            } => {
                let v = if *const_first {
                    crate::ops::elementwise::binary_f32(*op, *c, x)
                } else {
                    crate::ops::elementwise::binary_f32(*op, x, *c)
                };
                if *relu {
                    v.max(0.0)
                } else {
                    v
                }
            }
            Stage::Unary(u) => crate::ops::elementwise::unary_f32(*u, x),
            Stage::Leaky(slope) => {
                if x > 0.0 {
                    x
                } else {
                    x * slope
                }
            }
            Stage::Clamp(lo, hi) => x.max(*lo).min(*hi),
            Stage::Table {
                s_in,
                z_in,
                table,
                s_out,
                z_out,
                ..
            } => {
                let inv = mnnq_kernels::int8::elementwise::reciprocal_scale(*s_in);
                // max/min rather than clamp: NaN becomes -127 like the casts, never a panic.
                #[allow(clippy::manual_clamp)]
                let q = (x * inv + f32::from(*z_in)).max(-127.0).min(127.0).round() as i8;
                (i32::from(table.get(q)) - i32::from(*z_out)) as f32 * s_out
            }
        }
    }
}

/// Elementwise stages from one int8 tensor (scale `s_in`) to another (`s_out`): its table is
/// `clamp(round(f(q * s_in) * (1 / s_out)), -127, 127)`, `f` the stages in order in f32. A single
/// stage is MNN's per-op form (a table stage: MNN's int8 table or int8 formula; a float stage:
/// the float op between casts). By default chains are joined with [`Chain::compose`] (rounded
/// at every joint, MNN's bytes); under `MNNQ_INT8_PRECISE` with [`Chain::then`] (float across
/// the joints).
#[derive(Clone, Debug)]
pub struct Chain {
    pub s_in: f32,
    pub stages: Vec<Stage>,
    pub s_out: f32,
    /// Zero points of the input and output codes (value = `(q - z) * s`).
    pub z_in: i8,
    pub z_out: i8,
}

impl Chain {
    /// The plan op of one stage.
    fn single(s_in: f32, stage: Stage, s_out: f32) -> Int8Op {
        Self::single_with_zero_points(s_in, 0, stage, s_out, 0)
    }

    /// [`Self::single`] between asymmetric codes.
    fn single_with_zero_points(s_in: f32, z_in: i8, stage: Stage, s_out: f32, z_out: i8) -> Int8Op {
        Int8Op::Chain(Box::new(Chain {
            s_in,
            stages: vec![stage],
            s_out,
            z_in,
            z_out,
        }))
    }

    /// `self` then `next`, without rounding between them. Inside a fused chain a table stage
    /// whose float function is known is computed in float (the hardswish of PP-OCR's
    /// `x * relu6(x + 3) / 6` blocks): its input and output tensors are never materialised, so
    /// their rounding would only lose precision.
    pub fn then(mut self, next: Chain) -> Chain {
        self.stages.extend(next.stages);
        self.s_out = next.s_out;
        self.z_out = next.z_out;
        for stage in &mut self.stages {
            if let Stage::Table {
                function: Some(u), ..
            } = stage
            {
                *stage = Stage::Unary(*u);
            }
        }
        self
    }

    /// `self` then `next`, each rounded at its own output scale: the composition of the two
    /// tables, so exactly the bytes of running them one after the other.
    pub fn compose(&self, next: &Chain) -> Chain {
        Chain {
            s_in: self.s_in,
            stages: vec![Stage::Table {
                s_in: self.s_in,
                z_in: self.z_in,
                table: Box::new(self.table().then(&next.table())),
                s_out: next.s_out,
                z_out: next.z_out,
                function: None,
            }],
            s_out: next.s_out,
            z_in: self.z_in,
            z_out: next.z_out,
        }
    }

    /// The chain's float value at each input code (`[q as u8]`), before the output rounding.
    pub fn values(&self) -> [f32; 256] {
        std::array::from_fn(|byte| {
            let x = (i32::from(byte as u8 as i8) - i32::from(self.z_in)) as f32 * self.s_in;
            self.stages.iter().fold(x, |v, stage| stage.eval(v))
        })
    }

    /// The chain over all 256 input codes.
    pub fn table(&self) -> CodeTable {
        // A lone table between its own scales is itself (no round trip through float).
        if let [Stage::Table {
            s_in,
            z_in,
            table,
            s_out,
            z_out,
            ..
        }] = self.stages.as_slice()
        {
            if s_in.to_bits() == self.s_in.to_bits()
                && s_out.to_bits() == self.s_out.to_bits()
                && (*z_in, *z_out) == (self.z_in, self.z_out)
            {
                return (**table).clone();
            }
        }
        CodeTable::requantized_with_zero_points(
            self.s_in,
            self.z_in,
            self.s_out,
            self.z_out,
            -127,
            |x| self.stages.iter().fold(x, |v, stage| stage.eval(v)),
        )
    }
}

/// Sees `(tensor index, values)` of every computed tensor.
pub type Observer<'a> = dyn FnMut(usize, &crate::tensor::TensorView) + 'a;

impl Int8Op {
    /// The variant's name, for profiles.
    pub fn name(&self) -> &'static str {
        match self {
            Int8Op::Conv { .. } => "Conv",
            Int8Op::Depthwise { .. } => "Depthwise",
            Int8Op::Pool { .. } => "Pool",
            Int8Op::Binary { .. } => "Binary",
            Int8Op::Lookup(_) => "Lookup",
            Int8Op::Chain(_) => "Chain",
            Int8Op::ChannelBinary { .. } => "ChannelBinary",
            Int8Op::Concat { .. } => "Concat",
            Int8Op::Copy => "Copy",
            Int8Op::InterpNearest { .. } => "InterpNearest",
            Int8Op::InterpBilinear { .. } => "InterpBilinear",
            Int8Op::Move => "Move",
        }
    }
}

/// One step of the int8 schedule. (Steps are built once per model; their size does not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum QStep {
    /// Run step `step` of the float schedule on float slots.
    Float(usize),
    /// Run the op of float-schedule step `step` on the i8 twins of slots `inputs` (the step's
    /// own, or for a fused chain of lookups the chain's input) writing the twin of `output`.
    Int8 {
        step: usize,
        op: Int8Op,
        inputs: Vec<usize>,
        output: usize,
    },
    /// A step folded into a later one (removed before the plan is returned).
    Fused,
    /// FloatToInt8 of slot `slot` into its twin (`q = round(x / scale) + zero`).
    Quantize { slot: usize, scale: f32, zero: i8 },
    /// Int8ToFloat of the twin of `slot` into the slot (`x = (q - zero) * scale`).
    Dequantize { slot: usize, scale: f32, zero: i8 },
    /// Layout conversion between two twins (same tensor).
    Convert { from: usize, to: usize },
}

/// The int8 schedule of a quantized model.
#[derive(Debug)]
pub struct Int8Plan {
    pub steps: Vec<QStep>,
    /// Per float slot: whether it has an i8 twin.
    pub has_twin: Vec<bool>,
    /// Per IR node that runs: true when it runs int8.
    pub node_is_int8: Vec<(usize, bool)>,
    /// Per tensor: its int8 scale, if it has one.
    pub scales: Vec<Option<f32>>,
    /// Per tensor: its zero point (0 for symmetric codes and tensors without a scale).
    pub zero_points: Vec<i8>,
}

/// The i8 twins of one session.
#[derive(Debug, Default)]
pub struct Int8Buffers {
    twins: Vec<Vec<i8>>,
}

impl Int8Buffers {
    pub fn for_engine(engine: &Engine) -> Int8Buffers {
        let Some(plan) = engine.int8.as_deref() else {
            return Int8Buffers::default();
        };
        Int8Buffers {
            twins: engine
                .slots
                .iter()
                .zip(&plan.has_twin)
                .map(|(s, &t)| if t { vec![0; s.len()] } else { Vec::new() })
                .collect(),
        }
    }
}

/// Per-tensor scales from `Net.extraTensorDescribe` (None: no int8 quant info).
pub fn tensor_scales(net: &Net, tensor_count: usize) -> Vec<Option<f32>> {
    tensor_quant(net, tensor_count).0
}

/// Per-tensor scales and zero points from `Net.extraTensorDescribe`: int8 info (type DT_INT8)
/// with an integer zero point in [-127, 127] (value = `(q - zero) * scale`; codes stay in
/// [-127, 127]); other quant info is ignored (the tensor runs float).
pub fn tensor_quant(net: &Net, tensor_count: usize) -> (Vec<Option<f32>>, Vec<i8>) {
    let mut scales = vec![None; tensor_count];
    let mut zeros = vec![0i8; tensor_count];
    for d in net.extra_tensor_describe.as_deref().unwrap_or(&[]) {
        let Some(q) = d.quant_info.as_deref() else {
            continue;
        };
        let integer_zero = q.zero.fract() == 0.0 && (-127.0..=127.0).contains(&q.zero);
        if !integer_zero || q.type_ != mnnq_format::DataType::DtInt8 {
            continue;
        }
        if let Some(i) = usize::try_from(d.index).ok().filter(|&i| i < tensor_count) {
            scales[i] = Some(q.scale);
            zeros[i] = q.zero as i8;
        }
    }
    (scales, zeros)
}

/// Integer weight codes of a quantized convolution, with their per-output-channel scales.
struct ConvCodes {
    codes: Vec<i8>,
    alpha: Vec<f32>,
    scale_in: f32,
    scale_out: f32,
}

fn conv_codes(conv: &Convolution2D, out_c: usize) -> Option<ConvCodes> {
    let quan = conv.quan_parameter.as_deref()?;
    if conv.weight.as_ref().is_some_and(|w| !w.is_empty()) {
        return None;
    }
    let buffer: Vec<u8> = quan.buffer.as_deref()?.iter().map(|&b| b as u8).collect();
    let alpha = quan.alpha.clone()?;
    let codes = mnnq_format::weights::quantized_codes(quan, &buffer, alpha).ok()?;
    if codes.asymmetric || codes.alpha.len() != out_c || codes.codes.len() % out_c.max(1) != 0 {
        return None;
    }
    let extra = if quan.has_scale_int {
        1.0
    } else {
        quan.quant_scale
    };
    Some(ConvCodes {
        codes: codes.codes,
        alpha: codes.alpha.iter().map(|&a| a * extra).collect(),
        scale_in: quan.scale_in,
        scale_out: quan.scale_out,
    })
}

struct Builder<'e> {
    engine: &'e Engine,
    scales: Vec<Option<f32>>,
    zeros: Vec<i8>,
    has_f32: Vec<bool>,
    has_i8: Vec<bool>,
    has_twin: Vec<bool>,
    /// Float-schedule conversion producing each slot: (step, source slot).
    convert_source: HashMap<usize, (usize, usize)>,
    steps: Vec<QStep>,
    /// Per slot: how many float-schedule steps read it, plus one if it is a graph output.
    readers: Vec<usize>,
    /// Per slot: the index in `steps` of the elementwise chain that wrote it, if one did.
    chain_writer: HashMap<usize, usize>,
    /// The chain of each such step.
    chains: HashMap<usize, Chain>,
    /// Whether chains of lookups are fused (off under `MNNQ_INT8_NO_FUSE`, so every tensor
    /// stays observable).
    fuse: bool,
    /// `MNNQ_INT8_PRECISE`: fused chains computed in float across their joints, scalar
    /// constants used unquantized, and the squeeze-excite excitation kept in float. Off by
    /// default, so every table is MNN's per-op int8 function and the bytes are MNN's.
    precise: bool,
    /// `MNNQ_INT8_MNN_MAX_POOL`: max pools reproduce MNN x86's byte-order bug.
    mnn_max_pool: bool,
}

impl Builder<'_> {
    fn slot(&self, s: usize) -> &Slot {
        &self.engine.slots[s]
    }

    fn scale_of_slot(&self, s: usize) -> Option<f32> {
        self.scales[self.slot(s).tensor].filter(|v| *v > 0.0 && v.is_finite())
    }

    fn zero_of_slot(&self, s: usize) -> i8 {
        self.zeros[self.slot(s).tensor]
    }

    /// Whether every slot in `slots` has symmetric codes (the ops that compute on values
    /// support only those; the others run float between casts).
    fn symmetric(&self, slots: &[usize]) -> bool {
        slots.iter().all(|&s| self.zero_of_slot(s) == 0)
    }

    fn ensure_f32(&mut self, s: usize) {
        if self.has_f32[s] {
            return;
        }
        if self.has_i8[s] {
            let scale = self.scale_of_slot(s).expect("int8 slots have a scale");
            let zero = self.zero_of_slot(s);
            self.steps.push(QStep::Dequantize {
                slot: s,
                scale,
                zero,
            });
        } else if let Some(&(step, from)) = self.convert_source.get(&s) {
            self.ensure_f32(from);
            self.steps.push(QStep::Float(step));
        }
        self.has_f32[s] = true;
    }

    fn ensure_i8(&mut self, s: usize) {
        if self.has_i8[s] {
            return;
        }
        self.has_twin[s] = true;
        let scale = self.scale_of_slot(s).expect("int8 inputs have a scale");
        match self.convert_source.get(&s).copied() {
            Some((_, from)) if !self.has_f32[s] && self.scale_of_slot(from).is_some() => {
                self.ensure_i8(from);
                self.steps.push(QStep::Convert { from, to: s });
            }
            _ => {
                self.ensure_f32(s);
                let zero = self.zero_of_slot(s);
                self.steps.push(QStep::Quantize {
                    slot: s,
                    scale,
                    zero,
                });
            }
        }
        self.has_i8[s] = true;
    }

    /// Appends int8 step `si`. An elementwise chain whose input was written by a chain that
    /// nothing else reads extends that chain: one table from the first chain's input, computed
    /// in float across the joint (the intermediate tensor is never rounded).
    fn push_int8(&mut self, si: usize, op: Int8Op, inputs: &[usize], output: usize) {
        if let Int8Op::Binary {
            op: kernel_op,
            scales,
        } = op
        {
            let out_len = self.slot(output).len();
            // The short operand of a per-channel binary, if a chain nothing else reads wrote it.
            let folded = (0..2).find_map(|k| {
                if !self.precise {
                    return None;
                }
                let s = inputs[k];
                let k_chain = self.chain_writer.get(&s).copied()?;
                (self.fuse && self.readers[s] == 1 && self.slot(s).len() != out_len)
                    .then_some((k, k_chain))
            });
            if let Some((k, k_chain)) = folded {
                let QStep::Int8 {
                    inputs: chain_inputs,
                    ..
                } = std::mem::replace(&mut self.steps[k_chain], QStep::Fused)
                else {
                    unreachable!("chain_writer only records chains");
                };
                let chain = self.chains.remove(&k_chain).expect("chains are recorded");
                let full = inputs[1 - k];
                self.steps.push(QStep::Int8 {
                    step: si,
                    op: Int8Op::ChannelBinary {
                        op: kernel_op,
                        s0: if k == 0 { scales.s1 } else { scales.s0 },
                        values: Box::new(chain.values()),
                        channel_first: k == 0,
                        s_out: scales.s_out,
                        relu: scales.relu,
                    },
                    inputs: vec![full, chain_inputs[0]],
                    output,
                });
                return;
            }
        }
        let Int8Op::Chain(chain) = op else {
            self.steps.push(QStep::Int8 {
                step: si,
                op,
                inputs: inputs.to_vec(),
                output,
            });
            return;
        };
        let input = inputs
            .iter()
            .copied()
            .find(|&i| !matches!(self.slot(i).location, Location::Const(_)))
            .expect("a chain reads one tensor");
        let earlier = self
            .chain_writer
            .get(&input)
            .copied()
            .filter(|_| self.fuse && self.readers[input] == 1);
        let (chain, chain_input) = match earlier {
            Some(k) => {
                let QStep::Int8 {
                    inputs: first_inputs,
                    ..
                } = std::mem::replace(&mut self.steps[k], QStep::Fused)
                else {
                    unreachable!("chain_writer only records chains");
                };
                let first = self.chains.remove(&k).expect("chains are recorded");
                let joined = if self.precise {
                    first.then(*chain)
                } else {
                    first.compose(&chain)
                };
                (joined, first_inputs[0])
            }
            None => (*chain, input),
        };
        let k = self.steps.len();
        self.chain_writer.insert(output, k);
        self.steps.push(QStep::Int8 {
            step: si,
            op: Int8Op::Lookup(Box::new(chain.table())),
            inputs: vec![chain_input],
            output,
        });
        self.chains.insert(k, chain);
    }

    /// The int8 form of float-schedule step `step` (node `node`), or None when it runs float.
    fn decide(
        &self,
        net: &Net,
        node: usize,
        inputs: &[usize],
        outputs: &[usize],
        prepared: &Prepared,
    ) -> Option<Int8Op> {
        let op = self.decide_op(net, node, inputs, outputs, prepared)?;
        // A table maps memory position to memory position: the tensor read and the tensor
        // written must hold the same elements in the same order.
        if let Int8Op::Chain(_) = op {
            let out = self.slot(outputs[0]);
            let input = inputs
                .iter()
                .map(|&i| self.slot(i))
                .find(|s| !matches!(s.location, Location::Const(_)))?;
            let order = |s: &Slot| s.layout.strides(&s.shape);
            if input.shape != out.shape || order(input) != order(out) {
                return None;
            }
        }
        Some(op)
    }

    /// [`Self::decide`] before the layout check of tables.
    fn decide_op(
        &self,
        net: &Net,
        node: usize,
        inputs: &[usize],
        outputs: &[usize],
        prepared: &Prepared,
    ) -> Option<Int8Op> {
        let engine = self.engine;
        let n = &engine.ir.nodes[node];
        if outputs.len() != 1 {
            return None;
        }
        let out = outputs[0];
        if let Ok(skip) = std::env::var("MNNQ_INT8_FLOAT_OPS") {
            if skip.split(',').any(|t| t == n.type_name) {
                return None;
            }
        }
        let s_out = self.scale_of_slot(out);
        let scale_eq = |a: Option<f32>, b: Option<f32>| matches!((a, b), (Some(x), Some(y)) if x.to_bits() == y.to_bits());
        // Same scale and zero point: the codes mean the same values (byte copies, pooling).
        let same_quant = |a: usize, b: usize| {
            scale_eq(self.scale_of_slot(a), self.scale_of_slot(b))
                && self.zero_of_slot(a) == self.zero_of_slot(b)
        };
        // Ops that compute on values (tables, binary ops, interpolation) take symmetric codes
        // only; with a zero point anywhere they run float between casts.
        let computes_on_values = matches!(n.kind, OpKind::Binary { .. } | OpKind::Interp(_));
        // Elementwise tables (Unary, ReLU, ReLU6) take zero points: the table maps codes to
        // codes through `(q - z_in) * s_in` and `round(y / s_out) + z_out`.
        let z_in = inputs.first().map_or(0, |&i| self.zero_of_slot(i));
        let z_out = self.zero_of_slot(out);
        if computes_on_values && !(self.symmetric(inputs) && self.symmetric(outputs)) {
            return None;
        }
        match (&n.kind, prepared) {
            (OpKind::Conv(p), Prepared::Conv(pc)) => {
                if n.inputs.len() != 1 || p.kind.is_deconvolution() {
                    return None;
                }
                // Tensor quant info must exist on both sides; its scale wins, IDST's is the fallback.
                let raw_in = self.scales[n.inputs[0]]?;
                let raw_out = self.scales[n.outputs[0]]?;
                let op = net.oplists.as_deref()?.get(node)?;
                let Some(OpParameter::Convolution2D(conv)) = op.main.as_ref() else {
                    return None;
                };
                let codes = conv_codes(conv, p.out_channels)?;
                let s_in = if raw_in == 0.0 {
                    codes.scale_in
                } else {
                    raw_in
                };
                let s_out = if raw_out == 0.0 {
                    codes.scale_out
                } else {
                    raw_out
                };
                if !(s_in > 0.0 && s_out > 0.0 && s_in.is_finite() && s_out.is_finite()) {
                    return None;
                }
                // Casts use the tensor scale; a zero tensor scale would need the IDST fallback
                // there too, which MNN does not do either.
                if raw_in == 0.0 || raw_out == 0.0 {
                    return None;
                }
                let geom = pc.geometry();
                let bias = if p.bias.is_empty() {
                    vec![0.0; p.out_channels]
                } else {
                    p.bias.clone()
                };
                if bias.len() != p.out_channels {
                    return None;
                }
                let relu = p.activation != crate::ir::Activation::None;
                let taps = geom.kernel_h * geom.kernel_w;
                if p.kind == ConvKind::Convolution && p.group == 1 {
                    if codes.codes.len() != geom.out_c * geom.in_c * taps {
                        return None;
                    }
                    Some(Int8Op::Conv {
                        geom,
                        batch: pc.batch(),
                        weights: Box::new(PackedInt8Weights::pack_conv(
                            &codes.codes,
                            geom.out_c,
                            geom.in_c,
                            geom.kernel_h,
                            geom.kernel_w,
                        )),
                        requant: Requantize::for_conv_with_zero_points(
                            &codes.alpha,
                            &bias,
                            &weight_sums(&codes.codes, geom.out_c),
                            s_in,
                            s_out,
                            relu,
                            self.zero_of_slot(inputs[0]),
                            self.zero_of_slot(out),
                        ),
                    })
                } else if p.group == geom.in_c && p.group == geom.out_c {
                    if codes.codes.len() != geom.out_c * taps {
                        return None;
                    }
                    Some(Int8Op::Depthwise {
                        geom,
                        batch: pc.batch(),
                        weights: Box::new(PackedDepthwiseInt8::pack(
                            &codes.codes,
                            geom.out_c,
                            geom.kernel_h,
                            geom.kernel_w,
                        )),
                        requant: DepthwiseRequantize::for_depthwise_with_zero_points(
                            &codes.alpha,
                            &bias,
                            s_in,
                            s_out,
                            relu,
                            self.zero_of_slot(inputs[0]),
                            self.zero_of_slot(out),
                        )
                        .with_weight_sums(&weight_sums(&codes.codes, geom.out_c)),
                    })
                } else {
                    None
                }
            }
            // A 2-D global Pooling3D (MNN's converter writes GlobalAveragePool so) is prepared as a
            // plain pool; the 4-D check below keeps real 3-D pooling float.
            (OpKind::Pool(_) | OpKind::Pool3D { .. }, Prepared::Pool(pool_type, w)) => {
                if !same_quant(inputs[0], out) {
                    return None;
                }
                let shape = &self.slot(inputs[0]).shape;
                if shape.len() != 4 {
                    return None;
                }
                let geom = ConvGeometry {
                    in_h: shape[2],
                    in_w: shape[3],
                    in_c: shape[1],
                    out_h: w.out_h,
                    out_w: w.out_w,
                    out_c: shape[1],
                    kernel_h: w.kernel_h,
                    kernel_w: w.kernel_w,
                    stride_h: w.stride_h,
                    stride_w: w.stride_w,
                    dilation_h: 1,
                    dilation_w: 1,
                    pad_top: w.pad_top,
                    pad_left: w.pad_left,
                };
                let kind = match pool_type {
                    PoolType::Max => PoolKind::Max,
                    PoolType::Average if w.kernel_h * w.kernel_w <= MAX_AVERAGE_TAPS => {
                        PoolKind::Average
                    }
                    PoolType::Average => return None,
                };
                Some(Int8Op::Pool {
                    kind,
                    geom,
                    batch: shape[0],
                    mnn_byte_order: self.mnn_max_pool && kind == PoolKind::Max,
                })
            }
            (OpKind::Binary { op, relu }, _) => {
                if inputs.len() != 2 {
                    return None;
                }
                let s_out = s_out?;
                let lo = if *relu { 0 } else { -127 };
                // One operand a scalar constant: an elementwise function of the other's codes,
                // so an exact table. The constant is used in float (MNN would need it quantized
                // with quant info of its own, or run the op float).
                let const_scalar = |s: usize| -> Option<f32> {
                    let slot = self.slot(s);
                    match slot.location {
                        Location::Const(i)
                            if slot.len() == 1 && slot.dtype == crate::tensor::DType::F32 =>
                        {
                            engine.const_buffers[i].first().copied()
                        }
                        _ => None,
                    }
                };
                let op = *op;
                let scalar = |c: f32, const_first: bool| Stage::Scalar {
                    op,
                    c,
                    const_first,
                    relu: lo == 0,
                };
                let kernel_op = match op {
                    BinaryOperation::Add => Some(BinaryInt8::Add),
                    BinaryOperation::Sub => Some(BinaryInt8::Sub),
                    BinaryOperation::Mul => Some(BinaryInt8::Mul),
                    BinaryOperation::Max => Some(BinaryInt8::Max),
                    BinaryOperation::Min => Some(BinaryInt8::Min),
                    _ => None,
                };
                // MNN's int8 form of a scalar-constant op: the constant quantized with its own
                // tensor scale, then §11.7's formula, tabulated over the 256 input codes. Without
                // a constant scale (or for another op) MNN runs it float between casts, which
                // the requantized float function reproduces.
                let exact = |c: f32, const_at: usize, s_in: f32| -> Option<Stage> {
                    let (kernel_op, s_c) = (kernel_op?, self.scale_of_slot(inputs[const_at])?);
                    if self.precise {
                        return None;
                    }
                    let mut qc = [0i8];
                    float_to_int8(&[c], s_c, &mut qc);
                    let scales = |s0, s1| BinaryScales {
                        s0,
                        s1,
                        s_out,
                        relu: lo == 0,
                    };
                    let table = CodeTable::from_fn(|q| {
                        let mut y = [0i8];
                        if const_at == 0 {
                            binary_int8(kernel_op, scales(s_c, s_in), &qc, &[q], &mut y);
                        } else {
                            binary_int8(kernel_op, scales(s_in, s_c), &[q], &qc, &mut y);
                        }
                        y[0]
                    });
                    Some(Stage::Table {
                        s_in,
                        z_in: 0,
                        table: Box::new(table),
                        s_out,
                        z_out: 0,
                        function: None,
                    })
                };
                match (const_scalar(inputs[0]), const_scalar(inputs[1])) {
                    (None, Some(c)) => {
                        let s_in = self.scale_of_slot(inputs[0])?;
                        let stage = exact(c, 1, s_in).unwrap_or_else(|| scalar(c, false));
                        return Some(Chain::single(s_in, stage, s_out));
                    }
                    (Some(c), None) => {
                        let s_in = self.scale_of_slot(inputs[1])?;
                        let stage = exact(c, 0, s_in).unwrap_or_else(|| scalar(c, true));
                        return Some(Chain::single(s_in, stage, s_out));
                    }
                    _ => {}
                }
                let kernel_op = kernel_op?;
                let o = self.slot(out);
                // Same shape and layout, or a scalar: the kernel's element order is then the
                // tensors' memory order. A constant operand must be a scalar: MNN quantizes it
                // with its own tensor scale (a FloatToInt8 cast, here a Quantize step on the
                // constant) and runs the op int8, which saturates the output at +-127 where a
                // float op would not (PP-OCR det's `x * w_0 + w_1` ops, docs/int8-parity.md).
                // Also a per-channel operand `[1, C, 1, ..]` against a channels-last output (SE
                // gates): the kernel repeats it along the innermost axis, which is then C. MNN
                // quantizes the gate and broadcasts it with an int8 Raster, same codes.
                let channels_last =
                    o.layout == crate::tensor::Layout::ChannelsLast && o.shape.len() >= 3;
                let per_channel = |s: &Slot| {
                    channels_last
                        && s.shape.len() == o.shape.len()
                        && s.shape[1] == o.shape[1]
                        && s.len() == o.shape[1]
                };
                for &i in inputs {
                    let s = self.slot(i);
                    let aligned = (s.shape == o.shape && s.layout == o.layout)
                        || s.len() == 1
                        || per_channel(s);
                    let constant = matches!(s.location, Location::Const(_));
                    if !aligned || (constant && s.len() != 1) {
                        return None;
                    }
                }
                let s0 = self.scale_of_slot(inputs[0])?;
                let s1 = self.scale_of_slot(inputs[1])?;
                Some(Int8Op::Binary {
                    op: kernel_op,
                    scales: BinaryScales {
                        s0,
                        s1,
                        s_out,
                        relu: *relu,
                    },
                })
            }
            (OpKind::Unary(u), _) => {
                let s_in = self.scale_of_slot(inputs[0])?;
                let s_out = s_out?;
                let op = net.oplists.as_deref()?.get(node)?;
                let Some(OpParameter::UnaryOp(param)) = op.main.as_ref() else {
                    return None;
                };
                if let Some(table) = param.table_int8.as_deref() {
                    let table: &[i8; 255] = table.try_into().ok()?;
                    let table = Box::new(CodeTable::from_mnn_table(table));
                    return Some(Chain::single_with_zero_points(
                        s_in,
                        z_in,
                        Stage::Table {
                            s_in,
                            z_in,
                            table,
                            s_out,
                            z_out,
                            function: Some(*u),
                        },
                        s_out,
                        z_out,
                    ));
                }
                // No table in the file: the float function (MNN runs these float).
                Some(Chain::single_with_zero_points(
                    s_in,
                    z_in,
                    Stage::Unary(*u),
                    s_out,
                    z_out,
                ))
            }
            (OpKind::Relu { slope }, _) => {
                let s_in = self.scale_of_slot(inputs[0])?;
                Some(Chain::single_with_zero_points(
                    s_in,
                    z_in,
                    Stage::Leaky(*slope),
                    s_out?,
                    z_out,
                ))
            }
            (OpKind::Relu6 { min, max }, _) => {
                let s_in = self.scale_of_slot(inputs[0])?;
                Some(Chain::single_with_zero_points(
                    s_in,
                    z_in,
                    Stage::Clamp(*min, *max),
                    s_out?,
                    z_out,
                ))
            }
            (
                OpKind::Interp(_),
                Prepared::Interp {
                    resize_type, plan, ..
                },
            ) => {
                let s_in = self.scale_of_slot(inputs[0])?;
                let s_out = s_out?;
                if self.slot(inputs[0]).shape.len() != 4 {
                    return None;
                }
                match resize_type {
                    1 | 4 => Some(Int8Op::InterpNearest {
                        plan: *plan,
                        round: *resize_type == 4,
                        table: (!scale_eq(Some(s_in), Some(s_out)))
                            .then(|| Box::new(CodeTable::requantized(s_in, s_out, -127, |x| x))),
                    }),
                    2 => Some(Int8Op::InterpBilinear {
                        plan: *plan,
                        s_in,
                        s_out,
                    }),
                    _ => None,
                }
            }
            (OpKind::Concat { axis }, _) => {
                let s_out = s_out?;
                let rank = self.slot(out).shape.len() as i32;
                let axis = if *axis < 0 { axis + rank } else { *axis };
                if !(0..rank).contains(&axis) {
                    return None;
                }
                let mut tables = Vec::new();
                for &i in inputs {
                    let s = self.slot(i);
                    let s_in = self.scale_of_slot(i)?;
                    if matches!(s.location, Location::Const(_)) || s.shape.len() != rank as usize {
                        return None;
                    }
                    let requantize = !same_quant(i, out);
                    if requantize && !self.symmetric(&[i, out]) {
                        return None;
                    }
                    tables.push(
                        requantize
                            .then(|| Box::new(CodeTable::requantized(s_in, s_out, -127, |x| x))),
                    );
                }
                Some(Int8Op::Concat {
                    axis: axis as usize,
                    tables,
                })
            }
            (
                OpKind::Reshape { .. }
                | OpKind::ConvertTensor { .. }
                | OpKind::Squeeze { .. }
                | OpKind::Unsqueeze { .. }
                | OpKind::ExpandDims { .. }
                | OpKind::Flatten { .. }
                | OpKind::Identity,
                _,
            ) if !inputs.is_empty()
                && !matches!(self.slot(inputs[0]).location, Location::Const(_))
                && same_quant(inputs[0], out) =>
            {
                let (a, o) = (self.slot(inputs[0]), self.slot(out));
                // The same logical shape (a layout change), or a reshape of row-major data.
                let same_shape = a.shape == o.shape;
                let row_major =
                    |s: &Slot| s.layout.for_rank(s.shape.len()) == crate::tensor::Layout::RowMajor;
                if (same_shape || (row_major(a) && row_major(o))) && a.len() == o.len() {
                    Some(Int8Op::Copy)
                } else {
                    Some(Int8Op::Move)
                }
            }
            (
                OpKind::Reshape { .. }
                | OpKind::ConvertTensor { .. }
                | OpKind::Squeeze { .. }
                | OpKind::Unsqueeze { .. }
                | OpKind::ExpandDims { .. }
                | OpKind::Flatten { .. }
                | OpKind::Permute { .. }
                | OpKind::Transpose
                | OpKind::Identity,
                _,
            ) => {
                s_out?;
                let mut data_inputs = 0;
                for &i in inputs {
                    if matches!(self.slot(i).location, Location::Const(_)) {
                        continue;
                    }
                    if !same_quant(i, out) {
                        return None;
                    }
                    // Values that so far exist only as float (the graph input before its first
                    // layout change) move as float and are quantized once afterwards: the same
                    // codes, without widening codes back to float to move them.
                    if !self.has_i8[i] {
                        return None;
                    }
                    data_inputs += 1;
                }
                (data_inputs > 0).then_some(Int8Op::Move)
            }
            _ => None,
        }
    }
}

impl Int8Plan {
    /// The int8 schedule of `engine` (prepared from `net`), or None when the model carries no
    /// int8 quant info.
    pub fn build(net: &Net, engine: &Engine) -> Result<Option<Int8Plan>, EngineError> {
        let (scales, zeros) = tensor_quant(net, engine.ir.tensor_names.len());
        if scales.iter().all(|s| s.is_none()) {
            return Ok(None);
        }
        let n = engine.slots.len();
        let mut b = Builder {
            engine,
            scales,
            zeros,
            has_f32: engine
                .slots
                .iter()
                .map(|s| matches!(s.location, Location::Const(_)))
                .collect(),
            has_i8: vec![false; n],
            has_twin: vec![false; n],
            convert_source: HashMap::new(),
            steps: Vec::new(),
            readers: vec![0; n],
            chain_writer: HashMap::new(),
            chains: HashMap::new(),
            fuse: std::env::var_os("MNNQ_INT8_NO_FUSE").is_none(),
            precise: std::env::var_os("MNNQ_INT8_PRECISE").is_some(),
            mnn_max_pool: std::env::var_os("MNNQ_INT8_MNN_MAX_POOL").is_some(),
        };
        for step in &engine.steps {
            match step {
                Step::Convert { from, .. } => b.readers[*from] += 1,
                Step::Node { inputs, .. } => inputs.iter().for_each(|&i| b.readers[i] += 1),
            }
        }
        for &(_, s) in &engine.outputs {
            b.readers[s] += 1;
        }
        for &(_, s) in &engine.inputs {
            b.has_f32[s] = true;
        }
        let mut node_is_int8 = Vec::new();
        for (si, step) in engine.steps.iter().enumerate() {
            match step {
                Step::Convert { from, to } => {
                    b.convert_source.insert(*to, (si, *from));
                }
                Step::Node {
                    node,
                    inputs,
                    outputs,
                    prepared,
                } => match b.decide(net, *node, inputs, outputs, prepared) {
                    Some(op) => {
                        // Scalar constants of a BinaryOp are quantized like any input (MNN
                        // inserts a FloatToInt8 for them); other ops read no constant as int8.
                        let binary = matches!(op, Int8Op::Binary { .. });
                        for &i in inputs {
                            if binary || !matches!(b.slot(i).location, Location::Const(_)) {
                                b.ensure_i8(i);
                            }
                        }
                        for &o in outputs {
                            b.has_i8[o] = true;
                            b.has_twin[o] = true;
                        }
                        b.push_int8(si, op, inputs, outputs[0]);
                        node_is_int8.push((*node, true));
                    }
                    None => {
                        for &i in inputs {
                            b.ensure_f32(i);
                        }
                        for &o in outputs {
                            b.has_f32[o] = true;
                        }
                        b.steps.push(QStep::Float(si));
                        node_is_int8.push((*node, false));
                    }
                },
            }
        }
        for &(_, s) in &engine.outputs {
            b.ensure_f32(s);
        }
        b.steps.retain(|s| !matches!(s, QStep::Fused));
        if std::env::var_os("MNNQ_INT8_TRACE").is_some() {
            for &(node, q) in &node_is_int8 {
                let n = &engine.ir.nodes[node];
                eprintln!(
                    "int8 plan: {} {} {}",
                    if q { "int8 " } else { "float" },
                    n.type_name,
                    n.name
                );
            }
        }
        Ok(Some(Int8Plan {
            steps: b.steps,
            has_twin: b.has_twin,
            node_is_int8,
            scales: b.scales,
            zero_points: b.zeros,
        }))
    }

    /// How many scheduled ops run int8 and how many float.
    pub fn op_counts(&self) -> (usize, usize) {
        let int8 = self.node_is_int8.iter().filter(|(_, q)| *q).count();
        (int8, self.node_is_int8.len() - int8)
    }

    /// Runs the schedule. Graph inputs must already be in their arena slots; graph outputs are
    /// left in theirs.
    pub fn run(
        &self,
        engine: &Engine,
        arena: &mut [f32],
        codes: &mut Int8Buffers,
        par: &Parallel,
        mut observer: Option<&mut Observer>,
    ) -> Result<(), EngineError> {
        let twins = &mut codes.twins;
        if twins.len() != engine.slots.len() {
            return Err(EngineError::Run(
                "int8 buffers belong to another engine".into(),
            ));
        }
        // Diagnostic: per-category time of this run on stderr.
        let profiling = std::env::var_os("MNNQ_INT8_PROFILE").is_some();
        // `MNNQ_INT8_PROFILE=ops`: one line per int8 op instead of per kind.
        let per_op = std::env::var("MNNQ_INT8_PROFILE").is_ok_and(|v| v == "ops");
        let mut totals: std::collections::BTreeMap<String, f64> = Default::default();
        for step in &self.steps {
            let started = profiling.then(std::time::Instant::now);
            let category = |step: &QStep| -> String {
                match step {
                    QStep::Float(si) => match &engine.steps[*si] {
                        Step::Node { node, .. } => {
                            format!("float {}", engine.ir.nodes[*node].type_name)
                        }
                        Step::Convert { .. } => "float layout convert".into(),
                    },
                    QStep::Int8 { op, step, .. } => match (&engine.steps[*step], per_op) {
                        (Step::Node { node, .. }, true) => {
                            format!("int8 {} {}", op.name(), engine.ir.nodes[*node].name)
                        }
                        _ => format!("int8 {}", op.name()),
                    },
                    QStep::Fused => "fused".into(),
                    QStep::Quantize { .. } => "cast FloatToInt8".into(),
                    QStep::Dequantize { .. } => "cast Int8ToFloat".into(),
                    QStep::Convert { .. } => "int8 layout convert".into(),
                }
            };
            let _finish = Finish(started.map(|t| (t, category(step))), &mut totals);
            match step {
                QStep::Float(si) => {
                    run_float_step(engine, *si, arena, par)?;
                    if let (Some(obs), Step::Node { outputs, .. }) =
                        (observer.as_mut(), &engine.steps[*si])
                    {
                        for &o in outputs {
                            let slot = &engine.slots[o];
                            observe(engine, slot, f32_view(engine, arena, slot), &mut **obs);
                        }
                    }
                }
                QStep::Quantize { slot, scale, zero } => {
                    let s = &engine.slots[*slot];
                    let src = f32_view(engine, arena, s);
                    float_to_int8_zero_point(src, *scale, *zero, &mut twins[*slot]);
                }
                QStep::Dequantize { slot, scale, zero } => {
                    let s = &engine.slots[*slot];
                    let Location::Arena(off) = s.location else {
                        return Err(EngineError::Run("int8 result without arena memory".into()));
                    };
                    int8_to_float_zero_point(
                        &twins[*slot],
                        *scale,
                        *zero,
                        &mut arena[off..off + s.len()],
                    );
                }
                QStep::Convert { from, to } => {
                    let (a, b) = (&engine.slots[*from], &engine.slots[*to]);
                    let src = std::mem::take(&mut twins[*from]);
                    copy_layout(&a.shape, a.layout, &src, b.layout, &mut twins[*to]);
                    twins[*from] = src;
                }
                QStep::Fused => {}
                QStep::Int8 {
                    step,
                    op,
                    inputs,
                    output,
                } => {
                    let Step::Node { node, .. } = &engine.steps[*step] else {
                        return Err(EngineError::Run("int8 step is not an op".into()));
                    };
                    run_int8_op(engine, *node, op, inputs, *output, arena, twins, par).map_err(
                        |m| {
                            let n = &engine.ir.nodes[*node];
                            EngineError::Op {
                                op_type: n.type_name.clone(),
                                op_name: n.name.clone(),
                                message: m,
                            }
                        },
                    )?;
                    if let Some(obs) = observer.as_mut() {
                        let slot = &engine.slots[*output];
                        let scale = self.scales[slot.tensor].unwrap_or(0.0);
                        let zero = i32::from(self.zero_points[slot.tensor]);
                        let values: Vec<f32> = twins[*output]
                            .iter()
                            .map(|&q| (i32::from(q) - zero) as f32 * scale)
                            .collect();
                        observe(engine, slot, &values, &mut **obs);
                    }
                }
            }
        }
        if profiling {
            let total: f64 = totals.values().sum();
            eprintln!("int8 profile: {total:.3} ms");
            let mut rows: Vec<_> = totals.into_iter().collect();
            rows.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (k, v) in rows {
                eprintln!("  {v:9.3} ms  {k}");
            }
        }
        Ok(())
    }
}

/// Adds the elapsed time of one step to its category when dropped (profiling only).
struct Finish<'a>(
    Option<(std::time::Instant, String)>,
    &'a mut std::collections::BTreeMap<String, f64>,
);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        if let Some((start, key)) = self.0.take() {
            *self.1.entry(key).or_default() += start.elapsed().as_secs_f64() * 1e3;
        }
    }
}

/// Shows a slot's values (physical order `data`) to an observer in logical row-major order.
fn observe(
    engine: &Engine,
    slot: &Slot,
    data: &[f32],
    observer: &mut dyn FnMut(usize, &crate::tensor::TensorView),
) {
    let view = In {
        shape: &slot.shape,
        dtype: slot.dtype,
        layout: slot.layout,
        data,
    };
    let row_major = view.to_row_major_f32();
    observer(
        slot.tensor,
        &crate::tensor::TensorView {
            name: engine.tensor_name(slot.tensor),
            shape: &slot.shape,
            dtype: slot.dtype,
            data: &row_major,
        },
    );
}

fn f32_view<'a>(engine: &'a Engine, arena: &'a [f32], s: &Slot) -> &'a [f32] {
    match s.location {
        Location::Arena(off) => &arena[off..off + s.len()],
        Location::Const(i) => &engine.const_buffers[i],
    }
}

/// Copies a tensor between two physical layouts.
fn copy_layout(
    shape: &[usize],
    from: crate::tensor::Layout,
    src: &[i8],
    to: crate::tensor::Layout,
    dst: &mut [i8],
) {
    let mut offsets = Vec::with_capacity(src.len());
    crate::ops::movement::for_each_offset(shape, &from.strides(shape), |o| offsets.push(o));
    let mut i = 0;
    crate::ops::movement::for_each_offset(shape, &to.strides(shape), |o| {
        dst[o] = src[offsets[i]];
        i += 1;
    });
}

/// Runs float-schedule step `si` exactly as a float session does.
fn run_float_step(
    engine: &Engine,
    si: usize,
    arena: &mut [f32],
    par: &Parallel,
) -> Result<(), EngineError> {
    let arena_ptr = arena.as_mut_ptr();
    fn view_in<'a>(engine: &'a Engine, arena_ptr: *mut f32, s: &'a Slot) -> In<'a> {
        let data: &[f32] = match s.location {
            // SAFETY: the memory plan keeps slots inside the arena, and a step's outputs never
            // overlap its inputs.
            Location::Arena(off) => unsafe {
                std::slice::from_raw_parts(arena_ptr.add(off), s.len())
            },
            Location::Const(i) => &engine.const_buffers[i],
        };
        In {
            shape: &s.shape,
            dtype: s.dtype,
            layout: s.layout,
            data,
        }
    }
    fn view_out(arena_ptr: *mut f32, s: &Slot) -> Result<Out<'_>, EngineError> {
        let Location::Arena(off) = s.location else {
            return Err(EngineError::Run("op output without arena memory".into()));
        };
        // SAFETY: as above; outputs of one step are disjoint.
        let data = unsafe { std::slice::from_raw_parts_mut(arena_ptr.add(off), s.len()) };
        Ok(Out {
            shape: &s.shape,
            dtype: s.dtype,
            layout: s.layout,
            data,
        })
    }
    match &engine.steps[si] {
        Step::Convert { from, to } => {
            let input = view_in(engine, arena_ptr, &engine.slots[*from]);
            let mut output = view_out(arena_ptr, &engine.slots[*to])?;
            crate::ops::movement::convert(&input, &mut output);
        }
        Step::Node {
            node,
            inputs,
            outputs,
            prepared,
        } => {
            let n = &engine.ir.nodes[*node];
            let ins: Vec<In> = inputs
                .iter()
                .map(|&s| view_in(engine, arena_ptr, &engine.slots[s]))
                .collect();
            let mut outs = outputs
                .iter()
                .map(|&s| view_out(arena_ptr, &engine.slots[s]))
                .collect::<Result<Vec<_>, _>>()?;
            let consts: Vec<Option<&Value>> = n
                .inputs
                .iter()
                .map(|&t| engine.values[t].as_ref())
                .collect();
            crate::session::execute_node(&n.kind, prepared, &ins, &mut outs, &consts, par)
                .map_err(|m| EngineError::Op {
                    op_type: n.type_name.clone(),
                    op_name: n.name.clone(),
                    message: m,
                })?;
        }
    }
    Ok(())
}

/// A pointer to an i8 buffer that threads write disjoint parts of.
#[derive(Clone, Copy)]
struct SharedCodes(*mut i8, usize);
// SAFETY: every task writes only its own pixels/rows of the output.
unsafe impl Send for SharedCodes {}
unsafe impl Sync for SharedCodes {}

impl SharedCodes {
    /// # Safety
    /// Concurrent users must write disjoint elements.
    unsafe fn whole<'a>(self) -> &'a mut [i8] {
        unsafe { std::slice::from_raw_parts_mut(self.0, self.1) }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_int8_op(
    engine: &Engine,
    node: usize,
    op: &Int8Op,
    inputs: &[usize],
    out: usize,
    arena: &mut [f32],
    twins: &mut [Vec<i8>],
    par: &Parallel,
) -> Result<(), String> {
    // The output twin is taken out so the inputs can be borrowed alongside it.
    let mut y = std::mem::take(&mut twins[out]);
    let result = (|| {
        let x = |k: usize| -> &[i8] { &twins[inputs[k]] };
        match op {
            Int8Op::Conv {
                geom,
                batch,
                weights,
                requant,
            } => {
                let (img_in, img_out) = (
                    geom.in_h * geom.in_w * geom.in_c,
                    geom.pixels() * geom.out_c,
                );
                let pixels = geom.pixels();
                let blocks = weights.blocks.len();
                let (per_task, blocks_per_task) = conv_split(pixels, blocks, par.threads());
                let pixel_tasks = pixels.div_ceil(per_task);
                let tasks = pixel_tasks * blocks.div_ceil(blocks_per_task);
                for n in 0..*batch {
                    let input = &x(0)[n * img_in..(n + 1) * img_in];
                    let output = &mut y[n * img_out..(n + 1) * img_out];
                    let shared = SharedCodes(output.as_mut_ptr(), output.len());
                    par.for_each(tasks, |t| {
                        let (p, b) = (t % pixel_tasks, t / pixel_tasks);
                        let range = p * per_task..((p + 1) * per_task).min(pixels);
                        let block_range =
                            b * blocks_per_task..((b + 1) * blocks_per_task).min(blocks);
                        // SAFETY: each task writes only the channels of its blocks in the pixels
                        // of its range.
                        let out = unsafe { shared.whole() };
                        conv2d_int8_nhwc_blocks(
                            geom,
                            input,
                            weights,
                            requant,
                            out,
                            geom.out_c,
                            range,
                            block_range,
                        );
                    });
                }
            }
            Int8Op::Depthwise {
                geom,
                batch,
                weights,
                requant,
            } => {
                let (img_in, img_out) = (
                    geom.in_h * geom.in_w * geom.in_c,
                    geom.pixels() * geom.out_c,
                );
                for n in 0..*batch {
                    let input = &x(0)[n * img_in..(n + 1) * img_in];
                    let output = &mut y[n * img_out..(n + 1) * img_out];
                    let shared = SharedCodes(output.as_mut_ptr(), output.len());
                    let per_task = row_split(geom.out_h, par.threads());
                    par.for_each(geom.out_h.div_ceil(per_task), |t| {
                        // SAFETY: each task writes only its output rows.
                        let out = unsafe { shared.whole() };
                        depthwise_int8_nhwc(
                            geom,
                            input,
                            weights,
                            requant,
                            out,
                            geom.out_c,
                            t * per_task..((t + 1) * per_task).min(geom.out_h),
                        );
                    });
                }
            }
            Int8Op::Pool {
                kind,
                geom,
                batch,
                mnn_byte_order,
            } => {
                let (img_in, img_out) = (
                    geom.in_h * geom.in_w * geom.in_c,
                    geom.pixels() * geom.out_c,
                );
                // MNN's order is the signed order of `q ^ 0x80`: flipping the top bit before and
                // after a correct max pool gives its result (a bijection on codes).
                let flipped: Vec<i8>;
                let source = if *mnn_byte_order {
                    flipped = x(0).iter().map(|&q| q ^ i8::MIN).collect();
                    &flipped[..]
                } else {
                    x(0)
                };
                for n in 0..*batch {
                    let input = &source[n * img_in..(n + 1) * img_in];
                    let output = &mut y[n * img_out..(n + 1) * img_out];
                    let shared = SharedCodes(output.as_mut_ptr(), output.len());
                    par.for_each(geom.out_h, |r| {
                        // SAFETY: each task writes only its output row.
                        let out = unsafe { shared.whole() };
                        if *kind == PoolKind::Average {
                            average_pool_x86_row(geom, input, out, r);
                        } else {
                            pool_int8_nhwc(*kind, geom, input, out, geom.out_c, r..r + 1);
                        }
                    });
                }
                if *mnn_byte_order {
                    y.iter_mut().for_each(|q| *q ^= i8::MIN);
                }
            }
            Int8Op::Binary { op, scales } => {
                let (mut a, mut b, n) = (x(0), x(1), y.len());
                // A short per-channel operand is tiled to a longer period first, so the kernel
                // runs long vectors instead of one short call per pixel.
                let tiled;
                if a.len() != n || b.len() != n {
                    let short = if a.len() != n { a } else { b };
                    let mut repeat = 1;
                    while short.len() * repeat * 2 <= BINARY_PERIOD
                        && n.is_multiple_of(short.len() * repeat * 2)
                    {
                        repeat *= 2;
                    }
                    if repeat > 1 {
                        tiled = short.repeat(repeat);
                        if a.len() != n {
                            a = &tiled;
                        } else {
                            b = &tiled;
                        }
                    }
                }
                // Chunks hold whole repetitions of a broadcast operand (its length divides n).
                let period = [a.len(), b.len()]
                    .into_iter()
                    .filter(|&l| l != n)
                    .max()
                    .unwrap_or(1);
                let chunk = (LOOKUP_CHUNK / period).max(1) * period;
                let part = |v: &'_ [i8], k: usize| -> std::ops::Range<usize> {
                    if v.len() == n {
                        k * chunk..((k + 1) * chunk).min(n)
                    } else {
                        0..v.len()
                    }
                };
                let shared = SharedCodes(y.as_mut_ptr(), n);
                par.for_each(n.div_ceil(chunk), |k| {
                    // SAFETY: each task writes only its own chunk.
                    let out = unsafe { shared.whole() };
                    let range = k * chunk..((k + 1) * chunk).min(n);
                    binary_int8(
                        *op,
                        *scales,
                        &a[part(a, k)],
                        &b[part(b, k)],
                        &mut out[range],
                    );
                });
            }
            Int8Op::Lookup(table) => {
                let input = x(0);
                let chunks = y.len().div_ceil(LOOKUP_CHUNK);
                let shared = SharedCodes(y.as_mut_ptr(), y.len());
                par.for_each(chunks, |k| {
                    let range = k * LOOKUP_CHUNK..((k + 1) * LOOKUP_CHUNK).min(input.len());
                    // SAFETY: each task writes only its own chunk.
                    let out = unsafe { shared.whole() };
                    lookup_int8(table, &input[range.clone()], &mut out[range]);
                });
            }
            Int8Op::Concat { axis, tables } => {
                let o = &engine.slots[out];
                let out_strides = strides_of(o);
                let mut offset = 0usize;
                for (&i, table) in inputs.iter().zip(tables) {
                    let s = &engine.slots[i];
                    let requantized;
                    let codes: &[i8] = match table {
                        Some(t) => {
                            let mut v = vec![0i8; twins[i].len()];
                            lookup_int8(t, &twins[i], &mut v);
                            requantized = v;
                            &requantized
                        }
                        None => &twins[i],
                    };
                    copy_strided_i8(
                        &s.shape,
                        codes,
                        &strides_of(s),
                        &mut y,
                        offset * out_strides[*axis],
                        &out_strides,
                    );
                    offset += s.shape[*axis];
                }
            }
            Int8Op::Copy => {
                let (a, o) = (&engine.slots[inputs[0]], &engine.slots[out]);
                if a.shape == o.shape {
                    copy_strided_i8(&a.shape, x(0), &strides_of(a), &mut y, 0, &strides_of(o));
                } else {
                    // Row-major on both sides: the same bytes.
                    y.copy_from_slice(x(0));
                }
            }
            Int8Op::InterpNearest { plan, round, table } => {
                interp_nearest_i8(
                    plan,
                    *round,
                    &engine.slots[inputs[0]].shape,
                    x(0),
                    &mut y,
                    par,
                );
                if let Some(table) = table {
                    let codes = y.clone();
                    lookup_int8(table, &codes, &mut y);
                }
            }
            Int8Op::InterpBilinear { plan, s_in, s_out } => interp_bilinear_i8(
                plan,
                (*s_in, *s_out),
                &engine.slots[inputs[0]].shape,
                x(0),
                &mut y,
                par,
            ),
            Int8Op::Chain(_) => return Err("an unbuilt elementwise chain".into()),
            Int8Op::ChannelBinary {
                op,
                s0,
                values,
                channel_first,
                s_out,
                relu,
            } => {
                let (a, codes, n) = (x(0), x(1), y.len());
                if codes.is_empty() || !n.is_multiple_of(codes.len()) {
                    return Err("per-channel operand does not divide the output".into());
                }
                // Channel values, tiled to a longer period as for Binary.
                let channel: Vec<f32> = codes.iter().map(|&q| values[q as u8 as usize]).collect();
                let mut repeat = 1;
                while channel.len() * repeat * 2 <= BINARY_PERIOD
                    && n.is_multiple_of(channel.len() * repeat * 2)
                {
                    repeat *= 2;
                }
                let channel = channel.repeat(repeat);
                let chunk = (LOOKUP_CHUNK / channel.len()).max(1) * channel.len();
                let shared = SharedCodes(y.as_mut_ptr(), n);
                par.for_each(n.div_ceil(chunk), |k| {
                    let range = k * chunk..((k + 1) * chunk).min(n);
                    // SAFETY: each task writes only its own chunk.
                    let out = unsafe { shared.whole() };
                    binary_channel_values_int8(
                        *op,
                        &a[range.clone()],
                        *s0,
                        &channel,
                        *channel_first,
                        *s_out,
                        *relu,
                        &mut out[range],
                    );
                });
            }
            Int8Op::Move => {
                // Codes are small integers, exact in f32: run the float op on widened codes.
                let Step::Node {
                    outputs, prepared, ..
                } = &engine
                    .steps
                    .iter()
                    .find(|s| matches!(s, Step::Node { node: nn, .. } if *nn == node))
                    .ok_or("step not found")?
                else {
                    return Err("step not found".into());
                };
                let n = &engine.ir.nodes[node];
                let widened: Vec<Option<Vec<f32>>> = inputs
                    .iter()
                    .map(|&s| match engine.slots[s].location {
                        Location::Const(_) => None,
                        Location::Arena(_) => Some(twins[s].iter().map(|&q| q as f32).collect()),
                    })
                    .collect();
                let ins: Vec<In> = inputs
                    .iter()
                    .zip(&widened)
                    .map(|(&s, w)| {
                        let slot = &engine.slots[s];
                        let data = match w {
                            Some(w) => w.as_slice(),
                            None => f32_view(engine, arena, slot),
                        };
                        In {
                            shape: &slot.shape,
                            dtype: slot.dtype,
                            layout: slot.layout,
                            data,
                        }
                    })
                    .collect();
                let os = &engine.slots[outputs[0]];
                let mut buffer = vec![0.0f32; os.len()];
                {
                    let mut outs = [Out {
                        shape: &os.shape,
                        dtype: os.dtype,
                        layout: os.layout,
                        data: &mut buffer,
                    }];
                    let consts: Vec<Option<&Value>> = n
                        .inputs
                        .iter()
                        .map(|&t| engine.values[t].as_ref())
                        .collect();
                    crate::session::execute_node(
                        &n.kind,
                        prepared,
                        &ins,
                        &mut outs,
                        &consts,
                        &Parallel::sequential(),
                    )?;
                }
                for (o, v) in y.iter_mut().zip(&buffer) {
                    *o = *v as i8;
                }
            }
        }
        Ok(())
    })();
    twins[out] = y;
    result
}

/// Memory strides (elements) of each logical dim of a slot.
fn strides_of(s: &Slot) -> Vec<usize> {
    s.layout
        .strides(&s.shape)
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

/// Nearest-neighbour resize of NHWC codes (logical input `shape` [N, C, H, W]) with the float
/// kernel's source-index rule: every output pixel copies one input pixel's channels.
fn interp_nearest_i8(
    plan: &crate::shape::InterpPlan,
    round: bool,
    shape: &[usize],
    input: &[i8],
    output: &mut [i8],
    par: &Parallel,
) {
    use crate::ops::window::nearest_source;
    let (batch, c, in_h, in_w) = (shape[0], shape[1], shape[2], shape[3]);
    let (out_h, out_w) = (plan.out_h, plan.out_w);
    let xs: Vec<usize> = (0..out_w)
        .map(|ox| nearest_source(ox, plan.width_scale, plan.width_offset, in_w, round))
        .collect();
    let row = out_w * c;
    let shared = SharedCodes(output.as_mut_ptr(), output.len());
    par.for_each(batch * out_h, |r| {
        let (n, oy) = (r / out_h, r % out_h);
        let iy = nearest_source(oy, plan.height_scale, plan.height_offset, in_h, round);
        let src = &input[(n * in_h + iy) * in_w * c..][..in_w * c];
        // SAFETY: each task writes only its own output row.
        let dst = &mut unsafe { shared.whole() }[r * row..][..row];
        if c == 1 {
            for (d, &ix) in dst.iter_mut().zip(&xs) {
                *d = src[ix];
            }
        } else {
            for (d, &ix) in dst.chunks_exact_mut(c).zip(&xs) {
                d.copy_from_slice(&src[ix * c..][..c]);
            }
        }
    });
}

/// Bilinear resize of NHWC codes: the float kernel's weights and operation order on the codes,
/// then `round(v * (s_in * (1 / s_out)))` clamped to [-127, 127] (with equal scales the float
/// kernel's value over the scale, up to f32 rounding of the interpolation).
fn interp_bilinear_i8(
    plan: &crate::shape::InterpPlan,
    (s_in, s_out): (f32, f32),
    shape: &[usize],
    input: &[i8],
    output: &mut [i8],
    par: &Parallel,
) {
    use crate::ops::window::bilinear_source;
    let (batch, c, in_h, in_w) = (shape[0], shape[1], shape[2], shape[3]);
    let (out_h, out_w) = (plan.out_h, plan.out_w);
    let xs: Vec<_> = (0..out_w)
        .map(|ox| bilinear_source(ox, plan.width_scale, plan.width_offset, in_w))
        .collect();
    let factor = s_in * mnnq_kernels::int8::elementwise::reciprocal_scale(s_out);
    let row = out_w * c;
    let shared = SharedCodes(output.as_mut_ptr(), output.len());
    par.for_each(batch * out_h, |r| {
        let (n, oy) = (r / out_h, r % out_h);
        let (y0, y1, fy) = bilinear_source(oy, plan.height_scale, plan.height_offset, in_h);
        let image = &input[n * in_h * in_w * c..][..in_h * in_w * c];
        // SAFETY: each task writes only its own output row.
        let dst = &mut unsafe { shared.whole() }[r * row..][..row];
        for (d, &(x0, x1, fx)) in dst.chunks_exact_mut(c).zip(&xs) {
            let px = |y: usize, x: usize| &image[(y * in_w + x) * c..][..c];
            let (a, b, cc, e) = (px(y0, x0), px(y0, x1), px(y1, x0), px(y1, x1));
            for ch in 0..c {
                let top = a[ch] as f32 * (1.0 - fx) + b[ch] as f32 * fx;
                let bottom = cc[ch] as f32 * (1.0 - fx) + e[ch] as f32 * fx;
                let v = (top * (1.0 - fy) + bottom * fy) * factor;
                // max/min rather than clamp: NaN becomes -127, never a panic.
                #[allow(clippy::manual_clamp)]
                let q = v.max(-127.0).min(127.0).round() as i8;
                d[ch] = q;
            }
        }
    });
}

/// Largest average-pooling window whose offset sums (`255` per tap) fit i32.
const MAX_AVERAGE_TAPS: usize = i32::MAX as usize / 255;

/// MNN's x86 int8 average pooling for output row `oy`: its SSE/AVX kernels hold codes as
/// `q + 128` in uint8, so the floor of `(sum * floor(2^24 / n)) >> 24` is taken on offset values
/// and the offset removed afterwards: `avg = (((sum(q) + 128 n) * floor(2^24 / n)) >> 24) - 128`.
/// This differs from the signed formula (`mnnq_kernels::int8::pool`, MNN's ARM result) by up to
/// one code; e.g. a window of 49 zeros averages to -1 here (observed in MNN 3.6.1's x86 global
/// pooling of EfficientNet-Lite0). The offset sums are at most `255 n` and fit i32 for windows
/// below [`MAX_AVERAGE_TAPS`] (checked when the plan is built); the product with the factor
/// needs i64.
fn average_pool_x86_row(geom: &ConvGeometry, input: &[i8], out: &mut [i8], oy: usize) {
    let c = geom.in_c;
    let mut sums = vec![0i32; c];
    for ox in 0..geom.out_w {
        sums.iter_mut().for_each(|s| *s = 0);
        let mut n = 0i64;
        for ky in 0..geom.kernel_h {
            let Some(iy) = (oy * geom.stride_h + ky)
                .checked_sub(geom.pad_top)
                .filter(|&y| y < geom.in_h)
            else {
                continue;
            };
            for kx in 0..geom.kernel_w {
                let Some(ix) = (ox * geom.stride_w + kx)
                    .checked_sub(geom.pad_left)
                    .filter(|&x| x < geom.in_w)
                else {
                    continue;
                };
                n += 1;
                let px = &input[(iy * geom.in_w + ix) * c..][..c];
                for (s, &q) in sums.iter_mut().zip(px) {
                    *s += q as i32 + 128;
                }
            }
        }
        let factor = (1i64 << 24) / n.max(1);
        let row = &mut out[(oy * geom.out_w + ox) * c..][..c];
        for (o, &s) in row.iter_mut().zip(&sums) {
            *o = (((s as i64 * factor) >> 24) - 128).clamp(-128, 127) as i8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(h: usize, w: usize, c: usize) -> ConvGeometry {
        ConvGeometry {
            in_h: h,
            in_w: w,
            in_c: c,
            out_h: 1,
            out_w: 1,
            out_c: c,
            kernel_h: h,
            kernel_w: w,
            stride_h: h,
            stride_w: w,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: 0,
            pad_left: 0,
        }
    }

    fn scalar(op: BinaryOperation, c: f32) -> Stage {
        Stage::Scalar {
            op,
            c,
            const_first: false,
            relu: false,
        }
    }

    fn chain(s_in: f32, stage: Stage, s_out: f32) -> Chain {
        Chain {
            s_in,
            stages: vec![stage],
            s_out,
            z_in: 0,
            z_out: 0,
        }
    }

    #[test]
    fn one_stage_is_mnns_requantized_formula() {
        // x * 3 with s_in 0.5, s_out 0.25: q -> round(q * 0.5 * 3 * 4) = 6q, clamped.
        let t = chain(0.5, scalar(BinaryOperation::Mul, 3.0), 0.25).table();
        assert_eq!(t.get(1), 6);
        assert_eq!(t.get(-7), -42);
        assert_eq!(t.get(30), 127);
        assert_eq!(t.get(-30), -127);
        // 2 - x (constant first) with s_in = s_out = 0.5: q -> 4 - q.
        let sub = Stage::Scalar {
            op: BinaryOperation::Sub,
            c: 2.0,
            const_first: true,
            relu: false,
        };
        let t = chain(0.5, sub, 0.5).table();
        assert_eq!(t.get(1), 3);
        assert_eq!(t.get(10), -6);
        // A fused ReLU: x - 1 with s 1 -> max(q - 1, 0).
        let relu = Stage::Scalar {
            op: BinaryOperation::Sub,
            c: 1.0,
            const_first: false,
            relu: true,
        };
        let t = chain(1.0, relu, 1.0).table();
        assert_eq!((t.get(5), t.get(0), t.get(-5)), (4, 0, 0));
        // ReLU6 as a clamp between scales 0.1 and 6/127: 1.0 -> 21.17 -> 21; 12.7 -> 6 -> 127.
        let t = chain(0.1, Stage::Clamp(0.0, 6.0), 6.0 / 127.0).table();
        assert_eq!((t.get(10), t.get(127), t.get(-3)), (21, 127, 0));
        // Leaky ReLU, slope 0.5, equal scales: -5 -> -2.5 -> -3 (half away from zero).
        let t = chain(1.0, Stage::Leaky(0.5), 1.0).table();
        assert_eq!((t.get(-5), t.get(5)), (-3, 5));
    }

    #[test]
    fn a_fused_chain_does_not_round_the_intermediate_tensor() {
        // x * 0.5 (into scale 1.0), then + 0.25 (into 0.25). Code 1: 0.5 * 0.5 = 0.25, + 0.25 =
        // 0.5, / 0.25 = 2. Step by step the intermediate code is round(0.25 / 1.0) = 0, so the
        // second step gives (0 + 0.25) / 0.25 = 1.
        let first = chain(0.5, scalar(BinaryOperation::Mul, 0.5), 1.0);
        let second = chain(1.0, scalar(BinaryOperation::Add, 0.25), 0.25);
        let stepwise = first.table().then(&second.table());
        // The default (MNN's bytes) composes the rounded tables; MNNQ_INT8_PRECISE does not.
        let composed = first.compose(&second);
        assert_eq!((composed.s_in, composed.s_out), (0.5, 0.25));
        assert_eq!(composed.table(), stepwise);
        let fused = first.then(second).table();
        assert_eq!(fused.get(1), 2);
        assert_eq!(stepwise.get(1), 1);
        // Both are the same function where no rounding is lost: code 4 -> 1.0 + 0.25 -> 5.
        assert_eq!((fused.get(4), stepwise.get(4)), (5, 5));
    }

    #[test]
    fn chains_between_asymmetric_codes_use_both_zero_points() {
        // ReLU6 from codes with zero point -127 (scale 0.1) to zero point -120 (scale 0.05):
        // code -117 is the value 1.0 -> 1.0 / 0.05 = 20 -> 20 - 120 = -100; code -127 is 0.0
        // -> -120; code 127 is 25.4, clamped to 6 -> 120 - 120 = 0.
        let relu6 = Chain {
            s_in: 0.1,
            stages: vec![Stage::Clamp(0.0, 6.0)],
            s_out: 0.05,
            z_in: -127,
            z_out: -120,
        };
        let t = relu6.table();
        assert_eq!((t.get(-117), t.get(-127), t.get(127)), (-100, -120, 0));
        assert_eq!(relu6.values()[(-117i8) as u8 as usize], 1.0);
        // A table stage with zero points inside a fused chain dequantizes with them too.
        let doubled_codes = Stage::Table {
            s_in: 0.1,
            z_in: -127,
            table: Box::new(t.clone()),
            s_out: 0.05,
            z_out: -120,
            function: None,
        };
        assert_eq!(doubled_codes.eval(1.0), 1.0);
    }

    #[test]
    fn a_table_stage_rounds_at_its_own_scales() {
        // MNN's table doubles codes (saturating) between scales 0.5 and 0.25 (so it is the
        // identity on values); before it, + 0.3 in float.
        let doubled = CodeTable::from_fn(|q| (q as i32 * 2).clamp(-127, 127) as i8);
        let table = Stage::Table {
            s_in: 0.5,
            z_in: 0,
            table: Box::new(doubled.clone()),
            s_out: 0.25,
            z_out: 0,
            function: None,
        };
        // A lone table between its own scales is the table itself.
        assert_eq!(chain(0.5, table.clone(), 0.25).table(), doubled);
        // Code 1 at scale 0.5: 0.5 + 0.3 = 0.8 -> table input round(1.6) = 2 -> 4 * 0.25 = 1.0
        // -> output scale 0.25: 4.
        let fused = chain(0.5, scalar(BinaryOperation::Add, 0.3), 0.5)
            .then(chain(0.5, table, 0.25))
            .table();
        assert_eq!(fused.get(1), 4);
    }

    #[test]
    fn a_fused_table_with_a_known_function_is_computed_in_float() {
        // Hardswish tabulated coarsely (scale 1.0 in and out), after + 0.25 (s_in 0.25: code
        // 1 -> 0.5). Through the table 0.5 would become input code 1, hswish(1) = 0.667 code 1,
        // 1.0 / 0.01 = 100. Fused, the float function is used: hswish(0.5) / 0.01 = 29.17 -> 29.
        let hswish = crate::ir::UnaryOperation::HardSwish;
        let coarse = CodeTable::requantized(1.0, 1.0, -127, |x| {
            crate::ops::elementwise::unary_f32(hswish, x)
        });
        let table = Stage::Table {
            s_in: 1.0,
            z_in: 0,
            table: Box::new(coarse),
            s_out: 1.0,
            z_out: 0,
            function: Some(hswish),
        };
        let add = chain(0.25, scalar(BinaryOperation::Add, 0.25), 1.0);
        let fused = add.then(chain(1.0, table, 0.01)).table();
        assert_eq!(fused.get(1), 29);
    }

    #[test]
    fn conv_split_cuts_small_layers_over_channels() {
        // One thread: the whole layer in one task.
        assert_eq!(conv_split(12544, 2, 1), (12544, 2));
        // 12544 pixels at 2 threads: 8 pixel tasks, channel blocks not split.
        assert_eq!(conv_split(12544, 2, 2), (1568, 2));
        // 7x7 = 49 pixels: one pixel task, the 20 blocks cut into 8 groups of at most 3.
        assert_eq!(conv_split(49, 20, 2), (49, 3));
        // 14x14 = 196 pixels: 4 pixel tasks of 49, blocks in 2 groups.
        assert_eq!(conv_split(196, 5, 2), (49, 3));
        // A 1-pixel classifier with 1 block cannot be split.
        assert_eq!(conv_split(1, 1, 2), (1, 1));
    }

    #[test]
    fn x86_average_of_zeros_is_minus_one_for_49_taps() {
        // floor(2^24 / 49) = 342392; 128 * 49 * 342392 = 2147482624 < 128 * 2^24, so the
        // shifted value is 127 and the result 127 - 128 = -1 (what MNN's x86 build returns).
        let mut out = [0i8; 2];
        average_pool_x86_row(&global(7, 7, 2), &[0i8; 98], &mut out, 0);
        assert_eq!(out, [-1, -1]);
    }

    #[test]
    fn x86_average_matches_hand_computation() {
        // Four taps (factor 2^22, exact): codes 10, 11, 12, 13 -> offset sum 558 -> 139 -> 11;
        // -3, -3, -3, -4 -> offset sum 499 -> 124 (floor of 124.75) -> -4.
        let input = [10i8, -3, 11, -3, 12, -3, 13, -4];
        let mut out = [0i8; 2];
        average_pool_x86_row(&global(2, 2, 2), &input, &mut out, 0);
        assert_eq!(out, [11, -4]);
    }

    #[test]
    fn x86_average_excludes_padding() {
        // 3x3 windows, stride 2, one pixel of padding: the first output has 4 valid taps, the
        // second 6, all of code 8. Offset sums 544 and 816; 544 * 2^22 >> 24 = 136 -> 8, but
        // 816 * floor(2^24 / 6) >> 24 = 135 (floor of 135.99999) -> 7: the x86 rounding loss.
        let geom = ConvGeometry {
            out_h: 2,
            out_w: 2,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 2,
            stride_w: 2,
            pad_top: 1,
            pad_left: 1,
            ..global(4, 4, 1)
        };
        let input = [8i8; 16];
        let mut out = [0i8; 4];
        average_pool_x86_row(&geom, &input, &mut out, 0);
        assert_eq!(&out[..2], &[8, 7]);
    }
}
