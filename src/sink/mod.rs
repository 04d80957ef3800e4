//! Where records go: a Redis list or channel ([`redis`]), the log ([`log`]), or an
//! NDJSON file or stdout ([`file`]). A sink takes one page at a time from several writer
//! threads at once, and either takes the page whole or fails.

pub mod dedup;
pub mod file;
pub mod formatted;
pub mod log;
pub mod redis;
mod resp;

pub use dedup::RecordKey;

use crate::error::{Error, SinkError};
use crate::format::RecordFormat;
use crate::lane::Lane;
use crate::redis_client::{RedisPool, RedisSettings};
use crate::retry::RetryOptions;

/// What a sink did with a page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Written {
    /// Records delivered (fewer than the page when some were delivered before).
    pub delivered: usize,
    /// Records published to a channel nobody listened on: not delivered, not marked
    /// seen; a later run delivers them.
    pub unheard: usize,
    /// The page offsets of the records delivered (what a later read found new).
    pub fresh: Vec<usize>,
    /// Of `fresh`, those that were a new version of a record delivered before
    /// (`signin_updates`): changed, not late.
    pub updated: Vec<usize>,
}

impl Written {
    /// All `delivered` records of the page.
    pub fn all(delivered: usize) -> Self {
        Written {
            delivered,
            unheard: 0,
            fresh: (0..delivered).collect(),
            updated: Vec::new(),
        }
    }
}

pub trait Sink: Send + Sync {
    /// Checks that the destination can be reached, before any Graph request is spent.
    fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Delivers one page's records, in order; says how many were delivered (fewer
    /// when a deduplicating sink had delivered some before) and how many reached no
    /// subscriber. `keys` (one per record) come with runs that deduplicate. On an error
    /// nothing of the page may count as delivered: a sink leaves no trace of a failed
    /// page it can undo.
    fn write(&self, records: &[&str], keys: Option<&[RecordKey]>) -> Result<Written, SinkError>;

    /// What writing a page of `page_bytes` copies of it at once, held in the run's
    /// page memory while it is written.
    fn copy_bytes(&self, page_bytes: u64) -> u64 {
        page_bytes
    }

    /// Flushes what is buffered and makes it durable; called once after the last write.
    fn finish(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// What the sinks need of the options.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub backend: Backend,
    pub queue_type: QueueType,
    /// `max_queue_len`: refuse a page while the list or stream holds this many entries.
    pub max_queue_len: Option<u64>,
    /// `stream_maxlen`: trim the stream to about this many entries.
    pub stream_maxlen: Option<u64>,
    /// `channel_allow_no_subscribers`.
    pub allow_no_subscribers: bool,
    pub record_format: RecordFormat,
    /// Several sources are exported: log lines name theirs.
    pub name_sources: bool,
    pub redis: RedisSettings,
}

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

/// `source`'s sink; `redis_retry` limits the Redis sink's retries (files and the log
/// are not retried: their errors do not go away by waiting). The Redis sinks of all
/// sources share `connections`; with several sources, log lines name theirs.
pub fn open(
    settings: &SinkSettings,
    source: &Lane,
    connections: Option<&RedisPool>,
    redis_retry: RetryOptions,
    dedup: Option<redis::Dedup>,
) -> Result<Box<dyn Sink>, Error> {
    Ok(match (settings.backend, connections) {
        (Backend::Redis, Some(connections)) => Box::new(redis::RedisSink::new(
            connections.clone(),
            settings,
            source,
            redis_retry,
            dedup,
        )),
        (Backend::Redis, None) => Box::new(redis::RedisSink::new(
            RedisPool::new(&settings.redis)?,
            settings,
            source,
            redis_retry,
            dedup,
        )),
        (Backend::Log, _) => Box::new(log::LogSink {
            source: source.spec,
            name_sources: settings.name_sources,
        }),
        (Backend::File, _) => Box::new(file::FileSink::open(&source.file_path)?),
    })
}
