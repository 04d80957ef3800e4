//! The pipeline of one run: fetcher threads (a rayon pool) take jobs — a frame of one
//! source's lane — in order and page through them; each page's records go, in chunks
//! as they arrive, through a channel to `writers` threads that hand them to the lane's
//! sink. Every source shares the fetchers and writers; the order of the jobs decides
//! who goes first.
//!
//! How many requests are in flight follows Graph's latency ([`Flight`]): the budgets'
//! request rate times the time a page takes, as measured from the run's own answers —
//! at least `streams`, at most the fetcher threads.
//!
//! Chunks in flight hold at most `page_memory` bytes together ([`PageMemory`]): a
//! fetcher reserves a chunk's bytes when a page's records start to arrive and waits
//! while they would not fit (the body waits in the socket), and a chunk frees what it
//! holds once written — so memory is bounded in bytes, whatever the page size, record
//! size, number of tenants or writers. A ledger records, per frame, which chunks were
//! fetched and written, so the run can say exactly which frames are incomplete and
//! what of them is still unread.
//!
//! The sink retries a page itself; once a page has failed for good the lane's sink
//! counts as down: no more pages of that lane are fetched or written, and every frame
//! of it not yet complete fails with that error instead of spending Graph's budget on
//! pages that cannot land. A refusal by Graph likewise stops the lane's fetching (a
//! 403: its permission or licence is missing) or all fetching (the token is refused):
//! it will not change within the run; pages already fetched are still written.
//!
//! When the run deduplicates (`keyed`), each page's record keys are read here, once: a
//! record without a usable id or time is delivered all the same (keyed by its bytes),
//! named in one ERROR line and counted.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use time::OffsetDateTime;

use crate::budget::BudgetOf;
use crate::buffers::BufferPool;
use crate::error::{Error, GraphError, SinkError};
use crate::graph::client::BudgetSpent;
use crate::graph::{Chunk, ChunkTaker, GraphClient, PageEnd};
use crate::outcome::{FrameFailure, FrameOutcome, LateAges};
use crate::page_memory::{Held, PageMemory};
use crate::sink::Sink;
use crate::sink::dedup::{record_keys, record_second};
use crate::sources::{SourceSpec, log_prefix};
use crate::window::{self, Frame, Pass};

/// One source's share of the run: where its pages come from and go to.
#[derive(Clone, Copy)]
pub struct Lane<'a> {
    /// The tenant it exports from, when the run exports several.
    pub tenant: Option<&'a str>,
    pub client: &'a GraphClient,
    pub sink: &'a dyn Sink,
    /// Records are keyed by id and content (`signin_updates`): a changed record is
    /// delivered again.
    pub versioned: bool,
}

impl Lane<'_> {
    pub fn source(&self) -> &'static SourceSpec {
        self.client.source()
    }
}

/// A frame of one lane, and which read of its seconds it is.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub lane: usize,
    /// The frame's place in its lane's window (jobs are ordered otherwise).
    pub index: usize,
    pub frame: Frame,
    pub pass: Pass,
}

pub struct PipelineOptions {
    /// Fetcher threads: the most requests in flight.
    pub fetchers: usize,
    /// The fewest requests in flight (`streams`), before Graph's latency is known and
    /// whatever it is.
    pub in_flight_floor: usize,
    /// Requests per second the budgets of the run's lanes allow together (None: not
    /// paced): with Graph's latency, how many requests in flight keep them busy.
    pub request_rate: Option<f64>,
    pub writers: usize,
    /// Bytes the chunks in flight may hold together.
    pub page_memory: u64,
    /// Hand the sink each record's key, for deduplication.
    pub keyed: bool,
    /// How often a long run logs a progress line.
    pub progress_every: Duration,
    /// Several sources are exported: log lines about a frame name its source.
    pub name_sources: bool,
    /// Draw a progress bar (stderr is a terminal, and the run is long) instead of
    /// progress lines.
    pub bar: bool,
    /// Requests of each tenant's bucket this run may have sent before a deeper read's
    /// next page: what its new data earns at the bucket's rate. A bucket not named is
    /// not paced. Beyond it deeper reads are deferred (owed to a later run), so they
    /// only spend what the first two reads leave.
    pub deep_allowance: BTreeMap<BudgetOf, u64>,
    /// The run's "now": late records' ages are measured from it.
    pub now: OffsetDateTime,
}

