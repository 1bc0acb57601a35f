//! The gather half of a transposed convolution: sums the GEMM's column buffer into output rows,
//! adds the bias and applies the activation, vectorised over output channels.

use super::depthwise::valid_taps;
use super::pack::Family;
use super::simd::{F32Vector, Portable};
use crate::geometry::ConvGeometry;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};

/// One block of output rows to gather.
pub(crate) struct Col2Im<'a> {
    pub(crate) geom: &'a ConvGeometry,
    /// `[iy - first_input_row][ix][ky * kw + kx][oc]`: every input pixel times every tap.
    pub(crate) columns: *const f32,
    pub(crate) first_input_row: usize,
    /// Bias padded with zeros to a whole number of 16-lane vectors.
    pub(crate) bias: *const f32,
    /// When the kernel tiles the output exactly ([`tiles_exactly`]): the bias of every value
    /// of an output row (`out_w` copies), padded to whole vectors.
    pub(crate) row_bias: Option<*const f32>,
    pub(crate) lo: f32,
    pub(crate) hi: f32,
    /// Scratch for one output row's sums (`out_w * out_c` floats): stays in L1, so the output
    /// is written once instead of zeroed, accumulated and rewritten.
    pub(crate) row_sums: *mut f32,
    /// Output row `rows.start`.
    pub(crate) output: *mut f32,
    pub(crate) rows: Range<usize>,
}

/// The input index feeding output index `o` through tap `t`: `o = i * stride + t * dilation -
/// pad`, when such an integer `i < size` exists.
#[inline]
pub(crate) fn deconv_source(
    o: usize,
    t: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    size: usize,
) -> Option<usize> {
    let shifted = (o + pad).checked_sub(t * dilation)?;
    (shifted % stride == 0)
        .then_some(shifted / stride)
        .filter(|&i| i < size)
}

/// Whether each output pixel receives exactly one tap from one input pixel (stride = kernel,
/// no dilation or padding, no extra output columns): the 2x2 stride-2 up-sampling of
/// detection heads. Then input pixel `(iy, ix)` and kernel row `ky` fill one contiguous run of
/// `kernel_w * out_c` outputs from one contiguous run of the column buffer, and the gather is a
/// copy with the bias added.
pub(crate) fn tiles_exactly(g: &ConvGeometry) -> bool {
    g.stride_h == g.kernel_h
        && g.stride_w == g.kernel_w
        && g.dilation_h == 1
        && g.dilation_w == 1
        && g.pad_top == 0
        && g.pad_left == 0
        && g.out_w == g.in_w * g.kernel_w
}

