//! The Redis sink: a page becomes one `RPUSH key rec1 rec2 …` (list) or one pipeline of
//! `PUBLISH key rec` (channel), on a connection from an r2d2 pool. A failed write is
//! retried whole, with backoff, on a fresh connection, within the run's limits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};

use super::resp;
use super::{RecordKey, Sink, Written};
use crate::buffers::BufferPool;
use crate::config::{Config, QueueType};
use crate::error::{Error, SinkError};
use crate::retry::{Backoff, RetryOptions};

/// Where Redis connections come from: `redis_url` itself, or the primary a Sentinel
/// deployment names at the time (asked again for every new connection, so a failover
/// is followed). Clones share it.
#[derive(Clone)]
pub struct Endpoint(Arc<Route>);

enum Route {
    Direct(redis::Client),
    Sentinel(Mutex<SentinelClient>),
    /// A Redis Cluster: its connection routes each command by its keys and follows
    /// MOVED and ASK.
    Cluster(redis::cluster::ClusterClient),
}

/// A connection to Redis: a plain one (standalone, Sentinel's primary) or a Cluster's.
pub type RedisConnection = Box<dyn redis::ConnectionLike + Send>;

impl Endpoint {
    /// Whether writes must wait for a replica: with Sentinel a failover promotes a
    /// replica, and what it has not received would be lost.
    pub fn is_replicated(&self) -> bool {
        matches!(*self.0, Route::Sentinel(_))
    }
}

/// The endpoint of `redis_url`: with `rediss://`, certificates are verified against
/// `redis_ca_file` when given (else the system's and webpki's roots), and not at all
/// only with `redis_tls_insecure`. An invalid URL is described by kind only, since
/// the error's text could quote the URL and its password.
pub fn open_client(config: &Config) -> Result<Endpoint, Error> {
    let failed = |e: redis::RedisError| {
        Error::Setup(format!(
            "redis_url {}: {:?}",
            config.redis.endpoint(),
            e.kind()
        ))
    };
    if let Some(nodes) = &config.redis_cluster {
        return open_cluster(config, nodes).map_err(failed);
    }
    if let Some(target) = config.redis.sentinels() {
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
        return Ok(Endpoint(Arc::new(Route::Sentinel(Mutex::new(client)))));
    }
    let mut url = config.redis.url().expose().to_string();
    if config.redis_tls_insecure {
        // The redis crate's spelling for "do not verify the certificate".
        url.push_str("#insecure");
    }
    let client = match &config.redis_ca_file {
        Some(path) => {
            let root_cert = std::fs::read(path)
                .map_err(|e| Error::Setup(format!("redis_ca_file {}: {e}", path.display())))?;
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            redis::Client::build_with_tls(url, certificates).map_err(failed)?
        }
        None => redis::Client::open(url).map_err(failed)?,
    };
    Ok(Endpoint(Arc::new(Route::Direct(client))))
}

