//! One run of msgx-once: wire the state, token source, Graph client, sink and pipeline
//! together, and report what happened in one summary.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::auth::TokenSource;
use crate::config::{Backend, Config};
use crate::error::{Error, GraphError, exit};
use crate::graph::GraphClient;
use crate::graph::client::{BudgetSpent, PageShape};
use crate::pipeline::{self, FrameFailure, FrameOutcome, Job, Lane, PipelineOptions};
use crate::plan::{self, Plan, Resumed};
use crate::retry::{Backoff, RequestGate, RetryOptions};
use crate::shutdown::{self, Stop};
use crate::sink::dedup::DedupSink;
use crate::sink::redis::{Dedup, REDIS_BACKOFF, RedisPool};
use crate::sink::{self, Sink};
use crate::sources::{Bucket, SourceSpec};
use crate::state::{Progress, StateStore};
use crate::transport::{HttpTransport, TransportOptions, UreqTransport};
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

/// What one source's export did.
pub struct SourceReport {
    pub source: &'static SourceSpec,
    pub window: Window,
    pub frames: Vec<FrameOutcome>,
    /// Where the next run starts, when this run keeps state.
    pub watermark: Option<OffsetDateTime>,
    /// The oldest second still to be read the first time after this run (owed, or the
    /// watermark), when this run keeps state.
    pub oldest_unread: Option<OffsetDateTime>,
    /// The watermark could not be saved, or the state was lost.
    pub state_error: Option<Error>,
    /// Graph's budget this source spent.
    pub spent: BudgetSpent,
    /// Its requests by HTTP status (`error`: no answer).
    pub requests_by_code: BTreeMap<String, u64>,
}

pub struct RunReport {
    /// One per source, in the order of `sources`.
    pub sources: Vec<SourceReport>,
    pub elapsed: Duration,
    /// The exit code a SIGTERM/SIGINT asked for.
    pub interrupted: Option<u8>,
}

/// Unread ranges named one by one in the summary; more are counted.
const RANGES_SHOWN: usize = 8;

impl SourceReport {
    pub fn failed(&self) -> impl Iterator<Item = &FrameOutcome> {
        self.frames.iter().filter(|f| f.failure.is_some())
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
            Ok(()) => {
                self.watermark = Some(next.watermark);
                self.oldest_unread = next
                    .owed_first
                    .iter()
                    .map(|r| r.start)
                    .chain([next.watermark])
                    .min();
            }
            Err(e) => {
                log::error!("{e}");
                self.state_error = Some(e);
            }
        }
    }

    /// The summary's figures of this source: window, frames, records, budget,
    /// watermark and what is left unread.
    fn figures(&self, elapsed: Duration) -> Vec<(&'static str, String)> {
        let mut fields = totals(&self.frames, &self.spent, elapsed);
        fields.insert(0, ("window", self.window.to_string()));
        if let Some(watermark) = self.watermark {
            fields.push(("watermark", window::utc_second(watermark)));
        }
        let unread = self.unread();
        if !unread.is_empty() {
            let mut shown: Vec<String> = unread
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
            if unread.len() > RANGES_SHOWN {
                shown.push(format!("and {} more", unread.len() - RANGES_SHOWN));
            }
            if self.watermark.is_some() {
                shown.push("(owed: the next run reads them)".into());
            }
            fields.push(("unread", shown.join(" ")));
        }
        fields
    }

    /// Says how much the deadline left unread, how far behind that is, and what to
    /// change, when it ended the run.
    fn warn_if_cut_short(&self, deadline: Duration, lagged_end: OffsetDateTime, several: bool) {
        let cut = self.failed().any(|f| {
            matches!(
                f.failure,
                Some(FrameFailure::Fetch(GraphError::Deadline { .. }))
            )
        });
        let paused = self.failed().find_map(|f| match &f.failure {
            Some(FrameFailure::Fetch(GraphError::Paused { key, left, by, .. })) => {
                Some((key, left, by))
            }
            _ => None,
        });
        let unread = self.unread();
        let Some(oldest) = unread.first() else {
            return;
        };
        let seconds: u64 = unread.iter().map(Frame::seconds).sum();
        let deadline = deadline.as_secs();
        let what = if several || !self.source.is_sign_ins() {
            format!("{} records", self.source.name)
        } else {
            "sign-ins".to_string()
        };
        if let Some((key, left, by)) = paused {
            let next = match self.watermark {
                Some(_) => "the next run reads them first",
                None => "export the unread ranges of the summary again once it lifts",
            };
            log::warn!(
                "the request budget shared with other processes is paused for {:.0} s more \
                 ({key}, set by {by}), past this run's deadline ({deadline} s): {seconds} s of \
                 {what} unread; {next}; if no 429 of yours set it, delete {key}",
                left.as_secs_f64()
            );
            return;
        }
        if !cut {
            return;
        }
        if self.watermark.is_some() {
            log::warn!(
                "the deadline ({deadline} s) ended this run with {seconds} s of {what} unread, \
                 the oldest at {} ({} s behind): the next run reads them first; if runs keep \
                 ending this way, raise deadline, lower rescan or max_catchup, or run less often",
                window::utc_second(oldest.start),
                (lagged_end - oldest.start).whole_seconds()
            );
        } else {
            log::warn!(
                "the deadline ({deadline} s) ended this run with {seconds} s of {what} unread: \
                 export the unread ranges of the summary again, without --deadline"
            );
        }
    }

    /// What the failed frames left unread, as few contiguous ranges as can be.
    pub fn unread(&self) -> Vec<Frame> {
        window::merge(self.frames.iter().filter_map(|f| f.unfinished).collect())
    }
}

