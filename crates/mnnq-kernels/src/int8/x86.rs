//! x86-64 int8 GEMM micro-kernels with the requantize epilogue fused into the store.
//!
//! Tiles (rows = output pixels x vectors of output channels), chosen so accumulators, the weight
//! vectors of one k-group and one broadcast fit the register file:
//! * AVX-512 VNNI: 6x4, 8x3, 12x2, 16x1 zmm (16 channels each), `vpdpbusd` on weight `w + 128`
//!   (u8) x activation (s8, broadcast from memory by the instruction itself); each row's
//!   accumulators start at `-128 * sum_k a` ([`vnni_row_compensation`]).
//! * AVX-512 (no VNNI): same tiles, `vpmaddwd` on sign-extended i16 pairs + `vpaddd`.
//! * AVX2: 6x2, 8x1 ymm (8 channels each), `vpmaddwd` + `vpaddd`.
//!
//! Row tails of at most 4 rows use 1-, 2- or 4-row tiles; a tile with fewer valid rows than its
//! height (only a tail of 5+ rows) reads its last valid row again for the missing ones and does
//! not store them. The epilogue is `(cvt(acc + offset) * alpha) * ratio + b` (MNN x86's order,
//! separate `vmulps`, `vaddps`: no FMA, like the reference), `max(y, lo)`, `min(y, hi)`, then
//! round half away from zero as `trunc(y + copysign(0.49999997, y))`, which equals `f32::round`
//! (see `requant.rs`). The AVX-512 store packs a row's vectors to bytes with saturating packs
//! (no-ops: the values are already clamped) and writes them with one store.

use std::arch::x86_64::*;

use super::pack::{ChannelBlock, PackedInt8Weights};
use super::requant::{Requantize, ALMOST_HALF};

/// Per-call constants shared by every tile.
#[derive(Clone, Copy)]
pub(crate) struct TileParams {
    /// Accumulation length in elements of the A rows (may be less than the packed k for VNNI
    /// pointwise rows whose channel count is not a multiple of 4).
    pub k: usize,
    pub lo: f32,
    pub hi: f32,
    pub ldc: usize,
    /// `s_in / s_out` ([`Requantize::ratio`]).
    pub ratio: f32,
}

/// Where one tile reads and writes.
pub(crate) struct Tile<A> {
    pub a: *const A,
    pub lda: usize,
    pub rows: usize,
    pub b: *const u8,
    pub offset: *const i32,
    /// VNNI only: per row, the initial accumulator `-128 * sum_k a` (null otherwise).
    pub comp: *const i32,
    pub mult: *const f32,
    pub bias: *const f32,
    pub n_valid: usize,
    pub out: *mut i8,
}

macro_rules! row_driver {
    ($name:ident, $elem:ty, $features:literal, $lanes:expr, [$(($nv:literal, $mr:literal)),*], $kernel:ident) => {
        /// Run every row tile of one channel block.
        ///
        /// # Safety
        /// The CPU must support the target features; `a` must hold `rows` rows of `lda` elements
        /// with at least `tile.k` readable; `b` the block's packed data; `out` `rows` rows of
        /// `ldc` bytes covering the block's channels; `comp` null or `rows` row compensations.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name(
            tile: &TileParams,
            a: *const $elem,
            lda: usize,
            rows: usize,
            b: *const u8,
            block: &ChannelBlock,
            weights: &PackedInt8Weights,
            requant: &Requantize,
            comp: *const i32,
            out: *mut i8,
        ) {
            let c0 = block.first_channel;
            let n_valid = (weights.out_c - c0).min(block.vectors * $lanes);
            let mut m0 = 0;
            while m0 < rows {
                let t = Tile {
                    a: a.add(m0 * lda),
                    lda,
                    rows: rows - m0,
                    b,
                    offset: requant.offset.as_ptr().add(c0),
                    comp: if comp.is_null() { comp } else { comp.add(m0) },
                    mult: requant.alpha.as_ptr().add(c0),
                    bias: requant.bias.as_ptr().add(c0),
                    n_valid,
                    out: out.add(m0 * tile.ldc + c0),
                };
                // Fewer rows left than a full tile (small images, the last tile, a 1-pixel fully
                // connected layer): a shorter tile instead of recomputing repeated rows.
                let left = rows - m0;
                let done = match block.vectors {
                    $($nv => {
                        if left >= $mr || left > 4 {
                            $kernel::<$mr, $nv>(tile, &t);
                            $mr
                        } else if left > 2 {
                            $kernel::<4, $nv>(tile, &t);
                            4
                        } else if left == 2 {
                            $kernel::<2, $nv>(tile, &t);
                            2
                        } else {
                            $kernel::<1, $nv>(tile, &t);
                            1
                        }
                    })*
                    other => unreachable!("no micro-kernel for {other} vectors"),
                };
                m0 += done;
            }
        }
    };
}

