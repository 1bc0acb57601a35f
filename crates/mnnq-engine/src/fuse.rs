//! Chains of elementwise float ops (a BinaryOp with a constant scalar or per-channel operand,
//! UnaryOp, ReLU, ReLU6) run as one pass over memory instead of one pass per op.
//!
//! A chain is a run of consecutive steps where each step's output is read only by the next step
//! (and is no graph output). The fused pass computes, per element, exactly the scalar operations
//! the separate ops compute, in the same order, so outputs are bit-identical; the intermediate
//! tensors are simply never stored. Runs that show every tensor (observers, fake quantization)
//! keep the separate steps.

use crate::engine::{Engine, Location, Slot, Step};
use crate::ir::{BinaryOperation, OpKind, UnaryOperation};
use crate::ops::elementwise::{binary_f32, unary_value};
use crate::ops::{Parallel, SharedMut};
use crate::tensor::{DType, Layout};

/// One elementwise operation of a chain.
#[derive(Clone, Debug, PartialEq)]
pub enum ChainOp {
    /// `x op c` (or `c op x` with `const_first`); `constant` has 1 (scalar) or `channels` values.
    Binary {
        op: BinaryOperation,
        relu: bool,
        constant: Vec<f32>,
        const_first: bool,
        /// Per-channel constants on channels-last data: `constant` repeated over a block and
        /// one more pixel, so a block starting at any channel reads its constants in a row.
        pattern: Vec<f32>,
    },
    Unary(UnaryOperation),
    Relu {
        slope: f32,
    },
    Relu6 {
        min: f32,
        max: f32,
    },
}

/// Steps `first..=last` computed as one pass from slot `input` to slot `output`.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedChain {
    pub first: usize,
    pub last: usize,
    pub input: usize,
    pub output: usize,
    pub ops: Vec<ChainOp>,
    pub channels: usize,
    /// Consecutive elements of one channel in memory (1 for channels-last, H*W for row-major).
    pub channel_run: usize,
}

/// Elements per fused block (stays in L1 between the operations).
const BLOCK: usize = 1024;

fn arena_range(slot: &Slot) -> Option<(usize, usize)> {
    match slot.location {
        Location::Arena(off) => Some((off, off + slot.len())),
        Location::Const(_) => None,
    }
}

/// The chain step for `step`, given the main input slot it must read, or `None`.
fn chain_op(engine: &Engine, step: &Step) -> Option<(usize, usize, ChainOp)> {
    let Step::Node {
        node,
        inputs,
        outputs,
        ..
    } = step
    else {
        return None;
    };
    if outputs.len() != 1 {
        return None;
    }
    let out = &engine.slots[outputs[0]];
    if out.dtype != DType::F32 {
        return None;
    }
    let same = |s: usize| {
        let x = &engine.slots[s];
        x.dtype == DType::F32
            && x.shape == out.shape
            && x.layout.for_rank(x.shape.len()) == out.layout.for_rank(out.shape.len())
    };
    let kind = &engine.ir.nodes[*node].kind;
    let single = |op: ChainOp| -> Option<(usize, usize, ChainOp)> {
        (inputs.len() == 1 && same(inputs[0])).then_some((inputs[0], outputs[0], op))
    };
    match kind {
        OpKind::Unary(op) => single(ChainOp::Unary(*op)),
        OpKind::Relu { slope } => single(ChainOp::Relu { slope: *slope }),
        OpKind::Relu6 { min, max } => single(ChainOp::Relu6 {
            min: *min,
            max: *max,
        }),
        OpKind::Binary { op, relu } => {
            use BinaryOperation::*;
            if !matches!(op, Add | Sub | Mul | Div | RealDiv | Max | Min) || inputs.len() != 2 {
                return None;
            }
            let channels = out.shape.get(1).copied().unwrap_or(1);
            let constant = |s: usize| -> Option<Vec<f32>> {
                let c = &engine.slots[s];
                let Location::Const(i) = c.location else {
                    return None;
                };
                if c.dtype != DType::F32 || c.shape.len() > out.shape.len() {
                    return None;
                }
                // Right-aligned: every dim 1, except the channel dim, which may be C.
                let offset = out.shape.len() - c.shape.len();
                let per_channel = c
                    .shape
                    .iter()
                    .enumerate()
                    .all(|(d, &n)| n == 1 || (d + offset == 1 && n == channels));
                (per_channel && (c.len() == 1 || c.len() == channels))
                    .then(|| engine.const_buffers[i].clone())
            };
            let (main, constant, const_first) = if same(inputs[0]) {
                (inputs[0], constant(inputs[1])?, false)
            } else if same(inputs[1]) {
                (inputs[1], constant(inputs[0])?, true)
            } else {
                return None;
            };
            Some((
                main,
                outputs[0],
                ChainOp::Binary {
                    op: *op,
                    relu: *relu,
                    constant,
                    const_first,
                    pattern: Vec::new(),
                },
            ))
        }
        _ => None,
    }
}

