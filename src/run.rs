//! One run of msgx-once: wire the state, token source, Graph client, sink and pipeline
//! together, and report what happened in one summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::auth::{Credentials, TokenSource};
use crate::config::Config;
use crate::error::{Error, exit};
use crate::graph::GraphClient;
use crate::graph::client::PageShape;
use crate::graph::retry::{Backoff, RateLimit, RequestGate, RetryOptions};
use crate::graph::transport::{HttpTransport, TransportOptions, UreqTransport};
use crate::pipeline::{self, FrameOutcome, PipelineOptions};
use crate::plan::{self, Plan, Resumed};
use crate::shutdown::{self, Stop};
use crate::sink::dedup::DedupSink;
use crate::sink::{self, Sink, redis::Dedup, redis::REDIS_BACKOFF};
use crate::state::{self, Progress, StateStore};
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

    /// Stores where the plan's reads leave the progress: the frontiers move on, and
    /// the unfinished parts of failed frames are owed to later runs. An empty window
    /// leaves it as it is; any other window has `progress` to start from (a first run
    /// stored its start before exporting).
    fn save_progress(&mut self, store: &dyn StateStore, plan: &Plan, progress: Option<Progress>) {
        let Some(progress) = progress.filter(|_| self.window.start().is_some()) else {
            return;
        };
        let next = plan.after(&progress, |i| self.frames[i].unfinished);
        match store.save(next.clone()) {
            Ok(()) => self.watermark = Some(next.watermark),
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
        let delivered: u64 = self.frames.iter().map(|f| f.delivered).sum();
        let unkeyed: u64 = self.frames.iter().map(|f| f.unkeyed).sum();
        let mut line = format!(
            "summary: window {} frames ok {} failed {} pages {} records {} delivered {} seconds {:.3}",
            self.window,
            self.frames.len() - failed,
            failed,
            pages,
            records,
            delivered,
            self.elapsed.as_secs_f64()
        );
        if unkeyed > 0 {
            line.push_str(&format!(" unkeyed {unkeyed}"));
        }
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

pub fn run(config: &Config) -> Result<RunReport, Error> {
    let started = Instant::now();
    let local_now = config.fixed_now.unwrap_or_else(OffsetDateTime::now_utc);
    // A backfill's or the original's window, planned (and a bad range refused) before
    // anything is locked or connected; a run with a watermark replaces it below.
    let planned = plan::plan(config, local_now)?;
    // Both ureq and redis's TLS use rustls with ring; installing it explicitly avoids
    // depending on which crate happens to pick a provider first.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let transport = http_transport(config);
    let stop = Stop::default();
    let gate = Arc::new(RequestGate::new(
        config
            .rate_limit
            .map(|(requests, per)| RateLimit { requests, per }),
        stop.clone(),
    ));
    stop_on_signals(&stop, &gate, &transport)?;
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
    // The first token comes before the window: its Date header is Microsoft's clock,
    // and a host clock running ahead must not plan (and store) seconds Graph cannot
    // have yet. A refusal ends the run before anything else is touched.
    let tokens = Arc::new(token_source(config, transport.clone()));
    tokens.bearer().map_err(Error::from).map_err(interrupted)?;
    let now = plan::bound_by_server(local_now, tokens.server_now());
    let planned = if now == local_now {
        planned
    } else {
        plan::plan(config, now)?
    };
    let mut resumed = plan::resume(config, &redis_retry).map_err(interrupted)?;
    let plan = resumed.as_ref().map(|r| match &r.progress {
        Some(progress) => Plan::resume(config, now, progress),
        None => Plan::first_run(config, now, planned.clone()),
    });
    let window = plan.as_ref().map_or(planned, |p| p.window.clone());
    let state_lost = match &mut resumed {
        Some(resumed) => resumed.start_first_run(&window)?,
        None => None,
    };
    let sink = open_sink(config, redis_retry, resumed.as_ref(), &window)?;
    // A Redis that refuses ends the run before any frame.
    sink.check().map_err(Error::from).map_err(interrupted)?;
    let client = GraphClient::new(
        transport,
        tokens,
        config.graph_url.clone(),
        PageShape {
            page_size: config.page_size,
            select: config.select.clone(),
        },
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
            keyed: resumed.is_some(),
        },
    )?;
    log_failures(&frames);
    let mut report = RunReport {
        window,
        frames,
        elapsed: started.elapsed(),
        interrupted: stop.requested(),
        watermark: None,
        state_error: state_lost,
    };
    if let (
        Some(Resumed {
            mut store,
            progress,
        }),
        Some(plan),
    ) = (resumed, plan)
    {
        report.save_progress(store.as_ref(), &plan, progress);
        store.unlock();
    }
    Ok(report)
}

fn http_transport(config: &Config) -> Arc<dyn HttpTransport> {
    Arc::new(UreqTransport::new(&TransportOptions {
        timeout: config.http_timeout,
        connect_timeout: CONNECT_TIMEOUT.min(config.http_timeout),
        idle_per_host: config.streams + 1,
        body_limit: BODY_LIMIT,
    }))
}

/// On SIGTERM/SIGINT: wake every stream waiting for a turn and abort requests in flight.
fn stop_on_signals(
    stop: &Stop,
    gate: &Arc<RequestGate>,
    transport: &Arc<dyn HttpTransport>,
) -> Result<(), Error> {
    let (gate, transport) = (gate.clone(), transport.clone());
    shutdown::watch_signals(stop.clone(), move || {
        gate.wake_all();
        transport.abort();
    })
    .map_err(|e| Error::Setup(format!("cannot watch for SIGTERM/SIGINT: {e}")))
}

fn token_source(config: &Config, transport: Arc<dyn HttpTransport>) -> TokenSource {
    TokenSource::new(
        transport,
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
    )
}

/// The configured sink, deduplicating when the run keeps state: in Redis with a
/// seen-set pruned below the oldest second still to be read, otherwise through the state file's seen
/// ids. A backfill writes every record of its range.
fn open_sink(
    config: &Config,
    redis_retry: RetryOptions,
    resumed: Option<&Resumed>,
    window: &Window,
) -> Result<Box<dyn Sink>, Error> {
    // Ids are kept as long as any run may read their second again: this one, or a
    // later one's second read or owed range.
    let dedup = resumed.map(|r| Dedup {
        seen_key: state::redis_key(&config.queue_key, "seen"),
        floor: window
            .start()
            .map(|start| r.progress.as_ref().map_or(start, |p| p.floor().min(start)))
            .map(|floor| floor.unix_timestamp()),
    });
    let sink = sink::open(config, redis_retry, dedup)?;
    Ok(match resumed.and_then(|r| r.store.seen()) {
        Some(seen) => Box::new(DedupSink::new(sink, seen)),
        None => sink,
    })
}

fn log_failures(frames: &[FrameOutcome]) {
    for outcome in frames {
        if let Some(failure) = &outcome.failure {
            log::error!(
                "frame {} incomplete ({} pages, {} records written): {failure}",
                outcome.frame,
                outcome.pages,
                outcome.records
            );
        }
    }
}
