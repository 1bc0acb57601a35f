//! Static shape inference with MNN's rules. Runs once at load; shape-like inputs (Reshape targets,
//! slice bounds, scales...) must be constants by then (constant folding runs alongside).

use crate::ir::{ConvKind, ConvParams, MnnFormat, Node, OpKind, PadMode, PoolParams};
use crate::tensor::{DType, Value};

/// What the engine knows about a tensor after shape inference.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub format: MnnFormat,
}

pub type ShapeResult<T> = Result<T, String>;

/// Normalizes a possibly negative axis for a tensor of `rank` dims.
pub fn norm_axis(axis: i64, rank: usize) -> ShapeResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> ShapeResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!("shapes {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(out)
}

/// Resolved 2-D window geometry of a convolution/pooling: output size and top/left padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub out_h: usize,
    pub out_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

fn effective(kernel: usize, dilation: usize) -> usize {
    dilation * (kernel - 1) + 1
}

/// Convolution output size and padding (ShapeConvolution / ConvolutionCommon rules).
pub fn conv_window(p: &ConvParams, in_h: usize, in_w: usize) -> ShapeResult<Window> {
    let kh = effective(p.kernel_h, p.dilation_h) as i64;
    let kw = effective(p.kernel_w, p.dilation_w) as i64;
    let (ih, iw) = (in_h as i64, in_w as i64);
    let (sh, sw) = (p.stride_h as i64, p.stride_w as i64);
    let (out_h, out_w, pad_top, pad_left) = match p.pad_mode {
        PadMode::Same => {
            let oh = (ih + sh - 1) / sh;
            let ow = (iw + sw - 1) / sw;
            let th = ((oh - 1) * sh + kh - ih).max(0);
            let tw = ((ow - 1) * sw + kw - iw).max(0);
            (oh, ow, th / 2, tw / 2)
        }
        PadMode::Valid => ((ih - kh + sh) / sh, (iw - kw + sw) / sw, 0, 0),
        PadMode::Caffe => match p.pads {
            Some([t, l, b, r]) => (
                (ih + (t + b) as i64 - kh) / sh + 1,
                (iw + (l + r) as i64 - kw) / sw + 1,
                t as i64,
                l as i64,
            ),
            None => (
                (ih + 2 * p.pad_y as i64 - kh) / sh + 1,
                (iw + 2 * p.pad_x as i64 - kw) / sw + 1,
                p.pad_y as i64,
                p.pad_x as i64,
            ),
        },
    };
    if out_h <= 0 || out_w <= 0 {
        return Err(format!(
            "convolution output would be empty ({out_h}x{out_w}) for input {in_h}x{in_w}"
        ));
    }
    Ok(Window {
        out_h: out_h as usize,
        out_w: out_w as usize,
        pad_top: pad_top as usize,
        pad_left: pad_left as usize,
    })
}

/// Deconvolution output size; `pad_top/left` are the pads cropped from the full output.
/// The output size a deconvolution's output-shape input gives (its last input; MNN reads
/// elements 1 and 2 as height and width).
pub fn deconv_output_size(
    p: &ConvParams,
    consts: &[Option<&Value>],
    inputs: usize,
) -> ShapeResult<[usize; 2]> {
    if !p.has_output_shape || inputs < 2 {
        return Err("deconvolution without its output shape input".into());
    }
    let dims = need_const(consts, inputs - 1, "output shape")?.to_i64();
    if dims.len() < 3 || dims[1] <= 0 || dims[2] <= 0 {
        return Err(format!(
            "deconvolution output shape {dims:?} has no height and width"
        ));
    }
    Ok([dims[1] as usize, dims[2] as usize])
}

pub fn deconv_window(p: &ConvParams, in_h: usize, in_w: usize) -> ShapeResult<Window> {
    if let Some([out_h, out_w]) = p.output_size {
        // A given output size (MNN `hasOutputShape`): SAME pads by half of what the full
        // output exceeds it by (kernel without dilation, as MNN), other modes keep their pads.
        let (top, left) = if p.pad_mode == PadMode::Same {
            let full_h = (in_h as i64 - 1) * p.stride_h as i64 + p.kernel_h as i64;
            let full_w = (in_w as i64 - 1) * p.stride_w as i64 + p.kernel_w as i64;
            ((full_h - out_h as i64) / 2, (full_w - out_w as i64) / 2)
        } else {
            match p.pads {
                Some([t, l, _, _]) => (t as i64, l as i64),
                None => (p.pad_y as i64, p.pad_x as i64),
            }
        };
        if top < 0 || left < 0 {
            return Err(format!(
                "deconvolution output {out_h}x{out_w} is larger than the full output"
            ));
        }
        return Ok(Window {
            out_h,
            out_w,
            pad_top: top as usize,
            pad_left: left as usize,
        });
    }
    let kh = effective(p.kernel_h, p.dilation_h) as i64;
    let kw = effective(p.kernel_w, p.dilation_w) as i64;
    let (ih, iw) = (in_h as i64, in_w as i64);
    let (sh, sw) = (p.stride_h as i64, p.stride_w as i64);
    let (out_h, out_w, top, left) = match p.pad_mode {
        PadMode::Same => {
            let oh = ih * sh;
            let ow = iw * sw;
            let full_h = (ih - 1) * sh + kh;
            let full_w = (iw - 1) * sw + kw;
            (
                oh,
                ow,
                ((full_h - oh).max(0)) / 2,
                ((full_w - ow).max(0)) / 2,
            )
        }
        _ => {
            let (t, l, b, r) = match p.pads {
                Some([t, l, b, r]) => (t as i64, l as i64, b as i64, r as i64),
                None => (
                    p.pad_y as i64,
                    p.pad_x as i64,
                    p.pad_y as i64,
                    p.pad_x as i64,
                ),
            };
            let (t, l, b, r) = if p.pad_mode == PadMode::Valid {
                (0, 0, 0, 0)
            } else {
                (t, l, b, r)
            };
            (
                (ih - 1) * sh + kh - t - b + p.out_pads[0] as i64,
                (iw - 1) * sw + kw - l - r + p.out_pads[1] as i64,
                t,
                l,
            )
        }
    };
    if out_h <= 0 || out_w <= 0 {
        return Err(format!(
            "deconvolution output would be empty ({out_h}x{out_w})"
        ));
    }
    Ok(Window {
        out_h: out_h as usize,
        out_w: out_w as usize,
        pad_top: top as usize,
        pad_left: left as usize,
    })
}

