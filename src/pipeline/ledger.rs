//! The ledger of a run: per frame, which chunks were fetched and written, what they
//! delivered, and — when the frame failed — what of it is still unread, as owed
//! ranges a later run reads (or a backfill of the summary's ranges exports again).
//! The owed-range arithmetic lives here, with its unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use time::OffsetDateTime;

use super::jobs::{Job, OpenLane};
use super::progress::Figures;
use crate::outcome::{FrameFailure, FrameOutcome, LateAges};
use crate::window::{self, Frame};

/// The seconds of one written chunk's records (their time field), in the order Graph
/// sent them, as far as they are readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkSeconds {
    pub(super) first: i64,
    pub(super) last: i64,
    /// Every second is at most the one before it (newest first), or at least it.
    pub(super) falling: bool,
    pub(super) rising: bool,
    /// No record of its last second follows (see `Chunk::complete`).
    pub(super) complete: bool,
}

impl ChunkSeconds {
    pub(super) fn of(seconds: impl IntoIterator<Item = i64>) -> Option<Self> {
        let mut seconds = seconds.into_iter();
        let first = seconds.next()?;
        let mut chunk = ChunkSeconds {
            first,
            last: first,
            falling: true,
            rising: true,
            complete: false,
        };
        for second in seconds {
            chunk.falling &= second <= chunk.last;
            chunk.rising &= second >= chunk.last;
            chunk.last = second;
        }
        Some(chunk)
    }
}

#[derive(Default)]
pub(super) struct FrameProgress {
    /// Pages whose last chunk was written.
    pub(super) pages: u64,
    /// Chunks written.
    pub(super) chunks: u64,
    pub(super) records: u64,
    pub(super) delivered: u64,
    pub(super) unkeyed: u64,
    pub(super) unheard: u64,
    pub(super) updated: u64,
    pub(super) failure: Option<FrameFailure>,
    /// The seconds of each chunk written, by its number in the frame.
    pub(super) written: BTreeMap<u64, Option<ChunkSeconds>>,
    /// Chunks of the frame, once all were fetched.
    pub(super) fetched: Option<u64>,
    pub(super) late_ages: LateAges,
}

impl FrameProgress {
    /// What of `frame` the chunks written leave unread, as ranges (none: nothing).
    /// Graph documents no order for some resources, so the order is read from the
    /// records. Chunks newest first: a run of chunks written from the first has read
    /// everything after its oldest second, and that second too when its last chunk is
    /// `complete` (its second's records were held together), else it goes on in what
    /// was not written; a run after an unwritten chunk has read the seconds between
    /// its newest (which the unwritten chunk may share) and its oldest second. Chunks
    /// oldest first, the same from the other end. Records in no order, or all in one
    /// second, leave the whole frame.
    ///
    /// Writers finish chunks in any order, so a chunk may be written while one before
    /// it is not: its records are not owed again, or exporting the owed ranges would
    /// deliver them twice.
    pub(super) fn remaining(&self, frame: &Frame) -> Vec<Frame> {
        use time::Duration;
        // Runs of chunks numbered one after the other, each as its readable chunks.
        let mut runs: Vec<(u64, Vec<ChunkSeconds>)> = Vec::new();
        let mut next = 0;
        for (&number, seconds) in &self.written {
            if number != next {
                runs.push((number, Vec::new()));
            }
            next = number + 1;
            if let (Some(seconds), Some((_, run))) = (seconds, runs.last_mut()) {
                run.push(*seconds);
            }
        }
        let chunks: Vec<&ChunkSeconds> = runs.iter().flat_map(|(_, run)| run).collect();
        if chunks.is_empty() {
            return vec![*frame];
        }
        let falling =
            chunks.iter().all(|c| c.falling) && chunks.windows(2).all(|w| w[0].last >= w[1].first);
        let rising =
            chunks.iter().all(|c| c.rising) && chunks.windows(2).all(|w| w[0].last <= w[1].first);
        if falling == rising {
            return vec![*frame];
        }
        let at = |second: i64| {
            OffsetDateTime::from_unix_timestamp(second)
                .map_or(frame.end, |t| t.clamp(frame.start, frame.end))
        };
        let read: Vec<Frame> = runs
            .iter()
            .filter_map(|(number, run)| {
                let (first, last) = (run.first()?, run.last()?);
                let whole = i64::from(last.complete);
                let from_the_first = *number == 1;
                match falling {
                    true => Frame::between(
                        at(last.last) + Duration::seconds(1 - whole),
                        match from_the_first {
                            true => frame.end + Duration::SECOND,
                            false => at(first.first),
                        },
                    ),
                    false => Frame::between(
                        match from_the_first {
                            true => frame.start,
                            false => at(first.first) + Duration::SECOND,
                        },
                        at(last.last) + Duration::seconds(whole),
                    ),
                }
            })
            .collect();
        window::subtract(*frame, &window::merge(read))
    }

