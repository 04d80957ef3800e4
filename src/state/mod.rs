//! What connects consecutive runs (`state auto`): the [`Progress`] of both reads of
//! every second — the watermark (first pass), `rescanned` (second pass), the ranges
//! still owed by failed frames —, the origin — where the first run started, so that
//! nothing before it is read —, and the lock that keeps two runs from overlapping.
//!
//! Two stores keep them ([`StateStore`]): the redis backend in Redis beside the queue
//! ([`RedisState`]), the log and file backends in a JSON `state_file` ([`FileState`]).

mod file;
mod redis;
mod renewer;
mod takeover;

pub use file::FileState;
pub use redis::RedisState;
pub use takeover::Recovery;

use std::sync::Arc;

use time::OffsetDateTime;

use crate::dedup::SeenSet;
use crate::error::Error;
use crate::lane::Lane;
use crate::redis_client::RedisSettings;
use crate::retry::RetryOptions;
use crate::window::{self, Frame, Window};

/// What the runs so far have read. Every second is read twice: once when it becomes
/// due (the first pass), once more when it is `rescan` seconds past due (the second
/// pass, for sign-ins Graph published late).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Every second before it had its first read, except `owed_first`.
    pub watermark: OffsetDateTime,
    /// Where the first run started: nothing before it is ever read.
    pub origin: OffsetDateTime,
    /// Every second before it had its second read (or needs none), except
    /// `owed_second`.
    pub rescanned: OffsetDateTime,
    /// Ranges below the watermark still owed their first read: the unfinished parts of
    /// failed frames.
    pub owed_first: Vec<Frame>,
    /// Ranges below `rescanned` still owed their second read.
    pub owed_second: Vec<Frame>,
    /// Where each deeper read (a `rescan` depth after the first) stands.
    pub deeper: Vec<DeepRead>,
}

/// One deeper read's progress: every second before `frontier` had its read at
/// `depth` (or needs none), except `owed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeepRead {
    /// Seconds past due.
    pub depth: u64,
    pub frontier: OffsetDateTime,
    /// Ranges below the frontier still owed this read: deferred (no budget left) or
    /// failed.
    pub owed: Vec<Frame>,
}

impl Progress {
    /// A first run's progress before it reads anything: all starts at `start`.
    pub fn starting_at(start: OffsetDateTime) -> Self {
        Progress {
            watermark: start,
            origin: start,
            rescanned: start,
            owed_first: Vec::new(),
            owed_second: Vec::new(),
            deeper: Vec::new(),
        }
    }

    /// Every owed range, of every read.
    fn all_owed(&self) -> impl Iterator<Item = &Frame> {
        self.owed_first
            .iter()
            .chain(&self.owed_second)
            .chain(self.deeper.iter().flat_map(|d| &d.owed))
    }

    /// How far each read again at `depths` (the first `rescan` depth, then the deeper
    /// ones) is behind at `lagged_end`: seconds from the oldest second it still has to
    /// read to the newest now due at that depth (0: nothing owed).
    pub fn behind(&self, lagged_end: OffsetDateTime, depths: &[u64]) -> Vec<(u64, u64)> {
        depths
            .iter()
            .enumerate()
            .map(|(k, &depth)| {
                let due = lagged_end - time::Duration::seconds(depth as i64);
                let (frontier, owed) = match k {
                    0 => (self.rescanned, self.owed_second.as_slice()),
                    _ => self
                        .deeper
                        .iter()
                        .find(|d| d.depth == depth)
                        .map_or((due, &[][..]), |d| (d.frontier, d.owed.as_slice())),
                };
                let oldest = owed
                    .iter()
                    .map(|r| r.start)
                    .fold(frontier, OffsetDateTime::min);
                (depth, (due - oldest).whole_seconds().max(0) as u64)
            })
            .collect()
    }

