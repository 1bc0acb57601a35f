//! Elementwise ops (binary with broadcasting, unary, activations) on any layouts.

use super::movement::{broadcast_strides, for_each_row, in_order, simplify};
use super::{In, Out, Parallel, SharedMut};
use crate::ir::{BinaryOperation, EltwiseType, UnaryOperation};
use crate::tensor::{i32_to_bits, DType};

/// Below this many elements an op runs on one thread: waking workers costs more than it saves.
const PARALLEL_MIN: usize = 1 << 15;
/// Elements per parallel piece (fixed, so the split never depends on the thread count).
const PIECE: usize = 1 << 13;

#[inline]
pub fn binary_f32(op: BinaryOperation, a: f32, b: f32) -> f32 {
    use BinaryOperation::*;
    match op {
        Add => a + b,
        Sub => a - b,
        Mul => a * b,
        Div | RealDiv => a / b,
        Max => a.max(b),
        Min => a.min(b),
        Pow => a.powf(b),
        FloorDiv => (a / b).floor(),
        FloorMod => a - (a / b).floor() * b,
        Mod => a % b,
        SquaredDifference => (a - b) * (a - b),
        Atan2 => a.atan2(b),
        Greater => (a > b) as i32 as f32,
        GreaterEqual => (a >= b) as i32 as f32,
        Less => (a < b) as i32 as f32,
        LessEqual => (a <= b) as i32 as f32,
        Equal => (a == b) as i32 as f32,
        NotEqual => (a != b) as i32 as f32,
        LogicalOr => ((a != 0.0) || (b != 0.0)) as i32 as f32,
        LogicalXor => ((a != 0.0) ^ (b != 0.0)) as i32 as f32,
        MulSilu => a * b / (1.0 + (-b).exp()),
        BitwiseAnd | BitwiseOr | BitwiseXor | LeftShift | RightShift => {
            binary_i32(op, a as i32, b as i32) as f32
        }
    }
}

#[inline]
pub fn binary_i32(op: BinaryOperation, a: i32, b: i32) -> i32 {
    use BinaryOperation::*;
    match op {
        Add => a.wrapping_add(b),
        Sub => a.wrapping_sub(b),
        Mul => a.wrapping_mul(b),
        Div | RealDiv => {
            if b == 0 {
                0
            } else {
                a.wrapping_div(b)
            }
        }
        FloorDiv => {
            if b == 0 {
                0
            } else {
                a.div_euclid(b) - if b < 0 && a.rem_euclid(b) != 0 { 1 } else { 0 }
            }
        }
        FloorMod => {
            if b == 0 {
                0
            } else {
                let r = a % b;
                if r != 0 && ((r < 0) != (b < 0)) {
                    r + b
                } else {
                    r
                }
            }
        }
        Mod => {
            if b == 0 {
                0
            } else {
                a % b
            }
        }
        Max => a.max(b),
        Min => a.min(b),
        Pow => (a as f64).powf(b as f64) as i32,
        SquaredDifference => (a - b) * (a - b),
        Atan2 => (a as f32).atan2(b as f32) as i32,
        Greater => (a > b) as i32,
        GreaterEqual => (a >= b) as i32,
        Less => (a < b) as i32,
        LessEqual => (a <= b) as i32,
        Equal => (a == b) as i32,
        NotEqual => (a != b) as i32,
        LogicalOr => ((a != 0) || (b != 0)) as i32,
        LogicalXor => ((a != 0) ^ (b != 0)) as i32,
        BitwiseAnd => a & b,
        BitwiseOr => a | b,
        BitwiseXor => a ^ b,
        LeftShift => a.wrapping_shl(b as u32),
        RightShift => a.wrapping_shr(b as u32),
        MulSilu => a * b,
    }
}

