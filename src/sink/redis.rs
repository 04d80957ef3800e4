//! The Redis sink: a page becomes one `RPUSH key rec1 rec2 …` (list), one pipeline of
//! `XADD`s (stream) or of `PUBLISH`es (channel) — or, deduplicating, one script
//! ([`DEDUP_SCRIPT`], `dedup.lua`) — on a connection from the run's pool. A failed
//! write is retried whole, with backoff, on a fresh connection, within the run's limits.

use std::time::Duration;

use super::resp::{self, EntryFields};
use super::{Health, QueueType, RecordKey, Sink, SinkSettings, Written};
use crate::error::{Error, SinkError};
use crate::lane::Lane;
use crate::redis_client::{
    self, Attempt, RedisConnection, RedisPool, connect, connect_attempt, open_client, retrying,
};
use crate::retry::RetryOptions;

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
    retry: RetryOptions,
    /// What each stream entry says beside its record.
    entry: EntryFields,
}

/// Deduplication by record id (`state auto`). Delivered ids live in a sorted set scored
/// by the record's createdDateTime (Unix seconds); ids older than `floor` — the start
/// of the run's window — are dropped, because no later run reads before it.
#[derive(Debug, Clone)]
pub struct Dedup {
    pub seen_key: String,
    /// None: prune nothing (an empty window has no start).
    pub floor: Option<i64>,
    /// Keys are of record versions (`signin_updates`): see [`RecordKey::versioned`].
    pub versioned: bool,
}

/// KEYS: queue, seen-set. ARGV: "list" | "channel" | "stream", floor, max_queue_len
/// (0: none), stream MAXLEN (0: none), "1" when a channel may publish to nobody, "1"
/// when keys are of record versions (`id#digest`: the record id is kept too), a
/// stream entry's tenant, source and format ([`EntryFields`]), then id, second,
/// record for each record. Returns {records delivered, records that
/// reached no subscriber, the page offsets of those delivered…, of those that were a
/// new version of a record delivered before…}.
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
const DEDUP_SCRIPT: &str = include_str!("dedup.lua");

/// How long a page waits for a replica to acknowledge it (Sentinel).
const REPLICA_WAIT: Duration = Duration::from_secs(5);

/// The lane's Redis sink, on the run's shared pool (or a pool of its own).
pub fn open(
    settings: &SinkSettings,
    source: &Lane,
    connections: Option<&RedisPool>,
    retry: RetryOptions,
    dedup: Option<Dedup>,
) -> Result<Box<dyn Sink>, Error> {
    let connections = match connections {
        Some(connections) => connections.clone(),
        None => RedisPool::new(&settings.redis)?,
    };
    Ok(Box::new(RedisSink::new(
        connections,
        settings,
        source,
        retry,
        dedup,
    )))
}

/// `--check`: PING, then for each lane's queue key a SET and DEL of `{key}:msgx:check` and a
/// trivial script: what a run does, without touching its keys.
pub fn health(settings: &SinkSettings, lanes: &[Lane]) -> Health {
    let name = format!("redis {}", settings.redis.target.location());
    let keys: Vec<String> = lanes.iter().map(|s| s.queue_key.clone()).collect();
    let probe = || -> Result<(), redis::RedisError> {
        let client = open_client(&settings.redis).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "redis_url",
                e.to_string(),
            ))
        })?;
        let mut connection = connect(&client)?;
        redis::cmd("PING").exec(&mut *connection)?;
        for key in &keys {
            let probe_key = crate::keys::derived(key, "check");
            redis::cmd("SET")
                .arg(&probe_key)
                .arg("msgx-once --check")
                .arg("PX")
                .arg(10_000)
                .exec(&mut *connection)?;
            redis::cmd("DEL").arg(&probe_key).exec(&mut *connection)?;
        }
        redis::cmd("EVAL")
            .arg("return 1")
            .arg(0)
            .exec(&mut *connection)
    };
    let result = probe().map(|()| {
        format!(
            "PING, a write and delete under {}, a script",
            prefixes(&keys)
        )
    });
    Health {
        name,
        result: result.map_err(|e| {
            let advice = match e.code() {
                Some("NOPERM") => format!(
                    "grant the Redis user every right a run needs: {} (docs/redis.md)",
                    redis_client::acl_line(
                        keys.first().map_or("ms_graph_exporter", String::as_str)
                    )
                ),
                _ if redis_client::is_password_refused(&e) => {
                    redis_client::PASSWORD_REFUSED.to_string()
                }
                _ if e.to_string().contains("invalid peer certificate") => {
                    "give the CA that signed Redis's certificate in redis_ca_file (a PEM file), \
                     and use the host name the certificate names in redis_url"
                        .into()
                }
                _ => "check that Redis runs and redis_url points at it (host, port, TLS)".into(),
            };
            (e.to_string(), advice)
        }),
    }
}

