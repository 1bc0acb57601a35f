//! Winograd F(m, 3) convolution computed the way MNN 3.6.1's x86 CPU backend (AVX2, 8-channel
//! packs) computes it, so that a float model gives MNN's numbers, not only the exact
//! convolution's to within Winograd's rounding.
//!
//! What has to agree with MNN for the outputs to agree to the last bits:
//! * the tile size: [`mnn_winograd_unit`] is MNN's cost rule (`ConvolutionPackWinograd::
//!   bestWinogradUnit`) for one thread, output tiles of 2, 4 or 6 (transform sizes 4, 6, 8);
//! * the transform matrices: interpolation points 0, 1, -1, 2, -2, 3, -3 (and infinity), with the
//!   Lagrange denominators folded into `G` (MNN's `WinogradGenerater(unit, 3, 1, true)`); the
//!   kernel transform `(G K) G^T` is evaluated in f32 with plain multiply-adds in MNN's order;
//! * the order of every addition in the input and output transforms, which MNN writes out by
//!   hand per transform size; the input transform runs along x first, then along y, and the
//!   second (y) pass of tiles in a full batch of 24 uses other formulas than the tiles of the last
//!   partial batch (MNN's fused transform-and-pack path), so tiles are grouped in 24s from the
//!   first tile of the batch, as MNN's single-thread schedule does; the output transform runs
//!   along y first, then along x, then adds the bias and clamps;
//! * the products in the transformed domain: one fused multiply-add chain per output starting
//!   from zero, over the input channels in order (the packed [`gemm`] on AVX2 / AVX-512; the
//!   portable build, whose GEMM rounds the products separately, chains `f32::mul_add` instead).

use super::gemm::gemm;
use super::pack::PackedWeights;
use crate::geometry::{Activation, ConvGeometry};
use std::cell::RefCell;
use std::ops::{Add, Mul, Range, Sub};

/// Tiles transformed together (MNN's GEMM row count `ePack` on AVX2).
pub const WINOGRAD_TILE_BATCH: usize = 24;

/// Eight channels of one transform element.
#[derive(Clone, Copy, Default)]
struct V8([f32; 8]);

impl Add for V8 {
    type Output = V8;
    #[inline(always)]
    fn add(self, b: V8) -> V8 {
        V8(std::array::from_fn(|i| self.0[i] + b.0[i]))
    }
}
impl Sub for V8 {
    type Output = V8;
    #[inline(always)]
    fn sub(self, b: V8) -> V8 {
        V8(std::array::from_fn(|i| self.0[i] - b.0[i]))
    }
}
impl Mul<f32> for V8 {
    type Output = V8;
    #[inline(always)]
    fn mul(self, b: f32) -> V8 {
        V8(std::array::from_fn(|i| self.0[i] * b))
    }
}

/// MNN's `a + b * c` helper (two roundings: MNN's AVX2 build does not fuse it).
#[inline(always)]
fn madd(a: V8, b: V8, c: f32) -> V8 {
    a + b * c
}

