//! int8 casts and binary ops (MNN §11.3, §11.7), elementwise over contiguous codes.
//!
//! Float arithmetic per element is identical on every path (no fused multiply-add); the portable
//! reference rounds with `f32::round`, the vectorised builds with the add-and-truncate form that
//! equals it (`requant::round_half_away`), so every ISA gives the same bytes.

use super::requant::round_half_away;
use crate::dispatch::{active_isa, Isa};

/// The reciprocal MNN multiplies by: `1 / s`, or 0 for a zero scale.
#[inline]
pub fn reciprocal_scale(s: f32) -> f32 {
    if s == 0.0 {
        0.0
    } else {
        1.0 / s
    }
}

/// Clamp then round (integer bounds, so the order does not change the result).
#[inline(always)]
fn to_code<const PORTABLE: bool>(y: f32, lo: f32, hi: f32) -> i8 {
    let y = y.max(lo).min(hi);
    (if PORTABLE {
        y.round()
    } else {
        round_half_away(y)
    }) as i8
}

#[inline(always)]
fn float_to_int8_body<const PORTABLE: bool>(src: &[f32], scale: f32, dst: &mut [i8]) {
    let inv = reciprocal_scale(scale);
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = to_code::<PORTABLE>(x * inv, -127.0, 127.0);
    }
}

#[inline(always)]
fn int8_to_float_body<const PORTABLE: bool>(src: &[i8], scale: f32, dst: &mut [f32]) {
    for (d, &q) in dst.iter_mut().zip(src) {
        *d = q as f32 * scale;
    }
}

/// FloatToInt8: `q = clamp(round(x * (1/s)), -127, 127)` for `isa`.
pub fn float_to_int8_with(isa: Isa, src: &[f32], scale: f32, dst: &mut [i8]) {
    assert!(
        isa.is_supported(),
        "float_to_int8: {isa} is not supported by this CPU"
    );
    let n = src.len().min(dst.len());
    match isa {
        // SAFETY: the ISA is supported; `n` elements are in both slices.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe {
            simd::float_to_int8_avx512(&src[..n], scale, &mut dst[..n])
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { simd::float_to_int8_avx2(&src[..n], scale, &mut dst[..n]) },
        _ => float_to_int8_body::<true>(src, scale, dst),
    }
}

/// Int8ToFloat: `x = q * s` for `isa`.
pub fn int8_to_float_with(isa: Isa, src: &[i8], scale: f32, dst: &mut [f32]) {
    assert!(
        isa.is_supported(),
        "int8_to_float: {isa} is not supported by this CPU"
    );
    let n = src.len().min(dst.len());
    match isa {
        // SAFETY: the ISA is supported; `n` elements are in both slices.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe {
            simd::int8_to_float_avx512(&src[..n], scale, &mut dst[..n])
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { simd::int8_to_float_avx2(&src[..n], scale, &mut dst[..n]) },
        _ => int8_to_float_body::<true>(src, scale, dst),
    }
}

/// FloatToInt8 with the active ISA. `dst.len()` elements are converted.
pub fn float_to_int8(src: &[f32], scale: f32, dst: &mut [i8]) {
    assert_eq!(src.len(), dst.len(), "float_to_int8: length mismatch");
    float_to_int8_with(active_isa(), src, scale, dst)
}

/// Int8ToFloat with the active ISA.
pub fn int8_to_float(src: &[i8], scale: f32, dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "int8_to_float: length mismatch");
    int8_to_float_with(active_isa(), src, scale, dst)
}

/// FloatToInt8 with a zero point (MNN §11.3): `q = clamp(round(x * (1/s) + z), -127, 127)`.
/// A zero `zero` gives exactly [`float_to_int8`]'s bytes (same SIMD path).
pub fn float_to_int8_zero_point(src: &[f32], scale: f32, zero: i8, dst: &mut [i8]) {
    assert_eq!(src.len(), dst.len(), "float_to_int8: length mismatch");
    if zero == 0 {
        return float_to_int8(src, scale, dst);
    }
    let inv = reciprocal_scale(scale);
    let z = f32::from(zero);
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = to_code::<false>(x * inv + z, -127.0, 127.0);
    }
}

