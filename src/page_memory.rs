//! The memory pages may hold between their request and their write: a byte budget
//! (`page_memory_mb`), not a count of pages, since a page of 1,000 sign-ins is 2 MB
//! with few Conditional Access policies and 20 MB with many.
//!
//! A fetcher reserves what it expects its next page to weigh ([`PageEstimates`]: a
//! full page of the largest records seen) before it sends the request, and waits while
//! that would pass the budget; once the page is in, the reservation becomes the
//! page's real size, and it is freed when the page is written. A writer reserves
//! what writing copies of the page on top (`Sink::copy_bytes`: a Redis command goes
//! to one server in 1 MiB pieces, to a Cluster whole). What does
//! not fit waits — except a page or a write when nothing else holds any: a page larger
//! than the whole budget is still fetched and written, alone, and a write never waits
//! for pages queued behind it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Allocations at least this large are their own mappings, returned to the system when
/// freed.
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Makes the budget the process's memory too: glibc raises its mmap threshold each
/// time a mapped block is freed, up to 32 MiB, after which page-sized buffers come from
/// per-thread heaps that keep what they once held — measured, a cron run of 11 KB
/// sign-ins held 54 MB instead of 43 MB at the default budget. A fixed threshold
/// keeps them mapped. Other allocators need nothing.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread
    // starts, and a refusal (return 0) leaves glibc's default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Bytes per record assumed before a run has seen any page: Microsoft's figure for
/// sign-ins listing many Conditional Access policies. Guessing low would let every
/// fetcher's first page in at once, each past its reservation.
const PRIOR_RECORD_BYTES: u64 = 20 * 1024;

/// A page's bytes besides its records: `@odata.context`, `@odata.nextLink`.
const ENVELOPE_BYTES: u64 = 1024;

/// What a lane's next page is expected to weigh: `$top` records of the most bytes per
/// record its pages have had (or the run's, or the prior), so a reservation is rarely
/// short of the page that fills it.
pub struct PageEstimates {
    lanes: Vec<AtomicU64>,
    run: AtomicU64,
}

impl PageEstimates {
    pub fn new(lanes: usize) -> Self {
        PageEstimates {
            lanes: (0..lanes).map(|_| AtomicU64::new(0)).collect(),
            run: AtomicU64::new(0),
        }
    }

    /// The bytes to reserve for lane `lane`'s next page of up to `page_size` records.
    pub fn expect(&self, lane: usize, page_size: u32) -> u64 {
        let per_record = [
            self.lanes
                .get(lane)
                .map_or(0, |l| l.load(Ordering::Relaxed)),
            self.run.load(Ordering::Relaxed),
            PRIOR_RECORD_BYTES,
        ]
        .into_iter()
        .find(|&bytes| bytes > 0)
        .unwrap_or(PRIOR_RECORD_BYTES);
        per_record
            .saturating_mul(u64::from(page_size.max(1)))
            .saturating_add(ENVELOPE_BYTES)
    }

    /// A page of lane `lane` came in at `weight` bytes with `records` records.
    pub fn learn(&self, lane: usize, weight: u64, records: usize) {
        let Some(records) = u64::try_from(records).ok().filter(|&n| n > 0) else {
            return; // an empty page says nothing about record size
        };
        let per_record = weight
            .saturating_sub(ENVELOPE_BYTES)
            .div_ceil(records)
            .max(1);
        if let Some(l) = self.lanes.get(lane) {
            l.fetch_max(per_record, Ordering::Relaxed);
        }
        self.run.fetch_max(per_record, Ordering::Relaxed);
    }
}

pub struct PageMemory {
    limit: u64,
    /// Pages at most, whatever their size: a frame's pages are written by several
    /// writers, out of order, and a run that stops re-reads from its first unwritten
    /// page — so the pages in flight also bound what a stopped run reads twice.
    max_pages: u32,
    state: Mutex<State>,
    freed: Condvar,
    /// The most ever held at once, for the debug log and the tests.
    peak: AtomicU64,
}

#[derive(Default)]
struct State {
    held: u64,
    /// Pages held (reserved, fetched, queued or being written).
    pages: u32,
    /// Writes in progress.
    writing: u32,
    /// Page reservations are served in the order they came, so a later job's page (a
    /// backlog's) never overtakes an earlier one (another source's minute): the next
    /// ticket to hand out, and the one whose turn it is.
    next_ticket: u64,
    serving: u64,
}

/// Bytes held for one page or one write; freed when dropped.
pub struct Held {
    memory: Arc<PageMemory>,
    bytes: u64,
    write: bool,
}

impl PageMemory {
    pub fn new(limit: u64, max_pages: u32) -> Arc<Self> {
        Arc::new(PageMemory {
            limit: limit.max(1),
            max_pages: max_pages.max(1),
            state: Mutex::default(),
            freed: Condvar::new(),
            peak: AtomicU64::new(0),
        })
    }

    /// The most held at once so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `bytes` fit beside what is held.
    fn fits(&self, state: &State, bytes: u64) -> bool {
        state.held.saturating_add(bytes) <= self.limit
    }

