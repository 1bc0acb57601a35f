//! A minimal fp32 vector abstraction so each kernel body is written once and instantiated per
//! instruction set.
//!
//! Every method is `#[inline(always)]`: the generic kernels are only ever called from an
//! `#[target_feature]` entry point (see the `*_isa` functions), and inlining everything into that
//! entry point is what lets the intrinsics compile to single instructions. Calling a method of
//! [`Avx512`] or [`Avx2`] outside such an entry point on a CPU without the feature is undefined
//! behaviour, hence `unsafe` throughout.

/// One SIMD register of fp32 lanes.
pub(crate) trait F32Vector: Copy {
    /// Lanes per register.
    const LANES: usize;

    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    /// Loads `LANES` floats (unaligned).
    unsafe fn load(ptr: *const f32) -> Self;
    /// Loads the first `n < LANES` floats, the other lanes are zero; memory past `n` is not read.
    unsafe fn load_partial(ptr: *const f32, n: usize) -> Self;
    unsafe fn store(self, ptr: *mut f32);
    /// Stores the first `n < LANES` lanes; memory past `n` is not written.
    unsafe fn store_partial(self, ptr: *mut f32, n: usize);
    /// `self * b + acc`, fused (single rounding) where the ISA has FMA.
    unsafe fn mul_add(self, b: Self, acc: Self) -> Self;
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    unsafe fn max(self, b: Self) -> Self;
    unsafe fn min(self, b: Self) -> Self;

    /// Loads `n` floats, choosing the full or partial form.
    #[inline(always)]
    unsafe fn load_n(ptr: *const f32, n: usize) -> Self {
        if n >= Self::LANES {
            Self::load(ptr)
        } else {
            Self::load_partial(ptr, n)
        }
    }

    /// Stores `n` lanes, choosing the full or partial form.
    #[inline(always)]
    unsafe fn store_n(self, ptr: *mut f32, n: usize) {
        if n >= Self::LANES {
            self.store(ptr)
        } else {
            self.store_partial(ptr, n)
        }
    }

    /// The fused activation: clamp to `[lo, hi]`.
    #[inline(always)]
    unsafe fn clamp(self, lo: Self, hi: Self) -> Self {
        self.max(lo).min(hi)
    }
}

/// Portable "vector" of 8 lanes. Plain loops the compiler may auto-vectorise with whatever the
/// baseline target offers; multiply and add stay separate because a software `fma` is slow.
#[derive(Clone, Copy)]
pub(crate) struct Portable([f32; 8]);

impl Portable {
    #[inline(always)]
    fn map2(self, b: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let mut out = [0.0; 8];
        for (lane, out) in out.iter_mut().enumerate() {
            *out = f(self.0[lane], b.0[lane]);
        }
        Portable(out)
    }
}

impl F32Vector for Portable {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Portable([x; 8])
    }
    #[inline(always)]
    unsafe fn load(ptr: *const f32) -> Self {
        Portable(std::ptr::read_unaligned(ptr as *const [f32; 8]))
    }
    #[inline(always)]
    unsafe fn load_partial(ptr: *const f32, n: usize) -> Self {
        let mut out = [0.0; 8];
        for (lane, out) in out.iter_mut().enumerate().take(n) {
            *out = *ptr.add(lane);
        }
        Portable(out)
    }
    #[inline(always)]
    unsafe fn store(self, ptr: *mut f32) {
        std::ptr::write_unaligned(ptr as *mut [f32; 8], self.0)
    }
    #[inline(always)]
    unsafe fn store_partial(self, ptr: *mut f32, n: usize) {
        for lane in 0..n.min(8) {
            *ptr.add(lane) = self.0[lane];
        }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, acc: Self) -> Self {
        let product = self.map2(b, |x, y| x * y);
        product.map2(acc, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self.map2(b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        self.map2(b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        self.map2(b, f32::max)
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        self.map2(b, f32::min)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::F32Vector;
    use std::arch::x86_64::*;

    /// 8 fp32 lanes in a `ymm` register; requires AVX2 + FMA.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256);

    impl Avx2 {
        /// Lane `i` of the mask is all-ones when `i < n`, as `vmaskmovps` wants.
        #[inline(always)]
        unsafe fn first_lanes(n: usize) -> __m256i {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(n as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }

    impl F32Vector for Avx2 {
        const LANES: usize = 8;

        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx2(_mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            Avx2(_mm256_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(ptr: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(ptr))
        }
        #[inline(always)]
        unsafe fn load_partial(ptr: *const f32, n: usize) -> Self {
            Avx2(_mm256_maskload_ps(ptr, Self::first_lanes(n)))
        }
        #[inline(always)]
        unsafe fn store(self, ptr: *mut f32) {
            _mm256_storeu_ps(ptr, self.0)
        }
        #[inline(always)]
        unsafe fn store_partial(self, ptr: *mut f32, n: usize) {
            _mm256_maskstore_ps(ptr, Self::first_lanes(n), self.0)
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, acc: Self) -> Self {
            Avx2(_mm256_fmadd_ps(self.0, b.0, acc.0))
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            Avx2(_mm256_add_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            Avx2(_mm256_mul_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            Avx2(_mm256_max_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            Avx2(_mm256_min_ps(self.0, b.0))
        }
    }

    /// 16 fp32 lanes in a `zmm` register; requires AVX-512F.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    impl Avx512 {
        #[inline(always)]
        fn first_lanes(n: usize) -> __mmask16 {
            ((1u32 << n.min(16)) - 1) as __mmask16
        }
    }

    impl F32Vector for Avx512 {
        const LANES: usize = 16;

        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            Avx512(_mm512_set1_ps(x))
        }
        #[inline(always)]
        unsafe fn load(ptr: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(ptr))
        }
        #[inline(always)]
        unsafe fn load_partial(ptr: *const f32, n: usize) -> Self {
            Avx512(_mm512_maskz_loadu_ps(Self::first_lanes(n), ptr))
        }
        #[inline(always)]
        unsafe fn store(self, ptr: *mut f32) {
            _mm512_storeu_ps(ptr, self.0)
        }
        #[inline(always)]
        unsafe fn store_partial(self, ptr: *mut f32, n: usize) {
            _mm512_mask_storeu_ps(ptr, Self::first_lanes(n), self.0)
        }
        #[inline(always)]
        unsafe fn mul_add(self, b: Self, acc: Self) -> Self {
            Avx512(_mm512_fmadd_ps(self.0, b.0, acc.0))
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            Avx512(_mm512_add_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            Avx512(_mm512_mul_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            Avx512(_mm512_max_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            Avx512(_mm512_min_ps(self.0, b.0))
        }
    }
}