/// Binary op with numpy broadcasting. Float ops on float inputs; integer arithmetic when both
/// inputs are integers; comparisons write integers.
pub fn binary(op: BinaryOperation, relu: bool, a: &In, b: &In, out: &mut Out, par: &Parallel) {
    let ints = a.dtype == DType::I32 && b.dtype == DType::I32;
    let out_int = out.dtype == DType::I32;
    let order = out.layout.memory_order(out.shape.len());
    let os = out.strides();
    let sa = broadcast_strides(a.shape, &a.strides(), out.shape);
    let sb = broadcast_strides(b.shape, &b.strides(), out.shape);
    let dims = in_order(out.shape, &order);
    let (dims, [sa, sb, so]) = simplify(
        &dims,
        [
            in_order(&sa, &order),
            in_order(&sb, &order),
            in_order(&os, &order),
        ],
    );
    let (ia, ib) = (sa[sa.len() - 1], sb[sb.len() - 1]);
    let total: usize = out.shape.iter().product();

    // Float fast path: one flat row (same layouts, or one side a scalar): split into pieces.
    if !ints && !out_int && a.dtype == DType::F32 && b.dtype == DType::F32 && dims.len() == 1 {
        let ptr = SharedMut(out.data.as_mut_ptr());
        let (ad, bd) = (a.data, b.data);
        let pieces = if total >= PARALLEL_MIN {
            total.div_ceil(PIECE)
        } else {
            1
        };
        let piece_len = total.div_ceil(pieces);
        par.for_each(pieces, |p| {
            let start = p * piece_len;
            let len = piece_len.min(total - start);
            // SAFETY: pieces are disjoint ranges of the output.
            let o = unsafe { ptr.slice(start, len) };
            let a0 = if ia == 0 { 0 } else { start };
            let b0 = if ib == 0 { 0 } else { start };
            flat_binary_row(op, relu, ad, a0, ia, bd, b0, ib, o);
        });
        return;
    }

    let io = so[so.len() - 1];
    // Float rows whose inner strides are 0 or 1 (per-channel scales on channels-last data, rows of
    // a broadcast...) run through the vectorizable row kernel; rows are independent, so they are
    // spread over threads in fixed pieces.
    if !ints
        && !out_int
        && a.dtype == DType::F32
        && b.dtype == DType::F32
        && io == 1
        && (ia == 0 || ia == 1)
        && (ib == 0 || ib == 1)
    {
        let mut rows: Vec<[isize; 3]> = Vec::new();
        for_each_row(&dims, [&sa, &sb, &so], |bases, _| rows.push(bases));
        let row_len = dims[dims.len() - 1];
        let rows_per_piece = if total >= PARALLEL_MIN {
            (PIECE / row_len.max(1)).max(1)
        } else {
            rows.len().max(1)
        };
        let pieces = rows.len().div_ceil(rows_per_piece);
        let ptr = SharedMut(out.data.as_mut_ptr());
        let (ad, bd) = (a.data, b.data);
        let rows = &rows;
        par.for_each(pieces, |p| {
            for &[ba, bb, bo] in
                &rows[p * rows_per_piece..((p + 1) * rows_per_piece).min(rows.len())]
            {
                // SAFETY: every row is written by exactly one piece.
                let o = unsafe { ptr.slice(bo as usize, row_len) };
                flat_binary_row(op, relu, ad, ba as usize, ia, &bd[bb as usize..], 0, ib, o);
            }
        });
        return;
    }

    let out_data: &mut [f32] = out.data;
    for_each_row(&dims, [&sa, &sb, &so], |[ba, bb, bo], len| {
        for i in 0..len as isize {
            let (pa, pb, po) = (
                (ba + i * ia) as usize,
                (bb + i * ib) as usize,
                (bo + i * io) as usize,
            );
            out_data[po] = if ints {
                let r = binary_i32(op, a.data[pa].to_bits() as i32, b.data[pb].to_bits() as i32);
                let r = if relu { r.max(0) } else { r };
                i32_to_bits(r)
            } else {
                let r = binary_f32(op, a.get_f32(pa), b.get_f32(pb));
                let r = if relu { r.max(0.0) } else { r };
                if out_int {
                    i32_to_bits(r as i32)
                } else {
                    r
                }
            };
        }
    });
}