/// Pooling window as MNN's CPU pooling resolves it: output size, padding, kernel and strides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolWindow {
    pub out_h: usize,
    pub out_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    /// Average pooling divides by the window clipped to the padded input instead of the valid part.
    pub count_include_pad: bool,
}

/// Height and width a pooling window slides over: a 3-D `[N, C, L]` input is an `L x 1` image.
pub fn pool_spatial(shape: &[usize]) -> (usize, usize) {
    (shape[2], shape.get(3).copied().unwrap_or(1))
}

/// The two pooling steps of a 3-D pool on `[N, C, D, H, W]`: over (H, W) of each depth slice,
/// then over D of the `[N, C, D, OH*OW]` result.
pub fn pool3d_windows(
    hw: &PoolParams,
    depth: &PoolParams,
    shape: &[usize],
) -> ShapeResult<(PoolWindow, PoolWindow)> {
    let first = pool_window(hw, shape[3], shape[4])?;
    let second = pool_window(depth, shape[2], first.out_h * first.out_w)?;
    Ok((first, second))
}

pub fn pool_window(p: &PoolParams, in_h: usize, in_w: usize) -> ShapeResult<PoolWindow> {
    if p.global {
        return Ok(PoolWindow {
            out_h: 1,
            out_w: 1,
            kernel_h: in_h,
            kernel_w: in_w,
            stride_h: in_h.max(1),
            stride_w: in_w.max(1),
            pad_top: 0,
            pad_left: 0,
            count_include_pad: false,
        });
    }
    let (mut h, mut w) = (in_h as i64, in_w as i64);
    match p.pads {
        Some([t, l, b, r]) => {
            h += (t + b) as i64;
            w += (l + r) as i64;
        }
        None => {
            h += 2 * p.pad_y as i64;
            w += 2 * p.pad_x as i64;
        }
    }
    let kh = (p.kernel_h as i64).min(h);
    let kw = (p.kernel_w as i64).min(w);
    let (sh, sw) = (p.stride_h.max(1) as i64, p.stride_w.max(1) as i64);
    let (out_h, out_w) = match p.pad_mode {
        PadMode::Same => ((h + sh - 1) / sh, (w + sw - 1) / sw),
        PadMode::Valid => ((h - kh + sh) / sh, (w - kw + sw) / sw),
        PadMode::Caffe => {
            if p.ceil_mode {
                ((h - kh + sh - 1) / sh + 1, (w - kw + sw - 1) / sw + 1)
            } else {
                ((h - kh) / sh + 1, (w - kw) / sw + 1)
            }
        }
    };
    if out_h <= 0 || out_w <= 0 {
        return Err(format!(
            "pooling output would be empty for input {in_h}x{in_w}"
        ));
    }
    let (mut pad_top, mut pad_left) = (p.pad_y as i64, p.pad_x as i64);
    let mut pad_mode = p.pad_mode;
    match p.pad_mode {
        PadMode::Same => {
            pad_left = (((out_w - 1) * sw + kw - in_w as i64).max(0)) / 2;
            pad_top = (((out_h - 1) * sh + kh - in_h as i64).max(0)) / 2;
        }
        PadMode::Valid => {
            pad_left = 0;
            pad_top = 0;
        }
        PadMode::Caffe => {
            if let Some([t, l, _, _]) = p.pads {
                pad_top = t as i64;
                pad_left = l as i64;
                // MNN treats explicit pads as VALID-style padding for the average's count.
                pad_mode = PadMode::Valid;
            }
        }
    }
    let count_include_pad = match p.count_type {
        1 => true,
        2 => false,
        _ => pad_mode == PadMode::Caffe,
    };
    Ok(PoolWindow {
        out_h: out_h as usize,
        out_w: out_w as usize,
        kernel_h: kh as usize,
        kernel_w: kw as usize,
        stride_h: sh as usize,
        stride_w: sw as usize,
        pad_top: pad_top as usize,
        pad_left: pad_left as usize,
        count_include_pad,
    })
}

/// Ends the message of a shape that depends on a value not known at load (the engine then
/// prepares the model per run, see [`crate::Engine::is_value_dependent`]).
pub const NOT_CONSTANT: &str = "must be a constant known at load time";

fn need_const<'a>(consts: &[Option<&'a Value>], i: usize, what: &str) -> ShapeResult<&'a Value> {
    consts
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} ({what}) {NOT_CONSTANT}"))
}

fn expect_inputs(inputs: &[&TensorInfo], n: usize) -> ShapeResult<()> {
    if inputs.len() < n {
        return Err(format!("expects at least {n} inputs, has {}", inputs.len()));
    }
    Ok(())
}

/// Output shape of a Reshape given target dims (MNN rules: -1 inferred, 0 copies the input dim).
pub fn reshape_target(input: &[usize], dims: &[i64]) -> ShapeResult<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(dims.len());
    let mut infer = None;
    for (i, &d) in dims.iter().enumerate() {
        if d == -1 {
            infer = Some(i);
            out.push(1);
        } else if d == 0 {
            out.push(*input.get(i).ok_or("reshape 0 refers past the input rank")?);
        } else if d < 0 {
            return Err(format!("invalid reshape dim {d}"));
        } else {
            out.push(d as usize);
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        out[i] = total.checked_div(known).unwrap_or(0);
    }
    if out.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {input:?} to {dims:?}"));
    }
    Ok(out)
}

/// Begin/end/step per dim of a StridedSlice after MNN/TF mask handling.
pub struct StridedPlan {
    /// One entry per input dim: (begin, step, count).
    pub ranges: Vec<(i64, i64, usize)>,
    pub out_shape: Vec<usize>,
}