row_driver!(
    vnni_rows,
    i8,
    "avx512f,avx512bw,avx512vl,avx512vnni",
    16,
    [(4, 6), (3, 8), (2, 12), (1, 16)],
    vnni_tile
);
row_driver!(
    avx512_i16_rows,
    i16,
    "avx512f,avx512bw,avx512vl",
    16,
    [(4, 6), (3, 8), (2, 12), (1, 16)],
    avx512_i16_tile
);
row_driver!(
    avx2_i16_rows,
    i16,
    "avx2,fma",
    8,
    [(2, 6), (1, 8)],
    avx2_i16_tile
);

/// Row pointers of a tile; missing rows repeat the last valid one.
#[inline(always)]
unsafe fn row_pointers<A, const MR: usize>(t: &Tile<A>) -> [*const A; MR] {
    let mut rows = [t.a; MR];
    for (r, p) in rows.iter_mut().enumerate() {
        *p = t.a.add(r.min(t.rows - 1) * t.lda);
    }
    rows
}

#[inline(always)]
unsafe fn lane_mask16(valid: usize) -> __mmask16 {
    if valid >= 16 {
        0xffff
    } else {
        ((1u32 << valid) - 1) as __mmask16
    }
}

/// The fused AVX-512 requantize-and-store of an MR x NV accumulator tile.
///
/// Equal to the reference `round(min(max(y, lo), hi))` with fewer instructions: the lower clamp
/// is applied to the packed bytes instead (`vpmaxsb`), after the saturating packs. That is exact
/// because rounding is monotone and `lo` is an integer: any `y` below `lo` rounds to a code at
/// most `lo` (huge or NaN values convert to `i32::MIN` and saturate to -128), and the byte
/// maximum then gives `lo`, as the reference does (Rust's `max` maps NaN to `lo`). `min(hi, y)`
/// keeps its operand order so a NaN stays NaN. Without a fused ReLU (`lo < 0`) rounding is
/// `trunc(y + copysign(0.49999997, y))`; with one, negative values end at `lo` = 0 whatever their
/// rounding, so `trunc(y + 0.49999997)` suffices.
#[inline(always)]
pub(crate) unsafe fn store_avx512<const MR: usize, const NV: usize>(
    params: &TileParams,
    t: &Tile<impl Sized>,
    acc: &[[__m512i; NV]; MR],
) {
    if params.lo >= 0.0 {
        store_avx512_with::<MR, NV, true>(params, t, acc)
    } else {
        store_avx512_with::<MR, NV, false>(params, t, acc)
    }
}

