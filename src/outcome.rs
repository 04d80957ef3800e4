//! What the pipeline did with each frame ([`FrameOutcome`]) and the ages of the late
//! records it found ([`LateAges`]): what the report, the state's commit and the metrics
//! read of a run, kept below them so that they need not import the pipeline.

use crate::error::{GraphError, SinkError};
use crate::sources::SourceSpec;
use crate::window::{Frame, Pass};

/// Why a frame is incomplete.
#[derive(Debug, Clone)]
pub enum FrameFailure {
    Fetch(GraphError),
    Write(SinkError),
    /// A deeper read left for a later run: this run's share of the budget is spent.
    /// Not a failure of the export.
    Deferred,
}

impl std::fmt::Display for FrameFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameFailure::Fetch(e) => write!(f, "fetch failed: {e}"),
            FrameFailure::Write(e) => write!(f, "write failed: {e}"),
            FrameFailure::Deferred => f.write_str(
                "deferred: the budget this run leaves to deeper reads is spent (owed to a later run)",
            ),
        }
    }
}

/// Bounds (seconds, `le`) of the histogram of late records' ages when found.
pub const LATE_BUCKETS: [u64; 7] = [300, 600, 1800, 3600, 7200, 14_400, 86_400];

/// The ages of late records (delivered by a read after the first) when found: a
/// Prometheus histogram's buckets (one for each of [`LATE_BUCKETS`], then +Inf), sum
/// and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LateAges {
    pub buckets: [u64; LATE_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl LateAges {
    pub fn add(&mut self, age: u64) {
        let bucket = LATE_BUCKETS
            .iter()
            .position(|&le| age <= le)
            .unwrap_or(LATE_BUCKETS.len());
        self.buckets[bucket] += 1;
        self.sum += age as f64;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &LateAges) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// What happened to one frame.
#[derive(Debug, Clone)]
pub struct FrameOutcome {
    pub source: &'static SourceSpec,
    /// Its lane's tenant, when the run exports several.
    pub tenant: Option<String>,
    pub frame: Frame,
    pub pass: Pass,
    /// Of the records delivered, the ages of those a read after the first found.
    pub late_ages: LateAges,
    pub pages: u64,
    /// Records fetched and handed to the sink.
    pub records: u64,
    /// Of those, the ones not delivered before (all of them without deduplication).
    pub delivered: u64,
    /// Records without a usable id or createdDateTime (deduplicated by their bytes).
    pub unkeyed: u64,
    /// Records published to a channel nobody listened on (not delivered).
    pub unheard: u64,
    /// Of the records delivered, new versions of records delivered before
    /// (`signin_updates`).
    pub updated: u64,
    pub failure: Option<FrameFailure>,
    /// What a later run must still read of a failed frame: what the chunks written
    /// leave, judged by their records' times whatever order Graph pages in (a chunk
    /// written after an unwritten one is not read again). Empty when nothing is left.
    pub unfinished: Vec<Frame>,
}

impl FrameOutcome {
    /// It failed (a deferred deeper read did not).
    pub fn failed(&self) -> bool {
        self.failure
            .as_ref()
            .is_some_and(|f| !matches!(f, FrameFailure::Deferred))
    }

    /// A deeper read left for a later run.
    pub fn deferred(&self) -> bool {
        matches!(self.failure, Some(FrameFailure::Deferred))
    }

    /// Records a read after the first found new: delivered late (every one has its
    /// age in `late_ages`).
    pub fn late(&self) -> u64 {
        self.late_ages.count
    }

    /// The credentials or the application's rights were refused.
    pub fn auth_refused(&self) -> bool {
        matches!(&self.failure, Some(FrameFailure::Fetch(e)) if e.is_refusal())
    }
}