impl RunReport {
    pub fn failed(&self) -> impl Iterator<Item = &FrameOutcome> {
        self.sources.iter().flat_map(SourceReport::failed)
    }

    pub fn exit_code(&self) -> u8 {
        let frames = || self.sources.iter().flat_map(|s| &s.frames);
        if let Some(code) = self.interrupted {
            code
        } else if frames().any(FrameOutcome::auth_refused) {
            exit::AUTH
        } else if self.failed().next().is_some()
            || self.sources.iter().any(|s| s.state_error.is_some())
        {
            exit::INCOMPLETE
        } else {
            exit::OK
        }
    }

    /// The run's last log lines: with one source the original's one `summary:` line;
    /// with several, one `summary of {source}:` line each, then the `summary:` line
    /// with the run's totals. Each line also comes as fields (for JSON logs).
    pub fn summary(&self) -> Vec<Summary> {
        if let [only] = self.sources.as_slice() {
            return vec![Summary::new("summary:", only.figures(self.elapsed))];
        }
        let mut lines: Vec<Summary> = self
            .sources
            .iter()
            .map(|s| {
                let mut summary = Summary::new(
                    &format!("summary of {}:", s.source.name),
                    s.figures(self.elapsed),
                );
                summary
                    .fields
                    .insert(0, ("source", s.source.name.to_string()));
                summary
            })
            .collect();
        let frames: Vec<FrameOutcome> = self
            .sources
            .iter()
            .flat_map(|s| s.frames.iter().cloned())
            .collect();
        let spent: BudgetSpent = self.sources.iter().map(|s| s.spent).sum();
        let mut fields = totals(&frames, &spent, self.elapsed);
        fields.insert(0, ("sources", self.sources.len().to_string()));
        let incomplete: Vec<&str> = self
            .sources
            .iter()
            .filter(|s| s.failed().next().is_some() || s.state_error.is_some())
            .map(|s| s.source.name)
            .collect();
        if !incomplete.is_empty() {
            fields.push(("incomplete", incomplete.join(",")));
        }
        lines.push(Summary::new("summary:", fields));
        lines
    }
}

