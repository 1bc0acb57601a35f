//! Weight packing for the int8 GEMM, done once when a model is loaded.
//!
//! The GEMM computes `C[pixel][c] = sum_k A[pixel][k] * W[k][c]` where a row of `A` is the im2col
//! row of one output pixel, ordered `(ky, kx, ic)` so that NHWC input runs of `in_c` channels are
//! contiguous. Output channels are cut into *blocks* of up to `max_vectors` SIMD vectors; each
//! block is stored contiguously, k-group by k-group, so a micro-kernel streams it linearly:
//!
//! * VNNI (`vpdpbusd`, u8 x s8 -> i32 over 4 consecutive k): per k-group of 4, per vector, 16
//!   lanes (channels) x 4 bytes (k). The *weights* are the unsigned operand, stored as `w + 128`
//!   (`w ^ 0x80`), and the activations the signed one: `vpdpbusd` can then take the activation
//!   quad straight from memory as an embedded broadcast (no broadcast or sign-flip instruction
//!   per row and k-group). Each row's accumulators start at `-128 * sum_k A[row][k]`, computed
//!   once per row and shared by every channel block.
//! * i16 (`vpmaddwd`, i16 x i16 -> i32 over 2 consecutive k; AVX-512 without VNNI and AVX2): per
//!   k-group of 2, per vector, 16 (AVX-512) or 8 (AVX2) lanes x 2 sign-extended i16. Activations
//!   are sign-extended too, so there is no shift and no compensation. Products and pair sums fit
//!   easily, so this is exact (unlike `vpmaddubsw`, which saturates).
//! * portable: plain `[c][k]` rows.

use crate::dispatch::Isa;

/// How the packed data is laid out; one per micro-kernel family.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[c][k]` rows, used by the portable kernel.
    Rows,
    /// u8 x s8 groups of 4 k for `vpdpbusd`, 16 lanes per vector.
    Vnni16,
    /// i16 pairs for `vpmaddwd` with `lanes` channels per vector (16 for AVX-512, 8 for AVX2).
    I16Pairs { lanes: usize },
}

impl WeightLayout {
    pub fn for_isa(isa: Isa) -> WeightLayout {
        match isa {
            Isa::Portable => WeightLayout::Rows,
            Isa::Avx2 => WeightLayout::I16Pairs { lanes: 8 },
            Isa::Avx512 => WeightLayout::I16Pairs { lanes: 16 },
            Isa::Avx512Vnni => WeightLayout::Vnni16,
        }
    }

    /// Channels per SIMD vector.
    pub fn lanes(self) -> usize {
        match self {
            WeightLayout::Rows => 1,
            WeightLayout::Vnni16 => 16,
            WeightLayout::I16Pairs { lanes } => lanes,
        }
    }

    /// Consecutive k values combined by one multiply-add instruction.
    pub fn k_group(self) -> usize {
        match self {
            WeightLayout::Rows => 1,
            WeightLayout::Vnni16 => 4,
            WeightLayout::I16Pairs { .. } => 2,
        }
    }

    /// Most SIMD vectors of output channels one micro-kernel tile holds.
    fn max_vectors(self) -> usize {
        match self {
            WeightLayout::Rows => 1,
            WeightLayout::Vnni16 | WeightLayout::I16Pairs { lanes: 16 } => 4,
            WeightLayout::I16Pairs { .. } => 2,
        }
    }
}

/// One block of output channels: `vectors * lanes` channels starting at `first_channel`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ChannelBlock {
    pub first_channel: usize,
    pub vectors: usize,
    /// Offset of the block's data in bytes within [`PackedInt8Weights::data`].
    pub offset: usize,
}

/// 64-byte aligned storage so full-vector weight loads never split a cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct CacheLine(pub(crate) [u8; 64]);

/// Dense convolution weights packed for one micro-kernel family.
#[derive(Clone, Debug)]
pub struct PackedInt8Weights {
    pub isa: Isa,
    pub layout: WeightLayout,
    pub out_c: usize,
    pub in_c: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    /// `kernel_h * kernel_w * in_c`.
    pub k: usize,
    /// `k` rounded up to the layout's k-group.
    pub k_padded: usize,
    pub blocks: Vec<ChannelBlock>,
    lines: Vec<CacheLine>,
    /// Output channels rounded up to whole vectors.
    padded_channels: usize,
    /// The weights as `[c][k]` rows (k in im2col order), kept for the portable kernel and tests.
    pub rows: Vec<i8>,
    /// The same weights as AMX tiles, for the VNNI layout on CPUs with AMX int8
    /// ([`super::amx::amx_usable`]).
    #[cfg(target_arch = "x86_64")]
    pub(crate) amx: Option<super::amx::AmxWeights>,
}

