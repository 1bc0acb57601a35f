//! Float kernels that reproduce MNN 3.6.1's x86 CPU arithmetic to the last bit (the engine's
//! MNN-exact mode). Each sum is evaluated in the order MNN evaluates it, with the same fused
//! multiply-adds and the same place for the bias; the facts come from per-op comparisons with
//! the real MNN (`scripts/mnn_exact_layers.py`) and from MNN's public source:
//!
//! * dense convolution (any kernel except MNN's Winograd cases): MNN multiplies an im2col matrix
//!   by the weights with its packed GEMM. The reduction index runs over kernel taps (ky, kx)
//!   outside and input channels inside; each output is one FMA chain over it. Output pixels are
//!   processed in tiles of [`MNN_GEMM_TILE`] from the image's first pixel: a full tile's chain
//!   starts from the bias (MNN's 24-wide assembly kernel loads the bias into its accumulators),
//!   the last partial tile's chain starts from zero and the bias is added after it (MNN's
//!   remainder kernels and their post-treatment), except that a partial tile whose split into
//!   MNN's remainder kernels (20, 16, 5s, then 4/3/2/1 pixels) ends in a one-pixel kernel sums
//!   that pixel in four interleaved chains (a 1x1 convolution on a 1x1 image, e.g. a
//!   squeeze-excitation block, is such a pixel). Padding taps are zeros in MNN's im2col: `0 * w`
//!   leaves a chain unchanged. For kernels larger than 1x1 MNN pads the input channels of each
//!   tap to its pack of 8, which moves the four chains of the one-pixel case; that case (a
//!   spatial convolution whose last tile splits down to one pixel) is not reproduced.
//! * depthwise convolution: per channel, one FMA chain over the taps in (ky, kx) order, starting
//!   from the bias.
//! * transposed convolution whose kernel equals its stride (no overlap): each output is one FMA
//!   chain over the input channels starting from zero, then the bias is added.
//! * global average pooling: `sum += x * (1 / count)` over the pixels in row-major order, each
//!   product rounded before the addition.
//! * sigmoid: MNN's own polynomial exponential ([`mnn_sigmoid_in_place`]).
//!
//! The portable build computes the same FMA chains with `f32::mul_add` (exact everywhere, slow
//! without hardware FMA); AVX2 and AVX-512 builds of the same code let the compiler vectorize it.

use crate::dispatch::{active_isa, Isa};
use crate::geometry::{Activation, ConvGeometry};
use std::ops::Range;

/// Output pixels per GEMM tile in MNN's x86 float GEMM (`MNN_UNIT_E`, AVX2 and AVX-512 alike for
/// the 24-row kernels used here).
pub const MNN_GEMM_TILE: usize = 24;

/// Output channels computed together by the micro-kernel (weights are padded to a multiple).
const LANES: usize = 16;
/// Output pixels computed together by the micro-kernel.
const PIXELS: usize = 4;

/// Dense convolution weights as a `K x out_c` matrix (padded to `LANES` columns), K ordered
/// (ky, kx, ci) as MNN's im2col orders it.
#[derive(Clone, Debug)]
pub struct MnnDenseWeights {
    k: usize,
    out_c: usize,
    padded_c: usize,
    kernel_h: usize,
    kernel_w: usize,
    in_c: usize,
    w: Vec<f32>,
}

impl MnnDenseWeights {
    /// `weights` in MNN's layout `[out_c][in_c][kh][kw]` (group 1).
    pub fn pack(weights: &[f32], out_c: usize, in_c: usize, kh: usize, kw: usize) -> Self {
        let taps = kh * kw;
        assert_eq!(
            weights.len(),
            out_c * in_c * taps,
            "mnn-exact conv: weights have {} floats, expected {out_c}x{in_c}x{kh}x{kw}",
            weights.len()
        );
        let k = taps * in_c;
        let padded_c = out_c.div_ceil(LANES) * LANES;
        let mut w = vec![0.0f32; k * padded_c];
        for co in 0..out_c {
            for ci in 0..in_c {
                for t in 0..taps {
                    w[(t * in_c + ci) * padded_c + co] = weights[(co * in_c + ci) * taps + t];
                }
            }
        }
        MnnDenseWeights {
            k,
            out_c,
            padded_c,
            kernel_h: kh,
            kernel_w: kw,
            in_c,
            w,
        }
    }
}

