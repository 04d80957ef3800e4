//! Injected failures of the Graph endpoints: every K-th request gets a 429, a 503, a
//! dropped connection or a garbled page, and `--throttle N/W` (reports) and its
//! siblings for the other buckets enforce a true sliding window of N requests per W
//! seconds the way Graph's budgets do — per tenant, as Graph counts them per app and
//! tenant, and `--throttle-app N/W` across every tenant of the app.

use std::collections::{HashMap, VecDeque};
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
    /// Each window's admitted requests: one per tenant (by index), or one in all.
    admitted: Mutex<HashMap<usize, VecDeque<Instant>>>,
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

    /// Admits the request to window `window`, or says how many whole seconds until it
    /// has room.
    fn admit(&self, window: usize, now: Instant) -> Result<(), u64> {
        let mut windows = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        let admitted = windows.entry(window).or_default();
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
    /// The reports bucket's (`--throttle`), per tenant.
    pub throttle: Option<Throttle>,
    /// The reports bucket's across every tenant (`--throttle-app`).
    pub throttle_app: Option<Throttle>,
    pub throttle_identity_protection: Option<Throttle>,
    pub throttle_security: Option<Throttle>,
    pub throttle_intune: Option<Throttle>,
    pub requests: AtomicU64,
    /// Until when the last 429's Retry-After asked each tenant's clients to wait.
    pub quiet_until: Mutex<HashMap<usize, Instant>>,
}

/// The quiet period of a 429 for the app's budget across tenants.
const APP_WINDOW: usize = usize::MAX;

/// Which budget a 429 was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Tenant,
    App,
    /// An injected one (`--every-429`).
    Injected,
}

impl Faults {
    /// A 429 was sent to `tenant` with `retry_after`, for the budget `over`: its
    /// requests before it has passed come early — every tenant's, when the budget was
    /// the app's across tenants.
    pub fn throttled(&self, tenant: usize, over: Option<Over>, retry_after: Option<&str>) {
        let Some(seconds) = retry_after.and_then(|v| v.parse::<f64>().ok()) else {
            return;
        };
        let until = Instant::now() + Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
        let mut quiet = self.quiet_until.lock().unwrap_or_else(|p| p.into_inner());
        let window = match over {
            Some(Over::App) => APP_WINDOW,
            _ => tenant,
        };
        quiet.insert(window, until);
    }

    /// Whether a request of `tenant` now comes before the last 429's Retry-After to it
    /// has passed.
    pub fn early(&self, tenant: usize) -> bool {
        let quiet = self.quiet_until.lock().unwrap_or_else(|p| p.into_inner());
        quiet
            .get(&tenant)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// The fault for the next request of `tenant` (an index) to a resource of
    /// `bucket`, if any, and which budget a 429 is for. Identity protection's 429s carry
    /// no Retry-After, as Graph documents.
    pub fn next(&self, bucket: Bucket, tenant: usize) -> Option<(Fault, Over)> {
        let throttle = match bucket {
            Bucket::Reports => &self.throttle,
            Bucket::IdentityProtection => &self.throttle_identity_protection,
            Bucket::Security => &self.throttle_security,
            Bucket::IntuneAuditing => &self.throttle_intune,
        };
        let app = match bucket {
            Bucket::Reports => self.throttle_app.as_ref(),
            _ => None,
        };
        let now = Instant::now();
        let refused = [
            (throttle.as_ref(), tenant, Over::Tenant),
            (app, 0, Over::App),
        ]
        .into_iter()
        .find_map(|(throttle, window, over)| {
            throttle?.admit(window, now).err().map(|wait| (wait, over))
        });
        if let Some((wait, over)) = refused {
            let retry_after = (bucket != Bucket::IdentityProtection).then(|| wait.to_string());
            return Some((Fault::TooManyRequests(retry_after), over));
        }
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let hit = |k: u64| k > 0 && n.is_multiple_of(k);
        let fault = if hit(self.every_429) {
            Fault::TooManyRequests(Some(self.retry_after.clone()))
        } else if hit(self.every_503) {
            Fault::ServiceUnavailable
        } else if hit(self.every_reset) {
            // Alternate between the two ways a connection can die.
            if (n / self.every_reset) % 2 == 1 {
                Fault::Reset
            } else {
                Fault::CutShort
            }
        } else if hit(self.garbage) {
            Fault::Garbage
        } else {
            return None;
        };
        Some((fault, Over::Injected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_is_a_sliding_window() {
        let throttle = Throttle::parse("2/10").unwrap();
        let t0 = Instant::now();
        assert_eq!(throttle.admit(0, t0), Ok(()));
        assert_eq!(throttle.admit(0, t0 + Duration::from_secs(4)), Ok(()));
        assert_eq!(throttle.admit(0, t0 + Duration::from_millis(9500)), Err(1));
        // Another tenant's window is its own.
        assert_eq!(throttle.admit(1, t0 + Duration::from_millis(9500)), Ok(()));
        assert_eq!(throttle.admit(0, t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(throttle.admit(0, t0 + Duration::from_secs(11)), Err(3));
        assert!(Throttle::parse("0/10").is_err());
        assert!(Throttle::parse("5").is_err());
    }
}
