//! Depthwise int8 convolution on NHWC codes with MNN's integer-bias epilogue (§11.5):
//! `q = clamp(round((acc + B[c]) * m[c]), lo, hi)`.
//!
//! Vectorised over channels, four output pixels at a time where possible:
//! * AVX-512 VNNI (`rows_vnni`): `vpdpbusd` of 64 input codes as `x + 128` (u8) with weight
//!   vectors that hold one channel's weight per byte position, so each dword lane sums exactly
//!   one product; no sign extension and no cross-lane shuffle. Padding taps count as code 0.
//!   A last block of at most 32 channels uses the 32-channel kernel below.
//! * AVX-512: 32 sign-extended i16 codes per tap times "even"/"odd" weight vectors (`vpmaddwd`,
//!   or `vpdpwssd` for the VNNI tail), padding taps skipped.
//! * AVX2: 8 codes per vector, weights stored as i32 with zero upper halves (`vpmaddwd`).
//!
//! All paths are exact integer accumulations followed by the same f32 epilogue, so they give the
//! portable reference's bytes.

use std::ops::Range;

use super::requant::DepthwiseRequantize;
use crate::dispatch::Isa;
use crate::geometry::ConvGeometry;

/// Depthwise weights packed once at load.
#[derive(Clone, Debug)]
pub struct PackedDepthwiseInt8 {
    pub isa: Isa,
    pub channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    /// `[tap][c]` codes (tap = ky * kernel_w + kx), for the portable kernel and channel tails.
    pub taps: Vec<i8>,
    /// `[tap][c]` as i32 with zero upper halves, channels padded to 16.
    wide: Vec<i32>,
    padded_channels: usize,
    /// AVX-512 layout: per tap, per block of 32 channels, two vectors of 16 i32 lanes: "even"
    /// holds channel `2j` of the block in the low 16 bits of lane j, "odd" channel `2j + 1` in
    /// the high 16 bits. `vpmaddwd` of 32 i16 input channels with them yields the even and odd
    /// channels' products separately (exact, no sign-extension shuffle per tap).
    even_odd: Vec<i32>,
    /// VNNI layout: per tap, per block of 64 channels, four 64-byte vectors; vector `p` holds
    /// the weight of channel `4j + p` of the block in byte `p` of dword `j`, zeros elsewhere.
    vnni: Vec<i8>,
    /// Per channel, the sum of its tap weights (the VNNI kernel's `+128` correction).
    weight_sums: Vec<i32>,
}

impl PackedDepthwiseInt8 {
    /// Pack for the process's active instruction set.
    pub fn pack(q_w: &[i8], channels: usize, kh: usize, kw: usize) -> Self {
        Self::pack_for(crate::dispatch::active_isa(), q_w, channels, kh, kw)
    }

    /// Pack `q_w`, laid out `[c][kh][kw]` as in MNN, for the kernels of `isa`.
    pub fn pack_for(isa: Isa, q_w: &[i8], channels: usize, kh: usize, kw: usize) -> Self {
        assert!(
            isa.is_supported(),
            "PackedDepthwiseInt8: {isa} is not supported by this CPU"
        );
        assert_eq!(
            q_w.len(),
            channels * kh * kw,
            "PackedDepthwiseInt8: weight length does not match [{channels}][{kh}][{kw}]"
        );
        let taps_n = kh * kw;
        let padded = channels.div_ceil(16) * 16;
        let mut taps = vec![0i8; taps_n * channels];
        let mut wide = vec![0i32; taps_n * padded];
        for c in 0..channels {
            for t in 0..taps_n {
                let w = q_w[c * taps_n + t];
                taps[t * channels + c] = w;
                wide[t * padded + c] = (w as i16 as u16) as i32;
            }
        }
        let blocks = channels.div_ceil(32);
        let mut even_odd = vec![0i32; taps_n * blocks * 32];
        for t in 0..taps_n {
            for c in 0..channels {
                let (b, within) = (c / 32, c % 32);
                let lane = within / 2;
                let bits = (q_w[c * taps_n + t] as i16 as u16) as i32;
                let base = (t * blocks + b) * 32;
                if within % 2 == 0 {
                    even_odd[base + lane] = bits;
                } else {
                    even_odd[base + 16 + lane] = bits << 16;
                }
            }
        }
        let blocks64 = channels.div_ceil(64);
        let mut vnni = vec![0i8; taps_n * blocks64 * 256];
        for t in 0..taps_n {
            for c in 0..channels {
                let (b, within) = (c / 64, c % 64);
                let (j, p) = (within / 4, within % 4);
                vnni[(t * blocks64 + b) * 256 + p * 64 + 4 * j + p] = q_w[c * taps_n + t];
            }
        }
        if channels == 16 || channels == 32 {
            // The packed-pixel kernel ([`rows_vnni_packed`]) puts 64 / channels pixels in one
            // vector: lanes beyond the channels repeat their weights (no other kernel reads
            // them: these channel counts take the 32-channel path otherwise).
            for t in 0..taps_n {
                for lane in channels..64 {
                    let (j, p) = (lane / 4, lane % 4);
                    vnni[t * 256 + p * 64 + 4 * j + p] = q_w[(lane % channels) * taps_n + t];
                }
            }
        }
        let weight_sums = (0..channels)
            .map(|c| {
                q_w[c * taps_n..(c + 1) * taps_n]
                    .iter()
                    .map(|&w| w as i32)
                    .sum()
            })
            .collect();
        PackedDepthwiseInt8 {
            vnni,
            weight_sums,
            even_odd,
            isa,
            channels,
            kernel_h: kh,
            kernel_w: kw,
            taps,
            wide,
            padded_channels: padded,
        }
    }
}

