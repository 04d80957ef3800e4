//! How many requests are in flight: the budgets' request rate times Graph's latency,
//! as measured from the run's own answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Requests in flight beyond what the budgets' rate times Graph's latency needs: the
/// latency varies from page to page.
pub(super) const FLIGHT_HEADROOM: f64 = 1.25;

/// How many requests may be in flight: the budgets' request rate times the time a page
/// takes (measured from the run's answers so far), at least the floor (`streams`: all
/// there is before the first answer, or without a budget), at most the fetcher
/// threads. A fetcher holds a place for a frame from its first request to its last
/// page's end.
pub(super) struct Flight {
    pub(super) floor: usize,
    pub(super) most: usize,
    pub(super) rate: Option<f64>,
    pub(super) taken: Mutex<usize>,
    pub(super) freed: Condvar,
    /// The most places taken at once, for the debug log.
    pub(super) peak: AtomicUsize,
}

impl Flight {
    pub(super) fn new(floor: usize, most: usize, rate: Option<f64>) -> Self {
        Flight {
            floor: floor.clamp(1, most.max(1)),
            most: most.max(1),
            rate,
            taken: Mutex::new(0),
            freed: Condvar::new(),
            peak: AtomicUsize::new(0),
        }
    }

    /// The places there are now, Graph's latency so far being `latency`.
    pub(super) fn places(&self, latency: Option<Duration>) -> usize {
        let wanted = match (self.rate, latency) {
            // Not paced: as many as `streams` asks for.
            (None, _) | (Some(_), None) => self.floor,
            (Some(rate), Some(latency)) => {
                (rate * latency.as_secs_f64() * FLIGHT_HEADROOM).ceil() as usize
            }
        };
        wanted.clamp(self.floor, self.most)
    }

    /// Waits for a place; `latency` is asked again while waiting (answers keep coming).
    pub(super) fn enter(&self, latency: impl Fn() -> Option<Duration>) -> Place<'_> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        while *taken >= self.places(latency()) {
            taken = self
                .freed
                .wait_timeout(taken, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *taken += 1;
        self.peak.fetch_max(*taken, Ordering::Relaxed);
        Place(self)
    }
}

/// A place in flight, given back when dropped.
pub(super) struct Place<'a>(&'a Flight);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut taken = self.0.taken.lock().unwrap_or_else(|p| p.into_inner());
        *taken = taken.saturating_sub(1);
        self.0.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_flight_follow_the_budgets_rate_times_graphs_latency() {
        let secs = Duration::from_secs_f64;
        // The app's 122 / 10 s at 1.5 s a page: 12.2 × 1.5 × 1.25 → 23 in flight.
        let fleet = Flight::new(2, 64, Some(12.2));
        assert_eq!(fleet.places(None), 2, "before the first answer: streams");
        assert_eq!(fleet.places(Some(secs(1.5))), 23);
        assert_eq!(fleet.places(Some(secs(3.0))), 46);
        assert_eq!(fleet.places(Some(secs(30.0))), 64, "at most the fetchers");
        // One tenant's 5 / 10 s: fewer than streams would do; streams it is.
        let one = Flight::new(2, 64, Some(0.5));
        assert_eq!(one.places(Some(secs(1.5))), 2);
        // Not paced: streams.
        assert_eq!(Flight::new(4, 64, None).places(Some(secs(3.0))), 4);
        // A floor above the fetchers is the fetchers.
        assert_eq!(Flight::new(8, 3, Some(1.0)).places(None), 3);
    }

    #[test]
    fn a_place_is_given_back_and_waiters_see_a_higher_limit() {
        let flight = Flight::new(1, 4, Some(10.0));
        let first = flight.enter(|| None);
        let latency = Mutex::new(None);
        std::thread::scope(|scope| {
            // Only one place before any answer: the second waits …
            let second = scope.spawn(|| {
                let _place = flight.enter(|| *latency.lock().unwrap());
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(!second.is_finished(), "a second place before any answer");
            // … until answers show Graph's latency: 10/s × 0.2 s × 1.25 → 3 places.
            *latency.lock().unwrap() = Some(Duration::from_millis(200));
            second.join().unwrap();
        });
        drop(first);
        assert_eq!(*flight.taken.lock().unwrap(), 0);
        assert_eq!(flight.peak.load(Ordering::Relaxed), 2);
    }
}
