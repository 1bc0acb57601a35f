//! Dense (group 1) int8 convolution on NHWC codes: an int8 GEMM with MNN's requantize epilogue
//! fused into the micro-kernel's store.
//!
//! Rows of the GEMM are output pixels. A pointwise convolution reads its rows straight from the
//! input; any other shape first copies a chunk of im2col rows into per-thread scratch (padding
//! taps become the input zero point, code 0 for symmetric inputs). The caller splits work by `pixels`; K is never split, so every output
//! byte is produced by exactly one accumulation whatever the thread count.

use std::cell::RefCell;
use std::ops::Range;

use super::pack::{PackedInt8Weights, WeightLayout};
use super::requant::Requantize;
use crate::geometry::ConvGeometry;

thread_local! {
    static IM2COL: RefCell<Vec<i8>> = const { RefCell::new(Vec::new()) };
    static WIDENED: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
    static ROW_COMPENSATION: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

/// Rows of im2col scratch built at a time: enough to amortise the tile loop, small enough to stay
/// in L2 next to the weights. A multiple of every micro-kernel's row count (6, 8, 12, 16).
fn chunk_rows(row_bytes: usize) -> usize {
    let rows = (96 * 1024 / row_bytes.max(1)) / 48 * 48;
    rows.clamp(48, 480)
}

/// Run a dense int8 convolution for the output pixels `pixels` (row-major `oy * out_w + ox`).
///
/// `input` is the whole NHWC image (`in_h * in_w * in_c` codes); `output[p * ldc + c]` receives
/// output channel `c` of pixel `p`, so `ldc > out_c` writes into a wider tensor (a concat).
/// The kernel family is the one `weights` was packed for.
pub fn conv2d_int8_nhwc(
    geom: &ConvGeometry,
    input: &[i8],
    weights: &PackedInt8Weights,
    requant: &Requantize,
    output: &mut [i8],
    ldc: usize,
    pixels: Range<usize>,
) {
    let all = 0..weights.blocks.len();
    conv2d_int8_nhwc_blocks(geom, input, weights, requant, output, ldc, pixels, all);
}

/// [`conv2d_int8_nhwc`] for the output channels of `weights.blocks[blocks]` only, so callers
/// can split a layer with few pixels over its channels too. Each output is still one whole
/// accumulation, so the bytes do not depend on the split.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_int8_nhwc_blocks(
    geom: &ConvGeometry,
    input: &[i8],
    weights: &PackedInt8Weights,
    requant: &Requantize,
    output: &mut [i8],
    ldc: usize,
    pixels: Range<usize>,
    blocks: Range<usize>,
) {
    check_arguments(geom, input, weights, requant, output, ldc, &pixels);
    assert!(
        blocks.end <= weights.blocks.len(),
        "conv2d_int8_nhwc: block range {blocks:?} beyond {} blocks",
        weights.blocks.len()
    );
    if pixels.is_empty() || blocks.is_empty() {
        return;
    }
    let blocks = &weights.blocks[blocks];
    match weights.layout {
        WeightLayout::Rows => {
            let last = blocks[blocks.len() - 1];
            let channels = blocks[0].first_channel
                ..(last.first_channel + last.vectors * weights.layout.lanes()).min(geom.out_c);
            portable(geom, input, weights, requant, output, ldc, pixels, channels)
        }
        #[cfg(target_arch = "x86_64")]
        _ => simd(geom, input, weights, requant, output, ldc, pixels, blocks),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("SIMD weight layouts are only packed on x86-64"),
    }
}