pub fn strided_slice_plan(
    input: &[usize],
    begin: &[i64],
    end: &[i64],
    strides: &[i64],
    masks: (i32, i32, i32, i32, i32),
) -> ShapeResult<StridedPlan> {
    let (begin_mask, end_mask, ellipsis_mask, new_axis_mask, shrink_mask) = masks;
    if ellipsis_mask != 0 || new_axis_mask != 0 {
        return Err("StridedSlice with ellipsis or new-axis masks is not supported".into());
    }
    let mut ranges = Vec::new();
    let mut out_shape = Vec::new();
    for (d, &size) in input.iter().enumerate() {
        let n = size as i64;
        if d >= begin.len() {
            ranges.push((0, 1, size));
            out_shape.push(size);
            continue;
        }
        let step = *strides.get(d).unwrap_or(&1);
        if step == 0 {
            return Err("StridedSlice step 0".into());
        }
        let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let mut b = begin[d];
        let mut e = end[d];
        if shrink_mask & (1 << d) != 0 {
            let b = if b < 0 { b + n } else { b };
            if b < 0 || b >= n {
                return Err("StridedSlice shrink index out of range".into());
            }
            ranges.push((b, 1, 1));
            continue;
        }
        if b < 0 {
            b += n;
        }
        if e < 0 {
            e += n;
        }
        let (b, e) = if step > 0 {
            let b = if begin_mask & (1 << d) != 0 {
                0
            } else {
                clamp(b, 0, n)
            };
            let e = if end_mask & (1 << d) != 0 {
                n
            } else {
                clamp(e, 0, n)
            };
            (b, e)
        } else {
            let b = if begin_mask & (1 << d) != 0 {
                n - 1
            } else {
                clamp(b, -1, n - 1)
            };
            let e = if end_mask & (1 << d) != 0 {
                -1
            } else {
                clamp(e, -1, n - 1)
            };
            (b, e)
        };
        let count = if step > 0 {
            ((e - b + step - 1) / step).max(0)
        } else {
            ((b - e + (-step) - 1) / (-step)).max(0)
        } as usize;
        ranges.push((b, step, count));
        out_shape.push(count);
    }
    Ok(StridedPlan { ranges, out_shape })
}

/// Full-rank StridedSlice arguments from the op's constant inputs. ONNX-style inputs
/// (`onnx`) are (starts, ends, axes?, steps?) over some axes; the others are full-rank
/// (begin, end, strides?) with masks.
#[allow(clippy::type_complexity)]
pub fn strided_slice_args(
    onnx: bool,
    rank: usize,
    begin: &[i64],
    end: &[i64],
    third: Option<&[i64]>,
    fourth: Option<&[i64]>,
    masks: (i32, i32, i32, i32, i32),
) -> ShapeResult<(Vec<i64>, Vec<i64>, Vec<i64>, (i32, i32, i32, i32, i32))> {
    if !onnx {
        let strides = third
            .map(|s| s.to_vec())
            .unwrap_or_else(|| vec![1; begin.len()]);
        return Ok((begin.to_vec(), end.to_vec(), strides, masks));
    }
    let axes: Vec<usize> = match third {
        Some(a) => a
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<ShapeResult<_>>()?,
        None => (0..begin.len()).collect(),
    };
    let steps = fourth
        .map(|s| s.to_vec())
        .unwrap_or_else(|| vec![1; axes.len()]);
    if begin.len() != axes.len() || end.len() != axes.len() || steps.len() != axes.len() {
        return Err("Slice starts/ends/axes/steps lengths differ".into());
    }
    let (mut b, mut e, mut st) = (vec![0i64; rank], vec![0i64; rank], vec![1i64; rank]);
    let all = (1i32 << rank) - 1;
    let (mut bm, mut em) = (all, all);
    for (i, &a) in axes.iter().enumerate() {
        b[a] = begin[i];
        e[a] = end[i].clamp(i32::MIN as i64 + 1, i32::MAX as i64);
        st[a] = steps[i];
        bm &= !(1 << a);
        em &= !(1 << a);
    }
    Ok((b, e, st, (bm, em, 0, 0, 0)))
}

/// Part bounds of a Slice op: from split positions, from part sizes, or equal parts.
pub fn slice_parts(
    dim: usize,
    points: &[i32],
    sizes: bool,
    sizes_input: Option<&Value>,
    outputs: usize,
) -> ShapeResult<Vec<(usize, usize)>> {
    let part_sizes: Option<Vec<i64>> = match sizes_input {
        Some(v) => Some(v.to_i64()),
        None if sizes && !points.is_empty() => Some(points.iter().map(|&p| p as i64).collect()),
        None => None,
    };
    match part_sizes {
        Some(sz) => {
            let mut bounds = Vec::new();
            let mut at = 0usize;
            for (i, &n) in sz.iter().enumerate().take(outputs) {
                let n = if n < 0 || (i + 1 == sz.len() && n == -1) {
                    dim.saturating_sub(at)
                } else {
                    n as usize
                };
                if at + n > dim {
                    return Err(format!("split sizes {sz:?} exceed dim {dim}"));
                }
                bounds.push((at, at + n));
                at += n;
            }
            Ok(bounds)
        }
        None => slice_bounds(dim, points, outputs),
    }
}

/// Output size and (scale, offset) per spatial axis of an Interp, with MNN's coordinate rules:
/// source coordinate = dst * scale + offset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InterpPlan {
    pub out_h: usize,
    pub out_w: usize,
    pub height_scale: f32,
    pub width_scale: f32,
    pub height_offset: f32,
    pub width_offset: f32,
}

