//! Window ops on channels-last 4-D tensors: convolution family, pooling, resize.

use super::{Parallel, SharedMut};
use crate::backend::{self, DepthwiseGeometry, PackedMatrix, NR};
use crate::ir::{ConvKind, ConvParams, PoolType};
use crate::shape::{conv_window, deconv_window, InterpPlan, PoolWindow, ShapeResult, Window};
use mnnq_kernels::Activation;

/// Output pixels per work item of a dense convolution (a multiple of the 8-row micro-tile).
const PIXEL_CHUNK: usize = 96;
/// Output channels per work item.
const COLUMN_CHUNK: usize = 8 * NR;
/// Output rows per work item of a deconvolution (rounded to the stride).
const DECONV_ROWS: usize = 8;
/// Output rows per work item of depthwise convolution, pooling and resize.
const ROW_CHUNK: usize = 2;

/// How a convolution runs, prepared once at load from its parameters and input shape.
#[derive(Debug)]
enum ConvPlan {
    /// Per group, weights as a `K x cout_g` matrix with K ordered (ky, kx, ci).
    Dense {
        packed: Vec<PackedMatrix>,
        /// 1x1, stride 1, no padding: the input rows are the GEMM's left matrix.
        direct: bool,
    },
    /// Weights as `[kh][kw][C]`.
    Depthwise { weights: Vec<f32> },
    /// Dense group-1 convolution on `mnnq-kernels`' packed GEMM.
    SharedDense(Box<mnnq_kernels::f32::PackedWeights>),
    /// 3x3 stride-1 group-1 convolution as MNN's CPU backend runs it: Winograd with MNN's tile
    /// size, transforms and order of operations (opt-in, see [`mnn_winograd`]).
    Winograd(Box<mnnq_kernels::f32::WinogradWeights>),
    /// Group-1 deconvolution on `mnnq-kernels`.
    SharedDeconv(Box<mnnq_kernels::f32::PackedWeights>),
    /// Depthwise convolution on `mnnq-kernels`.
    SharedDepthwise(Box<mnnq_kernels::f32::PackedDepthwise>),
    /// Per group, weights as a `cin_g x (kh * kw * cout_g)` matrix with columns ordered
    /// (ky, kx, co): the GEMM gives every input pixel's contribution to its output window.
    Deconv { packed: Vec<PackedMatrix> },
    /// MNN-exact mode ([`mnn_exact_mode`]): group-1 convolution with MNN's GEMM arithmetic.
    MnnDense(Box<mnnq_kernels::f32::mnn_exact::MnnDenseWeights>),
    /// MNN-exact mode: depthwise convolution, weights in MNN's `[C][kh][kw]` layout.
    MnnDepthwise { weights: Vec<f32> },
    /// MNN-exact mode: group-1 transposed convolution with kernel = stride, weights in MNN's
    /// `[in][out][kh][kw]` layout.
    MnnDeconv { weights: Vec<f32> },
}

/// Output pixels per work item of a dense convolution. One thread: [`PIXEL_CHUNK`]. More: a
/// number of items that is a multiple of the thread count (at least two per thread), so the late
/// small layers (7x7 = 49 pixels would be a single item) split evenly. The outputs do not depend
/// on the split (each pixel's sums are the same FMA chain).
fn pixel_chunk(pixels: usize, threads: usize) -> usize {
    if threads <= 1 {
        return PIXEL_CHUNK;
    }
    let items = pixels
        .div_ceil(PIXEL_CHUNK)
        .max(2 * threads)
        .next_multiple_of(threads);
    pixels
        .div_ceil(items)
        .next_multiple_of(4)
        .clamp(4, PIXEL_CHUNK)
}

/// Output rows per work item of a depthwise convolution: [`ROW_CHUNK`], or single rows when that
/// leaves fewer than four items per thread.
fn row_chunk(out_h: usize, threads: usize) -> usize {
    if threads > 1 && out_h.div_ceil(ROW_CHUNK) < 4 * threads {
        1
    } else {
        ROW_CHUNK
    }
}

/// A convolution ready to run on `[N, H, W, C]` data.
#[derive(Debug)]
pub struct PreparedConv {
    kind: ConvKind,
    batch: usize,
    in_h: usize,
    in_w: usize,
    in_c: usize,
    out_h: usize,
    out_w: usize,
    out_c: usize,
    kernel_h: usize,
    kernel_w: usize,
    stride_h: usize,
    stride_w: usize,
    dilation_h: usize,
    dilation_w: usize,
    pad_top: usize,
    pad_left: usize,
    group: usize,
    act: Activation,
    bias: Vec<f32>,
    plan: ConvPlan,
}

