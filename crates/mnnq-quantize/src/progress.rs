//! Progress reporting for the calibration passes.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives progress of one pass. `advance(done)` is called from worker threads.
pub trait Progress: Sync {
    fn advance(&self, done: usize);
}

/// No progress output.
pub struct Silent;

impl Progress for Silent {
    fn advance(&self, _done: usize) {}
}

/// An indicatif bar on stderr, hidden when stderr is not a terminal.
pub struct Bar(pub ProgressBar);

impl Bar {
    pub fn new(label: &str, total: usize) -> Bar {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} images ({elapsed})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        Bar(bar)
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn advance(&self, done: usize) {
        self.0.set_position(done as u64);
    }
}
