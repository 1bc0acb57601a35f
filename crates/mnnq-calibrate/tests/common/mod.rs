//! Helpers shared by the integration tests: a seeded generator (no extra dependency) and the
//! fixtures location.
#![allow(dead_code)]

use std::path::PathBuf;

/// xorshift64* with Box-Muller normals: deterministic test data.
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// Laplace(0, 1): heavy-ish tails, like many conv outputs.
    pub fn laplace(&mut self) -> f64 {
        let u = self.uniform() - 0.5;
        -u.signum() * (1.0 - 2.0 * u.abs()).max(1e-300).ln()
    }
}

/// The shared fixtures folder, or `None` (after a loud SKIPPED line) when it is missing.
pub fn fixtures(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("MNNQ_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    };
    if dir.join("mnn_int8").is_dir() {
        Some(dir)
    } else {
        println!(
            "SKIPPED: {test}: fixtures not found at {} (set MNNQ_FIXTURES)",
            dir.display()
        );
        None
    }
}
