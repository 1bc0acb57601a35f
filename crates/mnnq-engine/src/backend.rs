//! The engine's fp32 hot loops, behind one small interface (`PackedMatrix`, `gemm_rows`,
//! `depthwise_rows`) so that switching to `mnnq-kernels` is a change in this file only.
//!
//! Accumulation order is fixed per output element (k ascending from zero, then the bias), and
//! work is split over output rows/columns only (never over k), so results do not depend on how
//! many threads run or how the rows are tiled.

use mnnq_kernels::dispatch::{active_isa, Isa};
use mnnq_kernels::Activation;

/// Columns per packed panel (one AVX-512 vector).
pub const NR: usize = 16;
/// Rows per micro-tile.
const MR: usize = 8;

/// A `K x N` right-hand matrix packed in panels of [`NR`] columns: `[panel][k][NR]`, zero padded.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedMatrix {
    pub k: usize,
    pub n: usize,
    pub data: Vec<f32>,
}

impl PackedMatrix {
    /// Packs `get(k, n)` for a `k x n` matrix.
    pub fn pack(k: usize, n: usize, get: impl Fn(usize, usize) -> f32) -> PackedMatrix {
        let panels = n.div_ceil(NR);
        let mut data = vec![0.0f32; panels * k * NR];
        for p in 0..panels {
            for kk in 0..k {
                for j in 0..NR {
                    let col = p * NR + j;
                    if col < n {
                        data[(p * k + kk) * NR + j] = get(kk, col);
                    }
                }
            }
        }
        PackedMatrix { k, n, data }
    }

    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..(p + 1) * self.k * NR]
    }
}

/// `C[r, col0..col1] = act(A[r, :] . B[:, col0..col1] + bias)` for `rows` rows of A (row stride
/// `lda`) into C (row stride `ldc`; C points at column 0 of row 0 of this block). `col0` must be a
/// multiple of [`NR`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows(
    a: &[f32],
    lda: usize,
    rows: usize,
    b: &PackedMatrix,
    col0: usize,
    col1: usize,
    bias: &[f32],
    act: Activation,
    c: &mut [f32],
    ldc: usize,
) {
    if rows == 0 {
        return;
    }
    assert!(a.len() >= (rows - 1) * lda + b.k, "A too short");
    let ptrs: Vec<*const f32> = (0..rows).map(|r| a[r * lda..].as_ptr()).collect();
    // SAFETY: every row pointer has `b.k` readable floats (checked above).
    unsafe { gemm_indirect(&ptrs, 1, rows, b, col0, col1, bias, act, c, ldc) }
}