/// One summary line: its text, and its figures as fields.
pub struct Summary {
    pub text: String,
    pub fields: Vec<(&'static str, String)>,
}

impl Summary {
    /// `title` and the fields as `label value` pairs, e.g. `frames ok 2 failed 0`.
    fn new(title: &str, fields: Vec<(&'static str, String)>) -> Self {
        let label = |key: &'static str| match key {
            "frames_ok" => "frames ok",
            "frames_failed" => "failed",
            other => other,
        };
        let mut text = title.to_string();
        for (key, value) in fields.iter().filter(|(key, _)| *key != "source") {
            text.push_str(&format!(" {} {value}", label(key)));
        }
        Summary { text, fields }
    }
}

/// The figures every summary line has: frames, pages, records, the budget spent and
/// the run's seconds (`unkeyed` only when some records had no usable id).
fn totals(
    frames: &[FrameOutcome],
    spent: &BudgetSpent,
    elapsed: Duration,
) -> Vec<(&'static str, String)> {
    let failed = frames.iter().filter(|f| f.failure.is_some()).count();
    let sum = |figure: fn(&FrameOutcome) -> u64| frames.iter().map(figure).sum::<u64>();
    let mut fields = vec![
        ("frames_ok", (frames.len() - failed).to_string()),
        ("frames_failed", failed.to_string()),
        ("pages", sum(|f| f.pages).to_string()),
        ("records", sum(|f| f.records).to_string()),
        ("delivered", sum(|f| f.delivered).to_string()),
        ("requests", spent.requests.to_string()),
        ("throttled", spent.throttled.to_string()),
        ("retries", spent.retries.to_string()),
        ("waited", format!("{:.1}", spent.waited.as_secs_f64())),
        ("seconds", format!("{:.3}", elapsed.as_secs_f64())),
    ];
    let unkeyed = sum(|f| f.unkeyed);
    if unkeyed > 0 {
        fields.push(("unkeyed", unkeyed.to_string()));
    }
    let unheard = sum(|f| f.unheard);
    if unheard > 0 {
        fields.push(("unheard", unheard.to_string()));
    }
    fields
}

/// One source's export as prepared: its state (locked), plan, window and sink.
struct Export {
    config: Config,
    resumed: Option<Resumed>,
    plan: Option<Plan>,
    window: Window,
    state_lost: Option<Error>,
    sink: Box<dyn Sink>,
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
    let gates = crate::budget::gates(config, &stop)?;
    stop_on_signals(&stop, &gates, &transport)?;
    let retry = RetryOptions {
        max_retries: config.max_retries,
        backoff: BACKOFF.scaled(config.backoff_scale),
        deadline: started + config.run_deadline(),
        stop: stop.clone(),
    };
    let redis_retry = RetryOptions {
        backoff: REDIS_BACKOFF.scaled(config.backoff_scale),
        ..retry.clone()
    };
    let interrupted = |e: Error| match stop.requested() {
        Some(code) => Error::Interrupted(code),
        None => e,
    };
    // The first token comes before the window: its Date header is Microsoft's clock,
    // and a host clock running ahead must not plan (and store) seconds Graph cannot
    // have yet. A refusal ends the run before anything else is touched.
    let tokens = Arc::new(TokenSource::new(transport.clone(), config, retry.clone())?);
    tokens.bearer().map_err(Error::from).map_err(interrupted)?;
    let now = plan::bound_by_server(local_now, tokens.server_now());
    let planned = if now == local_now {
        planned
    } else {
        plan::plan(config, now)?
    };
    plan::warn_if_until_ahead(config, now);
    // Each source has its own state, lock, plan and sink; a lock another run holds
    // ends the run (the locks taken so far are released as the exports drop).
    let several = config.sources.len() > 1;
    let connections = match config.queue_backend {
        Backend::Redis => Some(RedisPool::new(config)?),
        _ => None,
    };
    let target = SinkTarget {
        connections: connections.as_ref(),
        retry: &redis_retry,
        labelled: several,
    };
    let mut exports = Vec::with_capacity(config.sources.len());
    for source in &config.sources {
        let export =
            prepare(config.for_source(source), now, &planned, &target).map_err(interrupted)?;
        exports.push(export);
    }
    let clients: Vec<GraphClient> = exports
        .iter()
        .map(|export| {
            let source = export.config.sources[0];
            GraphClient::new(
                transport.clone(),
                tokens.clone(),
                config.graph_url.clone(),
                PageShape {
                    source,
                    page_size: export.config.page_size,
                    select: export.config.select.clone(),
                },
                gates[&source.bucket].clone(),
                retry.clone(),
            )
        })
        .collect();
    let lanes: Vec<Lane> = exports
        .iter()
        .zip(&clients)
        .map(|(export, client)| Lane {
            client,
            sink: export.sink.as_ref(),
        })
        .collect();
    let windows: Vec<&Window> = exports.iter().map(|e| &e.window).collect();
    let jobs = order_jobs(
        &windows,
        window::lagged_until(now, config.timelag),
        config.rescan,
    );
    for export in &exports {
        log::info!(
            "exporting {}window {} in {} frames with {} streams",
            match config.sources.len() {
                1 => String::new(),
                _ => format!("{} ", export.config.sources[0].name),
            },
            export.window,
            export.window.frames.len(),
            config.streams
        );
    }
    let mut outcomes = pipeline::run(
        &jobs,
        &lanes,
        &PipelineOptions {
            streams: config.streams,
            writers: config.greenlets_count,
            queue_capacity: config.streams.max(2),
            keyed: exports.iter().any(|e| e.resumed.is_some()),
            progress_every: config.progress_every,
            name_sources: several,
            bar: wants_bar(config, &exports),
        },
    )?
    .into_iter()
    .zip(&jobs)
    .map(|(outcome, job)| (job.lane, outcome))
    .collect::<Vec<_>>();
    log_failures(outcomes.iter().map(|(_, o)| o), config.sources.len() > 1);
    let lagged_end = window::lagged_until(now, config.timelag);
    let mut sources = Vec::with_capacity(exports.len());
    for (lane, (export, client)) in exports.into_iter().zip(&clients).enumerate() {
        // The outcomes of a lane in the order of its window's frames.
        let frames: Vec<FrameOutcome> = outcomes
            .extract_if(.., |(l, _)| *l == lane)
            .map(|(_, outcome)| outcome)
            .collect();
        let mut report = SourceReport {
            source: client.source(),
            window: export.window,
            frames,
            watermark: None,
            oldest_unread: None,
            state_error: export.state_lost,
            spent: client.spent(),
            requests_by_code: client.requests_by_code(),
        };
        if let (
            Some(Resumed {
                mut store,
                progress,
            }),
            Some(plan),
        ) = (export.resumed, export.plan)
        {
            report.save_progress(store.as_ref(), &plan, progress);
            store.unlock();
        }
        report.warn_if_cut_short(config.run_deadline(), lagged_end, config.sources.len() > 1);
        sources.push(report);
    }
    Ok(RunReport {
        sources,
        elapsed: started.elapsed(),
        interrupted: stop.requested(),
    })
}

/// Takes one source's state and lock, plans its window and opens its sink; a Redis
/// that refuses ends the run before any frame.
fn prepare(
    config: Config,
    now: OffsetDateTime,
    planned: &Window,
    target: &SinkTarget,
) -> Result<Export, Error> {
    let mut resumed = plan::resume(&config, target.retry)?;
    if let Some(resumed) = &resumed {
        refuse_progress_ahead(resumed, now)?;
    }
    let plan = resumed.as_ref().map(|r| match &r.progress {
        Some(progress) => Plan::resume(&config, now, progress),
        None => Plan::first_run(&config, now, planned.clone()),
    });
    let window = plan.as_ref().map_or(planned.clone(), |p| p.window.clone());
    let state_lost = match &mut resumed {
        Some(resumed) => resumed.start_first_run(&window)?,
        None => None,
    };
    let sink = open_sink(&config, target, resumed.as_ref(), &window)?;
    sink.check()?;
    Ok(Export {
        config,
        resumed,
        plan,
        window,
        state_lost,
        sink,
    })
}

/// Stored progress past Microsoft's clock cannot come from a run (each run's "now" is
/// bounded by it): the state is damaged, or was written before that bound existed by
/// a host whose clock ran ahead. Taken at its word, every run would skip the seconds up
/// to it and exit 0; instead the run stops with what to repair.
fn refuse_progress_ahead(resumed: &Resumed, now: OffsetDateTime) -> Result<(), Error> {
    let Some(progress) = &resumed.progress else {
        return Ok(());
    };
    let (field, latest) = progress.latest();
    // Microsoft's `Date` has whole seconds: its clock may be up to a second later.
    if latest <= now + time::Duration::SECOND {
        return Ok(());
    }
    Err(Error::State(format!(
        "{}: {field} {} is ahead of Microsoft's clock ({}): the state is damaged (or was \
         written by a host whose clock ran ahead), and no run would export the seconds up to \
         it; repair it — {} — or delete it and backfill from the last export's end",
        resumed.store.location(),
        window::utc_second(latest),
        window::utc_second(now),
        resumed.store.repair(field)
    )))
}

/// A backfill or a catch-up (more than ten minutes to read) shows a progress bar, if
/// stderr is a terminal: never escape codes in a log file.
fn wants_bar(config: &Config, exports: &[Export]) -> bool {
    let seconds: u64 = exports
        .iter()
        .flat_map(|e| &e.window.frames)
        .map(Frame::seconds)
        .sum();
    std::io::stderr().is_terminal() && (config.since.is_some() || seconds > 600)
}

/// What every source's sink shares.
struct SinkTarget<'a> {
    /// The Redis connections of the redis backend.
    connections: Option<&'a RedisPool>,
    retry: &'a RetryOptions,
    /// Several sources: log lines name theirs.
    labelled: bool,
}