/// Valid kernel index range for an output coordinate: the taps that do not fall in padding.
#[inline]
pub(crate) fn valid_taps(
    o: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    kernel: usize,
    extent: usize,
) -> Range<usize> {
    let origin = (o * stride) as isize - pad as isize;
    let mut first = 0;
    while first < kernel && origin + ((first * dilation) as isize) < 0 {
        first += 1;
    }
    let mut last = kernel;
    while last > first && origin + ((last - 1) * dilation) as isize >= extent as isize {
        last -= 1;
    }
    first..last
}

/// Run a depthwise int8 convolution for output rows `rows`. `geom.in_c == geom.out_c ==
/// channels`; `output[(oy * out_w + ox) * ldc + c]`.
pub fn depthwise_int8_nhwc(
    geom: &ConvGeometry,
    input: &[i8],
    weights: &PackedDepthwiseInt8,
    requant: &DepthwiseRequantize,
    output: &mut [i8],
    ldc: usize,
    rows: Range<usize>,
) {
    let c = weights.channels;
    assert!(
        geom.in_c == c
            && geom.out_c == c
            && geom.kernel_h == weights.kernel_h
            && geom.kernel_w == weights.kernel_w,
        "depthwise_int8_nhwc: geometry {geom:?} does not match {c} channels of {}x{} weights",
        weights.kernel_h,
        weights.kernel_w
    );
    assert_eq!(
        requant.channels(),
        c,
        "depthwise_int8_nhwc: requantize has the wrong channel count"
    );
    assert!(
        input.len() >= geom.in_h * geom.in_w * c,
        "depthwise_int8_nhwc: input too short"
    );
    assert!(ldc >= c, "depthwise_int8_nhwc: ldc {ldc} < channels {c}");
    assert!(
        rows.end <= geom.out_h,
        "depthwise_int8_nhwc: rows {rows:?} beyond {}",
        geom.out_h
    );
    if rows.is_empty() {
        return;
    }
    assert!(
        output.len() >= ((rows.end - 1) * geom.out_w + geom.out_w - 1) * ldc + c,
        "depthwise_int8_nhwc: output too short"
    );
    if geom.out_w <= PADDED_COPY_MAX_WIDTH
        && geom.kernel_w >= PADDED_COPY_MIN_KERNEL
        && has_padding(geom)
    {
        padded_band(geom, input, weights, requant, output, ldc, rows);
        return;
    }
    let columns: Vec<Range<usize>> = (0..geom.out_w)
        .map(|ox| {
            valid_taps(
                ox,
                geom.stride_w,
                geom.dilation_w,
                geom.pad_left,
                geom.kernel_w,
                geom.in_w,
            )
        })
        .collect();
    let job = Job {
        geom,
        input,
        weights,
        requant,
        ldc,
        columns: &columns,
    };
    match weights.isa {
        // SAFETY: packing checked the CPU supports the ISA; every index stays within the slices
        // whose lengths were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { rows_vnni(&job, output, rows) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { rows_avx512(&job, output, rows) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { rows_avx2(&job, output, rows) },
        _ => {
            let mut acc = vec![0i32; c];
            for_each_pixel!(job, rows, pixel, {
                if requant.pad != 0 && !pixel.is_interior(geom) {
                    pixel_padded(geom, input, weights, requant, output, &pixel, 0..c);
                } else {
                    pixel_portable(geom, input, weights, requant, output, &pixel, &mut acc, 0)
                }
            });
        }
    }
}

/// Widest output for which a depthwise convolution of [`PADDED_COPY_MIN_KERNEL`] or more columns
/// with padding first copies its input rows into a padded band. Narrow images have a large share
/// of border pixels, whose windows reach into the padding and take the per-tap checked path; with
/// 5x5 kernels the copy costs less than that (EfficientNet-Lite0's 5x5 layers at 28x28, 14x14
/// and 7x7 took 5-15 % less time on the VNNI kernel), with 3x3 kernels it did not pay. Wide
/// images are mostly interior, where the copy would cost more than it saves.
const PADDED_COPY_MAX_WIDTH: usize = 28;

/// Narrowest kernel for which [`PADDED_COPY_MAX_WIDTH`] applies.
const PADDED_COPY_MIN_KERNEL: usize = 5;

