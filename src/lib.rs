//! msgx: export time-domain audit data (Entra ID sign-ins and the other audit streams)
//! from Microsoft Graph into Redis, one synchronous batch run at a time.
//!
//! [`export`] is one cron run: `run::run` sets up what requests need (`setup`:
//! the HTTP `transport`, a token per tenant from `auth`, the request gates of each
//! tenant's buckets and of the app across tenants from `budget`); for each `lane` (a
//! tenant × source) of the `config` it opens its `state` (lock and progress) and
//! `plan`s the frames of a `window` — each second read when due and once more later
//! —; the `pipeline` fetches every lane's frames from `graph` on shared fetchers — as
//! many requests in flight as Graph's latency calls for — and hands each page's
//! records, in chunks as they arrive, to the lane's `sink`; then the progress is saved
//! and the `report` is logged and turned into `metrics`. `--check` is `check`. Errors
//! map to exit codes in `error` ([`exit`]).
//!
//! # Layout
//!
//! Dependencies point downward, floor by floor as listed here (a module imports only
//! modules of its own floor or below); no two modules import each other.
//! `tests/layout.rs` checks both against this text.
//!
//! - At the bottom, knowing nothing of the rest: [`exit`] codes, `ids`, `secret`,
//!   `files` (regular files only, capped; a file backend's `Output`), `buffers`,
//!   `page_memory` (the byte budget of chunks in flight), `keys` (Redis key names and
//!   hash tags), `window`, `logging`, `shard` (a fleet's tenants over K processes), the
//!   HTTP `transport`.
//! - The vocabulary: `shutdown` (signals), `sources` (the audit streams as data),
//!   `lane` (one tenant × source: its identity, keys and file), `format` (the record
//!   shapes of `record_format`, one file each), `dedup` (each record's key, the
//!   seen-set, below both the sinks and the state stores), `retry` (backoff,
//!   Retry-After), and
//!   `error` (one type per boundary, an option's `ConfigError` among them).
//! - The adapters, each receiving its own settings and never the configuration (as
//!   ripgrep's search crates never see its flags): `redis_client` (TLS, Sentinel,
//!   Cluster, the pool, retries and advice: `RedisSettings`), `auth` (one file per
//!   credential kind: `Credential`, `Hosts`), `graph` (paging, the client of one lane),
//!   `budget` (the request gate, the windows shared in Redis, a run's request rate
//!   and deep-read allowance: `BudgetSettings`), `sink` (one file per backend:
//!   `SinkSettings`), `state` (model, Redis, file, the lock renewer, the takeover:
//!   `StateSettings`), `outcome` (what each frame came to, read by the report and
//!   the metrics so that they need not import the pipeline), `pipeline`.
//! - `config`: one declaration per option (`config::spec`), where values come from,
//!   the rules; it builds each lane and each adapter's settings once, above them.
//! - On top: `plan`, `setup`, `check`, `report`, `metrics`, `run`.
//!
//! Only what `msgx-once`'s `main` needs is public.

mod auth;
mod budget;
mod buffers;
mod check;
mod config;
mod dedup;
mod error;
pub mod exit;
mod files;
mod format;
mod graph;
mod ids;
mod keys;
mod lane;
mod logging;
mod metrics;
mod outcome;
mod page_memory;
pub use page_memory::tune_allocator;
mod pipeline;
mod plan;
mod redis_client;
mod report;
mod retry;
mod run;
mod secret;
mod setup;
mod shard;
mod shutdown;
mod sink;
mod sources;
mod state;
mod transport;
mod window;

pub use check::check;
pub use config::{Config, Invocation, asks_for_json, load, stray_variables};
pub use logging::{init as init_logging, print_errors};
pub use run::export;
