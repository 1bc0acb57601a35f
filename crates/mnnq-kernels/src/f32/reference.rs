//! Naive fp32 reference implementations: obviously correct loops, no blocking, no SIMD.
//! Tests compare every kernel and ISA against these.

use crate::geometry::{Activation, ConvGeometry};

/// `C = act(A B + bias)` with `A` `m x k` row-major, `B` `k x n` row-major, `C` `m x n`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b_kn: &[f32],
    bias: &[f32],
    act: Activation,
    c: &mut [f32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0.0f32;
            for p in 0..k {
                sum += a[i * k + p] * b_kn[p * n + j];
            }
            c[i * n + j] = act.apply(sum + bias.get(j).copied().unwrap_or(0.0));
        }
    }
}

/// Signed input coordinate of output `o` at tap `t`.
fn position(o: usize, t: usize, stride: usize, dilation: usize, pad: usize) -> isize {
    (o * stride + t * dilation) as isize - pad as isize
}

/// Dense convolution, weights `[out_c][in_c][kh][kw]`, whole NHWC image. Sums over
/// `(ky, kx, ic)`, then adds the bias.
pub fn conv2d_nhwc(
    g: &ConvGeometry,
    input: &[f32],
    weights_oihw: &[f32],
    bias: &[f32],
    act: Activation,
    output: &mut [f32],
) {
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for oc in 0..g.out_c {
                let mut sum = 0.0f32;
                for ky in 0..kh {
                    let iy = position(oy, ky, g.stride_h, g.dilation_h, g.pad_top);
                    for kx in 0..kw {
                        let ix = position(ox, kx, g.stride_w, g.dilation_w, g.pad_left);
                        if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                            continue;
                        }
                        let base = (iy as usize * g.in_w + ix as usize) * g.in_c;
                        for ic in 0..g.in_c {
                            sum += input[base + ic]
                                * weights_oihw[((oc * g.in_c + ic) * kh + ky) * kw + kx];
                        }
                    }
                }
                output[(oy * g.out_w + ox) * g.out_c + oc] =
                    act.apply(sum + bias.get(oc).copied().unwrap_or(0.0));
            }
        }
    }
}

/// Depthwise convolution, weights `[c][1][kh][kw]`.
pub fn depthwise_conv2d_nhwc(
    g: &ConvGeometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    act: Activation,
    output: &mut [f32],
) {
    let (kh, kw, c) = (g.kernel_h, g.kernel_w, g.in_c);
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for ch in 0..c {
                let mut sum = 0.0f32;
                for ky in 0..kh {
                    let iy = position(oy, ky, g.stride_h, g.dilation_h, g.pad_top);
                    for kx in 0..kw {
                        let ix = position(ox, kx, g.stride_w, g.dilation_w, g.pad_left);
                        if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                            continue;
                        }
                        sum += input[(iy as usize * g.in_w + ix as usize) * c + ch]
                            * weights[(ch * kh + ky) * kw + kx];
                    }
                }
                output[(oy * g.out_w + ox) * c + ch] =
                    act.apply(sum + bias.get(ch).copied().unwrap_or(0.0));
            }
        }
    }
}

/// Transposed convolution, weights `[in_c][out_c][kh][kw]`, by scattering every input pixel
/// (the definition) into a zeroed output, then bias and activation.
pub fn deconv2d_nhwc(
    g: &ConvGeometry,
    input: &[f32],
    weights_iohw: &[f32],
    bias: &[f32],
    act: Activation,
    output: &mut [f32],
) {
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let mut acc = vec![0.0f32; g.out_h * g.out_w * g.out_c];
    for iy in 0..g.in_h {
        for ix in 0..g.in_w {
            for ky in 0..kh {
                let oy = (iy * g.stride_h + ky * g.dilation_h) as isize - g.pad_top as isize;
                for kx in 0..kw {
                    let ox = (ix * g.stride_w + kx * g.dilation_w) as isize - g.pad_left as isize;
                    if oy < 0 || ox < 0 || oy >= g.out_h as isize || ox >= g.out_w as isize {
                        continue;
                    }
                    let out = (oy as usize * g.out_w + ox as usize) * g.out_c;
                    for oc in 0..g.out_c {
                        let mut sum = 0.0f32;
                        for ic in 0..g.in_c {
                            sum += input[(iy * g.in_w + ix) * g.in_c + ic]
                                * weights_iohw[((ic * g.out_c + oc) * kh + ky) * kw + kx];
                        }
                        acc[out + oc] += sum;
                    }
                }
            }
        }
    }
    for (i, out) in output[..acc.len()].iter_mut().enumerate() {
        *out = act.apply(acc[i] + bias.get(i % g.out_c).copied().unwrap_or(0.0));
    }
}

/// Max (`average: None`) or average (`Some(count_include_pad)`) pooling; see [`super::pool2d_nhwc_isa`]
/// for the conventions.
pub fn pool2d_nhwc(g: &ConvGeometry, input: &[f32], average: Option<bool>, output: &mut [f32]) {
    let c = g.in_c;
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for ch in 0..c {
                let (mut max, mut sum, mut inside, mut padded) = (f32::NEG_INFINITY, 0.0f32, 0, 0);
                for ky in 0..g.kernel_h {
                    let iy = position(oy, ky, g.stride_h, g.dilation_h, g.pad_top);
                    for kx in 0..g.kernel_w {
                        let ix = position(ox, kx, g.stride_w, g.dilation_w, g.pad_left);
                        let in_padded = iy >= -(g.pad_top as isize)
                            && iy < (g.in_h + g.pad_top) as isize
                            && ix >= -(g.pad_left as isize)
                            && ix < (g.in_w + g.pad_left) as isize;
                        padded += in_padded as usize;
                        if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                            continue;
                        }
                        let v = input[(iy as usize * g.in_w + ix as usize) * c + ch];
                        max = max.max(v);
                        sum += v;
                        inside += 1;
                    }
                }
                let value = match average {
                    None if inside == 0 => 0.0,
                    None => max,
                    Some(include_pad) => {
                        let count = if include_pad { padded } else { inside };
                        if count == 0 {
                            0.0
                        } else {
                            sum * (1.0 / count as f32)
                        }
                    }
                };
                output[(oy * g.out_w + ox) * c + ch] = value;
            }
        }
    }
}
