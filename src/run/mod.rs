//! One run of msgx-once: plan each source's window from its state, fetch every
//! source's frames through the shared pipeline, write each to its sink, save where each
//! source's reads leave its progress, and report ([`RunReport`]).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use time::OffsetDateTime;

mod lane;

use lane::{Export, Prepared, prepare_all};

use crate::auth::TokenSource;
use crate::budget;
use crate::config::Config;
use crate::error::Error;
use crate::graph::GraphClient;
use crate::graph::PageShape;
use crate::metrics::RunFigures;
use crate::outcome::FrameOutcome;
use crate::pipeline::{self, Job, OpenLane, PipelineOptions};
use crate::plan::{self, Pass, Plan};
use crate::redis_client::RedisPool;
use crate::report::{RunReport, log_failures};
use crate::setup::Setup;
use crate::window::{self, Frame, Window};

/// One export as cron runs it: [`run`], its summary logged (each line INFO, or ERROR
/// when what it summarises did not go well: a lane its own, the totals the run's),
/// its metrics written and pushed; the exit code.
pub fn export(config: &Config) -> u8 {
    let started = Instant::now();
    let figures = match run(config) {
        Ok(report) => {
            let code = report.exit_code();
            for line in report.summary() {
                let level = match line.ok {
                    true => log::Level::Info,
                    false => log::Level::Error,
                };
                crate::logging::log_with_fields(level, &line.text, &line.fields);
            }
            let now = config.fixed_now.unwrap_or_else(OffsetDateTime::now_utc);
            RunFigures::of(&report, code, now)
        }
        Err(e) => {
            log::error!("{e}");
            RunFigures {
                exit_code: e.exit_code(),
                duration: started.elapsed(),
                sources: Vec::new(),
            }
        }
    };
    crate::metrics::publish(config, &figures);
    figures.exit_code
}