    /// The oldest second any later run may read again.
    pub fn floor(&self) -> OffsetDateTime {
        self.all_owed()
            .map(|r| r.start)
            .chain([self.rescanned, self.watermark])
            .chain(self.deeper.iter().map(|d| d.frontier))
            .min()
            .unwrap_or(self.watermark)
    }

    /// The latest second this progress claims was read, and under which field: no run
    /// can have read past Microsoft's clock, so one past it marks damaged state.
    pub fn latest(&self) -> (&'static str, OffsetDateTime) {
        let owed = self.all_owed().map(|r| ("owed ranges", r.end_exclusive()));
        let deeper = self.deeper.iter().map(|d| ("deeper", d.frontier));
        [("watermark", self.watermark), ("rescanned", self.rescanned)]
            .into_iter()
            .chain(deeper)
            .chain(owed)
            .reduce(|latest, next| if next.1 > latest.1 { next } else { latest })
            .unwrap_or(("watermark", self.watermark))
    }

    /// `self` and `other` as one progress, as if one run had done what either did:
    /// the further frontiers, the earlier origin, and owed every second in between
    /// that neither read (a rollback left two histories, each with seconds the other
    /// never read).
    pub fn merged_with(&self, other: &Progress) -> Progress {
        let origin = self.origin.min(other.origin);
        let watermark = self.watermark.max(other.watermark);
        let rescanned = self.rescanned.max(other.rescanned);
        let read = |p: &Progress, end: OffsetDateTime, owed: &[Frame]| -> Vec<Frame> {
            Frame::between(p.origin, end)
                .map(|range| window::subtract(range, owed))
                .unwrap_or_default()
        };
        let unread = |end: OffsetDateTime, done: Vec<Frame>| -> Vec<Frame> {
            let done = window::merge(done);
            Frame::between(origin, end)
                .map(|range| window::subtract(range, &done))
                .unwrap_or_default()
        };
        let mut first = read(self, self.watermark, &self.owed_first);
        first.extend(read(other, other.watermark, &other.owed_first));
        let mut second = read(self, self.rescanned, &self.owed_second);
        second.extend(read(other, other.rescanned, &other.owed_second));
        // Deeper reads: each depth's further frontier, and what either still owes.
        let mut deeper: Vec<DeepRead> = Vec::new();
        for read in self.deeper.iter().chain(&other.deeper) {
            match deeper.iter_mut().find(|d| d.depth == read.depth) {
                Some(known) => {
                    known.frontier = known.frontier.max(read.frontier);
                    known.owed.extend(read.owed.iter().copied());
                    known.owed = window::merge(std::mem::take(&mut known.owed));
                }
                None => deeper.push(read.clone()),
            }
        }
        Progress {
            watermark,
            origin,
            rescanned,
            owed_first: unread(watermark, first),
            owed_second: unread(rescanned, second),
            deeper,
        }
    }
}

/// Where the second pass stands for state written before it existed: that version
/// re-read the `rescan` seconds before the watermark on every run, so those seconds
/// may still be owed a second read.
fn before_second_pass(
    watermark: OffsetDateTime,
    origin: OffsetDateTime,
    rescan: u64,
) -> OffsetDateTime {
    (watermark - time::Duration::seconds(rescan as i64)).max(origin)
}

/// Ranges as stored: `start-end,start-end` in Unix seconds, both ends included.
pub fn encode_ranges(ranges: &[Frame]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|r| format!("{}-{}", r.start.unix_timestamp(), r.end.unix_timestamp()))
        .collect();
    parts.join(",")
}

/// Deeper reads as stored: `depth@frontier@ranges;…` (Unix seconds; ranges as
/// [`encode_ranges`]).
pub fn encode_deeper(deeper: &[DeepRead]) -> String {
    let parts: Vec<String> = deeper
        .iter()
        .map(|d| {
            format!(
                "{}@{}@{}",
                d.depth,
                d.frontier.unix_timestamp(),
                encode_ranges(&d.owed)
            )
        })
        .collect();
    parts.join(";")
}

