//! Intel AMX int8 tiles for dense convolutions (Sapphire Rapids and later Xeons).
//!
//! `tdpbssd` multiplies a 16 x 64 tile of signed activation codes by a 16 x 64 tile of signed
//! weights packed in groups of 4 k (the same grouping as the VNNI layout) into a 16 x 16 tile of
//! i32 sums: 16384 multiply-adds per instruction, exact. Both operands are signed, so there is no
//! `+128` compensation; the sums equal the VNNI kernel's, and the same requantize epilogue
//! (`super::x86::store_avx512`) turns them into the same bytes.
//!
//! Tiles: `tmm0`/`tmm1` accumulate 16 pixels x 32 channels, `tmm2`/`tmm4`/`tmm5` hold the A and
//! two B tiles of a full 64-k chunk, `tmm3`/`tmm6`/`tmm7` those of the last, shorter chunk (the
//! tile shapes are fixed by one `ldtilecfg` per call). Rows come 16 at a time, then the rest in
//! tiles of fewer rows (a second configuration), so the VNNI copy of the weights is never read.
//! Accumulations shorter than [`AMX_MIN_K`] stay on the VNNI kernel.
//!
//! AMX needs the kernel's permission (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`),
//! asked once per process. `MNNQ_AMX=0`, or `MNNQ_ISA` below `avx512vnni`, turns AMX off.

use std::arch::asm;
use std::arch::x86_64::*;
use std::ops::Range;
use std::sync::OnceLock;

use super::pack::PackedInt8Weights;
use super::requant::Requantize;
use super::x86::{store_avx512, Tile, TileParams};
use crate::dispatch::{active_isa, Isa};

/// Shortest accumulation (k) run on AMX tiles. Below one full 64-k chunk the tiles' fixed costs
/// (zeroing, the store of the sums through memory) outweigh their speed: on EfficientNet-Lite0
/// the k = 16 and 32 layers took 15-25 % longer than with VNNI, k = 40 the same, k >= 80 up to
/// 2x less.
pub const AMX_MIN_K: usize = 64;

/// The environment variable that turns AMX off (`MNNQ_AMX=0`).
pub const AMX_ENV: &str = "MNNQ_AMX";

/// Whether this process may use AMX int8 tiles: the CPU has them, the kernel granted the tile
/// state, the active instruction set is AVX-512 VNNI (the epilogue's) and `MNNQ_AMX` is not `0`.
pub fn amx_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        if std::env::var(AMX_ENV).is_ok_and(|v| v.trim() == "0") {
            return false;
        }
        if active_isa() != Isa::Avx512Vnni {
            return false;
        }
        // CPUID leaf 7 exists on every x86-64 CPU with AVX-512 (checked above).
        let leaf7 = __cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 25) != 0);
        tile && int8 && request_tile_permission()
    })
}

