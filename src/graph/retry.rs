//! Staying inside Graph's request budget and retrying what is transient.
//!
//! All streams share one [`RequestGate`]: it spaces requests to `rate_limit`, and a 429
//! pauses every stream until its `Retry-After` has passed (Graph counts the budget per
//! app and tenant, not per connection). [`Backoff`] decides how long one request waits
//! before its next attempt: the server's `Retry-After` when given, otherwise
//! exponential backoff with full jitter.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::ids;
use crate::shutdown::Stop;

/// `n` requests per `per`, e.g. Graph's 5 per 10 s for sign-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

impl RateLimit {
    /// The window the gate keeps, 2 % longer than the server's: the server counts a
    /// request when it arrives, and arrivals jitter by a few milliseconds, so pacing to
    /// the exact window would now and then land one request inside it (and earn a 429).
    fn guarded_span(&self) -> Duration {
        self.per + self.per / 50
    }
}

#[derive(Default)]
struct GateState {
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

pub struct RequestGate {
    limit: Option<RateLimit>,
    stop: Stop,
    state: Mutex<GateState>,
    changed: Condvar,
}

/// Why no turn was given.
#[derive(Debug, PartialEq, Eq)]
pub enum NoTurn {
    /// The run's deadline would pass before the turn came.
    Deadline,
    /// The run was asked to stop.
    Stopped,
}

impl RequestGate {
    pub fn new(limit: Option<RateLimit>, stop: Stop) -> Self {
        RequestGate {
            limit,
            stop,
            state: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    /// Blocks until a request may be sent without exceeding the rate limit or cutting
    /// into a pause, then counts it as sent.
    pub fn wait_turn(&self, deadline: Instant) -> Result<(), NoTurn> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.stop.requested().is_some() {
                return Err(NoTurn::Stopped);
            }
            let now = Instant::now();
            let ready_at = self.ready_at(&mut state, now);
            if ready_at <= now {
                state.sent.push_back(now);
                return Ok(());
            }
            if ready_at > deadline {
                return Err(NoTurn::Deadline);
            }
            state = self
                .changed
                .wait_timeout(state, ready_at - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn ready_at(&self, state: &mut GateState, now: Instant) -> Instant {
        let mut ready = state.paused_until.unwrap_or(now).max(now);
        if let Some(limit) = self.limit {
            let span = limit.guarded_span();
            while state
                .sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= span)
            {
                state.sent.pop_front();
            }
            if state.sent.len() >= limit.requests as usize
                && let Some(oldest) = state.sent.front()
            {
                ready = ready.max(*oldest + span);
            }
        }
        ready
    }

    /// Holds every stream until `until` (a 429's Retry-After).
    pub fn pause_all(&self, until: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.paused_until.is_none_or(|t| t < until) {
            state.paused_until = Some(until);
        }
        self.changed.notify_all();
    }

    /// Wakes every waiting stream, so that a stop request is seen at once.
    pub fn wake_all(&self) {
        let _state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.notify_all();
    }
}

/// How hard one request (a Graph page, a Redis write) is tried.
#[derive(Clone)]
pub struct RetryOptions {
    pub max_retries: u32,
    pub backoff: Backoff,
    /// No attempt starts after this instant: a stuck run must not overlap later cron runs.
    pub deadline: Instant,
    /// A stop request ends the waiting between attempts.
    pub stop: Stop,
}

/// Exponential backoff with full jitter: attempt `n` waits a random time up to
/// `min(cap, base * 2^n)`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.cap);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(ids::random_u64() % (millis + 1))
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let date = time::PrimitiveDateTime::parse(value, format)
        .ok()?
        .assume_utc();
    let at =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(date.unix_timestamp()).ok()?);
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
        };
        for attempt in 0..40 {
            let ceiling = Duration::from_millis((100u64 << attempt.min(20)).min(1000));
            assert!(backoff.delay(attempt) <= ceiling);
        }
    }

    #[test]
    fn gate_admits_the_limit_then_holds_until_the_window_moves() {
        let limit = RateLimit {
            requests: 3,
            per: Duration::from_millis(300),
        };
        let gate = RequestGate::new(Some(limit), Stop::default());
        let start = Instant::now();
        let far = start + Duration::from_secs(10);
        for _ in 0..4 {
            gate.wait_turn(far).unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn a_pause_holds_everyone_and_respects_the_deadline() {
        let gate = RequestGate::new(None, Stop::default());
        let now = Instant::now();
        gate.pause_all(now + Duration::from_millis(200));
        assert_eq!(
            gate.wait_turn(now + Duration::from_millis(50)),
            Err(NoTurn::Deadline)
        );
        gate.wait_turn(now + Duration::from_secs(5)).unwrap();
        assert!(now.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn a_stop_releases_a_paused_stream_without_a_turn() {
        let stop = Stop::default();
        let gate = std::sync::Arc::new(RequestGate::new(None, stop.clone()));
        gate.pause_all(Instant::now() + Duration::from_secs(600));
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.wait_turn(Instant::now() + Duration::from_secs(900)))
        };
        stop.request(crate::error::exit::SIGTERM);
        gate.wake_all();
        assert_eq!(waiter.join().unwrap(), Err(NoTurn::Stopped));
    }
}