/// Input transform along one line, the formulas of MNN's "unroll" transform.
#[inline(always)]
fn source_unroll(alpha: usize, b: &[V8], m: &mut [V8]) {
    match alpha {
        4 => {
            m[0] = b[0] - b[2];
            m[1] = b[1] + b[2];
            m[2] = b[2] - b[1];
            m[3] = b[3] - b[1];
        }
        6 => {
            let mid0 = madd(b[4], b[2], -4.0);
            let mid1 = madd(b[3], b[1], -4.0);
            let mid2 = madd(b[2], b[0], -4.0);
            let mid3 = madd(b[5], b[3], -4.0);
            let mid4 = b[4] - b[2];
            let mid5 = (b[3] - b[1]) * 2.0;
            m[0] = mid0 - mid2;
            m[1] = mid0 + mid1;
            m[2] = mid0 - mid1;
            m[3] = mid4 + mid5;
            m[4] = mid4 - mid5;
            m[5] = mid3 - mid1;
        }
        _ => {
            let mut mid0 = madd(madd(b[6], b[2], 36.0), b[4], -13.0);
            let mut mid1 = madd(madd(b[4], b[0], 36.0), b[2], -13.0);
            m[0] = mid1 - mid0;
            let mut mid2 = madd(madd(b[5], b[1], 36.0), b[3], -13.0);
            m[1] = mid0 + mid2;
            m[2] = mid0 - mid2;
            mid1 = madd(madd(b[7], b[3], 36.0), b[5], -13.0);
            m[7] = mid1 - mid2;
            mid0 = madd(madd(b[6], b[2], 9.0), b[4], -10.0);
            mid1 = madd(b[5], b[1], 18.0) + madd(b[5], b[3], -20.0);
            mid2 = madd(b[5] * 3.0, b[1], 12.0);
            m[3] = mid0 + mid1;
            m[4] = mid0 - mid1;
            mid0 = madd(madd(b[6], b[2], 4.0), b[4], -5.0);
            mid1 = madd(mid2, b[3], -15.0);
            m[5] = mid0 + mid1;
            m[6] = mid0 - mid1;
        }
    }
}

/// Input transform along one line, the formulas of MNN's fused transform-and-pack path.
#[inline(always)]
fn source_packed(alpha: usize, s: &[V8], m: &mut [V8]) {
    match alpha {
        4 => source_unroll(4, s, m),
        6 => {
            m[0] = s[0] * 4.0 - s[2] * 5.0 + s[4];
            m[1] = (s[1] + s[2]) * -4.0 + s[3] + s[4];
            m[2] = (s[1] - s[2]) * 4.0 + s[4] - s[3];
            m[3] = s[1] * -2.0 - s[2] + s[3] * 2.0 + s[4];
            m[4] = s[1] * 2.0 - s[2] - s[3] * 2.0 + s[4];
            m[5] = s[1] * 4.0 - s[3] * 5.0 + s[5];
        }
        _ => {
            m[0] = s[0] * 36.0 - s[2] * 49.0 + s[4] * 14.0 - s[6];
            m[1] = (s[1] + s[2]) * 36.0 - (s[3] + s[4]) * 13.0 + (s[5] + s[6]);
            m[2] = (s[2] - s[1]) * 36.0 + (s[3] - s[4]) * 13.0 + (s[6] - s[5]);
            m[3] = s[1] * 18.0 + s[2] * 9.0 - s[3] * 20.0 - s[4] * 10.0 + s[5] * 2.0 + s[6];
            m[4] = s[2] * 9.0 - s[1] * 18.0 + s[3] * 20.0 - s[4] * 10.0 - s[5] * 2.0 + s[6];
            m[5] = s[1] * 12.0 + s[2] * 4.0 - s[3] * 15.0 - s[4] * 5.0 + s[5] * 3.0 + s[6];
            m[6] = s[2] * 4.0 - s[1] * 12.0 + s[3] * 15.0 - s[4] * 5.0 - s[5] * 3.0 + s[6];
            m[7] = s[3] * 49.0 - s[1] * 36.0 - s[5] * 14.0 + s[7];
        }
    }
}

/// Output transform along one line (`alpha` values in, `alpha - 2` out).
#[inline(always)]
fn dest(alpha: usize, s: &[V8], m: &mut [V8]) {
    match alpha {
        4 => {
            m[0] = s[0] + s[1] + s[2];
            m[1] = (s[1] - s[2]) + s[3];
        }
        6 => {
            let v0 = s[3] + s[4];
            let v1 = s[3] - s[4];
            let v2 = s[1] + s[2];
            let v3 = s[1] - s[2];
            m[0] = s[0] + v2 + v0;
            m[1] = v3 + v1 + v1;
            m[2] = v2 + v0 * 4.0;
            m[3] = v3 + v1 * 8.0 + s[5];
        }
        _ => {
            let mid0 = s[1] + s[2];
            let mid1 = s[1] - s[2];
            let mid2 = s[3] + s[4];
            let mid3 = s[3] - s[4];
            let mid4 = s[5] + s[6];
            let mid5 = s[5] - s[6];
            m[0] = s[0] + mid0 + mid2 + mid4;
            m[1] = mid1 + mid3 * 2.0 + mid5 * 3.0;
            m[2] = mid0 + mid2 * 4.0 + mid4 * 9.0;
            m[3] = mid1 + mid3 * 8.0 + mid5 * 27.0;
            m[4] = mid0 + mid2 * 16.0 + mid4 * 81.0;
            m[5] = mid1 + mid3 * 32.0 + mid5 * 243.0 + s[7];
        }
    }
}