impl PreparedConv {
    /// Images per run.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Packs the weights for `input_shape` (`[N, C, H, W]` logical).
    pub fn new(p: &ConvParams, input_shape: &[usize]) -> ShapeResult<PreparedConv> {
        let (batch, in_c, in_h, in_w) = (
            input_shape[0],
            input_shape[1],
            input_shape[2],
            input_shape[3],
        );
        let deconv = p.kind.is_deconvolution();
        let Window {
            out_h,
            out_w,
            pad_top,
            pad_left,
        } = if deconv {
            deconv_window(p, in_h, in_w)?
        } else {
            conv_window(p, in_h, in_w)?
        };
        let group = p.group.max(1);
        let out_c = p.out_channels;
        if in_c % group != 0 || !out_c.is_multiple_of(group) {
            return Err(format!(
                "group {group} does not divide channels {in_c} -> {out_c}"
            ));
        }
        let (kh, kw) = (p.kernel_h, p.kernel_w);
        let taps = kh * kw;
        let cin_g = in_c / group;
        let cout_g = out_c / group;
        let expected = crate::shape::conv_weight_count(&ConvParams {
            in_channels: in_c,
            ..p.clone()
        });
        if p.weights.len() != expected {
            return Err(format!(
                "weights have {} values, expected {expected}",
                p.weights.len()
            ));
        }
        let w = &p.weights;
        let depthwise = !deconv && group == in_c && group == out_c && group > 1;
        let shared = use_shared_kernels();
        let exact = mnn_exact_mode();
        let geometry = mnnq_kernels::ConvGeometry {
            in_h,
            in_w,
            in_c,
            out_h,
            out_w,
            out_c,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: p.stride_h.max(1),
            stride_w: p.stride_w.max(1),
            dilation_h: p.dilation_h.max(1),
            dilation_w: p.dilation_w.max(1),
            pad_top,
            pad_left,
        };
        let plan = if exact && depthwise {
            ConvPlan::MnnDepthwise { weights: w.clone() }
        } else if exact
            && deconv
            && group == 1
            && mnnq_kernels::f32::mnn_exact::mnn_deconv_supported(&geometry)
        {
            ConvPlan::MnnDeconv { weights: w.clone() }
        } else if let Some(winograd) = (exact && !deconv && group == 1)
            .then(|| mnn_winograd(p, in_c, out_h, out_w))
            .flatten()
        {
            ConvPlan::Winograd(Box::new(winograd))
        } else if exact && !deconv && group == 1 {
            ConvPlan::MnnDense(Box::new(
                mnnq_kernels::f32::mnn_exact::MnnDenseWeights::pack(w, out_c, in_c, kh, kw),
            ))
        } else if depthwise && shared {
            ConvPlan::SharedDepthwise(Box::new(mnnq_kernels::f32::PackedDepthwise::pack(
                w, in_c, kh, kw,
            )))
        } else if deconv && group == 1 && shared {
            ConvPlan::SharedDeconv(Box::new(mnnq_kernels::f32::PackedWeights::pack_deconv(
                w, in_c, out_c, kh, kw,
            )))
        } else if let Some(winograd) = (!deconv && group == 1 && shared)
            .then(|| mnn_winograd(p, in_c, out_h, out_w))
            .flatten()
        {
            ConvPlan::Winograd(Box::new(winograd))
        } else if !deconv && group == 1 && shared {
            ConvPlan::SharedDense(Box::new(mnnq_kernels::f32::PackedWeights::pack_conv(
                w, out_c, in_c, kh, kw,
            )))
        } else if depthwise {
            // [C][kh][kw] -> [kh][kw][C]
            let mut weights = vec![0.0; taps * in_c];
            for c in 0..in_c {
                for t in 0..taps {
                    weights[t * in_c + c] = w[c * taps + t];
                }
            }
            ConvPlan::Depthwise { weights }
        } else if !deconv {
            let k = taps * cin_g;
            let packed = (0..group)
                .map(|g| {
                    PackedMatrix::pack(k, cout_g, |kk, co| {
                        let t = kk / cin_g;
                        let ci = kk % cin_g;
                        w[((g * cout_g + co) * cin_g + ci) * taps + t]
                    })
                })
                .collect();
            let direct = kh == 1
                && kw == 1
                && p.stride_h == 1
                && p.stride_w == 1
                && pad_top == 0
                && pad_left == 0
                && out_h == in_h
                && out_w == in_w;
            ConvPlan::Dense { packed, direct }
        } else {
            // Deconvolution weights: [in][out/group][kh][kw].
            let n = taps * cout_g;
            let packed = (0..group)
                .map(|g| {
                    PackedMatrix::pack(cin_g, n, |ci, col| {
                        let t = col / cout_g;
                        let co = col % cout_g;
                        w[((g * cin_g + ci) * cout_g + co) * taps + t]
                    })
                })
                .collect();
            ConvPlan::Deconv { packed }
        };
        let mut bias = vec![0.0; out_c.div_ceil(NR) * NR + NR];
        for (i, b) in p.bias.iter().take(out_c).enumerate() {
            bias[i] = *b;
        }
        Ok(PreparedConv {
            kind: p.kind,
            batch,
            in_h,
            in_w,
            in_c,
            out_h,
            out_w,
            out_c,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: p.stride_h.max(1),
            stride_w: p.stride_w.max(1),
            dilation_h: p.dilation_h.max(1),
            dilation_w: p.dilation_w.max(1),
            pad_top,
            pad_left,
            group,
            act: p.activation,
            bias,
            plan,
        })
    }

