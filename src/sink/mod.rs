//! Where records go: a Redis list or channel ([`redis`]), the log ([`log`]), or an
//! NDJSON file or stdout ([`file`]). A sink takes one page at a time from several writer
//! threads at once, and either takes the page whole or fails.

mod dedup;
mod file;
mod formatted;
mod log;
mod redis;

pub use dedup::DedupSink;
pub use formatted::FormattedSink;
pub use redis::Dedup;
mod resp;

pub use crate::dedup::RecordKey;

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

/// A `queue_backend`: one row of [`BACKENDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Log,
    File,
}

/// A sink backend: its option value, what it brings with it, how its sink is opened and
/// the check `--check` runs for it. A new backend is its file and a row here.
pub struct BackendSpec {
    pub name: &'static str,
    pub backend: Backend,
    /// Records go to Redis; the state and the shared request budget live there too.
    pub uses_redis: bool,
    /// Records go to `file_path`.
    pub writes_file: bool,
    /// The lane's sink (`connections`: the run's shared Redis pool, if it has one).
    open: OpenSink,
    /// What `--check` checks of it for `lanes`, before any record is written.
    pub health: fn(&SinkSettings, &[Lane]) -> Health,
}

/// How a backend opens a lane's sink: the run's shared Redis pool, if it has one, the
/// Redis retries, and the seen-set the Redis sink writes.
type OpenSink = fn(
    &SinkSettings,
    &Lane,
    Option<&RedisPool>,
    RetryOptions,
    Option<redis::Dedup>,
) -> Result<Box<dyn Sink>, Error>;

pub static BACKENDS: &[BackendSpec] = &[
    BackendSpec {
        name: "redis",
        backend: Backend::Redis,
        uses_redis: true,
        writes_file: false,
        open: redis::open,
        health: redis::health,
    },
    BackendSpec {
        name: "log",
        backend: Backend::Log,
        uses_redis: false,
        writes_file: false,
        open: log::open,
        health: log::health,
    },
    BackendSpec {
        name: "file",
        backend: Backend::File,
        uses_redis: false,
        writes_file: true,
        open: file::open,
        health: file::health,
    },
];

impl Backend {
    pub fn spec(self) -> &'static BackendSpec {
        BACKENDS
            .iter()
            .find(|b| b.backend == self)
            .unwrap_or(&BACKENDS[0])
    }

    /// Records go to Redis; the state and the shared request budget live there too.
    pub fn uses_redis(self) -> bool {
        self.spec().uses_redis
    }

    /// Records go to `file_path`.
    pub fn writes_file(self) -> bool {
        self.spec().writes_file
    }
}

/// What `--check` found of a destination: what was checked, and on failure the problem
/// and what to do.
pub struct Health {
    pub name: String,
    pub result: Result<String, (String, String)>,
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
    (settings.backend.spec().open)(settings, source, connections, redis_retry, dedup)
}

/// The check `--check` runs for the configured backend.
pub fn health(settings: &SinkSettings, lanes: &[Lane]) -> Health {
    (settings.backend.spec().health)(settings, lanes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every backend has one row, under its own name, and the row is its own.
    #[test]
    fn each_backend_is_one_row_of_its_own() {
        for backend in [Backend::Redis, Backend::Log, Backend::File] {
            assert_eq!(backend.spec().backend, backend);
            assert_eq!(
                BACKENDS.iter().filter(|b| b.backend == backend).count(),
                1,
                "{backend:?}"
            );
        }
        let names: std::collections::BTreeSet<&str> = BACKENDS.iter().map(|b| b.name).collect();
        assert_eq!(names.len(), BACKENDS.len());
        // Only the Redis backend shares the budget and keeps state in Redis.
        assert!(Backend::Redis.uses_redis() && !Backend::File.uses_redis());
        assert!(Backend::File.writes_file() && !Backend::Log.writes_file());
    }
}
