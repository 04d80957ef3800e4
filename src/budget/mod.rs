//! Graph's request budget: one [`RequestGate`] per throttling bucket the sources use
//! ([`gates`]), and — with the redis backend — the budget shared through Redis: every
//! process of one app and tenant (a cron run, a backfill beside it, `--check`, runs on
//! other hosts) claims each request's place in one sliding window kept in Redis, so
//! together they stay within the limit, and a 429 any of them gets pauses them all.
//!
//! The window is a sorted set of claims scored by when each request was answered (in
//! flight: the latest it can be, `http_timeout` from when it was sent). Times are
//! Redis's (`TIME`), so hosts with different clocks agree. Every sharer declares its
//! limit, and every declared limit is obeyed: a process set looser than another says
//! so at WARN. Keys: `msgx:budget:{<tenant>:<client_id>:<bucket>}`, `…:pause` and
//! `…:limits` (the braces literal: a Redis Cluster hash tag, one slot) — one window
//! per bucket; identity protection's limit counts every app of the tenant, so its keys
//! are `msgx:budget:{<tenant>:identity_protection}`. Each expires shortly after its
//! last use. What cannot be real — a claim later than any request can be answered, a
//! pause without expiry or longer than any Retry-After, a key of the wrong type — is
//! junk: removed, with a WARN, never a reason to stop.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::Error;
use crate::redis_client::{RedisClient, RedisConnection, RedisSettings, connect, open_client};
use crate::retry::MAX_RETRY_AFTER;
use crate::shutdown::Stop;
use crate::sources::Bucket;

mod gate;
pub use gate::{NoTurn, RateLimit, RequestGate, SharedBudget, SharedClaim, Turn};

const CLAIM_SCRIPT: &str = include_str!("claim.lua");
const ANSWERED_SCRIPT: &str = include_str!("answered.lua");
const PAUSE_SCRIPT: &str = include_str!("pause.lua");

/// What the budget needs of the options: each bucket's limits, the lanes that spend
/// them, and where the budget is shared with other processes.
#[derive(Debug, Clone)]
pub struct BudgetSettings {
    /// Each bucket's limit per tenant and application (`rate_limits`, `rate_limit`, or
    /// Graph's documented one); a bucket not named is not paced.
    pub tenant_limits: BTreeMap<Bucket, (u32, Duration)>,
    /// Each bucket's limit per application across tenants (`app_rate_limit`).
    pub app_limits: BTreeMap<Bucket, (u32, Duration)>,
    /// Every lane's tenant and bucket: a gate each.
    pub lanes: Vec<(Option<String>, Bucket)>,
    /// Seconds are read at depths beyond the second read (`rescan`).
    pub deep_reads: bool,
    /// Rate-limit windows pass this many times faster (1; tests).
    pub speedup: u32,
    /// The budget is shared in Redis with other processes (the Redis backend).
    pub shared: Option<SharedSettings>,
}

/// Where and as whom a budget is shared.
#[derive(Debug, Clone)]
pub struct SharedSettings {
    pub redis: RedisSettings,
    /// The application, as Graph counts its app-wide budget.
    pub app_id: String,
    /// The tenant of requests without a lane tenant (the credential's, or `tenant`;
    /// `-` unknown).
    pub own_tenant: String,
    pub http_timeout: Duration,
}

impl BudgetSettings {
    fn limit_of(&self, bucket: Bucket) -> Option<(u32, Duration)> {
        self.tenant_limits.get(&bucket).copied()
    }

    fn app_limit_of(&self, bucket: Bucket) -> Option<(u32, Duration)> {
        self.app_limits.get(&bucket).copied()
    }
}

/// Whose budget a request spends: a tenant (None: the credential's) and a bucket.
pub type BudgetOf = (Option<String>, Bucket);

