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

mod flight;
mod jobs;
mod ledger;
mod progress;
mod turns;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use time::OffsetDateTime;

use crate::budget::BudgetOf;
use crate::buffers::BufferPool;
use crate::dedup::{record_keys, record_second};
use crate::error::{Error, GraphError, SinkError};
use crate::graph::BudgetSpent;
use crate::graph::{Chunk, ChunkTaker, PageEnd};
use crate::outcome::{FrameFailure, FrameOutcome, LateAges};
use crate::page_memory::{Held, PageMemory};
use crate::sources::log_prefix;
use crate::window::{Frame, Pass};

use flight::Flight;
pub use jobs::{Job, OpenLane};
use ledger::{ChunkSeconds, Ledger};
use progress::show_bar;
use turns::DeepTurns;

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

pub fn run(
    jobs: &[Job],
    lanes: &[OpenLane],
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
                true => show_bar(|| ledger.figures(jobs, lanes), &finished),
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
    lanes: &'a [OpenLane<'a>],
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
    lanes: &'a [OpenLane<'a>],
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
        let OpenLane { sink, .. } = self.lanes[lane];
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
