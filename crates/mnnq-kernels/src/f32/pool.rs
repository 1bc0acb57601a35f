//! Pooling over NHWC tensors, vectorised across channels.
//!
//! Windows follow [`ConvGeometry`] (kernel, stride, dilation, top/left padding). Taps in padding
//! are skipped; a window with no tap inside the image yields 0. Average pooling with
//! `count_include_pad` divides by the taps inside the padded image, taken as extending
//! `pad_top`/`pad_left` beyond both ends (symmetric padding, as MNN and PyTorch count it);
//! without it, by the taps inside the image.

use super::depthwise::valid_taps;
use super::pack::Family;
use super::simd::{F32Vector, Portable};
use crate::dispatch::{active_isa, Isa};
use crate::geometry::ConvGeometry;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};

/// Which reduction a pooling window applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average { count_include_pad: bool },
}

/// Max pooling of the output rows `row_range`; `output` holds exactly those rows.
pub fn max_pool2d_nhwc(
    geom: &ConvGeometry,
    input: &[f32],
    output: &mut [f32],
    row_range: Range<usize>,
) {
    pool2d_nhwc_isa(active_isa(), PoolKind::Max, geom, input, output, row_range)
}

/// Average pooling of the output rows `row_range`; `output` holds exactly those rows.
pub fn avg_pool2d_nhwc(
    geom: &ConvGeometry,
    input: &[f32],
    count_include_pad: bool,
    output: &mut [f32],
    row_range: Range<usize>,
) {
    let kind = PoolKind::Average { count_include_pad };
    pool2d_nhwc_isa(active_isa(), kind, geom, input, output, row_range)
}

/// Pooling with a given ISA (must be supported by the CPU). Channels: `geom.in_c`, which must
/// equal `geom.out_c`.
pub fn pool2d_nhwc_isa(
    isa: Isa,
    kind: PoolKind,
    geom: &ConvGeometry,
    input: &[f32],
    output: &mut [f32],
    row_range: Range<usize>,
) {
    let c = geom.in_c;
    assert_eq!(geom.out_c, c, "pool: input and output channels differ");
    assert!(
        geom.stride_h > 0 && geom.stride_w > 0 && geom.dilation_h > 0 && geom.dilation_w > 0,
        "pool: strides and dilations must be positive"
    );
    assert!(
        input.len() >= geom.in_h * geom.in_w * c,
        "pool: input has {} floats, needs {}x{}x{c}",
        input.len(),
        geom.in_h,
        geom.in_w
    );
    assert!(
        row_range.end <= geom.out_h,
        "pool: row range {row_range:?} beyond {} rows",
        geom.out_h
    );
    assert!(
        output.len() >= row_range.len() * geom.out_w * c,
        "pool: output has {} floats, needs {} rows of {}x{c}",
        output.len(),
        row_range.len(),
        geom.out_w
    );
    let job = PoolJob {
        kind,
        geom,
        input: input.as_ptr(),
        output: output.as_mut_ptr(),
        rows: row_range,
    };
    // SAFETY: sizes checked above; `Family::for_isa` checked the CPU supports the ISA.
    unsafe {
        match Family::for_isa(isa) {
            Family::Portable => pool_rows::<Portable>(&job),
            #[cfg(target_arch = "x86_64")]
            Family::Avx2 => pool_avx2(&job),
            #[cfg(target_arch = "x86_64")]
            Family::Avx512 => pool_avx512(&job),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 kernel family on another architecture"),
        }
    }
}

