//! Elementwise int8 -> int8 functions as 256-entry lookup tables.
//!
//! Any elementwise function from one int8 tensor to another (a ReLU6 between different scales, a
//! binary op with a scalar constant, MNN's `tableInt8` unary ops, hardswish, sigmoid, and chains
//! of these) is fully described by its value on the 256 input codes, so a table is exact: it gives
//! the very bytes the step-by-step int8 computation gives. Chains compose into one table
//! ([`CodeTable::then`]), which removes the intermediate tensors and their memory passes.
//!
//! The table is indexed by the code's byte (`q as u8`), so code -128 has an entry too (MNN never
//! produces it, but a table must not read out of bounds on any input).
//!
//! Lookup kernels: AVX-512 VBMI (`vpermi2b` on two 128-byte halves, 64 codes per step), AVX2
//! (`vpshufb` on 16 sub-tables of 16, 32 codes per step), portable (one load per code). All give
//! identical bytes: a lookup has no arithmetic.

use super::elementwise::reciprocal_scale;
use crate::dispatch::{active_isa, Isa};

/// `table[q as u8]` is the output code of input code `q`.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeTable(pub [i8; 256]);

impl std::fmt::Debug for CodeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CodeTable(")?;
        for q in [-127i8, -64, -1, 0, 1, 64, 127] {
            write!(f, "{q}->{} ", self.get(q))?;
        }
        write!(f, "...)")
    }
}

impl CodeTable {
    /// The table of `f` over all 256 codes.
    pub fn from_fn(f: impl Fn(i8) -> i8) -> CodeTable {
        let mut t = [0i8; 256];
        for (byte, e) in t.iter_mut().enumerate() {
            *e = f(byte as u8 as i8);
        }
        CodeTable(t)
    }

    /// The identity.
    pub fn identity() -> CodeTable {
        CodeTable::from_fn(|q| q)
    }

    /// MNN's dequantize-compute-requantize form of a float function `f`:
    /// `q_out = clamp(round(f(q * s_in) * (1 / s_out)), lo, 127)` with f32 arithmetic and round
    /// half away from zero (§11.7's formula with one operand). `lo` is -127, or 0 for a fused ReLU.
    pub fn requantized(s_in: f32, s_out: f32, lo: i8, f: impl Fn(f32) -> f32) -> CodeTable {
        let inv = reciprocal_scale(s_out);
        CodeTable::from_fn(|q| {
            let y = f(q as f32 * s_in) * inv;
            // max/min order: NaN becomes `lo`, like the SIMD casts.
            y.max(lo as f32).min(127.0).round() as i8
        })
    }

    /// [`Self::requantized`] between asymmetric codes: `q_out = clamp(round(f((q - z_in) *
    /// s_in) * (1 / s_out) + z_out), lo, 127)` (the value through MNN's casts). Zero zero
    /// points give exactly [`Self::requantized`].
    pub fn requantized_with_zero_points(
        s_in: f32,
        z_in: i8,
        s_out: f32,
        z_out: i8,
        lo: i8,
        f: impl Fn(f32) -> f32,
    ) -> CodeTable {
        if z_in == 0 && z_out == 0 {
            return Self::requantized(s_in, s_out, lo, f);
        }
        let inv = reciprocal_scale(s_out);
        CodeTable::from_fn(|q| {
            let x = (i32::from(q) - i32::from(z_in)) as f32 * s_in;
            let y = f(x) * inv + f32::from(z_out);
            y.max(lo as f32).min(127.0).round() as i8
        })
    }

    /// MNN's table form (`UnaryOp.tableInt8`): 255 entries for codes -127..=127; code -128 is
    /// mapped like -127.
    pub fn from_mnn_table(table: &[i8; 255]) -> CodeTable {
        CodeTable::from_fn(|q| table[(q as i32 + 127).clamp(0, 254) as usize])
    }

    #[inline(always)]
    pub fn get(&self, q: i8) -> i8 {
        self.0[q as u8 as usize]
    }

    /// `self` followed by `next`: `next.get(self.get(q))`.
    pub fn then(&self, next: &CodeTable) -> CodeTable {
        CodeTable::from_fn(|q| next.get(self.get(q)))
    }
}