/// One contiguous output row; the inputs advance by `ia`/`ib` (1, or 0 for a broadcast scalar).
#[allow(clippy::too_many_arguments)]
#[inline]
fn flat_binary_row(
    op: BinaryOperation,
    relu: bool,
    a: &[f32],
    a_start: usize,
    ia: isize,
    b: &[f32],
    b_start: usize,
    ib: isize,
    out: &mut [f32],
) {
    let len = out.len();
    let a_row = if ia == 0 {
        &a[a_start..a_start + 1]
    } else {
        &a[a_start..a_start + len]
    };
    let b_row = if ib == 0 {
        &b[b_start..b_start + 1]
    } else {
        &b[b_start..b_start + len]
    };
    macro_rules! run {
        ($f:expr) => {
            match (ia == 0, ib == 0) {
                (false, false) => {
                    for ((o, &x), &y) in out.iter_mut().zip(a_row).zip(b_row) {
                        *o = $f(x, y);
                    }
                }
                (true, false) => {
                    let x = a_row[0];
                    for (o, &y) in out.iter_mut().zip(b_row) {
                        *o = $f(x, y);
                    }
                }
                (false, true) => {
                    let y = b_row[0];
                    for (o, &x) in out.iter_mut().zip(a_row) {
                        *o = $f(x, y);
                    }
                }
                (true, true) => {
                    let v = $f(a_row[0], b_row[0]);
                    out.fill(v);
                }
            }
        };
    }
    match (op, relu) {
        (BinaryOperation::Add, false) => run!(|x: f32, y: f32| x + y),
        (BinaryOperation::Add, true) => run!(|x: f32, y: f32| (x + y).max(0.0)),
        (BinaryOperation::Mul, false) => run!(|x: f32, y: f32| x * y),
        (BinaryOperation::Sub, false) => run!(|x: f32, y: f32| x - y),
        _ => run!(|x: f32, y: f32| {
            let r = binary_f32(op, x, y);
            if relu {
                r.max(0.0)
            } else {
                r
            }
        }),
    }
}

/// erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit, evaluated in f64).
pub fn erf(x: f32) -> f32 {
    let x = x as f64;
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398
                                + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    let r = 1.0 - erfc;
    (if x >= 0.0 { r } else { -r }) as f32
}

/// Inverse error function (Giles' single-precision approximation).
pub fn erfinv(x: f32) -> f32 {
    let x = x as f64;
    let mut w = -((1.0 - x) * (1.0 + x)).ln();
    let p = if w < 5.0 {
        w -= 2.5;
        let mut p = 2.810_226_36e-08;
        for c in [
            3.432_739_39e-07,
            -3.523_387_7e-06,
            -4.391_506_54e-06,
            0.000_218_580_87,
            -0.001_253_725_03,
            -0.004_177_681_64,
            0.246_640_727,
            1.501_409_41,
        ] {
            p = c + p * w;
        }
        p
    } else {
        w = w.sqrt() - 3.0;
        let mut p = -0.000_200_214_257;
        for c in [
            0.000_100_950_558,
            0.001_349_343_22,
            -0.003_673_428_44,
            0.005_739_507_73,
            -0.007_622_461_3,
            0.009_438_870_47,
            1.001_674_06,
            2.832_976_82,
        ] {
            p = c + p * w;
        }
        p
    };
    (p * x) as f32
}