thread_local! {
    /// Per-thread padded input band of [`padded_band`].
    static PADDED_BAND: std::cell::RefCell<Vec<i8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether some output pixel's window reaches outside the image.
fn has_padding(g: &ConvGeometry) -> bool {
    let reach_h = (g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1;
    let reach_w = (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1;
    g.pad_top > 0 || g.pad_left > 0 || reach_h > g.in_h + g.pad_top || reach_w > g.in_w + g.pad_left
}

/// [`depthwise_int8_nhwc`] for output rows `rows` by way of a copy of the input rows they read,
/// surrounded by the padding code (`requant.pad`, the input zero point): every window of the
/// band lies inside it, so every pixel takes the unchecked path. The integer sums are the same
/// (the kernels treat padding taps as that code or skip them when it is 0), so are the bytes.
fn padded_band(
    geom: &ConvGeometry,
    input: &[i8],
    weights: &PackedDepthwiseInt8,
    requant: &DepthwiseRequantize,
    output: &mut [i8],
    ldc: usize,
    rows: Range<usize>,
) {
    let c = geom.in_c;
    let band_h = (rows.len() - 1) * geom.stride_h + (geom.kernel_h - 1) * geom.dilation_h + 1;
    let band_w = (geom.out_w - 1) * geom.stride_w + (geom.kernel_w - 1) * geom.dilation_w + 1;
    // Input row and column of the band's first row and column (negative inside the padding).
    let top = (rows.start * geom.stride_h) as isize - geom.pad_top as isize;
    let left = -(geom.pad_left as isize);
    let band_geom = ConvGeometry {
        in_h: band_h,
        in_w: band_w,
        out_h: rows.len(),
        pad_top: 0,
        pad_left: 0,
        ..*geom
    };
    PADDED_BAND.with_borrow_mut(|band| {
        band.clear();
        band.resize(band_h * band_w * c, requant.pad);
        // Columns of the band inside the image, and where they start in the image.
        let x_first = (-left).max(0) as usize;
        let x_end = ((geom.in_w as isize - left).max(0) as usize).min(band_w);
        for by in 0..band_h {
            let iy = top + by as isize;
            if iy < 0 || iy >= geom.in_h as isize || x_first >= x_end {
                continue;
            }
            let ix_first = (left + x_first as isize) as usize;
            let src = (iy as usize * geom.in_w + ix_first) * c;
            let len = (x_end - x_first) * c;
            band[(by * band_w + x_first) * c..][..len].copy_from_slice(&input[src..src + len]);
        }
        let out = &mut output[rows.start * geom.out_w * ldc..];
        depthwise_int8_nhwc(&band_geom, band, weights, requant, out, ldc, 0..rows.len());
    });
}

/// Everything a row loop needs apart from the output.
#[derive(Clone, Copy)]
struct Job<'a> {
    geom: &'a ConvGeometry,
    input: &'a [i8],
    weights: &'a PackedDepthwiseInt8,
    requant: &'a DepthwiseRequantize,
    ldc: usize,
    /// Valid kx range per output column.
    columns: &'a [Range<usize>],
}

/// Loop over the output pixels of `rows`, binding each [`Pixel`] (a macro rather than a closure
/// so SIMD bodies inline into the `target_feature` function that expands it).
macro_rules! for_each_pixel {
    ($job:expr, $rows:expr, $pixel:ident, $body:block) => {
        let g = $job.geom;
        for oy in $rows {
            let ky = valid_taps(oy, g.stride_h, g.dilation_h, g.pad_top, g.kernel_h, g.in_h);
            for ox in 0..g.out_w {
                let $pixel = Pixel {
                    iy0: (oy * g.stride_h) as isize - g.pad_top as isize,
                    ix0: (ox * g.stride_w) as isize - g.pad_left as isize,
                    ky: ky.clone(),
                    kx: $job.columns[ox].clone(),
                    out: (oy * g.out_w + ox) * $job.ldc,
                };
                $body
            }
        }
    };
}
use for_each_pixel;

/// VNNI row loop: `vpdpbusd` of the input as `x + 128` (u8, one XOR per 64 channels) with the
/// weights as s8, four accumulators per 64 channels, accumulator `p` holding channels `4j + p`
/// (the packed weight vector `p` has tap weight `w[4j + p]` in byte `p` of dword `j`, zero in
/// the other three bytes, so each dword sums exactly one product). This needs no sign
/// extension and no cross-lane shuffle: the requantized codes of the four accumulators are put
/// back in channel order by byte shifts and selects. The `+128` adds `128 * w` per tap, cancelled
/// by the bias `B - 128 * sum_taps w`; padding taps therefore use `x = 0` (u8 128) like real
/// zeros instead of being skipped, so that correction is the same for every pixel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_vnni(job: &Job, output: &mut [i8], rows: Range<usize>) {
    let g = job.geom;
    let c = job.weights.channels;
    // 16 or 32 channels with unit stride: several adjacent pixels fill one 64-byte vector.
    if (c == 16 || c == 32)
        && g.stride_w == 1
        && g.dilation_w == 1
        && job.ldc == c
        && g.out_w >= 4 * (64 / c)
    {
        if c == 16 {
            rows_vnni_packed::<4>(job, output, rows);
        } else {
            rows_vnni_packed::<2>(job, output, rows);
        }
        return;
    }
    let blocks = c.div_ceil(64);
    // A last block of at most 32 channels would waste half of every instruction: those
    // channels go through the 32-channel kernel (same bytes).
    let vnni_blocks = if !c.is_multiple_of(64) && c % 64 <= 32 {
        rows_avx512_body::<true>(job, output, rows.clone(), c / 64 * 2);
        c / 64
    } else {
        blocks
    };
    VNNI_REQUANT.with_borrow_mut(|(bias, mult)| {
        // Bias and multiplier in accumulator order: index (block * 4 + p) * 16 + j is channel
        // 64 * block + 4 * j + p; padding channels get 0.
        bias.clear();
        mult.clear();
        bias.resize(blocks * 64, 0);
        mult.resize(blocks * 64, 0.0);
        for ch in 0..c {
            let (block, within) = (ch / 64, ch % 64);
            let at = (block * 4 + within % 4) * 16 + within / 4;
            (bias[at], mult[at]) = vnni_requant(job, ch);
        }
        for block in 0..vnni_blocks {
            for oy in rows.clone() {
                let ky = valid_taps(oy, g.stride_h, g.dilation_h, g.pad_top, g.kernel_h, g.in_h);
                let full_rows = ky.len() == g.kernel_h;
                let mut ox = 0;
                while ox < g.out_w {
                    if g.out_w >= 4 {
                        // Four pixels at a time (one pixel alone is latency bound: four
                        // accumulator chains). The last group is moved left to end at the row
                        // end; it recomputes up to three pixels with the same bytes.
                        let start = ox.min(g.out_w - 4);
                        let interior = full_rows
                            && job.columns[start].len() == g.kernel_w
                            && job.columns[start + 3].len() == g.kernel_w;
                        if interior {
                            vnni_pixels::<4, false>(job, output, bias, mult, oy, start, block);
                        } else {
                            vnni_pixels::<4, true>(job, output, bias, mult, oy, start, block);
                        }
                        ox = start + 4;
                    } else {
                        vnni_pixels::<1, true>(job, output, bias, mult, oy, ox, block);
                        ox += 1;
                    }
                }
            }
        }
    });
}

/// The VNNI row loop for 16 or 32 channels and unit stride: one 64-byte vector holds `P = 64 /
/// channels` adjacent pixels (a tap of those pixels reads adjacent input pixels: one load), so
/// every instruction does full work; groups of 4 vectors (`4P` pixels) like [`rows_vnni`]. The
/// packed weights repeat their channels across the vector ([`PackedDepthwiseInt8::pack_for`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_vnni_packed<const P: usize>(job: &Job, output: &mut [i8], rows: Range<usize>) {
    let g = job.geom;
    let c = job.weights.channels;
    let span = 4 * P;
    // Bias and multiplier in accumulator order: index p * 16 + j is lane 4j + p, channel
    // (4j + p) % c.
    let mut bias = [0i32; 64];
    let mut mult = [0f32; 64];
    for p in 0..4 {
        for j in 0..16 {
            let ch = (4 * j + p) % c;
            (bias[p * 16 + j], mult[p * 16 + j]) = vnni_requant(job, ch);
        }
    }
    for oy in rows {
        let ky = valid_taps(oy, g.stride_h, g.dilation_h, g.pad_top, g.kernel_h, g.in_h);
        let full_rows = ky.len() == g.kernel_h;
        let mut ox = 0;
        while ox < g.out_w {
            // The last group is moved left to end at the row end (recomputing some pixels with
            // the same bytes).
            let start = ox.min(g.out_w - span);
            let interior = full_rows
                && job.columns[start].len() == g.kernel_w
                && job.columns[start + span - 1].len() == g.kernel_w;
            if interior {
                packed_pixels::<P, false>(job, output, &bias, &mult, oy, start);
            } else {
                packed_pixels::<P, true>(job, output, &bias, &mult, oy, start);
            }
            ox = start + span;
        }
    }
}

