//! Run-time choice of the instruction set for the statistics loops.
//!
//! Each loop is written once as plain Rust that the compiler auto-vectorizes (an
//! `#[inline(always)]` body), and [`multiversion!`] compiles it again inside `#[target_feature]`
//! wrappers, so AVX2 and AVX-512 machines get wide vectors while the binary still runs
//! anywhere. The level comes from `mnnq_kernels::dispatch::active_isa` (so `MNNQ_ISA` caps it).
//! Every path gives bit-identical results: the loops compare, multiply and convert, but never
//! reassociate a floating-point sum.

pub(crate) use mnnq_kernels::dispatch::{active_isa, Isa};

/// `multiversion!(fn name(args) -> Ret = body);` defines `fn name(isa: Isa, args) -> Ret`
/// that runs `body(args)` compiled for `isa` (which must be supported by the CPU, as every
/// level from `active_isa` or `Isa::supported` is).
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $body:ident;) => {
        $(#[$meta])*
        fn $name(isa: $crate::simd::Isa, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                match isa {
                    // SAFETY: callers pass a level the CPU supports (see above).
                    $crate::simd::Isa::Avx512 | $crate::simd::Isa::Avx512Vnni => unsafe {
                        avx512($($arg),*)
                    },
                    // SAFETY: as above.
                    $crate::simd::Isa::Avx2 => unsafe { avx2($($arg),*) },
                    $crate::simd::Isa::Portable => $body($($arg),*),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = isa;
                $body($($arg),*)
            }
        }
    };
}
pub(crate) use multiversion;
