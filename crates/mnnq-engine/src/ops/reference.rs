//! Row-major implementations of the ops that are not on the hot path (shape arithmetic, softmax,
//! matrix products, reductions...). They read inputs through strides (any layout) and write
//! row-major outputs; constant folding at load uses them as well.

use super::elementwise::{write_row_major, write_row_major_ints};
use super::movement;
use super::{In, Out};
use crate::ir::{OpKind, PadValueMode, ReductionType};
use crate::shape::{norm_axis, reduction_axes, strided_slice_plan};
use crate::tensor::{DType, Value};

pub type OpResult = Result<(), String>;

fn copy_logical(input: &In, out: &mut Out) {
    // Same elements in logical row-major order, possibly another shape (reshape family).
    let v = input.to_row_major_f32();
    if input.dtype == DType::I32 {
        let ints: Vec<i32> = v.iter().map(|&x| x as i32).collect();
        write_row_major_ints(&ints, out);
    } else {
        write_row_major(&v, out);
    }
}

/// Runs a non-window op. `consts[i]` holds input `i`'s value when it is a load-time constant.
pub fn run(kind: &OpKind, ins: &[In], outs: &mut [Out], consts: &[Option<&Value>]) -> OpResult {
    let out = &mut outs[0];
    match kind {
        OpKind::Shape { start, end } => {
            let (b, e) = crate::shape::shape_range(ins[0].shape.len(), *start, *end);
            let v: Vec<i32> = ins[0].shape[b..e].iter().map(|&d| d as i32).collect();
            write_row_major_ints(&v, out);
        }
        OpKind::Pack { .. } => {
            // Row-major: each outer block takes the inputs' blocks one after another.
            let s = ins[0].shape;
            let axis = out
                .shape
                .iter()
                .zip(s)
                .position(|(a, b)| a != b)
                .unwrap_or(s.len());
            let outer: usize = s[..axis].iter().product();
            let inner: usize = s[axis..].iter().product();
            let vals: Vec<Vec<f32>> = ins.iter().map(|i| i.to_row_major_f32()).collect();
            let mut res = Vec::with_capacity(outer * inner * ins.len());
            for o in 0..outer {
                for v in &vals {
                    res.extend_from_slice(&v[o * inner..(o + 1) * inner]);
                }
            }
            write_any(&res, ins[0].dtype, out);
        }
        OpKind::Unpack { axis } => {
            let s = ins[0].shape;
            let a = norm_axis(*axis as i64, s.len())?;
            let v = ins[0].to_row_major_f32();
            let outer: usize = s[..a].iter().product();
            let inner: usize = s[a + 1..].iter().product();
            for (k, o) in outs.iter_mut().enumerate() {
                let mut res = Vec::with_capacity(outer * inner);
                for i in 0..outer {
                    let start = (i * s[a] + k) * inner;
                    res.extend_from_slice(&v[start..start + inner]);
                }
                write_any(&res, ins[0].dtype, o);
            }
            return Ok(());
        }
        OpKind::DepthSpace {
            block,
            to_space,
            crd,
        } => {
            let s = ins[0].shape;
            let b = *block;
            let v = ins[0].to_row_major_f32();
            let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
            let (view, perm): (Vec<usize>, [usize; 6]) = if *to_space {
                if *crd {
                    (vec![n, c / (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3])
                } else {
                    (vec![n, b, b, c / (b * b), h, w], [0, 3, 4, 1, 5, 2])
                }
            } else {
                (vec![n, c, h / b, b, w / b, b], [0, 3, 5, 1, 2, 4])
            };
            let src = In {
                shape: &view,
                dtype: DType::F32,
                layout: crate::tensor::Layout::RowMajor,
                data: &v,
            };
            let out_view: Vec<usize> = perm.iter().map(|&p| view[p]).collect();
            let mut res = vec![0.0f32; v.len()];
            movement::permute(
                &src,
                &perm,
                &mut Out {
                    shape: &out_view,
                    dtype: DType::F32,
                    layout: crate::tensor::Layout::RowMajor,
                    data: &mut res,
                },
            );
            write_any(&res, ins[0].dtype, out);
        }
        OpKind::Rank => write_row_major_ints(&[ins[0].shape.len() as i32], out),
        OpKind::Size => write_row_major_ints(&[ins[0].len() as i32], out),
        OpKind::Reshape { dim_type, .. }
            if *dim_type == crate::ir::MnnFormat::Nhwc
                && ins[0].shape.len() == 4
                && out.shape.len() == 4 =>
        {
            // NC4HW4 input reshaped in NHWC order (see shape inference): the element order is NHWC.
            let s = ins[0].shape;
            let is = ins[0].strides();
            let nhwc_shape = [s[0], s[2], s[3], s[1]];
            let nhwc_strides = [is[0], is[2], is[3], is[1]];
            let mut vals = Vec::with_capacity(ins[0].len());
            movement::for_each_offset(&nhwc_shape, &nhwc_strides, |o| vals.push(ins[0].get_f32(o)));
            // vals is the NHWC-order stream; the output logical [N,C,H,W] takes it in NHWC order.
            let o = out.shape;
            let mut res = vec![0.0; vals.len()];
            let mut i = 0;
            for n in 0..o[0] {
                for h in 0..o[2] {
                    for w in 0..o[3] {
                        for c in 0..o[1] {
                            res[((n * o[1] + c) * o[2] + h) * o[3] + w] = vals[i];
                            i += 1;
                        }
                    }
                }
            }
            write_row_major(&res, out);
        }
        OpKind::Reshape { .. }
        | OpKind::Flatten { .. }
        | OpKind::Squeeze { .. }
        | OpKind::Unsqueeze { .. }
        | OpKind::ExpandDims { .. }
        | OpKind::Identity => copy_logical(&ins[0], out),
        OpKind::Permute { dims } => {
            let rank = ins[0].shape.len();
            let dims: Vec<i32> = if dims.is_empty() {
                (0..rank as i32).rev().collect()
            } else {
                dims.clone()
            };
            let perm: Vec<usize> = dims
                .iter()
                .map(|&d| norm_axis(d as i64, dims.len()))
                .collect::<Result<_, _>>()?;
            movement::permute(&ins[0], &perm, out);
        }
        OpKind::Transpose => {
            let rank = ins[0].shape.len();
            let perm: Vec<usize> = const_or_input(consts, ins, 1)
                .iter()
                .map(|&d| norm_axis(d, rank))
                .collect::<Result<_, _>>()?;
            movement::permute(&ins[0], &perm, out);
        }
        OpKind::SliceTf => {
            let begin = const_or_input(consts, ins, 1);
            let step = vec![1; begin.len()];
            movement::slice(&ins[0], &begin, &step, out);
        }
        OpKind::StridedSlice {
            onnx,
            begin_mask,
            end_mask,
            ellipsis_mask,
            new_axis_mask,
            shrink_axis_mask,
        } => {
            let begin = const_or_input(consts, ins, 1);
            let end = const_or_input(consts, ins, 2);
            let third = (ins.len() >= 4).then(|| const_or_input(consts, ins, 3));
            let fourth = (ins.len() >= 5).then(|| const_or_input(consts, ins, 4));
            let (b, e, st, masks) = crate::shape::strided_slice_args(
                *onnx,
                ins[0].shape.len(),
                &begin,
                &end,
                third.as_deref(),
                fourth.as_deref(),
                (
                    *begin_mask,
                    *end_mask,
                    *ellipsis_mask,
                    *new_axis_mask,
                    *shrink_axis_mask,
                ),
            )?;
            let plan = strided_slice_plan(ins[0].shape, &b, &e, &st, masks)?;
            let b: Vec<i64> = plan.ranges.iter().map(|r| r.0).collect();
            let s: Vec<i64> = plan.ranges.iter().map(|r| r.1).collect();
            let full_shape: Vec<usize> = plan.ranges.iter().map(|r| r.2).collect();
            // Slice in full rank, then the output (shrunk dims removed) has the same element order.
            let mut tmp = vec![0.0f32; full_shape.iter().product()];
            let mut t = Out {
                shape: &full_shape,
                dtype: ins[0].dtype,
                layout: crate::tensor::Layout::RowMajor,
                data: &mut tmp,
            };
            movement::slice(&ins[0], &b, &s, &mut t);
            let n = out.data.len();
            out.data.copy_from_slice(&tmp[..n]);
        }
        OpKind::Slice {
            axis,
            points,
            sizes,
        } => {
            let s = ins[0].shape;
            let a = norm_axis(*axis as i64, s.len())?;
            let sizes_input = if ins.len() >= 2 {
                Some(Value::from_i32(
                    vec![ins[1].len()],
                    &const_or_input(consts, ins, 1)
                        .iter()
                        .map(|&v| v as i32)
                        .collect::<Vec<_>>(),
                ))
            } else {
                None
            };
            let bounds =
                crate::shape::slice_parts(s[a], points, *sizes, sizes_input.as_ref(), outs.len())?;
            for (o, (b, _)) in outs.iter_mut().zip(bounds) {
                let mut begin = vec![0i64; s.len()];
                begin[a] = b as i64;
                let step = vec![1i64; s.len()];
                movement::slice(&ins[0], &begin, &step, o);
            }
        }
        OpKind::Gather { axis } => {
            let axis = if ins.len() >= 3 {
                const_or_input(consts, ins, 2)[0]
            } else {
                *axis as i64
            };
            let a = norm_axis(axis, ins[0].shape.len())?;
            let idx = ins[1].to_row_major_i64();
            movement::gather(&ins[0], &idx, a, out)?;
        }
        OpKind::Padding { mode } => {
            let pads = const_or_input(consts, ins, 1);
            let value = if ins.len() >= 3 {
                ins[2].get_f32(0)
            } else {
                0.0
            };
            pad(&ins[0], &pads, *mode, value, out)?;
        }
        OpKind::Softmax { axis } => {
            let s = ins[0].shape;
            let a = norm_axis(*axis as i64, s.len())?;
            let v = ins[0].to_row_major_f32();
            let outer: usize = s[..a].iter().product();
            let n = s[a];
            let inner: usize = s[a + 1..].iter().product();
            let mut res = vec![0.0f32; v.len()];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |k: usize| (o * n + k) * inner + i;
                    let max = (0..n).map(|k| v[at(k)]).fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0f32;
                    for k in 0..n {
                        let e = (v[at(k)] - max).exp();
                        res[at(k)] = e;
                        sum += e;
                    }
                    let inv = 1.0 / sum;
                    for k in 0..n {
                        res[at(k)] *= inv;
                    }
                }
            }
            write_row_major(&res, out);
        }
        OpKind::LayerNorm {
            axes,
            epsilon,
            gamma,
            beta,
            rms,
        } => {
            let s = ins[0].shape;
            let count = axes.len().max(1);
            let inner: usize = s[s.len() - count..].iter().product();
            let v = ins[0].to_row_major_f32();
            let mut res = vec![0.0f32; v.len()];
            for (row, dst) in v.chunks(inner).zip(res.chunks_mut(inner)) {
                let mean = if *rms {
                    0.0
                } else {
                    row.iter().sum::<f32>() / inner as f32
                };
                let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / inner as f32;
                let inv = 1.0 / (var + epsilon).sqrt();
                for (j, (d, &x)) in dst.iter_mut().zip(row).enumerate() {
                    let g = gamma.get(j).copied().unwrap_or(1.0);
                    let b = beta.get(j).copied().unwrap_or(0.0);
                    *d = (x - mean) * inv * g + b;
                }
            }
            write_row_major(&res, out);
        }
        OpKind::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let res = matmul(&ins[0], &ins[1], *transpose_a, *transpose_b, out.shape)?;
            let mut res = res;
            if ins.len() >= 3 {
                let bias = ins[2].to_row_major_f32();
                let n = *out.shape.last().unwrap();
                for (i, v) in res.iter_mut().enumerate() {
                    *v += bias[(i % n) % bias.len().max(1)];
                }
            }
            write_row_major(&res, out);
        }
        OpKind::InnerProduct {
            out_count,
            weights,
            bias,
            ..
        } => {
            let v = ins[0].to_row_major_f32();
            let batch = ins[0].shape[0];
            let k = v.len() / batch.max(1);
            if weights.len() != out_count * k {
                return Err(format!(
                    "InnerProduct has {} weights, expected {}",
                    weights.len(),
                    out_count * k
                ));
            }
            let mut res = vec![0.0f32; batch * out_count];
            for b in 0..batch {
                for o in 0..*out_count {
                    let mut acc = 0.0f32;
                    for j in 0..k {
                        acc += v[b * k + j] * weights[o * k + j];
                    }
                    res[b * out_count + o] = acc + bias.get(o).copied().unwrap_or(0.0);
                }
            }
            write_row_major(&res, out);
        }
        OpKind::Reduction {
            op,
            dims,
            keep_dims: _,
        } => {
            let s = ins[0].shape;
            let axes = reduction_axes(s.len(), dims, consts, ins.len())?;
            let res = reduce(&ins[0], &axes, *op);
            write_row_major(&res, out);
        }
        OpKind::ArgMax { axis, min } => {
            let s = ins[0].shape;
            let a = norm_axis(*axis as i64, s.len())?;
            let v = ins[0].to_row_major_f32();
            let outer: usize = s[..a].iter().product();
            let n = s[a];
            let inner: usize = s[a + 1..].iter().product();
            let mut res = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                for i in 0..inner {
                    let mut best = 0;
                    for k in 1..n {
                        let (x, b) = (v[(o * n + k) * inner + i], v[(o * n + best) * inner + i]);
                        if (!min && x > b) || (*min && x < b) {
                            best = k;
                        }
                    }
                    res.push(best as i32);
                }
            }
            write_row_major_ints(&res, out);
        }
        OpKind::Tile => movement::tile(&ins[0], out),
        OpKind::BroadcastTo => movement::broadcast_to(&ins[0], out),
        OpKind::Fill => {
            let v = ins[1].get_f32(0);
            if out.dtype == DType::I32 {
                let n = out.data.len();
                write_row_major_ints(&vec![v as i32; n], out);
            } else {
                out.data.fill(v);
            }
        }
        OpKind::Im2Col(p) => {
            let s = ins[0].shape;
            let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
            let win = crate::shape::conv_window(p, h, w)?;
            let (oh, ow) = (win.out_h, win.out_w);
            let x = ins[0].to_row_major_f32();
            let cols = n * oh * ow;
            let mut res = vec![0.0f32; c * p.kernel_h * p.kernel_w * cols];
            for ci in 0..c {
                for ky in 0..p.kernel_h {
                    for kx in 0..p.kernel_w {
                        let row = (ci * p.kernel_h + ky) * p.kernel_w + kx;
                        for b in 0..n {
                            for oy in 0..oh {
                                let iy = (oy * p.stride_h + ky * p.dilation_h) as isize
                                    - win.pad_top as isize;
                                if iy < 0 || iy as usize >= h {
                                    continue;
                                }
                                for ox in 0..ow {
                                    let ix = (ox * p.stride_w + kx * p.dilation_w) as isize
                                        - win.pad_left as isize;
                                    if ix < 0 || ix as usize >= w {
                                        continue;
                                    }
                                    res[row * cols + (b * oh + oy) * ow + ox] =
                                        x[((b * c + ci) * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                    }
                }
            }
            write_row_major(&res, out);
        }
        OpKind::Range => {
            let start = ins[0].get_f32(0) as f64;
            let delta = ins[2].get_f32(0) as f64;
            let n = out.data.len();
            let vals: Vec<f32> = (0..n).map(|i| (start + i as f64 * delta) as f32).collect();
            write_row_major(&vals, out);
        }
        OpKind::Crop { axis, offsets } => {
            let s = ins[0].shape;
            let a = norm_axis(*axis as i64, s.len())?;
            let mut begin = vec![0i64; s.len()];
            for (d, b) in begin.iter_mut().enumerate().skip(a) {
                *b = if offsets.len() == 1 {
                    offsets[0] as i64
                } else {
                    offsets.get(d - a).copied().unwrap_or(0) as i64
                };
            }
            let step = vec![1; s.len()];
            movement::slice(&ins[0], &begin, &step, out);
        }
        OpKind::Normalize {
            across_spatial,
            channel_shared,
            eps,
            scale,
        } => {
            let s = ins[0].shape;
            if s.len() != 4 {
                return Err("Normalize needs a 4-D input".into());
            }
            let (b, c, hw) = (s[0], s[1], s[2] * s[3]);
            let v = ins[0].to_row_major_f32();
            let mut res = v.clone();
            let sc = |ch: usize| {
                if *channel_shared {
                    scale.first().copied().unwrap_or(1.0)
                } else {
                    scale.get(ch).copied().unwrap_or(1.0)
                }
            };
            for n in 0..b {
                let img = &v[n * c * hw..(n + 1) * c * hw];
                if *across_spatial {
                    let norm = (img.iter().map(|x| x * x).sum::<f32>() + eps).sqrt();
                    for ch in 0..c {
                        for p in 0..hw {
                            res[n * c * hw + ch * hw + p] = img[ch * hw + p] / norm * sc(ch);
                        }
                    }
                } else {
                    for p in 0..hw {
                        let norm =
                            ((0..c).map(|ch| img[ch * hw + p].powi(2)).sum::<f32>() + eps).sqrt();
                        for ch in 0..c {
                            res[n * c * hw + ch * hw + p] = img[ch * hw + p] / norm * sc(ch);
                        }
                    }
                }
            }
            write_row_major(&res, out);
        }
        OpKind::Cast { dtype } => {
            let v = ins[0].to_row_major_f32();
            match dtype {
                DType::I32 => {
                    let ints: Vec<i32> = v.iter().map(|&x| x as i32).collect();
                    write_row_major_ints(&ints, out);
                }
                DType::F32 => write_row_major(&v, out),
            }
        }
        other => return Err(format!("no row-major implementation for {other:?}")),
    }
    Ok(())
}

fn write_any(values: &[f32], dtype: DType, out: &mut Out) {
    if dtype == DType::I32 {
        let ints: Vec<i32> = values.iter().map(|&x| x as i32).collect();
        write_row_major_ints(&ints, out);
    } else {
        write_row_major(values, out);
    }
}

fn const_or_input(consts: &[Option<&Value>], ins: &[In], i: usize) -> Vec<i64> {
    match consts.get(i).copied().flatten() {
        Some(v) => v.to_i64(),
        None => ins[i].to_row_major_i64(),
    }
}

fn pad(input: &In, pads: &[i64], mode: PadValueMode, value: f32, out: &mut Out) -> OpResult {
    let s = input.shape;
    let rank = s.len();
    let v = input.to_row_major_f32();
    let os = out.shape.to_vec();
    let n: usize = os.iter().product();
    let mut res = vec![value; n];
    let in_strides = crate::tensor::row_major_strides(s);
    let mut idx = vec![0i64; rank];
    for (o, r) in res.iter_mut().enumerate() {
        let mut rem = o;
        for d in (0..rank).rev() {
            idx[d] = (rem % os[d]) as i64 - pads[2 * d];
            rem /= os[d];
        }
        let mut off = 0isize;
        let mut inside = true;
        for d in 0..rank {
            let n = s[d] as i64;
            let mut i = idx[d];
            if i < 0 || i >= n {
                match mode {
                    PadValueMode::Constant => {
                        inside = false;
                        break;
                    }
                    PadValueMode::Edge => i = i.clamp(0, n - 1),
                    PadValueMode::Reflect => {
                        if n == 1 {
                            i = 0;
                        } else {
                            let period = 2 * (n - 1);
                            i = i.rem_euclid(period);
                            if i >= n {
                                i = period - i;
                            }
                        }
                    }
                    PadValueMode::Symmetric => {
                        let period = 2 * n;
                        i = i.rem_euclid(period);
                        if i >= n {
                            i = period - 1 - i;
                        }
                    }
                }
            }
            off += i as isize * in_strides[d];
        }
        if inside {
            *r = v[off as usize];
        }
    }
    write_row_major(&res, out);
    Ok(())
}

fn matmul(a: &In, b: &In, ta: bool, tb: bool, out_shape: &[usize]) -> Result<Vec<f32>, String> {
    let av = a.to_row_major_f32();
    let bv = b.to_row_major_f32();
    let (ar, br) = (a.shape.len(), b.shape.len());
    let (m, n) = (
        out_shape[out_shape.len() - 2],
        out_shape[out_shape.len() - 1],
    );
    let k = if ta { a.shape[ar - 2] } else { a.shape[ar - 1] };
    let batch_shape = &out_shape[..out_shape.len() - 2];
    let batches: usize = batch_shape.iter().product();
    let a_batch = &a.shape[..ar - 2];
    let b_batch = &b.shape[..br - 2];
    let a_bs = movement::broadcast_strides(
        a_batch,
        &crate::tensor::row_major_strides(a_batch),
        batch_shape,
    );
    let b_bs = movement::broadcast_strides(
        b_batch,
        &crate::tensor::row_major_strides(b_batch),
        batch_shape,
    );
    let mut res = vec![0.0f32; batches * m * n];
    let mut bi = vec![0usize; batch_shape.len()];
    for batch in 0..batches {
        let mut rem = batch;
        for d in (0..batch_shape.len()).rev() {
            bi[d] = rem % batch_shape[d];
            rem /= batch_shape[d];
        }
        let ao: isize = bi
            .iter()
            .zip(&a_bs)
            .map(|(&i, &s)| i as isize * s)
            .sum::<isize>()
            * (m * k) as isize;
        let bo: isize = bi
            .iter()
            .zip(&b_bs)
            .map(|(&i, &s)| i as isize * s)
            .sum::<isize>()
            * (k * n) as isize;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for kk in 0..k {
                    let x = if ta {
                        av[ao as usize + kk * m + i]
                    } else {
                        av[ao as usize + i * k + kk]
                    };
                    let y = if tb {
                        bv[bo as usize + j * k + kk]
                    } else {
                        bv[bo as usize + kk * n + j]
                    };
                    acc += x * y;
                }
                res[(batch * m + i) * n + j] = acc;
            }
        }
    }
    Ok(res)
}

fn reduce(input: &In, axes: &[usize], op: ReductionType) -> Vec<f32> {
    let s = input.shape;
    // A reduction over every spatial dim of a channels-last tensor (the global mean of an int8
    // model's float head): walk the pixels in row-major order and combine whole channel rows, so
    // each output sees the same values in the same order as the trailing-axes walk below (the
    // same bits) without first transposing the tensor to row-major.
    let spatial =
        s.len() >= 3 && axes.len() == s.len() - 2 && (2..s.len()).all(|d| axes.contains(&d));
    if input.layout.for_rank(s.len()) == crate::tensor::Layout::ChannelsLast
        && input.dtype == DType::F32
        && spatial
        && input.data.len() >= input.len()
    {
        return reduce_spatial_channels_last(input, op);
    }
    let v = input.to_row_major_f32();
    let out_shape: Vec<usize> = s
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let out_n: usize = out_shape.iter().product();
    let count: usize = axes.iter().map(|&a| s[a]).product();
    let mut acc = vec![reduction_init(op); out_n];
    let combine = |a: f32, x: f32| reduction_combine(op, a, x);
    // Trailing axes (a global mean over H and W of NCHW): each output reads one contiguous
    // run, in the same order as the general walk below, so the result is the same bits.
    let trailing =
        !axes.is_empty() && (0..axes.len()).all(|k| axes.contains(&(s.len() - axes.len() + k)));
    if trailing && count > 0 {
        for (a, run) in acc.iter_mut().zip(v.chunks_exact(count)) {
            *a = run.iter().fold(*a, |a, &x| combine(a, x));
        }
        if op == ReductionType::Mean {
            let inv = 1.0 / count as f32;
            acc.iter_mut().for_each(|a| *a *= inv);
        }
        return acc;
    }
    let out_strides = crate::tensor::row_major_strides(&out_shape);
    for (i, &x) in v.iter().enumerate() {
        let mut rem = i;
        let mut o = 0isize;
        for d in (0..s.len()).rev() {
            let id = rem % s[d];
            rem /= s[d];
            if !axes.contains(&d) {
                o += id as isize * out_strides[d];
            }
        }
        let a = &mut acc[o as usize];
        *a = combine(*a, x);
    }
    if op == ReductionType::Mean {
        let inv = 1.0 / count.max(1) as f32;
        acc.iter_mut().for_each(|a| *a *= inv);
    }
    acc
}

/// The starting value of a reduction.
fn reduction_init(op: ReductionType) -> f32 {
    match op {
        ReductionType::Max => f32::NEG_INFINITY,
        ReductionType::Min => f32::INFINITY,
        ReductionType::Prod | ReductionType::All => 1.0,
        _ => 0.0,
    }
}

/// One step of a reduction: the running value `a` combined with the next value `x`.
#[inline(always)]
fn reduction_combine(op: ReductionType, a: f32, x: f32) -> f32 {
    match op {
        ReductionType::Sum | ReductionType::Mean => a + x,
        ReductionType::AbsSum => a + x.abs(),
        ReductionType::SumSquares => a + x * x,
        ReductionType::Max => a.max(x),
        ReductionType::Min => a.min(x),
        ReductionType::Prod => a * x,
        ReductionType::Any => ((a != 0.0) || (x != 0.0)) as i32 as f32,
        ReductionType::All => ((a != 0.0) && (x != 0.0)) as i32 as f32,
    }
}

/// [`reduce`] over all spatial dims of a dense channels-last `[N, D1, .., C]` tensor: per image,
/// the pixels in row-major order, each combined into the `C` running values (the loop over the
/// channels vectorises; `op` is the same for all of them).
fn reduce_spatial_channels_last(input: &In, op: ReductionType) -> Vec<f32> {
    let s = input.shape;
    let (n, c) = (s[0], s[1]);
    let pixels: usize = s[2..].iter().product();
    let mut acc = vec![reduction_init(op); n * c];
    // Every pixel's channels into the running values, with the operation fixed at compile time
    // so the loop over the channels vectorises (a `match` per value does not get hoisted).
    fn fold_pixels(acc: &mut [f32], data: &[f32], c: usize, n: usize, f: impl Fn(f32, f32) -> f32) {
        let pixels_len = data.len() / n.max(1);
        for (image, out) in acc.chunks_exact_mut(c.max(1)).enumerate().take(n) {
            let image_data = &data[image * pixels_len..(image + 1) * pixels_len];
            for row in image_data.chunks_exact(c.max(1)) {
                for (a, &x) in out.iter_mut().zip(row) {
                    *a = f(*a, x);
                }
            }
        }
    }
    let data = &input.data[..n * pixels * c];
    macro_rules! fold_with {
        ($($op:ident),*) => {
            match op {
                $(ReductionType::$op => {
                    fold_pixels(&mut acc, data, c, n, |a, x| {
                        reduction_combine(ReductionType::$op, a, x)
                    })
                })*
            }
        };
    }
    fold_with!(Sum, Mean, AbsSum, SumSquares, Max, Min, Prod, Any, All);
    if op == ReductionType::Mean && pixels > 0 {
        let inv = 1.0 / pixels as f32;
        acc.iter_mut().for_each(|a| *a *= inv);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Layout;

    /// The channels-last spatial reduction gives the row-major walk's bits for every operation.
    #[test]
    fn spatial_reduction_of_channels_last_equals_the_row_major_walk() {
        let shape = [2usize, 5, 3, 7];
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        // Logical values with varied magnitudes and signs, so float order matters.
        let value =
            |i: usize| ((i * 7919) % 1013) as f32 * 0.37 - 150.0 + 1.0 / (1 + i % 13) as f32;
        let row_major: Vec<f32> = (0..n * c * h * w).map(value).collect();
        let mut channels_last = vec![0.0f32; row_major.len()];
        for (i, &x) in row_major.iter().enumerate() {
            let (b, ch, p) = (i / (c * h * w), (i / (h * w)) % c, i % (h * w));
            channels_last[(b * h * w + p) * c + ch] = x;
        }
        for op in [
            ReductionType::Sum,
            ReductionType::Mean,
            ReductionType::AbsSum,
            ReductionType::SumSquares,
            ReductionType::Max,
            ReductionType::Min,
            ReductionType::Prod,
            ReductionType::Any,
            ReductionType::All,
        ] {
            let view = |data, layout| In {
                shape: &shape,
                dtype: DType::F32,
                layout,
                data,
            };
            let want = reduce(&view(&row_major, Layout::RowMajor), &[2, 3], op);
            let got = reduce(&view(&channels_last, Layout::ChannelsLast), &[2, 3], op);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{op:?}");
            // The fast path itself (not the general walk) gives those bits.
            let direct =
                reduce_spatial_channels_last(&view(&channels_last, Layout::ChannelsLast), op);
            assert_eq!(bits(&direct), bits(&want), "{op:?} channels-last walk");
        }
    }
}
