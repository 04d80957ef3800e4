//! Staying inside Graph's request budget: the gate every request of a bucket passes.
//!
//! All streams of a tenant's bucket share one [`RequestGate`]: it spaces requests to
//! `rate_limit` (a request holds its place in the window until `per` after its answer),
//! and a 429 pauses every stream until its `Retry-After` has passed (Graph counts the
//! budget per app and tenant, not per connection); the app's budget across tenants is
//! a gate of the same kind every tenant's requests pass too. Other processes of the
//! same app and tenant (a cron run beside a backfill, runs on two hosts) spend the same
//! budget: with a [`SharedBudget`] the gate also claims each request's place there, and
//! honours the pauses other processes' 429s set; if it fails, the gate paces this
//! process alone.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::ids;
use crate::retry::MAX_RETRY_AFTER;
use crate::shutdown::Stop;

/// `n` requests per `per`, e.g. Graph's 5 per 10 s for sign-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

/// One request's claim on the budget: from when it is sent until `per` after its
/// answer arrived. The server counts a request when it arrives, which is somewhere in
/// between, so a budget kept this way is never overdrawn however the network jitters.
struct Claim {
    id: u64,
    /// None while the request is in flight.
    answered: Option<Instant>,
}

#[derive(Default)]
struct GateState {
    claims: Vec<Claim>,
    next_id: u64,
    paused_until: Option<Instant>,
}

/// The budget as other processes see it too (the Redis backend keeps it in Redis).
pub trait SharedBudget: Send + Sync {
    /// Claims a place for request `id` that leaves `reserve` places of the window free,
    /// or says why not yet.
    fn claim(&self, id: &str, reserve: u32) -> Result<SharedClaim, String>;
    /// Request `id` was answered: its place counts for the window's length from now.
    fn answered(&self, id: &str) -> Result<(), String>;
    /// Holds every process for `wait` (a 429's Retry-After).
    fn pause(&self, wait: Duration) -> Result<(), String>;
}

/// The shared budget's answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedClaim {
    Granted,
    /// The window is full: ask again after this.
    Full(Duration),
    /// A 429 paused every sharer: for `wait` more, by the pause `key`, set `by`.
    Paused {
        wait: Duration,
        key: String,
        by: String,
    },
}

pub struct RequestGate {
    limit: Option<RateLimit>,
    stop: Stop,
    state: Mutex<GateState>,
    changed: Condvar,
    shared: Option<Box<dyn SharedBudget>>,
    /// This process's prefix for the ids of its shared claims.
    process: String,
    /// The shared budget failed once: this process paces itself alone from then on.
    shared_failed: std::sync::atomic::AtomicBool,
    /// A shared pause was named at WARN (once a run).
    told_paused: std::sync::atomic::AtomicBool,
    /// The last 429 a sharer of this gate was answered: whose (a tenant), and until
    /// when its Retry-After holds it.
    last_429: Mutex<Option<(String, Instant)>>,
    /// Two tenants' 429s at once were said at WARN (once a run).
    told_together: std::sync::atomic::AtomicBool,
}

/// The shared budget's failure was said (once a process: every gate meets it).
static TOLD_SHARED_FAILED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Why no turn was given.
#[derive(Debug, PartialEq, Eq)]
pub enum NoTurn {
    /// The run's deadline would pass before the turn came.
    Deadline,
    /// The run was asked to stop.
    Stopped,
    /// A pause in the shared budget lasts past the run's deadline.
    Paused {
        key: String,
        left: Duration,
        by: String,
    },
}

/// A granted turn; dropping it (once the answer is in) starts its claim's countdown.
#[must_use]
pub struct Turn<'a> {
    gate: &'a RequestGate,
    id: u64,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.gate.shared_budget() {
            let answered = shared.answered(&self.gate.claim_id(self.id));
            self.gate.check_shared(answered);
        }
        let mut state = self.gate.lock();
        let now = Instant::now();
        if let Some(claim) = state.claims.iter_mut().find(|c| c.id == self.id) {
            claim.answered = Some(now);
        }
        self.gate.changed.notify_all();
    }
}

impl RequestGate {
    pub fn new(limit: Option<RateLimit>, stop: Stop) -> Self {
        RequestGate {
            limit,
            stop,
            state: Mutex::default(),
            changed: Condvar::new(),
            shared: None,
            process: ids::guid(),
            shared_failed: Default::default(),
            told_paused: Default::default(),
            last_429: Mutex::default(),
            told_together: Default::default(),
        }
    }