/// Finds the chains of `engine`'s schedule (run after the memory plan).
pub fn find_chains(engine: &Engine) -> Vec<FusedChain> {
    let mut readers = vec![0usize; engine.slots.len()];
    for step in &engine.steps {
        match step {
            Step::Node { inputs, .. } => inputs.iter().for_each(|&s| readers[s] += 1),
            Step::Convert { from, .. } => readers[*from] += 1,
        }
    }
    for &(_, s) in &engine.outputs {
        readers[s] += 1;
    }
    let mut chains = Vec::new();
    let mut i = 0;
    while i < engine.steps.len() {
        let Some((input, mut output, op)) = chain_op(engine, &engine.steps[i]) else {
            i += 1;
            continue;
        };
        let mut ops = vec![op];
        let mut last = i;
        while let Some((main, next_out, op)) =
            engine.steps.get(last + 1).and_then(|s| chain_op(engine, s))
        {
            if main != output || readers[output] != 1 {
                break;
            }
            ops.push(op);
            output = next_out;
            last += 1;
        }
        // In place is fine (each block is read before it is written); any other overlap is not.
        let disjoint = match (
            arena_range(&engine.slots[input]),
            arena_range(&engine.slots[output]),
        ) {
            (Some((a0, a1)), Some((b0, b1))) => a0 == b0 || a1 <= b0 || b1 <= a0,
            _ => true,
        };
        if ops.len() >= 2 && disjoint {
            let out = &engine.slots[output];
            let channels = out.shape.get(1).copied().unwrap_or(1);
            let channel_run = match out.layout.for_rank(out.shape.len()) {
                Layout::ChannelsLast => 1,
                Layout::RowMajor => out.shape.iter().skip(2).product(),
            };
            for op in &mut ops {
                if let ChainOp::Binary {
                    constant, pattern, ..
                } = op
                {
                    if constant.len() > 1 && channel_run == 1 {
                        *pattern = (0..BLOCK + channels)
                            .map(|j| constant[j % channels])
                            .collect();
                    }
                }
            }
            chains.push(FusedChain {
                first: i,
                last,
                input,
                output,
                ops,
                channels,
                channel_run,
            });
        }
        i = last + 1;
    }
    chains
}