/// The inverse of [`encode_deeper`]; None if `text` is not of that form.
pub fn decode_deeper(text: &str) -> Option<Vec<DeepRead>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(';')
        .map(|part| {
            let mut fields = part.splitn(3, '@');
            let depth = fields.next()?.parse().ok()?;
            let frontier =
                OffsetDateTime::from_unix_timestamp(fields.next()?.parse().ok()?).ok()?;
            let owed = decode_ranges(fields.next()?)?;
            Some(DeepRead {
                depth,
                frontier,
                owed,
            })
        })
        .collect()
}

/// The inverse of [`encode_ranges`]; None if `text` is not of that form.
pub fn decode_ranges(text: &str) -> Option<Vec<Frame>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|part| {
            let (start, end) = part.split_once('-')?;
            let at = |s: &str| OffsetDateTime::from_unix_timestamp(s.parse().ok()?).ok();
            let (start, end) = (at(start)?, at(end)?);
            (start <= end).then_some(Frame { start, end })
        })
        .collect()
}

/// What a store without a watermark shows of earlier exports.
#[derive(Debug, Default)]
pub struct Traces {
    /// msgx-once's own (its seen-set of delivered ids, the state file's lock file):
    /// state was lost.
    pub ours: Option<String>,
    /// Records already in the queue: another exporter's (the original
    /// MsGraphExporter) or a backfill's, as when a deployment switches over.
    pub queued: Option<String>,
}

pub trait StateStore {
    /// Takes the lock for this run: [`Error::Locked`] when another run holds it.
    fn lock(&mut self) -> Result<(), Error>;
    fn load(&self) -> Result<Option<Progress>, Error>;
    /// Stores `progress` if the lock is still ours; never moves the watermark back.
    fn save(&self, progress: Progress) -> Result<(), Error>;
    /// Releases the lock; also done on drop.
    fn unlock(&mut self);

    /// Where the watermark is kept, for messages.
    fn location(&self) -> String;

    /// How an operator sets `field` back by hand, for messages about damaged state.
    fn repair(&self, field: &str) -> String;

    /// What shows that exports wrote here before, when no watermark was found.
    fn traces(&self) -> Result<Traces, Error>;

    /// Where a run without a watermark can start and deliver nothing twice, from what
    /// earlier exports left ([`Recovery`]): the seen-set's floor, or another exporter's
    /// records in the queue, which this marks delivered first. None: nothing to go by.
    fn recover(&self, _now: OffsetDateTime) -> Result<Option<Recovery>, Error> {
        Ok(None)
    }

    /// Delivered ids, when the store keeps them itself (the state file); the Redis
    /// backend keeps them in Redis, written atomically with each page.
    fn seen(&self) -> Option<Arc<SeenSet>> {
        None
    }
}

/// The state of a stateful run: its store (locked) and what it loaded.
pub struct Resumed {
    pub store: Box<dyn StateStore>,
    pub progress: Option<Progress>,
}

