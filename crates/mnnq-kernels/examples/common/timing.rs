//! Shared by the examples: deterministic test data and best-of-N CPU-time measurement.

use std::time::Instant;

/// Values in [-1, 1] from a xorshift generator.
pub fn data(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Nanoseconds this thread has been on a CPU (`CLOCK_THREAD_CPUTIME_ID`), so time spent
/// descheduled by other processes on the shared machine is not counted; wall time elsewhere.
#[cfg(target_os = "linux")]
pub fn cpu_nanos(_origin: Instant) -> u64 {
    #[repr(C)]
    struct Timespec {
        seconds: i64,
        nanos: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut time = Timespec {
        seconds: 0,
        nanos: 0,
    };
    // SAFETY: libc's clock_gettime writes one timespec (two 64-bit fields on x86-64 Linux).
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) };
    time.seconds as u64 * 1_000_000_000 + time.nanos as u64
}

#[cfg(not(target_os = "linux"))]
pub fn cpu_nanos(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// Best seconds per call of `f`, over `repeats` batches sized to take about 2 ms each.
pub fn best_seconds(repeats: usize, mut f: impl FnMut()) -> f64 {
    let origin = Instant::now();
    let start = cpu_nanos(origin);
    f();
    let once = ((cpu_nanos(origin) - start) as f64 * 1e-9).max(1e-7);
    let batch = ((0.002 / once) as usize).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let start = cpu_nanos(origin);
        for _ in 0..batch {
            f();
        }
        let seconds = (cpu_nanos(origin) - start) as f64 * 1e-9;
        best = best.min(seconds / batch as f64);
    }
    best
}
