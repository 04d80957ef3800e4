//! msgx: export time-domain audit data (Entra ID sign-ins and the other audit streams)
//! from Microsoft Graph into Redis, one synchronous batch run at a time.
//!
//! A run ([`run::run`]) gets a token ([`auth`]); for each of the configured
//! [`sources`] it takes the lock and progress from its [`state`] and [`plan`]s the
//! frames of a [`window`] from the [`config`] — each second read when due and once more
//! later —; then it fetches every source's frames in parallel from [`graph`], within
//! one request budget per throttling bucket shared with other processes ([`budget`]),
//! and hands the pages to each source's [`sink`] through the [`pipeline`];
//! [`shutdown`] turns signals into an orderly stop. Errors and exit codes are in
//! [`error`].
//!
//! # Layout
//!
//! Dependencies point downward. At the bottom: the HTTP [`transport`], the [`retry`]
//! policy (backoff, the request gate), Redis connections ([`sink::redis`]), [`secret`],
//! [`ids`], [`buffers`], [`sources`] (the audit streams as data) and [`window`]. In the
//! middle: [`config`] (one declaration per option), [`auth`] (one file per credential
//! kind), [`graph`] (paging and the client of one source), [`budget`], [`sink`],
//! [`state`], [`plan`] and the [`pipeline`]. On top: [`run`], the [`metrics`] of its
//! report, and the doctor of `--check` ([`check`]).

pub mod auth;
pub mod budget;
pub mod buffers;
pub mod check;
pub mod config;
pub mod error;
pub mod graph;
pub mod ids;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod retry;
pub mod run;
pub mod secret;
pub mod shutdown;
pub mod sink;
pub mod sources;
pub mod state;
pub mod transport;
pub mod window;

pub use run::{RunReport, run};