/// `4P` adjacent output pixels from `(oy, ox)` of a 16- or 32-channel depthwise convolution
/// with unit stride, `P` pixels per vector; `CHECK`: some taps may fall in the padding (masked
/// loads fill those pixels' lanes with the padding code).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn packed_pixels<const P: usize, const CHECK: bool>(
    job: &Job,
    output: &mut [i8],
    bias: &[i32; 64],
    mult: &[f32; 64],
    oy: usize,
    ox: usize,
) {
    use std::arch::x86_64::*;
    let g = job.geom;
    let c = job.weights.channels;
    let flip = _mm512_set1_epi8(-128);
    let pad_raw = _mm512_set1_epi8(job.requant.pad);
    // The lanes of one pixel (c is 16 or 32).
    let pixel_mask: u64 = (1u64 << c) - 1;
    let iy0 = (oy * g.stride_h) as isize - g.pad_top as isize;
    let ix0 = ox as isize - g.pad_left as isize;
    let input = job.input.as_ptr();
    let weights = job.weights.vnni.as_ptr();
    let mut acc = [[_mm512_setzero_si512(); 4]; 4];
    for ky in 0..g.kernel_h {
        let iy = iy0 + (ky * g.dilation_h) as isize;
        let row_ok = !CHECK || (iy >= 0 && (iy as usize) < g.in_h);
        for kx in 0..g.kernel_w {
            // One 64-channel block per tap (c <= 32).
            let w = weights.add((ky * g.kernel_w + kx) * 256);
            let wv = tap_weights(w);
            for (j, acc) in acc.iter_mut().enumerate() {
                // Input column of the vector's first pixel.
                let ix = ix0 + (P * j + kx) as isize;
                let raw = if !CHECK {
                    let src = input.add((iy as usize * g.in_w + ix as usize) * c);
                    _mm512_loadu_si512(src as *const _)
                } else if !row_ok {
                    pad_raw
                } else {
                    let mut mask = 0u64;
                    for q in 0..P {
                        let x = ix + q as isize;
                        if x >= 0 && (x as usize) < g.in_w {
                            mask |= pixel_mask << (q * c);
                        }
                    }
                    // Masked-off lanes are not read, so the address may point before the
                    // image for a vector that starts in the padding.
                    let src = input.wrapping_offset((iy * g.in_w as isize + ix) * c as isize);
                    _mm512_mask_loadu_epi8(pad_raw, mask, src)
                };
                let x = _mm512_xor_si512(raw, flip);
                for p in 0..4 {
                    acc[p] = _mm512_dpbusd_epi32(acc[p], x, wv[p]);
                }
            }
        }
    }
    if job.requant.lo >= 0 {
        vnni_store::<4, true>(job, output, bias, mult, &acc, oy, ox, P, 0, u64::MAX);
    } else {
        vnni_store::<4, false>(job, output, bias, mult, &acc, oy, ox, P, 0, u64::MAX);
    }
}

/// Channel `ch`'s integer bias and multiplier for the VNNI kernels: the bias takes away the
/// `128 * sum_taps w` that their `x + 128` inputs add.
#[inline]
fn vnni_requant(job: &Job, ch: usize) -> (i32, f32) {
    (
        job.requant.bias[ch].wrapping_sub(128 * job.weights.weight_sums[ch]),
        job.requant.multiplier[ch],
    )
}

/// One tap's VNNI weights for a 64-channel block: the four vectors at `w`, one per
/// accumulator of the block.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tap_weights(w: *const i8) -> [std::arch::x86_64::__m512i; 4] {
    use std::arch::x86_64::_mm512_loadu_si512;
    [
        _mm512_loadu_si512(w as *const _),
        _mm512_loadu_si512(w.add(64) as *const _),
        _mm512_loadu_si512(w.add(128) as *const _),
        _mm512_loadu_si512(w.add(192) as *const _),
    ]
}