struct Batch {
    /// The job's index.
    job: usize,
    /// The chunk's number in its frame, from 1.
    seq: u64,
    /// Its page's number in its frame, from 1.
    page: u64,
    chunk: Chunk,
    /// What the chunk holds of the run's page memory, freed once it is written.
    _held: Held,
}

/// The seconds of one written chunk's records (their time field), in the order Graph
/// sent them, as far as they are readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChunkSeconds {
    first: i64,
    last: i64,
    min: i64,
    max: i64,
    /// Every second is at most the one before it (newest first), or at least it.
    falling: bool,
    rising: bool,
    /// No record of its last second follows (see `Chunk::complete`).
    complete: bool,
}

impl ChunkSeconds {
    fn of(seconds: impl IntoIterator<Item = i64>) -> Option<Self> {
        let mut seconds = seconds.into_iter();
        let first = seconds.next()?;
        let mut chunk = ChunkSeconds {
            first,
            last: first,
            min: first,
            max: first,
            falling: true,
            rising: true,
            complete: false,
        };
        for second in seconds {
            chunk.falling &= second <= chunk.last;
            chunk.rising &= second >= chunk.last;
            chunk.min = chunk.min.min(second);
            chunk.max = chunk.max.max(second);
            chunk.last = second;
        }
        Some(chunk)
    }
}