#[inline]
pub fn unary_f32(op: UnaryOperation, x: f32) -> f32 {
    use UnaryOperation::*;
    match op {
        Abs => x.abs(),
        Neg => -x,
        Floor => x.floor(),
        Ceil => x.ceil(),
        Square => x * x,
        Sqrt => x.sqrt(),
        Rsqrt => 1.0 / x.sqrt(),
        Exp => x.exp(),
        Log => x.ln(),
        Sin => x.sin(),
        Cos => x.cos(),
        Tan => x.tan(),
        Asin => x.asin(),
        Acos => x.acos(),
        Atan => x.atan(),
        Reciprocal => 1.0 / x,
        Log1p => x.ln_1p(),
        Bnll => {
            // log(1 + e^x) without overflow for large x.
            if x > 0.0 {
                x + (-x).exp().ln_1p()
            } else {
                x.exp().ln_1p()
            }
        }
        Acosh => x.acosh(),
        Sinh => x.sinh(),
        Asinh => x.asinh(),
        Atanh => x.atanh(),
        Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        Round => x.round(),
        Cosh => x.cosh(),
        Erf => erf(x),
        Erfc => 1.0 - erf(x),
        Erfinv => erfinv(x),
        Expm1 => x.exp_m1(),
        Sigmoid => mnnq_kernels::f32::activation::sigmoid(x),
        Tanh => x.tanh(),
        HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Gelu => {
            // MNN's GELU is the tanh approximation; GELU_STANDARD uses erf.
            0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh())
        }
        GeluStandard => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
        Silu => x / (1.0 + (-x).exp()),
    }
}

/// Applies `f` to every element; input and output have the same shape (layouts may differ).
pub fn map(input: &In, out: &mut Out, par: &Parallel, f: impl Fn(f32) -> f32 + Sync) {
    let total = out.shape.iter().product::<usize>();
    if input.layout.for_rank(input.shape.len()) == out.layout.for_rank(out.shape.len())
        && input.dtype == DType::F32
    {
        for_each_piece(input.data, out.data, total, par, |src, dst| {
            for (o, &x) in dst.iter_mut().zip(src) {
                *o = f(x);
            }
        });
        return;
    }
    let order = out.layout.memory_order(out.shape.len());
    let dims = in_order(out.shape, &order);
    let (dims, [si, so]) = simplify(
        &dims,
        [
            in_order(&input.strides(), &order),
            in_order(&out.strides(), &order),
        ],
    );
    let (ii, io) = (si[si.len() - 1], so[so.len() - 1]);
    let data: &mut [f32] = out.data;
    for_each_row(&dims, [&si, &so], |[bi, bo], len| {
        for i in 0..len as isize {
            data[(bo + i * io) as usize] = f(input.get_f32((bi + i * ii) as usize));
        }
    });
}

/// Unary op (integer inputs are converted to float first, except ABS/NEG/SQUARE/SIGN).
pub fn unary(op: UnaryOperation, input: &In, out: &mut Out, par: &Parallel) {
    if input.dtype == DType::I32 && out.dtype == DType::I32 {
        let vals = input.to_row_major_i64();
        let res: Vec<i32> = vals
            .iter()
            .map(|&v| {
                let v = v as i32;
                match op {
                    UnaryOperation::Abs => v.wrapping_abs(),
                    UnaryOperation::Neg => v.wrapping_neg(),
                    UnaryOperation::Square => v.wrapping_mul(v),
                    UnaryOperation::Sign => v.signum(),
                    _ => unary_f32(op, v as f32) as i32,
                }
            })
            .collect();
        write_row_major_ints(&res, out);
        return;
    }
    match op {
        UnaryOperation::HardSwish => map(input, out, par, |x| unary_value(op, x)),
        UnaryOperation::Sigmoid if super::window::mnn_exact_mode() => map_in_place(
            input,
            out,
            par,
            mnnq_kernels::f32::mnn_exact::mnn_sigmoid_in_place,
        ),
        UnaryOperation::Sigmoid => map_in_place(
            input,
            out,
            par,
            mnnq_kernels::f32::activation::sigmoid_in_place,
        ),
        _ => map(input, out, par, |x| unary_f32(op, x)),
    }
}

/// A float UnaryOp on one value, exactly as [`unary`] computes it.
#[inline(always)]
pub fn unary_value(op: UnaryOperation, x: f32) -> f32 {
    match op {
        // MNN's order: (x * relu6(x + 3)) / 6, a true division (bit-identical to MNN).
        UnaryOperation::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        UnaryOperation::Sigmoid => mnnq_kernels::f32::activation::sigmoid(x),
        _ => unary_f32(op, x),
    }
}

