//! Depthwise convolution over NHWC tensors, vectorised across channels.
//!
//! Each output pixel's channel vector is a sum over kernel taps of input channel vectors times
//! the tap's weight vector. Interior pixels (every horizontal tap inside the image) are computed
//! 8 or 4 at a time, sharing each weight load and giving the FMA units independent chains; border
//! pixels narrow their tap range instead of testing every tap. Vertical padding only shortens
//! the list of kernel rows of an output row.

use super::pack::Family;
use super::simd::{F32Vector, Portable};
use crate::dispatch::{active_isa, Isa};
use crate::geometry::{Activation, ConvGeometry};
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};

/// Channels are padded to this (the widest vector) in packed weights and bias, so weight loads
/// never need a mask.
const CHANNEL_ALIGN: usize = 16;

/// Channels computed together over a whole row range (a multiple of every vector width).
const CHANNEL_BLOCK: usize = 64;

/// Weights up to this size are not split into channel blocks.
const SMALL_WEIGHTS_BYTES: usize = 16 * 1024;

/// Depthwise weights packed as `[ky][kx][channel]`, channels padded to a multiple of 16.
#[derive(Clone, Debug)]
pub struct PackedDepthwise {
    channels: usize,
    kernel_h: usize,
    kernel_w: usize,
    padded_channels: usize,
    data: Vec<f32>,
}

impl PackedDepthwise {
    /// Packs weights in PyTorch/MNN layout `[channels][1][kh][kw]`. The layout does not depend
    /// on the ISA.
    pub fn pack(weights: &[f32], channels: usize, kernel_h: usize, kernel_w: usize) -> Self {
        assert_eq!(
            weights.len(),
            channels * kernel_h * kernel_w,
            "depthwise weights: expected channels*kh*kw = {channels}*{kernel_h}*{kernel_w} floats"
        );
        let padded_channels = channels.div_ceil(CHANNEL_ALIGN) * CHANNEL_ALIGN;
        let taps = kernel_h * kernel_w;
        let mut data = vec![0.0; taps * padded_channels];
        for c in 0..channels {
            for tap in 0..taps {
                data[tap * padded_channels + c] = weights[c * taps + tap];
            }
        }
        PackedDepthwise {
            channels,
            kernel_h,
            kernel_w,
            padded_channels,
            data,
        }
    }

    pub fn channels(&self) -> usize {
        self.channels
    }
}

/// Depthwise convolution (groups = channels, one filter per channel) of the output rows
/// `row_range`, with the active ISA.
///
/// * `input`: the whole NHWC image, `in_h x in_w x c` (`geom.in_c == geom.out_c == c`).
/// * `bias`: `c` floats or empty.
/// * `output`: exactly the rows of `row_range`, `out_w * c` floats each.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_conv2d_nhwc(
    geom: &ConvGeometry,
    input: &[f32],
    packed: &PackedDepthwise,
    bias: &[f32],
    act: Activation,
    output: &mut [f32],
    row_range: Range<usize>,
) {
    depthwise_conv2d_nhwc_isa(
        active_isa(),
        geom,
        input,
        packed,
        bias,
        act,
        output,
        row_range,
    )
}

/// [`depthwise_conv2d_nhwc`] with a given ISA (must be supported by the CPU).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_conv2d_nhwc_isa(
    isa: Isa,
    geom: &ConvGeometry,
    input: &[f32],
    packed: &PackedDepthwise,
    bias: &[f32],
    act: Activation,
    output: &mut [f32],
    row_range: Range<usize>,
) {
    let c = packed.channels;
    assert!(
        geom.in_c == c && geom.out_c == c,
        "depthwise: geometry has {} -> {} channels, weights {c}",
        geom.in_c,
        geom.out_c
    );
    assert!(
        geom.kernel_h == packed.kernel_h && geom.kernel_w == packed.kernel_w,
        "depthwise: geometry kernel {}x{}, weights {}x{}",
        geom.kernel_h,
        geom.kernel_w,
        packed.kernel_h,
        packed.kernel_w
    );
    assert!(
        geom.stride_h > 0 && geom.stride_w > 0 && geom.dilation_h > 0 && geom.dilation_w > 0,
        "depthwise: strides and dilations must be positive"
    );
    assert!(
        input.len() >= geom.in_h * geom.in_w * c,
        "depthwise: input has {} floats, needs {}x{}x{c}",
        input.len(),
        geom.in_h,
        geom.in_w
    );
    assert!(
        row_range.end <= geom.out_h,
        "depthwise: row range {row_range:?} beyond {} rows",
        geom.out_h
    );
    assert!(
        output.len() >= row_range.len() * geom.out_w * c,
        "depthwise: output has {} floats, needs {} rows of {}x{c}",
        output.len(),
        row_range.len(),
        geom.out_w
    );
    assert!(
        bias.is_empty() || bias.len() == c,
        "depthwise: bias has {} floats, expected {c} or none",
        bias.len()
    );
    let mut padded_bias = vec![0.0f32; packed.padded_channels];
    padded_bias[..bias.len()].copy_from_slice(bias);
    let job = Job {
        geom,
        input: input.as_ptr(),
        weights: packed.data.as_ptr(),
        padded_channels: packed.padded_channels,
        bias: padded_bias.as_ptr(),
        bounds: act.bounds(),
        output: output.as_mut_ptr(),
        rows: row_range,
    };
    // SAFETY: buffer sizes checked above; `Family::for_isa` checked the CPU supports the ISA.
    unsafe {
        match Family::for_isa(isa) {
            Family::Portable => depthwise_rows::<Portable>(&job),
            #[cfg(target_arch = "x86_64")]
            Family::Avx2 => depthwise_avx2(&job),
            #[cfg(target_arch = "x86_64")]
            Family::Avx512 => depthwise_avx512(&job),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 kernel family on another architecture"),
        }
    }
}