/// Requests per second the budgets of a run's lanes (each a tenant and bucket) allow
/// together: each tenant's bucket's rate, summed over tenants and bounded by the app's
/// across tenants, summed over buckets. None when a lane is not paced (its requests
/// are limited only by the fetchers).
pub fn request_rate<'a>(
    settings: &BudgetSettings,
    lanes: impl Iterator<Item = (Option<&'a str>, Bucket)>,
) -> Option<f64> {
    let rate = |(requests, per): (u32, Duration)| f64::from(requests) / per.as_secs_f64().max(1e-3);
    let owners: std::collections::BTreeSet<(Option<&str>, Bucket)> = lanes.collect();
    let mut buckets: BTreeMap<Bucket, f64> = BTreeMap::new();
    for (_, bucket) in owners {
        *buckets.entry(bucket).or_default() += rate(settings.limit_of(bucket)?);
    }
    Some(
        buckets
            .into_iter()
            .map(|(bucket, tenants)| match settings.app_limit_of(bucket) {
                Some(app) => tenants.min(rate(app)),
                None => tenants,
            })
            .sum(),
    )
}

/// What each tenant's paced bucket may spend in a run before deeper reads wait for a
/// later one: the bucket's rate times the seconds of new data the run reads for the
/// first time (the most of its lanes', given with each lane's budget), so that deeper
/// reads only use what the first two reads leave of a minute's budget.
pub fn deep_allowance(
    settings: &BudgetSettings,
    lanes: impl Iterator<Item = (BudgetOf, u64)>,
) -> BTreeMap<BudgetOf, u64> {
    let mut allowance = BTreeMap::new();
    if !settings.deep_reads {
        return allowance;
    }
    for ((tenant, bucket), new_seconds) in lanes {
        let Some((requests, per)) = settings.limit_of(bucket) else {
            continue;
        };
        let earned = (f64::from(requests) * new_seconds as f64 / per.as_secs_f64()).floor() as u64;
        let entry = allowance.entry((tenant, bucket)).or_insert(0);
        *entry = (*entry).max(earned);
    }
    allowance
}

/// The request gates of a run: one per tenant and bucket its sources use (Graph's
/// limit per app and tenant), and for the reports bucket one more across every tenant
/// of the application (`app_rate_limit`, Graph's 122 per 10 s per app). With the redis
/// backend each window is shared with every other process of the same app and tenant
/// — or, across tenants, of the same app — (runs and `--check` alike); other backends
/// pace this process alone.
pub struct Gates {
    by_tenant: BTreeMap<(Option<String>, Bucket), Arc<RequestGate>>,
    app: BTreeMap<Bucket, Arc<RequestGate>>,
}

impl Gates {
    pub fn new(settings: &BudgetSettings, stop: &Stop) -> Result<Gates, Error> {
        let mut gates = Gates {
            by_tenant: BTreeMap::new(),
            app: BTreeMap::new(),
        };
        let paced = |limit: Option<(u32, Duration)>| {
            limit.map(|(requests, per)| RateLimit {
                requests,
                per: per / settings.speedup,
            })
        };
        // Paced by `limit` (when there is one), shared through Redis with the redis
        // backend.
        let gate = |limit: Option<RateLimit>, window: Window, bucket: Bucket| {
            let gate = RequestGate::new(limit, stop.clone());
            let gate = match (limit, &settings.shared) {
                (Some(limit), Some(shared)) => {
                    gate.with_shared(Box::new(RedisBudget::new(shared, window, bucket, limit)?))
                }
                _ => gate,
            };
            Ok::<_, Error>(Arc::new(gate))
        };
        for (tenant, bucket) in &settings.lanes {
            let bucket = *bucket;
            let key = (tenant.clone(), bucket);
            if let std::collections::btree_map::Entry::Vacant(entry) = gates.by_tenant.entry(key) {
                let window = Window::Tenant(tenant.as_deref());
                entry.insert(gate(paced(settings.limit_of(bucket)), window, bucket)?);
            }
            let app_limit = paced(settings.app_limit_of(bucket));
            if app_limit.is_some() && !gates.app.contains_key(&bucket) {
                gates
                    .app
                    .insert(bucket, gate(app_limit, Window::App, bucket)?);
            }
        }
        Ok(gates)
    }