/// `dst[i] = table[src[i]]` with the active ISA.
pub fn lookup_int8(table: &CodeTable, src: &[i8], dst: &mut [i8]) {
    lookup_int8_with(active_isa(), table, src, dst)
}

/// Whether the AVX-512 VBMI byte permutes can be used at `isa`.
#[cfg(target_arch = "x86_64")]
fn has_vbmi(isa: Isa) -> bool {
    isa >= Isa::Avx512 && std::arch::is_x86_feature_detected!("avx512vbmi")
}

/// [`lookup_int8`] for `isa`.
pub fn lookup_int8_with(isa: Isa, table: &CodeTable, src: &[i8], dst: &mut [i8]) {
    assert!(
        isa.is_supported(),
        "lookup_int8: {isa} is not supported by this CPU"
    );
    assert_eq!(src.len(), dst.len(), "lookup_int8: length mismatch");
    match isa {
        // SAFETY: the ISA (and VBMI) is supported; both slices have the same length.
        #[cfg(target_arch = "x86_64")]
        _ if has_vbmi(isa) => unsafe { simd::lookup_vbmi(table, src, dst) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => unsafe { simd::lookup_avx2(table, src, dst) },
        _ => lookup_portable(table, src, dst),
    }
}

/// The reference: one table load per code.
pub fn lookup_portable(table: &CodeTable, src: &[i8], dst: &mut [i8]) {
    for (d, &q) in dst.iter_mut().zip(src) {
        *d = table.get(q);
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::CodeTable;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn lookup_vbmi(table: &CodeTable, src: &[i8], dst: &mut [i8]) {
        let t = table.0.as_ptr();
        // Entries 0..128 (codes 0..127) and 128..256 (codes -128..-1), 64 bytes per register.
        let (t0, t1) = (
            _mm512_loadu_si512(t as *const _),
            _mm512_loadu_si512(t.add(64) as *const _),
        );
        let (t2, t3) = (
            _mm512_loadu_si512(t.add(128) as *const _),
            _mm512_loadu_si512(t.add(192) as *const _),
        );
        let n = src.len();
        let mut i = 0;
        macro_rules! look {
            ($x:expr) => {{
                let x = $x;
                let low = _mm512_permutex2var_epi8(t0, x, t1);
                let high = _mm512_permutex2var_epi8(t2, x, t3);
                // The sign bit of the code picks the upper half of the table.
                _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), low, high)
            }};
        }
        while i + 64 <= n {
            let x = _mm512_loadu_si512(src.as_ptr().add(i) as *const _);
            _mm512_storeu_si512(dst.as_mut_ptr().add(i) as *mut _, look!(x));
            i += 64;
        }
        if i < n {
            let mask: __mmask64 = (1u64 << (n - i)) - 1;
            let x = _mm512_maskz_loadu_epi8(mask, src.as_ptr().add(i));
            _mm512_mask_storeu_epi8(dst.as_mut_ptr().add(i), mask, look!(x));
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn lookup_avx2(table: &CodeTable, src: &[i8], dst: &mut [i8]) {
        // Sub-table k holds the entries of bytes 16k..16k+16, in both 128-bit lanes.
        let mut subs = [_mm256_setzero_si256(); 16];
        for (k, s) in subs.iter_mut().enumerate() {
            let part = _mm_loadu_si128(table.0.as_ptr().add(16 * k) as *const __m128i);
            *s = _mm256_broadcastsi128_si256(part);
        }
        let low_nibble = _mm256_set1_epi8(0x0f);
        // A macro, not a closure: closures do not inherit the function's target features.
        macro_rules! look {
            ($x:expr) => {{
                let x = $x;
                let lo = _mm256_and_si256(x, low_nibble);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), low_nibble);
                let mut acc = _mm256_setzero_si256();
                for (k, s) in subs.iter().enumerate() {
                    let hit = _mm256_cmpeq_epi8(hi, _mm256_set1_epi8(k as i8));
                    acc = _mm256_blendv_epi8(acc, _mm256_shuffle_epi8(*s, lo), hit);
                }
                acc
            }};
        }
        let n = src.len();
        let mut i = 0;
        while i + 32 <= n {
            let x = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, look!(x));
            i += 32;
        }
        if i < n {
            let mut buf = [0i8; 32];
            buf[..n - i].copy_from_slice(&src[i..]);
            let mut out = [0i8; 32];
            let x = _mm256_loadu_si256(buf.as_ptr() as *const __m256i);
            _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, look!(x));
            dst[i..].copy_from_slice(&out[..n - i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_table() -> impl Strategy<Value = CodeTable> {
        proptest::collection::vec(any::<i8>(), 256).prop_map(|v| CodeTable(v.try_into().unwrap()))
    }

    proptest! {
        #[test]
        fn every_isa_looks_up_like_the_reference(
            table in any_table(),
            src in proptest::collection::vec(any::<i8>(), 0..300),
        ) {
            let mut want = vec![0i8; src.len()];
            lookup_portable(&table, &src, &mut want);
            for q in 0..src.len() {
                prop_assert_eq!(want[q], table.0[src[q] as u8 as usize]);
            }
            for isa in Isa::supported() {
                let mut got = vec![0x55i8; src.len()];
                lookup_int8_with(isa, &table, &src, &mut got);
                prop_assert_eq!(&got, &want, "isa {}", isa);
            }
        }

        #[test]
        fn composed_tables_equal_two_lookups(a in any_table(), b in any_table(),
                                             src in proptest::collection::vec(any::<i8>(), 0..100)) {
            let ab = a.then(&b);
            for &q in &src {
                prop_assert_eq!(ab.get(q), b.get(a.get(q)));
            }
        }
    }

    #[test]
    fn every_code_of_every_isa() {
        // A table with distinct entries and all 256 codes: catches a wrong half or nibble.
        let table = CodeTable::from_fn(|q| (q as u8).wrapping_mul(37).wrapping_add(11) as i8);
        let src: Vec<i8> = (0..=255u8).map(|b| b as i8).chain([-128, 127, 0]).collect();
        for isa in Isa::supported() {
            let mut got = vec![0i8; src.len()];
            lookup_int8_with(isa, &table, &src, &mut got);
            for (&q, &g) in src.iter().zip(&got) {
                assert_eq!(
                    g,
                    ((q as u8).wrapping_mul(37).wrapping_add(11)) as i8,
                    "{isa} q {q}"
                );
            }
        }
    }

    #[test]
    fn requantized_follows_mnn_rounding_and_clamps() {
        // s_in 0.5, s_out 1: identity in float, q * 0.5 rounds half away: 3 -> 1.5 -> 2,
        // -3 -> -1.5 -> -2.
        let t = CodeTable::requantized(0.5, 1.0, -127, |x| x);
        assert_eq!(t.get(3), 2);
        assert_eq!(t.get(-3), -2);
        assert_eq!(t.get(1), 1, "0.5 rounds away from zero");
        // ReLU6 with s_in 0.1, s_out 6/127: x = 10 * 0.1 = 1.0 -> 21.1666 -> 21; 127 -> 12.7 -> 6
        // -> 127; negative -> 0.
        let relu6 = CodeTable::requantized(0.1, 6.0 / 127.0, -127, |x| x.clamp(0.0, 6.0));
        assert_eq!(relu6.get(10), 21);
        assert_eq!(relu6.get(127), 127);
        assert_eq!(relu6.get(-50), 0);
        // Scale up with clamping: s_in 1, s_out 0.5 doubles; 100 -> 200 -> 127; -100 -> -127.
        let doubled = CodeTable::requantized(1.0, 0.5, -127, |x| x);
        assert_eq!(doubled.get(100), 127);
        assert_eq!(doubled.get(-100), -127);
        assert_eq!(doubled.get(-128), -127, "codes never reach -128");
        // A fused ReLU clamps at 0.
        let relu = CodeTable::requantized(1.0, 1.0, 0, |x| x);
        assert_eq!(relu.get(-5), 0);
        assert_eq!(relu.get(5), 5);
    }

    #[test]
    fn mnn_table_is_offset_by_127() {
        let mut raw = [0i8; 255];
        for (i, r) in raw.iter_mut().enumerate() {
            *r = (i as i32 - 127).clamp(-127, 127) as i8 / 2;
        }
        let t = CodeTable::from_mnn_table(&raw);
        assert_eq!(t.get(-127), -63);
        assert_eq!(t.get(0), 0);
        assert_eq!(t.get(127), 63);
        assert_eq!(t.get(-128), -63, "-128 maps like -127");
    }
}
