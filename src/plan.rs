//! Which seconds a run exports: a `--since/--until` backfill, the original's lagged
//! window (stateless or first run), or — with `state auto` — from the stored
//! watermark, rescanning back and catching up at most `max_catchup`. Also opens and
//! locks the state store that holds the watermark.

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

/// The state of a stateful run: its store (locked) and what it loaded.
pub struct Resumed {
    pub store: Box<dyn StateStore>,
    pub progress: Option<Progress>,
}

impl Resumed {
    /// A first run stores where it starts before it exports anything, so that if it
    /// dies its successor resumes there instead of starting a window of its own.
    pub fn start_first_run(&mut self, window: &Window) -> Result<(), Error> {
        let (None, Some(start)) = (self.progress, window.start()) else {
            return Ok(());
        };
        let progress = Progress {
            watermark: start,
            origin: start,
        };
        self.store.save(progress)?;
        self.progress = Some(progress);
        Ok(())
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