thread_local! {
    /// Per-thread bias and multiplier of the VNNI depthwise kernel in accumulator order.
    static VNNI_REQUANT: std::cell::RefCell<(Vec<i32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// `PX` adjacent output pixels from `(oy, ox)`, channels `64 * block ..`; `CHECK`: some taps may
/// fall in the padding (otherwise every tap of every pixel is inside the image).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn vnni_pixels<const PX: usize, const CHECK: bool>(
    job: &Job,
    output: &mut [i8],
    bias: &[i32],
    mult: &[f32],
    oy: usize,
    ox: usize,
    block: usize,
) {
    use std::arch::x86_64::*;
    let g = job.geom;
    let c = job.weights.channels;
    let blocks = c.div_ceil(64);
    let valid = (c - block * 64).min(64);
    let mask: __mmask64 = if valid == 64 {
        u64::MAX
    } else {
        (1u64 << valid) - 1
    };
    let flip = _mm512_set1_epi8(-128);
    let pad = _mm512_set1_epi8(job.requant.pad ^ -128);
    let iy0 = (oy * g.stride_h) as isize - g.pad_top as isize;
    let ix0 = (ox * g.stride_w) as isize - g.pad_left as isize;
    let input = job.input.as_ptr().add(block * 64);
    let weights = job.weights.vnni.as_ptr().add(block * 256);
    let mut acc = [[_mm512_setzero_si512(); 4]; PX];
    for ky in 0..g.kernel_h {
        let iy = iy0 + (ky * g.dilation_h) as isize;
        let row_ok = !CHECK || (iy >= 0 && (iy as usize) < g.in_h);
        for kx in 0..g.kernel_w {
            let w = weights.add((ky * g.kernel_w + kx) * blocks * 256);
            let wv = tap_weights(w);
            for (j, acc) in acc.iter_mut().enumerate() {
                let ix = ix0 + ((j * g.stride_w) + kx * g.dilation_w) as isize;
                let x = if !CHECK || (row_ok && ix >= 0 && (ix as usize) < g.in_w) {
                    let src = input.add((iy as usize * g.in_w + ix as usize) * g.in_c);
                    let raw = if valid == 64 {
                        _mm512_loadu_si512(src as *const _)
                    } else {
                        _mm512_maskz_loadu_epi8(mask, src)
                    };
                    _mm512_xor_si512(raw, flip)
                } else {
                    // Padding: the input zero point (u8 z + 128).
                    pad
                };
                for p in 0..4 {
                    acc[p] = _mm512_dpbusd_epi32(acc[p], x, wv[p]);
                }
            }
        }
    }
    if job.requant.lo >= 0 {
        vnni_store::<PX, true>(job, output, bias, mult, &acc, oy, ox, 1, block, mask);
    } else {
        vnni_store::<PX, false>(job, output, bias, mult, &acc, oy, ox, 1, block, mask);
    }
}

/// Requantize and store the accumulators of [`vnni_pixels`] (accumulator `j` holds output pixel
/// `ox + j * step`, channels `64 * block ..`): `q = round(min(y, hi))` in float,
/// then saturating packs to bytes, one in-lane byte shuffle back to channel order and the lower
/// clamp on the bytes. That equals the reference `round(clamp(y, lo, hi))`: rounding is monotone
/// and `lo` is an integer, so a `y` below `lo` rounds to a code at most `lo` (a huge negative one
/// converts to `i32::MIN` and saturates to -128) and the byte maximum gives `lo`. With
/// `NON_NEGATIVE` (`lo >= 0`, a fused ReLU) negative values end at `lo` whatever their rounding,
/// so `trunc(y + 0.49999997)` suffices.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn vnni_store<const PX: usize, const NON_NEGATIVE: bool>(
    job: &Job,
    output: &mut [i8],
    bias: &[i32],
    mult: &[f32],
    acc: &[[std::arch::x86_64::__m512i; 4]; PX],
    oy: usize,
    ox: usize,
    step: usize,
    block: usize,
    mask: std::arch::x86_64::__mmask64,
) {
    use super::requant::ALMOST_HALF;
    use std::arch::x86_64::*;
    let g = job.geom;
    let hi = _mm512_set1_ps(job.requant.hi as f32);
    let lo_bytes = _mm512_set1_epi8(job.requant.lo);
    let sign = _mm512_set1_epi32(i32::MIN);
    let almost_half = _mm512_castps_si512(_mm512_set1_ps(ALMOST_HALF));
    let mut bias_v = [_mm512_setzero_si512(); 4];
    let mut mult_v = [_mm512_setzero_ps(); 4];
    for p in 0..4 {
        bias_v[p] = _mm512_loadu_si512(bias.as_ptr().add((block * 4 + p) * 16) as *const _);
        mult_v[p] = _mm512_loadu_ps(mult.as_ptr().add((block * 4 + p) * 16));
    }
    // After the packs, 128-bit lane L holds at byte 4p + i the code of accumulator p, dword
    // 4L + i: channel 16L + 4i + p. Byte k = 4i + p of the lane must take it back.
    let order = _mm512_broadcast_i32x4(_mm_setr_epi8(
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
    ));
    for (j, acc) in acc.iter().enumerate() {
        let mut q = [_mm512_setzero_si512(); 4];
        for p in 0..4 {
            let y = _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_add_epi32(acc[p], bias_v[p])),
                mult_v[p],
            );
            let y = _mm512_min_ps(y, hi);
            let half = if NON_NEGATIVE {
                almost_half
            } else {
                // (y & sign) | 0.49999997 (truth table 0xEA = (A & B) | C).
                _mm512_ternarylogic_epi32::<0xEA>(_mm512_castps_si512(y), sign, almost_half)
            };
            q[p] = _mm512_cvttps_epi32(_mm512_add_ps(y, _mm512_castsi512_ps(half)));
        }
        let bytes = _mm512_packs_epi16(
            _mm512_packs_epi32(q[0], q[1]),
            _mm512_packs_epi32(q[2], q[3]),
        );
        let t = _mm512_max_epi8(_mm512_shuffle_epi8(bytes, order), lo_bytes);
        let dst = output
            .as_mut_ptr()
            .add((oy * g.out_w + ox + j * step) * job.ldc + block * 64);
        if mask == u64::MAX {
            _mm512_storeu_si512(dst as *mut _, t);
        } else {
            _mm512_mask_storeu_epi8(dst, mask, t);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn rows_avx512(job: &Job, output: &mut [i8], rows: Range<usize>) {
    rows_avx512_body::<false>(job, output, rows, 0)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(job: &Job, output: &mut [i8], rows: Range<usize>) {
    for_each_pixel!(job, rows, pixel, {
        if job.requant.pad != 0 && !pixel.is_interior(job.geom) {
            let c = job.weights.channels;
            pixel_padded(
                job.geom,
                job.input,
                job.weights,
                job.requant,
                output,
                &pixel,
                0..c,
            );
            continue;
        }
        pixel_avx2_body(
            job.geom,
            job.input,
            job.weights,
            job.requant,
            output,
            &pixel,
        )
    });
}

/// One output pixel's input origin, valid tap rectangle and output offset.
struct Pixel {
    iy0: isize,
    ix0: isize,
    ky: Range<usize>,
    kx: Range<usize>,
    out: usize,
}

impl Pixel {
    /// Every tap inside the image (no padding tap).
    #[inline(always)]
    fn is_interior(&self, geom: &ConvGeometry) -> bool {
        self.ky.len() == geom.kernel_h && self.kx.len() == geom.kernel_w
    }

    #[inline(always)]
    fn input_offset(&self, geom: &ConvGeometry, ky: usize, kx: usize) -> usize {
        let iy = (self.iy0 + (ky * geom.dilation_h) as isize) as usize;
        let ix = (self.ix0 + (kx * geom.dilation_w) as isize) as usize;
        (iy * geom.in_w + ix) * geom.in_c
    }
}

/// The reference: channels `first_channel..` of one pixel, accumulating in `acc[..]` (at least
/// `channels - first_channel` long).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pixel_portable(
    geom: &ConvGeometry,
    input: &[i8],
    weights: &PackedDepthwiseInt8,
    requant: &DepthwiseRequantize,
    output: &mut [i8],
    pixel: &Pixel,
    acc: &mut [i32],
    first_channel: usize,
) {
    let c = weights.channels;
    let acc = &mut acc[..c - first_channel];
    acc.fill(0);
    for ky in pixel.ky.clone() {
        for kx in pixel.kx.clone() {
            let at = pixel.input_offset(geom, ky, kx) + first_channel;
            let tap = (ky * geom.kernel_w + kx) * c + first_channel;
            let x = &input[at..at + acc.len()];
            let w = &weights.taps[tap..tap + acc.len()];
            for ((a, &x), &w) in acc.iter_mut().zip(x).zip(w) {
                *a += x as i32 * w as i32;
            }
        }
    }
    for (i, &a) in acc.iter().enumerate() {
        output[pixel.out + first_channel + i] = requant.apply(a, first_channel + i);
    }
}

/// Channels `channels` of one pixel whose window reaches into the padding, for an input with a
/// non-zero zero point: every tap is summed, the padding taps with the code `requant.pad` (the
/// value 0), so the integer sum is the one the VNNI kernel forms. Only border pixels come here.
#[inline(never)]
fn pixel_padded(
    geom: &ConvGeometry,
    input: &[i8],
    weights: &PackedDepthwiseInt8,
    requant: &DepthwiseRequantize,
    output: &mut [i8],
    pixel: &Pixel,
    channels: Range<usize>,
) {
    const CHUNK: usize = 64;
    let c = weights.channels;
    let pad = i32::from(requant.pad);
    let mut first = channels.start;
    while first < channels.end {
        let n = CHUNK.min(channels.end - first);
        let mut acc = [0i32; CHUNK];
        let acc = &mut acc[..n];
        for ky in 0..geom.kernel_h {
            for kx in 0..geom.kernel_w {
                let tap = (ky * geom.kernel_w + kx) * c + first;
                let w = &weights.taps[tap..tap + n];
                if pixel.ky.contains(&ky) && pixel.kx.contains(&kx) {
                    let at = pixel.input_offset(geom, ky, kx) + first;
                    let x = &input[at..at + n];
                    for ((a, &x), &w) in acc.iter_mut().zip(x).zip(w) {
                        *a += i32::from(x) * i32::from(w);
                    }
                } else {
                    for (a, &w) in acc.iter_mut().zip(w) {
                        *a += pad * i32::from(w);
                    }
                }
            }
        }
        for (i, &a) in acc.iter().enumerate() {
            output[pixel.out + first + i] = requant.apply(a, first + i);
        }
        first += n;
    }
}

/// Row loop shared by the AVX-512 variants; only called from functions that enable AVX-512
/// (and VNNI when `VNNI`). Channel chunks of 64 are the outer loop so a chunk's input rows stay
/// in L1 while its pixels are computed. Runs of 4 adjacent output pixels with the same valid taps
/// (the interior) go through the 4-pixel body: independent accumulator chains hide the
/// multiply-add latency and each weight vector serves 4 pixels.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn rows_avx512_body<const VNNI: bool>(
    job: &Job,
    output: &mut [i8],
    rows: Range<usize>,
    first_block: usize,
) {
    let g = job.geom;
    let blocks = g.in_c.div_ceil(32);
    for chunk in (first_block..blocks).step_by(2) {
        let chunk = chunk..(chunk + 2).min(blocks);
        for oy in rows.clone() {
            let ky = valid_taps(oy, g.stride_h, g.dilation_h, g.pad_top, g.kernel_h, g.in_h);
            let mut ox = 0;
            while ox < g.out_w {
                let pixel = Pixel {
                    iy0: (oy * g.stride_h) as isize - g.pad_top as isize,
                    ix0: (ox * g.stride_w) as isize - g.pad_left as isize,
                    ky: ky.clone(),
                    kx: job.columns[ox].clone(),
                    out: (oy * g.out_w + ox) * job.ldc,
                };
                // With a non-zero input zero point, a window reaching into the padding sums
                // the padding taps too (code z_in, the value 0).
                let padded = job.requant.pad != 0 && !pixel.is_interior(g);
                let four = ox + 4 <= g.out_w && job.columns[ox + 3] == pixel.kx;
                match (four, padded) {
                    (true, false) => {
                        pixels_avx512::<VNNI, 4, false>(job, output, &pixel, chunk.clone())
                    }
                    (true, true) => {
                        pixels_avx512::<VNNI, 4, true>(job, output, &pixel, chunk.clone())
                    }
                    (false, false) => {
                        pixels_avx512::<VNNI, 1, false>(job, output, &pixel, chunk.clone())
                    }
                    (false, true) => {
                        pixels_avx512::<VNNI, 1, true>(job, output, &pixel, chunk.clone())
                    }
                }
                ox += if four { 4 } else { 1 };
            }
        }
    }
}