fn check_arguments(
    geom: &ConvGeometry,
    input: &[i8],
    weights: &PackedInt8Weights,
    requant: &Requantize,
    output: &[i8],
    ldc: usize,
    pixels: &Range<usize>,
) {
    assert!(
        geom.in_c == weights.in_c
            && geom.out_c == weights.out_c
            && geom.kernel_h == weights.kernel_h
            && geom.kernel_w == weights.kernel_w,
        "conv2d_int8_nhwc: geometry {geom:?} does not match weights [{}][{}][{}][{}]",
        weights.out_c,
        weights.in_c,
        weights.kernel_h,
        weights.kernel_w
    );
    assert_eq!(
        requant.channels(),
        geom.out_c,
        "conv2d_int8_nhwc: requantize has the wrong channel count"
    );
    assert!(
        input.len() >= geom.in_h * geom.in_w * geom.in_c,
        "conv2d_int8_nhwc: input has {} codes, geometry needs {}",
        input.len(),
        geom.in_h * geom.in_w * geom.in_c
    );
    assert!(
        ldc >= geom.out_c,
        "conv2d_int8_nhwc: ldc {ldc} < out_c {}",
        geom.out_c
    );
    assert!(
        pixels.end <= geom.pixels(),
        "conv2d_int8_nhwc: pixel range {pixels:?} beyond {} output pixels",
        geom.pixels()
    );
    if !pixels.is_empty() {
        assert!(
            output.len() >= (pixels.end - 1) * ldc + geom.out_c,
            "conv2d_int8_nhwc: output too short for pixels {pixels:?} with ldc {ldc}"
        );
    }
}

/// Copy a short run of codes. Kernel rows of small-channel convolutions are a few bytes long,
/// where a `memcpy` call costs more than the copy; two overlapping fixed-size moves cover any
/// length up to 32 without a loop (a byte loop would be turned back into a `memcpy` call).
#[inline(always)]
fn copy_codes(dst: &mut [i8], src: &[i8]) {
    assert_eq!(dst.len(), src.len());
    // SAFETY: both slices hold `src.len()` bytes.
    unsafe { copy_run(dst.as_mut_ptr(), src.as_ptr(), src.len()) }
}

/// [`copy_codes`] on raw pointers.
///
/// # Safety
/// `src` readable and `dst` writable for `n` bytes, not overlapping.
#[inline(always)]
unsafe fn copy_run(dst: *mut i8, src: *const i8, n: usize) {
    macro_rules! two_moves {
        ($t:ty) => {{
            // w <= n <= 2w, so both moves stay inside the n bytes.
            let w = std::mem::size_of::<$t>();
            let head = (src as *const $t).read_unaligned();
            let tail = (src.add(n - w) as *const $t).read_unaligned();
            (dst as *mut $t).write_unaligned(head);
            (dst.add(n - w) as *mut $t).write_unaligned(tail);
        }};
    }
    match n {
        0 => {}
        1 => *dst = *src,
        2..=3 => two_moves!(u16),
        4..=7 => two_moves!(u32),
        8..=16 => two_moves!(u64),
        17..=32 => two_moves!(u128),
        _ => std::ptr::copy_nonoverlapping(src, dst, n),
    }
}

/// Zero the 0..=3 bytes that pad an im2col row to the k-group, without a `memset` call.
#[inline(always)]
fn zero_pad(dst: &mut [i8]) {
    match dst.len() {
        0 => {}
        1 => dst[0] = 0,
        2 => dst[..2].copy_from_slice(&[0; 2]),
        3 => dst[..3].copy_from_slice(&[0; 3]),
        _ => dst.fill(0),
    }
}

