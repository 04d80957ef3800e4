//! One run of msgx-once: plan the window, wire the token source, Graph client, sink and
//! pipeline together, and report what happened in one summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::auth::{Credentials, TokenSource};
use crate::config::{Backend, Config, ConfigError, Source, StateMode};
use crate::error::{Error, exit};
use crate::graph::GraphClient;
use crate::graph::retry::{Backoff, RateLimit, RequestGate, RetryOptions};
use crate::graph::transport::{HttpTransport, TransportOptions, UreqTransport};
use crate::pipeline::{self, FrameOutcome, PipelineOptions};
use crate::shutdown::{self, Stop};
use crate::sink::dedup::DedupSink;
use crate::sink::{self, redis::Dedup, redis::REDIS_BACKOFF};
use crate::state::{self, FileState, Progress, RedisState, StateStore};
use crate::window::{self, ResumeLimits, Window};

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
    /// Where the next run starts, when this run keeps state.
    pub watermark: Option<OffsetDateTime>,
    /// The watermark could not be saved.
    pub state_error: Option<Error>,
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
        } else if self.failed().next().is_some() || self.state_error.is_some() {
            exit::INCOMPLETE
        } else {
            exit::OK
        }
    }

    /// Moves the watermark past the oldest-first run of complete frames and stores it.
    fn save_progress(&mut self, store: &dyn StateStore, previous: Option<Progress>) {
        let Some(start) = self.window.start() else {
            return;
        };
        let progress = previous.unwrap_or(Progress {
            watermark: start,
            origin: start,
        });
        let watermark = self
            .window
            .advance(progress.watermark, |i| self.frames[i].failure.is_none());
        match store.save(Progress {
            watermark,
            ..progress
        }) {
            Ok(()) => self.watermark = Some(watermark),
            Err(e) => {
                log::error!("{e}");
                self.state_error = Some(e);
            }
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
        if let Some(watermark) = self.watermark {
            line.push_str(&format!(" watermark {}", window::utc_second(watermark)));
        }
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

/// Graph keeps sign-ins for 30 days; a watermark older than that cannot be caught up.
const RETENTION: time::Duration = time::Duration::days(30);

/// The state of a stateful run: its store (locked) and what it loaded.
struct Resumed {
    store: Box<dyn StateStore>,
    progress: Option<Progress>,
}

/// Opens and locks the state store when this run keeps state: `state auto`, not a
/// backfill, and somewhere to keep it.
fn resume(config: &Config, retry: &RetryOptions) -> Result<Option<Resumed>, Error> {
    if config.state == StateMode::Off || config.since.is_some() {
        return Ok(None);
    }
    let mut store: Box<dyn StateStore> = match (config.queue_backend, &config.state_file) {
        (Backend::Redis, _) => Box::new(RedisState::new(config, retry.clone())?),
        (_, Some(path)) => Box::new(FileState::new(path, config.rescan)),
        (_, None) => {
            log::warn!(
                "state auto needs state_file with the log and file backends: running stateless (no watermark, no rescan, no lock)"
            );
            return Ok(None);
        }
    };
    store.lock()?;
    let progress = store.load()?;
    Ok(Some(Resumed { store, progress }))
}

/// The window of this run: a backfill, the original's lagged window (first or
/// stateless run), or from the stored watermark.
fn plan_run(
    config: &Config,
    now: OffsetDateTime,
    progress: Option<Progress>,
) -> Result<Window, ConfigError> {
    let Some(progress) = progress.filter(|_| config.since.is_none()) else {
        return plan(config, now);
    };
    let lagged_end = window::lagged_until(now, config.timelag);
    let oldest = window::truncate(now - RETENTION);
    let mut watermark = progress.watermark;
    if watermark < oldest {
        log::warn!(
            "the watermark {watermark} is older than Graph's 30-day retention: sign-ins before {oldest} are gone"
        );
        watermark = oldest;
    }
    let behind = (lagged_end - watermark).whole_seconds();
    if behind > config.max_catchup as i64 {
        log::warn!(
            "{behind} s behind (watermark {watermark}): this run catches up {} s, oldest first",
            config.max_catchup
        );
    }
    Ok(Window::resume(
        watermark,
        progress.origin.max(oldest),
        lagged_end,
        ResumeLimits {
            rescan: config.rescan,
            max_catchup: config.max_catchup,
            stream_frame: config.stream_frame,
        },
    ))
}

pub fn run(config: &Config) -> Result<RunReport, Error> {
    let started = Instant::now();
    let now = config.fixed_now.unwrap_or_else(OffsetDateTime::now_utc);
    // Checks a backfill's bounds before anything is locked or connected.
    plan(config, now)?;
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
    let redis_retry = RetryOptions {
        backoff: REDIS_BACKOFF,
        ..retry.clone()
    };
    let interrupted = |e: Error| match stop.requested() {
        Some(code) => Error::Interrupted(code),
        None => e,
    };
    let resumed = resume(config, &redis_retry).map_err(interrupted)?;
    let window = plan_run(config, now, resumed.as_ref().and_then(|r| r.progress))?;
    let dedup = (config.state == StateMode::Auto).then(|| Dedup {
        seen_key: state::redis_key(&config.queue_key, "seen"),
        floor: resumed
            .as_ref()
            .and(window.start())
            .map(|start| start.unix_timestamp()),
    });
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
    let mut sink = sink::open(config, redis_retry, dedup)?;
    if let Some(seen) = resumed.as_ref().and_then(|r| r.store.seen()) {
        sink = Box::new(DedupSink { inner: sink, seen });
    }
    // Redis first, then the token: a refusal of either ends the run before any frame.
    sink.check()
        .map_err(Error::from)
        .and_then(|()| Ok(tokens.bearer().map(drop)?))
        .map_err(interrupted)?;
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
    let mut report = RunReport {
        window,
        frames,
        elapsed: started.elapsed(),
        interrupted: stop.requested(),
        watermark: None,
        state_error: None,
    };
    if let Some(Resumed {
        mut store,
        progress,
    }) = resumed
    {
        report.save_progress(store.as_ref(), progress);
        store.unlock();
    }
    Ok(report)
}
