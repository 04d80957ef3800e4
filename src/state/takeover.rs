//! Where a lane without a watermark starts when its queue holds what another exporter
//! wrote: MsGraphExporter's records at a switch-over, or a backfill's before the first
//! cron run. Starting at the usual first window would deliver again what the
//! original's last window already wrote, or leave out what lies between its last
//! window and this one; asking the operator for the gap hands them arithmetic they
//! cannot do exactly (Graph pages newest first, so a window stopped midway leaves
//! older seconds unwritten below its newest record).
//!
//! Instead the run starts early enough to cover the original's last windows and marks
//! the records queued since as delivered (the seen-set), so that the re-read delivers
//! only what is missing. [`Takeover::plan`] is that arithmetic; the store reads the
//! queue and writes the seen-set.

use time::OffsetDateTime;

use crate::dedup::{RecordKey, record_keys};
use crate::sources::SourceSpec;

/// What a lane needs to take over from another exporter's queue.
#[derive(Debug, Clone)]
pub struct TakeoverSettings {
    pub spec: &'static SourceSpec,
    /// Keys are of record versions (`signin_updates`).
    pub versioned: bool,
    /// The original's window: `streams` × `stream_frame` seconds, read every window.
    pub window: i64,
    /// `timelag`: the original read nothing later than this before its last beat.
    pub timelag: i64,
}

/// Records read from the queue's tail, newest pushes first.
pub const SCAN_BATCH: usize = 200;
/// Most records read: beyond them the queue's older records count as not seen.
pub const SCAN_CAP: usize = 50_000;
/// Windows read again before the newest queued record: the one it belongs to, and one
/// before for a worker that ran two at once.
const WINDOWS_BACK: i64 = 2;

/// The queue's tail as far as it was read.
#[derive(Debug, Default)]
pub struct QueueScan {
    /// The keys of the records read (of this lane's source), newest pushes first.
    pub keys: Vec<RecordKey>,
    /// Records read that are not this source's (no id or time): not counted.
    pub foreign: usize,
    /// Records read in all.
    pub read: usize,
    /// The second of the oldest push read that had one.
    pub oldest_push: Option<i64>,
    /// The newest second of the records msgx-once wrote in another shape than Graph's
    /// (`record_format`): a backfill's, which reads whole seconds.
    pub shaped_newest: Option<i64>,
    /// Whether records before the oldest read may have been taken or not read: the
    /// scan reached the cap, or the queue's oldest record where consumers may have
    /// taken the ones before (a list, or a stream that lost entries).
    pub ended_unseen: bool,
}

impl QueueScan {
    /// Adds one batch of records (newest pushes first); false once the queue is read
    /// to its oldest record (`last`) or to the cap. Records dated after `now` cannot be
    /// Graph's: they count as another shape's. `taken`: consumers may have taken
    /// records from the queue's head.
    ///
    /// The whole queue is read, not only its tail: a backfill pushes its frames side
    /// by side, each newest first, so the newest record may sit anywhere in it.
    pub fn add(
        &mut self,
        batch: &[&str],
        settings: &TakeoverSettings,
        now: i64,
        (last, taken): (bool, bool),
    ) -> bool {
        self.read += batch.len();
        let (keys, problems) = record_keys(batch, settings.spec, 0, settings.versioned);
        let bad: std::collections::HashSet<usize> = problems.iter().map(|p| p.offset).collect();
        for (offset, key) in keys.into_iter().enumerate() {
            if bad.contains(&offset) {
                // Not keyed as Graph's: msgx-once's own record in another shape, or
                // another exporter's.
                match crate::format::shaped_second(batch[offset], settings.spec) {
                    Some(second) if second <= now => {
                        self.shaped_newest = self.shaped_newest.max(Some(second));
                        self.oldest_push = Some(second);
                    }
                    _ => self.foreign += 1,
                }
            } else if key.second > now {
                self.foreign += 1;
            } else {
                self.oldest_push = Some(key.second);
                self.keys.push(key);
            }
        }
        let capped = self.read >= SCAN_CAP;
        self.ended_unseen = capped || (last && taken);
        !last && !capped
    }

    fn newest(&self) -> Option<i64> {
        self.keys.iter().map(|k| k.second).max()
    }
}

/// What a run without a watermark found to start from.
#[derive(Debug)]
pub enum Recovery {
    /// The seen-set survived the state.
    Seen(SeenFloor),
    /// Another exporter's records in the queue, now marked delivered.
    Queue {
        queue: String,
        takeover: Takeover,
        /// Records queued at or after the start, marked delivered.
        seeded: usize,
        /// Records read from the queue.
        read: usize,
    },
}

/// What the seen-set says of where deliveries stand.
#[derive(Debug)]
pub struct SeenFloor {
    pub key: String,
    /// Where a run may resume and deliver nothing twice.
    pub start: OffsetDateTime,
    /// `start` is the floor mark (every second below it needs no read again); else the
    /// oldest id's second, from a set written before the mark existed.
    pub marked: bool,
    pub ids: u64,
}

