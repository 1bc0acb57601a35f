//! int8 pooling on NHWC codes (MNN §11.7). Padding is always excluded: max over the valid window,
//! average `(sum of valid codes) * floor(2^24 / n) >> 24` (arithmetic shift, i.e. floor) with
//! `n` the number of valid taps. Pure integer arithmetic, so every ISA gives the same bytes; the
//! loops over channels are written to auto-vectorise and compiled once per ISA.

use std::ops::Range;

use super::depthwise::valid_taps;
use crate::dispatch::{active_isa, Isa};
use crate::geometry::ConvGeometry;

/// Kind of int8 pooling.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
}

/// MNN's average of `n` codes whose sum is `sum`: multiply by `floor(2^24 / n)`, shift right 24.
#[inline(always)]
pub fn average_code(sum: i32, n: usize) -> i8 {
    let factor = (1i32 << 24) / n as i32;
    // |sum| <= 127 n, so |sum * factor| <= 127 * 2^24 < 2^31.
    ((sum * factor) >> 24) as i8
}

/// Pool output rows `rows` of an NHWC int8 tensor with the active ISA. `geom.in_c == geom.out_c`;
/// `output[(oy * out_w + ox) * ldc + c]`. Global pooling is a window covering the whole plane.
pub fn pool_int8_nhwc(
    kind: PoolKind,
    geom: &ConvGeometry,
    input: &[i8],
    output: &mut [i8],
    ldc: usize,
    rows: Range<usize>,
) {
    pool_int8_nhwc_with(active_isa(), kind, geom, input, output, ldc, rows)
}

/// [`pool_int8_nhwc`] compiled for `isa` (which must be supported).
pub fn pool_int8_nhwc_with(
    isa: Isa,
    kind: PoolKind,
    geom: &ConvGeometry,
    input: &[i8],
    output: &mut [i8],
    ldc: usize,
    rows: Range<usize>,
) {
    let c = geom.in_c;
    assert_eq!(
        geom.out_c, c,
        "pool_int8_nhwc: in_c {c} != out_c {}",
        geom.out_c
    );
    assert!(
        isa.is_supported(),
        "pool_int8_nhwc: {isa} is not supported by this CPU"
    );
    assert!(
        input.len() >= geom.in_h * geom.in_w * c,
        "pool_int8_nhwc: input too short"
    );
    assert!(
        ldc >= c && rows.end <= geom.out_h,
        "pool_int8_nhwc: bad ldc {ldc} or rows {rows:?}"
    );
    if rows.is_empty() || c == 0 {
        return;
    }
    assert!(
        output.len() >= ((rows.end - 1) * geom.out_w + geom.out_w - 1) * ldc + c,
        "pool_int8_nhwc: output too short"
    );
    match isa {
        // SAFETY: the ISA is supported (checked above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe {
            pool_avx512(kind, geom, input, output, ldc, rows)
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { pool_avx2(kind, geom, input, output, ldc, rows) },
        _ => pool_body(kind, geom, input, output, ldc, rows),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pool_avx512(
    kind: PoolKind,
    g: &ConvGeometry,
    i: &[i8],
    o: &mut [i8],
    ldc: usize,
    r: Range<usize>,
) {
    pool_body(kind, g, i, o, ldc, r)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pool_avx2(
    kind: PoolKind,
    g: &ConvGeometry,
    i: &[i8],
    o: &mut [i8],
    ldc: usize,
    r: Range<usize>,
) {
    pool_body(kind, g, i, o, ldc, r)
}

#[inline(always)]
fn pool_body(
    kind: PoolKind,
    geom: &ConvGeometry,
    input: &[i8],
    output: &mut [i8],
    ldc: usize,
    rows: Range<usize>,
) {
    let c = geom.in_c;
    let mut sums = vec![0i32; c];
    for oy in rows {
        let ky = valid_taps(
            oy,
            geom.stride_h,
            geom.dilation_h,
            geom.pad_top,
            geom.kernel_h,
            geom.in_h,
        );
        for ox in 0..geom.out_w {
            let kx = valid_taps(
                ox,
                geom.stride_w,
                geom.dilation_w,
                geom.pad_left,
                geom.kernel_w,
                geom.in_w,
            );
            let out = &mut output[(oy * geom.out_w + ox) * ldc..][..c];
            let n = ky.len() * kx.len();
            let taps = ky
                .clone()
                .flat_map(|y| kx.clone().map(move |x| (y, x)))
                .map(|(y, x)| {
                    let iy = oy * geom.stride_h + y * geom.dilation_h - geom.pad_top;
                    let ix = ox * geom.stride_w + x * geom.dilation_w - geom.pad_left;
                    &input[(iy * geom.in_w + ix) * c..][..c]
                });
            match kind {
                PoolKind::Max => {
                    // An empty window (only possible with padding larger than the kernel) gives
                    // the lowest code.
                    out.fill(i8::MIN + 1);
                    for src in taps {
                        for (o, &s) in out.iter_mut().zip(src) {
                            *o = (*o).max(s);
                        }
                    }
                }
                PoolKind::Average => {
                    sums.fill(0);
                    for src in taps {
                        for (acc, &s) in sums.iter_mut().zip(src) {
                            *acc += s as i32;
                        }
                    }
                    if n == 0 {
                        out.fill(0);
                    } else {
                        for (o, &s) in out.iter_mut().zip(&sums) {
                            *o = average_code(s, n);
                        }
                    }
                }
            }
        }
    }
}