    /// Multiply-adds per run, for reporting.
    pub fn macs(&self) -> usize {
        let taps = self.kernel_h * self.kernel_w;
        match self.plan {
            ConvPlan::Depthwise { .. }
            | ConvPlan::SharedDepthwise(_)
            | ConvPlan::MnnDepthwise { .. } => {
                self.batch * self.out_h * self.out_w * self.out_c * taps
            }
            ConvPlan::Dense { .. }
            | ConvPlan::SharedDense(_)
            | ConvPlan::Winograd(_)
            | ConvPlan::MnnDense(_) => {
                self.batch * self.out_h * self.out_w * self.out_c * taps * self.in_c / self.group
            }
            ConvPlan::Deconv { .. } | ConvPlan::SharedDeconv(_) | ConvPlan::MnnDeconv { .. } => {
                self.batch * self.in_h * self.in_w * self.in_c * taps * self.out_c / self.group
            }
        }
    }

    /// Runs on NHWC `input` into NHWC `output`.
    pub fn run(&self, input: &[f32], output: &mut [f32], par: &Parallel) {
        let in_image = self.in_h * self.in_w * self.in_c;
        let out_image = self.out_h * self.out_w * self.out_c;
        assert!(input.len() >= self.batch * in_image && output.len() >= self.batch * out_image);
        if let ConvPlan::Winograd(w) = &self.plan {
            self.run_winograd(w, input, output, par);
            return;
        }
        for n in 0..self.batch {
            let x = &input[n * in_image..(n + 1) * in_image];
            let y = &mut output[n * out_image..(n + 1) * out_image];
            match &self.plan {
                ConvPlan::Depthwise { weights } => self.run_depthwise(weights, x, y, par),
                ConvPlan::Dense { packed, direct } => self.run_dense(packed, *direct, x, y, par),
                ConvPlan::Deconv { packed } => self.run_deconv(packed, x, y, par),
                ConvPlan::SharedDense(packed) => self.run_shared_dense(packed, x, y, par),
                ConvPlan::SharedDepthwise(packed) => self.run_shared_depthwise(packed, x, y, par),
                ConvPlan::SharedDeconv(packed) => self.run_shared_deconv(packed, x, y, par),
                ConvPlan::Winograd(_) => unreachable!("runs the whole batch above"),
                ConvPlan::MnnDense(packed) => self.run_mnn_dense(packed, x, y, par),
                ConvPlan::MnnDepthwise { weights } => self.run_mnn_rows(weights, false, x, y, par),
                ConvPlan::MnnDeconv { weights } => self.run_mnn_rows(weights, true, x, y, par),
            }
        }
        let _ = self.kind;
    }

    /// The window of one image (the int8 runtime reuses the float op's output size and padding).
    pub fn geometry(&self) -> mnnq_kernels::ConvGeometry {
        mnnq_kernels::ConvGeometry {
            in_h: self.in_h,
            in_w: self.in_w,
            in_c: self.in_c,
            out_h: self.out_h,
            out_w: self.out_w,
            out_c: self.out_c,
            kernel_h: self.kernel_h,
            kernel_w: self.kernel_w,
            stride_h: self.stride_h,
            stride_w: self.stride_w,
            dilation_h: self.dilation_h,
            dilation_w: self.dilation_w,
            pad_top: self.pad_top,
            pad_left: self.pad_left,
        }
    }

    fn run_shared_dense(
        &self,
        packed: &mnnq_kernels::f32::PackedWeights,
        x: &[f32],
        y: &mut [f32],
        par: &Parallel,
    ) {
        let g = self.geometry();
        let pixels = self.out_h * self.out_w;
        let out = SharedMut(y.as_mut_ptr());
        let bias = &self.bias[..self.out_c];
        let chunk = pixel_chunk(pixels, par.threads());
        par.for_each(pixels.div_ceil(chunk), |i| {
            let p0 = i * chunk;
            let p1 = (p0 + chunk).min(pixels);
            // SAFETY: each piece writes its own output pixels.
            let o = unsafe { out.slice(p0 * self.out_c, (p1 - p0) * self.out_c) };
            mnnq_kernels::f32::conv2d_nhwc(&g, x, packed, bias, self.act, o, p0..p1);
        });
    }

    fn run_mnn_dense(
        &self,
        packed: &mnnq_kernels::f32::mnn_exact::MnnDenseWeights,
        x: &[f32],
        y: &mut [f32],
        par: &Parallel,
    ) {
        let g = self.geometry();
        let pixels = self.out_h * self.out_w;
        let out = SharedMut(y.as_mut_ptr());
        let bias = &self.bias[..self.out_c];
        let chunk = pixel_chunk(pixels, par.threads());
        par.for_each(pixels.div_ceil(chunk), |i| {
            let p0 = i * chunk;
            let p1 = (p0 + chunk).min(pixels);
            // SAFETY: each piece writes its own output pixels.
            let o = unsafe { out.slice(p0 * self.out_c, (p1 - p0) * self.out_c) };
            mnnq_kernels::f32::mnn_exact::mnn_conv2d_nhwc(&g, x, packed, bias, self.act, o, p0..p1);
        });
    }