/// Int8ToFloat with a zero point: `x = (q - z) * s` (exact for `zero == 0`: [`int8_to_float`]).
pub fn int8_to_float_zero_point(src: &[i8], scale: f32, zero: i8, dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "int8_to_float: length mismatch");
    if zero == 0 {
        return int8_to_float(src, scale, dst);
    }
    for (d, &q) in dst.iter_mut().zip(src) {
        *d = (i32::from(q) - i32::from(zero)) as f32 * scale;
    }
}

/// Elementwise binary op on int8 codes, computed in f32 on dequantized values.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BinaryInt8 {
    Add,
    Sub,
    Mul,
    Max,
    Min,
}

/// Scales of a binary op: inputs `s0`, `s1`, output `s_out`; `relu` clamps at 0.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct BinaryScales {
    pub s0: f32,
    pub s1: f32,
    pub s_out: f32,
    pub relu: bool,
}

#[inline(always)]
fn binary_body<const PORTABLE: bool>(
    op: BinaryInt8,
    sc: BinaryScales,
    a: &[i8],
    b: &[i8],
    out: &mut [i8],
) {
    let inv = reciprocal_scale(sc.s_out);
    let lo = if sc.relu { 0.0 } else { -127.0 };
    macro_rules! apply {
        ($f:expr) => {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                let v = $f(x as f32 * sc.s0, y as f32 * sc.s1);
                *o = to_code::<PORTABLE>(v * inv, lo, 127.0);
            }
        };
    }
    match op {
        BinaryInt8::Add => apply!(|x: f32, y: f32| x + y),
        BinaryInt8::Sub => apply!(|x: f32, y: f32| x - y),
        BinaryInt8::Mul => apply!(|x: f32, y: f32| x * y),
        BinaryInt8::Max => apply!(|x: f32, y: f32| if x > y { x } else { y }),
        BinaryInt8::Min => apply!(|x: f32, y: f32| if x < y { x } else { y }),
    }
}

/// One same-length chunk of a binary op for `isa`.
fn binary_chunk_with(
    isa: Isa,
    op: BinaryInt8,
    sc: BinaryScales,
    a: &[i8],
    b: &[i8],
    out: &mut [i8],
) {
    let n = out.len().min(a.len()).min(b.len());
    match isa {
        // SAFETY: the ISA is supported (checked by the caller); `n` elements in every slice.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe {
            simd::binary_avx512(op, sc, &a[..n], &b[..n], &mut out[..n])
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { simd::binary_avx2(op, sc, &a[..n], &b[..n], &mut out[..n]) },
        _ => binary_body::<true>(op, sc, a, b, out),
    }
}

/// Binary op `out = op(a, b)` with MNN's int8 formula: `v = f(q0 * s0, q1 * s1)`,
/// `q = clamp(round(v * (1 / s_out)), lo, 127)`. An operand may be broadcast: its length is
/// `out.len()`, 1 (scalar), or a divisor of `out.len()` repeated along the innermost axis
/// (per-channel in NHWC).
pub fn binary_int8(op: BinaryInt8, scales: BinaryScales, a: &[i8], b: &[i8], out: &mut [i8]) {
    binary_int8_with(active_isa(), op, scales, a, b, out)
}

/// [`binary_int8`] for `isa`.
pub fn binary_int8_with(
    isa: Isa,
    op: BinaryInt8,
    scales: BinaryScales,
    a: &[i8],
    b: &[i8],
    out: &mut [i8],
) {
    assert!(
        isa.is_supported(),
        "binary_int8: {isa} is not supported by this CPU"
    );
    let n = out.len();
    if n == 0 {
        return;
    }
    for (name, len) in [("first", a.len()), ("second", b.len())] {
        assert!(
            len == n || (len > 0 && n.is_multiple_of(len)),
            "binary_int8: {name} operand has {len} elements, not a broadcast of {n}"
        );
    }
    // Period of the repetition: the longest broadcast operand; shorter ones (scalars) are
    // expanded to it once.
    let period = [a.len(), b.len()]
        .into_iter()
        .filter(|&l| l != n)
        .max()
        .unwrap_or(n);
    // Work in chunks of whole periods of at least ~4096 elements, so that a scalar or a short
    // per-channel operand does not cost one call per element or per pixel.
    let chunk_len = if period == n {
        n
    } else {
        (period * (4096 / period).max(1)).min(n)
    };
    let expanded = |x: &[i8]| -> Option<Vec<i8>> {
        if x.len() == n {
            return None;
        }
        assert!(
            period.is_multiple_of(x.len()),
            "binary_int8: operands of {} and {} elements do not broadcast together",
            a.len(),
            b.len()
        );
        Some(x.iter().copied().cycle().take(chunk_len).collect())
    };
    let (a_rep, b_rep) = (expanded(a), expanded(b));
    // `n` and `chunk_len` are multiples of `period`, so every chunk (the last one too) starts
    // at a period boundary and the repeated operands line up.
    for (i, chunk) in out.chunks_mut(chunk_len).enumerate() {
        let (start, len) = (i * chunk_len, chunk.len());
        let pa = match &a_rep {
            Some(v) => &v[..len],
            None => &a[start..start + len],
        };
        let pb = match &b_rep {
            Some(v) => &v[..len],
            None => &b[start..start + len],
        };
        binary_chunk_with(isa, op, scales, pa, pb, chunk);
    }
}