/// The Cluster of seed `nodes` (`host:port`), with `redis_url`'s scheme (TLS) and
/// credentials.
fn open_cluster(config: &Config, nodes: &[String]) -> redis::RedisResult<Endpoint> {
    let url = url::Url::parse(config.redis.url().expose()).map_err(|_| {
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
    Ok(Endpoint(Arc::new(Route::Cluster(builder.build()?))))
}

/// A connection with timeouts, so a Redis that stops answering fails a command instead
/// of hanging the run.
pub fn connect(endpoint: &Endpoint) -> redis::RedisResult<RedisConnection> {
    let client = match &*endpoint.0 {
        Route::Cluster(cluster) => return Ok(Box::new(cluster.get_connection()?)),
        Route::Direct(client) => client.clone(),
        Route::Sentinel(sentinel) => sentinel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_client()?,
    };
    let connection = client.get_connection_with_timeout(COMMAND_TIMEOUT)?;
    connection.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    connection.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(Box::new(connection))
}

/// [`connect`], its failure worded for a retry loop.
pub fn connect_attempt(endpoint: &Endpoint) -> Result<RedisConnection, Attempt> {
    connect(endpoint).map_err(|e| {
        let attempt = Attempt::from(e);
        Attempt {
            message: format!("cannot connect: {}", attempt.message),
            ..attempt
        }
    })
}

/// Opens the pool's connections.
struct Connector {
    client: Endpoint,
}

/// A pooled connection that is dropped from the pool after any error, so a retry never
/// reuses a connection in an unknown state (half-read reply, server gone).
struct Tracked {
    connection: RedisConnection,
    broken: bool,
}

impl r2d2::ManageConnection for Connector {
    type Connection = Tracked;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<Self::Connection, Self::Error> {
        Ok(Tracked {
            connection: connect(&self.client)?,
            broken: false,
        })
    }

    fn is_valid(&self, tracked: &mut Self::Connection) -> Result<(), Self::Error> {
        redis::cmd("PING").query::<()>(&mut *tracked.connection)
    }

    fn has_broken(&self, tracked: &mut Self::Connection) -> bool {
        tracked.broken || !tracked.connection.is_open()
    }
}

/// One failed attempt, and whether another could succeed.
pub struct Attempt {
    pub message: String,
    pub transient: bool,
}

/// Worth another try: the connection failed or timed out, or the server is loading,
/// failing over or busy. A reply of the wrong type, a script error or a refused
/// password will not change by waiting.
fn is_transient(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    if is_certificate_error(e) {
        return false;
    }
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
}

/// Runs `attempt` against the Redis at `endpoint` until it succeeds, fails for good, or
/// the retries, the deadline or a stop request say to give up; the error is the last
/// failure's message.
pub fn retrying<T>(
    endpoint: &str,
    retry: &RetryOptions,
    mut attempt: impl FnMut() -> Result<T, Attempt>,
) -> Result<T, String> {
    let mut retries = 0;
    loop {
        let failure = match attempt() {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        if !failure.transient || retries >= retry.max_retries {
            return Err(failure.message);
        }
        let wait = retry.backoff.delay(retries);
        retries += 1;
        if Instant::now() + wait > retry.deadline {
            return Err(format!(
                "run deadline reached; last error: {}",
                failure.message
            ));
        }
        log::warn!(
            "{endpoint}: {}; retry {retries}/{} in {:.1}s",
            failure.message,
            retry.max_retries,
            wait.as_secs_f64()
        );
        if !retry.stop.sleep(wait) {
            return Err(format!("interrupted; last error: {}", failure.message));
        }
    }
}

/// Every command a run, a backfill, `--check` or the move of earlier key names sends
/// to a standalone Redis (the ACL rights a least-privileged user needs; Cluster adds
/// `cluster|slots`, Sentinel `info` and `wait`). docs/redis.md's ACL line is checked
/// against this list.
pub const COMMANDS: &[&str] = &[
    "ping",
    "select",
    "rpush",
    "xadd",
    "publish",
    "llen",
    "xlen",
    "type",
    "exists",
    "get",
    "set",
    "del",
    "pttl",
    "pexpire",
    "hset",
    "hsetnx",
    "hget",
    "hmget",
    "hgetall",
    "hdel",
    "zadd",
    "zscore",
    "zrem",
    "zrange",
    "zrangebyscore",
    "zcount",
    "zcard",
    "zremrangebyscore",
    "time",
    "eval",
    "evalsha",
    "script|load",
    "watch",
    "unwatch",
    "multi",
    "exec",
];

/// The least-privileged ACL user for `queue_key` (and the other sources' keys beside
/// it): its keys, their state, the shared budget, its channels, [`COMMANDS`].
pub fn acl_line(queue_key: &str) -> String {
    let rights: Vec<String> = COMMANDS.iter().map(|c| format!("+{c}")).collect();
    format!(
        "ACL SETUSER msgx on ><password> resetkeys ~{queue_key} ~{queue_key}:* \
         ~{{{queue_key}* ~msgx:budget:* resetchannels &{queue_key} &{queue_key}:* -@all {}",
        rights.join(" ")
    )
}

/// What to do when Redis refuses the credentials of `redis_url`.
pub const PASSWORD_REFUSED: &str = "the password (or ACL user and password) in redis_url was \
     refused: set the right one in redis_url or redis_url_file (redis://user:password@host:port/db)";

/// Redis refused the credentials (wrong password, unknown or disabled ACL user, or none
/// given to a server that needs one).
pub fn is_password_refused(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS") | Some("NOAUTH"))
}

/// The TLS server's certificate was refused: waiting will not change it.
fn is_certificate_error(e: &redis::RedisError) -> bool {
    e.to_string().contains("invalid peer certificate")
}

impl From<redis::RedisError> for Attempt {
    fn from(e: redis::RedisError) -> Self {
        let hint = match e.code() {
            Some("NOPERM") => {
                let text = e.to_string();
                let command = text
                    .split_once(" the '")
                    .and_then(|(_, rest)| rest.split_once('\''))
                    .map(|(command, _)| command.to_ascii_lowercase());
                return Attempt {
                    transient: false,
                    message: match command {
                        Some(command) => format!(
                            "{text}; the Redis user lacks the right to run {command}: add it with \
                             ACL SETUSER <user> +{command} (docs/redis.md lists every right a run needs)"
                        ),
                        None => format!(
                            "{text}; the Redis user lacks a right msgx-once needs (docs/redis.md's \
                             Redis section lists them: ACL SETUSER <user> …)"
                        ),
                    },
                };
            }
            _ if e
                .to_string()
                .contains("user executing the script can't run") =>
            {
                "; a command msgx-once's script runs is not allowed for this Redis user: give \
                 it the rights of the ACL line in docs/redis.md"
            }
            Some("BEHIND") => {
                "; the consumers are behind: nothing of this page was written, the watermark \
                 holds, and a later run writes it once they have drained the key"
            }
            Some("OOM") => {
                "; Redis is full (maxmemory): nothing of this page was written, and a later \
                 run delivers it once memory is freed"
            }
            _ if is_certificate_error(&e) => {
                "; Redis's TLS certificate was refused: give the CA that signed it in \
                 redis_ca_file (a PEM file), and use the host name the certificate names in \
                 redis_url"
            }
            _ if is_password_refused(&e) => {
                return Attempt {
                    transient: false,
                    message: format!("{e}; {PASSWORD_REFUSED}"),
                };
            }
            _ => "",
        };
        Attempt {
            transient: is_transient(&e),
            message: format!("{e}{hint}"),
        }
    }
}

/// The pooled connections to `redis_url`, shared by the sinks of every source (a
/// clone shares the pool).
#[derive(Clone)]
pub struct RedisPool {
    pool: r2d2::Pool<Connector>,
    /// For the start-up check, which connects outside the pool to see the cause.
    client: Endpoint,
    endpoint: String,
    block: bool,
    pool_timeout: Duration,
}

impl RedisPool {
    /// The pool of `redis_pool_max_connections`, opened lazily.
    pub fn new(config: &Config) -> Result<Self, Error> {
        let client = open_client(config)?;
        if config.redis_pool_gevent_queue {
            log::debug!("redis_pool_gevent_queue is accepted for compatibility and has no effect");
        }
        let pool = r2d2::Pool::builder()
            .max_size(config.redis_pool_max_connections)
            .min_idle(Some(0))
            .connection_timeout(config.redis_pool_timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Connector {
                client: client.clone(),
            });
        Ok(RedisPool {
            pool,
            client,
            endpoint: config.redis.endpoint().to_string(),
            block: config.redis_pool_block,
            pool_timeout: config.redis_pool_timeout,
        })
    }

    fn connection(&self) -> Result<r2d2::PooledConnection<Connector>, Attempt> {
        // Without blocking (the original's redis-py ConnectionPool rather than its
        // BlockingConnectionPool) a page takes a free connection or opens a new one up
        // to the maximum, and fails at once only when all of them are in use.
        let full = || {
            let state = self.pool.state();
            state.idle_connections == 0 && state.connections >= self.pool.max_size()
        };
        let pooled = match self.pool.try_get() {
            Some(connection) => Ok(connection),
            None if !self.block && full() => Err(format!(
                "all {} pooled connections are in use (redis_pool_block is off)",
                self.pool.max_size()
            )),
            None => self
                .pool
                .get_timeout(self.pool_timeout)
                .map_err(|e| e.to_string()),
        };
        pooled.map_err(|message| Attempt {
            message,
            transient: true,
        })
    }
}

pub struct RedisSink {
    connections: RedisPool,
    key: String,
    queue_type: QueueType,
    /// Refuse a page while the list or stream holds this many entries.
    max_queue_len: Option<u64>,
    /// A stream's approximate MAXLEN.
    stream_maxlen: Option<u64>,
    /// PUBLISH to a channel nobody listens on counts as delivered.
    allow_no_subscribers: bool,
    /// Whether this run already said that a channel had no subscriber.
    warned_unheard: std::sync::atomic::AtomicBool,
    dedup: Option<Dedup>,
    dedup_script: redis::Script,
    buffers: BufferPool,
    retry: RetryOptions,
}

/// Deduplication by record id (`state auto`). Delivered ids live in a sorted set scored
/// by the record's createdDateTime (Unix seconds); ids older than `floor` — the start
/// of the run's window — are dropped, because no later run reads before it.
#[derive(Debug, Clone)]
pub struct Dedup {
    pub seen_key: String,
    /// None: prune nothing (an empty window has no start).
    pub floor: Option<i64>,
}

/// KEYS: queue, seen-set. ARGV: "list" | "channel" | "stream", floor, max_queue_len
/// (0: none), stream MAXLEN (0: none), "1" when a channel may publish to nobody, then
/// id, second, record for each record. Returns {records delivered, records that
/// reached no subscriber}.
///
/// Redis does not undo a script's earlier writes when a later command fails, so the
/// script writes nothing until nothing can fail: it checks the key types and the
/// consumer backlog (`max_queue_len`) first, reads which ids are new, and then writes.
/// Its first write is one that Redis refuses when over `maxmemory` (RPUSH for a list,
/// XADD for a stream, ZADD before the PUBLISHes of a channel): Redis checks memory only
/// at a script's first write, so a full Redis refuses the page, not half of it. Ids
/// are marked seen after the records are written; a record PUBLISHed to nobody is
/// unmarked again (ZREM frees memory, so it is never refused), and old ids are pruned
/// last.
const DEDUP_SCRIPT: &str = r#"
local function wrong_type(key, expected)
  local actual = redis.call('TYPE', key)['ok']
  if actual ~= 'none' and actual ~= expected then
    return redis.error_reply('WRONGTYPE key ' .. key .. ' holds a ' .. actual .. ', not a ' .. expected)
  end
end
local mode, max_len, maxlen = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local container = (mode ~= 'channel') and mode or nil
local refused = (container and wrong_type(KEYS[1], container)) or wrong_type(KEYS[2], 'zset')
if refused then
  return refused
end
if container and max_len > 0 then
  local held = redis.call(mode == 'list' and 'LLEN' or 'XLEN', KEYS[1])
  if held >= max_len then
    return redis.error_reply('BEHIND consumer behind: ' .. KEYS[1] .. ' holds ' .. held .. ' >= max_queue_len ' .. max_len)
  end
end
local fresh, ids, marks, taken = {}, {}, {}, {}
for i = 6, #ARGV, 3 do
  local id = ARGV[i]
  if not taken[id] and not redis.call('ZSCORE', KEYS[2], id) then
    taken[id] = true
    fresh[#fresh + 1] = ARGV[i + 2]
    ids[#ids + 1] = id
    marks[#marks + 1] = ARGV[i + 1]
    marks[#marks + 1] = id
  end
end
local unheard = 0
if #fresh > 0 then
  if mode == 'list' then
    redis.call('RPUSH', KEYS[1], unpack(fresh))
    redis.call('ZADD', KEYS[2], unpack(marks))
  elseif mode == 'stream' then
    for _, record in ipairs(fresh) do
      if maxlen > 0 then
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'record', record)
      else
        redis.call('XADD', KEYS[1], '*', 'record', record)
      end
    end
    redis.call('ZADD', KEYS[2], unpack(marks))
  else
    redis.call('ZADD', KEYS[2], unpack(marks))
    local nobody = {}
    for i, record in ipairs(fresh) do
      if redis.call('PUBLISH', KEYS[1], record) == 0 and ARGV[5] ~= '1' then
        nobody[#nobody + 1] = ids[i]
      end
    end
    if #nobody > 0 then
      redis.call('ZREM', KEYS[2], unpack(nobody))
    end
    unheard = #nobody
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
return {#fresh - unheard, unheard}
"#;

/// How long a page waits for a replica to acknowledge it (Sentinel).
const REPLICA_WAIT: Duration = Duration::from_secs(5);

/// How long one Redis command may take before the connection counts as dead.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Backoff between write attempts: shorter than Graph's, so that a Redis that stays
/// down fails the run within about half a minute (8 retries: at most 0.25 + 0.5 + … +
/// 8 s), while a restart or failover of a few seconds is ridden out.
pub const REDIS_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(250),
    cap: Duration::from_secs(8),
};

impl RedisSink {
    /// A sink writing to `config.queue_key` through `connections`; `retry` limits
    /// every write (and the start-up check): its backoff should be [`REDIS_BACKOFF`].
    pub fn new(
        connections: RedisPool,
        config: &Config,
        retry: RetryOptions,
        dedup: Option<Dedup>,
    ) -> Self {
        RedisSink {
            connections,
            key: config.queue_key.clone(),
            max_queue_len: config.max_queue_len,
            stream_maxlen: config.stream_maxlen,
            allow_no_subscribers: config.channel_allow_no_subscribers,
            warned_unheard: std::sync::atomic::AtomicBool::new(false),
            dedup,
            dedup_script: redis::Script::new(DEDUP_SCRIPT),
            buffers: BufferPool::default(),
            queue_type: config.queue_type,
            retry,
        }
    }

    fn with_retries<T>(&self, attempt: impl FnMut() -> Result<T, Attempt>) -> Result<T, SinkError> {
        retrying(&self.connections.endpoint, &self.retry, attempt)
            .map_err(|message| self.failed(message))
    }

    fn write_once(&self, records: &[&str], keys: Option<&[RecordKey]>) -> Result<Written, Attempt> {
        let mut pooled = self.connections.connection()?;
        let connection = &mut *pooled.connection;
        let result = match (&self.dedup, keys) {
            (Some(dedup), Some(keys)) => self.write_new_only(connection, dedup, records, keys),
            _ => self.write_all(connection, records),
        }
        .and_then(|written| self.replicated(connection).map(|()| written));
        result.map_err(|e| {
            pooled.broken = true;
            Attempt::from(e)
        })
    }

    /// With Sentinel, a page counts as written once a replica has it too (`WAIT 1`):
    /// a failover promotes a replica, and what it lacks would be lost. A page no
    /// connected replica acknowledged is written again (the seen-set makes that a
    /// no-op for records already there); a primary with no replica at all is taken at
    /// its word.
    fn replicated(&self, connection: &mut dyn redis::ConnectionLike) -> redis::RedisResult<()> {
        if !self.connections.client.is_replicated() {
            return Ok(());
        }
        // A primary without replicas (the others lost in a failover) has nothing a
        // failover could promote: what it holds cannot be lost that way.
        let info: String = redis::cmd("INFO").arg("replication").query(connection)?;
        let connected = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_slaves:"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0);
        if connected == 0 {
            return Ok(());
        }
        let replicas: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(REPLICA_WAIT.as_millis() as u64)
            .query(connection)?;
        if replicas >= 1 {
            return Ok(());
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no replica acknowledged the page",
            format!("within {} s (WAIT 1)", REPLICA_WAIT.as_secs()),
        )))
    }

    fn mode(&self) -> &'static str {
        match self.queue_type {
            QueueType::List => "list",
            QueueType::Channel => "channel",
            QueueType::Stream => "stream",
        }
    }

    /// One `EVALSHA` of [`DEDUP_SCRIPT`]: atomically, only records whose id is not in
    /// the seen-set are pushed, added or published, and their ids join the set.
    fn write_new_only(
        &self,
        connection: &mut dyn redis::ConnectionLike,
        dedup: &Dedup,
        records: &[&str],
        keys: &[RecordKey],
    ) -> redis::RedisResult<Written> {
        let floor = dedup.floor.map_or("-inf".to_string(), |f| f.to_string());
        let mut invocation = self.dedup_script.prepare_invoke();
        invocation
            .key(&self.key)
            .key(&dedup.seen_key)
            .arg(self.mode())
            .arg(floor)
            .arg(self.max_queue_len.unwrap_or(0))
            .arg(self.stream_maxlen.unwrap_or(0))
            .arg(if self.allow_no_subscribers { "1" } else { "0" });
        for (record, key) in records.iter().zip(keys) {
            invocation.arg(&key.id).arg(key.second).arg(*record);
        }
        let (delivered, unheard): (usize, usize) = invocation.invoke(connection)?;
        Ok(Written { delivered, unheard })
    }

    /// Refuses the page while the list or stream holds `max_queue_len` entries or more.
    fn check_backlog(&self, connection: &mut dyn redis::ConnectionLike) -> redis::RedisResult<()> {
        let (Some(max), Some(command)) = (
            self.max_queue_len,
            match self.queue_type {
                QueueType::List => Some("LLEN"),
                QueueType::Stream => Some("XLEN"),
                QueueType::Channel => None,
            },
        ) else {
            return Ok(());
        };
        let held: u64 = redis::cmd(command).arg(&self.key).query(connection)?;
        if held >= max {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
                "BEHIND",
                format!(
                    "consumer behind: {} holds {held} >= max_queue_len {max}",
                    self.key
                ),
            )));
        }
        Ok(())
    }

    /// The page as one hand-packed `RPUSH` (or a pipeline of `PUBLISH`es or `XADD`s)
    /// in a pooled buffer: one copy of the records into the buffer, none per record, no
    /// allocation once the pool is warm (redis-rs's `Cmd` would copy the page twice).
    fn write_all(
        &self,
        connection: &mut dyn redis::ConnectionLike,
        records: &[&str],
    ) -> redis::RedisResult<Written> {
        self.check_backlog(connection)?;
        let mut packed = self.buffers.take();
        let result = match self.queue_type {
            QueueType::List => {
                resp::rpush(&mut packed, &self.key, records);
                connection
                    .req_packed_command(&packed)
                    .and_then(redis::Value::extract_error)
                    .map(|_| Written::all(records.len()))
            }
            QueueType::Stream => {
                resp::xadd_each(&mut packed, &self.key, self.stream_maxlen, records);
                connection
                    .req_packed_commands(&packed, 0, records.len())
                    .and_then(|replies| {
                        replies
                            .into_iter()
                            .try_for_each(|reply| reply.extract_error().map(drop))
                    })
                    .map(|()| Written::all(records.len()))
            }
            QueueType::Channel => {
                resp::publish_each(&mut packed, &self.key, records);
                connection
                    .req_packed_commands(&packed, 0, records.len())
                    .and_then(|replies| {
                        let mut unheard = 0;
                        for reply in replies {
                            let receivers: i64 = redis::from_redis_value(reply.extract_error()?)?;
                            unheard += usize::from(receivers == 0 && !self.allow_no_subscribers);
                        }
                        Ok(Written {
                            delivered: records.len() - unheard,
                            unheard,
                        })
                    })
            }
        };
        self.buffers.give_back(packed);
        result
    }

    /// Says once per run that the channel had no subscriber.
    fn warn_unheard(&self, written: &Written) {
        let first = !self
            .warned_unheard
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        if written.unheard > 0 && first {
            log::warn!(
                "channel {} has no subscriber: {} records were published to nobody; they are \
                 not marked delivered, their frame fails and the next run publishes them again \
                 (channel_allow_no_subscribers true: fire and forget)",
                self.key,
                written.unheard
            );
        }
    }

    fn failed(&self, message: String) -> SinkError {
        SinkError {
            target: self.connections.endpoint.clone(),
            message,
        }
    }
}

impl Sink for RedisSink {
    fn check(&self) -> Result<(), SinkError> {
        // Directly rather than through the pool, whose timeout error hides the cause.
        self.with_retries(|| {
            let mut connection = connect_attempt(&self.connections.client)?;
            Ok(redis::cmd("PING").query::<()>(&mut *connection)?)
        })
    }

    fn write(&self, records: &[&str], keys: Option<&[RecordKey]>) -> Result<Written, SinkError> {
        if records.is_empty() {
            return Ok(Written::default());
        }
        let written = self.with_retries(|| self.write_once(records, keys))?;
        if written.unheard > 0 {
            self.warn_unheard(&written);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_documented_acl_line_grants_every_command_a_run_sends() {
        let doc = include_str!("../../docs/redis.md");
        let line = doc
            .lines()
            .find(|l| l.starts_with("ACL SETUSER msgx "))
            .expect("docs/redis.md's ACL line");
        assert_eq!(line, super::acl_line("ms_graph_exporter"));
    }
}
