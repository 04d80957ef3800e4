//! One run of msgx-once: wire the state, token source, Graph client, sink and pipeline
//! together, and report what happened in one summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::auth::{Credentials, TokenSource};
use crate::budget::RedisBudget;
use crate::config::{Backend, Config};
use crate::error::{Error, GraphError, exit};
use crate::graph::GraphClient;
use crate::graph::client::{BudgetSpent, PageShape};
use crate::graph::retry::{Backoff, RateLimit, RequestGate, RetryOptions};
use crate::graph::transport::{HttpTransport, TransportOptions, UreqTransport};
use crate::pipeline::{self, FrameFailure, FrameOutcome, PipelineOptions};
use crate::plan::{self, Plan, Resumed};
use crate::shutdown::{self, Stop};
use crate::sink::dedup::DedupSink;
use crate::sink::{self, Sink, redis::Dedup, redis::REDIS_BACKOFF};
use crate::state::{self, Progress, StateStore};
use crate::window::{self, Frame, Window};

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
    /// Graph's budget this run spent.
    pub spent: BudgetSpent,
}

/// Unread ranges named one by one in the summary; more are counted.
const RANGES_SHOWN: usize = 8;

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
        let spent = &self.spent;
        let mut line = format!(
            "summary: window {} frames ok {} failed {} pages {} records {} delivered {} \
             requests {} throttled {} retries {} waited {:.1} seconds {:.3}",
            self.window,
            self.frames.len() - failed,
            failed,
            pages,
            records,
            delivered,
            spent.requests,
            spent.throttled,
            spent.retries,
            spent.waited.as_secs_f64(),
            self.elapsed.as_secs_f64()
        );
        if unkeyed > 0 {
            line.push_str(&format!(" unkeyed {unkeyed}"));
        }
        if let Some(watermark) = self.watermark {
            line.push_str(&format!(" watermark {}", window::utc_second(watermark)));
        }
        let unread = self.unread();
        if !unread.is_empty() {
            let shown: Vec<String> = unread
                .iter()
                .take(RANGES_SHOWN)
                .map(|r| {
                    format!(
                        "[--since {} --until {}]",
                        window::utc_second(r.start),
                        window::utc_second(r.end_exclusive())
                    )
                })
                .collect();
            line.push_str(&format!(" unread {}", shown.join(" ")));
            if unread.len() > RANGES_SHOWN {
                line.push_str(&format!(" and {} more", unread.len() - RANGES_SHOWN));
            }
            if self.watermark.is_some() {
                line.push_str(" (owed: the next run reads them)");
            }
        }
        line
    }

    /// Says how much the deadline left unread, how far behind that is, and what to
    /// change, when it ended the run.
    fn warn_if_cut_short(&self, deadline: Duration, lagged_end: OffsetDateTime) {
        let cut = self.failed().any(|f| {
            matches!(
                f.failure,
                Some(FrameFailure::Fetch(GraphError::Deadline { .. }))
            )
        });
        let unread = self.unread();
        let (true, Some(oldest)) = (cut, unread.first()) else {
            return;
        };
        let seconds: u64 = unread.iter().map(Frame::seconds).sum();
        let deadline = deadline.as_secs();
        if self.watermark.is_some() {
            log::warn!(
                "the deadline ({deadline} s) ended this run with {seconds} s of sign-ins unread, \
                 the oldest at {} ({} s behind): the next run reads them first; if runs keep \
                 ending this way, raise deadline, lower rescan or max_catchup, or run less often",
                window::utc_second(oldest.start),
                (lagged_end - oldest.start).whole_seconds()
            );
        } else {
            log::warn!(
                "the deadline ({deadline} s) ended this run with {seconds} s of sign-ins unread: \
                 export the unread ranges of the summary again, without --deadline"
            );
        }
    }

    /// What the failed frames left unread, as few contiguous ranges as can be.
    pub fn unread(&self) -> Vec<Frame> {
        window::merge(self.frames.iter().filter_map(|f| f.unfinished).collect())
    }
}

/// A cron run's deadline unless one is given: no request starts after it, so a stuck
/// run never overlaps several later ticks. A backfill has none unless given.
const CRON_DEADLINE: Duration = Duration::from_secs(300);

fn deadline(config: &Config) -> Duration {
    match (config.deadline, config.since) {
        (Some(deadline), _) => deadline,
        (None, None) => CRON_DEADLINE,
        // A century: never, in a form `Instant` arithmetic takes.
        (None, Some(_)) => Duration::from_secs(100 * 365 * 86_400),
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
    let gate = Arc::new(request_gate(config, &stop)?);
    stop_on_signals(&stop, &gate, &transport)?;
    let retry = RetryOptions {
        max_retries: config.max_retries,
        backoff: BACKOFF,
        deadline: started + deadline(config),
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
            progress_every: config.progress_every,
        },
    )?;
    log_failures(&frames);
    let lagged_end = window::lagged_until(now, config.timelag);
    let mut report = RunReport {
        window,
        frames,
        elapsed: started.elapsed(),
        interrupted: stop.requested(),
        watermark: None,
        state_error: state_lost,
        spent: client.spent(),
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
    report.warn_if_cut_short(deadline(config), lagged_end);
    Ok(report)
}

/// The gate that keeps every stream within `rate_limit`; with the Redis backend its
/// window is shared with every other process of this app and tenant. Other backends
/// pace this process alone.
fn request_gate(config: &Config, stop: &Stop) -> Result<RequestGate, Error> {
    let limit = config
        .rate_limit
        .map(|(requests, per)| RateLimit { requests, per });
    let gate = RequestGate::new(limit, stop.clone());
    Ok(match (limit, config.queue_backend) {
        (Some(limit), Backend::Redis) => {
            gate.with_shared(Box::new(RedisBudget::new(config, limit)?))
        }
        _ => gate,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_config;

    #[test]
    fn backfills_have_no_deadline_unless_given() {
        assert_eq!(deadline(&test_config(&[])), CRON_DEADLINE);
        assert_eq!(
            deadline(&test_config(&["--deadline", "9"])),
            Duration::from_secs(9)
        );
        let backfill = [
            "--since",
            "2026-01-01T00:00:00Z",
            "--until",
            "2026-01-02T00:00:00Z",
        ];
        assert!(deadline(&test_config(&backfill)) > Duration::from_secs(86_400 * 365));
        let mut limited = backfill.to_vec();
        limited.extend(["--deadline", "60"]);
        assert_eq!(deadline(&test_config(&limited)), Duration::from_secs(60));
    }
}
