//! A lane's life in one run: opened — its state locked and loaded (or taken over from
//! what earlier exports left), its window planned, its sink opened — and, once the
//! pipeline is done, committed: its outcomes folded into its progress, saved, its lock
//! released, into its report.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::auth::TokenSource;
use crate::config::Config;
use crate::error::Error;
use crate::format::{Context, Shape};
use crate::graph::GraphClient;
use crate::lane::Lane;
use crate::outcome::FrameOutcome;
use crate::plan::Plan;
use crate::redis_client::RedisPool;
use crate::report::SourceReport;
use crate::retry::RetryOptions;
use crate::setup::Setup;
use crate::sink::Dedup;
use crate::sink::DedupSink;
use crate::sink::FormattedSink;
use crate::sink::{self, Sink, SinkSettings};
use crate::state::{self, Resumed, StateSettings};
use crate::window::{self, Window};

/// One source's export as prepared: its state (locked), plan, window and sink.
pub(super) struct Export<'a> {
    pub(super) source: &'a Lane,
    pub(super) resumed: Option<Resumed>,
    pub(super) plan: Option<Plan>,
    pub(super) window: Window,
    pub(super) state_lost: Option<Error>,
    pub(super) sink: Box<dyn Sink>,
}

impl Export<'_> {
    /// Commits what the pipeline did with the lane's `frames` (in its window's order)
    /// into its report: the progress moves to where the plan's reads leave it — the
    /// frontiers on, the unfinished parts of failed frames owed to later runs — and is
    /// saved, and the lock released. An empty window leaves the progress as it is; any
    /// other has progress to start from (a first run stored its start before
    /// exporting). A save that fails is the report's state error.
    pub(super) fn commit(
        self,
        frames: Vec<FrameOutcome>,
        client: &GraphClient,
        lagged_end: OffsetDateTime,
        depths: &[u64],
    ) -> SourceReport {
        let mut report = SourceReport {
            source: client.source(),
            tenant: self.source.tenant.clone(),
            queue_key: self.source.queue_key.clone(),
            window: self.window,
            frames,
            watermark: None,
            oldest_unread: None,
            state_error: self.state_lost,
            spent: client.spent(),
            requests_by_code: client.requests_by_code(),
            behind: Vec::new(),
        };
        let (
            Some(Resumed {
                mut store,
                progress,
            }),
            Some(plan),
        ) = (self.resumed, self.plan)
        else {
            return report;
        };
        if let Some(progress) = progress.filter(|_| report.window.start().is_some()) {
            let next = plan.after(&progress, |i| &report.frames[i].unfinished);
            match store.save(next.clone()) {
                Ok(()) => {
                    report.watermark = Some(next.watermark);
                    report.behind = next.behind(lagged_end, depths);
                    report.oldest_unread = next
                        .owed_first
                        .iter()
                        .map(|r| r.start)
                        .chain([next.watermark])
                        .min();
                }
                Err(e) => {
                    log::error!("{e}");
                    report.state_error = Some(e);
                }
            }
        }
        store.unlock();
        report
    }
}

/// Every lane's export as prepared, and the lanes left out.
pub(super) struct Prepared<'a> {
    pub(super) exports: Vec<Export<'a>>,
    /// Lanes another run holds the lock of.
    pub(super) locked: Vec<String>,
    /// Lanes whose stored state is damaged.
    pub(super) unread_state: Vec<String>,
}

/// What every lane's state store and sink open with: built once per run.
struct Openers<'a> {
    state: StateSettings,
    sink: SinkSettings,
    /// The run's Redis pool, shared by every Redis sink.
    connections: Option<&'a RedisPool>,
}

