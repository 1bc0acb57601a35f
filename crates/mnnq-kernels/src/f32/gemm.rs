//! Packed fp32 GEMM: `C[m][n] = act(sum_k A[m][k] * B[k][n] + bias[n])`.
//!
//! `A` is used in place (row-major with stride `lda`: NHWC pixels, or an im2col tile), `B` is
//! pre-packed ([`PackedWeights`]). The blocking follows the usual scheme: a block of `MC` rows
//! of `A` by `KC` of the reduction stays in L2 while every column panel of `B` passes over it; a
//! `KC x panel` slice of `B` stays in L1 while the micro-kernel walks the block's row tiles.
//!
//! Partial sums of a K block are stored to `C` and reloaded as the starting accumulator of the
//! next block, so each output element is the same chain of fused multiply-adds whatever the
//! blocking, the row split between threads or the tile a row falls in: results are
//! bit-identical for any `M` split.

use super::pack::{Family, PackedWeights};
use super::simd::{F32Vector, Portable};
use crate::geometry::Activation;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};

/// The widest panel any family packs (AVX-512: 2 x 16 lanes).
const MAX_PANEL_WIDTH: usize = 32;

/// Everything one micro-kernel call needs; passed by reference and fully inlined.
struct TileArgs {
    /// Reduction steps in this K block.
    kc: usize,
    /// `A` at the tile's first row and the block's first reduction index.
    a: *const f32,
    lda: usize,
    /// The panel's packed `B` at the block's first reduction index (`[k][vectors*lanes]`).
    b: *const f32,
    /// `C` at the tile's first row and the panel's first column.
    c: *mut f32,
    ldc: usize,
    /// Real columns of the panel (the last vector may be partial).
    cols: usize,
    /// First K block: accumulators start at zero rather than from `C`.
    first: bool,
    /// Last K block: add bias, clamp and store the final result.
    last: bool,
    /// Bias for the panel's columns, padded to the full panel width.
    bias: *const f32,
    lo: f32,
    hi: f32,
}

