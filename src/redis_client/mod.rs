//! The Redis client every part that talks to Redis shares (sinks, the state store, the
//! shared budget, `--check`): where connections come from — `redis_url` itself, the
//! primary a Sentinel names, or a Cluster that routes by key — with TLS verified, the
//! pool of the sinks' connections, and retries of what is transient, with errors that
//! say what to do.

mod acl;
mod attempt;
mod pool;
mod target;

pub use acl::acl_line;
pub use attempt::{Attempt, PASSWORD_REFUSED, is_password_refused, retrying};
pub use pool::RedisPool;
pub use target::{RedisSettings, RedisTarget, SentinelTarget};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use crate::error::Error;
use crate::retry::Backoff;

/// Where Redis connections come from: `redis_url` itself, or the primary a Sentinel
/// deployment names at the time (asked again for every new connection, so a failover
/// is followed). Clones share it.
#[derive(Clone)]
pub struct RedisClient(Arc<Route>);

enum Route {
    Direct(redis::Client),
    Sentinel(Mutex<SentinelClient>),
    /// A Redis Cluster: its connection routes each command by its keys and follows
    /// MOVED and ASK.
    Cluster(redis::cluster::ClusterClient),
}

/// A connection to Redis: a plain one (standalone, Sentinel's primary) or a Cluster's.
/// Commands go through it as a `dyn redis::ConnectionLike`.
pub struct RedisConnection(Link);

enum Link {
    Single(redis::Connection),
    /// Boxed: a Cluster connection is several times the size of a plain one.
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl RedisConnection {
    /// The connection to one server, on which a command may be sent in pieces; a
    /// Cluster's routes each command by its parsed bytes and takes them whole.
    pub fn single(&mut self) -> Option<&mut redis::Connection> {
        match &mut self.0 {
            Link::Single(connection) => Some(connection),
            Link::Cluster(_) => None,
        }
    }
}

impl std::ops::Deref for RedisConnection {
    type Target = dyn redis::ConnectionLike + Send;

    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Link::Single(connection) => connection,
            Link::Cluster(connection) => &**connection,
        }
    }
}

impl std::ops::DerefMut for RedisConnection {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match &mut self.0 {
            Link::Single(connection) => connection,
            Link::Cluster(connection) => &mut **connection,
        }
    }
}

impl RedisClient {
    /// Whether writes must wait for a replica: with Sentinel a failover promotes a
    /// replica, and what it has not received would be lost.
    pub fn is_replicated(&self) -> bool {
        matches!(*self.0, Route::Sentinel(_))
    }

    /// A Redis Cluster: commands are sent whole, to route them.
    pub fn is_cluster(&self) -> bool {
        matches!(*self.0, Route::Cluster(_))
    }
}

/// The client of `redis_url`: with `rediss://`, certificates are verified against
/// `redis_ca_file` when given (else the system's and webpki's roots), and not at all
/// only with `redis_tls_insecure`. An invalid URL is described by kind only, since
/// the error's text could quote the URL and its password.
pub fn open_client(settings: &RedisSettings) -> Result<RedisClient, Error> {
    let failed = |e: redis::RedisError| {
        Error::Setup(format!(
            "redis_url {}: {:?}",
            settings.target.location(),
            e.kind()
        ))
    };
    if let Some(nodes) = &settings.cluster {
        return open_cluster(settings, nodes).map_err(failed);
    }
    if let Some(target) = settings.target.sentinels() {
        let sentinels: Vec<String> = target
            .sentinels
            .iter()
            .map(|host| format!("redis://{host}"))
            .collect();
        let mut primary = redis::RedisConnectionInfo::default().set_db(target.db);
        if let Some(password) = &target.password {
            primary = primary.set_password(password.expose());
        }
        let client = SentinelClient::build(
            sentinels,
            target.master.clone(),
            Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(primary)),
            SentinelServerType::Master,
        )
        .map_err(failed)?;
        return Ok(RedisClient(Arc::new(Route::Sentinel(Mutex::new(client)))));
    }
    let mut url = settings.target.url().expose().to_string();
    if settings.tls_insecure {
        // The redis crate's spelling for "do not verify the certificate".
        url.push_str("#insecure");
    }
    let client = match &settings.ca_file {
        Some(path) => {
            let root_cert = crate::files::read(path, crate::files::PEM_CAP)
                .map_err(|e| Error::Setup(format!("redis_ca_file {}: {e}", path.display())))?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            redis::Client::build_with_tls(url, certificates).map_err(failed)?
        }
        None => redis::Client::open(url).map_err(failed)?,
    };
    Ok(RedisClient(Arc::new(Route::Direct(client))))
}

/// The Cluster of seed `nodes` (`host:port`), with `redis_url`'s scheme (TLS) and
/// credentials.
fn open_cluster(settings: &RedisSettings, nodes: &[String]) -> redis::RedisResult<RedisClient> {
    let url = url::Url::parse(settings.target.url().expose()).map_err(|_| {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "redis_url"))
    })?;
    let scheme = url.scheme();
    let seeds: Vec<String> = nodes.iter().map(|n| format!("{scheme}://{n}")).collect();
    let mut builder = redis::cluster::ClusterClient::builder(seeds)
        .connection_timeout(COMMAND_TIMEOUT)
        .response_timeout(COMMAND_TIMEOUT);
    if !url.username().is_empty() {
        builder = builder.username(url.username());
    }
    if let Some(password) = url.password() {
        let password = url::form_urlencoded::parse(format!("p={password}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        builder = builder.password(password);
    }
    Ok(RedisClient(Arc::new(Route::Cluster(builder.build()?))))
}

/// A connection with timeouts, so a Redis that stops answering fails a command instead
/// of hanging the run.
pub fn connect(client: &RedisClient) -> redis::RedisResult<RedisConnection> {
    let client = match &*client.0 {
        Route::Cluster(cluster) => {
            return Ok(RedisConnection(Link::Cluster(Box::new(
                cluster.get_connection()?,
            ))));
        }
        Route::Direct(client) => client.clone(),
        Route::Sentinel(sentinel) => sentinel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_client()?,
    };
    let connection = client.get_connection_with_timeout(COMMAND_TIMEOUT)?;
    connection.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    connection.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(RedisConnection(Link::Single(connection)))
}

/// [`connect`], its failure worded for a retry loop.
pub fn connect_attempt(client: &RedisClient) -> Result<RedisConnection, Attempt> {
    connect(client).map_err(|e| {
        let attempt = Attempt::from(e);
        Attempt {
            message: format!("cannot connect: {}", attempt.message),
            ..attempt
        }
    })
}

/// How long one Redis command may take before the connection counts as dead.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Backoff between write attempts: shorter than Graph's, so that a Redis that stays
/// down fails the run within about half a minute (8 retries: at most 0.25 + 0.5 + … +
/// 8 s), while a restart or failover of a few seconds is ridden out.
pub const REDIS_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(250),
    cap: Duration::from_secs(8),
};