impl FusedChain {
    /// Runs the chain on the session's arena.
    ///
    /// # Safety
    /// `arena` must be the session's arena for `engine` (the slots' offsets index it).
    pub unsafe fn run(&self, engine: &Engine, arena: *mut f32, par: &Parallel) {
        let input = &engine.slots[self.input];
        let total = input.len();
        let src: *const f32 = match input.location {
            Location::Arena(off) => arena.add(off),
            Location::Const(i) => engine.const_buffers[i].as_ptr(),
        };
        let Location::Arena(out_off) = engine.slots[self.output].location else {
            return;
        };
        let dst = SharedMut(arena.add(out_off));
        let src = SharedMut(src as *mut f32);
        let blocks = total.div_ceil(BLOCK);
        // Blocks per work item: about 32k elements, as the separate elementwise ops split them.
        const PER_ITEM: usize = 32;
        par.for_each(blocks.div_ceil(PER_ITEM), |item| {
            let mut buf = [0.0f32; BLOCK];
            for b in item * PER_ITEM..((item + 1) * PER_ITEM).min(blocks) {
                let start = b * BLOCK;
                let len = BLOCK.min(total - start);
                let buf = &mut buf[..len];
                // SAFETY: in range of the input; a block is read before the same block of the
                // output (possibly the same memory) is written, and blocks are disjoint.
                unsafe {
                    std::ptr::copy_nonoverlapping(src.ptr().add(start), buf.as_mut_ptr(), len)
                };
                for op in &self.ops {
                    self.apply(op, start, buf);
                }
                unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), dst.ptr().add(start), len) };
            }
        });
    }

    #[inline]
    fn apply(&self, op: &ChainOp, start: usize, buf: &mut [f32]) {
        match op {
            ChainOp::Unary(u) => match u {
                UnaryOperation::HardSwish => buf
                    .iter_mut()
                    .for_each(|x| *x = unary_value(UnaryOperation::HardSwish, *x)),
                UnaryOperation::Sigmoid if crate::ops::window::mnn_exact_mode() => {
                    mnnq_kernels::f32::mnn_exact::mnn_sigmoid_in_place(buf)
                }
                UnaryOperation::Sigmoid => mnnq_kernels::f32::activation::sigmoid_in_place(buf),
                other => buf.iter_mut().for_each(|x| *x = unary_value(*other, *x)),
            },
            ChainOp::Relu { slope } => {
                let s = *slope;
                buf.iter_mut()
                    .for_each(|x| *x = if *x < 0.0 { *x * s } else { *x });
            }
            ChainOp::Relu6 { min, max } => {
                let (lo, hi) = (*min, *max);
                buf.iter_mut().for_each(|x| *x = x.max(lo).min(hi));
            }
            ChainOp::Binary {
                op,
                relu,
                constant,
                const_first,
                pattern,
            } => {
                let len = buf.len();
                // The constant for each element of the block: one value, a repeating channel
                // pattern (channels-last) or runs of one channel (row-major).
                macro_rules! with_constants {
                    ($f:expr) => {{
                        let f = $f;
                        if constant.len() == 1 {
                            let c = constant[0];
                            buf.iter_mut().for_each(|x| *x = f(*x, c));
                        } else if self.channel_run == 1 {
                            let cs = &pattern[start % self.channels..][..len];
                            buf.iter_mut().zip(cs).for_each(|(x, &c)| *x = f(*x, c));
                        } else {
                            let mut i = 0;
                            while i < len {
                                let pos = start + i;
                                let c = constant[(pos / self.channel_run) % self.channels];
                                let n = (self.channel_run - pos % self.channel_run).min(len - i);
                                buf[i..i + n].iter_mut().for_each(|x| *x = f(*x, c));
                                i += n;
                            }
                        }
                    }};
                }
                macro_rules! ordered {
                    ($g:expr) => {{
                        let g = $g;
                        match (*const_first, *relu) {
                            (false, false) => with_constants!(|x: f32, c: f32| g(x, c)),
                            (true, false) => with_constants!(|x: f32, c: f32| g(c, x)),
                            (false, true) => with_constants!(|x: f32, c: f32| g(x, c).max(0.0)),
                            (true, true) => with_constants!(|x: f32, c: f32| g(c, x).max(0.0)),
                        }
                    }};
                }
                match op {
                    BinaryOperation::Add => ordered!(|a: f32, b: f32| a + b),
                    BinaryOperation::Mul => ordered!(|a: f32, b: f32| a * b),
                    BinaryOperation::Sub => ordered!(|a: f32, b: f32| a - b),
                    other => {
                        let other = *other;
                        ordered!(move |a: f32, b: f32| binary_f32(other, a, b))
                    }
                }
            }
        }
    }
}