    /// MNN-exact depthwise (`deconv` false) or transposed (`deconv` true) convolution by rows.
    fn run_mnn_rows(
        &self,
        weights: &[f32],
        deconv: bool,
        x: &[f32],
        y: &mut [f32],
        par: &Parallel,
    ) {
        let g = self.geometry();
        let row_len = self.out_w * self.out_c;
        let out = SharedMut(y.as_mut_ptr());
        let bias = &self.bias[..self.out_c];
        let rows = row_chunk(self.out_h, par.threads());
        par.for_each(self.out_h.div_ceil(rows), |i| {
            let oy0 = i * rows;
            let oy1 = (oy0 + rows).min(self.out_h);
            // SAFETY: each piece writes its own output rows.
            let o = unsafe { out.slice(oy0 * row_len, (oy1 - oy0) * row_len) };
            if deconv {
                mnnq_kernels::f32::mnn_exact::mnn_deconv2d_nhwc(
                    &g,
                    x,
                    weights,
                    bias,
                    self.act,
                    o,
                    oy0..oy1,
                );
            } else {
                mnnq_kernels::f32::mnn_exact::mnn_depthwise_nhwc(
                    &g,
                    x,
                    weights,
                    bias,
                    self.act,
                    o,
                    oy0..oy1,
                );
            }
        });
    }

    fn run_winograd(
        &self,
        w: &mnnq_kernels::f32::WinogradWeights,
        x: &[f32],
        y: &mut [f32],
        par: &Parallel,
    ) {
        let g = self.geometry();
        let batches = w.tile_batches(&g, self.batch);
        let out = SharedMut(y.as_mut_ptr());
        let bias = &self.bias[..self.out_c];
        // Two tile batches per work item: enough items to balance, few enough to amortize.
        const PER_ITEM: usize = 2;
        par.for_each(batches.div_ceil(PER_ITEM), |i| {
            let b0 = i * PER_ITEM;
            let b1 = (b0 + PER_ITEM).min(batches);
            // SAFETY: `y` holds the whole batch's output and work items own disjoint tiles.
            unsafe {
                let out = out.ptr();
                mnnq_kernels::f32::winograd_conv3x3_nhwc(
                    &g,
                    self.batch,
                    x,
                    w,
                    bias,
                    self.act,
                    out,
                    b0..b1,
                )
            };
        });
    }

    fn run_shared_deconv(
        &self,
        packed: &mnnq_kernels::f32::PackedWeights,
        x: &[f32],
        y: &mut [f32],
        par: &Parallel,
    ) {
        let g = self.geometry();
        let row_len = self.out_w * self.out_c;
        let out = SharedMut(y.as_mut_ptr());
        let bias = &self.bias[..self.out_c];
        // Blocks of output rows a multiple of the stride, so each input row is multiplied once.
        let rows = (DECONV_ROWS / self.stride_h).max(1) * self.stride_h;
        par.for_each(self.out_h.div_ceil(rows), |i| {
            let oy0 = i * rows;
            let oy1 = (oy0 + rows).min(self.out_h);
            // SAFETY: each piece writes its own output rows.
            let o = unsafe { out.slice(oy0 * row_len, (oy1 - oy0) * row_len) };
            mnnq_kernels::f32::deconv2d_nhwc(&g, x, packed, bias, self.act, o, oy0..oy1);
        });
    }

    fn run_shared_depthwise(
        &self,
        packed: &mnnq_kernels::f32::PackedDepthwise,
        x: &[f32],
        y: &mut [f32],
        par: &Parallel,
    ) {
        let g = self.geometry();
        let row_len = self.out_w * self.out_c;
        let out = SharedMut(y.as_mut_ptr());
        let bias = &self.bias[..self.out_c];
        let rows = row_chunk(self.out_h, par.threads());
        par.for_each(self.out_h.div_ceil(rows), |i| {
            let oy0 = i * rows;
            let oy1 = (oy0 + rows).min(self.out_h);
            // SAFETY: each piece writes its own output rows.
            let o = unsafe { out.slice(oy0 * row_len, (oy1 - oy0) * row_len) };
            mnnq_kernels::f32::depthwise_conv2d_nhwc(&g, x, packed, bias, self.act, o, oy0..oy1);
        });
    }

    fn run_depthwise(&self, weights: &[f32], x: &[f32], y: &mut [f32], par: &Parallel) {
        let g = DepthwiseGeometry {
            in_h: self.in_h,
            in_w: self.in_w,
            channels: self.in_c,
            out_h: self.out_h,
            out_w: self.out_w,
            kernel_h: self.kernel_h,
            kernel_w: self.kernel_w,
            stride_h: self.stride_h,
            stride_w: self.stride_w,
            dilation_h: self.dilation_h,
            dilation_w: self.dilation_w,
            pad_top: self.pad_top,
            pad_left: self.pad_left,
        };
        let row_len = self.out_w * self.out_c;
        let pieces = self.out_h.div_ceil(ROW_CHUNK);
        let out = SharedMut(y.as_mut_ptr());
        par.for_each(pieces, |i| {
            let oy0 = i * ROW_CHUNK;
            let oy1 = (oy0 + ROW_CHUNK).min(self.out_h);
            // SAFETY: each piece writes its own output rows.
            let o = unsafe { out.slice(oy0 * row_len, (oy1 - oy0) * row_len) };
            backend::depthwise_rows(&g, x, weights, &self.bias, self.act, oy0, oy1, o);
        });
    }