    /// A 429 answered to `who` (a tenant) holds it until `until`. Whether another
    /// sharer's 429 is still being waited out: Graph does not say which budget a 429
    /// is for, and two tenants throttled at once point at the one they share. The
    /// first time a run finds that, it says so at WARN.
    pub fn throttled_together(&self, who: &str, until: Instant) -> bool {
        let mut last = self.last_429.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let together = last
            .as_ref()
            .is_some_and(|(other, held)| other != who && *held > now);
        if last.as_ref().is_none_or(|(_, held)| *held <= until) {
            *last = Some((who.to_string(), until));
        }
        if together
            && !self
                .told_together
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            log::warn!(
                "429s for two tenants at once: the application's budget across tenants is \
                 overdrawn (by processes that do not share it, or an app_rate_limit above \
                 Graph's); every tenant waits out each such 429"
            );
        }
        together
    }

    /// Also claims every request's place in `shared` (when paced at all).
    pub fn with_shared(mut self, shared: Box<dyn SharedBudget>) -> Self {
        self.shared = self.limit.map(|_| shared);
        self
    }

    fn shared_budget(&self) -> Option<&dyn SharedBudget> {
        self.shared.as_deref().filter(|_| {
            !self
                .shared_failed
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    fn claim_id(&self, id: u64) -> String {
        format!("{}:{id}", self.process)
    }

    /// Falls back to pacing this process alone after the shared budget's first failure.
    fn check_shared<T>(&self, outcome: Result<T, String>) -> Option<T> {
        match outcome {
            Ok(value) => Some(value),
            Err(e) => {
                let first = !self
                    .shared_failed
                    .swap(true, std::sync::atomic::Ordering::Relaxed);
                // Said once a run, however many gates (tenants, the app's) share Redis.
                if first && !TOLD_SHARED_FAILED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    log::warn!(
                        "the request budget shared with other processes is unavailable ({e}): \
                         this run paces itself alone, and runs beside it may draw 429s"
                    );
                }
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until a request may be sent without exceeding the rate limit or cutting
    /// into a pause, leaving `reserve` places of the window to others (a deeper read
    /// takes no one's last place). Hold the turn until the answer has arrived. `waited` hears every
    /// stretch of waiting as it ends (at most a second each), so a long wait shows in
    /// progress lines while it lasts.
    pub fn wait_turn(
        &self,
        deadline: Instant,
        reserve: u32,
        waited: &dyn Fn(Duration),
    ) -> Result<Turn<'_>, NoTurn> {
        let mut state = self.lock();
        loop {
            if self.stop.requested().is_some() {
                return Err(NoTurn::Stopped);
            }
            let now = Instant::now();
            // Checked before a turn is given, not only before waiting for one: an
            // unpaced gate never waits, and no request may start after the deadline.
            if now >= deadline {
                return Err(NoTurn::Deadline);
            }
            let ready_at = self.ready_at(&mut state, now, reserve);
            if ready_at.is_some_and(|t| t <= now) {
                let id = state.next_id;
                if let Some(shared) = self.shared_budget() {
                    // Other processes may hold the budget: wait as for a pause.
                    match self.check_shared(shared.claim(&self.claim_id(id), reserve)) {
                        Some(SharedClaim::Full(wait)) => {
                            state.paused_until = Some(now + wait.min(MAX_RETRY_AFTER));
                            continue;
                        }
                        Some(SharedClaim::Paused { wait, key, by }) => {
                            let wait = wait.min(MAX_RETRY_AFTER);
                            if now + wait > deadline {
                                return Err(NoTurn::Paused {
                                    key,
                                    left: wait,
                                    by,
                                });
                            }
                            if !self
                                .told_paused
                                .swap(true, std::sync::atomic::Ordering::Relaxed)
                            {
                                log::warn!(
                                    "the request budget shared with other processes is paused \
                                     ({key}, {:.1} s more, set by {by}): waiting",
                                    wait.as_secs_f64()
                                );
                            }
                            state.paused_until = Some(now + wait);
                            continue;
                        }
                        Some(SharedClaim::Granted) | None => {}
                    }
                }
                state.next_id += 1;
                if self.limit.is_some() {
                    state.claims.push(Claim { id, answered: None });
                }
                return Ok(Turn { gate: self, id });
            }
            // Unknown (every claim in flight): wait for an answer, up to the deadline.
            let wake_at = ready_at.unwrap_or(deadline);
            if wake_at > deadline || now >= deadline {
                return Err(NoTurn::Deadline);
            }
            let slice = (wake_at - now).min(Duration::from_secs(1));
            state = self
                .changed
                .wait_timeout(state, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            waited(now.elapsed());
        }
    }

    /// When the next request may go; None while that depends on answers still out.
    fn ready_at(&self, state: &mut GateState, now: Instant, reserve: u32) -> Option<Instant> {
        let ready = state.paused_until.unwrap_or(now).max(now);
        let Some(limit) = self.limit else {
            return Some(ready);
        };
        state
            .claims
            .retain(|c| c.answered.is_none_or(|t| now.duration_since(t) < limit.per));
        let room = limit.requests.saturating_sub(reserve).max(1) as usize;
        if state.claims.len() < room {
            return Some(ready);
        }
        let freed_at = state
            .claims
            .iter()
            .filter_map(|c| c.answered)
            .min()
            .map(|t| t + limit.per)?;
        Some(ready.max(freed_at))
    }

    /// Holds every stream, and every process sharing the budget, until `until` (a
    /// 429's Retry-After).
    pub fn pause_all(&self, until: Instant) {
        if let Some(shared) = self.shared_budget() {
            let paused = shared.pause(until.saturating_duration_since(Instant::now()));
            self.check_shared(paused);
        }
        let mut state = self.lock();
        if state.paused_until.is_none_or(|t| t < until) {
            state.paused_until = Some(until);
        }
        self.changed.notify_all();
    }

    /// Wakes every waiting stream, so that a stop request is seen at once.
    pub fn wake_all(&self) {
        let _state = self.lock();
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_admits_the_limit_then_holds_until_the_window_moves() {
        let limit = RateLimit {
            requests: 3,
            per: Duration::from_millis(300),
        };
        let gate = RequestGate::new(Some(limit), Stop::default());
        let start = Instant::now();
        let far = start + Duration::from_secs(10);
        for _ in 0..4 {
            drop(gate.wait_turn(far, 0, &|_| {}).unwrap());
        }
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn a_request_still_in_flight_holds_its_claim() {
        let limit = RateLimit {
            requests: 1,
            per: Duration::from_millis(50),
        };
        let gate = RequestGate::new(Some(limit), Stop::default());
        let now = Instant::now();
        let in_flight = gate
            .wait_turn(now + Duration::from_secs(5), 0, &|_| {})
            .unwrap();
        // Long after `per`, but the first answer is not in: no second turn.
        assert!(matches!(
            gate.wait_turn(now + Duration::from_millis(200), 0, &|_| {}),
            Err(NoTurn::Deadline)
        ));
        drop(in_flight);
        let answered = Instant::now();
        drop(
            gate.wait_turn(now + Duration::from_secs(5), 0, &|_| {})
                .unwrap(),
        );
        assert!(answered.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn only_two_tenants_throttled_at_once_point_at_the_budget_they_share() {
        let gate = RequestGate::new(None, Stop::default());
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        assert!(!gate.throttled_together("a", later));
        // The same tenant again: its own budget.
        assert!(!gate.throttled_together("a", later));
        assert!(gate.throttled_together("b", later));
        // Once the pause has passed, a 429 is one tenant's again.
        let gate = RequestGate::new(None, Stop::default());
        assert!(!gate.throttled_together("a", now));
        assert!(!gate.throttled_together("b", later));
    }

    #[test]
    fn no_turn_after_the_deadline_even_unpaced() {
        let gate = RequestGate::new(None, Stop::default());
        assert_eq!(
            gate.wait_turn(Instant::now(), 0, &|_| {}).map(drop),
            Err(NoTurn::Deadline)
        );
    }

    #[test]
    fn a_pause_holds_everyone_and_respects_the_deadline() {
        let gate = RequestGate::new(None, Stop::default());
        let now = Instant::now();
        gate.pause_all(now + Duration::from_millis(200));
        assert!(matches!(
            gate.wait_turn(now + Duration::from_millis(50), 0, &|_| {}),
            Err(NoTurn::Deadline)
        ));
        drop(
            gate.wait_turn(now + Duration::from_secs(5), 0, &|_| {})
                .unwrap(),
        );
        assert!(now.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn a_stop_releases_a_paused_stream_without_a_turn() {
        let stop = Stop::default();
        let gate = std::sync::Arc::new(RequestGate::new(None, stop.clone()));
        gate.pause_all(Instant::now() + Duration::from_secs(600));
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                gate.wait_turn(Instant::now() + Duration::from_secs(900), 0, &|_| {})
                    .map(drop)
            })
        };
        stop.request(crate::exit::SIGTERM);
        gate.wake_all();
        assert_eq!(waiter.join().unwrap(), Err(NoTurn::Stopped));
    }
}