impl Resumed {
    /// A run without a watermark whose store shows where earlier exports got to
    /// ([`StateStore::recover`]) starts there instead of at a first window of its own,
    /// and stores that start before it exports anything. What it skips was delivered
    /// (the seen-set holds it); what it reads again is deduplicated; so the switch-over
    /// from the original, a backfill before the first cron run and state lost beside
    /// its seen-set leave no gap to backfill and deliver nothing twice. An error (exit
    /// 1, after the run) only when seconds the lost state still owed cannot be known.
    /// `now`: the run's.
    pub fn recover(&mut self, now: OffsetDateTime) -> Result<Option<Error>, Error> {
        if self.progress.is_some() {
            return Ok(None);
        }
        let Some(recovery) = self.store.recover(now)? else {
            return Ok(None);
        };
        let place = self.store.location();
        let (start, lost) = match recovery {
            Recovery::Seen(floor) if floor.start > now => {
                return Err(Error::DamagedState(format!(
                    "no watermark at {place}, and the seen-set {key} starts at {}, after now \
                     ({}): not what msgx-once stored — ZREM {key} \"{}\" and run again",
                    window::utc_second(floor.start),
                    window::utc_second(now),
                    crate::dedup::FLOOR_MARK,
                    key = floor.key,
                )));
            }
            Recovery::Seen(floor) if floor.marked => {
                log::warn!(
                    "no watermark at {place}, but the seen-set {} holds the {} ids delivered \
                     since {}: state was lost (the key deleted, or evicted: a \
                     maxmemory-policy other than noeviction evicts keys); this run resumes \
                     there — the oldest second a later run would have read again — and skips \
                     what was delivered: nothing to backfill",
                    floor.key,
                    floor.ids,
                    window::utc_second(floor.start)
                );
                (floor.start, None)
            }
            Recovery::Seen(floor) => {
                let message = format!(
                    "no watermark at {place}, but the seen-set {} holds {} delivered ids, the \
                     oldest from {start}: state was lost; this run resumes at {start} and \
                     skips what was delivered — seconds before {start} that the lost state \
                     still owed (a failed frame's, a second read) cannot be known (the set \
                     predates its floor mark): if earlier summaries named unread ranges \
                     before {start}, backfill them",
                    floor.key,
                    floor.ids,
                    start = window::utc_second(floor.start)
                );
                log::error!("{message}");
                (floor.start, Some(Error::State(message)))
            }
            Recovery::Queue {
                queue,
                takeover,
                seeded,
                read,
            } => {
                let at = |second| window::utc_second(takeover::Takeover::at(second));
                match takeover.shaped {
                    true => log::warn!(
                        "no watermark at {place}, and the queue {queue} holds records \
                         msgx-once wrote in another record_format than Graph's (a backfill \
                         before the first cron run), the newest from {} (of {read} read): \
                         this run starts at {} — a backfill reads whole seconds, and what \
                         one did not finish its summary named as unread",
                        at(takeover.newest),
                        at(takeover.start)
                    ),
                    false => log::warn!(
                        "no watermark at {place}, and the queue {queue} holds records no \
                         msgx-once run wrote, the newest from {} (a switch-over from \
                         MsGraphExporter, or a backfill before the first cron run): this \
                         run starts at {} and skips the {seeded} records queued since (of \
                         {read} read), so nothing is delivered twice and nothing between \
                         is left out",
                        at(takeover.newest),
                        at(takeover.start)
                    ),
                }
                if let Some((wanted, start)) = takeover.unsure {
                    log::warn!(
                        "the queue {queue} holds too few records to vouch for what lies \
                         before {start}: consumers may have taken them, so this run reads \
                         nothing before it — if the exporter before stopped midway through \
                         a window, what it did not write lies in --since {wanted} --until \
                         {start} (a backfill of it delivers again what it did write)",
                        start = at(start),
                        wanted = at(wanted),
                    );
                }
                (takeover::Takeover::at(takeover.start), None)
            }
        };
        let progress = Progress::starting_at(start);
        self.store.save(progress.clone())?;
        self.progress = Some(progress);
        Ok(lost)
    }

    /// A first run stores where it starts before it exports anything, so that if it
    /// dies its successor resumes there instead of starting a window of its own.
    ///
    /// A first run is also what a run looks like whose state was lost (Redis restarted
    /// without persistence, the state file deleted): when the store shows msgx-once's
    /// own traces it returns an error (exit 1) naming the backfill that closes the gap.
    /// A queue that holds records but no trace of msgx-once is a deployment switching
    /// over from the original (or a backfill run before cron): a WARN names the
    /// backfill of the gap, and the run goes on.
    pub fn start_first_run(&mut self, window: &Window) -> Result<Option<Error>, Error> {
        let (None, Some(start)) = (&self.progress, window.start()) else {
            return Ok(None);
        };
        let traces = self.store.traces()?;
        let progress = Progress::starting_at(start);
        self.store.save(progress.clone())?;
        self.progress = Some(progress);
        let start = window::utc_second(start);
        let gap = format!("backfill the gap with --since <end of the last export> --until {start}");
        let place = self.store.location();
        Ok(match traces {
            Traces {
                ours: Some(ours), ..
            } => {
                let message = format!(
                    "no watermark at {place}, but {ours}: state was lost; this run starts a \
                     new first window at {start} — {gap}"
                );
                log::error!("{message}");
                Some(Error::State(message))
            }
            Traces {
                queued: Some(queued),
                ..
            } => {
                log::warn!(
                    "no watermark at {place}, and {queued} that no msgx-once run wrote (a \
                     switch-over from MsGraphExporter, or a backfill before the first cron \
                     run): starting a first window at {start} — export what lies between \
                     the last record there and it with --since <end of the last export> \
                     --until {start}"
                );
                None
            }
            Traces { .. } => {
                log::warn!(
                    "no watermark at {place}: starting a first window at {start}; if this is \
                     not the first run, state was lost — {gap}"
                );
                None
            }
        })
    }
}