/// Where the lane starts, and what it counts as delivered.
#[derive(Debug, PartialEq, Eq)]
pub struct Takeover {
    /// The newest second among the queued records.
    pub newest: i64,
    /// The queued records are all msgx-once's in another shape than Graph's: a
    /// backfill's, whose seconds it read whole, so the lane starts after its newest
    /// and marks nothing delivered.
    pub shaped: bool,
    /// The first second this lane reads.
    pub start: i64,
    /// When consumers may have taken records the start would read again: the range
    /// between the start the windows call for and the one used, which may hold records
    /// the original did not write (a window it stopped midway) beside those it did.
    pub unsure: Option<(i64, i64)>,
}

impl Takeover {
    /// The start for `scan`: two of the original's windows before its newest record,
    /// so a window it stopped midway (or two a lagging worker ran at once) is read again
    /// whole. Records consumers already took cannot be skipped, and a consumer takes the
    /// oldest pushes, whose seconds reach up to two windows past the oldest push left
    /// (frames are pushed side by side, the newer often first): when the scan ends
    /// where the queue (or the cap) does, the start is no earlier than that — but never
    /// past `lagged_end`, the run's lagged now, which the original never read beyond.
    /// None: nothing queued is this source's.
    ///
    /// Records msgx-once wrote in another shape (a backfill in `record_format`
    /// azure_monitor or ocsf) cannot be keyed as Graph's: a backfill reads whole
    /// seconds and names in its summary what it did not finish, so the start is the
    /// second after the newest, and nothing is marked delivered.
    pub fn plan(scan: &QueueScan, window: i64, lagged_end: i64) -> Option<Takeover> {
        let (newest, wanted, shaped) = match (scan.newest(), scan.shaped_newest) {
            (Some(newest), shaped) => (
                newest.max(shaped.unwrap_or(newest)),
                newest - WINDOWS_BACK * window,
                false,
            ),
            (None, Some(shaped)) => (shaped, shaped + 1, true),
            (None, None) => return None,
        };
        let guard = match (scan.ended_unseen, scan.oldest_push) {
            (true, Some(oldest)) => oldest + WINDOWS_BACK * window,
            _ => wanted,
        };
        let start = wanted.max(guard).min(lagged_end.max(wanted));
        Some(Takeover {
            newest,
            shaped,
            start,
            unsure: (start > wanted).then_some((wanted, start)),
        })
    }

