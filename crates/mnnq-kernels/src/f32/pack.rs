//! Weight packing for the fp32 GEMM, done once at model load.
//!
//! The right-hand matrix `B` (`K x N`: reduction by output channels) is cut into column panels
//! as wide as the micro-kernel's tile (`vectors * lanes` columns). Inside a panel the layout is
//! `[k][column]`, zero-padded to the full panel width, so the micro-kernel reads one contiguous,
//! 64-byte aligned stream per panel and never needs a mask on `B`. The last panel is narrowed to
//! as few vectors as the leftover columns need (N = 24 on AVX-512 uses a 32-wide panel, N = 16 a
//! 16-wide one).

use crate::dispatch::{active_isa, Isa};
use std::fmt;

/// The micro-kernel family an ISA runs (the fp32 kernels have no use for VNNI).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    Portable,
    Avx2,
    Avx512,
}

impl Family {
    pub(crate) fn for_isa(isa: Isa) -> Family {
        assert!(
            isa.is_supported(),
            "instruction set {isa} is not supported by this CPU"
        );
        match isa {
            Isa::Portable => Family::Portable,
            Isa::Avx2 => Family::Avx2,
            Isa::Avx512 | Isa::Avx512Vnni => Family::Avx512,
        }
    }

    /// fp32 lanes of one vector register.
    pub(crate) fn lanes(self) -> usize {
        match self {
            Family::Portable | Family::Avx2 => 8,
            Family::Avx512 => 16,
        }
    }

    /// Vectors across a full-width tile (the widest panel).
    pub(crate) fn max_vectors(self) -> usize {
        2
    }
}

/// One column panel of the packed matrix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Panel {
    /// First output column covered.
    pub(crate) col0: usize,
    /// Real columns (<= `vectors * lanes`); the rest of the panel is zero padding.
    pub(crate) width: usize,
    /// Vector registers across the panel: selects the micro-kernel's tile width.
    pub(crate) vectors: usize,
    /// Offset of the panel's first float from the aligned start of storage.
    pub(crate) offset: usize,
}

/// A `K x N` right-hand matrix packed for one micro-kernel family.
pub struct PackedWeights {
    isa: Isa,
    family: Family,
    k: usize,
    n: usize,
    panels: Vec<Panel>,
    storage: Vec<f32>,
    /// Index in `storage` of the first float of panel data, chosen so it is 64-byte aligned.
    start: usize,
}

impl fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedWeights")
            .field("isa", &self.isa)
            .field("k", &self.k)
            .field("n", &self.n)
            .field("panels", &self.panels.len())
            .finish()
    }
}

impl PackedWeights {
    /// Packs a dense (group = 1) convolution's weights, PyTorch/MNN layout
    /// `[out_c][in_c][kh][kw]`, for the active ISA. The reduction index runs over
    /// `(ky, kx, ic)` with `ic` innermost, matching an NHWC im2col row.
    pub fn pack_conv(
        weights_oihw: &[f32],
        out_c: usize,
        in_c: usize,
        kh: usize,
        kw: usize,
    ) -> Self {
        Self::pack_conv_for(active_isa(), weights_oihw, out_c, in_c, kh, kw)
    }

    /// [`Self::pack_conv`] for a given ISA (tests and benchmarks compare ISAs this way).
    pub fn pack_conv_for(
        isa: Isa,
        weights_oihw: &[f32],
        out_c: usize,
        in_c: usize,
        kh: usize,
        kw: usize,
    ) -> Self {
        assert_eq!(
            weights_oihw.len(),
            out_c * in_c * kh * kw,
            "conv weights: expected out_c*in_c*kh*kw = {out_c}*{in_c}*{kh}*{kw} floats"
        );
        let taps = kh * kw;
        Self::pack_with(isa, taps * in_c, out_c, |k, n| {
            let (tap, ic) = (k / in_c, k % in_c);
            weights_oihw[(n * in_c + ic) * taps + tap]
        })
    }

    /// Packs a transposed convolution's weights, ONNX layout `[in_c][out_c][kh][kw]` (groups = 1),
    /// as the `in_c x (kh*kw*out_c)` matrix [`super::deconv2d_nhwc`] multiplies by: column
    /// `(ky*kw + kx)*out_c + oc`.
    pub fn pack_deconv(
        weights_iohw: &[f32],
        in_c: usize,
        out_c: usize,
        kh: usize,
        kw: usize,
    ) -> Self {
        Self::pack_deconv_for(active_isa(), weights_iohw, in_c, out_c, kh, kw)
    }

    /// [`Self::pack_deconv`] for a given ISA.
    pub fn pack_deconv_for(
        isa: Isa,
        weights_iohw: &[f32],
        in_c: usize,
        out_c: usize,
        kh: usize,
        kw: usize,
    ) -> Self {
        assert_eq!(
            weights_iohw.len(),
            in_c * out_c * kh * kw,
            "deconv weights: expected in_c*out_c*kh*kw = {in_c}*{out_c}*{kh}*{kw} floats"
        );
        let taps = kh * kw;
        Self::pack_with(isa, in_c, taps * out_c, |k, n| {
            let (tap, oc) = (n / out_c, n % out_c);
            weights_iohw[(k * out_c + oc) * taps + tap]
        })
    }

    /// Packs a row-major `K x N` matrix (MatMul / fully connected with `B` constant).
    pub fn pack_matrix(b_kn: &[f32], k: usize, n: usize) -> Self {
        Self::pack_matrix_for(active_isa(), b_kn, k, n)
    }

    /// [`Self::pack_matrix`] for a given ISA.
    pub fn pack_matrix_for(isa: Isa, b_kn: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(b_kn.len(), k * n, "matrix: expected k*n = {k}*{n} floats");
        Self::pack_with(isa, k, n, |row, col| b_kn[row * n + col])
    }

    fn pack_with(isa: Isa, k: usize, n: usize, element: impl Fn(usize, usize) -> f32) -> Self {
        let family = Family::for_isa(isa);
        let lanes = family.lanes();
        let full_width = lanes * family.max_vectors();
        let mut panels = Vec::new();
        let mut col0 = 0;
        let mut offset = 0;
        while col0 < n {
            let width = (n - col0).min(full_width);
            let vectors = width.div_ceil(lanes);
            panels.push(Panel {
                col0,
                width,
                vectors,
                offset,
            });
            offset += k * vectors * lanes;
            col0 += width;
        }
        // 16 spare floats let the start slide to a 64-byte boundary.
        let mut storage = vec![0.0f32; offset + 16];
        let misalignment = (storage.as_ptr() as usize % 64) / 4;
        let start = (16 - misalignment) % 16;
        for panel in &panels {
            let stride = panel.vectors * lanes;
            for row in 0..k {
                let dst = start + panel.offset + row * stride;
                for col in 0..panel.width {
                    storage[dst + col] = element(row, panel.col0 + col);
                }
            }
        }
        PackedWeights {
            isa,
            family,
            k,
            n,
            panels,
            storage,
            start,
        }
    }

    /// The ISA the layout was made for; [`super::gemm`] runs that ISA's micro-kernel.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Reduction length (rows of `B`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output columns (columns of `B`).
    pub fn n(&self) -> usize {
        self.n
    }

    pub(crate) fn family(&self) -> Family {
        self.family
    }

    pub(crate) fn panels(&self) -> &[Panel] {
        &self.panels
    }

    /// Packed data, starting at the aligned first panel.
    pub(crate) fn data(&self) -> &[f32] {
        &self.storage[self.start..]
    }
}
