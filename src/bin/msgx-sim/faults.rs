//! Injected failures of the Graph endpoints: every K-th request gets a 429, a 503, a
//! dropped connection or a garbled page, and `--throttle N/W` (reports) and its
//! siblings for the other buckets enforce a true sliding window of N requests per W
//! seconds the way Graph's budgets do.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::resources::Bucket;

/// What happens to one sign-ins request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with this Retry-After, seconds as sent (identity protection sends none).
    TooManyRequests(Option<String>),
    ServiceUnavailable,
    /// The connection closes before any response.
    Reset,
    /// The connection closes halfway through the body.
    CutShort,
    /// 200 with a body that is not the expected JSON.
    Garbage,
}

pub struct Throttle {
    pub requests: usize,
    pub per: Duration,
    admitted: Mutex<VecDeque<Instant>>,
}

impl Throttle {
    /// Parses `N/W`: N requests per W seconds.
    pub fn parse(value: &str) -> Result<Self, String> {
        let parsed = value
            .split_once('/')
            .and_then(|(n, w)| Some((n.parse().ok()?, w.parse().ok()?)));
        match parsed {
            Some((requests, seconds)) if requests > 0 && seconds > 0 => Ok(Throttle {
                requests,
                per: Duration::from_secs(seconds),
                admitted: Mutex::default(),
            }),
            _ => Err(format!(
                "--throttle {value}: expected N/W with whole numbers N, W > 0"
            )),
        }
    }

    /// Admits the request, or says how many whole seconds until the window has room.
    fn admit(&self, now: Instant) -> Result<(), u64> {
        let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        while admitted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.per)
        {
            admitted.pop_front();
        }
        match admitted.front() {
            Some(oldest) if admitted.len() >= self.requests => {
                let wait = (*oldest + self.per).duration_since(now);
                Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
            _ => {
                admitted.push_back(now);
                Ok(())
            }
        }
    }
}

pub struct Faults {
    pub every_429: u64,
    /// The Retry-After of those 429s, as sent (`1`, `2.128`).
    pub retry_after: String,
    pub every_503: u64,
    pub every_reset: u64,
    pub garbage: u64,
    /// The reports bucket's (`--throttle`).
    pub throttle: Option<Throttle>,
    pub throttle_identity_protection: Option<Throttle>,
    pub throttle_security: Option<Throttle>,
    pub requests: AtomicU64,
    /// Until when the last 429's Retry-After asked clients to wait.
    pub quiet_until: Mutex<Option<Instant>>,
}

impl Faults {
    /// A 429 was sent with `retry_after`: requests before it has passed come early.
    pub fn throttled(&self, retry_after: Option<&str>) {
        let Some(seconds) = retry_after.and_then(|v| v.parse::<f64>().ok()) else {
            return;
        };
        let until = Instant::now() + Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
        *self.quiet_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// Whether a request now comes before the last 429's Retry-After has passed.
    pub fn early(&self) -> bool {
        let quiet = *self.quiet_until.lock().unwrap_or_else(|p| p.into_inner());
        quiet.is_some_and(|until| Instant::now() < until)
    }

    /// The fault for the next request of a resource of `bucket`, if any. Identity
    /// protection's 429s carry no Retry-After, as Graph documents.
    pub fn next(&self, bucket: Bucket) -> Option<Fault> {
        let throttle = match bucket {
            Bucket::Reports => &self.throttle,
            Bucket::IdentityProtection => &self.throttle_identity_protection,
            Bucket::Security => &self.throttle_security,
        };
        if let Some(throttle) = throttle
            && let Err(wait) = throttle.admit(Instant::now())
        {
            let retry_after = (bucket != Bucket::IdentityProtection).then(|| wait.to_string());
            return Some(Fault::TooManyRequests(retry_after));
        }
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let hit = |k: u64| k > 0 && n.is_multiple_of(k);
        if hit(self.every_429) {
            Some(Fault::TooManyRequests(Some(self.retry_after.clone())))
        } else if hit(self.every_503) {
            Some(Fault::ServiceUnavailable)
        } else if hit(self.every_reset) {
            // Alternate between the two ways a connection can die.
            Some(if (n / self.every_reset) % 2 == 1 {
                Fault::Reset
            } else {
                Fault::CutShort
            })
        } else if hit(self.garbage) {
            Some(Fault::Garbage)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_is_a_sliding_window() {
        let throttle = Throttle::parse("2/10").unwrap();
        let t0 = Instant::now();
        assert_eq!(throttle.admit(t0), Ok(()));
        assert_eq!(throttle.admit(t0 + Duration::from_secs(4)), Ok(()));
        assert_eq!(throttle.admit(t0 + Duration::from_millis(9500)), Err(1));
        assert_eq!(throttle.admit(t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(throttle.admit(t0 + Duration::from_secs(11)), Err(3));
        assert!(Throttle::parse("0/10").is_err());
        assert!(Throttle::parse("5").is_err());
    }
}
