//! Where records go and how they are reached: the backend, the queue type, the output
//! file, the Redis URL (never shown with its password), the Pushgateway.

use std::fmt;

use super::credentials::read_secret_file;
use super::error::ConfigError;
use super::{Options, Values, parse};
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Log,
    File,
}

impl Backend {
    /// Records go to Redis; the state and the shared request budget live there too.
    pub fn uses_redis(self) -> bool {
        self == Backend::Redis
    }

    /// Records go to `file_path`.
    pub fn writes_file(self) -> bool {
        self == Backend::File
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    List,
    Channel,
    Stream,
}

/// A Redis URL whose password must not be shown: `Debug` and [`RedisTarget::location`]
/// give host, port and database only.
#[derive(Clone)]
pub struct RedisTarget {
    url: Secret,
    location: String,
    /// The URL holds a user or password (hidden wherever it is shown).
    credentials: bool,
    /// `redis+sentinel://`: the primary is found through these sentinels.
    sentinel: Option<SentinelTarget>,
}

/// Where a Sentinel-managed primary is found.
#[derive(Clone, Debug)]
pub struct SentinelTarget {
    /// `host:port` of each sentinel.
    pub sentinels: Vec<String>,
    /// The monitored primary's name.
    pub master: String,
    pub db: i64,
    /// The primary's password (sentinels are reached without one).
    pub password: Option<Secret>,
}

impl RedisTarget {
    /// `redis+sentinel://[:password@]host1:port1,host2:port2/master_name[/db]`.
    pub(super) fn sentinel(target: SentinelTarget) -> Self {
        let location = format!(
            "redis+sentinel://{}/{}/{}",
            target.sentinels.join(","),
            target.master,
            target.db
        );
        RedisTarget {
            url: Secret::new(""),
            location,
            credentials: target.password.is_some(),
            sentinel: Some(target),
        }
    }

    /// The sentinels to ask for the primary, if this is a Sentinel deployment.
    pub fn sentinels(&self) -> Option<&SentinelTarget> {
        self.sentinel.as_ref()
    }

    pub(super) fn new(url: url::Url) -> Self {
        let location = format!(
            "{}://{}:{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port().unwrap_or(6379),
            url.path()
        );
        RedisTarget {
            credentials: !url.username().is_empty() || url.password().is_some(),
            url: Secret::new(url.to_string()),
            location,
            sentinel: None,
        }
    }

    /// The full URL, password included: only for opening the connection.
    pub fn url(&self) -> &Secret {
        &self.url
    }

    /// `redis://host:port/db`, safe to log.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// [`location`](Self::location) with `[redacted]@` where the URL holds a user or
    /// password, as `--print_config` shows it: hidden, and said to be.
    pub fn shown(&self) -> String {
        match (self.credentials, self.location.split_once("://")) {
            (true, Some((scheme, rest))) => format!("{scheme}://[redacted]@{rest}"),
            _ => self.location.clone(),
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({})", self.location)
    }
}

/// A Pushgateway: its URL without credentials (safe to log) and, when the URL held
/// `user:password@`, the basic-auth header value they make.
#[derive(Clone)]
pub struct PushTarget {
    pub url: url::Url,
    pub authorization: Option<Secret>,
}

impl fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PushTarget({})", self.url)
    }
}

/// Whether runs keep a watermark, deduplicate and lock (`state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateMode {
    Auto,
    Off,
}

impl Values {
    /// What `redis_url_file` holds, when given and not overridden by `redis_url`.
    pub(super) fn redis_target(
        &self,
        options: &Options,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> Option<RedisTarget> {
        let file = options.redis_url_file.as_ref()?;
        let source = self.source("redis_url_file");
        if self.file_form_wins("redis_url", "redis_url_file", errors, warnings) != Some(true) {
            return None;
        }
        let read = read_secret_file(file).and_then(|url| {
            parse::redis_target(url.expose())
                .map_err(|accepted| format!("does not hold a Redis URL; accepted: {accepted}"))
        });
        read.map_err(|problem| {
            errors.push(ConfigError::new(
                "redis_url_file",
                source,
                problem,
                "a readable file holding the Redis URL",
            ))
        })
        .ok()
    }
}
