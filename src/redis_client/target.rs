//! Where Redis is and how it is reached: the URL (never shown with its password), a
//! Sentinel deployment, a Cluster's seed nodes, TLS, and the pool's limits. `config`
//! builds them from the options; the client reads nothing else.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// What the Redis client needs (`redis_*` options).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub target: RedisTarget,
    /// `redis_cluster`: seed nodes, `host:port`.
    pub cluster: Option<Vec<String>>,
    /// `redis_tls_insecure`: certificates are not verified.
    pub tls_insecure: bool,
    /// `redis_ca_file`: the roots a `rediss://` certificate is verified against.
    pub ca_file: Option<PathBuf>,
    /// `redis_pool_max_connections`, `redis_pool_timeout`, `redis_pool_block`.
    pub pool_max_connections: u32,
    pub pool_timeout: Duration,
    pub pool_block: bool,
    /// `redis_pool_gevent_queue`: accepted for compatibility, no effect.
    pub pool_gevent_queue: bool,
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
    pub(crate) fn sentinel(target: SentinelTarget) -> Self {
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

    pub(crate) fn new(url: url::Url) -> Self {
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