    /// Waits its turn (pages are served first come, first served) and until `bytes`
    /// fit (or nothing is held), then holds them. Writers free pages whatever
    /// happens, so the wait ends.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Held {
        let ticket = {
            let mut state = self.lock();
            state.next_ticket += 1;
            state.next_ticket - 1
        };
        self.hold(bytes, false, |state| self.page_may_go(state, ticket, bytes))
    }

    /// Whether the page holding `ticket` may take `bytes` now: its turn, a page fewer
    /// than the most, and room (or nothing held).
    fn page_may_go(&self, state: &State, ticket: u64, bytes: u64) -> bool {
        state.serving == ticket
            && state.pages < self.max_pages
            && (self.fits(state, bytes) || state.held == 0)
    }

    /// Waits until `bytes` for a write fit (or no other write is in progress), then
    /// holds them. Writes do not queue behind pages: pages are freed by writes.
    pub fn reserve_write(self: &Arc<Self>, bytes: u64) -> Held {
        self.hold(bytes, true, |state| {
            self.fits(state, bytes) || state.writing == 0
        })
    }

    fn hold(self: &Arc<Self>, bytes: u64, write: bool, may: impl Fn(&State) -> bool) -> Held {
        let mut state = self.lock();
        while !may(&state) {
            state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if !write {
            // The next page's turn: it may fit too.
            state.serving += 1;
            self.freed.notify_all();
        }
        state.held += bytes;
        state.writing += u32::from(write);
        state.pages += u32::from(!write);
        self.peak.fetch_max(state.held, Ordering::Relaxed);
        Held {
            memory: Arc::clone(self),
            bytes,
            write,
        }
    }
}

impl Held {
    /// What the page really weighs, once it is in (more or less than reserved).
    pub fn resize(&mut self, bytes: u64) {
        let mut state = self.memory.lock();
        state.held = state.held.saturating_sub(self.bytes).saturating_add(bytes);
        self.memory.peak.fetch_max(state.held, Ordering::Relaxed);
        if bytes < self.bytes {
            self.memory.freed.notify_all();
        }
        self.bytes = bytes;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut state = self.memory.lock();
        state.held = state.held.saturating_sub(self.bytes);
        state.writing -= u32::from(self.write);
        state.pages -= u32::from(!self.write);
        self.memory.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_expected_full_of_the_largest_records_seen() {
        let estimates = PageEstimates::new(2);
        // Nothing seen yet: Microsoft's large records.
        assert_eq!(
            estimates.expect(0, 100),
            100 * PRIOR_RECORD_BYTES + ENVELOPE_BYTES
        );
        // Lane 0 saw 10 records of 2,000 bytes: a full page of them next; lane 1,
        // without pages of its own, borrows the run's.
        estimates.learn(0, 10 * 2_000 + ENVELOPE_BYTES, 10);
        assert_eq!(estimates.expect(0, 100), 100 * 2_000 + ENVELOPE_BYTES);
        assert_eq!(estimates.expect(1, 50), 50 * 2_000 + ENVELOPE_BYTES);
        // Lane 1's own smaller records; a smaller page later does not lower lane 0's.
        estimates.learn(1, 10 * 500 + ENVELOPE_BYTES, 10);
        estimates.learn(0, 10 * 100 + ENVELOPE_BYTES, 10);
        estimates.learn(0, 300, 0);
        assert_eq!(estimates.expect(1, 10), 10 * 500 + ENVELOPE_BYTES);
        assert_eq!(estimates.expect(0, 1), 2_000 + ENVELOPE_BYTES);
        assert_eq!(
            estimates.expect(7, u32::MAX),
            u64::from(u32::MAX) * 2_000 + ENVELOPE_BYTES
        );
    }

    #[test]
    fn what_does_not_fit_waits_and_what_is_alone_goes() {
        let memory = PageMemory::new(10, 8);
        let first = memory.reserve(6);
        assert!(
            !memory.fits(&memory.lock(), 6),
            "6 + 6 > 10: a second page waits"
        );
        let waiting = {
            let memory = Arc::clone(&memory);
            std::thread::spawn(move || memory.reserve(6).bytes)
        };
        drop(first);
        assert_eq!(waiting.join().unwrap(), 6);
        // Nothing held: a page of 25 is taken, alone; its write too.
        let big = memory.reserve(25);
        let write = memory.reserve_write(25);
        assert_eq!(memory.peak(), 50);
        drop((big, write));
        let mut small = memory.reserve(2);
        small.resize(9);
        assert_eq!(memory.lock().held, 9);
        drop(small);
        let state = memory.lock();
        assert_eq!((state.held, state.pages, state.writing), (0, 0, 0));
    }

    #[test]
    fn pages_are_counted_too() {
        // Room for many bytes, but two pages at most: a third waits for a page to go.
        let memory = PageMemory::new(1_000, 2);
        let (first, _second) = (memory.reserve(1), memory.reserve(1));
        let write = memory.reserve_write(1); // writes are not pages
        {
            let state = memory.lock();
            assert!(
                !memory.page_may_go(&state, state.serving, 1),
                "a third page may go"
            );
        }
        let waiting = {
            let memory = Arc::clone(&memory);
            std::thread::spawn(move || memory.reserve(1).bytes)
        };
        while memory.lock().next_ticket < 3 {
            std::thread::yield_now();
        }
        assert_eq!(memory.lock().pages, 2, "a third page was let in");
        drop((first, write));
        assert_eq!(waiting.join().unwrap(), 1);
    }

    #[test]
    fn pages_are_served_in_the_order_they_asked() {
        let memory = PageMemory::new(10, 8);
        let first = memory.reserve(8);
        let order = Arc::new(Mutex::new(Vec::new()));
        // A big page asks first, a small one (that would fit beside `first`) after.
        let ask = |bytes: u64, name: &'static str| {
            let (memory, order) = (Arc::clone(&memory), Arc::clone(&order));
            std::thread::spawn(move || {
                let held = memory.reserve(bytes);
                order.lock().unwrap().push(name);
                drop(held);
            })
        };
        let tickets = |n| {
            while memory.lock().next_ticket < n {
                std::thread::yield_now();
            }
        };
        let big = ask(9, "big");
        tickets(2);
        let small = ask(2, "small");
        tickets(3);
        assert!(
            order.lock().unwrap().is_empty(),
            "the small page overtook the big one"
        );
        drop(first);
        big.join().unwrap();
        small.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["big", "small"]);
    }
}