/// Ask Linux for the AMX tile data state; false where it is refused (or not Linux).
fn request_tile_permission() -> bool {
    #[cfg(target_os = "linux")]
    {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: arch_prctl with these arguments only changes the process's permitted xstate.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            );
        }
        ret == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Weights as AMX B tiles: per column tile of 16 output channels, `k_padded / 4` rows of 64
/// bytes, row `g` holding `w[c][4g + j]` at byte `4n + j` for channel `c = 16 * tile + n`
/// (zeros beyond `k` and `out_c`). A chunk of 16 rows is one B tile.
#[derive(Clone, Debug)]
pub struct AmxWeights {
    data: Vec<super::pack::CacheLine>,
    /// Rows (k-groups of 4) per column tile.
    groups: usize,
}

impl AmxWeights {
    /// Pack `[c][k]` rows (`k` per channel, im2col order) padded to `k_padded` (a multiple of 4).
    pub(crate) fn pack(rows: &[i8], out_c: usize, k: usize, k_padded: usize) -> AmxWeights {
        let groups = k_padded / 4;
        let column_tiles = out_c.div_ceil(16);
        let mut data = vec![super::pack::CacheLine([0; 64]); column_tiles * groups];
        for t in 0..column_tiles {
            for g in 0..groups {
                let line = &mut data[t * groups + g].0;
                for n in 0..16 {
                    let c = 16 * t + n;
                    for j in 0..4 {
                        let kk = 4 * g + j;
                        if c < out_c && kk < k {
                            line[4 * n + j] = rows[c * k + kk] as u8;
                        }
                    }
                }
            }
        }
        AmxWeights { data, groups }
    }

    fn tile(&self, column_tile: usize, first_group: usize) -> *const u8 {
        self.data[column_tile * self.groups + first_group]
            .0
            .as_ptr()
    }
}

/// The `ldtilecfg` operand (palette 1).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

thread_local! {
    /// Per-thread i32 sums of one 16 x 32 output block, read back by the epilogue.
    static SUMS: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The tile shapes of one call: accumulators and A tiles of `rows` rows (16, or the last block's
/// fewer), a k tail of `tail_groups` groups of 4.
fn tile_config(rows: usize, tail_groups: usize) -> TileConfig {
    let mut config = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [0; 16],
        rows: [0; 16],
    };
    for t in [0, 1, 2] {
        config.colsb[t] = 64;
        config.rows[t] = rows as u8;
    }
    for t in [4, 5] {
        config.colsb[t] = 64;
        config.rows[t] = 16;
    }
    if tail_groups > 0 {
        config.colsb[3] = (tail_groups * 4) as u16;
        config.rows[3] = rows as u8;
        for t in [6, 7] {
            config.colsb[t] = 64;
            config.rows[t] = tail_groups as u8;
        }
    }
    config
}

/// Run the output channels `channels` (starting at a multiple of 16) of `rows` rows through AMX
/// tiles with the fused requantize store: blocks of 16 rows, then one block of the rest.
///
/// # Safety
/// [`amx_usable`] must be true. `a` holds `rows` rows of `lda` codes with `params.k` (a multiple
/// of 4, `<= weights.k_padded`) readable in each; `out` `rows` rows of `params.ldc` bytes
/// covering `channels`; `amx` was packed from `weights`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn amx_rows(
    params: &TileParams,
    a: *const i8,
    lda: usize,
    rows: usize,
    amx: &AmxWeights,
    channels: Range<usize>,
    weights: &PackedInt8Weights,
    requant: &Requantize,
    out: *mut i8,
) {
    debug_assert!(channels.start.is_multiple_of(16));
    debug_assert!(params.k.is_multiple_of(4) && params.k / 4 <= amx.groups);
    let tail_groups = (params.k / 4) % 16;
    let full_rows = rows / 16 * 16;
    SUMS.with_borrow_mut(|sums| {
        sums.resize(16 * 32, 0);
        let sums = sums.as_mut_ptr();
        if full_rows > 0 {
            let config = tile_config(16, tail_groups);
            asm!("ldtilecfg [{0}]", in(reg) &config as *const TileConfig, options(nostack));
            for m0 in (0..full_rows).step_by(16) {
                let block = Block { m0, rows: 16 };
                amx_block(
                    params, a, lda, &block, amx, &channels, weights, requant, out, sums,
                );
            }
        }
        if rows > full_rows {
            // Fewer than 16 rows left: tiles of that many rows (a new shape, so a new
            // configuration), rather than the VNNI kernel with its own copy of the weights.
            let config = tile_config(rows - full_rows, tail_groups);
            asm!("ldtilecfg [{0}]", in(reg) &config as *const TileConfig, options(nostack));
            let block = Block {
                m0: full_rows,
                rows: rows - full_rows,
            };
            amx_block(
                params, a, lda, &block, amx, &channels, weights, requant, out, sums,
            );
        }
    });
    asm!("tilerelease", options(nostack));
}

/// Rows `m0..m0 + rows` of one call.
struct Block {
    m0: usize,
    rows: usize,
}

/// One block of rows, every channel pair of `channels`, with the tiles configured for its rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn amx_block(
    params: &TileParams,
    a: *const i8,
    lda: usize,
    block: &Block,
    amx: &AmxWeights,
    channels: &Range<usize>,
    weights: &PackedInt8Weights,
    requant: &Requantize,
    out: *mut i8,
    sums: *mut i32,
) {
    let groups = params.k / 4;
    let (full_chunks, tail_groups) = (groups / 16, groups % 16);
    let end = channels.end.min(weights.out_c);
    let a_block = a.add(block.m0 * lda);
    let mut c0 = channels.start;
    while c0 < end {
        let column_tile = c0 / 16;
        let pair = end - c0 > 16;
        asm!("tilezero tmm0", "tilezero tmm1", options(nostack));
        // One k-chunk: the A tile and one or two B tiles of the chunk's groups, accumulated into
        // tmm0 (and tmm1). The full chunks and the tail use their own tile registers (shapes).
        macro_rules! chunk {
            ([$load_a:literal, $load_b0:literal, $dot0:literal, $load_b1:literal, $dot1:literal],
             $first_group:expr) => {{
                let a_tile = a_block.add($first_group * 4);
                asm!(
                    $load_a,
                    $load_b0,
                    $dot0,
                    a = in(reg) a_tile,
                    lda = in(reg) lda,
                    b = in(reg) amx.tile(column_tile, $first_group),
                    stride = in(reg) 64usize,
                    options(nostack)
                );
                if pair {
                    asm!(
                        $load_b1,
                        $dot1,
                        b = in(reg) amx.tile(column_tile + 1, $first_group),
                        stride = in(reg) 64usize,
                        options(nostack)
                    );
                }
            }};
        }
        for chunk in 0..full_chunks {
            chunk!(
                [
                    "tileloadd tmm2, [{a} + {lda}*1]",
                    "tileloadd tmm4, [{b} + {stride}*1]",
                    "tdpbssd tmm0, tmm2, tmm4",
                    "tileloadd tmm5, [{b} + {stride}*1]",
                    "tdpbssd tmm1, tmm2, tmm5"
                ],
                chunk * 16
            );
        }
        if tail_groups > 0 {
            chunk!(
                [
                    "tileloadd tmm3, [{a} + {lda}*1]",
                    "tileloadd tmm6, [{b} + {stride}*1]",
                    "tdpbssd tmm0, tmm3, tmm6",
                    "tileloadd tmm7, [{b} + {stride}*1]",
                    "tdpbssd tmm1, tmm3, tmm7"
                ],
                full_chunks * 16
            );
        }
        // Row r of the block: channels c0.. at sums[32 r..], c0 + 16.. at sums[32 r + 16..].
        asm!(
            "tilestored [{s} + {stride}*1], tmm0",
            "tilestored [{s1} + {stride}*1], tmm1",
            s = in(reg) sums,
            s1 = in(reg) sums.add(16),
            stride = in(reg) 128usize,
            options(nostack)
        );
        let n_valid = (end - c0).min(32);
        for r in (0..block.rows).step_by(4) {
            let mut acc = [[_mm512_setzero_si512(); 2]; 4];
            for (i, row) in acc.iter_mut().enumerate().take(block.rows - r) {
                let p = sums.add((r + i) * 32);
                row[0] = _mm512_loadu_si512(p as *const _);
                row[1] = _mm512_loadu_si512(p.add(16) as *const _);
            }
            let tile = Tile::<i8> {
                a: std::ptr::null(),
                lda: 0,
                rows: block.rows - r,
                b: std::ptr::null(),
                offset: requant.offset.as_ptr().add(c0),
                comp: std::ptr::null(),
                mult: requant.alpha.as_ptr().add(c0),
                bias: requant.bias.as_ptr().add(c0),
                n_valid,
                out: out.add((block.m0 + r) * params.ldc + c0),
            };
            store_avx512::<4, 2>(params, &tile, &acc);
        }
        c0 += 32;
    }
}