/// Binary op of int8 codes `a` (scale `s0`) with per-channel float values `channel` (repeating
/// along the innermost axis: `out.len()` is a multiple of `channel.len()`): `v = f(q0 * s0, c)`
/// (or `f(c, q0 * s0)` when `channel_first`), `q = clamp(round(v * (1 / s_out)), lo, 127)`. The
/// squeeze-excite multiply with its excitation kept in float. One f32 operation sequence on
/// every ISA (the vector builds are the same loop compiled with wider registers; Rust never
/// fuses the multiply and add), rounding half away from zero.
#[allow(clippy::too_many_arguments)]
pub fn binary_channel_values_int8(
    op: BinaryInt8,
    a: &[i8],
    s0: f32,
    channel: &[f32],
    channel_first: bool,
    s_out: f32,
    relu: bool,
    out: &mut [i8],
) {
    binary_channel_values_int8_with(
        active_isa(),
        op,
        a,
        s0,
        channel,
        channel_first,
        s_out,
        relu,
        out,
    )
}

/// [`binary_channel_values_int8`] for `isa`.
#[allow(clippy::too_many_arguments)]
pub fn binary_channel_values_int8_with(
    isa: Isa,
    op: BinaryInt8,
    a: &[i8],
    s0: f32,
    channel: &[f32],
    channel_first: bool,
    s_out: f32,
    relu: bool,
    out: &mut [i8],
) {
    assert!(
        isa.is_supported(),
        "binary_channel_values_int8: {isa} is not supported by this CPU"
    );
    assert_eq!(
        a.len(),
        out.len(),
        "binary_channel_values_int8: length mismatch"
    );
    assert!(
        !channel.is_empty() && out.len().is_multiple_of(channel.len()),
        "binary_channel_values_int8: {} channel values do not divide {} elements",
        channel.len(),
        out.len()
    );
    let args = ChannelArgs {
        op,
        s0,
        channel_first,
        inv: reciprocal_scale(s_out),
        lo: if relu { 0.0 } else { -127.0 },
    };
    match isa {
        // SAFETY: the ISA is supported.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe { channel_values_avx512(args, a, channel, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { channel_values_avx2(args, a, channel, out) },
        _ => channel_values_body(args, a, channel, out),
    }
}

#[derive(Clone, Copy)]
struct ChannelArgs {
    op: BinaryInt8,
    s0: f32,
    channel_first: bool,
    inv: f32,
    lo: f32,
}