/// Indirect GEMM: row `r` of A is the concatenation, over `taps` taps, of the `b.k / taps` floats
/// at `ptrs[r * taps + t]`. This is a convolution without an im2col copy: the pointers address
/// input pixels directly (or a zero row for padding).
///
/// # Safety
/// Every pointer must be valid for reading `b.k / taps` floats.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_indirect(
    ptrs: &[*const f32],
    taps: usize,
    rows: usize,
    b: &PackedMatrix,
    col0: usize,
    col1: usize,
    bias: &[f32],
    act: Activation,
    c: &mut [f32],
    ldc: usize,
) {
    debug_assert_eq!(col0 % NR, 0);
    if rows == 0 || col1 <= col0 {
        return;
    }
    assert!(
        taps > 0 && b.k.is_multiple_of(taps),
        "k must split evenly over taps"
    );
    assert!(ptrs.len() >= rows * taps, "indirection too short");
    assert!(c.len() >= (rows - 1) * ldc + col1, "C too short");
    assert!(
        col1 <= b.n && bias.len() >= col1,
        "bias or columns out of range"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if active_isa() >= Isa::Avx512 {
            // SAFETY: the CPU supports AVX-512 (checked by `active_isa`); C, bias and the
            // indirection were checked above, the pointers by the caller.
            unsafe { avx512::gemm(ptrs, taps, rows, b, col0, col1, bias, act, c, ldc) };
            return;
        }
        if active_isa() >= Isa::Avx2 {
            // SAFETY: AVX2 and FMA are available.
            unsafe { gemm_avx2(ptrs, taps, rows, b, col0, col1, bias, act, c, ldc) };
            return;
        }
    }
    unsafe { gemm_portable(ptrs, taps, rows, b, col0, col1, bias, act, c, ldc) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_avx2(
    ptrs: &[*const f32],
    taps: usize,
    rows: usize,
    b: &PackedMatrix,
    col0: usize,
    col1: usize,
    bias: &[f32],
    act: Activation,
    c: &mut [f32],
    ldc: usize,
) {
    unsafe { gemm_portable(ptrs, taps, rows, b, col0, col1, bias, act, c, ldc) }
}

/// Plain Rust GEMM (the reference; also the AVX2 path, auto-vectorized).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn gemm_portable(
    ptrs: &[*const f32],
    taps: usize,
    rows: usize,
    b: &PackedMatrix,
    col0: usize,
    col1: usize,
    bias: &[f32],
    act: Activation,
    c: &mut [f32],
    ldc: usize,
) {
    let (lo, hi) = act.bounds();
    let cin = b.k / taps;
    for p in col0 / NR..col1.div_ceil(NR) {
        let panel = b.panel(p);
        let width = (col1 - p * NR).min(NR);
        for r in 0..rows {
            let mut acc = [0.0f32; NR];
            for t in 0..taps {
                // SAFETY: the caller guarantees `cin` readable floats per pointer.
                let arow = unsafe { std::slice::from_raw_parts(ptrs[r * taps + t], cin) };
                for (ci, &av) in arow.iter().enumerate() {
                    let kk = t * cin + ci;
                    let brow = &panel[kk * NR..kk * NR + NR];
                    for j in 0..NR {
                        acc[j] += av * brow[j];
                    }
                }
            }
            let crow = &mut c[r * ldc + p * NR..r * ldc + p * NR + width];
            for j in 0..width {
                crow[j] = (acc[j] + bias[p * NR + j]).max(lo).min(hi);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PackedMatrix, MR, NR};
    use mnnq_kernels::Activation;
    use std::arch::x86_64::*;

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gemm(
        ptrs: &[*const f32],
        taps: usize,
        rows: usize,
        b: &PackedMatrix,
        col0: usize,
        col1: usize,
        bias: &[f32],
        act: Activation,
        c: &mut [f32],
        ldc: usize,
    ) {
        let (lo, hi) = act.bounds();
        let k = b.k;
        let cin = k / taps;
        let mut p = col0 / NR;
        let p_end = col1.div_ceil(NR);
        while p < p_end {
            let two = p + 1 < p_end;
            let width0 = (col1 - p * NR).min(NR);
            let width1 = if two {
                (col1 - (p + 1) * NR).min(NR)
            } else {
                0
            };
            let m0: u16 = if width0 == NR {
                0xffff
            } else {
                (1u16 << width0) - 1
            };
            let m1: u16 = if width1 == NR {
                0xffff
            } else {
                ((1u32 << width1) - 1) as u16
            };
            let b0 = b.data.as_ptr().add(p * k * NR);
            let b1 = if two {
                b.data.as_ptr().add((p + 1) * k * NR)
            } else {
                b0
            };
            let bias0 = bias.as_ptr().add(p * NR);
            let mut r = 0;
            while r < rows {
                let mr = (rows - r).min(MR);
                let t = Tile {
                    cin,
                    taps,
                    ptrs: ptrs.as_ptr().add(r * taps),
                    b0,
                    b1,
                    c: c.as_mut_ptr().add(r * ldc + p * NR),
                    ldc,
                    bias0,
                    m0,
                    m1,
                    lo,
                    hi,
                };
                match (mr, two) {
                    (8, true) => t.run::<8, 2>(),
                    (8, false) => t.run::<8, 1>(),
                    (7, true) => t.run::<7, 2>(),
                    (7, false) => t.run::<7, 1>(),
                    (6, true) => t.run::<6, 2>(),
                    (6, false) => t.run::<6, 1>(),
                    (5, true) => t.run::<5, 2>(),
                    (5, false) => t.run::<5, 1>(),
                    (4, true) => t.run::<4, 2>(),
                    (4, false) => t.run::<4, 1>(),
                    (3, true) => t.run::<3, 2>(),
                    (3, false) => t.run::<3, 1>(),
                    (2, true) => t.run::<2, 2>(),
                    (2, false) => t.run::<2, 1>(),
                    (_, true) => t.run::<1, 2>(),
                    (_, false) => t.run::<1, 1>(),
                }
                r += mr;
            }
            p += if two { 2 } else { 1 };
        }
    }

    struct Tile {
        cin: usize,
        taps: usize,
        /// `M x taps` row pointers.
        ptrs: *const *const f32,
        b0: *const f32,
        b1: *const f32,
        c: *mut f32,
        ldc: usize,
        bias0: *const f32,
        m0: u16,
        m1: u16,
        lo: f32,
        hi: f32,
    }

    impl Tile {
        /// An `M x (16 * P)` block of C.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const M: usize, const P: usize>(&self) {
            let mut acc = [[_mm512_setzero_ps(); P]; M];
            let mut b0 = self.b0;
            let mut b1 = self.b1;
            for t in 0..self.taps {
                let mut ap = [std::ptr::null::<f32>(); M];
                for (r, a) in ap.iter_mut().enumerate() {
                    *a = *self.ptrs.add(r * self.taps + t);
                }
                for kk in 0..self.cin {
                    let bv0 = _mm512_loadu_ps(b0);
                    let bv1 = if P == 2 { _mm512_loadu_ps(b1) } else { bv0 };
                    for r in 0..M {
                        let av = _mm512_set1_ps(*ap[r].add(kk));
                        acc[r][0] = _mm512_fmadd_ps(av, bv0, acc[r][0]);
                        if P == 2 {
                            acc[r][1] = _mm512_fmadd_ps(av, bv1, acc[r][1]);
                        }
                    }
                    b0 = b0.add(NR);
                    b1 = b1.add(NR);
                }
            }
            let lo = _mm512_set1_ps(self.lo);
            let hi = _mm512_set1_ps(self.hi);
            let bias0 = _mm512_maskz_loadu_ps(self.m0, self.bias0);
            let bias1 = if P == 2 {
                _mm512_maskz_loadu_ps(self.m1, self.bias0.add(NR))
            } else {
                bias0
            };
            for (r, acc) in acc.iter().enumerate() {
                let cp = self.c.add(r * self.ldc);
                let v0 = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(acc[0], bias0), lo), hi);
                _mm512_mask_storeu_ps(cp, self.m0, v0);
                if P == 2 {
                    let v1 = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(acc[1], bias1), lo), hi);
                    _mm512_mask_storeu_ps(cp.add(NR), self.m1, v1);
                }
            }
        }
    }

    /// Depthwise rows, see `super::depthwise_rows`. Up to 8 channel vectors are accumulated side
    /// by side so that the FMA chains of different channels overlap.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn depthwise_rows(
        g: &super::DepthwiseGeometry,
        input: &[f32],
        weights: &[f32],
        bias: &[f32],
        act: Activation,
        oy0: usize,
        oy1: usize,
        out: &mut [f32],
    ) {
        let c = g.channels;
        let blocks = c.div_ceil(16);
        for oy in oy0..oy1 {
            let (ky0, ky1) = g.tap_range_y(oy);
            for ox in 0..g.out_w {
                let (kx0, kx1) = g.tap_range_x(ox);
                let op = out.as_mut_ptr().add(((oy - oy0) * g.out_w + ox) * c);
                let t = DwPixel {
                    g,
                    input: input.as_ptr(),
                    weights: weights.as_ptr(),
                    bias: bias.as_ptr(),
                    out: op,
                    oy,
                    ox,
                    ky: (ky0, ky1),
                    kx: (kx0, kx1),
                    act,
                };
                let mut b = 0;
                while b < blocks {
                    let n = (blocks - b).min(8);
                    match n {
                        8 => t.run::<8>(b),
                        7 => t.run::<7>(b),
                        6 => t.run::<6>(b),
                        5 => t.run::<5>(b),
                        4 => t.run::<4>(b),
                        3 => t.run::<3>(b),
                        2 => t.run::<2>(b),
                        _ => t.run::<1>(b),
                    }
                    b += n;
                }
            }
        }
    }

    struct DwPixel<'a> {
        g: &'a super::DepthwiseGeometry,
        input: *const f32,
        weights: *const f32,
        bias: *const f32,
        out: *mut f32,
        oy: usize,
        ox: usize,
        ky: (usize, usize),
        kx: (usize, usize),
        act: Activation,
    }

    impl DwPixel<'_> {
        /// Channel vectors `[b0, b0 + B)` of one output pixel.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const B: usize>(&self, b0: usize) {
            let g = self.g;
            let c = g.channels;
            let mask = |b: usize| -> u16 {
                let rest = c - (b0 + b) * 16;
                if rest >= 16 {
                    0xffff
                } else {
                    (1u16 << rest) - 1
                }
            };
            let mut acc = [_mm512_setzero_ps(); B];
            for (b, a) in acc.iter_mut().enumerate() {
                *a = _mm512_maskz_loadu_ps(mask(b), self.bias.add((b0 + b) * 16));
            }
            let c0 = b0 * 16;
            for ky in self.ky.0..self.ky.1 {
                let iy = self.oy * g.stride_h + ky * g.dilation_h - g.pad_top;
                let row = self.input.add(iy * g.in_w * c + c0);
                let wrow = self.weights.add(ky * g.kernel_w * c + c0);
                for kx in self.kx.0..self.kx.1 {
                    let ix = self.ox * g.stride_w + kx * g.dilation_w - g.pad_left;
                    let xp = row.add(ix * c);
                    let wp = wrow.add(kx * c);
                    #[allow(clippy::needless_range_loop)]
                    for b in 0..B {
                        let m = mask(b);
                        let x = _mm512_maskz_loadu_ps(m, xp.add(b * 16));
                        let w = _mm512_maskz_loadu_ps(m, wp.add(b * 16));
                        acc[b] = _mm512_fmadd_ps(x, w, acc[b]);
                    }
                }
            }
            let (lo, hi) = self.act.bounds();
            let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
            for (b, a) in acc.iter().enumerate() {
                let v = _mm512_min_ps(_mm512_max_ps(*a, lo), hi);
                _mm512_mask_storeu_ps(self.out.add(c0 + b * 16), mask(b), v);
            }
        }
    }
}