fn prefixes(keys: &[String]) -> String {
    let shown: Vec<String> = keys.iter().map(|k| format!("{k}:msgx")).collect();
    shown.join(", ")
}

impl RedisSink {
    /// A sink writing to `source`'s queue key through `connections`; `retry` limits
    /// every write (and the start-up check): its backoff should be [`REDIS_BACKOFF`].
    pub fn new(
        connections: RedisPool,
        settings: &SinkSettings,
        source: &Lane,
        retry: RetryOptions,
        dedup: Option<Dedup>,
    ) -> Self {
        RedisSink {
            connections,
            key: source.queue_key.clone(),
            max_queue_len: settings.max_queue_len,
            stream_maxlen: settings.stream_maxlen,
            allow_no_subscribers: settings.allow_no_subscribers,
            warned_unheard: std::sync::atomic::AtomicBool::new(false),
            dedup,
            dedup_script: redis::Script::new(DEDUP_SCRIPT),
            queue_type: settings.queue_type,
            retry,
            entry: EntryFields {
                tenant: source.owner.clone().unwrap_or_default(),
                source: source.spec.name,
                format: match settings.record_format.shape(source.spec) {
                    Some(_) => settings.record_format.name(),
                    None => "graph",
                },
            },
        }
    }

    fn with_retries<T>(&self, attempt: impl FnMut() -> Result<T, Attempt>) -> Result<T, SinkError> {
        retrying(self.connections.location(), &self.retry, attempt)
            .map_err(|message| self.failed(message))
    }

    fn write_once(&self, records: &[&str], keys: Option<&[RecordKey]>) -> Result<Written, Attempt> {
        let mut pooled = self.connections.get()?;
        let connection = pooled.connection();
        let result = match (&self.dedup, keys) {
            (Some(dedup), Some(keys)) => self.write_new_only(connection, dedup, records, keys),
            _ => self.write_all(connection, records, keys),
        }
        .and_then(|written| self.replicated(&mut **connection).map(|()| written));
        result.map_err(|e| {
            pooled.discard();
            Attempt::from(e)
        })
    }

    /// With Sentinel, a page counts as written once a replica has it too (`WAIT 1`):
    /// a failover promotes a replica, and what it lacks would be lost. A page no
    /// connected replica acknowledged is written again (the seen-set makes that a
    /// no-op for records already there); a primary with no replica at all is taken at
    /// its word.
    fn replicated(&self, connection: &mut dyn redis::ConnectionLike) -> redis::RedisResult<()> {
        if !self.connections.client().is_replicated() {
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
        connection: &mut RedisConnection,
        dedup: &Dedup,
        records: &[&str],
        keys: &[RecordKey],
    ) -> redis::RedisResult<Written> {
        let floor = dedup.floor.map_or("-inf".to_string(), |f| f.to_string());
        let (max_len, maxlen) = (
            self.max_queue_len.unwrap_or(0).to_string(),
            self.stream_maxlen.unwrap_or(0).to_string(),
        );
        let flag = |on: bool| if on { "1" } else { "0" };
        let args = [
            self.mode(),
            &floor,
            &max_len,
            &maxlen,
            flag(self.allow_no_subscribers),
            flag(dedup.versioned),
            &self.entry.tenant,
            self.entry.source,
            self.entry.format,
        ];
        let triples: Vec<(&str, i64, &str)> = records
            .iter()
            .zip(keys)
            .map(|(record, key)| (key.id.as_str(), key.second, *record))
            .collect();
        let encode = |out: &mut dyn resp::Out| {
            resp::evalsha(
                out,
                self.dedup_script.get_hash(),
                [&self.key, &dedup.seen_key],
                &args,
                &triples,
            )
        };
        let mut sent = self.send_one(connection, &encode);
        // A server that does not know the script yet (a restart, a failover, a new
        // Cluster node) learns it, and the page is sent again.
        if let Err(e) = &sent
            && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
        {
            sent = self
                .dedup_script
                .load(&mut **connection)
                .and_then(|_| self.send_one(connection, &encode));
        }
        let reply: Vec<usize> = redis::from_redis_value(sent?)?;
        let malformed = || {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "the dedup script's reply is not {delivered, unheard, offsets…, updated offsets…}",
            ))
        };
        let (delivered, unheard, rest) = match reply.as_slice() {
            [delivered, unheard, rest @ ..] => (*delivered, *unheard, rest),
            _ => return Err(malformed()),
        };
        let (fresh, updated) = rest.split_at_checked(delivered).ok_or_else(malformed)?;
        Ok(Written {
            delivered,
            unheard,
            fresh: fresh.to_vec(),
            updated: updated.to_vec(),
        })
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