pub fn interp_plan(
    p: &crate::ir::InterpParams,
    in_shape: &[usize],
    size_input: Option<&Value>,
) -> ShapeResult<InterpPlan> {
    if in_shape.len() != 4 {
        return Err(format!("Interp supports 4-D inputs, got {in_shape:?}"));
    }
    let (ih, iw) = (in_shape[2], in_shape[3]);
    let mut given_scale: Option<(f32, f32)> = None;
    let (oh, ow) = if let Some(v) = size_input {
        let n = v.shape.iter().product::<usize>();
        match (v.dtype, n) {
            (DType::F32, 4) => {
                let s = v.to_f32();
                given_scale = Some((s[2], s[3]));
                ((s[2] * ih as f32) as usize, (s[3] * iw as f32) as usize)
            }
            (DType::I32, 4) => {
                let s = v.to_i64();
                (s[2] as usize, s[3] as usize)
            }
            (DType::F32, 2) => {
                let s = v.to_f32();
                (s[0] as usize, s[1] as usize)
            }
            (DType::I32, 2) => {
                let s = v.to_i64();
                (s[0] as usize, s[1] as usize)
            }
            _ => {
                return Err(format!(
                    "Interp size input of shape {:?} not understood",
                    v.shape
                ))
            }
        }
    } else if p.output_width > 0 && p.output_height > 0 {
        (p.output_height, p.output_width)
    } else {
        (
            (ih as f32 * p.height_scale) as usize,
            (iw as f32 * p.width_scale) as usize,
        )
    };
    if oh == 0 || ow == 0 {
        return Err("Interp output would be empty".into());
    }
    // Scales: from a float scale input (1/scale), else from the sizes per the mode.
    let compute = given_scale.is_none();
    let (mut hs, mut ws) = match given_scale {
        Some((sh, sw)) => (1.0 / sh, 1.0 / sw),
        None => (0.0, 0.0),
    };
    let ratio = |i: usize, o: usize| i as f32 / o as f32;
    let corner = |i: usize, o: usize| {
        if o == 1 {
            0.0
        } else {
            (i as f32 - 1.0) / (o as f32 - 1.0)
        }
    };
    let (mut ho, mut wo) = (0.0f32, 0.0f32);
    match p.ctm {
        0 => {
            if p.half_pixel_centers && p.resize_type != 1 {
                if compute {
                    hs = ratio(ih, oh);
                    ws = ratio(iw, ow);
                }
                ho = 0.5 * hs - 0.5;
                wo = 0.5 * ws - 0.5;
            } else if p.align_corners {
                if compute {
                    hs = corner(ih, oh);
                    ws = corner(iw, ow);
                }
            } else if compute {
                hs = ratio(ih, oh);
                ws = ratio(iw, ow);
            }
        }
        1 => {
            hs = corner(ih, oh);
            ws = corner(iw, ow);
        }
        2 => {
            if compute {
                hs = ratio(ih, oh);
                ws = ratio(iw, ow);
            }
            ho = 0.5 * hs - 0.5;
            wo = 0.5 * ws - 0.5;
        }
        3 => {
            if oh > 1 {
                if compute {
                    hs = ratio(ih, oh);
                }
                ho = 0.5 * hs - 0.5;
            } else if compute {
                hs = 0.0;
            }
            if ow > 1 {
                if compute {
                    ws = ratio(iw, ow);
                }
                wo = 0.5 * ws - 0.5;
            } else if compute {
                ws = 0.0;
            }
        }
        4 => {
            if compute {
                hs = ratio(ih, oh);
                ws = ratio(iw, ow);
            }
        }
        5 => {
            if compute {
                hs = ratio(ih, oh);
                ws = ratio(iw, ow);
            }
            ho = 0.5 * hs;
            wo = 0.5 * ws;
        }
        other => return Err(format!("Interp coordinate mode {other} is not supported")),
    }
    Ok(InterpPlan {
        out_h: oh,
        out_w: ow,
        height_scale: hs,
        width_scale: ws,
        height_offset: ho,
        width_offset: wo,
    })
}