    /// The gates a request of `tenant`'s (None: the credential's) `bucket` passes, in
    /// the order it claims them: its tenant's window, then the app's across tenants.
    pub fn of(&self, tenant: Option<&str>, bucket: Bucket) -> Vec<Arc<RequestGate>> {
        let key = (tenant.map(str::to_string), bucket);
        let tenant = self.by_tenant.get(&key).cloned().unwrap_or_else(|| {
            // Every source's gate was made in `new`; a bucket without one is unpaced.
            Arc::new(RequestGate::new(None, Stop::default()))
        });
        std::iter::once(tenant)
            .chain(self.app.get(&bucket).cloned())
            .collect()
    }

    /// Wakes every waiting stream (a stop request).
    pub fn wake_all(&self) {
        for gate in self.by_tenant.values().chain(self.app.values()) {
            gate.wake_all();
        }
    }
}

/// Which window a shared budget keeps.
#[derive(Clone, Copy)]
pub enum Window<'a> {
    /// One tenant's (None: the credential's).
    Tenant(Option<&'a str>),
    /// The application's, across every tenant.
    App,
}

pub struct RedisBudget {
    client: RedisClient,
    /// One connection, opened when first needed and again after an error.
    connection: Mutex<Option<RedisConnection>>,
    claims_key: String,
    pause_key: String,
    limits_key: String,
    limit: RateLimit,
    http_timeout: Duration,
    /// Said once: a sharer declared a tighter limit; junk was removed.
    warned_tighter: AtomicBool,
    warned_junk: AtomicBool,
    claim: redis::Script,
    answered: redis::Script,
    pause: redis::Script,
}

/// The claim script's answer.
type ClaimReply = (u64, String, Option<String>, u32, u64, u64, u64);

/// The loosest limit `rate_limit` accepts (N/SECONDS, each at most 100,000): a
/// declaration beyond it was not made by msgx-once.
const MAX_DECLARED_REQUESTS: u64 = 100_000;
const MAX_DECLARED_PER_MS: u64 = 100_000 * 1000;

impl RedisBudget {
    pub fn new(
        shared: &SharedSettings,
        window: Window,
        bucket: Bucket,
        limit: RateLimit,
    ) -> Result<Self, Error> {
        // The braces are a Redis Cluster hash tag: the claims, the pause and the
        // limits, which one script touches, share a slot. Each window has a slot of
        // its own, and a request claims its places one script at a time.
        let prefix = match window {
            // `*` is no tenant's name (tenants are letters, digits, '-' and '.'): the
            // window of every tenant, under the prefix the README's ACL grants.
            Window::App => format!("msgx:budget:{{*:{}:{bucket}}}", shared.app_id),
            Window::Tenant(tenant) => {
                let (tenant, client_id) = (tenant.unwrap_or(&shared.own_tenant), &shared.app_id);
                match bucket.per_tenant() {
                    true => format!("msgx:budget:{{{tenant}:{bucket}}}"),
                    false => format!("msgx:budget:{{{tenant}:{client_id}:{bucket}}}"),
                }
            }
        };
        Ok(RedisBudget {
            client: open_client(&shared.redis)?,
            connection: Mutex::new(None),
            pause_key: format!("{prefix}:pause"),
            limits_key: format!("{prefix}:limits"),
            claims_key: prefix,
            limit,
            http_timeout: shared.http_timeout,
            warned_tighter: AtomicBool::new(false),
            warned_junk: AtomicBool::new(false),
            claim: redis::Script::new(CLAIM_SCRIPT),
            answered: redis::Script::new(ANSWERED_SCRIPT),
            pause: redis::Script::new(PAUSE_SCRIPT),
        })
    }