    /// Sends one encoded command or pipeline of `replies` commands and reads their
    /// replies: to one server in pieces as it is encoded ([`resp::Pieces`]), so the
    /// page is not copied whole; to a Cluster whole, from a pooled buffer.
    fn send(
        &self,
        connection: &mut RedisConnection,
        replies: usize,
        encode: &dyn Fn(&mut dyn resp::Out),
    ) -> redis::RedisResult<Vec<redis::Value>> {
        let buffers = self.connections.buffers();
        let mut buffer = buffers.take();
        let sent = match connection.single() {
            Some(single) => {
                let mut pieces = resp::Pieces::new(&mut buffer, single);
                encode(&mut pieces);
                pieces.finish(replies)
            }
            None => {
                encode(&mut buffer);
                match replies {
                    1 => connection
                        .req_packed_command(&buffer)
                        .map(|reply| vec![reply]),
                    n => connection.req_packed_commands(&buffer, 0, n),
                }
            }
        };
        buffers.give_back(buffer);
        sent
    }

    /// [`Self::send`] of one command: its reply, a server error as an error.
    fn send_one(
        &self,
        connection: &mut RedisConnection,
        encode: &dyn Fn(&mut dyn resp::Out),
    ) -> redis::RedisResult<redis::Value> {
        self.send(connection, 1, encode)?
            .pop()
            .ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "no reply"))
            })?
            .extract_error()
    }

    /// The page as one `RPUSH` (or a pipeline of `PUBLISH`es or `XADD`s), encoded
    /// once, no copy per record (redis-rs's `Cmd` would copy the page twice).
    fn write_all(
        &self,
        connection: &mut RedisConnection,
        records: &[&str],
        keys: Option<&[RecordKey]>,
    ) -> redis::RedisResult<Written> {
        self.check_backlog(&mut **connection)?;
        match self.queue_type {
            QueueType::List => self
                .send_one(connection, &|out| resp::rpush(out, &self.key, records))
                .map(|_| Written::all(records.len())),
            QueueType::Stream => self
                .send(connection, records.len(), &|out| {
                    let ids = keys.map(|keys| keys.iter().map(RecordKey::graph_id));
                    let entries = records
                        .iter()
                        .zip(ids.into_iter().flatten().chain(std::iter::repeat("")));
                    resp::xadd_each(out, &self.key, self.stream_maxlen, &self.entry, entries)
                })
                .and_then(|replies| {
                    replies
                        .into_iter()
                        .try_for_each(|reply| reply.extract_error().map(drop))
                })
                .map(|()| Written::all(records.len())),
            QueueType::Channel => self
                .send(connection, records.len(), &|out| {
                    resp::publish_each(out, &self.key, records)
                })
                .and_then(|replies| {
                    let mut fresh = Vec::with_capacity(records.len());
                    for (offset, reply) in replies.into_iter().enumerate() {
                        let receivers: i64 = redis::from_redis_value(reply.extract_error()?)?;
                        if receivers > 0 || self.allow_no_subscribers {
                            fresh.push(offset);
                        }
                    }
                    Ok(Written {
                        delivered: fresh.len(),
                        unheard: records.len() - fresh.len(),
                        fresh,
                        updated: Vec::new(),
                    })
                }),
        }
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
            target: self.connections.location().to_string(),
            message,
        }
    }
}

impl Sink for RedisSink {
    fn check(&self) -> Result<(), SinkError> {
        // Directly rather than through the pool, whose timeout error hides the cause.
        self.with_retries(|| {
            let mut connection = connect_attempt(self.connections.client())?;
            Ok(redis::cmd("PING").query::<()>(&mut *connection)?)
        })
    }

    /// A piece to one server, all of the page to a Cluster.
    fn copy_bytes(&self, page_bytes: u64) -> u64 {
        match self.connections.client().is_cluster() {
            true => page_bytes,
            false => page_bytes.min(resp::PIECE_BYTES as u64),
        }
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
    use super::*;

    #[test]
    fn the_script_writes_the_floor_mark_under_its_rust_name() {
        let mark = crate::dedup::FLOOR_MARK;
        assert!(DEDUP_SCRIPT.contains(&format!("'{mark}'")));
    }
}