/// Mask of the valid channels of 32-channel block `b` (all ones for a full block).
#[inline(always)]
fn block_mask(channels: usize, b: usize) -> u32 {
    let valid = channels - b * 32;
    if valid >= 32 {
        u32::MAX
    } else {
        (1u32 << valid) - 1
    }
}

/// Requantize and store the even/odd accumulators of `PX` pixels (output offsets `out`,
/// `out + ldc`, ...) for blocks `b0..b0 + nb`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_even_odd<const PX: usize, const NB: usize>(
    job: &Job,
    output: &mut [i8],
    out: usize,
    even: &[[std::arch::x86_64::__m512i; NB]; PX],
    odd: &[[std::arch::x86_64::__m512i; NB]; PX],
    b0: usize,
) {
    use super::requant::ALMOST_HALF;
    use std::arch::x86_64::*;
    let requant = job.requant;
    let c = job.weights.channels;
    let lo = _mm512_set1_ps(requant.lo as f32);
    let hi = _mm512_set1_ps(requant.hi as f32);
    let sign = _mm512_set1_epi32(i32::MIN);
    let almost_half = _mm512_castps_si512(_mm512_set1_ps(ALMOST_HALF));
    // Lane j of "even" holds channel 2j of the block, of "odd" channel 2j + 1: interleave them
    // back into channels 0..15 and 16..31 (index 16 + j picks lane j of the second operand).
    let first_half = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let second_half =
        _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for b in 0..NB {
        for half in 0..2 {
            let ch = (b0 + b) * 32 + 16 * half;
            if ch >= c {
                break;
            }
            let valid = (c - ch).min(16);
            let mask: __mmask16 = if valid == 16 {
                0xffff
            } else {
                ((1u32 << valid) - 1) as __mmask16
            };
            let bias = _mm512_maskz_loadu_epi32(mask, requant.bias.as_ptr().add(ch));
            let mult = _mm512_maskz_loadu_ps(mask, requant.multiplier.as_ptr().add(ch));
            let order = if half == 0 { first_half } else { second_half };
            for j in 0..PX {
                let acc = _mm512_permutex2var_epi32(even[j][b], order, odd[j][b]);
                let y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc, bias)), mult);
                let y = _mm512_min_ps(_mm512_max_ps(y, lo), hi);
                // (y & sign) | 0.49999997 (truth table 0xEA = (A & B) | C).
                let half_away =
                    _mm512_ternarylogic_epi32::<0xEA>(_mm512_castps_si512(y), sign, almost_half);
                let q = _mm512_cvttps_epi32(_mm512_add_ps(y, _mm512_castsi512_ps(half_away)));
                let dst = output.as_mut_ptr().add(out + j * job.ldc + ch);
                let bytes = _mm512_cvtsepi32_epi8(q);
                // A masked store is much slower than a plain one on Zen: only partial vectors.
                if valid == 16 {
                    _mm_storeu_si128(dst as *mut __m128i, bytes);
                } else {
                    _mm_mask_storeu_epi8(dst, mask, bytes);
                }
            }
        }
    }
}