impl PackedInt8Weights {
    /// Pack for the process's active instruction set ([`crate::dispatch::active_isa`]).
    pub fn pack_conv(q_w: &[i8], out_c: usize, in_c: usize, kh: usize, kw: usize) -> Self {
        Self::pack_conv_for(crate::dispatch::active_isa(), q_w, out_c, in_c, kh, kw)
    }

    /// Pack `q_w`, laid out `[out_c][in_c][kh][kw]` as in MNN, for the kernels of `isa`.
    pub fn pack_conv_for(
        isa: Isa,
        q_w: &[i8],
        out_c: usize,
        in_c: usize,
        kh: usize,
        kw: usize,
    ) -> Self {
        assert!(
            isa.is_supported(),
            "PackedInt8Weights: {isa} is not supported by this CPU"
        );
        assert_eq!(
            q_w.len(),
            out_c * in_c * kh * kw,
            "PackedInt8Weights: weight length does not match [{out_c}][{in_c}][{kh}][{kw}]"
        );
        let k = kh * kw * in_c;
        // Reorder each output channel's weights from (ic, ky, kx) to im2col order (ky, kx, ic).
        let mut rows = vec![0i8; out_c * k];
        for c in 0..out_c {
            for ic in 0..in_c {
                for ky in 0..kh {
                    for kx in 0..kw {
                        rows[c * k + (ky * kw + kx) * in_c + ic] =
                            q_w[((c * in_c + ic) * kh + ky) * kw + kx];
                    }
                }
            }
        }
        let layout = WeightLayout::for_isa(isa);
        let lanes = layout.lanes();
        let group = layout.k_group();
        let k_padded = k.div_ceil(group) * group;
        let total_vectors = out_c.div_ceil(lanes);

        // Balanced blocks of at most `max_vectors` vectors: 5 vectors become 3 + 2, not 4 + 1,
        // because a one-vector tile is limited by its activation broadcasts.
        let max_vectors = layout.max_vectors();
        let block_count = total_vectors.div_ceil(max_vectors);
        let mut blocks = Vec::with_capacity(block_count);
        let mut bytes: Vec<u8> = Vec::new();
        let mut first_vector = 0;
        for b in 0..block_count {
            let vectors = (total_vectors - first_vector).div_ceil(block_count - b);
            let offset = bytes.len();
            let first_channel = first_vector * lanes;
            let weight = |c: usize, kk: usize| -> i8 {
                if c < out_c && kk < k {
                    rows[c * k + kk]
                } else {
                    0
                }
            };
            match layout {
                WeightLayout::Rows => {}
                WeightLayout::Vnni16 => {
                    for kg in (0..k_padded).step_by(4) {
                        for lane in 0..vectors * lanes {
                            for j in 0..4 {
                                // `w + 128` as u8: the unsigned operand of `vpdpbusd`.
                                bytes.push(weight(first_channel + lane, kg + j) as u8 ^ 0x80);
                            }
                        }
                    }
                }
                WeightLayout::I16Pairs { .. } => {
                    for kg in (0..k_padded).step_by(2) {
                        for lane in 0..vectors * lanes {
                            for j in 0..2 {
                                bytes.extend_from_slice(
                                    &(weight(first_channel + lane, kg + j) as i16).to_ne_bytes(),
                                );
                            }
                        }
                    }
                }
            }
            blocks.push(ChannelBlock {
                first_channel,
                vectors,
                offset,
            });
            first_vector += vectors;
        }
        let mut lines = vec![CacheLine([0; 64]); bytes.len().div_ceil(64)];
        for (line, chunk) in lines.iter_mut().zip(bytes.chunks(64)) {
            line.0[..chunk.len()].copy_from_slice(chunk);
        }
        #[cfg(target_arch = "x86_64")]
        let amx = (layout == WeightLayout::Vnni16 && super::amx::amx_usable())
            .then(|| super::amx::AmxWeights::pack(&rows, out_c, k, k_padded));
        PackedInt8Weights {
            isa,
            layout,
            out_c,
            in_c,
            kernel_h: kh,
            kernel_w: kw,
            k,
            k_padded,
            blocks,
            lines,
            padded_channels: total_vectors * lanes,
            rows,
            #[cfg(target_arch = "x86_64")]
            amx,
        }
    }

    /// Whether the AMX tile kernel runs these weights (where it can: 16-row blocks of im2col rows
    /// or of pointwise rows whose channel count is a multiple of 4).
    pub fn uses_amx(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.amx.is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The same weights without their AMX tiles, so the VNNI kernel runs everything (tests and
    /// benchmarks compare the two on one machine).
    pub fn without_amx(mut self) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            self.amx = None;
        }
        self
    }

    /// The packed micro-kernel data (empty for the portable layout).
    pub fn data(&self) -> &[u8] {
        // SAFETY: `CacheLine` is 64 plain bytes with no padding.
        unsafe {
            std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.lines.len() * 64)
        }
    }

    /// Output channels rounded up to whole vectors.
    pub fn padded_channels(&self) -> usize {
        self.padded_channels
    }
}