    /// The share of `frame` read and written: whole once done, else what the chunks
    /// written so far cover.
    pub(super) fn covered(&self, frame: &Frame) -> f64 {
        if self.failure.is_some() || self.fetched == Some(self.chunks) {
            return 1.0;
        }
        let left: u64 = self.remaining(frame).iter().map(Frame::seconds).sum();
        let left = left as f64;
        let all = frame.seconds().max(1) as f64;
        match self.written.is_empty() {
            true => 0.0,
            false => (1.0 - left / all).clamp(0.0, 1.0),
        }
    }

    /// The part of `frame` not yet read, if it failed.
    pub(super) fn unfinished(&self, frame: &Frame) -> Vec<Frame> {
        match self.failure {
            Some(_) => self.remaining(frame),
            None => Vec::new(),
        }
    }
}

/// Per-frame progress, written by fetchers and writers.
pub(super) struct Ledger(Vec<Mutex<FrameProgress>>);

impl Ledger {
    pub(super) fn new(frames: usize) -> Self {
        Ledger((0..frames).map(|_| Mutex::default()).collect())
    }

    pub(super) fn update(&self, frame: usize, change: impl FnOnce(&mut FrameProgress)) {
        change(&mut self.0[frame].lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub(super) fn fail(&self, frame: usize, failure: FrameFailure) {
        // The first failure is the cause; later ones are usually its consequences.
        self.update(frame, |p| {
            p.failure.get_or_insert(failure);
        });
    }

    /// Where the run stands: frames done, records, the budget spent, and the seconds
    /// of the window covered so far of all.
    pub(super) fn figures(&self, jobs: &[Job], lanes: &[OpenLane]) -> Figures {
        let mut figures = Figures {
            frames: jobs.len(),
            spent: lanes.iter().map(|l| l.client.spent()).sum(),
            ..Figures::default()
        };
        for (progress, Job { frame, .. }) in self.0.iter().zip(jobs) {
            let p = progress.lock().unwrap_or_else(|p| p.into_inner());
            let share = p.covered(frame);
            figures.done += usize::from(share >= 1.0);
            figures.records += p.records;
            figures.covered += share * frame.seconds() as f64;
            figures.total += frame.seconds() as f64;
        }
        figures
    }

    pub(super) fn outcomes(self, jobs: &[Job], lanes: &[OpenLane]) -> Vec<FrameOutcome> {
        self.0
            .into_iter()
            .zip(jobs)
            .map(
                |(
                    progress,
                    Job {
                        lane, frame, pass, ..
                    },
                )| {
                    let p = progress.into_inner().unwrap_or_else(|p| p.into_inner());
                    FrameOutcome {
                        source: lanes[*lane].source(),
                        tenant: lanes[*lane].tenant.map(str::to_string),
                        unfinished: p.unfinished(frame),
                        frame: *frame,
                        pass: *pass,
                        late_ages: p.late_ages,
                        pages: p.pages,
                        records: p.records,
                        delivered: p.delivered,
                        unkeyed: p.unkeyed,
                        unheard: p.unheard,
                        updated: p.updated,
                        failure: p.failure,
                    }
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_frame_owes_what_its_written_chunks_leave_whole_seconds_exactly() {
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let frame = Frame {
            start: t(100),
            end: t(199),
        };
        let owed = |seconds: &[&[i64]], complete: bool| {
            let mut progress = FrameProgress {
                failure: Some(FrameFailure::Deferred),
                ..FrameProgress::default()
            };
            for (i, chunk) in seconds.iter().enumerate() {
                let mut written = ChunkSeconds::of(chunk.iter().copied());
                if let Some(w) = &mut written {
                    w.complete = complete || i + 1 < seconds.len();
                }
                progress.written.insert(i as u64 + 1, written);
            }
            progress.unfinished(&frame)
        };
        let between = |a, b| {
            vec![Frame {
                start: t(a),
                end: t(b),
            }]
        };
        // Newest first: everything after the oldest second written is read; that
        // second too when its records were kept together.
        assert_eq!(owed(&[&[199, 180], &[170, 150]], true), between(100, 149));
        assert_eq!(owed(&[&[199, 180], &[170, 150]], false), between(100, 150));
        // Oldest first, the same from the other end.
        assert_eq!(owed(&[&[100, 120], &[130, 140]], true), between(141, 199));
        assert_eq!(owed(&[&[100, 120], &[130, 140]], false), between(140, 199));
        // Read down to the frame's first second, whole: nothing owed.
        assert_eq!(owed(&[&[199, 100]], true), []);
        // No order, or nothing written: the whole frame.
        assert_eq!(owed(&[&[150, 199, 120]], true), [frame]);
        assert_eq!(owed(&[], true), [frame]);
    }

    /// Writers finish a frame's chunks out of order: when the run stops, a chunk may be
    /// written while one before it is not. What is owed must leave out what the later
    /// chunk delivered, or exporting the owed ranges again delivers it twice.
    #[test]
    fn a_chunk_written_after_an_unwritten_one_is_not_owed_again() {
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let frame = Frame {
            start: t(100),
            end: t(199),
        };
        let owed = |chunks: &[(u64, &[i64])]| {
            let mut progress = FrameProgress {
                failure: Some(FrameFailure::Deferred),
                ..FrameProgress::default()
            };
            for (number, seconds) in chunks {
                let mut written = ChunkSeconds::of(seconds.iter().copied());
                if let Some(w) = &mut written {
                    w.complete = true;
                }
                progress.written.insert(*number, written);
            }
            let unfinished: Vec<(i64, i64)> = progress
                .unfinished(&frame)
                .into_iter()
                .map(|f| (f.start.unix_timestamp(), f.end.unix_timestamp()))
                .collect();
            unfinished
        };
        // Newest first; chunk 2 (seconds 179 to 160, unknown) was not written. Its
        // boundary seconds are owed (the unwritten chunk may hold records of them too).
        assert_eq!(
            owed(&[(1, &[199, 180]), (3, &[160, 150])]),
            [(100, 149), (160, 179)]
        );
        // Oldest first, chunk 1 not written: from the frame's start to chunk 2's first
        // second, and after its last.
        assert_eq!(
            owed(&[(2, &[130, 140]), (3, &[141, 150])]),
            [(100, 130), (151, 199)]
        );
        // Runs of written chunks, twice over.
        assert_eq!(
            owed(&[
                (1, &[199, 190]),
                (3, &[170, 160]),
                (4, &[159, 150]),
                (6, &[120, 110])
            ]),
            [(100, 109), (120, 149), (170, 189)]
        );
    }

    /// The share covered, for the progress line: a frame whose chunks were all written
    /// is whole, whatever order they came in; one still going counts what its written
    /// chunks cover; a failure ends it (what it owes is counted elsewhere).
    #[test]
    fn a_frames_share_covered_follows_its_written_chunks() {
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let frame = Frame {
            start: t(100),
            end: t(199),
        };
        let chunk = |seconds: [i64; 2]| {
            let mut c = ChunkSeconds::of(seconds).unwrap();
            c.complete = true;
            Some(c)
        };
        let mut progress = FrameProgress::default();
        assert_eq!(progress.covered(&frame), 0.0);
        progress.written.insert(2, chunk([149, 100]));
        progress.chunks = 1;
        // Chunk 1 not yet written: 100–148 read (149 it may share), the rest not.
        assert_eq!(progress.covered(&frame), 0.49);
        progress.written.insert(1, chunk([199, 150]));
        progress.chunks = 2;
        assert_eq!(progress.covered(&frame), 1.0);
        progress.fetched = Some(2);
        assert_eq!(progress.covered(&frame), 1.0);
        assert!(
            progress.unfinished(&frame).is_empty(),
            "no failure, nothing owed"
        );
        progress.failure = Some(FrameFailure::Deferred);
        assert!(progress.unfinished(&frame).is_empty(), "read whole");
    }

    /// The ledger of a run keeps each frame apart, and the first failure is the cause.
    #[test]
    fn the_first_failure_of_a_frame_is_kept() {
        let ledger = Ledger::new(2);
        ledger.fail(1, FrameFailure::Deferred);
        ledger.fail(
            1,
            FrameFailure::Write(crate::error::SinkError {
                target: "t".into(),
                message: "later".into(),
            }),
        );
        let failures: Vec<bool> = ledger
            .0
            .iter()
            .map(|p| p.lock().unwrap().failure.is_some())
            .collect();
        assert_eq!(failures, [false, true]);
        assert!(matches!(
            ledger.0[1].lock().unwrap().failure,
            Some(FrameFailure::Deferred)
        ));
    }
}