/// [`map`] with a function over a slice of values in place (a vectorised kernel): pieces of
/// the input are copied to the output and transformed there. Layout changes take [`map`] with
/// the kernel on one value at a time, which gives the same bits.
fn map_in_place(input: &In, out: &mut Out, par: &Parallel, f: fn(&mut [f32])) {
    let total = out.shape.iter().product::<usize>();
    if input.layout.for_rank(input.shape.len()) != out.layout.for_rank(out.shape.len())
        || input.dtype != DType::F32
    {
        map(input, out, par, |x| {
            let mut one = [x];
            f(&mut one);
            one[0]
        });
        return;
    }
    for_each_piece(input.data, out.data, total, par, |src, dst| {
        dst.copy_from_slice(src);
        f(dst);
    });
}

/// Runs `piece` on matching pieces of the first `total` values of `src` and `dst` (same
/// layout), split between the threads for large tensors.
fn for_each_piece(
    src: &[f32],
    dst: &mut [f32],
    total: usize,
    par: &Parallel,
    piece: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    let pieces = if total >= PARALLEL_MIN {
        total.div_ceil(PIECE)
    } else {
        1
    };
    let piece_len = total.div_ceil(pieces.max(1)).max(1);
    let ptr = SharedMut(dst.as_mut_ptr());
    par.for_each(pieces, |p| {
        let start = p * piece_len;
        let len = piece_len.min(total - start);
        // SAFETY: disjoint pieces of `dst`, which the caller lends for the whole call.
        let o = unsafe { ptr.slice(start, len) };
        piece(&src[start..start + len], o);
    });
}

/// Writes integers given in logical row-major order into `out` (any layout).
pub fn write_row_major_ints(values: &[i32], out: &mut Out) {
    let strides = out.strides();
    let mut i = 0;
    let shape = out.shape;
    let data: &mut [f32] = out.data;
    super::movement::for_each_offset(shape, &strides, |off| {
        data[off] = i32_to_bits(values[i]);
        i += 1;
    });
}

/// Writes floats given in logical row-major order into `out` (any layout).
pub fn write_row_major(values: &[f32], out: &mut Out) {
    let strides = out.strides();
    let mut i = 0;
    let shape = out.shape;
    let int = out.dtype == DType::I32;
    let data: &mut [f32] = out.data;
    super::movement::for_each_offset(shape, &strides, |off| {
        data[off] = if int {
            i32_to_bits(values[i] as i32)
        } else {
            values[i]
        };
        i += 1;
    });
}

/// Per-channel op on dim 1 (Scale, PRelu): `f(x, channel)`.
pub fn per_channel(input: &In, out: &mut Out, f: impl Fn(f32, usize) -> f32 + Sync) {
    let shape = out.shape;
    if shape.len() < 2 {
        map(input, out, &Parallel::sequential(), |x| f(x, 0));
        return;
    }
    // Iterate rows of the output's memory order, tracking the channel through strides.
    let order = out.layout.memory_order(shape.len());
    let dims = in_order(shape, &order);
    let ch_stride_in_order: Vec<isize> =
        order.iter().map(|&d| if d == 1 { 1 } else { 0 }).collect();
    let si = in_order(&input.strides(), &order);
    let so = in_order(&out.strides(), &order);
    let inner_i = *si.last().unwrap();
    let inner_o = *so.last().unwrap();
    let inner_c = *ch_stride_in_order.last().unwrap();
    let data: &mut [f32] = out.data;
    for_each_row(
        &dims,
        [&si, &so, &ch_stride_in_order],
        |[bi, bo, bc], len| {
            for i in 0..len as isize {
                let c = (bc + i * inner_c) as usize;
                data[(bo + i * inner_o) as usize] =
                    f(input.get_f32((bi + i * inner_i) as usize), c);
            }
        },
    );
}