    fn run_dense(
        &self,
        packed: &[PackedMatrix],
        direct: bool,
        x: &[f32],
        y: &mut [f32],
        par: &Parallel,
    ) {
        let pixels = self.out_h * self.out_w;
        let cin_g = self.in_c / self.group;
        let cout_g = self.out_c / self.group;
        let k = packed[0].k;
        let pixel_pieces = pixels.div_ceil(PIXEL_CHUNK);
        let col_pieces = cout_g.div_ceil(COLUMN_CHUNK);
        let per_group = pixel_pieces * col_pieces;
        let out = SharedMut(y.as_mut_ptr());
        let out_len = y.len();
        par.for_each(per_group * self.group, |item| {
            let g = item / per_group;
            let rest = item % per_group;
            let (pp, cp) = (rest / col_pieces, rest % col_pieces);
            let p0 = pp * PIXEL_CHUNK;
            let rows = PIXEL_CHUNK.min(pixels - p0);
            let col0 = cp * COLUMN_CHUNK;
            let col1 = (col0 + COLUMN_CHUNK).min(cout_g);
            let c_start = p0 * self.out_c + g * cout_g;
            // SAFETY: work items write disjoint (pixel range x column range) blocks; the slice
            // covers rows of this piece starting at its first column.
            let c = unsafe { out.slice(c_start, out_len - c_start) };
            let bias = &self.bias[g * cout_g..];
            let taps = if direct {
                1
            } else {
                self.kernel_h * self.kernel_w
            };
            let zeros = vec![0.0f32; cin_g];
            let mut ptrs: Vec<*const f32> = Vec::with_capacity(rows * taps);
            if direct {
                for r in 0..rows {
                    ptrs.push(x[(p0 + r) * self.in_c + g * cin_g..].as_ptr());
                }
            } else {
                self.indirection(x, g * cin_g, &zeros, p0, rows, &mut ptrs);
            }
            // SAFETY: every pointer addresses `cin_g` floats of the input or of `zeros`.
            unsafe {
                backend::gemm_indirect(
                    &ptrs, taps, rows, &packed[g], col0, col1, bias, self.act, c, self.out_c,
                )
            };
        });
        let _ = k;
    }

    /// Pointers to the input pixel (channels `c0..`) each kernel tap of output pixels
    /// `[p0, p0 + rows)` reads, `zeros` where the tap falls in padding. Taps ordered (ky, kx).
    fn indirection(
        &self,
        x: &[f32],
        c0: usize,
        zeros: &[f32],
        p0: usize,
        rows: usize,
        ptrs: &mut Vec<*const f32>,
    ) {
        for r in 0..rows {
            let p = p0 + r;
            let (oy, ox) = (p / self.out_w, p % self.out_w);
            for ky in 0..self.kernel_h {
                let iy =
                    (oy * self.stride_h + ky * self.dilation_h) as isize - self.pad_top as isize;
                for kx in 0..self.kernel_w {
                    let ix = (ox * self.stride_w + kx * self.dilation_w) as isize
                        - self.pad_left as isize;
                    if iy < 0 || ix < 0 || iy >= self.in_h as isize || ix >= self.in_w as isize {
                        ptrs.push(zeros.as_ptr());
                    } else {
                        ptrs.push(
                            x[(iy as usize * self.in_w + ix as usize) * self.in_c + c0..].as_ptr(),
                        );
                    }
                }
            }
        }
    }