/// MNN's choice of output tile for a 3x3, stride-1 convolution on one thread (`None`: MNN runs
/// it as a direct convolution). Costs in f32 as MNN computes them.
pub fn mnn_winograd_unit(out_h: usize, out_w: usize, in_c: usize, out_c: usize) -> Option<usize> {
    const KERNEL: usize = 3;
    let per_thread = out_h * out_w;
    let max_unit = ((per_thread as f32).sqrt() as usize).clamp(2, 8);
    let (ow, oh, ic, oc) = (out_w as f32, out_h as f32, in_c as f32, out_c as f32);
    let k = KERNEL as f32;
    let direct = ow * oh * (2.0 * ic) * oc * k * k;
    let mut best = (0.0f32, 0);
    for unit in 2..=max_unit {
        let alpha = unit + KERNEL - 1;
        if !matches!(alpha, 4 | 6 | 8) {
            continue;
        }
        let (su, u) = (alpha as f32, unit as f32);
        let tiles = (out_w.div_ceil(unit) * out_h.div_ceil(unit)) as f32;
        let cost = ((2.0 * su) * su * su * ic
            + 2.0 * su * su * ic * oc
            + ((su + u) * u * (2.0 * su) * oc))
            * tiles;
        let rate = direct / cost;
        if rate > best.0 {
            best = (rate, unit);
        }
    }
    (best.0 >= 1.0).then_some(best.1)
}

/// MNN's kernel transform matrix `G` (`alpha x 3`, row-major) for transform size `alpha`.
fn mnn_g(alpha: usize) -> Vec<f32> {
    const KERNEL: usize = 3;
    let mut points = vec![0.0f32; alpha];
    let mut sign = 1i32;
    for i in 0..alpha - 1 {
        points[i + 1] = (sign * (1 + i as i32 / 2)) as f32;
        sign = -sign;
    }
    let mut denominators = vec![1.0f32; alpha];
    for x in 0..alpha - 1 {
        let mut product = 1.0f32;
        for i in 0..alpha - 1 {
            if i != x {
                product *= points[x] - points[i];
            }
        }
        denominators[x] = product;
    }
    if denominators[0] < 0.0 {
        denominators[0] = -denominators[0];
    }
    let mut g = vec![0.0f32; alpha * KERNEL];
    for y in 0..alpha {
        for i in 0..KERNEL {
            let numerator = if y == alpha - 1 {
                (i == KERNEL - 1) as i32 as f32
            } else if y == 0 && i == 0 {
                1.0
            } else {
                points[y].powi(i as i32)
            };
            g[y * KERNEL + i] = numerator / denominators[y];
        }
    }
    g
}

/// Transformed 3x3 weights: one packed `in_c x out_c` matrix per transform element.
#[derive(Debug)]
pub struct WinogradWeights {
    unit: usize,
    alpha: usize,
    in_c: usize,
    out_c: usize,
    /// Index `y * alpha + x` (y: frequency along rows).
    packed: Vec<PackedWeights>,
    /// The same matrices unpacked, `[element][in_c][out_c]` (for MNN's single-row kernel).
    matrices: Vec<f32>,
}