/// Geometry of a depthwise convolution on one NHWC image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DepthwiseGeometry {
    pub in_h: usize,
    pub in_w: usize,
    pub channels: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl DepthwiseGeometry {
    /// Kernel rows `[ky0, ky1)` that land inside the input for output row `oy`.
    #[inline]
    pub fn tap_range_y(&self, oy: usize) -> (usize, usize) {
        tap_range(
            oy,
            self.stride_h,
            self.dilation_h,
            self.pad_top,
            self.kernel_h,
            self.in_h,
        )
    }

    #[inline]
    pub fn tap_range_x(&self, ox: usize) -> (usize, usize) {
        tap_range(
            ox,
            self.stride_w,
            self.dilation_w,
            self.pad_left,
            self.kernel_w,
            self.in_w,
        )
    }
}

#[inline]
fn tap_range(
    o: usize,
    stride: usize,
    dil: usize,
    pad: usize,
    k: usize,
    n: usize,
) -> (usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    // first tap with start + t*dil >= 0
    let t0 = if start >= 0 {
        0
    } else {
        ((-start) as usize).div_ceil(dil)
    };
    // last tap with start + t*dil < n
    let lim = n as isize - start;
    let t1 = if lim <= 0 {
        0
    } else {
        ((lim as usize - 1) / dil + 1).min(k)
    };
    (t0.min(t1), t1)
}

