//! The memory records may hold between their arrival and their write: a byte budget
//! (`page_memory_mb`), not a count of pages, since a page of 1,000 sign-ins is 2 MB
//! with few Conditional Access policies and 20 MB with many.
//!
//! Pages are read in chunks as they arrive. A fetcher reserves a chunk's bytes when a
//! page's records start to come (not while the request waits for Graph's answer), and
//! waits while that would pass the budget — the rest of the body waits in the socket;
//! once the chunk is filled, the reservation becomes its real size, and it is freed
//! when the chunk is written. A writer reserves what writing copies of the chunk on
//! top (`Sink::copy_bytes`: a Redis command to a Cluster is built whole). What does
//! not fit waits — except a chunk or a write when nothing else holds any: a record
//! larger than a chunk still goes, alone, and a write never waits for chunks queued
//! behind it.

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

pub struct PageMemory {
    limit: u64,
    /// Chunks at most, whatever their size: a frame's chunks are written by several
    /// writers, out of order, and a run that stops re-reads from its first unwritten
    /// chunk — so the chunks in flight also bound what a stopped run reads twice.
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
