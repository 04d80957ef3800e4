//! One run of msgx-once: plan the window, wire the token source, Graph client, sink and
//! pipeline together, and report what happened in one summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::auth::{Credentials, TokenSource};
use crate::config::{Config, ConfigError, Source};
use crate::error::{Error, exit};
use crate::graph::GraphClient;
use crate::graph::retry::{Backoff, RateLimit, RequestGate, RetryOptions};
use crate::graph::transport::{HttpTransport, TransportOptions, UreqTransport};
use crate::pipeline::{self, FrameOutcome, PipelineOptions};
use crate::shutdown::{self, Stop};
use crate::sink::{self, redis::REDIS_BACKOFF};
use crate::window::{self, Window};

/// Largest Graph response accepted (after decompression): a 1000-record page is a few
/// MB, so this only stops a runaway body from exhausting memory.
const BODY_LIMIT: u64 = 64 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff of retries without a Retry-After: full jitter up to 1 s, 2 s, 4 s … 60 s.
const BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60),
};

pub struct RunReport {
    pub window: Window,
    pub frames: Vec<FrameOutcome>,
    pub elapsed: Duration,
    /// The exit code a SIGTERM/SIGINT asked for.
    pub interrupted: Option<u8>,
}

impl RunReport {
    pub fn failed(&self) -> impl Iterator<Item = &FrameOutcome> {
        self.frames.iter().filter(|f| f.failure.is_some())
    }

    pub fn exit_code(&self) -> u8 {
        if let Some(code) = self.interrupted {
            code
        } else if self.frames.iter().any(FrameOutcome::auth_refused) {
            exit::AUTH
        } else if self.failed().next().is_some() {
            exit::INCOMPLETE
        } else {
            exit::OK
        }
    }

    /// The run's last log line.
    pub fn summary(&self) -> String {
        let failed = self.failed().count();
        let pages: u64 = self.frames.iter().map(|f| f.pages).sum();
        let records: u64 = self.frames.iter().map(|f| f.records).sum();
        let mut line = format!(
            "summary: window {} frames ok {} failed {} pages {} records {} seconds {:.3}",
            self.window,
            self.frames.len() - failed,
            failed,
            pages,
            records,
            self.elapsed.as_secs_f64()
        );
        if failed > 0 {
            let spans: Vec<String> = self.failed().map(|f| f.frame.to_string()).collect();
            line.push_str(&format!(" failed_frames {}", spans.join(" ")));
        }
        line
    }
}

/// The window this invocation exports: a backfill when `since` is set, otherwise the
/// original's lagged window.
pub fn plan(config: &Config, now: OffsetDateTime) -> Result<Window, ConfigError> {
    let Some(since) = config.since else {
        return Ok(Window::lagged(
            now,
            config.timelag,
            config.streams,
            config.stream_frame,
        ));
    };
    let until = match config.until {
        Some(until) => until,
        None => {
            let until = window::lagged_until(now, config.timelag);
            if since >= until {
                return Err(ConfigError::new(
                    "since",
                    Source::Cli,
                    format!("not before the end of the lagged window ({until})"),
                    "a time before now minus timelag, or an explicit --until",
                ));
            }
            until
        }
    };
    Ok(Window::backfill(since, until, config.stream_frame))
}

pub fn run(config: &Config) -> Result<RunReport, Error> {
    let started = Instant::now();
    let now = config.fixed_now.unwrap_or_else(OffsetDateTime::now_utc);
    let window = plan(config, now)?;
    // Both ureq and redis's TLS use rustls with ring; installing it explicitly avoids
    // depending on which crate happens to pick a provider first.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let transport: Arc<dyn HttpTransport> = Arc::new(UreqTransport::new(&TransportOptions {
        timeout: config.http_timeout,
        connect_timeout: CONNECT_TIMEOUT.min(config.http_timeout),
        idle_per_host: config.streams + 1,
        body_limit: BODY_LIMIT,
    }));
    let stop = Stop::default();
    let gate = Arc::new(RequestGate::new(
        config
            .rate_limit
            .map(|(requests, per)| RateLimit { requests, per }),
        stop.clone(),
    ));
    {
        let (gate, transport) = (gate.clone(), transport.clone());
        shutdown::watch_signals(stop.clone(), move || {
            gate.wake_all();
            transport.abort();
        })
        .map_err(|e| Error::Setup(format!("cannot watch for SIGTERM/SIGINT: {e}")))?;
    }
    let retry = RetryOptions {
        max_retries: config.max_retries,
        backoff: BACKOFF,
        deadline: started + config.deadline,
        stop: stop.clone(),
    };
    let tokens = Arc::new(TokenSource::new(
        transport.clone(),
        Credentials {
            login_url: config.login_url.clone(),
            tenant: config.tenant.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scope: format!(
                "{}/.default",
                config.graph_url.as_str().trim_end_matches('/')
            ),
        },
    ));
    let sink = sink::open(
        config,
        RetryOptions {
            backoff: REDIS_BACKOFF,
            ..retry.clone()
        },
    )?;
    // Redis first, then the token: a refusal of either ends the run before any frame.
    let ready = sink
        .check()
        .map_err(Error::from)
        .and_then(|()| Ok(tokens.bearer().map(drop)?));
    if let Err(e) = ready {
        return Err(match stop.requested() {
            Some(code) => Error::Interrupted(code),
            None => e,
        });
    }
    let client = GraphClient::new(
        transport,
        tokens,
        config.graph_url.clone(),
        config.page_size,
        gate,
        retry,
    );

    log::info!(
        "exporting window {window} in {} frames with {} streams",
        window.frames.len(),
        config.streams
    );
    let frames = pipeline::run(
        &window.frames,
        &client,
        sink.as_ref(),
        &PipelineOptions {
            streams: config.streams,
            writers: config.greenlets_count,
            queue_capacity: config.streams.max(2),
        },
    )?;
    for outcome in &frames {
        if let Some(failure) = &outcome.failure {
            log::error!(
                "frame {} incomplete ({} pages, {} records written): {failure}",
                outcome.frame,
                outcome.pages,
                outcome.records
            );
        }
    }
    Ok(RunReport {
        window,
        frames,
        elapsed: started.elapsed(),
        interrupted: stop.requested(),
    })
}