/// Infers the outputs of `node` from its inputs' infos and whatever inputs are constants.
pub fn infer(
    node: &Node,
    inputs: &[&TensorInfo],
    consts: &[Option<&Value>],
) -> ShapeResult<Vec<TensorInfo>> {
    let first_format = inputs.first().map(|i| i.format).unwrap_or(MnnFormat::Nchw);
    let same = |shape: Vec<usize>, dtype: DType| -> Vec<TensorInfo> {
        vec![TensorInfo {
            shape,
            dtype,
            format: first_format,
        }]
    };
    let int_out = |shape: Vec<usize>| -> Vec<TensorInfo> {
        vec![TensorInfo {
            shape,
            dtype: DType::I32,
            format: first_format,
        }]
    };
    Ok(match &node.kind {
        OpKind::Input {
            dims,
            dtype,
            format,
        } => vec![TensorInfo {
            shape: dims
                .iter()
                .map(|&d| if d <= 0 { 1 } else { d as usize })
                .collect(),
            dtype: *dtype,
            format: *format,
        }],
        OpKind::Const { value, format } => vec![TensorInfo {
            shape: value.shape.clone(),
            dtype: value.dtype,
            format: *format,
        }],
        OpKind::Conv(p) => {
            expect_inputs(inputs, 1)?;
            let x = inputs[0];
            if x.shape.len() != 4 {
                return Err(format!("convolution input must be 4-D, got {:?}", x.shape));
            }
            if x.format == MnnFormat::Nhwc {
                return Err("convolution on an NHWC-format tensor is not supported".into());
            }
            let expected_in = p.in_channels;
            if expected_in != 0 && x.shape[1] != expected_in {
                return Err(format!(
                    "input has {} channels, the convolution expects {expected_in}",
                    x.shape[1]
                ));
            }
            let win = if p.kind.is_deconvolution() {
                let mut p = p.clone();
                if p.has_output_shape {
                    p.output_size = Some(deconv_output_size(&p, consts, inputs.len())?);
                }
                deconv_window(&p, x.shape[2], x.shape[3])?
            } else {
                conv_window(p, x.shape[2], x.shape[3])?
            };
            vec![TensorInfo {
                shape: vec![x.shape[0], p.out_channels, win.out_h, win.out_w],
                dtype: DType::F32,
                format: MnnFormat::Nc4hw4,
            }]
        }
        OpKind::Pool(p) => {
            expect_inputs(inputs, 1)?;
            let x = inputs[0];
            if !(3..=4).contains(&x.shape.len()) || x.format == MnnFormat::Nhwc {
                return Err(format!(
                    "pooling needs a 3-D or 4-D NCHW input, got {:?}",
                    x.shape
                ));
            }
            // A 3-D input [N, C, L] pools along L as an [N, C, L, 1] image.
            let (in_h, in_w) = pool_spatial(&x.shape);
            let win = pool_window(p, in_h, in_w)?;
            let mut shape = vec![x.shape[0], x.shape[1], win.out_h, win.out_w];
            if x.shape.len() == 3 {
                if win.out_w != 1 {
                    return Err("1-D pooling with a window across the missing width".into());
                }
                shape.pop();
            }
            vec![TensorInfo {
                shape,
                dtype: x.dtype,
                format: x.format,
            }]
        }
        OpKind::Pool3D { hw, depth } => {
            expect_inputs(inputs, 1)?;
            let x = inputs[0];
            if hw.global && x.shape.len() == 4 && x.format != MnnFormat::Nhwc {
                // MNN pools a 4-D input globally as 2-D.
                return Ok(vec![TensorInfo {
                    shape: vec![x.shape[0], x.shape[1], 1, 1],
                    dtype: x.dtype,
                    format: x.format,
                }]);
            }
            if x.shape.len() != 5 || x.format == MnnFormat::Nhwc {
                return Err(format!(
                    "3-D pooling needs a 5-D NCDHW input, got {:?}",
                    x.shape
                ));
            }
            let (first, second) = pool3d_windows(hw, depth, &x.shape)?;
            vec![TensorInfo {
                shape: vec![
                    x.shape[0],
                    x.shape[1],
                    second.out_h,
                    first.out_h,
                    first.out_w,
                ],
                dtype: x.dtype,
                format: x.format,
            }]
        }
        OpKind::Im2Col(p) => {
            expect_inputs(inputs, 1)?;
            let x = inputs[0];
            if x.shape.len() != 4 || x.format == MnnFormat::Nhwc {
                return Err(format!("Im2Col needs a 4-D NCHW input, got {:?}", x.shape));
            }
            let win = conv_window(p, x.shape[2], x.shape[3])?;
            vec![TensorInfo {
                shape: vec![
                    x.shape[1] * p.kernel_h * p.kernel_w,
                    x.shape[0] * win.out_h * win.out_w,
                ],
                dtype: x.dtype,
                format: MnnFormat::Nchw,
            }]
        }
        OpKind::Binary { op, .. } => {
            expect_inputs(inputs, 2)?;
            let shape = broadcast_shapes(&inputs[0].shape, &inputs[1].shape)?;
            // MNN's output format follows the input whose shape matches the output.
            let format = if inputs[0].shape == shape {
                inputs[0].format
            } else {
                inputs[1].format
            };
            let dtype = if op.is_comparison() {
                DType::I32
            } else {
                inputs[0].dtype
            };
            vec![TensorInfo {
                shape,
                dtype,
                format,
            }]
        }
        OpKind::Eltwise { .. } => {
            expect_inputs(inputs, 1)?;
            let mut shape = inputs[0].shape.clone();
            for i in &inputs[1..] {
                shape = broadcast_shapes(&shape, &i.shape)?;
            }
            same(shape, inputs[0].dtype)
        }
        OpKind::Select => {
            expect_inputs(inputs, 3)?;
            let s = broadcast_shapes(&inputs[0].shape, &inputs[1].shape)?;
            let s = broadcast_shapes(&s, &inputs[2].shape)?;
            vec![TensorInfo {
                shape: s,
                dtype: inputs[1].dtype,
                format: inputs[1].format,
            }]
        }
        OpKind::Unary(_)
        | OpKind::Relu { .. }
        | OpKind::Relu6 { .. }
        | OpKind::PRelu { .. }
        | OpKind::Elu { .. }
        | OpKind::Selu { .. }
        | OpKind::Scale { .. }
        | OpKind::Softmax { .. }
        | OpKind::LayerNorm { .. }
        | OpKind::Normalize { .. }
        | OpKind::Identity => {
            expect_inputs(inputs, 1)?;
            same(inputs[0].shape.clone(), inputs[0].dtype)
        }
        OpKind::Cast { dtype } => {
            expect_inputs(inputs, 1)?;
            same(inputs[0].shape.clone(), *dtype)
        }
        OpKind::Concat { axis } => {
            expect_inputs(inputs, 1)?;
            let rank = inputs[0].shape.len();
            let a = norm_axis(*axis as i64, rank)?;
            let mut shape = inputs[0].shape.clone();
            shape[a] = 0;
            for i in inputs {
                if i.shape.len() != rank
                    || i.shape
                        .iter()
                        .enumerate()
                        .any(|(d, &s)| d != a && s != inputs[0].shape[d])
                {
                    return Err(format!(
                        "cannot concatenate {:?} with {:?} on axis {a}",
                        inputs[0].shape, i.shape
                    ));
                }
                shape[a] += i.shape[a];
            }
            same(shape, inputs[0].dtype)
        }
        OpKind::Reshape { dims, dim_type } => {
            expect_inputs(inputs, 1)?;
            let target: Vec<i64> = if inputs.len() >= 2 {
                need_const(consts, 1, "shape")?.to_i64()
            } else {
                dims.iter().map(|&d| d as i64).collect()
            };
            let x = inputs[0];
            if x.format == MnnFormat::Nc4hw4 && *dim_type == MnnFormat::Nhwc {
                if target.len() != 4 || x.shape.len() != 4 {
                    return Err("NHWC-order reshape of a non 4-D tensor is not supported".into());
                }
                let nhwc_in = [x.shape[0], x.shape[2], x.shape[3], x.shape[1]];
                let o = reshape_target(&nhwc_in, &target)?;
                same(vec![o[0], o[3], o[1], o[2]], x.dtype)
            } else {
                same(reshape_target(&x.shape, &target)?, x.dtype)
            }
        }
        OpKind::Flatten { axis, end_axis } => {
            expect_inputs(inputs, 1)?;
            let s = &inputs[0].shape;
            let rank = s.len();
            let a = if *axis < 0 {
                *axis + rank as i32
            } else {
                *axis
            } as usize;
            let e = if *end_axis < 0 {
                *end_axis + rank as i32
            } else {
                *end_axis
            } as usize;
            if a > rank {
                return Err(format!("flatten axis {axis} out of range"));
            }
            let shape = if e == 0 {
                vec![s[..a].iter().product(), s[a..].iter().product()]
            } else {
                let e = e.min(rank - 1);
                let mut v = s[..a].to_vec();
                v.push(s[a..=e].iter().product());
                v.extend_from_slice(&s[e + 1..]);
                v
            };
            same(shape, inputs[0].dtype)
        }
        OpKind::Squeeze { dims } => {
            expect_inputs(inputs, 1)?;
            let s = &inputs[0].shape;
            let axes: Vec<i64> = if inputs.len() >= 2 {
                need_const(consts, 1, "axes")?.to_i64()
            } else {
                dims.iter().map(|&d| d as i64).collect()
            };
            let axes: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, s.len()))
                .collect::<ShapeResult<_>>()?;
            let shape = s
                .iter()
                .enumerate()
                .filter(|(i, &d)| {
                    if axes.is_empty() {
                        d != 1
                    } else {
                        !axes.contains(i)
                    }
                })
                .map(|(_, &d)| d)
                .collect();
            same(shape, inputs[0].dtype)
        }
        OpKind::Unsqueeze { dims } => {
            expect_inputs(inputs, 1)?;
            let axes: Vec<i64> = if inputs.len() >= 2 {
                need_const(consts, 1, "axes")?.to_i64()
            } else {
                dims.iter().map(|&d| d as i64).collect()
            };
            let out_rank = inputs[0].shape.len() + axes.len();
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, out_rank))
                .collect::<ShapeResult<_>>()?;
            axes.sort_unstable();
            let mut shape = inputs[0].shape.clone();
            for a in axes {
                shape.insert(a.min(shape.len()), 1);
            }
            same(shape, inputs[0].dtype)
        }
        OpKind::ExpandDims { axis } => {
            expect_inputs(inputs, 1)?;
            let axis = if inputs.len() >= 2 {
                need_const(consts, 1, "axis")?.to_i64()[0]
            } else {
                *axis as i64
            };
            let mut shape = inputs[0].shape.clone();
            let a = norm_axis(axis, shape.len() + 1)?;
            shape.insert(a, 1);
            same(shape, inputs[0].dtype)
        }
        OpKind::Permute { dims } => {
            expect_inputs(inputs, 1)?;
            let rank = inputs[0].shape.len();
            // An empty permutation reverses the dims (ONNX Transpose default).
            let perm: Vec<i64> = if dims.is_empty() {
                (0..rank as i64).rev().collect()
            } else {
                dims.iter().map(|&d| d as i64).collect()
            };
            same(permute_shape(&inputs[0].shape, &perm)?, inputs[0].dtype)
        }
        OpKind::Transpose => {
            expect_inputs(inputs, 2)?;
            let perm = need_const(consts, 1, "perm")?.to_i64();
            same(permute_shape(&inputs[0].shape, &perm)?, inputs[0].dtype)
        }
        OpKind::Shape { start, end } => {
            expect_inputs(inputs, 1)?;
            let (b, e) = shape_range(inputs[0].shape.len(), *start, *end);
            int_out(vec![e - b])
        }
        OpKind::Pack { axis } => {
            expect_inputs(inputs, 1)?;
            let s = &inputs[0].shape;
            if inputs.iter().any(|i| i.shape != *s) {
                return Err("Pack inputs differ in shape".into());
            }
            let a = norm_axis(*axis as i64, s.len() + 1)?;
            let mut shape = s.clone();
            shape.insert(a, inputs.len());
            same(shape, inputs[0].dtype)
        }
        OpKind::Unpack { axis } => {
            expect_inputs(inputs, 1)?;
            let s = &inputs[0].shape;
            let a = norm_axis(*axis as i64, s.len())?;
            let mut shape = s.clone();
            shape.remove(a);
            (0..s[a])
                .map(|_| TensorInfo {
                    shape: shape.clone(),
                    dtype: inputs[0].dtype,
                    format: inputs[0].format,
                })
                .collect()
        }
        OpKind::DepthSpace {
            block, to_space, ..
        } => {
            expect_inputs(inputs, 1)?;
            let s = &inputs[0].shape;
            let b = *block;
            if s.len() != 4 {
                return Err("DepthToSpace/SpaceToDepth need 4-D inputs".into());
            }
            let shape = if *to_space {
                if !s[1].is_multiple_of(b * b) {
                    return Err(format!(
                        "{} channels do not split into blocks of {b}x{b}",
                        s[1]
                    ));
                }
                vec![s[0], s[1] / (b * b), s[2] * b, s[3] * b]
            } else {
                if !s[2].is_multiple_of(b) || !s[3].is_multiple_of(b) {
                    return Err(format!("{}x{} is not a multiple of block {b}", s[2], s[3]));
                }
                vec![s[0], s[1] * b * b, s[2] / b, s[3] / b]
            };
            same(shape, inputs[0].dtype)
        }
        OpKind::Rank | OpKind::Size => int_out(vec![]),
        OpKind::SliceTf => {
            expect_inputs(inputs, 3)?;
            let begin = need_const(consts, 1, "begin")?.to_i64();
            let size = need_const(consts, 2, "size")?.to_i64();
            let s = &inputs[0].shape;
            let shape = slice_tf_shape(s, &begin, &size)?;
            same(shape, inputs[0].dtype)
        }
        OpKind::StridedSlice {
            onnx,
            begin_mask,
            end_mask,
            ellipsis_mask,
            new_axis_mask,
            shrink_axis_mask,
        } => {
            expect_inputs(inputs, 3)?;
            let begin = need_const(consts, 1, "begin")?.to_i64();
            let end = need_const(consts, 2, "end")?.to_i64();
            let third = if inputs.len() >= 4 {
                Some(need_const(consts, 3, "axes or strides")?.to_i64())
            } else {
                None
            };
            let fourth = if inputs.len() >= 5 {
                Some(need_const(consts, 4, "steps")?.to_i64())
            } else {
                None
            };
            let (b, e, st, masks) = strided_slice_args(
                *onnx,
                inputs[0].shape.len(),
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
            let plan = strided_slice_plan(&inputs[0].shape, &b, &e, &st, masks)?;
            same(plan.out_shape, inputs[0].dtype)
        }
        OpKind::Slice {
            axis,
            points,
            sizes,
        } => {
            expect_inputs(inputs, 1)?;
            let s = &inputs[0].shape;
            let a = norm_axis(*axis as i64, s.len())?;
            let sizes_input = if inputs.len() >= 2 {
                Some(need_const(consts, 1, "split sizes")?)
            } else {
                None
            };
            let bounds = slice_parts(s[a], points, *sizes, sizes_input, node.outputs.len())?;
            bounds
                .iter()
                .map(|&(b, e)| {
                    let mut shape = s.clone();
                    shape[a] = e - b;
                    TensorInfo {
                        shape,
                        dtype: inputs[0].dtype,
                        format: inputs[0].format,
                    }
                })
                .collect()
        }
        OpKind::Gather { axis } => {
            expect_inputs(inputs, 2)?;
            let axis = if inputs.len() >= 3 {
                need_const(consts, 2, "axis")?.to_i64()[0]
            } else {
                *axis as i64
            };
            let s = &inputs[0].shape;
            let a = norm_axis(axis, s.len())?;
            let mut shape = s[..a].to_vec();
            shape.extend_from_slice(&inputs[1].shape);
            shape.extend_from_slice(&s[a + 1..]);
            same(shape, inputs[0].dtype)
        }
        OpKind::Padding { .. } => {
            expect_inputs(inputs, 2)?;
            let pads = need_const(consts, 1, "pads")?.to_i64();
            let s = &inputs[0].shape;
            if pads.len() != 2 * s.len() {
                return Err(format!("pads {pads:?} do not match rank {}", s.len()));
            }
            let shape = s
                .iter()
                .enumerate()
                .map(|(i, &d)| (d as i64 + pads[2 * i] + pads[2 * i + 1]).max(0) as usize)
                .collect();
            same(shape, inputs[0].dtype)
        }
        OpKind::Interp(p) => {
            expect_inputs(inputs, 1)?;
            let x = inputs[0];
            if x.format == MnnFormat::Nhwc {
                return Err("Interp on an NHWC-format tensor is not supported".into());
            }
            let size = if inputs.len() >= 2 {
                Some(need_const(consts, 1, "size or scale")?)
            } else {
                None
            };
            let plan = interp_plan(p, &x.shape, size)?;
            vec![TensorInfo {
                shape: vec![x.shape[0], x.shape[1], plan.out_h, plan.out_w],
                dtype: x.dtype,
                format: x.format,
            }]
        }
        OpKind::MatMul {
            transpose_a,
            transpose_b,
        } => {
            expect_inputs(inputs, 2)?;
            let (a, b) = (&inputs[0].shape, &inputs[1].shape);
            if a.len() < 2 || b.len() < 2 {
                return Err("MatMul needs inputs of rank >= 2".into());
            }
            let (m, ka) = if *transpose_a {
                (a[a.len() - 1], a[a.len() - 2])
            } else {
                (a[a.len() - 2], a[a.len() - 1])
            };
            let (kb, n) = if *transpose_b {
                (b[b.len() - 1], b[b.len() - 2])
            } else {
                (b[b.len() - 2], b[b.len() - 1])
            };
            if ka != kb {
                return Err(format!("MatMul inner dims differ: {a:?} x {b:?}"));
            }
            let mut shape = broadcast_shapes(&a[..a.len() - 2], &b[..b.len() - 2])?;
            shape.push(m);
            shape.push(n);
            same(shape, DType::F32)
        }
        OpKind::InnerProduct { out_count, .. } => {
            expect_inputs(inputs, 1)?;
            let s = &inputs[0].shape;
            vec![TensorInfo {
                shape: vec![s[0], *out_count],
                dtype: DType::F32,
                format: inputs[0].format,
            }]
        }
        OpKind::ConvertTensor { dest, .. } => {
            expect_inputs(inputs, 1)?;
            let x = inputs[0];
            let shape = convert_tensor_shape(&x.shape, x.format, *dest);
            vec![TensorInfo {
                shape,
                dtype: x.dtype,
                format: *dest,
            }]
        }
        OpKind::Reduction {
            dims, keep_dims, ..
        } => {
            expect_inputs(inputs, 1)?;
            let s = &inputs[0].shape;
            let axes = reduction_axes(s.len(), dims, consts, inputs.len())?;
            let mut shape = Vec::new();
            for (i, &d) in s.iter().enumerate() {
                if axes.contains(&i) {
                    if *keep_dims {
                        shape.push(1);
                    }
                } else {
                    shape.push(d);
                }
            }
            same(shape, inputs[0].dtype)
        }
        OpKind::ArgMax { axis, .. } => {
            expect_inputs(inputs, 1)?;
            let s = &inputs[0].shape;
            let a = norm_axis(*axis as i64, s.len())?;
            let mut shape = s.clone();
            shape.remove(a);
            int_out(shape)
        }
        OpKind::Tile => {
            expect_inputs(inputs, 2)?;
            let reps = need_const(consts, 1, "multiples")?.to_i64();
            let s = &inputs[0].shape;
            if reps.len() != s.len() {
                return Err("Tile multiples do not match the rank".into());
            }
            same(
                s.iter()
                    .zip(&reps)
                    .map(|(&d, &r)| d * r.max(0) as usize)
                    .collect(),
                inputs[0].dtype,
            )
        }
        OpKind::BroadcastTo => {
            expect_inputs(inputs, 2)?;
            let target: Vec<usize> = need_const(consts, 1, "shape")?
                .to_i64()
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            same(
                broadcast_shapes(&inputs[0].shape, &target)?,
                inputs[0].dtype,
            )
        }
        OpKind::Fill => {
            expect_inputs(inputs, 2)?;
            let shape: Vec<usize> = need_const(consts, 0, "shape")?
                .to_i64()
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            vec![TensorInfo {
                shape,
                dtype: inputs[1].dtype,
                format: MnnFormat::Nchw,
            }]
        }
        OpKind::Range => {
            expect_inputs(inputs, 3)?;
            let start = need_const(consts, 0, "start")?.to_f32()[0] as f64;
            let limit = need_const(consts, 1, "limit")?.to_f32()[0] as f64;
            let delta = need_const(consts, 2, "delta")?.to_f32()[0] as f64;
            if delta == 0.0 {
                return Err("Range delta is 0".into());
            }
            let n = ((limit - start) / delta).ceil().max(0.0) as usize;
            vec![TensorInfo {
                shape: vec![n],
                dtype: inputs[0].dtype,
                format: MnnFormat::Nchw,
            }]
        }
        OpKind::Crop { axis, .. } => {
            expect_inputs(inputs, 2)?;
            let s = &inputs[0].shape;
            let r = &inputs[1].shape;
            let a = norm_axis(*axis as i64, s.len())?;
            let mut shape = s.clone();
            shape[a..].copy_from_slice(&r[a..s.len()]);
            same(shape, inputs[0].dtype)
        }
    })
}