/// The micro-kernel: a `ROWS x (VECTORS * lanes)` tile of `C` held in registers.
///
/// Per reduction step it loads `VECTORS` vectors of `B` and broadcasts one `A` element per row;
/// `ROWS * VECTORS` FMAs follow. Bias, clamp and store are fused into the last K block.
#[inline(always)]
unsafe fn micro_tile<V: F32Vector, const ROWS: usize, const VECTORS: usize>(t: &TileArgs) {
    let lanes = V::LANES;
    let panel_width = VECTORS * lanes;
    // Lanes of vector `j` that are real columns.
    let valid = |j: usize| t.cols.saturating_sub(j * lanes).min(lanes);

    let mut acc = [[V::zero(); VECTORS]; ROWS];
    if !t.first {
        for (i, row) in acc.iter_mut().enumerate() {
            for (j, acc) in row.iter_mut().enumerate() {
                *acc = V::load_n(t.c.add(i * t.ldc + j * lanes), valid(j));
            }
        }
    }
    let mut b = t.b;
    for p in 0..t.kc {
        let mut bv = [V::zero(); VECTORS];
        for (j, bv) in bv.iter_mut().enumerate() {
            *bv = V::load(b.add(j * lanes));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = V::splat(*t.a.add(i * t.lda + p));
            for (j, acc) in row.iter_mut().enumerate() {
                *acc = av.mul_add(bv[j], *acc);
            }
        }
        b = b.add(panel_width);
    }
    if t.last {
        let (lo, hi) = (V::splat(t.lo), V::splat(t.hi));
        for j in 0..VECTORS {
            let bias = V::load(t.bias.add(j * lanes));
            for row in acc.iter_mut() {
                row[j] = row[j].add(bias).clamp(lo, hi);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, acc) in row.iter().enumerate() {
            let n = valid(j);
            if n > 0 {
                acc.store_n(t.c.add(i * t.ldc + j * lanes), n);
            }
        }
    }
}

/// One ISA's set of micro-kernels and blocking parameters.
trait TileSet {
    type V: F32Vector;
    /// Rows of a full tile.
    const MR: usize;
    /// Reduction block: a `KC x panel` slice of `B` should stay in L1.
    const KC: usize;
    /// Row block (a multiple of `MR`): `MC x KC` of `A` should stay in L2.
    const MC: usize;
    /// Runs the micro-kernel for `rows <= MR` rows and a `vectors`-wide panel.
    unsafe fn tile(rows: usize, vectors: usize, t: &TileArgs);
}

/// Expands to a `match` from run-time (rows, vectors) to the monomorphised micro-kernel.
macro_rules! tile_dispatch {
    ($v:ty, $rows:expr, $vectors:expr, $t:expr, [$($r:literal)*]) => {
        match $vectors {
            1 => match $rows {
                $($r => micro_tile::<$v, $r, 1>($t),)*
                _ => unreachable!("tile rows out of range"),
            },
            2 => match $rows {
                $($r => micro_tile::<$v, $r, 2>($t),)*
                _ => unreachable!("tile rows out of range"),
            },
            _ => unreachable!("panel wider than two vectors"),
        }
    };
}

/// Portable: 4 x 16 (two 8-lane pseudo-vectors), for CPUs without AVX2.
struct PortableTiles;
impl TileSet for PortableTiles {
    type V = Portable;
    const MR: usize = 4;
    const KC: usize = 256;
    const MC: usize = 64;
    #[inline(always)]
    unsafe fn tile(rows: usize, vectors: usize, t: &TileArgs) {
        tile_dispatch!(Portable, rows, vectors, t, [1 2 3 4])
    }
}

/// AVX2: 6 x 16 = 12 `ymm` accumulators + 2 for `B` + 1 broadcast, of 16 registers.
#[cfg(target_arch = "x86_64")]
struct Avx2Tiles;
#[cfg(target_arch = "x86_64")]
impl TileSet for Avx2Tiles {
    type V = Avx2;
    const MR: usize = 6;
    const KC: usize = 256;
    const MC: usize = 96;
    #[inline(always)]
    unsafe fn tile(rows: usize, vectors: usize, t: &TileArgs) {
        tile_dispatch!(Avx2, rows, vectors, t, [1 2 3 4 5 6])
    }
}

/// AVX-512: 12 x 32 = 24 `zmm` accumulators + 2 for `B` + broadcasts, of 32 registers. Twelve
/// independent FMA chains per `B` vector hide the 4-cycle FMA latency on two FMA ports.
#[cfg(target_arch = "x86_64")]
struct Avx512Tiles;
#[cfg(target_arch = "x86_64")]
impl TileSet for Avx512Tiles {
    type V = Avx512;
    const MR: usize = 12;
    const KC: usize = 256;
    const MC: usize = 192;
    #[inline(always)]
    unsafe fn tile(rows: usize, vectors: usize, t: &TileArgs) {
        tile_dispatch!(Avx512, rows, vectors, t, [1 2 3 4 5 6 7 8 9 10 11 12])
    }
}

/// One GEMM call's operands, checked by [`gemm`].
struct Operands<'a> {
    m: usize,
    a: *const f32,
    lda: usize,
    packed: &'a PackedWeights,
    bias: &'a [f32],
    lo: f32,
    hi: f32,
    c: *mut f32,
    ldc: usize,
    /// The slice of the reduction this call covers; `A`'s column 0 is `k_range.start`.
    k_range: Range<usize>,
    /// Start from zero (otherwise from the partial sums already in `C`).
    from_zero: bool,
    /// Apply bias and activation after the last reduction step.
    finish: bool,
}

/// The blocked loop nest around the micro-kernels.
#[inline(always)]
unsafe fn gemm_blocked<T: TileSet>(op: &Operands) {
    let m = op.m;
    let (k_start, k_end) = (op.k_range.start, op.k_range.end);
    let data = op.packed.data().as_ptr();
    let lanes = T::V::LANES;
    for m0 in (0..m).step_by(T::MC) {
        let mc = T::MC.min(m - m0);
        // An empty range still makes one pass when it has to finish (bias and activation only).
        let mut k0 = k_start;
        while k0 < k_end || (k0 == k_start && op.finish) {
            let kc = T::KC.min(k_end - k0);
            for panel in op.packed.panels() {
                let mut panel_bias = [0.0f32; MAX_PANEL_WIDTH];
                if !op.bias.is_empty() {
                    panel_bias[..panel.width]
                        .copy_from_slice(&op.bias[panel.col0..panel.col0 + panel.width]);
                }
                let b = data.add(panel.offset + k0 * panel.vectors * lanes);
                for i0 in (0..mc).step_by(T::MR) {
                    let rows = T::MR.min(mc - i0);
                    let row = m0 + i0;
                    let args = TileArgs {
                        kc,
                        a: op.a.add(row * op.lda + (k0 - k_start)),
                        lda: op.lda,
                        b,
                        c: op.c.add(row * op.ldc + panel.col0),
                        ldc: op.ldc,
                        cols: panel.width,
                        first: op.from_zero && k0 == k_start,
                        last: op.finish && k0 + kc == k_end,
                        bias: panel_bias.as_ptr(),
                        lo: op.lo,
                        hi: op.hi,
                    };
                    T::tile(rows, panel.vectors, &args);
                }
            }
            k0 += kc;
            if kc == 0 {
                break;
            }
        }
    }
}