    /// The keys queued at or after the start: delivered, not to be delivered again.
    pub fn delivered<'a>(&self, scan: &'a QueueScan) -> impl Iterator<Item = &'a RecordKey> {
        let start = self.start;
        scan.keys.iter().filter(move |k| k.second >= start)
    }

    pub fn at(second: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(second).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TakeoverSettings {
        TakeoverSettings {
            spec: crate::sources::sign_ins(),
            versioned: false,
            window: 60,
            timelag: 120,
        }
    }

    fn record(id: usize, second: i64) -> String {
        let at = Takeover::at(second)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        format!(r#"{{"id":"r{id}","createdDateTime":"{at}"}}"#)
    }

    /// Scans `seconds` (newest pushes first) in batches of `batch`, the last reaching
    /// the head when `head`.
    fn scan(seconds: &[i64], batch: usize, head: bool) -> QueueScan {
        let records: Vec<String> = seconds
            .iter()
            .enumerate()
            .map(|(i, s)| record(i, *s))
            .collect();
        let mut scan = QueueScan::default();
        let chunks: Vec<&[String]> = records.chunks(batch).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let last = head && i == chunks.len() - 1;
            if !scan.add(&refs, &settings(), i64::MAX, (last, true)) {
                break;
            }
        }
        scan
    }

    /// Pushes of windows `[w·60, w·60 + 60)` for `windows` (oldest first), each
    /// newest first, one record every 10 s: as a queue holds them, newest push first.
    fn pushes(windows: std::ops::Range<i64>) -> Vec<i64> {
        let mut seconds: Vec<i64> = windows
            .flat_map(|w| (0..6).map(move |i| w * 60 + 50 - i * 10))
            .collect();
        seconds.reverse();
        seconds
    }

    #[test]
    fn a_full_queue_starts_two_windows_before_its_newest_record() {
        let scan = scan(&pushes(900..1010), 4, true);
        let takeover = Takeover::plan(&scan, 60, i64::MAX).unwrap();
        assert_eq!(takeover.newest, 1009 * 60 + 50);
        assert_eq!(takeover.start, 1009 * 60 + 50 - 120);
        assert_eq!(takeover.unsure, None);
        let delivered: Vec<i64> = takeover.delivered(&scan).map(|k| k.second).collect();
        // Two windows back, and the one second of a third at the start.
        assert_eq!(delivered.len(), 13);
        assert!(delivered.iter().all(|&s| s >= takeover.start));
    }

    #[test]
    fn a_backfills_newest_record_is_found_among_its_earliest_pushes() {
        // Two frames side by side, the newer pushed first, each newest first: the
        // tail holds the older frame.
        let mut oldest_first: Vec<i64> = (0..600).rev().map(|s| 100_000 + s).collect();
        oldest_first.extend((0..600).rev().map(|s| 99_400 + s));
        oldest_first.reverse();
        let mut queued = QueueScan::default();
        let records: Vec<String> = oldest_first
            .iter()
            .enumerate()
            .map(|(i, s)| record(i, *s))
            .collect();
        for (i, chunk) in records.chunks(SCAN_BATCH).enumerate() {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let last = (i + 1) * SCAN_BATCH >= records.len();
            if !queued.add(&refs, &settings(), i64::MAX, (last, false)) {
                break;
            }
        }
        assert_eq!(queued.read, 1200);
        let takeover = Takeover::plan(&queued, 60, i64::MAX).unwrap();
        assert_eq!(takeover.newest, 100_599);
        assert_eq!(takeover.start, 100_599 - 120);
        assert_eq!(takeover.unsure, None);
        assert_eq!(takeover.delivered(&queued).count(), 121);
    }

    #[test]
    fn a_queue_consumers_drained_to_its_last_window_starts_past_what_they_may_have_taken() {
        // Only the last window's four latest pushes are left: its oldest seconds, the
        // newest the earliest of them (pushed newest first).
        let left = &pushes(1000..1010)[..4];
        let scan = scan(left, 200, true);
        let newest = 1009 * 60 + 30;
        let guard = newest + 120;
        let takeover = Takeover::plan(&scan, 60, 1012 * 60).unwrap();
        assert_eq!(takeover.start, guard);
        assert_eq!(takeover.unsure, Some((newest - 120, guard)));
        assert_eq!(takeover.delivered(&scan).count(), 0);
        // Never past the run's lagged now: the original read nothing after it.
        let takeover = Takeover::plan(&scan, 60, newest + 5).unwrap();
        assert_eq!(takeover.start, newest + 5);
    }

    #[test]
    fn records_of_another_shape_or_from_the_future_are_not_this_sources_and_give_no_start() {
        let mut scan = QueueScan::default();
        let future = record(1, 2_000_000_000);
        let batch = [r#"{"id":"x"}"#, "junk", future.as_str()];
        assert!(!scan.add(&batch, &settings(), 1_800_000_000, (true, true)));
        assert_eq!((scan.foreign, scan.read), (3, 3));
        assert_eq!(Takeover::plan(&scan, 60, i64::MAX), None);
    }

    #[test]
    fn the_cap_ends_the_scan_and_guards_the_start_like_a_head() {
        // One window of SCAN_CAP + 10 records, all in the same second.
        let seconds = vec![60_000; SCAN_CAP + 10];
        let scan = scan(&seconds, SCAN_BATCH, true);
        assert_eq!(scan.read, SCAN_CAP);
        let takeover = Takeover::plan(&scan, 60, i64::MAX).unwrap();
        assert_eq!(takeover.start, 60_120);
        assert_eq!(takeover.unsure, Some((59_880, 60_120)));
    }

    #[test]
    fn a_backfill_in_another_shape_is_taken_over_from_the_second_after_its_newest() {
        let shaped: Vec<String> = [6_000, 6_030, 5_990]
            .iter()
            .enumerate()
            .map(|(i, &second)| match i {
                // OCSF: `time` in milliseconds.
                0 => format!(
                    r#"{{"class_uid":3002,"time":{},"metadata":{{}}}}"#,
                    second * 1000 + 999
                ),
                _ => format!(
                    r#"{{"category":"SignInLogs","properties":{}}}"#,
                    record(i, second)
                ),
            })
            .collect();
        let refs: Vec<&str> = shaped.iter().map(String::as_str).collect();
        let mut scan = QueueScan::default();
        scan.add(&refs, &settings(), i64::MAX, (true, false));
        assert_eq!((scan.foreign, scan.shaped_newest), (0, Some(6_030)));
        let takeover = Takeover::plan(&scan, 60, 9_000).unwrap();
        assert_eq!(
            takeover,
            Takeover {
                newest: 6_030,
                shaped: true,
                start: 6_031,
                unsure: None
            }
        );
        assert_eq!(takeover.delivered(&scan).count(), 0);
        // Graph's records beside them: the windows back, as for the original's.
        let graph = record(9, 6_000);
        scan.add(&[&graph], &settings(), i64::MAX, (true, false));
        let takeover = Takeover::plan(&scan, 60, 9_000).unwrap();
        assert_eq!(
            (takeover.newest, takeover.shaped, takeover.start),
            (6_030, false, 5_880)
        );
    }
}
