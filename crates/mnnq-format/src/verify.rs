//! Bounds checked before planus turns a buffer into owned types (filled in by the structural
//! pre-check; see `Limits`).

/// Limits applied to untrusted buffers before they are decoded into owned types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum nesting of tables (MNN's verifier uses 64).
    pub max_depth: usize,
    /// Maximum number of tables visited (MNN's verifier uses 1,000,000).
    pub max_tables: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_tables: 1_000_000,
        }
    }
}

/// Placeholder until the structural pre-check lands.
pub(crate) fn check(_bytes: &[u8], _limits: Limits) -> Result<(), String> {
    Ok(())
}