    fn run_deconv(&self, packed: &[PackedMatrix], x: &[f32], y: &mut [f32], par: &Parallel) {
        let in_pixels = self.in_h * self.in_w;
        let cin_g = self.in_c / self.group;
        let cout_g = self.out_c / self.group;
        let taps = self.kernel_h * self.kernel_w;
        let n = taps * cout_g;
        let zero_bias = vec![0.0f32; n.div_ceil(NR) * NR];
        for g in 0..self.group {
            // Contributions of every input pixel: [in_pixels, taps * cout_g].
            let mut cols = vec![0.0f32; in_pixels * n];
            let cp = SharedMut(cols.as_mut_ptr());
            let cols_len = cols.len();
            let pieces = in_pixels.div_ceil(PIXEL_CHUNK);
            par.for_each(pieces, |i| {
                let p0 = i * PIXEL_CHUNK;
                let rows = PIXEL_CHUNK.min(in_pixels - p0);
                // SAFETY: disjoint pixel rows.
                let c = unsafe { cp.slice(p0 * n, cols_len - p0 * n) };
                let a = &x[p0 * self.in_c + g * cin_g..];
                backend::gemm_rows(
                    a,
                    self.in_c,
                    rows,
                    &packed[g],
                    0,
                    n,
                    &zero_bias,
                    Activation::None,
                    c,
                    n,
                );
            });
            // Gather into the output: each output pixel sums the taps that reach it, in a fixed order.
            let out = SharedMut(y.as_mut_ptr());
            let row_len = self.out_w * self.out_c;
            let (lo, hi) = self.act.bounds();
            let cols = &cols;
            let simple = self.stride_h == self.kernel_h
                && self.stride_w == self.kernel_w
                && self.dilation_h == 1
                && self.dilation_w == 1
                && self.pad_top == 0
                && self.pad_left == 0
                && self.out_h == self.in_h * self.stride_h
                && self.out_w == self.in_w * self.stride_w;
            par.for_each(self.out_h.div_ceil(ROW_CHUNK), |i| {
                let oy0 = i * ROW_CHUNK;
                let oy1 = (oy0 + ROW_CHUNK).min(self.out_h);
                // SAFETY: disjoint output rows.
                let o = unsafe { out.slice(oy0 * row_len, (oy1 - oy0) * row_len) };
                let mut acc = vec![0.0f32; cout_g];
                let bias = &self.bias[g * cout_g..(g + 1) * cout_g];
                if simple {
                    // Stride equals kernel, no padding: each output pixel gets exactly one tap.
                    for oy in oy0..oy1 {
                        let (iy, ky) = (oy / self.stride_h, oy % self.stride_h);
                        for ox in 0..self.out_w {
                            let (ix, kx) = (ox / self.stride_w, ox % self.stride_w);
                            let src = &cols
                                [(iy * self.in_w + ix) * n + (ky * self.kernel_w + kx) * cout_g..]
                                [..cout_g];
                            let dst = &mut o
                                [((oy - oy0) * self.out_w + ox) * self.out_c + g * cout_g..]
                                [..cout_g];
                            for ((d, &v), &b) in dst.iter_mut().zip(src).zip(bias) {
                                *d = (v + b).max(lo).min(hi);
                            }
                        }
                    }
                    return;
                }
                for oy in oy0..oy1 {
                    for ox in 0..self.out_w {
                        acc.copy_from_slice(&self.bias[g * cout_g..(g + 1) * cout_g]);
                        for ky in 0..self.kernel_h {
                            let ty = (oy + self.pad_top) as isize - (ky * self.dilation_h) as isize;
                            if ty < 0 || !(ty as usize).is_multiple_of(self.stride_h) {
                                continue;
                            }
                            let iy = ty as usize / self.stride_h;
                            if iy >= self.in_h {
                                continue;
                            }
                            for kx in 0..self.kernel_w {
                                let tx =
                                    (ox + self.pad_left) as isize - (kx * self.dilation_w) as isize;
                                if tx < 0 || !(tx as usize).is_multiple_of(self.stride_w) {
                                    continue;
                                }
                                let ix = tx as usize / self.stride_w;
                                if ix >= self.in_w {
                                    continue;
                                }
                                let src = &cols[(iy * self.in_w + ix) * n
                                    + (ky * self.kernel_w + kx) * cout_g..][..cout_g];
                                for (a, &s) in acc.iter_mut().zip(src) {
                                    *a += s;
                                }
                            }
                        }
                        let dst = &mut o
                            [((oy - oy0) * self.out_w + ox) * self.out_c + g * cout_g..][..cout_g];
                        for (d, &a) in dst.iter_mut().zip(&acc) {
                            *d = a.max(lo).min(hi);
                        }
                    }
                }
            });
        }
    }
}

/// Whether convolutions use `mnnq-kernels` (default) or the engine's own backend
/// (`MNNQ_ENGINE_KERNELS=own`, kept for comparison and as a fallback).
/// MNN's CPU backend runs a group-1 3x3 convolution with stride and dilation 1 as Winograd when
/// its cost rule says so. `MNNQ_WINOGRAD=1` (or MNN-exact mode, [`mnn_exact_mode`]) does the
/// same with MNN's exact arithmetic ([`mnnq_kernels::f32::WinogradWeights`]): a single such
/// convolution then gives MNN's output bytes. Alone it is no use inside a network: the
/// convolution's input then differs from MNN's in the last bits, Winograd amplifies that, and the
/// result is further from MNN's (PP-OCR det: max error 3.3e-3 against 1.9e-3 with the direct
/// convolution); with every op upstream MNN-exact too, the whole model gives MNN's bytes.
fn mnn_winograd(
    p: &ConvParams,
    in_c: usize,
    out_h: usize,
    out_w: usize,
) -> Option<mnnq_kernels::f32::WinogradWeights> {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| {
        mnn_exact_mode()
            || std::env::var("MNNQ_WINOGRAD")
                .map(|v| v == "1")
                .unwrap_or(false)
    });
    if !enabled
        || (p.kernel_h, p.kernel_w) != (3, 3)
        || (p.stride_h, p.stride_w) != (1, 1)
        || (p.dilation_h, p.dilation_w) != (1, 1)
    {
        return None;
    }
    let unit = mnnq_kernels::f32::mnn_winograd_unit(out_h, out_w, in_c, p.out_channels)?;
    mnnq_kernels::f32::WinogradWeights::pack(&p.weights, p.out_channels, in_c, unit)
}

/// MNN-exact mode (`MNNQ_MNN_EXACT=1`, read once per process): float convolutions run with MNN
/// 3.6.1's x86 CPU arithmetic ([`mnnq_kernels::f32::mnn_exact`], plus MNN's Winograd for the
/// 3x3 stride-1 convolutions MNN runs that way), so a float model gives MNN's output bytes
/// rather than a result within rounding of it. Slower than the default kernels; for checking
/// against MNN. Transposed convolutions with overlapping windows keep the default kernel.
pub fn mnn_exact_mode() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var("MNNQ_MNN_EXACT")
            .map(|v| v == "1")
            .unwrap_or(false)
    })
}