/// Prepares each tenant × source signed in to. Each has its own state, lock, plan and
/// sink; a lock another run holds ends the run (the locks taken so far are released
/// as the exports drop) — with several tenants, that tenant × source is left to the
/// run that holds it, and one with damaged state is named and left out.
pub(super) fn prepare_all<'a>(
    config: &'a Config,
    tokens: &BTreeMap<Option<&str>, Arc<TokenSource>>,
    clocks: (OffsetDateTime, Option<OffsetDateTime>),
    planned: &Window,
    connections: Option<&RedisPool>,
    setup: &Setup,
) -> Result<Prepared<'a>, Error> {
    let mut prepared = Prepared {
        exports: Vec::with_capacity(config.sources.len()),
        locked: Vec::new(),
        unread_state: Vec::new(),
    };
    let openers = Openers {
        state: config.state_settings(),
        sink: config.sink_settings(),
        connections,
    };
    for source in &config.sources {
        let Some(tokens) = tokens.get(&source.tenant.as_deref()) else {
            continue;
        };
        let shaped = shaped(config, source, tokens);
        match prepare(config, &openers, source, clocks, planned, setup, shaped) {
            Ok(export) => prepared.exports.push(export),
            Err(Error::Locked(message)) if source.tenant.is_some() => {
                log::warn!("{}: {message}: left to that run", source.label());
                prepared.locked.push(source.label());
            }
            Err(Error::DamagedState(message)) if source.tenant.is_some() => {
                log::error!("{}: {message}: not exported in this run", source.label());
                prepared.unread_state.push(source.label());
            }
            Err(e) => return Err(setup.interrupted(e)),
        }
    }
    Ok(prepared)
}

/// Takes one source's state and lock, plans its window and opens its sink; a Redis
/// that refuses ends the run before any frame.
/// `clocks`: the run's now (the host's, bounded by Microsoft's) and Microsoft's
/// (`Date`), when known.
fn prepare<'a>(
    config: &Config,
    openers: &Openers,
    source: &'a Lane,
    (now, microsoft): (OffsetDateTime, Option<OffsetDateTime>),
    planned: &Window,
    setup: &Setup,
    shaped: Option<(&'static dyn Shape, Context)>,
) -> Result<Export<'a>, Error> {
    let mut resumed = state::open(&openers.state, source, &setup.redis_retry)?;
    if let Some(resumed) = &resumed {
        refuse_progress_ahead(resumed, now, microsoft)?;
    }
    let recovered = match &mut resumed {
        Some(resumed) => resumed.recover(now)?,
        None => None,
    };
    let plan = resumed.as_ref().map(|r| match &r.progress {
        Some(progress) => Plan::resume(config, source, now, progress),
        None => Plan::first_run(config, now, planned.clone()),
    });
    let window = plan.as_ref().map_or(planned.clone(), |p| p.window.clone());
    let state_lost = match &mut resumed {
        Some(resumed) => resumed.start_first_run(&window)?.or(recovered),
        None => None,
    };
    let sink = open_sink(
        &openers.sink,
        source,
        openers.connections,
        &setup.redis_retry,
        resumed.as_ref(),
        &window,
        shaped,
    )?;
    sink.check()?;
    Ok(Export {
        source,
        resumed,
        plan,
        window,
        state_lost,
        sink,
    })
}