    /// Runs `command` on the budget's connection; a failed one is dropped.
    fn with_connection<T>(
        &self,
        command: impl FnOnce(&mut dyn redis::ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let mut slot = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        let connection = match slot.as_mut() {
            Some(connection) => connection,
            None => slot.insert(connect(&self.client).map_err(|e| e.to_string())?),
        };
        command(&mut **connection).map_err(|e| {
            *slot = None;
            e.to_string()
        })
    }

    /// Says once what the claim script found: a tighter limit declared by a sharer,
    /// junk removed (`junk_limits` of it limit declarations).
    fn warn_once(&self, tight: RateLimit, junk: u64, junk_limits: u64) {
        let shown = |l: RateLimit| format!("{}/{}", l.requests, l.per.as_secs_f64());
        if tight != self.limit && !self.warned_tighter.swap(true, Ordering::Relaxed) {
            log::warn!(
                "rate_limit {} is looser than {}, which another process sharing {} declared: \
                 obeying {}",
                shown(self.limit),
                shown(tight),
                self.claims_key,
                shown(tight)
            );
        }
        if junk > 0 && !self.warned_junk.swap(true, Ordering::Relaxed) {
            let limits = match junk_limits {
                0 => String::new(),
                n => format!(
                    "; {n} of them in {}: limits no rate_limit can declare",
                    self.limits_key
                ),
            };
            log::warn!(
                "the shared request budget {} held {junk} entries no msgx-once run can have \
                 written (claims beyond any request's timeout, a pause without expiry or \
                 longer than a day, a key of the wrong type, a limit beyond any rate_limit)\
                 {limits}: removed",
                self.claims_key
            );
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// Who set a pause, as the pause key holds it.
fn setter(wait: Duration) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!(
        "a 429 (Retry-After {:.0} s) answered to msgx-once pid {} on {host} at {}",
        wait.as_secs_f64(),
        std::process::id(),
        crate::window::utc_second(time::OffsetDateTime::now_utc())
    )
}

impl SharedBudget for RedisBudget {
    fn claim(&self, id: &str, reserve: u32) -> Result<SharedClaim, String> {
        let (wait, why, by, tight_n, tight_per, junk, junk_limits): ClaimReply = self
            .with_connection(|c| {
                self.claim
                    .key(&self.claims_key)
                    .key(&self.pause_key)
                    .key(&self.limits_key)
                    .arg(id)
                    .arg(self.limit.requests)
                    .arg(millis(self.limit.per))
                    .arg(millis(self.http_timeout))
                    .arg(millis(MAX_RETRY_AFTER))
                    .arg(reserve)
                    .arg(MAX_DECLARED_REQUESTS)
                    .arg(MAX_DECLARED_PER_MS)
                    .invoke(c)
            })?;
        let tight = RateLimit {
            requests: tight_n,
            per: Duration::from_millis(tight_per),
        };
        self.warn_once(tight, junk, junk_limits);
        let wait = Duration::from_millis(wait);
        Ok(match why.as_str() {
            "granted" => SharedClaim::Granted,
            "paused" => SharedClaim::Paused {
                wait,
                key: self.pause_key.clone(),
                by: by
                    .filter(|b| !b.is_empty())
                    .unwrap_or_else(|| "something other than msgx-once".into()),
            },
            _ => SharedClaim::Full(wait),
        })
    }

    fn answered(&self, id: &str) -> Result<(), String> {
        self.with_connection(|c| self.answered.key(&self.claims_key).arg(id).invoke(c))
    }

    fn pause(&self, wait: Duration) -> Result<(), String> {
        self.with_connection(|c| {
            self.pause
                .key(&self.pause_key)
                .arg(millis(wait).max(1))
                .arg(setter(wait))
                .invoke(c)
        })
    }
}