#[derive(Default)]
struct FrameProgress {
    /// Pages whose last chunk was written.
    pages: u64,
    /// Chunks written.
    chunks: u64,
    records: u64,
    delivered: u64,
    unkeyed: u64,
    unheard: u64,
    updated: u64,
    failure: Option<FrameFailure>,
    /// The seconds of each chunk written, by its number in the frame.
    written: BTreeMap<u64, Option<ChunkSeconds>>,
    /// Chunks of the frame, once all were fetched.
    fetched: Option<u64>,
    late_ages: LateAges,
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
    fn remaining(&self, frame: &Frame) -> Vec<Frame> {
        use time::Duration;
        // Runs of chunks numbered one after the other, each as its readable chunks.
        let mut runs: Vec<(u64, Vec<ChunkSeconds>)> = Vec::new();
        let mut next = 0;
        for (&number, seconds) in &self.written {
            if number != next || runs.is_empty() {
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
    fn covered(&self, frame: &Frame) -> f64 {
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
    fn unfinished(&self, frame: &Frame) -> Vec<Frame> {
        match self.failure {
            Some(_) => self.remaining(frame),
            None => Vec::new(),
        }
    }
}

/// Where a run stands, for the progress line or bar.
#[derive(Default)]
struct Figures {
    done: usize,
    frames: usize,
    records: u64,
    /// Seconds of the window read and written, and all of them.
    covered: f64,
    total: f64,
    spent: BudgetSpent,
}

impl Figures {
    fn fraction(&self) -> f64 {
        if self.total > 0.0 {
            self.covered / self.total
        } else {
            1.0
        }
    }

    /// One progress line: frames done, records, the budget spent, the share of the
    /// window covered (by its seconds) and the time that share suggests is left.
    fn line(&self, elapsed: Duration) -> String {
        let fraction = self.fraction();
        let eta = if fraction > 0.0 {
            format!(
                "{:.0} s",
                elapsed.as_secs_f64() * (1.0 - fraction) / fraction
            )
        } else {
            "unknown".into()
        };
        format!(
            "progress: frames {}/{} done, records {}, requests {} (throttled {}, waited {:.1} s), {:.0} % of the window, ETA {eta}",
            self.done,
            self.frames,
            self.records,
            self.spent.requests,
            self.spent.throttled,
            self.spent.waited.as_secs_f64(),
            fraction * 100.0
        )
    }

    /// The bar's message: what the line says besides the share and the ETA.
    fn message(&self) -> String {
        format!(
            "frames {}/{}, records {}, requests {}, waited {:.1} s",
            self.done,
            self.frames,
            self.records,
            self.spent.requests,
            self.spent.waited.as_secs_f64()
        )
    }
}

/// Per-frame progress, written by fetchers and writers.
struct Ledger(Vec<Mutex<FrameProgress>>);

impl Ledger {
    fn new(frames: usize) -> Self {
        Ledger((0..frames).map(|_| Mutex::default()).collect())
    }

    fn update(&self, frame: usize, change: impl FnOnce(&mut FrameProgress)) {
        change(&mut self.0[frame].lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn fail(&self, frame: usize, failure: FrameFailure) {
        // The first failure is the cause; later ones are usually its consequences.
        self.update(frame, |p| {
            p.failure.get_or_insert(failure);
        });
    }

    /// Where the run stands: frames done, records, the budget spent, and the seconds
    /// of the window covered so far of all.
    fn figures(&self, jobs: &[Job], lanes: &[Lane]) -> Figures {
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

    fn outcomes(self, jobs: &[Job], lanes: &[Lane]) -> Vec<FrameOutcome> {
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

/// A progress bar on the terminal (frames, records, requests, throttled time, ETA),
/// updated five times a second until the fetchers are done; then cleared, so the
/// summary stands alone.
fn show_bar(ledger: &Ledger, jobs: &[Job], lanes: &[Lane], finished: &Receiver<()>) {
    let total = ledger.figures(jobs, lanes).total.max(1.0) as u64;
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr_with_hz(5),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {percent:>3}% of the window, {msg}, ETA {eta}",
    ) {
        bar.set_style(style);
    }
    while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(Duration::from_millis(200)) {
        let figures = ledger.figures(jobs, lanes);
        bar.set_position(figures.covered as u64);
        bar.set_message(figures.message());
    }
    bar.finish_and_clear();
}

/// Halts of one lane: why its pages are no longer fetched or written.
#[derive(Default)]
struct Halts {
    /// The write failure that made the lane's sink count as down.
    sink_down: OnceLock<SinkError>,
    /// Graph's refusal of the lane's resource (403).
    refused: OnceLock<GraphError>,
    /// The identity platform refused the lane's tenant a token: none of its lanes can
    /// go on.
    token_refused: OnceLock<GraphError>,
}

/// The most bytes a chunk holds: enough records per Redis write that a write's round
/// trip is small beside its records, few enough that many requests in flight fit the
/// page memory.
const MAX_CHUNK_BYTES: usize = 1 << 20;
const MIN_CHUNK_BYTES: usize = 64 * 1024;

/// Requests in flight beyond what the budgets' rate times Graph's latency needs: the
/// latency varies from page to page.
const FLIGHT_HEADROOM: f64 = 1.25;

/// How many requests may be in flight: the budgets' request rate times the time a page
/// takes (measured from the run's answers so far), at least the floor (`streams`: all
/// there is before the first answer, or without a budget), at most the fetcher
/// threads. A fetcher holds a place for a frame from its first request to its last
/// page's end.
struct Flight {
    floor: usize,
    most: usize,
    rate: Option<f64>,
    taken: Mutex<usize>,
    freed: Condvar,
    /// The most places taken at once, for the debug log.
    peak: AtomicUsize,
}

impl Flight {
    fn new(floor: usize, most: usize, rate: Option<f64>) -> Self {
        Flight {
            floor: floor.clamp(1, most.max(1)),
            most: most.max(1),
            rate,
            taken: Mutex::new(0),
            freed: Condvar::new(),
            peak: AtomicUsize::new(0),
        }
    }

    /// The places there are now, Graph's latency so far being `latency`.
    fn places(&self, latency: Option<Duration>) -> usize {
        let wanted = match (self.rate, latency) {
            // Not paced: as many as `streams` asks for.
            (None, _) | (Some(_), None) => self.floor,
            (Some(rate), Some(latency)) => {
                (rate * latency.as_secs_f64() * FLIGHT_HEADROOM).ceil() as usize
            }
        };
        wanted.clamp(self.floor, self.most)
    }

    /// Waits for a place; `latency` is asked again while waiting (answers keep coming).
    fn enter(&self, latency: impl Fn() -> Option<Duration>) -> Place<'_> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        while *taken >= self.places(latency()) {
            taken = self
                .freed
                .wait_timeout(taken, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *taken += 1;
        self.peak.fetch_max(*taken, Ordering::Relaxed);
        Place(self)
    }
}

/// A place in flight, given back when dropped.
struct Place<'a>(&'a Flight);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut taken = self.0.taken.lock().unwrap_or_else(|p| p.into_inner());
        *taken = taken.saturating_sub(1);
        self.0.freed.notify_all();
    }
}

pub fn run(
    jobs: &[Job],
    lanes: &[Lane],
    options: &PipelineOptions,
) -> Result<Vec<FrameOutcome>, Error> {
    let threads = options.fetchers.min(jobs.len()).max(1);
    let fetchers = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fetch-{i}"))
        .build()
        .map_err(|e| Error::Setup(format!("cannot start fetcher threads: {e}")))?;
    let ledger = Ledger::new(jobs.len());
    let next_job = AtomicUsize::new(0);
    let halts: Vec<Halts> = lanes.iter().map(|_| Halts::default()).collect();
    // Each request in flight fills a chunk while the writers hold about as many
    // again: a chunk is what the page memory leaves two per fetcher.
    let chunk_bytes = usize::try_from(options.page_memory / (2 * threads as u64))
        .unwrap_or(MAX_CHUNK_BYTES)
        .clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES);
    // At most a chunk being filled per fetcher and as many again waiting for or in a
    // write (at least two), as many as the byte budget allows: they bound what a
    // stopped run leaves to be read again too.
    let max_chunks = threads + threads.max(options.writers).max(2);
    let memory = PageMemory::new(
        options.page_memory,
        u32::try_from(max_chunks).unwrap_or(u32::MAX),
    );
    let buffers = BufferPool::default();
    let flight = Flight::new(options.in_flight_floor, threads, options.request_rate);
    let deep = DeepTurns::new(jobs, &options.deep_allowance);
    // Unbounded in chunks: the page memory bounds what waits here, in bytes.
    let (chunks_out, chunks_in) = crossbeam_channel::unbounded::<Batch>();
    let started = Instant::now();
    let (fetching, finished) = crossbeam_channel::bounded::<()>(0);
    std::thread::scope(|scope| {
        let ledger = &ledger;
        let reporter = std::thread::Builder::new()
            .name("progress".into())
            .spawn_scoped(scope, move || match options.bar {
                true => show_bar(ledger, jobs, lanes, &finished),
                false => {
                    while let Err(RecvTimeoutError::Timeout) =
                        finished.recv_timeout(options.progress_every)
                    {
                        let figures = ledger.figures(jobs, lanes);
                        log::info!("{}", figures.line(started.elapsed()));
                    }
                }
            });
        if let Err(e) = reporter {
            log::warn!("cannot start the progress thread: {e}");
        }
        for i in 0..options.writers {
            let chunks_in = chunks_in.clone();
            let writer = Writer {
                jobs,
                memory: &memory,
                buffers: &buffers,
                now: options.now,
                lanes,
                keyed: options.keyed,
                name_sources: options.name_sources,
                ledger,
                halts: &halts,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("write-{i}"))
                .spawn_scoped(scope, move || writer.write_chunks(chunks_in));
            if let Err(e) = spawned {
                log::warn!("cannot start writer thread {i}: {e}");
            }
        }
        drop(chunks_in);
        fetchers.scope(|s| {
            for _ in 0..threads {
                let chunks_out = chunks_out.clone();
                let shared = Shared {
                    jobs,
                    lanes,
                    name_sources: options.name_sources,
                    ledger,
                    next_job: &next_job,
                    halts: &halts,
                    memory: &memory,
                    buffers: &buffers,
                    chunk_bytes,
                    record_cap: options.page_memory,
                    flight: &flight,
                    deep: &deep,
                };
                s.spawn(move |_| fetch_jobs(&chunks_out, shared));
            }
        });
        drop(chunks_out);
        drop(fetching);
    });
    for (index, lane) in lanes.iter().enumerate() {
        if let Err(e) = lane.sink.finish() {
            for (i, job) in jobs.iter().enumerate() {
                if job.lane == index {
                    ledger.fail(i, FrameFailure::Write(e.clone()));
                }
            }
        }
    }
    let latency = lanes
        .iter()
        .map(|l| l.client.spent())
        .sum::<BudgetSpent>()
        .latency();
    log::debug!(
        "page memory: at most {} bytes held at once, of {} allowed, in chunks of {} bytes; \
         requests in flight: at most {} of {} fetchers (Graph's latency {})",
        memory.peak(),
        options.page_memory,
        chunk_bytes,
        flight.peak.load(Ordering::Relaxed),
        threads,
        latency.map_or("unknown".into(), |l| format!("{:.2} s", l.as_secs_f64()))
    );
    Ok(ledger.outcomes(jobs, lanes))
}

/// What the fetchers share.
#[derive(Clone, Copy)]
struct Shared<'a> {
    jobs: &'a [Job],
    lanes: &'a [Lane<'a>],
    name_sources: bool,
    ledger: &'a Ledger,
    next_job: &'a AtomicUsize,
    halts: &'a [Halts],
    memory: &'a Arc<PageMemory>,
    /// Chunks' buffers, handed from chunk to chunk.
    buffers: &'a BufferPool,
    chunk_bytes: usize,
    /// The most one record may weigh.
    record_cap: u64,
    flight: &'a Flight,
    deep: &'a DeepTurns<'a>,
}

/// The requests of deeper reads: none before every frame of the first two reads is
/// fetched (deeper reads never delay those), then per paced bucket what the run's
/// allowance leaves once they are done.
struct DeepTurns<'a> {
    allowance: &'a BTreeMap<BudgetOf, u64>,
    /// Frames of the first two reads not fetched yet.
    shallow_left: Mutex<usize>,
    shallow_done: Condvar,
    /// Per paced bucket, the requests deeper reads may still send; counted once the
    /// first two reads are done.
    left: Mutex<Option<BTreeMap<BudgetOf, u64>>>,
}

impl<'a> DeepTurns<'a> {
    fn new(jobs: &[Job], allowance: &'a BTreeMap<BudgetOf, u64>) -> Self {
        DeepTurns {
            allowance,
            shallow_left: Mutex::new(jobs.iter().filter(|j| !j.pass.is_deep()).count()),
            shallow_done: Condvar::new(),
            left: Mutex::new(None),
        }
    }