/// Write the im2col rows of output pixels `first..first + count` into `dst` with row stride `lda`
/// (`lda >= k`; the gap after `k` is zero-filled). Padding taps are code `pad` (the input zero
/// point: the value 0).
fn im2col(
    geom: &ConvGeometry,
    input: &[i8],
    first: usize,
    count: usize,
    dst: &mut [i8],
    lda: usize,
    pad: i8,
) {
    let in_c = geom.in_c;
    let kernel_row = geom.kernel_w * in_c;
    let columns: Vec<Range<usize>> = (0..geom.out_w)
        .map(|ox| {
            super::depthwise::valid_taps(
                ox,
                geom.stride_w,
                geom.dilation_w,
                geom.pad_left,
                geom.kernel_w,
                geom.in_w,
            )
        })
        .collect();
    // Offset of input row `iy(oy, ky)` per ky, for the current output row.
    let mut row_offsets: Vec<Option<usize>> = vec![None; geom.kernel_h];
    let mut offsets_row = usize::MAX;
    let mut rows_inside = false;
    let short_runs = kernel_row <= 16;
    assert!(
        input.len() >= geom.in_h * geom.in_w * in_c
            && dst.len() >= count * lda
            && lda >= geom.im2col_len()
    );
    // Walk (oy, ox) incrementally: a division per pixel costs as much as a small pixel's copy.
    let (mut oy, mut ox) = (first / geom.out_w, first % geom.out_w);
    let mut row = 0;
    while row < count {
        // Taps kx.start..kx.end of this column are inside the image.
        let kx = &columns[ox];
        let interior = |ox: usize| {
            let kx = &columns[ox];
            kx.start == 0 && kx.end == geom.kernel_w
        };
        let mut done = 1;
        if geom.dilation_w == 1 && interior(ox) {
            // Interior column (the common case): each kernel row is one contiguous run.
            if offsets_row != oy {
                for (ky, offset) in row_offsets.iter_mut().enumerate() {
                    *offset = geom.input_row(oy, ky).map(|iy| iy * geom.in_w * in_c);
                }
                offsets_row = oy;
                rows_inside = row_offsets.iter().all(Option::is_some);
            }
            let x_offset = (ox * geom.stride_w - geom.pad_left) * in_c;
            // Runs of at most 16 bytes (a stem convolution's 3 channels x 3 taps) in a row of
            // interior pixels: one 16-byte move per run, its overrun overwritten by the next
            // run, the row's zero padding or the next row (rows are written in order).
            let mut pixels = 0;
            if short_runs && rows_inside {
                while ox + pixels < geom.out_w && row + pixels < count && interior(ox + pixels) {
                    pixels += 1;
                }
                let step = geom.stride_w * in_c;
                // The last pixel's last kernel row reads and writes furthest.
                let last_read = row_offsets[geom.kernel_h - 1].unwrap_or(usize::MAX)
                    + x_offset
                    + (pixels - 1) * step
                    + 16;
                let last_write = (row + pixels - 1) * lda + (geom.kernel_h - 1) * kernel_row + 16;
                if last_read > input.len() || last_write > dst.len() {
                    pixels = 0;
                }
            }
            if pixels > 0 {
                let step = geom.stride_w * in_c;
                for p in 0..pixels {
                    let target = dst.as_mut_ptr().wrapping_add((row + p) * lda);
                    for (ky, offset) in row_offsets.iter().enumerate() {
                        let source = offset.unwrap_or(0) + x_offset + p * step;
                        // SAFETY: the reads and writes of the last pixel's last kernel row,
                        // the furthest ones, were checked against both slices above.
                        unsafe {
                            let run = (input.as_ptr().add(source) as *const u128).read_unaligned();
                            (target.add(ky * kernel_row) as *mut u128).write_unaligned(run);
                        }
                    }
                    let at = (row + p) * lda;
                    zero_pad(&mut dst[at + geom.kernel_h * kernel_row..at + lda]);
                }
                done = pixels;
            } else {
                let dst_row = &mut dst[row * lda..(row + 1) * lda];
                for (ky, offset) in row_offsets.iter().enumerate() {
                    match offset {
                        // SAFETY: every tap of this pixel is inside the image (checked by
                        // `valid_taps` and `input_row`), so the run lies inside `input`; the
                        // target lies inside `dst_row` because `lda >= kernel_h * kernel_row`.
                        Some(offset) => unsafe {
                            copy_run(
                                dst_row.as_mut_ptr().add(ky * kernel_row),
                                input.as_ptr().add(offset + x_offset),
                                kernel_row,
                            )
                        },
                        None => dst_row[ky * kernel_row..(ky + 1) * kernel_row].fill(pad),
                    }
                }
                zero_pad(&mut dst_row[geom.kernel_h * kernel_row..]);
            }
        } else {
            let dst_row = &mut dst[row * lda..(row + 1) * lda];
            for ky in 0..geom.kernel_h {
                let target = &mut dst_row[ky * kernel_row..(ky + 1) * kernel_row];
                let Some(iy) = geom.input_row(oy, ky) else {
                    target.fill(pad);
                    continue;
                };
                // Border columns only: a zero-length fill is still a `memset` call.
                if kx.start > 0 {
                    target[..kx.start * in_c].fill(pad);
                }
                if kx.end < geom.kernel_w {
                    target[kx.end * in_c..].fill(pad);
                }
                if kx.is_empty() {
                    continue;
                }
                let ix0 = ox * geom.stride_w + kx.start * geom.dilation_w - geom.pad_left;
                let src_row = &input[iy * geom.in_w * in_c..(iy + 1) * geom.in_w * in_c];
                if geom.dilation_w == 1 {
                    // Adjacent taps are adjacent pixels: one contiguous run.
                    let run = kx.len() * in_c;
                    copy_codes(
                        &mut target[kx.start * in_c..kx.end * in_c],
                        &src_row[ix0 * in_c..ix0 * in_c + run],
                    );
                } else {
                    for (t, tap) in kx.clone().enumerate() {
                        let ix = ix0 + t * geom.dilation_w;
                        copy_codes(
                            &mut target[tap * in_c..(tap + 1) * in_c],
                            &src_row[ix * in_c..(ix + 1) * in_c],
                        );
                    }
                }
            }
            zero_pad(&mut dst_row[geom.kernel_h * kernel_row..]);
        }
        row += done;
        ox += done;
        if ox == geom.out_w {
            ox = 0;
            oy += 1;
        }
    }
}