pub fn run(config: &Config) -> Result<RunReport, Error> {
    let started = Instant::now();
    if let Some((shard, mine, all)) = config.shard_share() {
        log::info!(
            "shard {shard}: {} of the {all} tenants of `tenants` fall to it{}",
            mine.len(),
            match mine.len() {
                0 => "; nothing to export in this shard",
                _ => "",
            }
        );
    }
    let local_now = config.fixed_now.unwrap_or_else(OffsetDateTime::now_utc);
    // A backfill's or the original's window, planned (and a bad range refused) before
    // anything is locked or connected; a run with a watermark replaces it below.
    let planned = plan::plan(config, local_now)?;
    let setup = Setup::new(
        config,
        started + config.run_deadline(),
        config.options.max_retries,
    )?;
    // The first token comes before the window: its Date header is Microsoft's clock,
    // and a host clock running ahead must not plan (and store) seconds Graph cannot
    // have yet. A refusal ends the run before anything else is touched — with several
    // tenants, that tenant's part of it.
    let signed_in = sign_in(config, &setup)?;
    let server_now = signed_in.tokens.values().find_map(|t| t.server_now());
    let now = plan::bound_by_server(local_now, server_now);
    let microsoft = server_now.map(OffsetDateTime::from);
    let planned = if now == local_now {
        planned
    } else {
        plan::plan(config, now)?
    };
    plan::warn_if_until_ahead(config, now);
    let connections = match config.options.queue_backend.uses_redis() {
        true => Some(RedisPool::new(&config.redis_settings())?),
        false => None,
    };
    let Prepared {
        exports,
        locked,
        unread_state,
    } = prepare_all(
        config,
        &signed_in.tokens,
        (now, microsoft),
        &planned,
        connections.as_ref(),
        &setup,
    )?;
    let clients: Vec<GraphClient> = exports
        .iter()
        .map(|export| {
            let tenant = export.source.tenant.as_deref();
            GraphClient::new(
                setup.transport.clone(),
                signed_in.tokens[&tenant].clone(),
                config.graph_url.clone(),
                PageShape::of(export.source),
                setup.gates.of(tenant, export.source.spec.bucket),
                setup.retry.clone(),
            )
        })
        .collect();
    let lanes: Vec<OpenLane> = exports
        .iter()
        .zip(&clients)
        .map(|(export, client)| OpenLane {
            tenant: export.source.tenant.as_deref(),
            client,
            sink: export.sink.as_ref(),
            versioned: export.source.versioned,
        })
        .collect();
    let planned_reads: Vec<(&Window, Vec<Pass>)> = exports
        .iter()
        .map(|e| {
            let passes = match &e.plan {
                Some(plan) => plan.passes.clone(),
                None => vec![Pass::First; e.window.frames.len()],
            };
            (&e.window, passes)
        })
        .collect();
    let lagged_end = window::lagged_until(now, config.options.timelag);
    let jobs = order_jobs(&planned_reads, lagged_end, config.rescan());
    for export in &exports {
        log::info!(
            "exporting {}window {} in {} frames with {} streams",
            crate::sources::log_prefix(
                export.source.tenant.as_deref(),
                export.source.spec,
                config.name_sources()
            ),
            export.window,
            export.window.frames.len(),
            config.options.streams
        );
    }
    let budget_settings = config.budget_settings();
    let mut outcomes = pipeline::run(
        &jobs,
        &lanes,
        &PipelineOptions {
            fetchers: config.fetchers(),
            in_flight_floor: config.options.streams,
            request_rate: budget::request_rate(
                &budget_settings,
                exports
                    .iter()
                    .map(|e| (e.source.tenant.as_deref(), e.source.spec.bucket)),
            ),
            writers: config.options.greenlets_count,
            page_memory: config.page_memory(),
            // A stream entry names its record's id: read even when nothing is
            // deduplicated.
            keyed: exports.iter().any(|e| e.resumed.is_some())
                || (config.options.queue_backend.uses_redis()
                    && config.options.queue_type == crate::config::QueueType::Stream),
            progress_every: config.progress_every,
            name_sources: config.name_sources(),
            bar: wants_bar(config, &exports),
            deep_allowance: budget::deep_allowance(
                &budget_settings,
                exports.iter().map(|e| {
                    let spent = (e.source.tenant.clone(), e.source.spec.bucket);
                    (spent, e.plan.as_ref().map_or(0, Plan::new_seconds))
                }),
            ),
            now,
        },
    )?
    .into_iter()
    .zip(&jobs)
    .map(|(outcome, job)| (job.lane, job.index, outcome))
    .collect::<Vec<_>>();
    // Each lane's outcomes in the order of its window's frames (its plan's indices).
    outcomes.sort_by_key(|(lane, index, _)| (*lane, *index));
    log_failures(outcomes.iter().map(|(_, _, o)| o), config.name_sources());
    let mut sources = Vec::with_capacity(exports.len());
    for (lane, (export, client)) in exports.into_iter().zip(&clients).enumerate() {
        // The outcomes of a lane in the order of its window's frames.
        let frames: Vec<FrameOutcome> = outcomes
            .extract_if(.., |(l, _, _)| *l == lane)
            .map(|(_, _, outcome)| outcome)
            .collect();
        let report = export.commit(frames, client, lagged_end, &config.options.rescan);
        report.warn_if_cut_short(config.run_deadline(), lagged_end, config.name_sources());
        sources.push(report);
    }
    let report = RunReport {
        sources,
        refused_tenants: signed_in.refused,
        locked,
        unread_state,
        elapsed: started.elapsed(),
        interrupted: setup.stop.requested(),
    };
    report.warn_if_still_arriving(&config.options.rescan, config.name_sources());
    Ok(report)
}

/// The tenants a run could sign in to, each with its token source, and those the
/// identity platform refused.
struct SignedIn<'a> {
    tokens: BTreeMap<Option<&'a str>, Arc<TokenSource>>,
    refused: Vec<String>,
}

