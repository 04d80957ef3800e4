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

use crate::config::{Backend, Config};
use crate::error::{Error, SinkError};
use crate::lane::Lane;
use crate::redis_client::RedisPool;
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

/// `source`'s sink; `redis_retry` limits the Redis sink's retries (files and the log
/// are not retried: their errors do not go away by waiting). The Redis sinks of all
/// sources share `connections`; with several sources, log lines name theirs.
pub fn open(
    config: &Config,
    source: &Lane,
    connections: Option<&RedisPool>,
    redis_retry: RetryOptions,
    dedup: Option<redis::Dedup>,
) -> Result<Box<dyn Sink>, Error> {
    Ok(match (config.options.queue_backend, connections) {
        (Backend::Redis, Some(connections)) => Box::new(redis::RedisSink::new(
            connections.clone(),
            config,
            source,
            redis_retry,
            dedup,
        )),
        (Backend::Redis, None) => Box::new(redis::RedisSink::new(
            RedisPool::new(&config.redis_settings())?,
            config,
            source,
            redis_retry,
            dedup,
        )),
        (Backend::Log, _) => Box::new(log::LogSink {
            source: source.spec,
            name_sources: config.name_sources(),
        }),
        (Backend::File, _) => Box::new(file::FileSink::open(&source.file_path)?),
    })
}