#[inline(always)]
unsafe fn store_avx512_with<const MR: usize, const NV: usize, const NON_NEGATIVE: bool>(
    params: &TileParams,
    t: &Tile<impl Sized>,
    acc: &[[__m512i; NV]; MR],
) {
    let hi = _mm512_set1_ps(params.hi);
    let sign = _mm512_set1_epi32(i32::MIN);
    let almost_half = _mm512_castps_si512(_mm512_set1_ps(ALMOST_HALF));
    let lo_bytes = _mm512_set1_epi8(params.lo as i8);
    let ratio = _mm512_set1_ps(params.ratio);
    let valid = t.n_valid.min(16 * NV);
    // Per-vector constants, loaded once for all rows. A vector with no valid lane (never packed
    // so, but harmless) gets zeros and its codes are masked out of the store.
    // Four entries whatever NV, so the unused arms below still index in bounds.
    let mut offset = [_mm512_setzero_si512(); 4];
    let mut mult = [_mm512_setzero_ps(); 4];
    let mut bias = [_mm512_setzero_ps(); 4];
    for v in 0..NV {
        let mask = lane_mask16(valid.saturating_sub(16 * v));
        offset[v] = _mm512_maskz_loadu_epi32(mask, t.offset.add(16 * v));
        mult[v] = _mm512_maskz_loadu_ps(mask, t.mult.add(16 * v));
        bias[v] = _mm512_maskz_loadu_ps(mask, t.bias.add(16 * v));
    }
    // One row at a time, its codes kept in registers: an `[[_; NV]; MR]` array of codes was
    // zero-filled by a `memset` call and lived on the stack. (A macro, not a closure: a closure does
    // not inherit the caller's target features, so its intrinsics become calls.)
    macro_rules! code {
        ($acc:expr, $v:literal) => {
            requantize_vector::<NON_NEGATIVE>(
                $acc,
                offset[$v],
                mult[$v],
                ratio,
                bias[$v],
                hi,
                sign,
                almost_half,
            )
        };
    }
    let rows = t.rows.min(MR);
    if NV == 1 {
        let mask = lane_mask16(valid);
        for (r, row) in acc.iter().enumerate().take(rows) {
            let bytes = _mm_max_epi8(
                _mm512_cvtsepi32_epi8(code!(row[0], 0)),
                _mm512_castsi512_si128(lo_bytes),
            );
            _mm_mask_storeu_epi8(t.out.add(r * params.ldc), mask, bytes);
        }
        return;
    }
    // Two packs make 128-bit lane L hold dwords (vector 0, 1, 2, 3) of lane L; the permute puts
    // them back in channel order: output dword 4v + L comes from dword 4L + v.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let mask: __mmask64 = if valid >= 64 {
        u64::MAX
    } else {
        (1u64 << valid) - 1
    };
    let zero = _mm512_setzero_si512();
    for (r, row) in acc.iter().enumerate().take(rows) {
        let low = _mm512_packs_epi32(code!(row[0], 0), code!(row[1], 1));
        let high = match NV {
            2 => zero,
            3 => _mm512_packs_epi32(code!(row[2], 2), zero),
            _ => _mm512_packs_epi32(code!(row[2], 2), code!(row[3], 3)),
        };
        let bytes = _mm512_permutexvar_epi32(order, _mm512_packs_epi16(low, high));
        let bytes = _mm512_max_epi8(bytes, lo_bytes);
        _mm512_mask_storeu_epi8(t.out.add(r * params.ldc), mask, bytes);
    }
}

/// One vector of the AVX-512 epilogue: `round(min((cvt(acc + offset) * mult) * ratio + bias,
/// hi))`, rounding half away from zero (or `trunc(y + 0.49999997)` when `NON_NEGATIVE`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn requantize_vector<const NON_NEGATIVE: bool>(
    acc: __m512i,
    offset: __m512i,
    mult: __m512,
    ratio: __m512,
    bias: __m512,
    hi: __m512,
    sign: __m512i,
    almost_half: __m512i,
) -> __m512i {
    let x = _mm512_cvtepi32_ps(_mm512_add_epi32(acc, offset));
    let y = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(x, mult), ratio), bias);
    let y = _mm512_min_ps(hi, y);
    let half = if NON_NEGATIVE {
        almost_half
    } else {
        // (y & sign) | 0.49999997 in one instruction (truth table 0xEA = (A & B) | C).
        _mm512_ternarylogic_epi32::<0xEA>(_mm512_castps_si512(y), sign, almost_half)
    };
    _mm512_cvttps_epi32(_mm512_add_ps(y, _mm512_castsi512_ps(half)))
}