/// Stored progress past Microsoft's clock (`microsoft`, its `Date`; None: not
/// known) cannot come from a run (each run's "now" is bounded by it): the state is
/// damaged, or was written before that bound existed by a host whose clock ran ahead.
/// Taken at its word, every run would skip the seconds up to it and exit 0; instead
/// the run stops with what to repair. Progress past the host's clock (`now`) but not
/// Microsoft's is the host's clock stepping back (an NTP step, a VM resumed): said,
/// and nothing is read that is not due by the host's clock.
fn refuse_progress_ahead(
    resumed: &Resumed,
    now: OffsetDateTime,
    microsoft: Option<OffsetDateTime>,
) -> Result<(), Error> {
    let Some(progress) = &resumed.progress else {
        return Ok(());
    };
    let (field, latest) = progress.latest();
    // Microsoft's `Date` has whole seconds: its clock may be up to a second later.
    let slack = time::Duration::SECOND;
    if latest <= now + slack {
        return Ok(());
    }
    if let Some(microsoft) = microsoft.filter(|m| latest <= *m + slack) {
        log::warn!(
            "{}: {field} {} is ahead of the host clock ({}, {} s behind Microsoft's, {}): \
             the host's clock stepped back since the last run; nothing is read until it is \
             due by the host's clock — fix the host's time sync",
            resumed.store.location(),
            window::utc_second(latest),
            window::utc_second(now),
            (microsoft - now).whole_seconds(),
            window::utc_second(microsoft)
        );
        return Ok(());
    }
    let microsoft = microsoft.map_or("not known".to_string(), window::utc_second);
    Err(Error::DamagedState(format!(
        "{}: {field} {} is ahead of Microsoft's clock ({microsoft}; the host's: {}): the \
         state is damaged (or was written by a host whose clock ran ahead), and no run would \
         export the seconds up to it; repair it — {} — or delete it and backfill from the \
         last export's end",
        resumed.store.location(),
        window::utc_second(latest),
        window::utc_second(now),
        resumed.store.repair(field)
    )))
}

/// The shape of `source`'s records in `record_format` and what it needs to know of
/// the tenant, None: Graph's as it is. The tenant's GUID is the configured tenant when
/// it is one, else the `tid` of its token (a tenant configured by name).
fn shaped(
    config: &Config,
    source: &Lane,
    tokens: &TokenSource,
) -> Option<(&'static dyn Shape, Context)> {
    let shape = config.options.record_format.shape(source.spec)?;
    let configured = source
        .tenant
        .as_deref()
        .or(config.options.tenant.as_deref());
    let tenant_id = match configured.filter(|t| crate::ids::is_guid(t)) {
        Some(guid) => guid.to_ascii_lowercase(),
        None => tokens
            .bearer()
            .ok()
            .and_then(|b| b.tenant_id())
            .unwrap_or_else(|| {
                log::warn!(
                    "{}the tenant's GUID is not known (tenant is configured by name and the \
                     token names none): records carry an empty tenantId — set tenant to the \
                     GUID",
                    crate::sources::log_prefix(
                        source.tenant.as_deref(),
                        source.spec,
                        config.name_sources()
                    )
                );
                String::new()
            }),
    };
    let context = Context {
        tenant_id,
        category: source.spec.kind.category(),
    };
    Some((shape, context))
}

/// `source`'s sink, deduplicating when the run keeps state: in Redis with a seen-set
/// pruned below the oldest second still to be read, otherwise through the state file's
/// seen ids. A backfill writes every record of its range.
fn open_sink(
    settings: &SinkSettings,
    source: &Lane,
    connections: Option<&RedisPool>,
    retry: &RetryOptions,
    resumed: Option<&Resumed>,
    window: &Window,
    shaped: Option<(&'static dyn Shape, Context)>,
) -> Result<Box<dyn Sink>, Error> {
    // Ids are kept as long as any run may read their second again: this one, or a
    // later one's second read or owed range.
    let dedup = resumed.map(|r| Dedup {
        seen_key: source.key("seen"),
        versioned: source.versioned,
        floor: window
            .start()
            .map(|start| r.progress.as_ref().map_or(start, |p| p.floor().min(start)))
            .map(|floor| floor.unix_timestamp()),
    });
    let mut sink = sink::open(settings, source, connections, retry.clone(), dedup)?;
    if let Some((shape, context)) = shaped {
        sink = Box::new(FormattedSink::new(
            sink,
            shape,
            context,
            crate::sources::log_prefix(
                source.tenant.as_deref(),
                source.spec,
                settings.name_sources,
            ),
        ));
    }
    Ok(match resumed.and_then(|r| r.store.seen()) {
        Some(seen) => Box::new(DedupSink::new(sink, seen)),
        None => sink,
    })
}
