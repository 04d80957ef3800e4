//! Retrying what is transient: [`Backoff`] decides how long one request waits before
//! its next attempt — the server's `Retry-After` when given, otherwise exponential
//! backoff with full jitter — and [`RetryOptions`] how often and until when. The request
//! budget is `budget`'s.

use std::time::{Duration, Instant, SystemTime};

use crate::ids;
use crate::shutdown::Stop;

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
    /// The same backoff `scale` times as long (tests shrink backoffs rather than
    /// sleep through them).
    pub fn scaled(&self, scale: f64) -> Backoff {
        Backoff {
            base: self.base.mul_f64(scale),
            cap: self.cap.mul_f64(scale),
        }
    }

    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.cap);
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(ids::random_u64() % (millis + 1))
    }
}

/// The longest wait taken from a server: a longer `Retry-After` is read as this (the
/// run's deadline ends the wait long before), so no arithmetic on it can overflow.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// A `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110), at most
/// [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    // Whole seconds per RFC 9110, but Graph's throttling guidance shows a fraction
    // (`Retry-After: 2.128`): read decimal seconds too rather than fall back to our
    // own, shorter backoff and come back before Graph said to.
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else if let Some(seconds) = parse_decimal_seconds(value) {
        Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64()))
    } else {
        parse_http_date(value)?
            .duration_since(now)
            .unwrap_or_default()
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `2.128`: digits, one dot, digits — not `inf`, `NaN`, `-1` or `1e3`, which
/// `f64::from_str` would take.
fn parse_decimal_seconds(value: &str) -> Option<f64> {
    let (whole, fraction) = value.split_once('.')?;
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || fraction.is_empty() || !digits(whole) || !digits(fraction) {
        return None;
    }
    value
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite())
}

/// An HTTP-date in the IMF-fixdate form servers send (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let date = time::PrimitiveDateTime::parse(value.trim(), format)
        .ok()?
        .assume_utc();
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(
        u64::try_from(date.unix_timestamp()).ok()?,
    ))
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
        assert_eq!(
            parse_retry_after("2.128", now),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(
            parse_retry_after(" 0.75 ", now),
            Some(Duration::from_millis(750))
        );
        for junk in [
            "-1", "-0.5", "inf", "NaN", "1e3", ".5", "5.", "1.2.3", "1,5",
        ] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk}");
        }
        assert_eq!(
            parse_retry_after("99999999999999999999999999.5", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("9300000000000000000", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
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
}