/// `-128 * sum_k a[row][k]` for each of `rows` rows of `k` codes (row stride `lda`): the initial
/// accumulator that cancels the `+128` of the VNNI kernels' unsigned weights.
///
/// # Safety
/// The CPU must support AVX-512 VNNI; `a` holds `rows` rows of `lda >= k` codes, `out` `rows`
/// values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vnni_row_compensation(
    a: *const i8,
    lda: usize,
    k: usize,
    rows: usize,
    out: *mut i32,
) {
    let ones = _mm512_set1_epi8(1);
    let full = k / 64 * 64;
    let tail: __mmask64 = if k.is_multiple_of(64) {
        0
    } else {
        (1u64 << (k % 64)) - 1
    };
    // The 16 partial sums of one row.
    let row_sums = |r: usize| -> __m512i {
        let p = a.add(r * lda);
        let mut sum = _mm512_setzero_si512();
        let mut i = 0;
        while i < full {
            sum = _mm512_dpbusd_epi32(sum, ones, _mm512_loadu_si512(p.add(i) as *const _));
            i += 64;
        }
        if tail != 0 {
            sum = _mm512_dpbusd_epi32(sum, ones, _mm512_maskz_loadu_epi8(tail, p.add(full)));
        }
        sum
    };
    let mut r = 0;
    // Four rows at a time: interleave their partial sums so one reduction serves all four.
    while r + 4 <= rows {
        let (s0, s1, s2, s3) = (
            row_sums(r),
            row_sums(r + 1),
            row_sums(r + 2),
            row_sums(r + 3),
        );
        // Per 128-bit lane: [r0 + r0', r1 + r1', ...] pairs, then all four rows.
        let t01 = _mm512_add_epi32(_mm512_unpacklo_epi32(s0, s1), _mm512_unpackhi_epi32(s0, s1));
        let t23 = _mm512_add_epi32(_mm512_unpacklo_epi32(s2, s3), _mm512_unpackhi_epi32(s2, s3));
        let u = _mm512_add_epi32(
            _mm512_unpacklo_epi64(t01, t23),
            _mm512_unpackhi_epi64(t01, t23),
        );
        let half = _mm256_add_epi32(_mm512_castsi512_si256(u), _mm512_extracti64x4_epi64::<1>(u));
        let quarter = _mm_add_epi32(
            _mm256_castsi256_si128(half),
            _mm256_extracti128_si256::<1>(half),
        );
        let scaled = _mm_mullo_epi32(quarter, _mm_set1_epi32(-128));
        _mm_storeu_si128(out.add(r) as *mut __m128i, scaled);
        r += 4;
    }
    while r < rows {
        *out.add(r) = -128 * _mm512_reduce_add_epi32(row_sums(r));
        r += 1;
    }
}

/// MR x NV tile with `vpdpbusd`: unsigned weights from the packed block, signed activation quads
/// broadcast from the rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn vnni_tile<const MR: usize, const NV: usize>(params: &TileParams, t: &Tile<i8>) {
    let rows = row_pointers::<i8, MR>(t);
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        let init = _mm512_set1_epi32(*t.comp.add(r.min(t.rows - 1)));
        for a in row.iter_mut() {
            *a = init;
        }
    }
    let groups = params.k / 4;
    let mut b = t.b;
    for g in 0..groups {
        let mut w = [_mm512_setzero_si512(); NV];
        for (v, wv) in w.iter_mut().enumerate() {
            *wv = _mm512_load_si512(b.add(64 * v) as *const _);
        }
        for r in 0..MR {
            let a = _mm512_set1_epi32((rows[r].add(4 * g) as *const i32).read_unaligned());
            for v in 0..NV {
                acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], w[v], a);
            }
        }
        b = b.add(64 * NV);
    }
    let tail = params.k % 4;
    if tail != 0 {
        // Pointwise rows whose length is not a multiple of 4: read only the valid bytes; the
        // missing ones are 0 and contribute nothing (to the products or the compensation).
        let mut w = [_mm512_setzero_si512(); NV];
        for (v, wv) in w.iter_mut().enumerate() {
            *wv = _mm512_load_si512(b.add(64 * v) as *const _);
        }
        for r in 0..MR {
            // Byte by byte without a loop (a loop or copy of a variable length becomes a
            // `memcpy` call, which costs more than the whole group).
            let p = rows[r].add(4 * groups) as *const u8;
            let mut quad = *p as u32;
            if tail > 1 {
                quad |= (*p.add(1) as u32) << 8;
            }
            if tail > 2 {
                quad |= (*p.add(2) as u32) << 16;
            }
            let a = _mm512_set1_epi32(quad as i32);
            for v in 0..NV {
                acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], w[v], a);
            }
        }
    }
    store_avx512::<MR, NV>(params, t, &acc);
}