/// Depthwise convolution of output rows `[oy0, oy1)` of one NHWC image. `weights` are
/// `[kh][kw][C]`; `out` holds exactly those rows.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_rows(
    g: &DepthwiseGeometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    act: Activation,
    oy0: usize,
    oy1: usize,
    out: &mut [f32],
) {
    let c = g.channels;
    assert!(input.len() >= g.in_h * g.in_w * c);
    assert!(weights.len() >= g.kernel_h * g.kernel_w * c && bias.len() >= c);
    assert!(out.len() >= (oy1 - oy0) * g.out_w * c && oy1 <= g.out_h);
    #[cfg(target_arch = "x86_64")]
    if active_isa() >= Isa::Avx512 {
        // SAFETY: AVX-512 is available and the buffer sizes were checked above.
        unsafe { avx512::depthwise_rows(g, input, weights, bias, act, oy0, oy1, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if active_isa() >= Isa::Avx2 {
        // SAFETY: AVX2 and FMA are available.
        unsafe { depthwise_rows_avx2(g, input, weights, bias, act, oy0, oy1, out) };
        return;
    }
    depthwise_rows_portable(g, input, weights, bias, act, oy0, oy1, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_rows_avx2(
    g: &DepthwiseGeometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    act: Activation,
    oy0: usize,
    oy1: usize,
    out: &mut [f32],
) {
    depthwise_rows_portable(g, input, weights, bias, act, oy0, oy1, out)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn depthwise_rows_portable(
    g: &DepthwiseGeometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    act: Activation,
    oy0: usize,
    oy1: usize,
    out: &mut [f32],
) {
    let c = g.channels;
    let (lo, hi) = act.bounds();
    for oy in oy0..oy1 {
        let (ky0, ky1) = g.tap_range_y(oy);
        for ox in 0..g.out_w {
            let (kx0, kx1) = g.tap_range_x(ox);
            let o = &mut out[((oy - oy0) * g.out_w + ox) * c..][..c];
            o.copy_from_slice(&bias[..c]);
            for ky in ky0..ky1 {
                let iy = oy * g.stride_h + ky * g.dilation_h - g.pad_top;
                for kx in kx0..kx1 {
                    let ix = ox * g.stride_w + kx * g.dilation_w - g.pad_left;
                    let x = &input[(iy * g.in_w + ix) * c..][..c];
                    let w = &weights[(ky * g.kernel_w + kx) * c..][..c];
                    for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
                        *o += x * w;
                    }
                }
            }
            for v in o.iter_mut() {
                *v = v.max(lo).min(hi);
            }
        }
    }
}

/// The instruction set these kernels use in this process.
pub fn isa_name() -> &'static str {
    active_isa().name()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, bias: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for kk in 0..k {
                    s += a[i * k + kk] as f64 * b[kk * n + j] as f64;
                }
                c[i * n + j] = s as f32 + bias[j];
            }
        }
        c
    }

    #[test]
    fn gemm_matches_naive_on_ragged_sizes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (9, 7, 33),
            (17, 40, 16),
            (8, 3, 50),
            (23, 64, 100),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
                .collect();
            let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
            let packed = PackedMatrix::pack(k, n, |kk, j| b[kk * n + j]);
            let mut c = vec![f32::NAN; m * n];
            gemm_rows(&a, k, m, &packed, 0, n, &bias, Activation::None, &mut c, n);
            let want = naive(&a, m, k, &b, n, &bias);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4, "{m}x{k}x{n}: {x} vs {y}");
            }
            // Splitting the columns and rows gives the same bits.
            let mut c2 = vec![f32::NAN; m * n];
            let half = (n / 2) / NR * NR;
            let top = m / 2;
            gemm_rows(
                &a,
                k,
                top,
                &packed,
                0,
                half,
                &bias,
                Activation::None,
                &mut c2,
                n,
            );
            gemm_rows(
                &a,
                k,
                top,
                &packed,
                half,
                n,
                &bias,
                Activation::None,
                &mut c2,
                n,
            );
            gemm_rows(
                &a[top * k..],
                k,
                m - top,
                &packed,
                0,
                n,
                &bias,
                Activation::None,
                &mut c2[top * n..],
                n,
            );
            assert_eq!(c, c2);
        }
    }

    #[test]
    fn tap_ranges_clip_padding() {
        // k=3, stride 1, pad 1, n=4: output 0 skips tap 0, output 3 skips tap 2.
        assert_eq!(tap_range(0, 1, 1, 1, 3, 4), (1, 3));
        assert_eq!(tap_range(3, 1, 1, 1, 3, 4), (0, 2));
        assert_eq!(tap_range(1, 1, 1, 1, 3, 4), (0, 3));
        // stride 2, pad 0, k 3, n 5: output 2 starts at 4 -> only tap 0.
        assert_eq!(tap_range(2, 2, 1, 0, 3, 5), (0, 1));
    }
}