/// A token for every tenant of the run, asked for at once (as many at a time as there
/// are fetchers, at least 8). One
/// tenant: its refusal ends the run, as it always did. Several: a refused tenant is
/// said once at ERROR with what to do, left out of this run, and named in the
/// summary and the exit code; the others go on.
fn sign_in<'a>(config: &'a Config, setup: &Setup) -> Result<SignedIn<'a>, Error> {
    let tenants = config.tenants();
    let mut tokens = BTreeMap::new();
    let mut refused = Vec::new();
    if let [None] = tenants.as_slice() {
        let source = setup.tokens(config, None)?;
        source
            .bearer()
            .map_err(Error::from)
            .map_err(|e| setup.interrupted(e))?;
        tokens.insert(None, source);
        return Ok(SignedIn { tokens, refused });
    }
    let mut answers: Vec<(Option<&str>, TokenAnswer)> = Vec::new();
    for chunk in tenants.chunks(config.fetchers().max(SIGN_INS_AT_ONCE)) {
        std::thread::scope(|scope| {
            let asked: Vec<_> = chunk
                .iter()
                .map(|tenant| {
                    let tenant = *tenant;
                    let handle = scope.spawn(move || {
                        let source = setup.tokens(config, tenant)?;
                        source.bearer().map_err(Error::from)?;
                        Ok(source)
                    });
                    (tenant, handle)
                })
                .collect();
            for (tenant, handle) in asked {
                let answer = handle.join().unwrap_or_else(|_| {
                    Err(Error::Setup("a token request's thread panicked".into()))
                });
                answers.push((tenant, answer));
            }
        });
    }
    if let Some(code) = setup.stop.requested() {
        return Err(Error::Interrupted(code));
    }
    for (tenant, answer) in answers {
        let name = tenant.unwrap_or("-");
        match answer {
            Ok(source) => {
                tokens.insert(tenant, source);
            }
            Err(e) => {
                let advice = match &e {
                    Error::Auth(auth) => auth.advice(&config.consent_url(tenant)),
                    _ => "fix what the error names".into(),
                };
                log::error!("tenant {name}: {e}: not exported in this run; {advice}");
                refused.push(name.to_string());
            }
        }
    }
    Ok(SignedIn { tokens, refused })
}

/// A tenant's token source, with a first token fetched, or why not.
type TokenAnswer = Result<Arc<TokenSource>, Error>;

/// Tenants asked for their first token at once, at least (as many as there are
/// fetchers, with more).
const SIGN_INS_AT_ONCE: usize = 8;

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

/// How recent a frame must be to count as a source's routine minute rather than a
/// catch-up: its start within `rescan` plus this of the lagged end (a missed tick or
/// two, and the second read, are routine).
const ROUTINE_SLACK: i64 = 600;

/// The order frames are fetched in. With one source, its plan's order (oldest first).
/// With several, every source's routine frames come before any catch-up or backfill
/// frame, and within each class the sources take turns, so that one source's backlog
/// never keeps the others from their minute. Deeper reads come after everything else:
/// they spend what is left.
fn order_jobs(
    planned: &[(&Window, Vec<Pass>)],
    lagged_end: OffsetDateTime,
    rescan: u64,
) -> Vec<Job> {
    let routine_from = lagged_end - time::Duration::seconds(rescan as i64 + ROUTINE_SLACK);
    let mut keyed: Vec<((bool, bool, usize, usize), Job)> = Vec::new();
    for (lane, (window, passes)) in planned.iter().enumerate() {
        let mut turns = [0usize; 4];
        for (index, (frame, pass)) in window.frames.iter().zip(passes).enumerate() {
            let deep = matches!(pass, Pass::Deeper(_));
            let backlog = planned.len() > 1 && frame.start < routine_from;
            let turn = &mut turns[usize::from(backlog) + 2 * usize::from(deep)];
            keyed.push((
                (deep, backlog, *turn, lane),
                Job {
                    lane,
                    index,
                    frame: *frame,
                    pass: *pass,
                },
            ));
            *turn += 1;
        }
    }
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, job)| job).collect()
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
        let firsts = |w: &Window| vec![Pass::First; w.frames.len()];
        let mut deep = steady.clone();
        deep.frames.push(frame(1200));
        let mut deep_passes = firsts(&steady);
        deep_passes.push(Pass::Deeper(0));
        let jobs = order_jobs(
            &[(&behind, firsts(&behind)), (&deep, deep_passes)],
            lagged_end,
            600,
        );
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
                (0, 43_200),
                (1, 1200)
            ]
        );
        assert_eq!(jobs[7].pass, Pass::Deeper(0));
        // One source keeps its plan's order.
        let alone = order_jobs(&[(&behind, firsts(&behind))], lagged_end, 600);
        assert_eq!(alone[0].frame, frame(86_400));
    }
}