/// How recent a frame must be to count as a source's routine minute rather than a
/// catch-up: its start within `rescan` plus this of the lagged end (a missed tick or
/// two, and the second read, are routine).
const ROUTINE_SLACK: i64 = 600;

/// The order frames are fetched in. With one source, its plan's order (oldest first).
/// With several, every source's routine frames come before any catch-up or backfill
/// frame, and within each class the sources take turns, so that one source's backlog
/// never keeps the others from their minute.
fn order_jobs(windows: &[&Window], lagged_end: OffsetDateTime, rescan: u64) -> Vec<Job> {
    let routine_from = lagged_end - time::Duration::seconds(rescan as i64 + ROUTINE_SLACK);
    let mut keyed: Vec<((bool, usize, usize), Job)> = Vec::new();
    for (lane, window) in windows.iter().enumerate() {
        let mut turns = [0usize; 2];
        for frame in &window.frames {
            let backlog = windows.len() > 1 && frame.start < routine_from;
            let turn = &mut turns[usize::from(backlog)];
            keyed.push((
                (backlog, *turn, lane),
                Job {
                    lane,
                    frame: *frame,
                },
            ));
            *turn += 1;
        }
    }
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, job)| job).collect()
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
    gates: &BTreeMap<Bucket, Arc<RequestGate>>,
    transport: &Arc<dyn HttpTransport>,
) -> Result<(), Error> {
    let (gates, transport) = (gates.clone(), transport.clone());
    shutdown::watch_signals(stop.clone(), move || {
        for gate in gates.values() {
            gate.wake_all();
        }
        transport.abort();
    })
    .map_err(|e| Error::Setup(format!("cannot watch for SIGTERM/SIGINT: {e}")))
}