/// One call's checked buffers and parameters.
struct Job<'a> {
    geom: &'a ConvGeometry,
    input: *const f32,
    weights: *const f32,
    padded_channels: usize,
    bias: *const f32,
    bounds: (f32, f32),
    /// The first row of `rows`.
    output: *mut f32,
    rows: Range<usize>,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_avx2(job: &Job) {
    depthwise_rows::<Avx2>(job)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn depthwise_avx512(job: &Job) {
    depthwise_rows::<Avx512>(job)
}

/// The range of taps `k` (of `taps`) for which `o * stride + k * dilation - pad` lies in
/// `0..size`; contiguous because the position grows with `k`.
#[inline]
pub(crate) fn valid_taps(
    o: usize,
    taps: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    size: usize,
) -> Range<usize> {
    let origin = o * stride;
    // First tap at or past the padding, then first tap past the end of the image.
    let first = pad.saturating_sub(origin).div_ceil(dilation).min(taps);
    let end = (size + pad)
        .checked_sub(origin)
        .map_or(0, |room| room.div_ceil(dilation))
        .min(taps);
    first..end.max(first)
}

#[inline(always)]
unsafe fn depthwise_rows<V: F32Vector>(job: &Job) {
    let g = job.geom;
    let c = g.in_c;
    let x_taps =
        |ox: usize| valid_taps(ox, g.kernel_w, g.stride_w, g.dilation_w, g.pad_left, g.in_w);
    // Output columns whose every horizontal tap is inside the image.
    let interior: Range<usize> = {
        let first = (0..g.out_w).find(|&ox| x_taps(ox).len() == g.kernel_w);
        match first {
            Some(first) => {
                let end = (first..g.out_w)
                    .find(|&ox| x_taps(ox).len() != g.kernel_w)
                    .unwrap_or(g.out_w);
                first..end
            }
            None => 0..0,
        }
    };
    let mut kernel_rows: Vec<(usize, usize)> = Vec::with_capacity(g.kernel_h);
    // Channel blocks outermost: a block's weights and the input rows it reads stay in L1 while
    // every pixel of the rows passes, instead of streaming all channels' weights per pixel.
    // When all weights fit in L1 anyway, one block avoids re-reading each input pixel's cache
    // lines once per block (which costs when the image itself is larger than L2).
    let taps = g.kernel_h * g.kernel_w;
    let block = if c * taps * 4 <= SMALL_WEIGHTS_BYTES {
        c.max(1)
    } else {
        CHANNEL_BLOCK
    };
    for block_start in (0..c).step_by(block) {
        let channels = block_start..(block_start + block).min(c);
        for (out_row, oy) in job.rows.clone().enumerate() {
            // (input row offset in floats, ky) of the kernel rows inside the image.
            kernel_rows.clear();
            for ky in valid_taps(oy, g.kernel_h, g.stride_h, g.dilation_h, g.pad_top, g.in_h) {
                let iy = oy * g.stride_h + ky * g.dilation_h - g.pad_top;
                kernel_rows.push((iy * g.in_w * c, ky));
            }
            let out_row = job.output.add(out_row * g.out_w * c);
            let pixel = |ox: usize, taps: Range<usize>| PixelRun {
                channels: channels.clone(),
                // Saturating only for a window entirely in padding, where no input is read.
                input_col: (ox * g.stride_w + taps.start * g.dilation_w).saturating_sub(g.pad_left),
                taps,
                output: out_row.add(ox * c),
            };
            let border =
                (0..interior.start.min(g.out_w)).chain(interior.end.max(interior.start)..g.out_w);
            for ox in border {
                single_pixel::<V>(job, &kernel_rows, &pixel(ox, x_taps(ox)));
            }
            let mut ox = interior.start;
            while ox + 8 <= interior.end {
                interior_run::<V, 8>(job, &kernel_rows, &pixel(ox, 0..g.kernel_w));
                ox += 8;
            }
            if ox + 4 <= interior.end {
                interior_run::<V, 4>(job, &kernel_rows, &pixel(ox, 0..g.kernel_w));
                ox += 4;
            }
            while ox < interior.end {
                single_pixel::<V>(job, &kernel_rows, &pixel(ox, 0..g.kernel_w));
                ox += 1;
            }
        }
    }
}

/// `PIXELS` interior pixels: the specialised kernel for the common kernel widths and strides,
/// the generic one otherwise.
#[inline(always)]
unsafe fn interior_run<V: F32Vector, const PIXELS: usize>(
    job: &Job,
    kernel_rows: &[(usize, usize)],
    run: &PixelRun,
) {
    let g = job.geom;
    if g.dilation_w != 1 {
        return pixel_run::<V, PIXELS>(job, kernel_rows, run);
    }
    match (g.kernel_w, g.stride_w) {
        (3, 1) => fixed_run::<V, PIXELS, 3, 1>(job, kernel_rows, run),
        (3, 2) => fixed_run::<V, PIXELS, 3, 2>(job, kernel_rows, run),
        (5, 1) => fixed_run::<V, PIXELS, 5, 1>(job, kernel_rows, run),
        (5, 2) => fixed_run::<V, PIXELS, 5, 2>(job, kernel_rows, run),
        _ => pixel_run::<V, PIXELS>(job, kernel_rows, run),
    }
}

/// `PIXELS` interior pixels of a kernel `KW` wide with horizontal stride `STRIDE`, no dilation.
///
/// Adjacent pixels' windows overlap, so each input vector of the row is loaded once and used by
/// every (pixel, tap) pair that reads it, with the row's `KW` weight vectors held in registers:
/// `(PIXELS - 1) * STRIDE + KW` loads instead of `PIXELS * KW`. Each pixel still sums its taps
/// in `kx` order, as the generic path does.
#[inline(always)]
unsafe fn fixed_run<V: F32Vector, const PIXELS: usize, const KW: usize, const STRIDE: usize>(
    job: &Job,
    kernel_rows: &[(usize, usize)],
    run: &PixelRun,
) {
    let (mut c0, end) = (run.channels.start, run.channels.end);
    let full_end = c0 + (end - c0) / V::LANES * V::LANES;
    while c0 < full_end {
        fixed_vector::<V, PIXELS, KW, STRIDE, true>(job, kernel_rows, run, c0);
        c0 += V::LANES;
    }
    if c0 < end {
        fixed_vector::<V, PIXELS, KW, STRIDE, false>(job, kernel_rows, run, c0);
    }
}

#[inline(always)]
unsafe fn fixed_vector<
    V: F32Vector,
    const PIXELS: usize,
    const KW: usize,
    const STRIDE: usize,
    const FULL: bool,
>(
    job: &Job,
    kernel_rows: &[(usize, usize)],
    run: &PixelRun,
    c0: usize,
) {
    let c = job.geom.in_c;
    let lanes = run.channels.end - c0;
    let mut acc = [V::zero(); PIXELS];
    for &(row_offset, ky) in kernel_rows {
        let src = job.input.add(row_offset + run.input_col * c + c0);
        let w = job.weights.add(ky * KW * job.padded_channels + c0);
        let mut weights = [V::zero(); KW];
        for (kx, weight) in weights.iter_mut().enumerate() {
            *weight = V::load(w.add(kx * job.padded_channels));
        }
        for column in 0..(PIXELS - 1) * STRIDE + KW {
            let ptr = src.add(column * c);
            let v = if FULL {
                V::load(ptr)
            } else {
                V::load_partial(ptr, lanes)
            };
            for (kx, weight) in weights.iter().enumerate() {
                if column >= kx && (column - kx) % STRIDE == 0 && (column - kx) / STRIDE < PIXELS {
                    let p = (column - kx) / STRIDE;
                    acc[p] = v.mul_add(*weight, acc[p]);
                }
            }
        }
    }
    store_pixels::<V, PIXELS, FULL>(job, run.output.add(c0), c, acc, c0, lanes);
}

/// Adds the bias, clamps and stores `PIXELS` pixels' vector at channel `c0`.
#[inline(always)]
unsafe fn store_pixels<V: F32Vector, const PIXELS: usize, const FULL: bool>(
    job: &Job,
    output: *mut f32,
    pixel_step: usize,
    acc: [V; PIXELS],
    c0: usize,
    lanes: usize,
) {
    let bias = V::load(job.bias.add(c0));
    let (lo, hi) = (V::splat(job.bounds.0), V::splat(job.bounds.1));
    for (p, acc) in acc.iter().enumerate() {
        let out = acc.add(bias).clamp(lo, hi);
        let dst = output.add(p * pixel_step);
        if FULL {
            out.store(dst)
        } else {
            out.store_partial(dst, lanes)
        }
    }
}

/// Channel vectors a single pixel computes at once: independent FMA chains, since a lone
/// pixel's taps form one dependent chain per vector.
const SINGLE_PIXEL_VECTORS: usize = 4;

/// One pixel (border, or interior leftovers), any kernel: four channel vectors at a time.
#[inline(always)]
unsafe fn single_pixel<V: F32Vector>(job: &Job, kernel_rows: &[(usize, usize)], run: &PixelRun) {
    let g = job.geom;
    let c = g.in_c;
    let group = SINGLE_PIXEL_VECTORS * V::LANES;
    let tap_step = g.dilation_w * c;
    let (mut c0, end) = (run.channels.start, run.channels.end);
    while c0 + group <= end {
        let mut acc = [V::zero(); SINGLE_PIXEL_VECTORS];
        for &(row_offset, ky) in kernel_rows {
            let mut src = job.input.add(row_offset + run.input_col * c + c0);
            let mut w = job
                .weights
                .add((ky * g.kernel_w + run.taps.start) * job.padded_channels + c0);
            for _ in run.taps.clone() {
                for (v, acc) in acc.iter_mut().enumerate() {
                    let x = V::load(src.add(v * V::LANES));
                    *acc = x.mul_add(V::load(w.add(v * V::LANES)), *acc);
                }
                src = src.add(tap_step);
                w = w.add(job.padded_channels);
            }
        }
        let bias = job.bias.add(c0);
        let (lo, hi) = (V::splat(job.bounds.0), V::splat(job.bounds.1));
        for (v, acc) in acc.iter().enumerate() {
            let out = acc.add(V::load(bias.add(v * V::LANES))).clamp(lo, hi);
            out.store(run.output.add(c0 + v * V::LANES));
        }
        c0 += group;
    }
    // Leftover vectors (fewer than four, the last maybe partial) one at a time.
    while c0 < end {
        if c0 + V::LANES <= end {
            channel_vector::<V, 1, true>(job, kernel_rows, run, c0);
        } else {
            channel_vector::<V, 1, false>(job, kernel_rows, run, c0);
        }
        c0 += V::LANES;
    }
}

/// `PIXELS` horizontally adjacent output pixels sharing the same horizontal tap range.
struct PixelRun {
    /// The block of channels computed.
    channels: Range<usize>,
    /// Input column of the first pixel's first valid tap.
    input_col: usize,
    taps: Range<usize>,
    /// Output of the first pixel.
    output: *mut f32,
}

#[inline(always)]
unsafe fn pixel_run<V: F32Vector, const PIXELS: usize>(
    job: &Job,
    kernel_rows: &[(usize, usize)],
    run: &PixelRun,
) {
    let (mut c0, end) = (run.channels.start, run.channels.end);
    let full_end = c0 + (end - c0) / V::LANES * V::LANES;
    while c0 < full_end {
        channel_vector::<V, PIXELS, true>(job, kernel_rows, run, c0);
        c0 += V::LANES;
    }
    if c0 < end {
        channel_vector::<V, PIXELS, false>(job, kernel_rows, run, c0);
    }
}

/// One channel vector (`FULL`: all lanes real; otherwise the last, partial one) of a pixel run.
#[inline(always)]
unsafe fn channel_vector<V: F32Vector, const PIXELS: usize, const FULL: bool>(
    job: &Job,
    kernel_rows: &[(usize, usize)],
    run: &PixelRun,
    c0: usize,
) {
    let g = job.geom;
    let c = g.in_c;
    let lanes = run.channels.end - c0;
    let load = |ptr: *const f32| {
        if FULL {
            V::load(ptr)
        } else {
            V::load_partial(ptr, lanes)
        }
    };
    let pixel_step = g.stride_w * c;
    let tap_step = g.dilation_w * c;
    let mut acc = [V::zero(); PIXELS];
    for &(row_offset, ky) in kernel_rows {
        let mut src = job.input.add(row_offset + run.input_col * c + c0);
        let mut w = job
            .weights
            .add((ky * g.kernel_w + run.taps.start) * job.padded_channels + c0);
        for _ in run.taps.clone() {
            let wv = V::load(w);
            for (p, acc) in acc.iter_mut().enumerate() {
                *acc = load(src.add(p * pixel_step)).mul_add(wv, *acc);
            }
            src = src.add(tap_step);
            w = w.add(job.padded_channels);
        }
    }
    store_pixels::<V, PIXELS, FULL>(job, run.output.add(c0), c, acc, c0, lanes);
}