/// Whether output pixel `p` of an image of `pixels` pixels lies in a full GEMM tile.
#[inline]
fn in_full_tile(p: usize, pixels: usize) -> bool {
    (p / MNN_GEMM_TILE + 1) * MNN_GEMM_TILE <= pixels
}

/// Whether output pixel `p` is the one pixel MNN's remainder GEMM computes alone. MNN splits a
/// partial tile of `r` pixels into kernels of 20, 16, then 5s, then one of 4, 3, 2 or 1 pixels;
/// the one-pixel kernel alone sums in four interleaved chains (see [`single_pixel_chain`]).
#[inline]
fn is_single_pixel(p: usize, pixels: usize) -> bool {
    let tile_start = pixels / MNN_GEMM_TILE * MNN_GEMM_TILE;
    if p != pixels - 1 || p < tile_start {
        return false;
    }
    let mut r = pixels - tile_start;
    if r >= 20 {
        r -= 20;
    }
    if r >= 16 {
        r -= 16;
    }
    r % 5 == 1
}

/// MNN's one-pixel GEMM: four FMA chains from zero over the reduction indices congruent to 0, 1,
/// 2, 3 modulo 4 (whole groups of four only), combined as `(c0 + c2) + (c1 + c3)`, then the
/// remaining indices continue that sum with FMAs. The bias is added by the caller.
fn single_pixel_chain(row: &[f32], w: &[f32], stride: usize, co: usize) -> f32 {
    let groups = row.len() / 4;
    let mut c = [0.0f32; 4];
    for g in 0..groups {
        for (r, cr) in c.iter_mut().enumerate() {
            let kk = 4 * g + r;
            *cr = row[kk].mul_add(w[kk * stride + co], *cr);
        }
    }
    let mut sum = (c[0] + c[2]) + (c[1] + c[3]);
    for kk in 4 * groups..row.len() {
        sum = row[kk].mul_add(w[kk * stride + co], sum);
    }
    sum
}

