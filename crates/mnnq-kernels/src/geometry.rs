//! The shape of a 2-D convolution or pooling window, shared by fp32 and int8 kernels.
//!
//! Activations are NHWC inside kernels: channels innermost, so a pixel's channels are contiguous
//! (a GEMM row for 1x1 convolutions, a SIMD vector for depthwise ones). Padding is given as the
//! top/left amounts; bottom/right padding is whatever the output size implies.

/// Geometry of one 2-D window operation on an NHWC tensor (batch handled by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl ConvGeometry {
    /// Rows of the implicit im2col matrix: one per output pixel.
    pub fn pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Length of one im2col row for a dense (group = 1) convolution: kernel taps times input channels.
    pub fn im2col_len(&self) -> usize {
        self.kernel_h * self.kernel_w * self.in_c
    }

    /// True when the convolution is a plain matrix product over pixels (1x1, stride 1, no pad).
    pub fn is_pointwise(&self) -> bool {
        self.kernel_h == 1
            && self.kernel_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_top == 0
            && self.pad_left == 0
            && self.in_h == self.out_h
            && self.in_w == self.out_w
    }

    /// The input row read by output row `oy` at kernel row `ky`, or `None` when it falls in padding.
    #[inline]
    pub fn input_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride_h + ky * self.dilation_h)
            .checked_sub(self.pad_top)
            .filter(|&y| y < self.in_h)
    }

    /// The input column read by output column `ox` at kernel column `kx`, or `None` in padding.
    #[inline]
    pub fn input_col(&self, ox: usize, kx: usize) -> Option<usize> {
        (ox * self.stride_w + kx * self.dilation_w)
            .checked_sub(self.pad_left)
            .filter(|&x| x < self.in_w)
    }
}

/// A fused activation applied in a kernel's store step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    None,
    Relu,
    Relu6,
    /// Clamp to `[min, max]` (ReLU6 with other bounds, or a fused clip).
    Clamp {
        min: f32,
        max: f32,
    },
}

impl Activation {
    /// The `[min, max]` interval the activation clamps to.
    pub fn bounds(self) -> (f32, f32) {
        match self {
            Activation::None => (f32::NEG_INFINITY, f32::INFINITY),
            Activation::Relu => (0.0, f32::INFINITY),
            Activation::Relu6 => (0.0, 6.0),
            Activation::Clamp { min, max } => (min, max),
        }
    }

    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        let (lo, hi) = self.bounds();
        x.max(lo).min(hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_maps_to_none() {
        let g = ConvGeometry {
            in_h: 4,
            in_w: 4,
            in_c: 1,
            out_h: 2,
            out_w: 2,
            out_c: 1,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 2,
            stride_w: 2,
            dilation_h: 1,
            dilation_w: 1,
            pad_top: 1,
            pad_left: 1,
        };
        assert_eq!(g.input_row(0, 0), None);
        assert_eq!(g.input_row(0, 1), Some(0));
        assert_eq!(g.input_row(1, 2), Some(3));
        assert_eq!(g.input_col(1, 0), Some(1));
        assert!(!g.is_pointwise());
        assert_eq!(g.im2col_len(), 9);
        assert_eq!(Activation::Relu6.apply(7.5), 6.0);
        assert_eq!(Activation::Relu.apply(-1.0), 0.0);
    }
}