impl WinogradWeights {
    /// Transforms `[out_c][in_c][3][3]` weights for output tiles of `unit` (2, 4 or 6).
    pub fn pack(weights: &[f32], out_c: usize, in_c: usize, unit: usize) -> Option<Self> {
        const KERNEL: usize = 3;
        if !matches!(unit, 2 | 4 | 6) || weights.len() != out_c * in_c * KERNEL * KERNEL {
            return None;
        }
        let alpha = unit + KERNEL - 1;
        let g = mnn_g(alpha);
        let elements = alpha * alpha;
        // [element][ic][oc]
        let mut transformed = vec![0.0f32; elements * in_c * out_c];
        let mut m = vec![0.0f32; alpha * KERNEL];
        for oc in 0..out_c {
            for ic in 0..in_c {
                let k = &weights[(oc * in_c + ic) * KERNEL * KERNEL..][..KERNEL * KERNEL];
                // M = G K, then G K G^T, each sum from zero in index order.
                for y in 0..alpha {
                    for x in 0..KERNEL {
                        let mut sum = 0.0f32;
                        for i in 0..KERNEL {
                            sum += g[y * KERNEL + i] * k[i * KERNEL + x];
                        }
                        m[y * KERNEL + x] = sum;
                    }
                }
                for y in 0..alpha {
                    for x in 0..alpha {
                        let mut sum = 0.0f32;
                        for i in 0..KERNEL {
                            sum += m[y * KERNEL + i] * g[x * KERNEL + i];
                        }
                        transformed[((y * alpha + x) * in_c + ic) * out_c + oc] = sum;
                    }
                }
            }
        }
        let packed = transformed
            .chunks(in_c * out_c)
            .map(|b| PackedWeights::pack_matrix(b, in_c, out_c))
            .collect();
        Some(WinogradWeights {
            unit,
            alpha,
            in_c,
            out_c,
            packed,
            matrices: transformed,
        })
    }

    /// Output tile size.
    pub fn unit(&self) -> usize {
        self.unit
    }

    /// Tiles of `batch` images of `geom`'s output.
    pub fn tiles(&self, geom: &ConvGeometry, batch: usize) -> usize {
        batch * geom.out_h.div_ceil(self.unit) * geom.out_w.div_ceil(self.unit)
    }

    /// Batches of [`WINOGRAD_TILE_BATCH`] tiles (the unit of work to split between threads).
    pub fn tile_batches(&self, geom: &ConvGeometry, batch: usize) -> usize {
        self.tiles(geom, batch).div_ceil(WINOGRAD_TILE_BATCH)
    }
}

/// Whether MNN's remainder GEMM (`_AVX_MNNPackednMatMulRemainCommon`: blocks of 20, 16, then
/// 5s, then one kernel for 4, 3 or 2 rows) leaves one row for its single-row kernel.
fn lone_last_row(rows: usize) -> bool {
    let mut e = rows;
    if e >= 20 {
        e -= 20;
    }
    if e >= 16 {
        e -= 16;
    }
    e %= 5;
    e == 1
}

/// One output of MNN's single-row GEMM kernel: four FMA chains over the reduction indices
/// congruent to 0, 1, 2, 3 mod 4, summed as `(c0 + c2) + (c1 + c3)`, then the last `k % 4`
/// indices chained on. `weights` is `[k][n]`.
fn four_chain_dot(a: &[f32], weights: &[f32], col: usize, n: usize) -> f32 {
    let k = a.len();
    let whole = k / 4 * 4;
    let mut chains = [0.0f32; 4];
    for base in (0..whole).step_by(4) {
        for (j, chain) in chains.iter_mut().enumerate() {
            *chain = a[base + j].mul_add(weights[(base + j) * n + col], *chain);
        }
    }
    let mut sum = (chains[0] + chains[2]) + (chains[1] + chains[3]);
    for i in whole..k {
        sum = a[i].mul_add(weights[i * n + col], sum);
    }
    sum
}