/// `PX` adjacent output pixels starting at `pixel`, all with `pixel`'s valid taps, channel blocks
/// `block_range`, in passes of up to `4 / PX` blocks (at most 16 accumulators).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pixels_avx512<const VNNI: bool, const PX: usize, const PADDED: bool>(
    job: &Job,
    output: &mut [i8],
    pixel: &Pixel,
    block_range: Range<usize>,
) {
    let per_pass = if PX == 1 { 4 } else { 2 };
    let mut b0 = block_range.start;
    while b0 < block_range.end {
        let nb = per_pass.min(block_range.end - b0);
        match nb {
            1 => pass_avx512::<VNNI, PX, 1, PADDED>(job, output, pixel, b0),
            2 => pass_avx512::<VNNI, PX, 2, PADDED>(job, output, pixel, b0),
            3 => pass_avx512::<VNNI, 1, 3, PADDED>(job, output, pixel, b0),
            _ => pass_avx512::<VNNI, 1, 4, PADDED>(job, output, pixel, b0),
        }
        b0 += nb;
    }
}

/// One pass of [`pixels_avx512`]: `PX` pixels x `NB` blocks from block `b0`, reading the i8
/// input directly (sign-extended to i16 32 channels at a time). Accumulator arrays have exactly
/// the sizes used, so they stay in registers. `PADDED`: every tap is summed, the ones outside
/// the image with the input zero point `requant.pad` (all `PX` pixels share their valid taps).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pass_avx512<const VNNI: bool, const PX: usize, const NB: usize, const PADDED: bool>(
    job: &Job,
    output: &mut [i8],
    pixel: &Pixel,
    b0: usize,
) {
    use std::arch::x86_64::*;
    let (geom, weights) = (job.geom, job.weights);
    let c = weights.channels;
    let blocks = c.div_ceil(32);
    let pixel_step = geom.stride_w * geom.in_c;
    let eo = weights.even_odd.as_ptr();
    let mut even = [[_mm512_setzero_si512(); NB]; PX];
    let mut odd = [[_mm512_setzero_si512(); NB]; PX];
    let mut masks = [0 as __mmask32; NB];
    for (b, m) in masks.iter_mut().enumerate() {
        *m = block_mask(c, b0 + b);
    }
    let pad = _mm512_set1_epi16(i16::from(job.requant.pad));
    let (ky_taps, kx_taps) = if PADDED {
        (0..geom.kernel_h, 0..geom.kernel_w)
    } else {
        (pixel.ky.clone(), pixel.kx.clone())
    };
    for ky in ky_taps {
        for kx in kx_taps.clone() {
            let inside = !PADDED || (pixel.ky.contains(&ky) && pixel.kx.contains(&kx));
            let w = eo.add(((ky * geom.kernel_w + kx) * blocks + b0) * 32);
            if !inside {
                for b in 0..NB {
                    let we = _mm512_loadu_si512(w.add(32 * b) as *const _);
                    let wo = _mm512_loadu_si512(w.add(32 * b + 16) as *const _);
                    for j in 0..PX {
                        if VNNI {
                            even[j][b] = _mm512_dpwssd_epi32(even[j][b], pad, we);
                            odd[j][b] = _mm512_dpwssd_epi32(odd[j][b], pad, wo);
                        } else {
                            even[j][b] = _mm512_add_epi32(even[j][b], _mm512_madd_epi16(pad, we));
                            odd[j][b] = _mm512_add_epi32(odd[j][b], _mm512_madd_epi16(pad, wo));
                        }
                    }
                }
                continue;
            }
            let at = job
                .input
                .as_ptr()
                .add(pixel.input_offset(geom, ky, kx) + b0 * 32);
            for b in 0..NB {
                let we = _mm512_loadu_si512(w.add(32 * b) as *const _);
                let wo = _mm512_loadu_si512(w.add(32 * b + 16) as *const _);
                for j in 0..PX {
                    // A masked load costs an extra ALU uop on the ports the multiply-adds
                    // need: only the last, partial block uses one.
                    let src = at.add(j * pixel_step + 32 * b);
                    let x = _mm512_cvtepi8_epi16(if masks[b] == u32::MAX {
                        _mm256_loadu_si256(src as *const __m256i)
                    } else {
                        _mm256_maskz_loadu_epi8(masks[b], src)
                    });
                    if VNNI {
                        even[j][b] = _mm512_dpwssd_epi32(even[j][b], x, we);
                        odd[j][b] = _mm512_dpwssd_epi32(odd[j][b], x, wo);
                    } else {
                        even[j][b] = _mm512_add_epi32(even[j][b], _mm512_madd_epi16(x, we));
                        odd[j][b] = _mm512_add_epi32(odd[j][b], _mm512_madd_epi16(x, wo));
                    }
                }
            }
        }
    }
    store_even_odd::<PX, NB>(job, output, pixel.out, &even, &odd, b0);
}