struct PoolJob<'a> {
    kind: PoolKind,
    geom: &'a ConvGeometry,
    input: *const f32,
    output: *mut f32,
    rows: Range<usize>,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pool_avx2(job: &PoolJob) {
    pool_rows::<Avx2>(job)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn pool_avx512(job: &PoolJob) {
    pool_rows::<Avx512>(job)
}

/// Taps of a window inside the padded extent `-pad .. size + pad`.
fn taps_in_padded(
    o: usize,
    taps: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    size: usize,
) -> usize {
    // Shift everything by `pad` so the padded extent starts at 0.
    valid_taps(o, taps, stride, dilation, 0, size + 2 * pad).len()
}

#[inline(always)]
unsafe fn pool_rows<V: F32Vector>(job: &PoolJob) {
    let g = job.geom;
    let c = g.in_c;
    for (out_row, oy) in job.rows.clone().enumerate() {
        let y_taps = valid_taps(oy, g.kernel_h, g.stride_h, g.dilation_h, g.pad_top, g.in_h);
        for ox in 0..g.out_w {
            let x_taps = valid_taps(ox, g.kernel_w, g.stride_w, g.dilation_w, g.pad_left, g.in_w);
            let inside = y_taps.len() * x_taps.len();
            let divisor = match job.kind {
                PoolKind::Max => 1,
                PoolKind::Average {
                    count_include_pad: false,
                } => inside,
                PoolKind::Average {
                    count_include_pad: true,
                } => {
                    taps_in_padded(oy, g.kernel_h, g.stride_h, g.dilation_h, g.pad_top, g.in_h)
                        * taps_in_padded(
                            ox,
                            g.kernel_w,
                            g.stride_w,
                            g.dilation_w,
                            g.pad_left,
                            g.in_w,
                        )
                }
            };
            let scale = V::splat(if divisor == 0 {
                0.0
            } else {
                1.0 / divisor as f32
            });
            let out = job.output.add((out_row * g.out_w + ox) * c);
            let mut c0 = 0;
            while c0 < c {
                let lanes = (c - c0).min(V::LANES);
                let mut acc = match job.kind {
                    PoolKind::Max if inside > 0 => V::splat(f32::NEG_INFINITY),
                    _ => V::zero(),
                };
                for ky in y_taps.clone() {
                    let iy = oy * g.stride_h + ky * g.dilation_h - g.pad_top;
                    for kx in x_taps.clone() {
                        let ix = ox * g.stride_w + kx * g.dilation_w - g.pad_left;
                        let v = V::load_n(job.input.add((iy * g.in_w + ix) * c + c0), lanes);
                        acc = match job.kind {
                            PoolKind::Max => acc.max(v),
                            PoolKind::Average { .. } => acc.add(v),
                        };
                    }
                }
                if let PoolKind::Average { .. } = job.kind {
                    acc = acc.mul(scale);
                }
                acc.store_n(out.add(c0), lanes);
                c0 += V::LANES;
            }
        }
    }
}

/// Global average pooling: `output[ch] = mean over pixels of input[pixel][ch]`, with the active
/// ISA. Sums run over pixels in order, then are multiplied by `1 / pixels`.
pub fn global_avg_pool_nhwc(pixels: usize, channels: usize, input: &[f32], output: &mut [f32]) {
    global_avg_pool_nhwc_isa(active_isa(), pixels, channels, input, output)
}

/// [`global_avg_pool_nhwc`] with a given ISA.
pub fn global_avg_pool_nhwc_isa(
    isa: Isa,
    pixels: usize,
    channels: usize,
    input: &[f32],
    output: &mut [f32],
) {
    assert!(
        input.len() >= pixels * channels && output.len() >= channels,
        "global_avg_pool: input {} floats (needs {pixels}x{channels}), output {} (needs {channels})",
        input.len(),
        output.len()
    );
    let (src, dst) = (input.as_ptr(), output.as_mut_ptr());
    // SAFETY: sizes checked above; `Family::for_isa` checked the CPU supports the ISA.
    unsafe {
        match Family::for_isa(isa) {
            Family::Portable => global_avg::<Portable>(pixels, channels, src, dst),
            #[cfg(target_arch = "x86_64")]
            Family::Avx2 => global_avg_avx2(pixels, channels, src, dst),
            #[cfg(target_arch = "x86_64")]
            Family::Avx512 => global_avg_avx512(pixels, channels, src, dst),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 kernel family on another architecture"),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn global_avg_avx2(pixels: usize, channels: usize, src: *const f32, dst: *mut f32) {
    global_avg::<Avx2>(pixels, channels, src, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn global_avg_avx512(pixels: usize, channels: usize, src: *const f32, dst: *mut f32) {
    global_avg::<Avx512>(pixels, channels, src, dst)
}

#[inline(always)]
unsafe fn global_avg<V: F32Vector>(pixels: usize, channels: usize, src: *const f32, dst: *mut f32) {
    let scale = V::splat(if pixels == 0 {
        0.0
    } else {
        1.0 / pixels as f32
    });
    // Four channel vectors at a time: four independent add chains per pass over the pixels.
    const GROUP: usize = 4;
    let mut c0 = 0;
    while c0 < channels {
        let mut acc = [V::zero(); GROUP];
        let lanes = |g: usize| (channels.saturating_sub(c0 + g * V::LANES)).min(V::LANES);
        for p in 0..pixels {
            let row = src.add(p * channels + c0);
            for (g, acc) in acc.iter_mut().enumerate() {
                let n = lanes(g);
                if n > 0 {
                    *acc = acc.add(V::load_n(row.add(g * V::LANES), n));
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            let n = lanes(g);
            if n > 0 {
                acc.mul(scale).store_n(dst.add(c0 + g * V::LANES), n);
            }
        }
        c0 += GROUP * V::LANES;
    }
}
