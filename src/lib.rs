//! msgx: export time-domain audit data (Entra ID sign-ins and the other audit streams)
//! from Microsoft Graph into Redis, one synchronous batch run at a time.
//!
//! [`export`] is one cron run: `run::run` sets up what requests need (`setup`:
//! the HTTP `transport`, a token per tenant from `auth`, the request gates of each
//! tenant's buckets and of the app across tenants from `budget`); for each tenant ×
//! source of the `config` it opens its `state` (lock and progress) and `plan`s the
//! frames of a `window` — each second read when due and once more later —; the
//! `pipeline` fetches every lane's frames from `graph` on shared fetchers — as many
//! requests in flight as Graph's latency calls for — and hands each page's records, in
//! chunks as they arrive, to the lane's `sink`; then the progress is saved and the `report` is
//! logged and turned into `metrics`. `--check` is
//! `check`. Errors map to exit codes in `error` ([`exit`]).
//!
//! # Layout
//!
//! Dependencies point downward; no two modules import each other.
//!
//! - At the bottom, knowing nothing of the rest: [`exit`] codes, `ids`,
//!   `secret`, `files` (regular files only, capped), `buffers`, `page_memory` (the
//!   byte budget of chunks in flight), `keys` (Redis key names and hash tags), `window`,
//!   `logging`, `shard` (a fleet's tenants over K processes), the HTTP `transport`;
//!   then `shutdown` (signals) and `sources`
//!   (the audit streams as data), and on it `format` (the record shapes of
//!   `record_format`, one file each).
//! - `config`: one declaration per option (`config::spec`), where values come from,
//!   credentials as a table of kinds, sinks and targets, the rules; each source's
//!   share of a run built once (a `lane` each). `retry` (backoff,
//!   Retry-After) beside it; `error` above both.
//! - The middle: the Redis client every part that talks to Redis shares
//!   (`redis_client`: TLS, Sentinel, Cluster, the pool, retries and advice), and on
//!   it and the transport: `auth` (one file per credential kind), `graph` (paging,
//!   the client of one source), `budget` (the request gate, the windows shared in
//!   Redis, a run's request rate and deep-read allowance), `sink` (one file per
//!   backend), `state`
//!   (model, Redis, file, the lock renewer), `outcome` (what each frame came to:
//!   what `report` and `metrics` read, so they need not import the pipeline),
//!   `pipeline`, `plan`, `setup`.
//! - On top: `check`, `report`, `metrics`, `run`.
//!
//! Only what `msgx-once`'s `main` needs is public.

mod auth;
mod budget;
mod buffers;
mod check;
mod config;
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