fn use_shared_kernels() -> bool {
    static SHARED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SHARED.get_or_init(|| {
        std::env::var("MNNQ_ENGINE_KERNELS")
            .map(|v| v != "own")
            .unwrap_or(true)
    })
}

/// Pooling on NHWC data.
#[allow(clippy::too_many_arguments)]
pub fn pool(
    pool_type: PoolType,
    w: &PoolWindow,
    shape: &[usize],
    input: &[f32],
    output: &mut [f32],
    par: &Parallel,
) {
    let (batch, c, in_h, in_w) = (shape[0], shape[1], shape[2], shape[3]);
    let in_image = in_h * in_w * c;
    let out_image = w.out_h * w.out_w * c;
    for n in 0..batch {
        let x = &input[n * in_image..(n + 1) * in_image];
        let y = &mut output[n * out_image..(n + 1) * out_image];
        if w.out_h == 1
            && w.out_w == 1
            && w.kernel_h == in_h
            && w.kernel_w == in_w
            && w.pad_top == 0
            && w.pad_left == 0
        {
            // Global pooling: one pass over the pixels, channels vectorized.
            match pool_type {
                PoolType::Max => {
                    y.copy_from_slice(&x[..c]);
                    for px in x.chunks_exact(c).skip(1) {
                        y.iter_mut().zip(px).for_each(|(a, &b)| *a = a.max(b));
                    }
                }
                // MNN's order (bit-identical to it, and as fast as summing first): the sum of
                // the pixels each scaled by 1 / count.
                PoolType::Average => {
                    mnnq_kernels::f32::mnn_exact::mnn_global_avg_pool_nhwc(in_h * in_w, c, x, y)
                }
            }
            continue;
        }
        let row_len = w.out_w * c;
        let out = SharedMut(y.as_mut_ptr());
        par.for_each(w.out_h.div_ceil(ROW_CHUNK), |i| {
            let oy0 = i * ROW_CHUNK;
            let oy1 = (oy0 + ROW_CHUNK).min(w.out_h);
            // SAFETY: disjoint output rows.
            let o = unsafe { out.slice(oy0 * row_len, (oy1 - oy0) * row_len) };
            for oy in oy0..oy1 {
                let ys = (oy * w.stride_h) as isize - w.pad_top as isize;
                let y0 = ys.max(0) as usize;
                let y1 = ((ys + w.kernel_h as isize).min(in_h as isize)).max(0) as usize;
                for ox in 0..w.out_w {
                    let xs = (ox * w.stride_w) as isize - w.pad_left as isize;
                    let x0 = xs.max(0) as usize;
                    let x1 = ((xs + w.kernel_w as isize).min(in_w as isize)).max(0) as usize;
                    let dst = &mut o[((oy - oy0) * w.out_w + ox) * c..][..c];
                    match pool_type {
                        PoolType::Max => {
                            dst.fill(f32::NEG_INFINITY);
                            for yy in y0..y1 {
                                for xx in x0..x1 {
                                    let s = &x[(yy * in_w + xx) * c..][..c];
                                    dst.iter_mut().zip(s).for_each(|(a, &b)| *a = a.max(b));
                                }
                            }
                        }
                        PoolType::Average => {
                            dst.fill(0.0);
                            for yy in y0..y1 {
                                for xx in x0..x1 {
                                    let s = &x[(yy * in_w + xx) * c..][..c];
                                    dst.iter_mut().zip(s).for_each(|(a, &b)| *a += b);
                                }
                            }
                            let count = if w.count_include_pad {
                                let ye =
                                    (ys + w.kernel_h as isize).min((in_h + w.pad_top) as isize);
                                let xe =
                                    (xs + w.kernel_w as isize).min((in_w + w.pad_left) as isize);
                                (ye - ys) * (xe - xs)
                            } else {
                                ((y1 - y0) * (x1 - x0)) as isize
                            };
                            let inv = if count > 0 { 1.0 / count as f32 } else { 0.0 };
                            dst.iter_mut().for_each(|v| *v *= inv);
                        }
                    }
                }
            }
        });
    }
}

/// The source index of output index `o` of a nearest-neighbour resize: `floor(o * scale +
/// offset)` (or rounded, `floor(. + 0.499)`, for MNN's resize type 4), clamped to `[0, n)`.
pub fn nearest_source(o: usize, scale: f32, offset: f32, n: usize, round: bool) -> usize {
    let s = o as f32 * scale + offset;
    let v = if round {
        (s + 0.499).floor()
    } else {
        s.floor()
    };
    (v as i64).clamp(0, n as i64 - 1) as usize
}

/// The two source indices (clamped to `[0, n)`) and the weight of the second for output index
/// `o` of a bilinear resize.
pub fn bilinear_source(o: usize, scale: f32, offset: f32, n: usize) -> (usize, usize, f32) {
    let s = o as f32 * scale + offset;
    let f = s.floor();
    let clamp = |v: i64| v.clamp(0, n as i64 - 1) as usize;
    (clamp(f as i64), clamp(f as i64 + 1), s - f)
}

