//! Which seconds a run exports: a `--since/--until` backfill, the original's lagged
//! window (stateless or first run), or — with `state auto` — from the stored
//! watermark, rescanning back and catching up at most `max_catchup`. Also opens and
//! locks the state store that holds the watermark.

use std::time::SystemTime;

use time::OffsetDateTime;

use crate::config::{Backend, Config, ConfigError, Source, StateMode};
use crate::error::Error;
use crate::graph::retry::RetryOptions;
use crate::state::{FileState, Progress, RedisState, StateStore};
use crate::window::{self, ResumeLimits, Window};

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

/// How far the host clock may be from Microsoft's before a run says so.
const MAX_SKEW: time::Duration = time::Duration::minutes(1);

/// `now`, never ahead of `server_now` (the identity platform's `Date`), so a host
/// clock that jumped forward cannot move the watermark past what Graph can have. A
/// skew over a minute either way is logged.
pub fn bound_by_server(now: OffsetDateTime, server_now: Option<SystemTime>) -> OffsetDateTime {
    // `Date` has whole seconds: Microsoft's clock may be up to a second later.
    let Some(server) = server_now.map(|t| OffsetDateTime::from(t) + time::Duration::SECOND) else {
        return now;
    };
    let skew = now - server;
    if skew.abs() > MAX_SKEW {
        let (seconds, way) = match skew.is_positive() {
            true => (skew.whole_seconds(), "ahead of"),
            false => (-skew.whole_seconds(), "behind"),
        };
        log::warn!(
            "the host clock ({}) is {seconds} s {way} Microsoft's (Date of the token endpoint, {}): \
             the window ends by the earlier of the two; fix the host's time sync",
            window::utc_second(now),
            window::utc_second(server)
        );
    }
    window::truncate(now.min(server))
}

/// The state of a stateful run: its store (locked) and what it loaded.
pub struct Resumed {
    pub store: Box<dyn StateStore>,
    pub progress: Option<Progress>,
}

impl Resumed {
    /// A first run stores where it starts before it exports anything, so that if it
    /// dies its successor resumes there instead of starting a window of its own.
    ///
    /// A first run is also what a run looks like whose state was lost (Redis restarted
    /// without persistence, the state file deleted): it says so at WARN, and when the
    /// store shows traces of earlier runs it returns an error (exit 1) naming the
    /// backfill that closes the gap.
    pub fn start_first_run(&mut self, window: &Window) -> Result<Option<Error>, Error> {
        let (None, Some(start)) = (self.progress, window.start()) else {
            return Ok(None);
        };
        let traces = self.store.traces()?;
        let progress = Progress {
            watermark: start,
            origin: start,
        };
        self.store.save(progress)?;
        self.progress = Some(progress);
        let start = window::utc_second(start);
        let gap = format!("backfill the gap with --since <end of the last export> --until {start}");
        let place = self.store.location();
        Ok(match traces {
            None => {
                log::warn!(
                    "no watermark at {place}: starting a first window at {start}; if this is \
                     not the first run, state was lost — {gap}"
                );
                None
            }
            Some(traces) => {
                let message = format!(
                    "no watermark at {place}, but {traces}: state was lost; this run starts a \
                     new first window at {start} — {gap}"
                );
                log::error!("{message}");
                Some(Error::State(message))
            }
        })
    }
}

/// Opens and locks the state store when this run keeps state: `state auto`, not a
/// backfill, and somewhere to keep it.
pub fn resume(config: &Config, retry: &RetryOptions) -> Result<Option<Resumed>, Error> {
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

/// A stateful run's window: from the stored watermark (and `rescan` before it) to the
/// end of the lagged window, at most `max_catchup` ahead.
pub fn from_watermark(config: &Config, now: OffsetDateTime, progress: Progress) -> Window {
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
    Window::resume(
        watermark,
        progress.origin.max(oldest),
        lagged_end,
        ResumeLimits {
            rescan: config.rescan,
            max_catchup: config.max_catchup,
            stream_frame: config.stream_frame,
            streams: config.streams,
        },
    )
}
