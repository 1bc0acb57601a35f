//! Dense convolution and transposed convolution over NHWC tensors, both built on [`gemm`].

use super::col2im::{col2im_rows, tiles_exactly, Col2Im};
use super::depthwise::valid_taps;
use super::gemm::{gemm, gemm_pass};
use super::pack::PackedWeights;
use crate::geometry::{Activation, ConvGeometry};
use std::cell::RefCell;
use std::ops::Range;

/// Target size of one im2col tile: small enough to stay in L2 next to the weights.
const IM2COL_TILE_BYTES: usize = 96 * 1024;

/// Rows per im2col tile are a multiple of this (every micro-kernel's tile height divides it), so
/// full tiles never leave a ragged micro-tile behind.
const TILE_ROW_MULTIPLE: usize = 12;

thread_local! {
    /// Per-thread scratch reused across calls (im2col tiles, deconvolution columns).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a scratch slice of at least `len` floats (contents unspecified).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            if scratch.len() < len {
                scratch.resize(len, 0.0);
            }
            f(&mut scratch[..len])
        }
        // Re-entered (not expected): fall back to a fresh buffer rather than panic.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

fn check_conv_buffers(
    what: &str,
    geom: &ConvGeometry,
    input: &[f32],
    output: &[f32],
    out_rows: usize,
    bias: &[f32],
) {
    assert!(
        input.len() >= geom.in_h * geom.in_w * geom.in_c,
        "{what}: input has {} floats, geometry needs {}x{}x{}",
        input.len(),
        geom.in_h,
        geom.in_w,
        geom.in_c
    );
    assert!(
        output.len() >= out_rows * geom.out_c,
        "{what}: output has {} floats, needs {out_rows} rows of {} channels",
        output.len(),
        geom.out_c
    );
    assert!(
        bias.is_empty() || bias.len() == geom.out_c,
        "{what}: bias has {} floats, expected {} or none",
        bias.len(),
        geom.out_c
    );
    assert!(
        geom.stride_h > 0 && geom.stride_w > 0 && geom.dilation_h > 0 && geom.dilation_w > 0,
        "{what}: strides and dilations must be positive"
    );
}

/// Dense (group = 1) convolution of the output pixels `pixel_range` (row-major `oy * out_w + ox`).
///
/// * `input`: the whole NHWC image, `in_h x in_w x in_c`.
/// * `packed`: from [`PackedWeights::pack_conv`] with the geometry's channels and kernel size.
/// * `output`: exactly the pixels of `pixel_range`, `out_c` floats each (a caller splitting the
///   image between threads hands each its own chunk).
///
/// Pointwise convolutions multiply the input rows in place; other shapes gather a tile of output
/// pixels' receptive fields (im2col) into a small per-thread buffer and multiply that.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_nhwc(
    geom: &ConvGeometry,
    input: &[f32],
    packed: &PackedWeights,
    bias: &[f32],
    act: Activation,
    output: &mut [f32],
    pixel_range: Range<usize>,
) {
    check_conv_buffers("conv2d_nhwc", geom, input, output, pixel_range.len(), bias);
    assert!(
        pixel_range.end <= geom.pixels(),
        "conv2d_nhwc: pixel range {pixel_range:?} beyond {} output pixels",
        geom.pixels()
    );
    let k = geom.im2col_len();
    assert!(
        packed.k() == k && packed.n() == geom.out_c,
        "conv2d_nhwc: weights packed as {}x{}, geometry needs {k}x{}",
        packed.k(),
        packed.n(),
        geom.out_c
    );
    let out_c = geom.out_c;
    if pixel_range.is_empty() {
        return;
    }
    if geom.is_pointwise() {
        let a = &input[pixel_range.start * geom.in_c..pixel_range.end * geom.in_c];
        gemm(
            pixel_range.len(),
            a,
            geom.in_c,
            packed,
            bias,
            act,
            output,
            out_c,
        );
        return;
    }
    if geom.in_c >= DIRECT_MIN_CHANNELS {
        conv_by_taps(geom, input, packed, bias, act, output, pixel_range);
        return;
    }
    let tile_rows = (IM2COL_TILE_BYTES / (4 * k.max(1)) / TILE_ROW_MULTIPLE * TILE_ROW_MULTIPLE)
        .max(TILE_ROW_MULTIPLE);
    with_scratch(tile_rows * k, |scratch| {
        let mut start = pixel_range.start;
        while start < pixel_range.end {
            let end = (start + tile_rows).min(pixel_range.end);
            for (row, pixel) in (start..end).enumerate() {
                im2col_row(geom, input, pixel, &mut scratch[row * k..(row + 1) * k]);
            }
            let out_offset = (start - pixel_range.start) * out_c;
            gemm(
                end - start,
                scratch,
                k,
                packed,
                bias,
                act,
                &mut output[out_offset..],
                out_c,
            );
            start = end;
        }
    });
}