/// Resize on NHWC data with MNN's coordinate rule `src = dst * scale + offset`.
pub fn interp(
    resize_type: i32,
    cubic_a: f32,
    plan: &InterpPlan,
    shape: &[usize],
    input: &[f32],
    output: &mut [f32],
    par: &Parallel,
) -> Result<(), String> {
    let (batch, c, in_h, in_w) = (shape[0], shape[1], shape[2], shape[3]);
    let (out_h, out_w) = (plan.out_h, plan.out_w);
    let clamp = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    let nearest = nearest_source;
    let in_image = in_h * in_w * c;
    let out_image = out_h * out_w * c;
    let row_len = out_w * c;
    for n in 0..batch {
        let x = &input[n * in_image..(n + 1) * in_image];
        let y = &mut output[n * out_image..(n + 1) * out_image];
        let out = SharedMut(y.as_mut_ptr());
        match resize_type {
            1 | 4 => {
                let round = resize_type == 4;
                let xs: Vec<usize> = (0..out_w)
                    .map(|ox| nearest(ox, plan.width_scale, plan.width_offset, in_w, round))
                    .collect();
                par.for_each(out_h.div_ceil(ROW_CHUNK), |i| {
                    let oy0 = i * ROW_CHUNK;
                    let oy1 = (oy0 + ROW_CHUNK).min(out_h);
                    // SAFETY: disjoint output rows.
                    let o = unsafe { out.slice(oy0 * row_len, (oy1 - oy0) * row_len) };
                    for oy in oy0..oy1 {
                        let iy = nearest(oy, plan.height_scale, plan.height_offset, in_h, round);
                        for (ox, &ix) in xs.iter().enumerate() {
                            o[((oy - oy0) * out_w + ox) * c..][..c]
                                .copy_from_slice(&x[(iy * in_w + ix) * c..][..c]);
                        }
                    }
                });
            }
            2 => {
                let coord = bilinear_source;
                let xs: Vec<_> = (0..out_w)
                    .map(|ox| coord(ox, plan.width_scale, plan.width_offset, in_w))
                    .collect();
                par.for_each(out_h.div_ceil(ROW_CHUNK), |i| {
                    let oy0 = i * ROW_CHUNK;
                    let oy1 = (oy0 + ROW_CHUNK).min(out_h);
                    // SAFETY: disjoint output rows.
                    let o = unsafe { out.slice(oy0 * row_len, (oy1 - oy0) * row_len) };
                    for oy in oy0..oy1 {
                        let (y0, y1, fy) = coord(oy, plan.height_scale, plan.height_offset, in_h);
                        for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
                            let a = &x[(y0 * in_w + x0) * c..][..c];
                            let b = &x[(y0 * in_w + x1) * c..][..c];
                            let cc = &x[(y1 * in_w + x0) * c..][..c];
                            let d = &x[(y1 * in_w + x1) * c..][..c];
                            let dst = &mut o[((oy - oy0) * out_w + ox) * c..][..c];
                            for ch in 0..c {
                                let top = a[ch] * (1.0 - fx) + b[ch] * fx;
                                let bottom = cc[ch] * (1.0 - fx) + d[ch] * fx;
                                dst[ch] = top * (1.0 - fy) + bottom * fy;
                            }
                        }
                    }
                });
            }
            3 => {
                let weights = |t: f32| -> [f32; 4] {
                    let a = cubic_a;
                    let w = |d: f32| {
                        let d = d.abs();
                        if d <= 1.0 {
                            ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
                        } else if d < 2.0 {
                            ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
                        } else {
                            0.0
                        }
                    };
                    [w(1.0 + t), w(t), w(1.0 - t), w(2.0 - t)]
                };
                let taps = |o: usize, scale: f32, offset: f32, n: usize| {
                    let s = o as f32 * scale + offset;
                    let f = s.floor();
                    let idx = [-1i64, 0, 1, 2].map(|d| clamp(f as i64 + d, n));
                    (idx, weights(s - f))
                };
                let xs: Vec<_> = (0..out_w)
                    .map(|ox| taps(ox, plan.width_scale, plan.width_offset, in_w))
                    .collect();
                par.for_each(out_h.div_ceil(ROW_CHUNK), |i| {
                    let oy0 = i * ROW_CHUNK;
                    let oy1 = (oy0 + ROW_CHUNK).min(out_h);
                    // SAFETY: disjoint output rows.
                    let o = unsafe { out.slice(oy0 * row_len, (oy1 - oy0) * row_len) };
                    for oy in oy0..oy1 {
                        let (yi, yw) = taps(oy, plan.height_scale, plan.height_offset, in_h);
                        for (ox, (xi, xw)) in xs.iter().enumerate() {
                            let dst = &mut o[((oy - oy0) * out_w + ox) * c..][..c];
                            dst.fill(0.0);
                            for (jy, &iy) in yi.iter().enumerate() {
                                for (jx, &ix) in xi.iter().enumerate() {
                                    let wgt = yw[jy] * xw[jx];
                                    let s = &x[(iy * in_w + ix) * c..][..c];
                                    dst.iter_mut().zip(s).for_each(|(d, &v)| *d += v * wgt);
                                }
                            }
                        }
                    }
                });
            }
            other => return Err(format!("Interp resize type {other} is not supported")),
        }
    }
    Ok(())
}