/// What the state stores need of the options.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// Runs keep state: `state auto`, and not a backfill.
    pub keep: bool,
    /// State lives in Redis (the Redis backend), else in each lane's `state_file`.
    pub redis: Option<RedisSettings>,
    /// The first rescan depth.
    pub rescan: u64,
    /// The original's window (`streams` × `stream_frame`) and `timelag`, in seconds:
    /// what a first run takes over from its queue.
    pub window: i64,
    pub timelag: i64,
}

/// Opens and locks `source`'s state store when this run keeps state: `state auto`, not
/// a backfill, and somewhere to keep it.
pub fn open(
    settings: &StateSettings,
    source: &Lane,
    retry: &RetryOptions,
) -> Result<Option<Resumed>, Error> {
    if !settings.keep {
        return Ok(None);
    }
    let mut store: Box<dyn StateStore> = match (&settings.redis, &source.state_file) {
        (Some(redis), _) => Box::new(RedisState::new(settings, redis, source, retry.clone())?),
        (_, Some(path)) => Box::new(FileState::new(path, settings.rescan)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn at(minute: i64) -> OffsetDateTime {
        datetime!(2026-11-30 12:00:00 UTC) + time::Duration::minutes(minute)
    }

    fn range(from: i64, to: i64) -> Frame {
        Frame::between(at(from), at(to)).unwrap()
    }

    #[test]
    fn two_histories_merge_into_the_further_one_owing_what_neither_read() {
        // Upgraded at 0, ran to 10; rolled back: the old version started afresh at 15
        // (its state was gone) and ran to 40, owing 20–21. Rolled forward.
        let upgraded = Progress {
            watermark: at(10),
            origin: at(0),
            rescanned: at(0),
            owed_first: vec![range(4, 5)],
            owed_second: Vec::new(),
            deeper: Vec::new(),
        };
        let rolled_back = Progress {
            watermark: at(40),
            origin: at(15),
            rescanned: at(30),
            owed_first: vec![range(20, 21)],
            owed_second: Vec::new(),
            deeper: Vec::new(),
        };
        for merged in [
            upgraded.merged_with(&rolled_back),
            rolled_back.merged_with(&upgraded),
        ] {
            assert_eq!(merged.watermark, at(40));
            assert_eq!(merged.origin, at(0));
            assert_eq!(merged.rescanned, at(30));
            assert_eq!(
                merged.owed_first,
                [range(4, 5), range(10, 15), range(20, 21)]
            );
            // Read a second time by neither: up to 15, the old version's start (what is
            // owed its first read gets that instead).
            assert_eq!(merged.owed_second, [range(0, 15)]);
        }
        assert_eq!(upgraded.merged_with(&upgraded), upgraded);
    }

    #[test]
    fn the_latest_second_claimed_names_its_field() {
        let mut progress = Progress::starting_at(at(0));
        assert_eq!(progress.latest(), ("watermark", at(0)));
        progress.owed_first = vec![range(5, 9)];
        assert_eq!(progress.latest(), ("owed ranges", at(9)));
    }
}