/// The portable kernel and the reference for every SIMD kernel: an i32 dot product per output
/// and [`Requantize::apply`].
#[allow(clippy::too_many_arguments)]
fn portable(
    geom: &ConvGeometry,
    input: &[i8],
    weights: &PackedInt8Weights,
    requant: &Requantize,
    output: &mut [i8],
    ldc: usize,
    pixels: Range<usize>,
    channels: Range<usize>,
) {
    let k = weights.k;
    const ROWS: usize = 64;
    // 16 bytes of slack for im2col's 16-byte moves.
    let mut rows = vec![0i8; ROWS * k + 16];
    let mut first = pixels.start;
    while first < pixels.end {
        let count = ROWS.min(pixels.end - first);
        im2col(geom, input, first, count, &mut rows, k, requant.pad);
        for r in 0..count {
            let row = &rows[r * k..(r + 1) * k];
            let p = first + r;
            for c in channels.clone() {
                let w = &weights.rows[c * k..(c + 1) * k];
                let acc: i32 = row.iter().zip(w).map(|(&a, &b)| a as i32 * b as i32).sum();
                output[p * ldc + c] = requant.apply(acc, c);
            }
        }
        first += count;
    }
}

/// Drive the SIMD micro-kernels over chunks of pixels and the channel blocks `blocks`.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
fn simd(
    geom: &ConvGeometry,
    input: &[i8],
    weights: &PackedInt8Weights,
    requant: &Requantize,
    output: &mut [i8],
    ldc: usize,
    pixels: Range<usize>,
    blocks: &[super::pack::ChannelBlock],
) {
    use super::x86;
    let layout = weights.layout;
    let data = weights.data();
    let pointwise = geom.is_pointwise();
    let lda8 = weights.k_padded;
    let chunk = chunk_rows(lda8 * if layout == WeightLayout::Vnni16 { 1 } else { 3 });
    let out_ptr = output.as_mut_ptr();
    IM2COL.with_borrow_mut(|im2col_buf| {
        WIDENED.with_borrow_mut(|wide_buf| {
            let mut first = pixels.start;
            while first < pixels.end {
                let rows = chunk.min(pixels.end - first);
                // The chunk's i8 rows: straight from the input for pointwise convolutions.
                let (a8, lda, k): (&[i8], usize, usize) = if pointwise {
                    (
                        &input[first * geom.in_c..(first + rows) * geom.in_c],
                        geom.in_c,
                        geom.in_c,
                    )
                } else {
                    // 16 bytes of slack for im2col's 16-byte moves.
                    if im2col_buf.len() < rows * lda8 + 16 {
                        im2col_buf.resize(rows * lda8 + 16, 0);
                    }
                    im2col(geom, input, first, rows, im2col_buf, lda8, requant.pad);
                    (&im2col_buf[..rows * lda8], lda8, lda8)
                };
                let tile = x86::TileParams {
                    k,
                    lo: requant.lo as f32,
                    hi: requant.hi as f32,
                    ldc,
                    ratio: requant.ratio,
                };
                match layout {
                    WeightLayout::Vnni16 => {
                        // AMX tiles where the CPU has them and the rows are whole k-groups of 4
                        // long enough to pay for the tiles; VNNI otherwise.
                        let amx = weights
                            .amx
                            .as_ref()
                            .filter(|_| k.is_multiple_of(4) && k >= super::amx::AMX_MIN_K);
                        if let Some(amx) = amx {
                            let last = blocks[blocks.len() - 1];
                            let channels =
                                blocks[0].first_channel..last.first_channel + last.vectors * 16;
                            // SAFETY: `amx` exists only where `amx_usable` granted the tiles;
                            // `a8` holds `rows` rows of `lda >= k` codes, `k` a multiple of 4
                            // within the packed k; `out` covers the rows.
                            unsafe {
                                super::amx::amx_rows(
                                    &tile,
                                    a8.as_ptr(),
                                    lda,
                                    rows,
                                    amx,
                                    channels,
                                    weights,
                                    requant,
                                    out_ptr.add(first * ldc),
                                )
                            }
                        } else {
                            let comp = ROW_COMPENSATION.with_borrow_mut(|comp| {
                                if comp.len() < rows {
                                    comp.resize(rows, 0);
                                }
                                // SAFETY: VNNI is supported (the weights were packed for it);
                                // `a8` holds `rows` rows of `lda >= k` codes.
                                unsafe {
                                    x86::vnni_row_compensation(
                                        a8.as_ptr(),
                                        lda,
                                        k,
                                        rows,
                                        comp.as_mut_ptr(),
                                    )
                                };
                                comp.as_ptr()
                            });
                            for block in blocks {
                                // SAFETY: the weights were packed for VNNI, which
                                // `pack_conv_for` checked the CPU supports; pointers stay within
                                // the slices checked by `check_arguments` (rows beyond `rows`
                                // are never read).
                                unsafe {
                                    x86::vnni_rows(
                                        &tile,
                                        a8.as_ptr(),
                                        lda,
                                        rows,
                                        data.as_ptr().add(block.offset),
                                        block,
                                        weights,
                                        requant,
                                        comp,
                                        out_ptr.add(first * ldc),
                                    )
                                }
                            }
                        }
                    }
                    WeightLayout::I16Pairs { lanes } => {
                        // Sign-extend the chunk to i16 pairs (k padded to even with zeros).
                        let lda16 = weights.k_padded;
                        if wide_buf.len() < rows * lda16 {
                            wide_buf.resize(rows * lda16, 0);
                        }
                        for r in 0..rows {
                            let src = &a8[r * lda..r * lda + k.min(lda16)];
                            let dst = &mut wide_buf[r * lda16..(r + 1) * lda16];
                            for (d, &s) in dst.iter_mut().zip(src) {
                                *d = s as i16;
                            }
                            dst[src.len()..].fill(0);
                        }
                        let tile = x86::TileParams { k: lda16, ..tile };
                        for block in blocks {
                            // SAFETY: as above, for the AVX-512 or AVX2 i16 layout.
                            unsafe {
                                let b = data.as_ptr().add(block.offset);
                                let out = out_ptr.add(first * ldc);
                                if lanes == 16 {
                                    x86::avx512_i16_rows(
                                        &tile,
                                        wide_buf.as_ptr(),
                                        lda16,
                                        rows,
                                        b,
                                        block,
                                        weights,
                                        requant,
                                        std::ptr::null(),
                                        out,
                                    )
                                } else {
                                    x86::avx2_i16_rows(
                                        &tile,
                                        wide_buf.as_ptr(),
                                        lda16,
                                        rows,
                                        b,
                                        block,
                                        weights,
                                        requant,
                                        std::ptr::null(),
                                        out,
                                    )
                                }
                            }
                        }
                    }
                    WeightLayout::Rows => unreachable!(),
                }
                first += rows;
            }
        })
    });
}