/// From this many input channels on, a convolution runs as one GEMM pass per kernel tap straight
/// on the input (enough reduction per pass to amortise reloading the output tile); below, the
/// im2col copy is cheaper than many short passes (the 3-channel stem).
const DIRECT_MIN_CHANNELS: usize = 32;

/// Output pixels per chunk of [`conv_by_taps`]: the chunk's sums stay in L2 between taps.
const DIRECT_CHUNK_PIXELS: usize = 256;

/// Convolution without im2col: within an output row, the pixels a tap `(ky, kx)` reaches inside
/// the image read input pixels a constant stride apart, so the tap is a GEMM pass on the input
/// in place (`lda = stride_w * in_c`) over that tap's slice of the packed reduction. Passes run
/// in `(ky, kx)` order, continuing each output's FMA chain in memory, then bias and activation.
#[allow(clippy::too_many_arguments)]
fn conv_by_taps(
    geom: &ConvGeometry,
    input: &[f32],
    packed: &PackedWeights,
    bias: &[f32],
    act: Activation,
    output: &mut [f32],
    pixel_range: Range<usize>,
) {
    let (in_c, out_c, out_w) = (geom.in_c, geom.out_c, geom.out_w);
    let mut pixel = pixel_range.start;
    while pixel < pixel_range.end {
        let (oy, ox0) = (pixel / out_w, pixel % out_w);
        let ox1 = out_w
            .min(ox0 + (pixel_range.end - pixel))
            .min(ox0 + DIRECT_CHUNK_PIXELS);
        let offset = (pixel - pixel_range.start) * out_c;
        let sums = &mut output[offset..offset + (ox1 - ox0) * out_c];
        sums.fill(0.0);
        for ky in 0..geom.kernel_h {
            let Some(iy) = geom.input_row(oy, ky) else {
                continue;
            };
            for kx in 0..geom.kernel_w {
                // Output columns whose tap lands inside the image: ox*stride + kx*dilation - pad.
                let reach = valid_taps(
                    1,
                    out_w,
                    kx * geom.dilation_w,
                    geom.stride_w,
                    geom.pad_left,
                    geom.in_w,
                );
                let (first, end) = (reach.start.max(ox0), reach.end.min(ox1));
                if first >= end {
                    continue;
                }
                let ix = first * geom.stride_w + kx * geom.dilation_w - geom.pad_left;
                let lda = geom.stride_w * in_c;
                let a_start = (iy * geom.in_w + ix) * in_c;
                let a = &input[a_start..a_start + (end - first - 1) * lda + in_c];
                let tap = ky * geom.kernel_w + kx;
                gemm_pass(
                    end - first,
                    a,
                    lda,
                    packed,
                    tap * in_c..(tap + 1) * in_c,
                    None,
                    &mut sums[(first - ox0) * out_c..],
                    out_c,
                );
            }
        }
        gemm_pass(
            ox1 - ox0,
            &[],
            0,
            packed,
            0..0,
            Some((bias, act)),
            sums,
            out_c,
        );
        pixel += ox1 - ox0;
    }
}

/// Writes output pixel `pixel`'s receptive field in `(ky, kx, ic)` order; padding reads as zero.
fn im2col_row(geom: &ConvGeometry, input: &[f32], pixel: usize, row: &mut [f32]) {
    let (oy, ox) = (pixel / geom.out_w, pixel % geom.out_w);
    let in_c = geom.in_c;
    let kw = geom.kernel_w;
    for ky in 0..geom.kernel_h {
        let dst_row = &mut row[ky * kw * in_c..(ky + 1) * kw * in_c];
        let Some(iy) = geom.input_row(oy, ky) else {
            dst_row.fill(0.0);
            continue;
        };
        let row_base = iy * geom.in_w * in_c;
        // Undilated taps that all fall inside the image are one contiguous NHWC run.
        let first = (ox * geom.stride_w).checked_sub(geom.pad_left);
        if geom.dilation_w == 1 {
            if let Some(ix) = first.filter(|&ix| ix + kw <= geom.in_w) {
                let src = row_base + ix * in_c;
                dst_row.copy_from_slice(&input[src..src + kw * in_c]);
                continue;
            }
        }
        for kx in 0..kw {
            let dst = &mut dst_row[kx * in_c..(kx + 1) * in_c];
            match geom.input_col(ox, kx) {
                Some(ix) => {
                    let src = row_base + ix * in_c;
                    dst.copy_from_slice(&input[src..src + in_c]);
                }
                None => dst.fill(0.0),
            }
        }
    }
}

/// Output rows per block of [`deconv2d_nhwc`]'s column buffer, aimed at about this many bytes.
const DECONV_BLOCK_BYTES: usize = 512 * 1024;