/// MR x NV tile with `vpmaddwd` on i16 pairs (AVX-512 without VNNI). `params.k` is even.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn avx512_i16_tile<const MR: usize, const NV: usize>(params: &TileParams, t: &Tile<i16>) {
    let rows = row_pointers::<i16, MR>(t);
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    let mut b = t.b;
    for g in 0..params.k / 2 {
        let mut w = [_mm512_setzero_si512(); NV];
        for (v, wv) in w.iter_mut().enumerate() {
            *wv = _mm512_load_si512(b.add(64 * v) as *const _);
        }
        for r in 0..MR {
            let pair = (rows[r].add(2 * g) as *const i32).read_unaligned();
            let a = _mm512_set1_epi32(pair);
            for v in 0..NV {
                acc[r][v] = _mm512_add_epi32(acc[r][v], _mm512_madd_epi16(a, w[v]));
            }
        }
        b = b.add(64 * NV);
    }
    store_avx512::<MR, NV>(params, t, &acc);
}

/// MR x NV tile with `vpmaddwd` on i16 pairs, 8 channels per ymm. `params.k` is even.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_i16_tile<const MR: usize, const NV: usize>(params: &TileParams, t: &Tile<i16>) {
    let rows = row_pointers::<i16, MR>(t);
    let mut acc = [[_mm256_setzero_si256(); NV]; MR];
    let mut b = t.b;
    for g in 0..params.k / 2 {
        let mut w = [_mm256_setzero_si256(); NV];
        for (v, wv) in w.iter_mut().enumerate() {
            *wv = _mm256_load_si256(b.add(32 * v) as *const _);
        }
        for r in 0..MR {
            let pair = (rows[r].add(2 * g) as *const i32).read_unaligned();
            let a = _mm256_set1_epi32(pair);
            for v in 0..NV {
                acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(a, w[v]));
            }
        }
        b = b.add(32 * NV);
    }
    let lo = _mm256_set1_ps(params.lo);
    let hi = _mm256_set1_ps(params.hi);
    let sign = _mm256_set1_ps(-0.0);
    let almost_half = _mm256_set1_ps(ALMOST_HALF);
    let ratio = _mm256_set1_ps(params.ratio);
    for v in 0..NV {
        let valid = t.n_valid.saturating_sub(8 * v).min(8);
        if valid == 0 {
            break;
        }
        let lane_ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid as i32), lane_ids);
        let offset = _mm256_maskload_epi32(t.offset.add(8 * v), mask);
        let mult = _mm256_maskload_ps(t.mult.add(8 * v), mask);
        let bias = _mm256_maskload_ps(t.bias.add(8 * v), mask);
        for (r, row) in acc.iter().enumerate().take(t.rows.min(MR)) {
            let x = _mm256_cvtepi32_ps(_mm256_add_epi32(row[v], offset));
            let y = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(x, mult), ratio), bias);
            let y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
            let half = _mm256_or_ps(_mm256_and_ps(y, sign), almost_half);
            let q = _mm256_cvttps_epi32(_mm256_add_ps(y, half));
            let words =
                _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            let bytes = _mm_packs_epi16(words, words);
            let dst = t.out.add(r * params.ldc + 8 * v);
            if valid == 8 {
                _mm_storel_epi64(dst as *mut __m128i, bytes);
            } else {
                let mut tmp = [0i8; 16];
                _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, bytes);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, valid);
            }
        }
    }
}
