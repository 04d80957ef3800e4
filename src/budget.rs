//! Graph's request budget shared through Redis: every process of one app and tenant
//! (a cron run, a backfill beside it, runs on other hosts) claims each request's place
//! in one sliding window kept in Redis, so together they stay within `rate_limit`, and
//! a 429 any of them gets pauses them all.
//!
//! The window is a sorted set of claims scored by when each stops counting: a request
//! in flight until its answer could come at the latest (`http_timeout` later), then
//! `per` after its answer — the same rule as the in-process gate. Times are Redis's
//! (`TIME`), so hosts with different clocks agree. Keys:
//! `msgx:budget:{<tenant>:<client_id>:<bucket>}` and `…:pause` (the braces literal: a
//! Redis Cluster hash tag) — one window per bucket; identity protection's limit counts
//! every app of the tenant, so its keys are `msgx:budget:{<tenant>:identity_protection}`.

use std::sync::Mutex;
use std::time::Duration;

use crate::config::Config;
use crate::error::Error;
use crate::retry::{RateLimit, SharedBudget};
use crate::sink::redis::{connect, open_client};
use crate::sources::Bucket;

/// KEYS: claims, pause. ARGV: limit, claim id, how long a claim in flight counts (ms).
/// Returns 0 when granted, else the milliseconds to wait.
const CLAIM_SCRIPT: &str = r#"
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  return paused
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) - now)
"#;

/// KEYS: claims. ARGV: claim id, per (ms). The claim counts `per` from now.
const ANSWERED_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 0
"#;

/// KEYS: pause. ARGV: milliseconds. Never shortens a longer pause.
const PAUSE_SCRIPT: &str = r#"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
"#;

pub struct RedisBudget {
    client: crate::sink::redis::Endpoint,
    /// One connection, opened when first needed and again after an error.
    connection: Mutex<Option<crate::sink::redis::RedisConnection>>,
    claims_key: String,
    pause_key: String,
    limit: RateLimit,
    /// How long a claim in flight counts at most: the longest a request can take,
    /// plus the window.
    in_flight: Duration,
    claim: redis::Script,
    answered: redis::Script,
    pause: redis::Script,
}

impl RedisBudget {
    pub fn new(config: &Config, bucket: Bucket, limit: RateLimit) -> Result<Self, Error> {
        let (tenant, client_id) = config.budget_owner();
        // The braces are a Redis Cluster hash tag: the claims and the pause, which one
        // script touches, share a slot.
        let prefix = match bucket.per_tenant() {
            true => format!("msgx:budget:{{{tenant}:{bucket}}}"),
            false => format!("msgx:budget:{{{tenant}:{client_id}:{bucket}}}"),
        };
        Ok(RedisBudget {
            client: open_client(config)?,
            connection: Mutex::new(None),
            pause_key: format!("{prefix}:pause"),
            claims_key: prefix,
            limit,
            in_flight: config.http_timeout + limit.per,
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
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl SharedBudget for RedisBudget {
    fn claim(&self, id: &str) -> Result<Option<Duration>, String> {
        let wait: u64 = self.with_connection(|c| {
            self.claim
                .key(&self.claims_key)
                .key(&self.pause_key)
                .arg(self.limit.requests)
                .arg(id)
                .arg(millis(self.in_flight))
                .invoke(c)
        })?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }

    fn answered(&self, id: &str) -> Result<(), String> {
        self.with_connection(|c| {
            self.answered
                .key(&self.claims_key)
                .arg(id)
                .arg(millis(self.limit.per))
                .invoke(c)
        })
    }

    fn pause(&self, wait: Duration) -> Result<(), String> {
        self.with_connection(|c| {
            self.pause
                .key(&self.pause_key)
                .arg(millis(wait).max(1))
                .invoke(c)
        })
    }
}