/// Caffe Eltwise over any number of same-shaped inputs.
pub fn eltwise(kind: EltwiseType, coeff: &[f32], inputs: &[In], out: &mut Out) {
    let vals: Vec<Vec<f32>> = inputs.iter().map(|i| i.to_row_major_f32()).collect();
    let n = out.shape.iter().product::<usize>();
    let mut res = vec![0.0f32; n];
    for (j, r) in res.iter_mut().enumerate() {
        let c = |k: usize| coeff.get(k).copied().unwrap_or(1.0);
        let mut acc = match kind {
            EltwiseType::Sum | EltwiseType::Sub => vals[0][j] * c(0),
            _ => vals[0][j],
        };
        for (k, v) in vals.iter().enumerate().skip(1) {
            acc = match kind {
                EltwiseType::Sum => acc + v[j] * c(k),
                EltwiseType::Sub => acc - v[j] * c(k),
                EltwiseType::Prod => acc * v[j],
                EltwiseType::Max => acc.max(v[j]),
            };
        }
        *r = acc;
    }
    write_row_major(&res, out);
}

/// Select(cond, a, b) with broadcasting.
pub fn select(cond: &In, a: &In, b: &In, out: &mut Out) {
    let shape = out.shape.to_vec();
    let sc = broadcast_strides(cond.shape, &cond.strides(), &shape);
    let sa = broadcast_strides(a.shape, &a.strides(), &shape);
    let sb = broadcast_strides(b.shape, &b.strides(), &shape);
    let so = out.strides();
    let (ic, ia, ib, io) = (
        *sc.last().unwrap_or(&0),
        *sa.last().unwrap_or(&0),
        *sb.last().unwrap_or(&0),
        *so.last().unwrap_or(&0),
    );
    let data: &mut [f32] = out.data;
    for_each_row(&shape, [&sc, &sa, &sb, &so], |[bc, ba, bb, bo], len| {
        for i in 0..len as isize {
            let c = cond.get_f32((bc + i * ic) as usize) != 0.0;
            let v = if c {
                a.data[(ba + i * ia) as usize]
            } else {
                b.data[(bb + i * ib) as usize]
            };
            data[(bo + i * io) as usize] = v;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Layout;

    #[test]
    fn broadcast_add_matches_hand_computation_in_both_layouts() {
        // a: [1,2,2,2] channels-last; b: [1,2,1,1] per-channel.
        let shape = [1, 2, 2, 2];
        let logical: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let mut cl = vec![0.0; 8];
        super::super::movement::convert(
            &In {
                shape: &shape,
                dtype: DType::F32,
                layout: Layout::RowMajor,
                data: &logical,
            },
            &mut Out {
                shape: &shape,
                dtype: DType::F32,
                layout: Layout::ChannelsLast,
                data: &mut cl,
            },
        );
        let bshape = [1, 2, 1, 1];
        let bdata = [10.0, 100.0];
        let mut out = vec![0.0; 8];
        binary(
            BinaryOperation::Add,
            false,
            &In {
                shape: &shape,
                dtype: DType::F32,
                layout: Layout::ChannelsLast,
                data: &cl,
            },
            &In {
                shape: &bshape,
                dtype: DType::F32,
                layout: Layout::RowMajor,
                data: &bdata,
            },
            &mut Out {
                shape: &shape,
                dtype: DType::F32,
                layout: Layout::RowMajor,
                data: &mut out,
            },
            &Parallel::sequential(),
        );
        assert_eq!(
            out,
            vec![10.0, 11.0, 12.0, 13.0, 104.0, 105.0, 106.0, 107.0]
        );
    }

    #[test]
    fn erf_is_accurate() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
        ] {
            assert!((erf(x) - want).abs() < 1e-6, "erf({x})");
        }
        assert!((erfinv(0.842_700_8) - 1.0).abs() < 1e-4);
    }

    #[test]
    fn hardswish_matches_definition() {
        assert_eq!(unary_f32(UnaryOperation::HardSwish, -4.0), 0.0);
        assert_eq!(unary_f32(UnaryOperation::HardSwish, 4.0), 4.0);
        assert!((unary_f32(UnaryOperation::HardSwish, 1.0) - 4.0 / 6.0).abs() < 1e-7);
    }
}