/// The dims `[start, end)` a Shape op reports (ONNX clamping rules).
pub fn shape_range(rank: usize, start: Option<i32>, end: Option<i32>) -> (usize, usize) {
    let fix = |v: i32| {
        let v = if v < 0 { v + rank as i32 } else { v };
        v.clamp(0, rank as i32) as usize
    };
    let b = start.map(fix).unwrap_or(0);
    let e = end.map(fix).unwrap_or(rank);
    (b, e.max(b))
}

pub fn permute_shape(shape: &[usize], perm: &[i64]) -> ShapeResult<Vec<usize>> {
    if perm.len() != shape.len() {
        return Err(format!(
            "permutation {perm:?} does not match rank {}",
            shape.len()
        ));
    }
    perm.iter()
        .map(|&p| {
            let a = norm_axis(p, shape.len())?;
            Ok(shape[a])
        })
        .collect()
}

pub fn slice_tf_shape(s: &[usize], begin: &[i64], size: &[i64]) -> ShapeResult<Vec<usize>> {
    if begin.len() != s.len() || size.len() != s.len() {
        return Err(format!("SliceTf begin/size must have {} entries", s.len()));
    }
    (0..s.len())
        .map(|i| {
            let b = begin[i];
            if b < 0 || b as usize > s[i] {
                return Err(format!("SliceTf begin {b} out of range"));
            }
            let n = if size[i] < 0 {
                s[i] - b as usize
            } else {
                size[i] as usize
            };
            if b as usize + n > s[i] {
                return Err(format!("SliceTf exceeds dim {i}"));
            }
            Ok(n)
        })
        .collect()
}