/// Transposed convolution (groups = 1) of the output rows `row_range`.
///
/// The geometry reads as for the forward convolution this one transposes, but from the output
/// side: `in_*` is the deconvolution's input, `out_*` its output, and output pixel `(oy, ox)`
/// receives input pixel `(iy, ix)` through tap `(ky, kx)` when
/// `oy = iy * stride_h + ky * dilation_h - pad_top` (same for x). ONNX `output_padding` only
/// makes `out_h`/`out_w` larger.
///
/// * `packed`: from [`PackedWeights::pack_deconv`].
/// * `output`: exactly the rows of `row_range`, `out_w * out_c` floats each.
///
/// The input rows feeding a block of output rows are multiplied by the weights into a column
/// buffer (`[iy][ix][tap][oc]`); each output pixel then gathers its taps in a fixed order, adds
/// the bias and applies the activation, so results do not depend on the row split.
#[allow(clippy::too_many_arguments)]
pub fn deconv2d_nhwc(
    geom: &ConvGeometry,
    input: &[f32],
    packed: &PackedWeights,
    bias: &[f32],
    act: Activation,
    output: &mut [f32],
    row_range: Range<usize>,
) {
    let out_row_len = geom.out_w;
    check_conv_buffers(
        "deconv2d_nhwc",
        geom,
        input,
        output,
        row_range.len() * out_row_len,
        bias,
    );
    assert!(
        row_range.end <= geom.out_h,
        "deconv2d_nhwc: row range {row_range:?} beyond {} output rows",
        geom.out_h
    );
    let taps = geom.kernel_h * geom.kernel_w;
    let (out_c, in_w) = (geom.out_c, geom.in_w);
    assert!(
        packed.k() == geom.in_c && packed.n() == taps * out_c,
        "deconv2d_nhwc: weights packed as {}x{}, geometry needs {}x{}",
        packed.k(),
        packed.n(),
        geom.in_c,
        taps * out_c
    );
    let col_row_len = in_w * taps * out_c;
    let block_rows = (DECONV_BLOCK_BYTES / (4 * col_row_len.max(1)) * geom.stride_h)
        .max(geom.stride_h)
        .max(1);
    let mut padded_bias = vec![0.0f32; out_c.div_ceil(16) * 16];
    padded_bias[..bias.len()].copy_from_slice(bias);
    let tiled = tiles_exactly(geom);
    let row_bias: Option<Vec<f32>> = tiled.then(|| {
        let row_len = out_row_len * out_c;
        let mut repeated = vec![0.0f32; row_len.div_ceil(16) * 16];
        for (value, &b) in repeated[..row_len]
            .iter_mut()
            .zip(padded_bias[..out_c].iter().cycle())
        {
            *value = b;
        }
        repeated
    });
    // The general gather's row scratch: an exactly tiled kernel needs it only for the rows
    // ONNX output_padding adds below the last input row.
    let general_rows = !tiled || geom.out_h > geom.in_h * geom.kernel_h;
    let mut row_sums = vec![0.0f32; if general_rows { out_row_len * out_c } else { 0 }];
    let (lo, hi) = act.bounds();
    let mut oy0 = row_range.start;
    while oy0 < row_range.end {
        let oy1 = (oy0 + block_rows).min(row_range.end);
        // Rows no input reaches (all padding) gather nothing and get the activated bias.
        let input_rows = deconv_input_rows(geom, oy0..oy1).unwrap_or(0..0);
        with_scratch(input_rows.len() * col_row_len, |columns| {
            let a = &input[input_rows.start * in_w * geom.in_c..input_rows.end * in_w * geom.in_c];
            let m = input_rows.len() * in_w;
            gemm(
                m,
                a,
                geom.in_c,
                packed,
                &[],
                Activation::None,
                columns,
                taps * out_c,
            );
            let job = Col2Im {
                geom,
                columns: columns.as_ptr(),
                first_input_row: input_rows.start,
                bias: padded_bias.as_ptr(),
                row_bias: row_bias.as_ref().map(|b| b.as_ptr()),
                lo,
                hi,
                row_sums: row_sums.as_mut_ptr(),
                output: output[(oy0 - row_range.start) * out_row_len * out_c..].as_mut_ptr(),
                rows: oy0..oy1,
            };
            // SAFETY: buffers sized above and checked by check_conv_buffers; the family was
            // checked against the CPU when the weights were packed.
            unsafe { col2im_rows(packed.family(), &job) };
        });
        oy0 = oy1;
    }
}

/// Input rows that feed output rows `rows`, or `None` when none does.
fn deconv_input_rows(geom: &ConvGeometry, rows: Range<usize>) -> Option<Range<usize>> {
    let reach = (geom.kernel_h - 1) * geom.dilation_h;
    // Smallest iy with iy*s + reach - pad >= rows.start; largest with iy*s - pad <= rows.end-1.
    let first = (rows.start + geom.pad_top)
        .saturating_sub(reach)
        .div_ceil(geom.stride_h);
    let last = (rows.end - 1 + geom.pad_top) / geom.stride_h;
    let last = last.min(geom.in_h.checked_sub(1)?);
    (first <= last).then_some(first..last + 1)
}
