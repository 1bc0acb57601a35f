//! Run-time choice of instruction set.
//!
//! Kernels are compiled for several instruction sets and the best one the CPU supports is picked
//! once per process. The environment variable `MNNQ_ISA` caps the choice, so tests and benchmarks
//! can force a slower path on a fast machine: `portable`, `avx2`, `avx512`, `avx512vnni`.
//! A cap above what the CPU supports is lowered to what it supports (never an illegal instruction).
//! AMX int8 tiles are not a level of their own: the dense int8 convolution uses them on top of
//! AVX-512 VNNI where the CPU and the OS allow it (`crate::int8::amx`, `MNNQ_AMX=0` turns them off).

use std::fmt;
use std::sync::OnceLock;

/// Instruction-set levels, ordered from least to most capable.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, any CPU. The reference every other kernel is tested against.
    Portable,
    /// x86-64 AVX2 + FMA (Haswell and later, Zen 1 and later).
    Avx2,
    /// AVX-512 F/BW/DQ/VL (Skylake-X and later, Zen 4 and later).
    Avx512,
    /// AVX-512 with VNNI (`vpdpbusd`): Cascade Lake, Ice Lake and later, Zen 4 and later.
    Avx512Vnni,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    pub fn parse(text: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(text.trim()))
    }

    /// Whether this CPU can execute code compiled for `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                Isa::Avx512.is_supported() && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The most capable level this CPU supports.
    pub fn best_supported() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.is_supported())
            .unwrap_or(Isa::Portable)
    }

    /// Every level this CPU supports, least capable first. Kernel tests loop over these.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of the environment variable that caps the instruction set.
pub const ISA_ENV: &str = "MNNQ_ISA";

/// The instruction set kernels should use in this process: the best supported one, capped by
/// `MNNQ_ISA` when set. Computed once.
pub fn active_isa() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = Isa::best_supported();
        match std::env::var(ISA_ENV) {
            Ok(text) => match Isa::parse(&text) {
                Some(cap) => cap.min(best),
                None => {
                    eprintln!(
                        "warning: {ISA_ENV}={text:?} is not one of portable, avx2, avx512, \
                         avx512vnni; using {best}"
                    );
                    best
                }
            },
            Err(_) => best,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
        }
        assert_eq!(Isa::parse("AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::parse("sse"), None);
    }

    #[test]
    fn portable_is_always_supported_and_levels_are_monotonic() {
        assert!(Isa::Portable.is_supported());
        let supported = Isa::supported();
        assert_eq!(supported[0], Isa::Portable);
        // A level is only supported when every lower level is.
        for (i, isa) in supported.iter().enumerate() {
            assert_eq!(*isa, Isa::ALL[i]);
        }
        assert!(active_isa() <= Isa::best_supported());
    }
}
