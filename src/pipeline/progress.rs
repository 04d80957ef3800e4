//! What a long run shows while it goes: a progress line every `progress_every`, or a
//! bar on a terminal.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::graph::BudgetSpent;

/// Where a run stands, for the progress line or bar.
#[derive(Default)]
pub(super) struct Figures {
    pub(super) done: usize,
    pub(super) frames: usize,
    pub(super) records: u64,
    /// Seconds of the window read and written, and all of them.
    pub(super) covered: f64,
    pub(super) total: f64,
    pub(super) spent: BudgetSpent,
}

impl Figures {
    pub(super) fn fraction(&self) -> f64 {
        if self.total > 0.0 {
            self.covered / self.total
        } else {
            1.0
        }
    }

    /// One progress line: frames done, records, the budget spent, the share of the
    /// window covered (by its seconds) and the time that share suggests is left.
    pub(super) fn line(&self, elapsed: Duration) -> String {
        let fraction = self.fraction();
        let eta = if fraction > 0.0 {
            format!(
                "{:.0} s",
                elapsed.as_secs_f64() * (1.0 - fraction) / fraction
            )
        } else {
            "unknown".into()
        };
        format!(
            "progress: frames {}/{} done, records {}, requests {} (throttled {}, waited {:.1} s), {:.0} % of the window, ETA {eta}",
            self.done,
            self.frames,
            self.records,
            self.spent.requests,
            self.spent.throttled,
            self.spent.waited.as_secs_f64(),
            fraction * 100.0
        )
    }

    /// The bar's message: what the line says besides the share and the ETA.
    pub(super) fn message(&self) -> String {
        format!(
            "frames {}/{}, records {}, requests {}, waited {:.1} s",
            self.done,
            self.frames,
            self.records,
            self.spent.requests,
            self.spent.waited.as_secs_f64()
        )
    }
}

/// A progress bar on the terminal (frames, records, requests, throttled time, ETA),
/// updated five times a second until the fetchers are done; then cleared, so the
/// summary stands alone.
/// `figures`: where the run stands now.
pub(super) fn show_bar(figures: impl Fn() -> Figures, finished: &Receiver<()>) {
    let total = figures().total.max(1.0) as u64;
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr_with_hz(5),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {percent:>3}% of the window, {msg}, ETA {eta}",
    ) {
        bar.set_style(style);
    }
    while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(Duration::from_millis(200)) {
        let now = figures();
        bar.set_position(now.covered as u64);
        bar.set_message(now.message());
    }
    bar.finish_and_clear();
}