    /// A frame of the first two reads is done (fetched, failed or skipped).
    fn shallow_finished(&self) {
        let mut left = self.shallow_left.lock().unwrap_or_else(|p| p.into_inner());
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.shallow_done.notify_all();
        }
    }

    fn take(&self, lanes: &[Lane], budget: &BudgetOf) -> bool {
        let mut shallow = self.shallow_left.lock().unwrap_or_else(|p| p.into_inner());
        while *shallow > 0 {
            shallow = self
                .shallow_done
                .wait(shallow)
                .unwrap_or_else(|p| p.into_inner());
        }
        drop(shallow);
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        let left = left.get_or_insert_with(|| {
            // What the first two reads left of each tenant's bucket's allowance.
            let spent = |(tenant, bucket): &BudgetOf| -> u64 {
                lanes
                    .iter()
                    .filter(|l| l.source().bucket == *bucket && l.tenant == tenant.as_deref())
                    .map(|l| l.client.spent().requests)
                    .sum()
            };
            self.allowance
                .iter()
                .map(|(budget, &allowance)| {
                    (budget.clone(), allowance.saturating_sub(spent(budget)))
                })
                .collect()
        });
        match left.get_mut(budget) {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

impl Shared<'_> {
    /// Why no more pages of `lane` are fetched, if that is so.
    fn halted(&self, lane: usize) -> Option<FrameFailure> {
        let halts = &self.halts[lane];
        if let Some(down) = halts.sink_down.get() {
            return Some(FrameFailure::Write(down.clone()));
        }
        halts
            .refused
            .get()
            .or(halts.token_refused.get())
            .cloned()
            .map(FrameFailure::Fetch)
    }

    /// A request of a deeper read of `lane`, if the run's budget leaves one (false:
    /// owed to a later run). Waits until every first and second read is fetched.
    fn deep_turn(&self, lane: usize) -> bool {
        let lane = &self.lanes[lane];
        let budget = (lane.tenant.map(str::to_string), lane.source().bucket);
        self.deep.take(self.lanes, &budget)
    }

    /// Remembers a refusal: a 403 halts its lane, a refused token every lane of its
    /// tenant.
    fn refuse(&self, lane: usize, error: &GraphError) {
        let tenant = self.lanes[lane].tenant;
        let (first, scope) = match error {
            GraphError::Auth(_) => {
                let mut first = false;
                for (halts, _) in self
                    .halts
                    .iter()
                    .zip(self.lanes)
                    .filter(|(_, l)| l.tenant == tenant)
                {
                    first |= halts.token_refused.set(error.clone()).is_ok();
                }
                let scope = match tenant {
                    Some(_) => "no further Graph requests for this tenant in this run",
                    None => "no further Graph requests in this run",
                };
                (first, scope)
            }
            _ => (
                self.halts[lane].refused.set(error.clone()).is_ok(),
                "no further requests for this source in this run",
            ),
        };
        if first {
            log::error!(
                "{}: {error}: {scope}",
                crate::sources::label(tenant, self.lanes[lane].source())
            );
        }
    }
}

/// Takes jobs in order until none are left, each with a place in flight; each frame
/// goes chunk by chunk to the writers.
fn fetch_jobs(chunks_out: &Sender<Batch>, shared: Shared) {
    let Shared {
        jobs,
        lanes,
        next_job,
        flight,
        ..
    } = shared;
    let latency = || {
        lanes
            .iter()
            .map(|l| l.client.spent())
            .sum::<BudgetSpent>()
            .latency()
    };
    loop {
        let place = flight.enter(latency);
        let i = next_job.fetch_add(1, Ordering::SeqCst);
        let Some(Job {
            lane, frame, pass, ..
        }) = jobs.get(i).copied()
        else {
            return;
        };
        let deep = pass.is_deep();
        fetch_job(chunks_out, &shared, i, lane, frame, deep);
        drop(place);
        if !deep {
            shared.deep.shallow_finished();
        }
    }
}

/// Fetches job `i` (`frame` of `lane`) into the writers' queue, chunk by chunk.
fn fetch_job(
    chunks_out: &Sender<Batch>,
    shared: &Shared,
    i: usize,
    lane: usize,
    frame: Frame,
    deep: bool,
) {
    let Shared { lanes, ledger, .. } = *shared;
    if let Some(halt) = shared.halted(lane) {
        ledger.fail(i, halt);
        return;
    }
    if deep && !shared.deep_turn(lane) {
        ledger.fail(i, FrameFailure::Deferred);
        return;
    }
    let client = lanes[lane].client;
    log::debug!(
        "{}frame {frame}: fetching",
        log_prefix(lanes[lane].tenant, client.source(), shared.name_sources)
    );
    let mut taker = FrameTaker {
        shared,
        chunks_out,
        job: i,
        lane,
        deep,
        seq: 0,
        page: 1,
        held: None,
    };
    let fetched = client.fetch_frame(&frame, deep, &mut taker);
    let chunks = taker.seq;
    drop(taker);
    match fetched {
        Ok(()) => ledger.update(i, |p| p.fetched = Some(chunks)),
        Err(e) => {
            if e.is_refusal() {
                shared.refuse(lane, &e);
            }
            // The run's time ran out before a deeper read: left for a later run,
            // like one the budget had no room for.
            let failure = match e {
                GraphError::Deadline { .. } if deep => FrameFailure::Deferred,
                e => FrameFailure::Fetch(e),
            };
            ledger.fail(i, failure);
        }
    }
}

/// Takes one frame's chunks from its pages as they are read: room in the page memory
/// for each before it is filled, then to the writers.
struct FrameTaker<'s, 'a> {
    shared: &'s Shared<'a>,
    chunks_out: &'s Sender<Batch>,
    job: usize,
    lane: usize,
    deep: bool,
    /// Chunks sent so far.
    seq: u64,
    /// The page being read, from 1.
    page: u64,
    /// The room of the chunk being filled.
    held: Option<Held>,
}

impl FrameTaker<'_, '_> {
    fn stop(&self, failure: FrameFailure) -> ControlFlow<()> {
        self.shared.ledger.fail(self.job, failure);
        ControlFlow::Break(())
    }
}

impl ChunkTaker for FrameTaker<'_, '_> {
    fn chunk_bytes(&self) -> usize {
        self.shared.chunk_bytes
    }

    fn record_cap(&self) -> u64 {
        self.shared.record_cap
    }

    fn second(&self, record: &str) -> Option<i64> {
        record_second(record, self.shared.lanes[self.lane].source().time_field)
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.held = Some(self.shared.memory.reserve(self.shared.chunk_bytes as u64));
        let mut buffer = self.shared.buffers.take();
        buffer.reserve(self.shared.chunk_bytes);
        buffer
    }

    fn discard(&mut self, buffer: Vec<u8>) {
        self.held = None;
        self.shared.buffers.give_back(buffer);
    }

    fn take(&mut self, chunk: Chunk) -> ControlFlow<()> {
        // Waiting for room took time: the lane may have been halted meanwhile.
        if let Some(halt) = self.shared.halted(self.lane) {
            self.held = None;
            self.shared.buffers.give_back(chunk.into_buffer());
            return self.stop(halt);
        }
        let end = chunk.end;
        self.seq += 1;
        let mut held = self
            .held
            .take()
            .unwrap_or_else(|| self.shared.memory.reserve(0));
        held.resize(chunk.weight() as u64);
        let sent = self.chunks_out.send(Batch {
            job: self.job,
            seq: self.seq,
            page: self.page,
            chunk,
            _held: held,
        });
        if sent.is_err() {
            return self.stop(FrameFailure::Write(SinkError {
                target: "pipeline".into(),
                message: "no writer thread is running".into(),
            }));
        }
        let Some(PageEnd { more }) = end else {
            return ControlFlow::Continue(());
        };
        self.page += 1;
        // The next page of a deeper read needs a turn of its own.
        if self.deep && more && !self.shared.deep_turn(self.lane) {
            return self.stop(FrameFailure::Deferred);
        }
        ControlFlow::Continue(())
    }
}

/// What a writer thread needs.
#[derive(Clone, Copy)]
struct Writer<'a> {
    jobs: &'a [Job],
    memory: &'a Arc<PageMemory>,
    buffers: &'a BufferPool,
    /// Late records' ages are measured from it.
    now: OffsetDateTime,
    lanes: &'a [Lane<'a>],
    keyed: bool,
    name_sources: bool,
    ledger: &'a Ledger,
    halts: &'a [Halts],
}