/// Dense convolution of one NHWC image for output pixels `pixels` (row-major pixel indices),
/// written to `out` (`pixels.len() * out_c` floats, the pixels' NHWC rows), with MNN's
/// arithmetic (see the module doc). `bias` has `out_c` floats.
pub fn mnn_conv2d_nhwc(
    g: &ConvGeometry,
    input: &[f32],
    weights: &MnnDenseWeights,
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    pixels: Range<usize>,
) {
    assert!(
        weights.in_c == g.in_c
            && weights.out_c == g.out_c
            && weights.kernel_h == g.kernel_h
            && weights.kernel_w == g.kernel_w,
        "mnn-exact conv: weights packed for another geometry"
    );
    assert!(
        input.len() >= g.in_h * g.in_w * g.in_c,
        "mnn-exact conv: input too short"
    );
    assert!(bias.len() >= g.out_c, "mnn-exact conv: bias too short");
    assert!(
        pixels.end <= g.pixels() && out.len() >= pixels.len() * g.out_c,
        "mnn-exact conv: output range out of bounds"
    );
    // SAFETY: the CPU supports the ISA (`active_isa`); bounds are checked above and inside.
    unsafe {
        match active_isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Vnni => conv_avx512(g, input, weights, bias, act, out, pixels),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => conv_avx2(g, input, weights, bias, act, out, pixels),
            _ => conv_body(g, input, weights, bias, act, out, pixels, tile_portable),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_avx2(
    g: &ConvGeometry,
    input: &[f32],
    weights: &MnnDenseWeights,
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    pixels: Range<usize>,
) {
    conv_body(
        g,
        input,
        weights,
        bias,
        act,
        out,
        pixels,
        |r, k, w, s, a| tile_avx2(r, k, w, s, a),
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn conv_avx512(
    g: &ConvGeometry,
    input: &[f32],
    weights: &MnnDenseWeights,
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    pixels: Range<usize>,
) {
    conv_body(
        g,
        input,
        weights,
        bias,
        act,
        out,
        pixels,
        |r, k, w, s, a| tile_avx2(r, k, w, s, a),
    )
}

/// Gathers the im2col row of output pixel `p` (K values, zeros for padding taps).
#[inline(always)]
fn im2col_row(g: &ConvGeometry, input: &[f32], p: usize, row: &mut [f32]) {
    let (oy, ox) = (p / g.out_w, p % g.out_w);
    for ky in 0..g.kernel_h {
        let iy = (oy * g.stride_h + ky * g.dilation_h) as isize - g.pad_top as isize;
        for kx in 0..g.kernel_w {
            let ix = (ox * g.stride_w + kx * g.dilation_w) as isize - g.pad_left as isize;
            let dst = &mut row[(ky * g.kernel_w + kx) * g.in_c..][..g.in_c];
            if iy < 0 || ix < 0 || iy as usize >= g.in_h || ix as usize >= g.in_w {
                dst.fill(0.0);
            } else {
                let src = (iy as usize * g.in_w + ix as usize) * g.in_c;
                dst.copy_from_slice(&input[src..src + g.in_c]);
            }
        }
    }
}

/// Accumulator tile of the micro-kernel: [`PIXELS`] pixels x [`LANES`] output channels.
type Tile = [[f32; LANES]; PIXELS];

/// The micro-kernel, portable: `acc[i][l] = fma(rows[i * k + kk], w[kk * stride + l], acc[i][l])`
/// for kk in order.
#[inline(always)]
fn tile_portable(rows: &[f32], k: usize, w: &[f32], stride: usize, acc: &mut Tile) {
    for kk in 0..k {
        let wr = &w[kk * stride..][..LANES];
        for (i, a) in acc.iter_mut().enumerate() {
            let xv = rows[i * k + kk];
            for (al, &wl) in a.iter_mut().zip(wr) {
                *al = xv.mul_add(wl, *al);
            }
        }
    }
}

/// [`tile_portable`] with AVX2 FMAs, the accumulators in eight registers (the same fused
/// operations, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(rows: &[f32], k: usize, w: &[f32], stride: usize, acc: &mut Tile) {
    use std::arch::x86_64::*;
    assert!(rows.len() >= PIXELS * k && (k == 0 || w.len() >= (k - 1) * stride + LANES));
    let a = acc.as_mut_ptr() as *mut f32;
    let mut r: [__m256; 2 * PIXELS] = std::array::from_fn(|j| _mm256_loadu_ps(a.add(8 * j)));
    let (x, wp) = (rows.as_ptr(), w.as_ptr());
    for kk in 0..k {
        let w0 = _mm256_loadu_ps(wp.add(kk * stride));
        let w1 = _mm256_loadu_ps(wp.add(kk * stride + 8));
        for i in 0..PIXELS {
            let xv = _mm256_broadcast_ss(&*x.add(i * k + kk));
            r[2 * i] = _mm256_fmadd_ps(xv, w0, r[2 * i]);
            r[2 * i + 1] = _mm256_fmadd_ps(xv, w1, r[2 * i + 1]);
        }
    }
    for (j, v) in r.iter().enumerate() {
        _mm256_storeu_ps(a.add(8 * j), *v);
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn conv_body(
    g: &ConvGeometry,
    input: &[f32],
    weights: &MnnDenseWeights,
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    pixels: Range<usize>,
    tile: impl Fn(&[f32], usize, &[f32], usize, &mut Tile),
) {
    let (k, out_c, pc) = (weights.k, g.out_c, weights.padded_c);
    let total = g.pixels();
    let (lo, hi) = act.bounds();
    let mut padded_bias = vec![0.0f32; pc];
    padded_bias[..out_c].copy_from_slice(&bias[..out_c]);
    let mut gathered = vec![0.0f32; PIXELS * k];
    let w = &weights.w;
    // A 1x1 stride-1 unpadded convolution's im2col rows are the input pixels themselves.
    let pointwise = g.kernel_h == 1
        && g.kernel_w == 1
        && g.stride_h == 1
        && g.stride_w == 1
        && g.pad_top == 0
        && g.pad_left == 0
        && g.out_h == g.in_h
        && g.out_w == g.in_w;
    let mut p0 = pixels.start;
    while p0 < pixels.end {
        let n = PIXELS.min(pixels.end - p0);
        let rows: &[f32] = if pointwise && n == PIXELS {
            &input[p0 * k..(p0 + PIXELS) * k]
        } else {
            for (i, row) in gathered.chunks_exact_mut(k).take(n).enumerate() {
                im2col_row(g, input, p0 + i, row);
            }
            &gathered
        };
        let full: [bool; PIXELS] = std::array::from_fn(|i| i < n && in_full_tile(p0 + i, total));
        let single: [bool; PIXELS] =
            std::array::from_fn(|i| i < n && is_single_pixel(p0 + i, total));
        for c0 in (0..pc).step_by(LANES) {
            let mut acc = [[0.0f32; LANES]; PIXELS];
            for (i, a) in acc.iter_mut().enumerate() {
                if full[i] {
                    a.copy_from_slice(&padded_bias[c0..c0 + LANES]);
                }
            }
            tile(rows, k, &w[c0..], pc, &mut acc);
            let width = LANES.min(out_c.saturating_sub(c0));
            for (i, a) in acc.iter().enumerate().take(n) {
                let dst = &mut out[(p0 + i - pixels.start) * out_c + c0..][..width];
                if full[i] {
                    for (d, &v) in dst.iter_mut().zip(a) {
                        *d = v.max(lo).min(hi);
                    }
                    continue;
                }
                for (l, d) in dst.iter_mut().enumerate() {
                    let v = if single[i] {
                        let row = &rows[i * k..(i + 1) * k];
                        single_pixel_chain(row, w, pc, c0 + l) + padded_bias[c0 + l]
                    } else {
                        a[l] + padded_bias[c0 + l]
                    };
                    *d = v.max(lo).min(hi);
                }
            }
        }
        p0 += n;
    }
}

/// Depthwise convolution of one NHWC image for output rows `rows`, written to `out` (those rows,
/// NHWC), with MNN's arithmetic: per channel one FMA chain over the taps in (ky, kx) order from
/// the bias. `weights` in MNN's layout `[C][kh][kw]`, `bias` `C` floats.
pub fn mnn_depthwise_nhwc(
    g: &ConvGeometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    rows: Range<usize>,
) {
    let c = g.in_c;
    assert!(
        g.out_c == c && weights.len() == c * g.kernel_h * g.kernel_w && bias.len() >= c,
        "mnn-exact depthwise: weights or bias do not match the geometry"
    );
    assert!(
        input.len() >= g.in_h * g.in_w * c,
        "mnn-exact depthwise: input too short"
    );
    assert!(
        rows.end <= g.out_h && out.len() >= rows.len() * g.out_w * c,
        "mnn-exact depthwise: output range out of bounds"
    );
    // Taps outermost so a tap's weights are one channel vector: [kh][kw][C].
    let taps = g.kernel_h * g.kernel_w;
    let mut tap_major = vec![0.0f32; taps * c];
    for ch in 0..c {
        for t in 0..taps {
            tap_major[t * c + ch] = weights[ch * taps + t];
        }
    }
    // SAFETY: the CPU supports the ISA (`active_isa`); bounds are checked above.
    unsafe {
        match active_isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Vnni => {
                depthwise_avx512(g, input, &tap_major, bias, act, out, rows)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => depthwise_avx2(g, input, &tap_major, bias, act, out, rows),
            _ => depthwise_body(g, input, &tap_major, bias, act, out, rows),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_avx2(
    g: &ConvGeometry,
    input: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    rows: Range<usize>,
) {
    depthwise_body(g, input, w, bias, act, out, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn depthwise_avx512(
    g: &ConvGeometry,
    input: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    rows: Range<usize>,
) {
    depthwise_body(g, input, w, bias, act, out, rows)
}

#[inline(always)]
fn depthwise_body(
    g: &ConvGeometry,
    input: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    rows: Range<usize>,
) {
    let c = g.in_c;
    let (lo, hi) = act.bounds();
    let row_len = g.out_w * c;
    // Per output row, taps outside and pixels inside: every pixel's chain still runs over the
    // taps in (ky, kx) order, and neighbouring pixels' chains are independent work.
    for oy in rows.clone() {
        let dst = &mut out[(oy - rows.start) * row_len..][..row_len];
        for px in dst.chunks_exact_mut(c) {
            px.copy_from_slice(&bias[..c]);
        }
        for ky in 0..g.kernel_h {
            let iy = (oy * g.stride_h + ky * g.dilation_h) as isize - g.pad_top as isize;
            if iy < 0 || iy as usize >= g.in_h {
                continue;
            }
            let line = &input[iy as usize * g.in_w * c..][..g.in_w * c];
            for kx in 0..g.kernel_w {
                let wt = &w[(ky * g.kernel_w + kx) * c..][..c];
                for (ox, acc) in dst.chunks_exact_mut(c).enumerate() {
                    let ix = (ox * g.stride_w + kx * g.dilation_w) as isize - g.pad_left as isize;
                    if ix < 0 || ix as usize >= g.in_w {
                        continue;
                    }
                    let src = &line[ix as usize * c..][..c];
                    for ((a, &x), &wv) in acc.iter_mut().zip(src).zip(wt) {
                        *a = x.mul_add(wv, *a);
                    }
                }
            }
        }
        for d in dst.iter_mut() {
            *d = d.max(lo).min(hi);
        }
    }
}

/// Whether [`mnn_deconv2d_nhwc`] reproduces MNN for this transposed convolution: kernel equal to
/// stride, no padding, no dilation (every output pixel has exactly one contributing input pixel,
/// so MNN's col2im adds nothing up).
pub fn mnn_deconv_supported(g: &ConvGeometry) -> bool {
    super::col2im::tiles_exactly(g) && g.out_h == g.in_h * g.stride_h
}

/// Transposed convolution (group 1, see [`mnn_deconv_supported`]) of one NHWC image for output
/// rows `rows`, written to `out` (those rows, NHWC): each output is an FMA chain over the input
/// channels from zero, then the bias is added, then the activation. `weights` in MNN's layout
/// `[in_c][out_c][kh][kw]`.
pub fn mnn_deconv2d_nhwc(
    g: &ConvGeometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    rows: Range<usize>,
) {
    assert!(
        mnn_deconv_supported(g),
        "mnn-exact deconv: overlapping windows are not supported"
    );
    let (ic, oc, taps) = (g.in_c, g.out_c, g.kernel_h * g.kernel_w);
    assert!(
        weights.len() == ic * oc * taps && bias.len() >= oc,
        "mnn-exact deconv: weights or bias do not match the geometry"
    );
    assert!(
        input.len() >= g.in_h * g.in_w * ic,
        "mnn-exact deconv: input too short"
    );
    assert!(
        rows.end <= g.out_h && out.len() >= rows.len() * g.out_w * oc,
        "mnn-exact deconv: output range out of bounds"
    );
    // [tap][ci][co]: for one output pixel the tap is fixed and the chain runs over ci.
    let mut w = vec![0.0f32; taps * ic * oc];
    for ci in 0..ic {
        for co in 0..oc {
            for t in 0..taps {
                w[(t * ic + ci) * oc + co] = weights[(ci * oc + co) * taps + t];
            }
        }
    }
    // SAFETY: the CPU supports the ISA (`active_isa`); bounds are checked above.
    unsafe {
        match active_isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Vnni => deconv_avx512(g, input, &w, bias, act, out, rows),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => deconv_avx2(g, input, &w, bias, act, out, rows),
            _ => deconv_body(g, input, &w, bias, act, out, rows),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn deconv_avx2(
    g: &ConvGeometry,
    input: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    rows: Range<usize>,
) {
    deconv_body(g, input, w, bias, act, out, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn deconv_avx512(
    g: &ConvGeometry,
    input: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    rows: Range<usize>,
) {
    deconv_body(g, input, w, bias, act, out, rows)
}

#[inline(always)]
fn deconv_body(
    g: &ConvGeometry,
    input: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Activation,
    out: &mut [f32],
    rows: Range<usize>,
) {
    let (ic, oc) = (g.in_c, g.out_c);
    let (lo, hi) = act.bounds();
    let row_len = g.out_w * oc;
    if oc >= 8 {
        // Per output row, input channels outside and pixels inside: each output's chain runs
        // over the input channels in order; the pixels' chains are independent work.
        for oy in rows.clone() {
            let (iy, ky) = (oy / g.stride_h, oy % g.stride_h);
            let line = &input[iy * g.in_w * ic..][..g.in_w * ic];
            let dst = &mut out[(oy - rows.start) * row_len..][..row_len];
            dst.fill(0.0);
            for ci in 0..ic {
                for (ox, acc) in dst.chunks_exact_mut(oc).enumerate() {
                    let (ix, kx) = (ox / g.stride_w, ox % g.stride_w);
                    let x = line[ix * ic + ci];
                    let wt = &w[((ky * g.kernel_w + kx) * ic + ci) * oc..][..oc];
                    for (a, &wv) in acc.iter_mut().zip(wt) {
                        *a = x.mul_add(wv, *a);
                    }
                }
            }
            for px in dst.chunks_exact_mut(oc) {
                for (d, &b) in px.iter_mut().zip(bias) {
                    *d = (*d + b).max(lo).min(hi);
                }
            }
        }
        return;
    }
    // Few output channels (a one-channel map): per output row and kernel column, eight input
    // pixels' chains side by side.
    const BLOCK: usize = 8;
    for oy in rows.clone() {
        let (iy, ky) = (oy / g.stride_h, oy % g.stride_h);
        let line = &input[iy * g.in_w * ic..][..g.in_w * ic];
        let dst = &mut out[(oy - rows.start) * row_len..][..row_len];
        for kx in 0..g.stride_w {
            let wt = &w[(ky * g.kernel_w + kx) * ic * oc..][..ic * oc];
            for ix0 in (0..g.in_w).step_by(BLOCK) {
                let n = BLOCK.min(g.in_w - ix0);
                let xs = &line[ix0 * ic..(ix0 + n) * ic];
                for co in 0..oc {
                    let mut acc = [0.0f32; BLOCK];
                    for ci in 0..ic {
                        let wv = wt[ci * oc + co];
                        for (j, a) in acc.iter_mut().enumerate().take(n) {
                            *a = xs[j * ic + ci].mul_add(wv, *a);
                        }
                    }
                    for (j, &a) in acc.iter().enumerate().take(n) {
                        let ox = (ix0 + j) * g.stride_w + kx;
                        dst[ox * oc + co] = (a + bias[co]).max(lo).min(hi);
                    }
                }
            }
        }
    }
}

/// Global average pooling of one NHWC image (`pixels x channels`) as MNN computes it:
/// `sum += x * (1 / pixels)` per pixel in order, each product rounded.
pub fn mnn_global_avg_pool_nhwc(pixels: usize, channels: usize, input: &[f32], output: &mut [f32]) {
    assert!(
        input.len() >= pixels * channels && output.len() >= channels,
        "mnn-exact global pool: buffers too short"
    );
    let inv = 1.0f32 / pixels as f32;
    let out = &mut output[..channels];
    out.fill(0.0);
    for px in input[..pixels * channels].chunks_exact(channels) {
        for (o, &x) in out.iter_mut().zip(px) {
            *o += x * inv;
        }
    }
}

/// MNN's sigmoid, `1 / (1 + e)` with `e` its polynomial `exp(-x)` (MNN's `MNNExp` on x86 with
/// FMA): `v = clamp(-x, -87, 87)`, `n = round(v / ln 2)` (to nearest even), `r = v - n ln 2` as one
/// FMA, `t = r / 4`, a degree-5 Taylor polynomial of `exp(t)` by FMAs (Horner, coefficients 1/120,
/// 1/24, 1/6, 1/2, 1, 1) raised to the 4th power by two squarings, times `2^n`.
#[inline(always)]
fn sigmoid_one(x: f32) -> f32 {
    let ln2 = std::f32::consts::LN_2;
    let inv_ln2 = 1.0f32 / ln2;
    let v = (-x + 0.0).clamp(-87.0, 87.0);
    let n = (v * inv_ln2).round_ties_even();
    let basic = f32::from_bits(((n as i32 + 127) << 23) as u32);
    let t = (-n).mul_add(ln2, v) * 0.25;
    let mut c = (1.0f32 / 120.0).mul_add(t, 1.0 / 24.0);
    c = c.mul_add(t, 1.0 / 6.0);
    c = c.mul_add(t, 0.5);
    c = c.mul_add(t, 1.0);
    c = c.mul_add(t, 1.0);
    let c2 = c * c;
    let e = basic * (c2 * c2);
    1.0 / (1.0 + e)
}

/// MNN's sigmoid (see `sigmoid_one`) on every value, in place.
pub fn mnn_sigmoid_in_place(values: &mut [f32]) {
    // SAFETY: the CPU supports the ISA (`active_isa`).
    unsafe {
        match active_isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Vnni => sigmoid_avx512(values),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => sigmoid_avx2(values),
            _ => values.iter_mut().for_each(|v| *v = sigmoid_one(*v)),
        }
    }
}

/// MNN's sigmoid of one value (one dispatch per call; prefer [`mnn_sigmoid_in_place`]).
pub fn mnn_sigmoid(x: f32) -> f32 {
    let mut v = [x];
    mnn_sigmoid_in_place(&mut v);
    v[0]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sigmoid_avx2(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = sigmoid_one(*v))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn sigmoid_avx512(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = sigmoid_one(*v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(
        in_hw: usize,
        in_c: usize,
        out_c: usize,
        k: usize,
        s: usize,
        p: usize,
    ) -> ConvGeometry {
        let out = (in_hw + 2 * p - k) / s + 1;
        ConvGeometry {
            in_h: in_hw,
            in_w: in_hw,
            in_c,
            out_h: out,
            out_w: out,
            out_c,
            kernel_h: k,
            kernel_w: k,
            stride_h: s,
            stride_w: s,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: p,
            pad_left: p,
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The convolution rule written as plain scalar code: per pixel, a chain over (ky, kx, ci)
    /// from the bias in full tiles of 24, from zero plus the bias afterwards in the last tile.
    #[test]
    fn conv_follows_the_tile_rule() {
        // 6x6 output = 36 pixels: one full tile, then 12 pixels (MNN's kernels of 5, 5 and 2).
        let g = geometry(11, 5, 19, 3, 2, 1);
        let x = values(11 * 11 * 5, 1);
        let w = values(19 * 5 * 9, 2);
        let b = values(19, 3);
        let mut want = vec![0.0f32; 36 * 19];
        for p in 0..36 {
            let (oy, ox) = (p / 6, p % 6);
            for co in 0..19 {
                let full = p < 24;
                let mut acc = if full { b[co] } else { 0.0 };
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = (oy as isize * 2 + ky - 1, ox as isize * 2 + kx - 1);
                        if !(0..11).contains(&iy) || !(0..11).contains(&ix) {
                            continue;
                        }
                        for ci in 0..5 {
                            let xv = x[((iy * 11 + ix) as usize) * 5 + ci];
                            let wv = w[((co * 5 + ci) * 3 + ky as usize) * 3 + kx as usize];
                            acc = xv.mul_add(wv, acc);
                        }
                    }
                }
                want[p * 19 + co] = if full { acc } else { acc + b[co] };
            }
        }
        let packed = MnnDenseWeights::pack(&w, 19, 5, 3, 3);
        let mut got = vec![0.0f32; 36 * 19];
        // Two pieces, split off a tile boundary: the rule depends on the pixel, not the piece.
        let (a, rest) = got.split_at_mut(10 * 19);
        mnn_conv2d_nhwc(&g, &x, &packed, &b, Activation::None, a, 0..10);
        mnn_conv2d_nhwc(&g, &x, &packed, &b, Activation::None, rest, 10..36);
        assert!(got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn remainder_tiles_split_like_mnn() {
        // 1 pixel: the one-pixel kernel. 6 = 5 + 1 and 21 = 20 + 1 too; 2, 5, 16, 40 = 24 + 16
        // do not end with it.
        for (pixels, single) in [(1, true), (6, true), (21, true), (2, false), (5, false)] {
            assert_eq!(is_single_pixel(pixels - 1, pixels), single, "{pixels}");
        }
        assert!(!is_single_pixel(15, 16) && !is_single_pixel(39, 40) && is_single_pixel(48, 49));
        // A 1x1 convolution on one pixel: (c0 + c2) + (c1 + c3) over 10 channels (two groups of
        // four, then two more), plus the bias.
        let g = geometry(1, 10, 3, 1, 1, 0);
        let x = values(10, 11);
        let w = values(3 * 10, 12);
        let b = values(3, 13);
        let mut got = [0.0f32; 3];
        let packed = MnnDenseWeights::pack(&w, 3, 10, 1, 1);
        mnn_conv2d_nhwc(&g, &x, &packed, &b, Activation::None, &mut got, 0..1);
        for co in 0..3 {
            let mut c = [0.0f32; 4];
            for kk in 0..8 {
                c[kk % 4] = x[kk].mul_add(w[co * 10 + kk], c[kk % 4]);
            }
            let mut s = (c[0] + c[2]) + (c[1] + c[3]);
            for kk in 8..10 {
                s = x[kk].mul_add(w[co * 10 + kk], s);
            }
            assert_eq!(got[co].to_bits(), (s + b[co]).to_bits());
        }
    }

    #[test]
    fn depthwise_deconv_and_pool_match_their_scalar_rules() {
        let g = geometry(6, 3, 3, 3, 1, 1);
        let x = values(6 * 6 * 3, 4);
        let w = values(3 * 9, 5);
        let b = values(3, 6);
        let mut got = vec![0.0f32; 36 * 3];
        mnn_depthwise_nhwc(&g, &x, &w, &b, Activation::Relu, &mut got, 0..6);
        for p in 0..36 {
            let (oy, ox) = (p / 6, p % 6);
            for c in 0..3 {
                let mut acc = b[c];
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = (oy as isize + ky - 1, ox as isize + kx - 1);
                        if (0..6).contains(&iy) && (0..6).contains(&ix) {
                            let xv = x[((iy * 6 + ix) as usize) * 3 + c];
                            acc = xv.mul_add(w[c * 9 + (ky * 3 + kx) as usize], acc);
                        }
                    }
                }
                assert_eq!(got[p * 3 + c].to_bits(), acc.max(0.0).to_bits());
            }
        }

        let dg = ConvGeometry {
            out_h: 8,
            out_w: 8,
            out_c: 2,
            kernel_h: 2,
            kernel_w: 2,
            stride_h: 2,
            stride_w: 2,
            pad_top: 0,
            pad_left: 0,
            ..geometry(4, 3, 2, 1, 1, 0)
        };
        assert!(mnn_deconv_supported(&dg));
        let x = values(16 * 3, 7);
        // Both paths: few output channels (2) and many (9).
        for oc in [2, 9] {
            let dg = ConvGeometry { out_c: oc, ..dg };
            let w = values(3 * oc * 4, 8);
            let b = values(oc, 9);
            let mut got = vec![0.0f32; 64 * oc];
            mnn_deconv2d_nhwc(&dg, &x, &w, &b, Activation::None, &mut got, 0..8);
            for oy in 0..8 {
                for ox in 0..8 {
                    for co in 0..oc {
                        let mut acc = 0.0f32;
                        for ci in 0..3 {
                            let wv = w[(ci * oc + co) * 4 + (oy % 2) * 2 + ox % 2];
                            acc = x[((oy / 2) * 4 + ox / 2) * 3 + ci].mul_add(wv, acc);
                        }
                        let want = (acc + b[co]).to_bits();
                        assert_eq!(got[(oy * 8 + ox) * oc + co].to_bits(), want);
                    }
                }
            }
        }

        // Sigmoid: close to the exact function inside MNN's clamp of +-87 (its exp is accurate
        // to a few ulps), constant beyond it, the same on the scalar and slice paths.
        assert_eq!(mnn_sigmoid(-100.0), mnn_sigmoid(-87.0));
        assert_eq!(mnn_sigmoid(100.0), 1.0);
        let xs: Vec<f32> = (-1700..1700).map(|i| i as f32 * 0.05).collect();
        let mut ys = xs.clone();
        mnn_sigmoid_in_place(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!(
                ((y as f64) - exact).abs() <= 1e-6 * exact,
                "sigmoid({x}) = {y}"
            );
            assert_eq!(y.to_bits(), mnn_sigmoid(x).to_bits());
        }

        let x = values(10 * 4, 10);
        let mut got = [0.0f32; 4];
        mnn_global_avg_pool_nhwc(10, 4, &x, &mut got);
        for c in 0..4 {
            let s = (0..10).fold(0.0f32, |s, p| s + x[p * 4 + c] * (1.0 / 10.0));
            assert_eq!(got[c].to_bits(), s.to_bits());
        }
    }
}