/// Bounds of each output of a Caffe-style Slice.
pub fn slice_bounds(
    dim: usize,
    points: &[i32],
    outputs: usize,
) -> ShapeResult<Vec<(usize, usize)>> {
    if points.is_empty() {
        if outputs == 0 || !dim.is_multiple_of(outputs) {
            return Err(format!("cannot split {dim} into {outputs} equal parts"));
        }
        let step = dim / outputs;
        return Ok((0..outputs).map(|i| (i * step, (i + 1) * step)).collect());
    }
    let mut bounds = Vec::new();
    let mut prev = 0usize;
    for &p in points {
        let p = p as usize;
        if p < prev || p > dim {
            return Err(format!("slice points {points:?} invalid for dim {dim}"));
        }
        bounds.push((prev, p));
        prev = p;
    }
    bounds.push((prev, dim));
    bounds.truncate(outputs);
    Ok(bounds)
}

pub fn reduction_axes(
    rank: usize,
    dims: &[i32],
    consts: &[Option<&Value>],
    input_count: usize,
) -> ShapeResult<Vec<usize>> {
    let axes: Vec<i64> = if input_count >= 2 {
        need_const(consts, 1, "axes")?.to_i64()
    } else {
        dims.iter().map(|&d| d as i64).collect()
    };
    if axes.is_empty() {
        return Ok((0..rank).collect());
    }
    axes.iter().map(|&a| norm_axis(a, rank)).collect()
}