/// Runs the gather with `family`'s vectors.
///
/// # Safety
/// The pointers must cover the sizes the geometry and row range imply; `family` must be
/// supported by the CPU (it comes from a [`super::PackedWeights`], checked when packed).
pub(crate) unsafe fn col2im_rows(family: Family, job: &Col2Im) {
    match family {
        Family::Portable => gather::<Portable>(job),
        #[cfg(target_arch = "x86_64")]
        Family::Avx2 => gather_avx2(job),
        #[cfg(target_arch = "x86_64")]
        Family::Avx512 => gather_avx512(job),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("x86 kernel family on another architecture"),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gather_avx2(job: &Col2Im) {
    gather::<Avx2>(job)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn gather_avx512(job: &Col2Im) {
    gather::<Avx512>(job)
}

#[inline(always)]
unsafe fn gather<V: F32Vector>(job: &Col2Im) {
    let g = job.geom;
    let out_c = g.out_c;
    let taps = g.kernel_h * g.kernel_w;
    let row_len = g.out_w * out_c;
    let (lo, hi) = (V::splat(job.lo), V::splat(job.hi));
    for oy in job.rows.clone() {
        if let (Some(row_bias), true) = (job.row_bias, oy / g.kernel_h < g.in_h) {
            copy_runs::<V>(job, oy, row_bias, lo, hi);
            continue;
        }
        let sums = job.row_sums;
        let mut i = 0;
        while i < row_len {
            V::zero().store_n(sums.add(i), row_len - i);
            i += V::LANES;
        }
        // Taps in (ky, kx) order; a tap adds at most one input pixel to an output pixel, so each
        // output sums its contributions in that fixed order whatever the row split.
        for ky in 0..g.kernel_h {
            let Some(iy) = deconv_source(oy, ky, g.stride_h, g.dilation_h, g.pad_top, g.in_h)
            else {
                continue;
            };
            let column_row = (iy - job.first_input_row) * g.in_w;
            for kx in 0..g.kernel_w {
                // Input columns landing inside the row: ox = ix * stride + kx * dilation - pad.
                let sources = valid_taps(
                    1,
                    g.in_w,
                    kx * g.dilation_w,
                    g.stride_w,
                    g.pad_left,
                    g.out_w,
                );
                let tap = ky * g.kernel_w + kx;
                for ix in sources {
                    let ox = ix * g.stride_w + kx * g.dilation_w - g.pad_left;
                    let src = job.columns.add(((column_row + ix) * taps + tap) * out_c);
                    let dst = sums.add(ox * out_c);
                    let mut c0 = 0;
                    while c0 + V::LANES <= out_c {
                        let sum = V::load(dst.add(c0)).add(V::load(src.add(c0)));
                        sum.store(dst.add(c0));
                        c0 += V::LANES;
                    }
                    // Scalar tail: a masked load right after an overlapping masked store (the
                    // neighbouring pixel's, when channels are few) cannot be store-forwarded
                    // and stalls.
                    for c in c0..out_c {
                        *dst.add(c) += *src.add(c);
                    }
                }
            }
        }
        let out = job.output.add((oy - job.rows.start) * row_len);
        for ox in 0..g.out_w {
            let mut c0 = 0;
            while c0 < out_c {
                let n = out_c - c0;
                let at = ox * out_c + c0;
                let value = V::load_n(sums.add(at), n).add(V::load(job.bias.add(c0)));
                value.clamp(lo, hi).store_n(out.add(at), n);
                c0 += V::LANES;
            }
        }
    }
}

/// One output row of an exactly tiled deconvolution ([`tiles_exactly`]): each input pixel's
/// run of `kernel_w * out_c` values is copied from the column buffer with the bias and
/// activation applied, with no per-row sums to zero and re-read. The arithmetic is the general
/// gather's, `(0 + column) + bias`, so both paths give the same bits.
#[inline(always)]
unsafe fn copy_runs<V: F32Vector>(job: &Col2Im, oy: usize, row_bias: *const f32, lo: V, hi: V) {
    let g = job.geom;
    let (iy, ky) = (oy / g.kernel_h, oy % g.kernel_h);
    let taps = g.kernel_h * g.kernel_w;
    let run = g.kernel_w * g.out_c;
    let column_row = (iy - job.first_input_row) * g.in_w;
    let out = job.output.add((oy - job.rows.start) * g.out_w * g.out_c);
    let source = |ix: usize| {
        job.columns
            .add(((column_row + ix) * taps + ky * g.kernel_w) * g.out_c)
    };
    if run >= V::LANES {
        // Runs of whole vectors: each is finished on its way out (a run's bias is the row's
        // first `run` values, as a run holds whole pixels).
        for ix in 0..g.in_w {
            let (src, dst) = (source(ix), out.add(ix * run));
            let mut c0 = 0;
            while c0 < run {
                finish(src.add(c0), row_bias.add(c0), dst.add(c0), run - c0, lo, hi);
                c0 += V::LANES;
            }
        }
        return;
    }
    // Short runs (2 values for a one-channel 2x2 map): moved into place, then the row is
    // finished in whole vectors. Vector moves, not `copy_nonoverlapping`: a `memmove` call per
    // run cost more than the whole gather.
    for ix in 0..g.in_w {
        V::load_n(source(ix), run).store_n(out.add(ix * run), run);
    }
    let row_len = g.out_w * g.out_c;
    let mut i = 0;
    while i < row_len {
        finish(out.add(i), row_bias.add(i), out.add(i), row_len - i, lo, hi);
        i += V::LANES;
    }
}

/// `(0 + column) + bias`, clamped, for `n` values: the general gather's arithmetic, value for
/// value. A function, not a closure: a closure would not inherit the caller's target features
/// and its intrinsics would not inline.
#[inline(always)]
unsafe fn finish<V: F32Vector>(
    src: *const f32,
    bias: *const f32,
    dst: *mut f32,
    n: usize,
    lo: V,
    hi: V,
) {
    let sum = V::zero().add(V::load_n(src, n));
    sum.add(V::load(bias)).clamp(lo, hi).store_n(dst, n);
}