#[inline(always)]
fn channel_values_body(args: ChannelArgs, a: &[i8], channel: &[f32], out: &mut [i8]) {
    macro_rules! apply {
        ($f:expr) => {
            for (o_row, a_row) in out
                .chunks_exact_mut(channel.len())
                .zip(a.chunks_exact(channel.len()))
            {
                for ((o, &q), &c) in o_row.iter_mut().zip(a_row).zip(channel) {
                    let x = q as f32 * args.s0;
                    let (l, r) = if args.channel_first { (c, x) } else { (x, c) };
                    let y = round_half_away(($f(l, r) * args.inv).max(args.lo).min(127.0));
                    // SAFETY: `y` is finite and within [-127, 127] (`max` turns NaN into `lo`),
                    // so the unchecked conversion is exact; it vectorises, `as i8` does not.
                    *o = unsafe { y.to_int_unchecked::<i32>() } as i8;
                }
            }
        };
    }
    match args.op {
        BinaryInt8::Add => apply!(|x: f32, y: f32| x + y),
        BinaryInt8::Sub => apply!(|x: f32, y: f32| x - y),
        BinaryInt8::Mul => apply!(|x: f32, y: f32| x * y),
        BinaryInt8::Max => apply!(|x: f32, y: f32| if x > y { x } else { y }),
        BinaryInt8::Min => apply!(|x: f32, y: f32| if x < y { x } else { y }),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn channel_values_avx512(args: ChannelArgs, a: &[i8], channel: &[f32], out: &mut [i8]) {
    channel_values_body(args, a, channel, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn channel_values_avx2(args: ChannelArgs, a: &[i8], channel: &[f32], out: &mut [i8]) {
    channel_values_body(args, a, channel, out)
}

/// Explicit AVX-512 and AVX2 loops with the reference's operations in the reference's order.
/// Tails are copied through a full-width buffer so they take the same vector path.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{reciprocal_scale, BinaryInt8, BinaryScales};
    use crate::int8::requant::ALMOST_HALF;
    use std::arch::x86_64::*;

    /// Clamp to `[lo, hi]` (NaN becomes `lo`, like `f32::max`), round half away from zero, to i32.
    #[inline(always)]
    unsafe fn round512(y: __m512, lo: __m512, hi: __m512) -> __m512i {
        let y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
        let half = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_and_si512(_mm512_castps_si512(y), _mm512_set1_epi32(i32::MIN)),
            _mm512_castps_si512(_mm512_set1_ps(ALMOST_HALF)),
        ));
        _mm512_cvttps_epi32(_mm512_add_ps(y, half))
    }

    #[inline(always)]
    unsafe fn round256(y: __m256, lo: __m256, hi: __m256) -> __m256i {
        let y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
        let half = _mm256_or_ps(
            _mm256_and_ps(y, _mm256_set1_ps(-0.0)),
            _mm256_set1_ps(ALMOST_HALF),
        );
        _mm256_cvttps_epi32(_mm256_add_ps(y, half))
    }

    /// 8 i32 (already in i8 range) to 8 bytes.
    #[inline(always)]
    unsafe fn store8(q: __m256i, dst: *mut i8) {
        let words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        _mm_storel_epi64(dst as *mut __m128i, _mm_packs_epi16(words, words));
    }

    /// 16 i32 (already in i8 range) to 16 bytes.
    #[inline(always)]
    unsafe fn store16(q: __m512i, dst: *mut i8) {
        _mm_storeu_si128(dst as *mut __m128i, _mm512_cvtsepi32_epi8(q));
    }

    #[inline(always)]
    unsafe fn load16_ps(p: *const i8) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)))
    }

    #[inline(always)]
    unsafe fn load8_ps(p: *const i8) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
    }

    /// Run `$body(offset)` over full vectors of `$w` elements, then once more on copies of the
    /// tail padded to a full vector.
    macro_rules! vector_loop {
        ($n:expr, $w:expr, |$i:ident| $body:block, tail: |$t:ident| $tail:block) => {{
            let full = $n / $w * $w;
            let mut $i = 0;
            while $i < full {
                $body
                $i += $w;
            }
            if full < $n {
                let $t = $n - full;
                $tail
            }
        }};
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn float_to_int8_avx512(src: &[f32], scale: f32, dst: &mut [i8]) {
        let inv = _mm512_set1_ps(reciprocal_scale(scale));
        let (lo, hi) = (_mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
        let n = src.len();
        vector_loop!(n, 16, |i| {
            let x = _mm512_loadu_ps(src.as_ptr().add(i));
            let q = round512(_mm512_mul_ps(x, inv), lo, hi);
            _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, _mm512_cvtsepi32_epi8(q));
        }, tail: |t| {
            let mask = ((1u32 << t) - 1) as __mmask16;
            let x = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(n - t));
            let q = round512(_mm512_mul_ps(x, inv), lo, hi);
            _mm_mask_storeu_epi8(dst.as_mut_ptr().add(n - t), mask, _mm512_cvtsepi32_epi8(q));
        })
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn float_to_int8_avx2(src: &[f32], scale: f32, dst: &mut [i8]) {
        let inv = _mm256_set1_ps(reciprocal_scale(scale));
        let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
        let n = src.len();
        vector_loop!(n, 8, |i| {
            let x = _mm256_loadu_ps(src.as_ptr().add(i));
            store8(round256(_mm256_mul_ps(x, inv), lo, hi), dst.as_mut_ptr().add(i));
        }, tail: |t| {
            let mut x = [0f32; 8];
            x[..t].copy_from_slice(&src[n - t..]);
            let mut q = [0i8; 8];
            store8(round256(_mm256_mul_ps(_mm256_loadu_ps(x.as_ptr()), inv), lo, hi), q.as_mut_ptr());
            dst[n - t..].copy_from_slice(&q[..t]);
        })
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn int8_to_float_avx512(src: &[i8], scale: f32, dst: &mut [f32]) {
        let s = _mm512_set1_ps(scale);
        let n = src.len();
        vector_loop!(n, 16, |i| {
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_mul_ps(load16_ps(src.as_ptr().add(i)), s));
        }, tail: |t| {
            let mask = ((1u32 << t) - 1) as __mmask16;
            let x = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, src.as_ptr().add(n - t))));
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(n - t), mask, _mm512_mul_ps(x, s));
        })
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn int8_to_float_avx2(src: &[i8], scale: f32, dst: &mut [f32]) {
        let s = _mm256_set1_ps(scale);
        let n = src.len();
        vector_loop!(n, 8, |i| {
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_mul_ps(load8_ps(src.as_ptr().add(i)), s));
        }, tail: |t| {
            let mut x = [0i8; 16];
            x[..t].copy_from_slice(&src[n - t..]);
            let mut y = [0f32; 8];
            _mm256_storeu_ps(y.as_mut_ptr(), _mm256_mul_ps(load8_ps(x.as_ptr()), s));
            dst[n - t..].copy_from_slice(&y[..t]);
        })
    }

    macro_rules! binary_simd {
        ($name:ident, $features:literal, $w:expr, $ps:ty, $set1:ident, $mul:ident, $add:ident,
         $sub:ident, $max:ident, $min:ident, $load:ident, $round:ident, $store:expr) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(op: BinaryInt8, sc: BinaryScales, a: &[i8], b: &[i8], out: &mut [i8]) {
                let (s0, s1) = ($set1(sc.s0), $set1(sc.s1));
                let inv = $set1(reciprocal_scale(sc.s_out));
                let lo = $set1(if sc.relu { 0.0 } else { -127.0 });
                let hi = $set1(127.0);
                let n = out.len();
                macro_rules! run {
                    (|$x:ident, $y:ident| $f:expr) => {{
                        // One vector of `$w` codes at `pa`, `pb` to `po`. A macro, not a closure:
                        // closures do not inherit the function's target features.
                        macro_rules! step {
                            ($pa:expr, $pb:expr, $po:expr) => {{
                                let $x: $ps = $mul($load($pa), s0);
                                let $y: $ps = $mul($load($pb), s1);
                                let q = $round($mul($f, inv), lo, hi);
                                $store(q, $po);
                            }};
                        }
                        vector_loop!(n, $w, |i| {
                            step!(a.as_ptr().add(i), b.as_ptr().add(i), out.as_mut_ptr().add(i));
                        }, tail: |t| {
                            let (mut ta, mut tb, mut to) = ([0i8; 16], [0i8; 16], [0i8; 16]);
                            ta[..t].copy_from_slice(&a[n - t..]);
                            tb[..t].copy_from_slice(&b[n - t..]);
                            step!(ta.as_ptr(), tb.as_ptr(), to.as_mut_ptr());
                            out[n - t..].copy_from_slice(&to[..t]);
                        })
                    }};
                }
                match op {
                    BinaryInt8::Add => run!(|x, y| $add(x, y)),
                    BinaryInt8::Sub => run!(|x, y| $sub(x, y)),
                    BinaryInt8::Mul => run!(|x, y| $mul(x, y)),
                    // maxps/minps return the second operand when unordered, like the reference's
                    // `if x > y { x } else { y }`.
                    BinaryInt8::Max => run!(|x, y| $max(x, y)),
                    BinaryInt8::Min => run!(|x, y| $min(x, y)),
                }
            }
        };
    }

    binary_simd!(
        binary_avx512,
        "avx512f,avx512bw,avx512vl",
        16,
        __m512,
        _mm512_set1_ps,
        _mm512_mul_ps,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_max_ps,
        _mm512_min_ps,
        load16_ps,
        round512,
        store16
    );
    binary_simd!(
        binary_avx2,
        "avx2,fma",
        8,
        __m256,
        _mm256_set1_ps,
        _mm256_mul_ps,
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_max_ps,
        _mm256_min_ps,
        load8_ps,
        round256,
        store8
    );
}