/// `c = a w` for `a` rows of `k` values and `w` `[k][n]`: per output one FMA chain from zero over
/// the reduction index in order (the AVX2 / AVX-512 GEMM's arithmetic, for the portable build).
fn fma_chain_rows(a: &[f32], w: &[f32], k: usize, n: usize, c: &mut [f32]) {
    for (row, out) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)) {
        out.fill(0.0);
        for (i, &x) in row.iter().enumerate() {
            for (o, &wv) in out.iter_mut().zip(&w[i * n..(i + 1) * n]) {
                *o = x.mul_add(wv, *o);
            }
        }
    }
}

thread_local! {
    static WINO_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs tile batches `batches` of a 3x3 stride-1 convolution on `batch` NHWC images.
///
/// # Safety
/// `input` must hold `batch` images of `geom`'s input and `output` must point to `batch` images
/// of its output; calls running at the same time must be given disjoint `batches` (they write
/// disjoint output pixels).
#[allow(clippy::too_many_arguments)]
pub unsafe fn winograd_conv3x3_nhwc(
    geom: &ConvGeometry,
    batch: usize,
    input: &[f32],
    w: &WinogradWeights,
    bias: &[f32],
    act: Activation,
    output: *mut f32,
    batches: Range<usize>,
) {
    let (alpha, unit) = (w.alpha, w.unit);
    let (in_c, out_c) = (w.in_c, w.out_c);
    assert!(geom.in_c == in_c && geom.out_c == out_c && bias.len() >= out_c);
    assert!(input.len() >= batch * geom.in_h * geom.in_w * in_c);
    let elements = alpha * alpha;
    let v_len = elements * WINOGRAD_TILE_BATCH * in_c;
    let m_len = elements * WINOGRAD_TILE_BATCH * out_c;
    let tiles_total = w.tiles(geom, batch);
    let (w_units, h_units) = (geom.out_w.div_ceil(unit), geom.out_h.div_ceil(unit));
    let (lo, hi) = act.bounds();
    let portable = crate::dispatch::active_isa() == crate::dispatch::Isa::Portable;
    let run = |scratch: &mut [f32]| {
        let (v, m) = scratch.split_at_mut(v_len);
        for tb in batches.clone() {
            let t0 = tb * WINOGRAD_TILE_BATCH;
            let t1 = (t0 + WINOGRAD_TILE_BATCH).min(tiles_total);
            if t0 >= t1 {
                continue;
            }
            let count = t1 - t0;
            let full = count == WINOGRAD_TILE_BATCH;
            let tile_origin = |t: usize| {
                let b = t / (w_units * h_units);
                let r = t % (w_units * h_units);
                (b, (r / w_units) * unit, (r % w_units) * unit)
            };
            // Input transform: V[element][tile][ic].
            let mut d = [V8::default(); 64];
            let mut t = [V8::default(); 64];
            let mut line = [V8::default(); 8];
            let mut out = [V8::default(); 8];
            for (row, tile) in (t0..t1).enumerate() {
                let (b, oy, ox) = tile_origin(tile);
                let image = &input[b * geom.in_h * geom.in_w * in_c..];
                for c0 in (0..in_c).step_by(8) {
                    let lanes = (in_c - c0).min(8);
                    for y in 0..alpha {
                        let iy = (oy + y) as isize - geom.pad_top as isize;
                        for x in 0..alpha {
                            let ix = (ox + x) as isize - geom.pad_left as isize;
                            let mut val = V8::default();
                            if iy >= 0
                                && ix >= 0
                                && (iy as usize) < geom.in_h
                                && (ix as usize) < geom.in_w
                            {
                                let p = ((iy as usize * geom.in_w + ix as usize) * in_c) + c0;
                                val.0[..lanes].copy_from_slice(&image[p..p + lanes]);
                            }
                            d[y * alpha + x] = val;
                        }
                    }
                    // Along x: t[k][y].
                    for y in 0..alpha {
                        source_unroll(alpha, &d[y * alpha..(y + 1) * alpha], &mut out);
                        for k in 0..alpha {
                            t[k * alpha + y] = out[k];
                        }
                    }
                    // Along y: V[l][k].
                    for k in 0..alpha {
                        line[..alpha].copy_from_slice(&t[k * alpha..(k + 1) * alpha]);
                        if full {
                            source_packed(alpha, &line[..alpha], &mut out);
                        } else {
                            source_unroll(alpha, &line[..alpha], &mut out);
                        }
                        for l in 0..alpha {
                            let dst = &mut v
                                [((l * alpha + k) * WINOGRAD_TILE_BATCH + row) * in_c + c0..]
                                [..lanes];
                            dst.copy_from_slice(&out[l].0[..lanes]);
                        }
                    }
                }
            }
            // Products per element.
            for (e, packed) in w.packed.iter().enumerate() {
                let a = &v[e * WINOGRAD_TILE_BATCH * in_c..][..count * in_c];
                let c = &mut m[e * WINOGRAD_TILE_BATCH * out_c..][..count * out_c];
                if portable {
                    // The portable GEMM rounds products separately; MNN chains FMAs.
                    let weights = &w.matrices[e * in_c * out_c..][..in_c * out_c];
                    fma_chain_rows(a, weights, in_c, out_c, c);
                } else {
                    gemm(count, a, in_c, packed, &[], Activation::None, c, out_c);
                }
            }
            if !full && lone_last_row(count) {
                // MNN's remainder GEMM leaves a single last row to a kernel that splits the
                // reduction into four interleaved chains; redo that row the same way.
                for e in 0..elements {
                    let a = &v[(e * WINOGRAD_TILE_BATCH + count - 1) * in_c..][..in_c];
                    let c = &mut m[(e * WINOGRAD_TILE_BATCH + count - 1) * out_c..][..out_c];
                    let weights = &w.matrices[e * in_c * out_c..][..in_c * out_c];
                    for (oc, out) in c.iter_mut().enumerate() {
                        *out = four_chain_dot(a, weights, oc, out_c);
                    }
                }
            }
            // Output transform, bias, clamp.
            let mut r1 = [V8::default(); 64];
            for (row, tile) in (t0..t1).enumerate() {
                let (b, oy, ox) = tile_origin(tile);
                let rows = (geom.out_h - oy).min(unit);
                let cols = (geom.out_w - ox).min(unit);
                let image = output.add(b * geom.out_h * geom.out_w * out_c);
                for c0 in (0..out_c).step_by(8) {
                    let lanes = (out_c - c0).min(8);
                    // Along y for each x-frequency k: r1[k][r].
                    for k in 0..alpha {
                        for l in 0..alpha {
                            let src = &m
                                [((l * alpha + k) * WINOGRAD_TILE_BATCH + row) * out_c + c0..]
                                [..lanes];
                            line[l] = V8::default();
                            line[l].0[..lanes].copy_from_slice(src);
                        }
                        dest(alpha, &line[..alpha], &mut out);
                        for r in 0..unit {
                            r1[k * alpha + r] = out[r];
                        }
                    }
                    // Along x for each output row.
                    for r in 0..rows {
                        for k in 0..alpha {
                            line[k] = r1[k * alpha + r];
                        }
                        dest(alpha, &line[..alpha], &mut out);
                        for (cx, value) in out.iter().enumerate().take(cols) {
                            let p = ((oy + r) * geom.out_w + ox + cx) * out_c + c0;
                            let dst = std::slice::from_raw_parts_mut(image.add(p), lanes);
                            for (i, o) in dst.iter_mut().enumerate() {
                                *o = (value.0[i] + bias[c0 + i]).min(hi).max(lo);
                            }
                        }
                    }
                }
            }
        }
    };
    WINO_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            if scratch.len() < v_len + m_len {
                scratch.resize(v_len + m_len, 0.0);
            }
            run(&mut scratch[..v_len + m_len]);
        }
        Err(_) => run(&mut vec![0.0; v_len + m_len]),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(geom: &ConvGeometry, batch: usize, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0f64; batch * geom.out_h * geom.out_w * geom.out_c];
        for b in 0..batch {
            for oy in 0..geom.out_h {
                for ox in 0..geom.out_w {
                    for oc in 0..geom.out_c {
                        let mut s = bias[oc] as f64;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (oy + ky) as isize - geom.pad_top as isize;
                                let ix = (ox + kx) as isize - geom.pad_left as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy as usize >= geom.in_h
                                    || ix as usize >= geom.in_w
                                {
                                    continue;
                                }
                                for ic in 0..geom.in_c {
                                    let xv = x[((b * geom.in_h + iy as usize) * geom.in_w
                                        + ix as usize)
                                        * geom.in_c
                                        + ic] as f64;
                                    s += xv * w[((oc * geom.in_c + ic) * 3 + ky) * 3 + kx] as f64;
                                }
                            }
                        }
                        y[((b * geom.out_h + oy) * geom.out_w + ox) * geom.out_c + oc] = s;
                    }
                }
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    #[test]
    fn matches_a_direct_convolution_for_every_tile_size() {
        for &(unit, h, w_, ic, oc, batch) in &[
            (2usize, 7usize, 9usize, 5usize, 3usize, 1usize),
            (4, 13, 11, 9, 10, 2),
            (6, 20, 17, 12, 17, 1),
        ] {
            let geom = ConvGeometry {
                in_h: h,
                in_w: w_,
                in_c: ic,
                out_h: h,
                out_w: w_,
                out_c: oc,
                kernel_h: 3,
                kernel_w: 3,
                stride_h: 1,
                stride_w: 1,
                dilation_h: 1,
                dilation_w: 1,
                pad_top: 1,
                pad_left: 1,
            };
            let mut seed = 7u32;
            let mut rnd = || {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            };
            let x: Vec<f32> = (0..batch * h * w_ * ic).map(|_| rnd()).collect();
            let wt: Vec<f32> = (0..oc * ic * 9).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..oc).map(|_| rnd()).collect();
            let packed = WinogradWeights::pack(&wt, oc, ic, unit).unwrap();
            let mut y = vec![0.0f32; batch * h * w_ * oc];
            let batches = packed.tile_batches(&geom, batch);
            // Two halves, as two threads would run them.
            unsafe {
                winograd_conv3x3_nhwc(
                    &geom,
                    batch,
                    &x,
                    &packed,
                    &bias,
                    Activation::None,
                    y.as_mut_ptr(),
                    0..batches / 2,
                );
                winograd_conv3x3_nhwc(
                    &geom,
                    batch,
                    &x,
                    &packed,
                    &bias,
                    Activation::None,
                    y.as_mut_ptr(),
                    batches / 2..batches,
                );
            }
            let want = direct(&geom, batch, &x, &wt, &bias);
            let err = y
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                err < 1e-4 * (unit * unit) as f32,
                "unit {unit}: max error {err}"
            );
        }
    }

    #[test]
    fn tile_choice_follows_mnn_cost_rule() {
        // PP-OCR det's 3x3 convolutions (96 -> 24 channels): F(4,3) at 20x20, F(6,3) above.
        assert_eq!(mnn_winograd_unit(20, 20, 96, 24), Some(4));
        assert_eq!(mnn_winograd_unit(40, 40, 96, 24), Some(6));
        assert_eq!(mnn_winograd_unit(160, 160, 96, 24), Some(6));
        // Too few channels to pay off.
        assert_eq!(mnn_winograd_unit(2, 2, 1, 1), None);
    }

    #[test]
    fn kernel_transform_matrix_has_mnn_points() {
        // alpha 4 (points 0, 1, -1): rows [1,0,0] (denominator -1 made positive),
        // [1,1,1]/2, [1,-1,1]/2, [0,0,1].
        let g = mnn_g(4);
        assert_eq!(
            g,
            vec![1.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0.0, 0.0, 1.0]
        );
    }
}