impl Writer<'_> {
    fn write_chunks(&self, chunks_in: Receiver<Batch>) {
        for batch in chunks_in {
            let lane = self.jobs[batch.job].lane;
            match self.halts[lane].sink_down.get() {
                Some(down) => self
                    .ledger
                    .fail(batch.job, FrameFailure::Write(down.clone())),
                None => {
                    // What writing copies of the chunk (a Redis command to a Cluster
                    // is built whole; to one server it goes in pieces).
                    let copy = self.lanes[lane]
                        .sink
                        .copy_bytes(batch.chunk.weight() as u64);
                    let _copy = self.memory.reserve_write(copy);
                    self.write_chunk(&batch)
                }
            }
            let Batch { chunk, _held, .. } = batch;
            self.buffers.give_back(chunk.into_buffer());
        }
    }

    fn write_chunk(&self, batch: &Batch) {
        let Batch {
            job,
            seq,
            page: number,
            chunk,
            ..
        } = batch;
        let Job {
            lane, frame, pass, ..
        } = self.jobs[*job];
        let Lane { sink, .. } = self.lanes[lane];
        let source = self.lanes[lane].source();
        let records: Vec<&str> = chunk.records().collect();
        let (keys, problems) = if self.keyed {
            let (keys, problems) = record_keys(
                &records,
                source,
                frame.end.unix_timestamp(),
                self.lanes[lane].versioned,
            );
            (Some(keys), problems)
        } else {
            (None, Vec::new())
        };
        for problem in &problems {
            log::error!(
                "{}frame {frame} page {number} record {}: {}; delivered as Graph sent it, \
                 deduplicated by its exact bytes",
                log_prefix(self.lanes[lane].tenant, source, self.name_sources),
                chunk.first + problem.offset,
                problem.reason
            );
        }
        // The seconds of the records in Graph's order (unreadable ones left out): what
        // a failed frame still owes is read from them. Without keys only the first and
        // last readable record are parsed.
        let seconds = match &keys {
            Some(keys) => {
                let bad: Vec<usize> = problems.iter().map(|p| p.offset).collect();
                ChunkSeconds::of(
                    keys.iter()
                        .enumerate()
                        .filter(|(i, _)| !bad.contains(i))
                        .map(|(_, k)| k.second),
                )
            }
            None => {
                let second = |r: &&str| record_second(r, source.time_field);
                let first = records.iter().find_map(second);
                let last = records.iter().rev().find_map(second);
                ChunkSeconds::of(first.into_iter().chain(last))
            }
        };
        let seconds = seconds.map(|seconds| ChunkSeconds {
            complete: chunk.complete,
            ..seconds
        });
        match sink.write(&records, keys.as_deref()) {
            Ok(written) => {
                // What a read after the first found is late: how late, when found.
                // A changed record delivered again is an update, not late.
                let mut late = LateAges::default();
                if pass != Pass::First {
                    let now = self.now.unix_timestamp();
                    let new = written
                        .fresh
                        .iter()
                        .filter(|o| !written.updated.contains(o));
                    for &offset in new {
                        let second = keys
                            .as_ref()
                            .and_then(|k| k.get(offset))
                            .map(|k| k.second)
                            .or_else(|| record_second(records.get(offset)?, source.time_field));
                        if let Some(second) = second {
                            late.add(now.saturating_sub(second).max(0) as u64);
                        }
                    }
                }
                self.ledger.update(*job, |p| {
                    p.late_ages.merge(&late);
                    p.updated += written.updated.len() as u64;
                    p.chunks += 1;
                    p.pages += u64::from(chunk.end.is_some());
                    p.records += records.len() as u64;
                    p.delivered += written.delivered as u64;
                    p.unheard += written.unheard as u64;
                    p.unkeyed += problems.len() as u64;
                    // A page some of whose records reached nobody is not written
                    // whole: its seconds stay unfinished for a later run.
                    if written.unheard == 0 {
                        p.written.insert(*seq, seconds);
                    }
                });
                if written.unheard > 0 {
                    let unheard = SinkError {
                        target: "redis channel".into(),
                        message: format!(
                            "{} records of page {number} were published to no subscriber \
                             (not marked delivered; a later run publishes them again)",
                            written.unheard
                        ),
                    };
                    self.ledger.fail(*job, FrameFailure::Write(unheard));
                }
            }
            Err(e) => {
                let _ = self.halts[lane].sink_down.set(e.clone());
                self.ledger.fail(*job, FrameFailure::Write(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_flight_follow_the_budgets_rate_times_graphs_latency() {
        let secs = Duration::from_secs_f64;
        // The app's 122 / 10 s at 1.5 s a page: 12.2 × 1.5 × 1.25 → 23 in flight.
        let fleet = Flight::new(2, 64, Some(12.2));
        assert_eq!(fleet.places(None), 2, "before the first answer: streams");
        assert_eq!(fleet.places(Some(secs(1.5))), 23);
        assert_eq!(fleet.places(Some(secs(3.0))), 46);
        assert_eq!(fleet.places(Some(secs(30.0))), 64, "at most the fetchers");
        // One tenant's 5 / 10 s: fewer than streams would do; streams it is.
        let one = Flight::new(2, 64, Some(0.5));
        assert_eq!(one.places(Some(secs(1.5))), 2);
        // Not paced: streams.
        assert_eq!(Flight::new(4, 64, None).places(Some(secs(3.0))), 4);
        // A floor above the fetchers is the fetchers.
        assert_eq!(Flight::new(8, 3, Some(1.0)).places(None), 3);
    }

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

    #[test]
    fn a_place_is_given_back_and_waiters_see_a_higher_limit() {
        let flight = Flight::new(1, 4, Some(10.0));
        let first = flight.enter(|| None);
        let latency = Mutex::new(None);
        std::thread::scope(|scope| {
            // Only one place before any answer: the second waits …
            let second = scope.spawn(|| {
                let _place = flight.enter(|| *latency.lock().unwrap());
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(!second.is_finished(), "a second place before any answer");
            // … until answers show Graph's latency: 10/s × 0.2 s × 1.25 → 3 places.
            *latency.lock().unwrap() = Some(Duration::from_millis(200));
            second.join().unwrap();
        });
        drop(first);
        assert_eq!(*flight.taken.lock().unwrap(), 0);
        assert_eq!(flight.peak.load(Ordering::Relaxed), 2);
    }
}
