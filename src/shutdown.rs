//! Orderly stop on SIGTERM and SIGINT: the first signal asks the run to start no new
//! request, to write the pages it has already fetched and to exit 143/130; a second
//! signal exits at once.
//!
//! signal-hook owns the signal handler (async-signal-safe code we do not want to write by
//! hand); everything else happens on an ordinary thread.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::exit;

/// A stop request shared by every thread of the run; cheap to clone.
#[derive(Clone, Default)]
pub struct Stop(Arc<StopState>);

#[derive(Default)]
struct StopState {
    /// The exit code the stop asks for; 0 while running.
    code: AtomicU8,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Stop {
    /// Asks everything to stop; the first request's exit code wins.
    pub fn request(&self, code: u8) {
        let _ = self
            .0
            .code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        let _guard = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.0.wake.notify_all();
    }

    /// The exit code of the stop asked for, if any.
    pub fn requested(&self) -> Option<u8> {
        match self.0.code.load(Ordering::SeqCst) {
            0 => None,
            code => Some(code),
        }
    }

    /// Sleeps for `duration` unless a stop comes first. Returns false if it did.
    pub fn sleep(&self, duration: Duration) -> bool {
        let end = Instant::now() + duration;
        let mut guard = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.requested().is_some() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            guard = self
                .0
                .wake
                .wait_timeout(guard, end - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Turns the first SIGTERM/SIGINT into a stop request followed by `on_stop` (which
/// aborts requests in flight); a second signal exits the process at once.
pub fn watch_signals(stop: Stop, on_stop: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let (name, code) = match signal {
                    SIGINT => ("SIGINT", exit::SIGINT),
                    _ => ("SIGTERM", exit::SIGTERM),
                };
                if stop.requested().is_some() {
                    log::error!("{name} again: exiting at once");
                    std::process::exit(code.into());
                }
                log::warn!(
                    "{name}: starting no new requests, writing what was fetched, then exiting"
                );
                stop.request(code);
                on_stop();
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_ends_a_sleep_and_keeps_its_first_code() {
        let stop = Stop::default();
        assert!(stop.sleep(Duration::from_millis(1)));
        let sleeper = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.sleep(Duration::from_secs(600)))
        };
        stop.request(exit::SIGTERM);
        stop.request(exit::SIGINT);
        assert!(!sleeper.join().unwrap());
        assert_eq!(stop.requested(), Some(exit::SIGTERM));
    }
}