/// Logical shape after MNN's ConvertTensor: only NHWC <-> channels-first changes the dim order.
pub fn convert_tensor_shape(shape: &[usize], from: MnnFormat, to: MnnFormat) -> Vec<usize> {
    if shape.len() < 3 || from.is_channels_first() == to.is_channels_first() {
        return shape.to_vec();
    }
    let r = shape.len();
    if from == MnnFormat::Nhwc {
        // [N, spatial..., C] -> [N, C, spatial...]
        let mut s = vec![shape[0], shape[r - 1]];
        s.extend_from_slice(&shape[1..r - 1]);
        s
    } else {
        let mut s = vec![shape[0]];
        s.extend_from_slice(&shape[2..]);
        s.push(shape[1]);
        s
    }
}

/// The conv kind's weight count, for validating imported weights.
pub fn conv_weight_count(p: &ConvParams) -> usize {
    let taps = p.kernel_h * p.kernel_w;
    match p.kind {
        ConvKind::Convolution | ConvKind::Depthwise => {
            p.out_channels * (p.in_channels / p.group.max(1)) * taps
        }
        ConvKind::Deconvolution | ConvKind::DeconvolutionDepthwise => {
            p.in_channels * (p.out_channels / p.group.max(1)) * taps
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_shapes(&[1, 3, 4, 4], &[1]).unwrap(),
            vec![1, 3, 4, 4]
        );
        assert_eq!(
            broadcast_shapes(&[2, 1, 5], &[4, 1]).unwrap(),
            vec![2, 4, 5]
        );
        assert!(broadcast_shapes(&[2, 3], &[4]).is_err());
    }

    #[test]
    fn reshape_handles_minus_one_and_zero() {
        assert_eq!(
            reshape_target(&[1, 1280, 1, 1], &[1, -1]).unwrap(),
            vec![1, 1280]
        );
        assert_eq!(reshape_target(&[2, 3, 4], &[0, -1]).unwrap(), vec![2, 12]);
        assert!(reshape_target(&[2, 3], &[4, 2]).is_err());
    }

    #[test]
    fn strided_slice_with_negative_step() {
        // end_mask on dim 0: go all the way: indices 4, 2, 0.
        let p = strided_slice_plan(&[5], &[-1], &[0], &[-2], (0, 1, 0, 0, 0)).unwrap();
        assert_eq!(p.out_shape, vec![3]);
        assert_eq!(p.ranges[0], (4, -2, 3));
        // Without the mask the end (index 0) is exclusive: indices 4, 2.
        let p = strided_slice_plan(&[5], &[-1], &[0], &[-2], (0, 0, 0, 0, 0)).unwrap();
        assert_eq!(p.out_shape, vec![2]);
    }
}