unsafe fn gemm_portable(op: &Operands) {
    gemm_blocked::<PortableTiles>(op)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_avx2(op: &Operands) {
    gemm_blocked::<Avx2Tiles>(op)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn gemm_avx512(op: &Operands) {
    gemm_blocked::<Avx512Tiles>(op)
}

/// `C[i][j] = act(sum_k A[i][k] * B[k][j] + bias[j])` for `i < m`, `j < packed.n()`.
///
/// * `a`: row `i` starts at `a[i * lda]`, `lda >= k`.
/// * `bias`: `packed.n()` floats, or empty for no bias.
/// * `c`: row `i` starts at `c[i * ldc]`, `ldc >= n`; only the `n` columns of each row are
///   written, so `C` may be a channel slice of a wider tensor (concatenation in place).
///
/// The micro-kernel is the one of the ISA `packed` was packed for.
///
/// # Panics
/// When a slice is too short for the given sizes and strides (a caller bug).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    packed: &PackedWeights,
    bias: &[f32],
    act: Activation,
    c: &mut [f32],
    ldc: usize,
) {
    let (k, n) = (packed.k(), packed.n());
    if m == 0 || n == 0 {
        return;
    }
    assert!(lda >= k, "gemm: lda {lda} < k {k}");
    assert!(ldc >= n, "gemm: ldc {ldc} < n {n}");
    assert!(
        a.len() >= (m - 1) * lda + k,
        "gemm: A has {} floats, needs {} for m={m} k={k} lda={lda}",
        a.len(),
        (m - 1) * lda + k
    );
    assert!(
        c.len() >= (m - 1) * ldc + n,
        "gemm: C has {} floats, needs {} for m={m} n={n} ldc={ldc}",
        c.len(),
        (m - 1) * ldc + n
    );
    assert!(
        bias.is_empty() || bias.len() == n,
        "gemm: bias has {} floats, expected {n} or none",
        bias.len()
    );
    if k == 0 {
        // No reduction: every output is the activated bias.
        for row in c.chunks_mut(ldc).take(m) {
            for (j, out) in row[..n].iter_mut().enumerate() {
                *out = act.apply(bias.get(j).copied().unwrap_or(0.0));
            }
        }
        return;
    }
    let (lo, hi) = act.bounds();
    let op = Operands {
        m,
        a: a.as_ptr(),
        lda,
        packed,
        bias,
        lo,
        hi,
        c: c.as_mut_ptr(),
        ldc,
        k_range: 0..k,
        from_zero: true,
        finish: true,
    };
    // SAFETY: sizes checked above.
    unsafe { run(&op) }
}

/// Runs the micro-kernels of the packing's family.
///
/// # Safety
/// `op`'s pointers must cover the sizes it describes.
unsafe fn run(op: &Operands) {
    // The packing's family was checked against the CPU when packed.
    unsafe {
        match op.packed.family() {
            Family::Portable => gemm_portable(op),
            #[cfg(target_arch = "x86_64")]
            Family::Avx2 => gemm_avx2(op),
            #[cfg(target_arch = "x86_64")]
            Family::Avx512 => gemm_avx512(op),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 kernel family on another architecture"),
        }
    }
}

/// One pass of a GEMM split along the reduction: `C[i][j] += sum over k in k_range of
/// A[i][k - k_range.start] * B[k][j]`, continuing each element's FMA chain from the value in `C`
/// (so a sequence of passes over consecutive ranges rounds exactly like one call). With
/// `finish`, bias and activation are applied after the pass; an empty `k_range` with `finish`
/// only applies them. `a` is not read when `k_range` is empty.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_pass(
    m: usize,
    a: &[f32],
    lda: usize,
    packed: &PackedWeights,
    k_range: Range<usize>,
    finish: Option<(&[f32], Activation)>,
    c: &mut [f32],
    ldc: usize,
) {
    let n = packed.n();
    if m == 0 || n == 0 {
        return;
    }
    let kc = k_range.len();
    assert!(
        k_range.end <= packed.k(),
        "gemm_pass: k range beyond {}",
        packed.k()
    );
    assert!(
        kc == 0 || (lda >= kc && a.len() >= (m - 1) * lda + kc),
        "gemm_pass: A too short"
    );
    assert!(
        ldc >= n && c.len() >= (m - 1) * ldc + n,
        "gemm_pass: C too short"
    );
    let (bias, act) = finish.unwrap_or((&[], Activation::None));
    assert!(bias.is_empty() || bias.len() == n, "gemm_pass: bias length");
    let (lo, hi) = act.bounds();
    let op = Operands {
        m,
        a: a.as_ptr(),
        lda,
        packed,
        bias,
        lo,
        hi,
        c: c.as_mut_ptr(),
        ldc,
        k_range,
        from_zero: false,
        finish: finish.is_some(),
    };
    // SAFETY: sizes checked above.
    unsafe { run(&op) }
}
