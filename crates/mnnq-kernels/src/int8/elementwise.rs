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

macro_rules! isa_variants {
    ($(#[$doc:meta])* $name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        pub fn $name(isa: Isa, $($arg: $ty),*) {
            assert!(isa.is_supported(), "{}: {isa} is not supported by this CPU", stringify!($name));
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
                unsafe fn avx512($($arg: $ty),*) { $body::<false>($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { $body::<false>($($arg),*) }
                match isa {
                    // SAFETY: the ISA is supported (checked above).
                    Isa::Avx512 | Isa::Avx512Vnni => return unsafe { avx512($($arg),*) },
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Portable => {}
                }
            }
            $body::<true>($($arg),*)
        }
    };
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

isa_variants!(
    /// FloatToInt8: `q = clamp(round(x * (1/s)), -127, 127)` for `isa`.
    float_to_int8_with, float_to_int8_body, (src: &[f32], scale: f32, dst: &mut [i8])
);
isa_variants!(
    /// Int8ToFloat: `x = q * s` for `isa`.
    int8_to_float_with, int8_to_float_body, (src: &[i8], scale: f32, dst: &mut [f32])
);

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
        BinaryInt8::Max => apply!(|x: f32, y: f32| x.max(y)),
        BinaryInt8::Min => apply!(|x: f32, y: f32| x.min(y)),
    }
}

isa_variants!(
    /// One same-length chunk of a binary op for `isa`.
    binary_chunk_with, binary_body, (op: BinaryInt8, sc: BinaryScales, a: &[i8], b: &[i8], out: &mut [i8])
);

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
    let expanded = |x: &[i8]| -> Option<Vec<i8>> {
        if x.len() == n || x.len() == period {
            return None;
        }
        assert!(
            period.is_multiple_of(x.len()),
            "binary_int8: operands of {} and {} elements do not broadcast together",
            a.len(),
            b.len()
        );
        Some(x.iter().copied().cycle().take(period).collect())
    };
    let (a_rep, b_rep) = (expanded(a), expanded(b));
    fn chunk_of<'s>(
        x: &'s [i8],
        rep: &'s Option<Vec<i8>>,
        i: usize,
        n: usize,
        period: usize,
    ) -> &'s [i8] {
        match rep {
            Some(v) => v,
            None if x.len() == n => &x[i * period..(i + 1) * period],
            None => x,
        }
    }
    for (i, chunk) in out.chunks_mut(period).enumerate() {
        binary_chunk_with(
            isa,
            op,
            scales,
            chunk_of(a, &a_rep, i, n, period),
            chunk_of(b, &b_rep, i, n, period),
            chunk,
        );
    }
}
