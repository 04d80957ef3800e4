//! What a run and `--check` both stand on: the crypto provider, the HTTP transport, a
//! stop that signals set, the request gates of every tenant's buckets and the app's
//! (shared through Redis),
//! the retry limits of Graph and Redis requests, and the token source — built one way,
//! so a check reaches Graph exactly as a run does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::TokenSource;
use crate::budget::Gates;
use crate::config::Config;
use crate::error::Error;
use crate::redis_client::REDIS_BACKOFF;
use crate::retry::{Backoff, RetryOptions};
use crate::shutdown::{self, Stop};
use crate::transport::{HttpTransport, TransportOptions, UreqTransport};

/// The longest a connection to Graph or the identity platform may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff of retries without a Retry-After: full jitter up to 1 s, 2 s, 4 s … 60 s.
const BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60),
};

pub struct Setup {
    pub transport: Arc<dyn HttpTransport>,
    /// Set by SIGTERM/SIGINT.
    pub stop: Stop,
    pub gates: Arc<Gates>,
    /// Graph's and the identity platform's requests.
    pub retry: RetryOptions,
    /// Redis commands: the same limits, a shorter backoff.
    pub redis_retry: RetryOptions,
}

impl Setup {
    /// Everything requests need, no request started after `deadline`, a transient
    /// failure retried `max_retries` times.
    pub fn new(config: &Config, deadline: Instant, max_retries: u32) -> Result<Self, Error> {
        install_crypto();
        let transport: Arc<dyn HttpTransport> = Arc::new(UreqTransport::new(&TransportOptions {
            timeout: config.options.http_timeout,
            connect_timeout: CONNECT_TIMEOUT.min(config.options.http_timeout),
            idle_per_host: config.fetchers() + 1,
            // Token and metadata answers, read whole (pages are read as they arrive).
            body_limit: 1 << 20,
        }));
        let stop = Stop::default();
        let gates = Arc::new(Gates::new(&config.budget_settings(), &stop)?);
        stop_on_signals(&stop, &gates, &transport)?;
        let retry = RetryOptions {
            max_retries,
            backoff: BACKOFF.scaled(config.backoff_scale),
            deadline,
            stop: stop.clone(),
        };
        let redis_retry = RetryOptions {
            backoff: REDIS_BACKOFF.scaled(config.backoff_scale),
            ..retry.clone()
        };
        Ok(Setup {
            transport,
            stop,
            gates,
            retry,
            redis_retry,
        })
    }

    /// The token source of the configured credential in `tenant` (None: its own; its
    /// file read, its certificate checked); no token is asked for yet.
    pub fn tokens(&self, config: &Config, tenant: Option<&str>) -> Result<Arc<TokenSource>, Error> {
        Ok(Arc::new(TokenSource::new(
            self.transport.clone(),
            &config.hosts(),
            &config.credential_in(tenant),
            self.retry.clone(),
        )?))
    }

    /// The error a signal turns `e` into, when one came.
    pub fn interrupted(&self, e: Error) -> Error {
        match self.stop.requested() {
            Some(code) => Error::Interrupted(code),
            None => e,
        }
    }
}

/// Both ureq and redis's TLS use rustls with ring: installed explicitly, before any
/// connection, rather than depending on which crate happens to pick a provider first.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// On SIGTERM/SIGINT: wake every stream waiting for a turn and abort requests in flight.
fn stop_on_signals(
    stop: &Stop,
    gates: &Arc<Gates>,
    transport: &Arc<dyn HttpTransport>,
) -> Result<(), Error> {
    let (gates, transport) = (gates.clone(), transport.clone());
    shutdown::watch_signals(stop.clone(), move || {
        gates.wake_all();
        transport.abort();
    })
    .map_err(|e| Error::Setup(format!("cannot watch for SIGTERM/SIGINT: {e}")))
}