/// The configured sink, deduplicating when the run keeps state: in Redis with a
/// seen-set pruned below the oldest second still to be read, otherwise through the state file's seen
/// ids. A backfill writes every record of its range.
fn open_sink(
    config: &Config,
    target: &SinkTarget,
    resumed: Option<&Resumed>,
    window: &Window,
) -> Result<Box<dyn Sink>, Error> {
    // Ids are kept as long as any run may read their second again: this one, or a
    // later one's second read or owed range.
    let dedup = resumed.map(|r| Dedup {
        seen_key: crate::keys::derived(&config.queue_key, "seen"),
        floor: window
            .start()
            .map(|start| r.progress.as_ref().map_or(start, |p| p.floor().min(start)))
            .map(|floor| floor.unix_timestamp()),
    });
    let sink = sink::open(
        config,
        target.connections,
        target.retry.clone(),
        dedup,
        target.labelled,
    )?;
    Ok(match resumed.and_then(|r| r.store.seen()) {
        Some(seen) => Box::new(DedupSink::new(sink, seen)),
        None => sink,
    })
}

fn log_failures<'a>(frames: impl Iterator<Item = &'a FrameOutcome>, several: bool) {
    for outcome in frames {
        if let Some(failure) = &outcome.failure {
            log::error!(
                "{}frame {} incomplete ({} pages, {} records written): {failure}",
                match several {
                    true => format!("{} ", outcome.source.name),
                    false => String::new(),
                },
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

    #[test]
    fn every_sources_minute_comes_before_any_sources_backlog() {
        use time::macros::datetime;
        let lagged_end = datetime!(2026-11-30 12:00:00 UTC);
        let frame = |ago: i64| Frame {
            start: lagged_end - time::Duration::seconds(ago),
            end: lagged_end - time::Duration::seconds(ago - 29),
        };
        // A: a day behind (two half-day frames) plus its minute; B: its minute only.
        let behind = Window {
            frames: vec![frame(86_400), frame(43_200), frame(60), frame(30)],
        };
        let steady = Window {
            frames: vec![frame(660), frame(60), frame(30)],
        };
        let jobs = order_jobs(&[&behind, &steady], lagged_end, 600);
        let order: Vec<(usize, i64)> = jobs
            .iter()
            .map(|j| (j.lane, (lagged_end - j.frame.start).whole_seconds()))
            .collect();
        assert_eq!(
            order,
            [
                (0, 60),
                (1, 660),
                (0, 30),
                (1, 60),
                (1, 30),
                (0, 86_400),
                (0, 43_200)
            ]
        );
        // One source keeps its plan's order.
        let alone = order_jobs(&[&behind], lagged_end, 600);
        assert_eq!(alone[0].frame, frame(86_400));
    }
}