/// Only called from functions that enable AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pixel_avx2_body(
    geom: &ConvGeometry,
    input: &[i8],
    weights: &PackedDepthwiseInt8,
    requant: &DepthwiseRequantize,
    output: &mut [i8],
    pixel: &Pixel,
) {
    use super::requant::ALMOST_HALF;
    use std::arch::x86_64::*;
    let c = weights.channels;
    let pc = weights.padded_channels;
    let lo = _mm256_set1_ps(requant.lo as f32);
    let hi = _mm256_set1_ps(requant.hi as f32);
    let sign = _mm256_set1_ps(-0.0);
    let almost_half = _mm256_set1_ps(ALMOST_HALF);
    let inp = input.as_ptr();
    let wide = weights.wide.as_ptr();
    let full = c / 8 * 8;
    let mut c0 = 0;
    while c0 < full {
        // Up to four vectors (32 channels) per pass; channels beyond the last multiple of 8 go
        // through the portable code, which computes the same bytes.
        let vectors = ((full - c0) / 8).min(4);
        let mut acc = [_mm256_setzero_si256(); 4];
        for ky in pixel.ky.clone() {
            for kx in pixel.kx.clone() {
                let at = inp.add(pixel.input_offset(geom, ky, kx) + c0);
                let w = wide.add((ky * geom.kernel_w + kx) * pc + c0);
                for (v, a) in acc.iter_mut().enumerate().take(vectors) {
                    let x = _mm256_cvtepi8_epi32(_mm_loadl_epi64(at.add(8 * v) as *const __m128i));
                    let wv = _mm256_loadu_si256(w.add(8 * v) as *const __m256i);
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, wv));
                }
            }
        }
        for (v, a) in acc.iter().enumerate().take(vectors) {
            let ch = c0 + 8 * v;
            let bias = _mm256_loadu_si256(requant.bias.as_ptr().add(ch) as *const __m256i);
            let mult = _mm256_loadu_ps(requant.multiplier.as_ptr().add(ch));
            let y = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(*a, bias)), mult);
            let y = _mm256_min_ps(_mm256_max_ps(y, lo), hi);
            let half = _mm256_or_ps(_mm256_and_ps(y, sign), almost_half);
            let q = _mm256_cvttps_epi32(_mm256_add_ps(y, half));
            let words =
                _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            let bytes = _mm_packs_epi16(words, words);
            _mm_storel_epi64(
                output.as_mut_ptr().add(pixel.out + ch) as *mut __m128i,
                bytes,
            );
        }
        c0 += 8 * vectors;
    }
    if full < c {
        let mut acc = [0i32; 8];
        pixel_portable(geom, input, weights, requant, output, pixel, &mut acc, full);
    }
}
