//! The client of one source (of one tenant): builds a frame's query, sends each page
//! request with its tenant's token through its gates — its tenant's bucket, then the
//! app's across tenants —, and turns Graph's answers into pages or [`GraphError`]s.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use std::time::{Duration, Instant, SystemTime};

use super::paging::{Carry, ChunkTaker, Delivered, NextLinkGuard, PageRead, ReadError, read_page};
use crate::auth::TokenSource;
use crate::budget::{NoTurn, RequestGate, Turn};
use crate::error::GraphError;
use crate::ids;
use crate::lane::Lane;
use crate::retry::{RetryOptions, parse_retry_after};
use crate::sources::SourceSpec;
use crate::transport::{HttpResponse, HttpTransport, display_url};
use crate::window::Frame;

/// More sign-ins per second than any tenant has: a frame whose nextLinks go on past
/// what this many records a second would fill is a Graph paging without end.
const MAX_RECORDS_PER_SECOND: u64 = 10_000;

/// What each page asks for besides its frame.
#[derive(Debug, Clone)]
pub struct PageShape {
    /// Where, and how a frame is filtered.
    pub source: &'static SourceSpec,
    /// `$top`, at most the source's cap.
    pub page_size: u32,
    /// `$select`; None: every property.
    pub select: Option<Vec<String>>,
    /// Whose data (a tenant, when the run exports several).
    pub tenant: Option<String>,
}

impl PageShape {
    /// The pages a source's configuration asks for.
    pub fn of(source: &Lane) -> Self {
        PageShape {
            source: source.spec,
            page_size: source.page_size,
            select: source.select.clone(),
            tenant: source.tenant.clone(),
        }
    }
}

/// What `--check` learns from a frame's first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstPage {
    pub records: usize,
    /// A record's `riskLevel` is `hidden`: the tenant lacks the licence for its details.
    pub hidden: bool,
}

/// Where a run's share of Graph's request budget went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSpent {
    /// Requests sent (every attempt).
    pub requests: u64,
    /// Of those, answered 429.
    pub throttled: u64,
    /// Attempts that repeated an earlier one.
    pub retries: u64,
    /// Time requests waited for a turn or a 429's pause, summed over streams.
    pub waited: Duration,
    /// Of that, the time they waited for the app's budget across tenants.
    pub waited_app: Duration,
    /// Requests answered 200, and the time from their sending to their body's end:
    /// Graph's latency as this run meets it.
    pub answered: u64,
    pub answering: Duration,
}

impl BudgetSpent {
    /// The mean time a page took, once one was answered.
    pub fn latency(&self) -> Option<Duration> {
        let answered = u32::try_from(self.answered).ok().filter(|&n| n > 0)?;
        Some(self.answering / answered)
    }
}

impl std::ops::Add for BudgetSpent {
    type Output = BudgetSpent;

    fn add(self, other: BudgetSpent) -> BudgetSpent {
        BudgetSpent {
            requests: self.requests + other.requests,
            throttled: self.throttled + other.throttled,
            retries: self.retries + other.retries,
            waited: self.waited + other.waited,
            waited_app: self.waited_app + other.waited_app,
            answered: self.answered + other.answered,
            answering: self.answering + other.answering,
        }
    }
}

impl std::iter::Sum for BudgetSpent {
    fn sum<I: Iterator<Item = BudgetSpent>>(iter: I) -> BudgetSpent {
        iter.fold(BudgetSpent::default(), |a, b| a + b)
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    waited_micros: AtomicU64,
    waited_app_micros: AtomicU64,
    answered: AtomicU64,
    answering_micros: AtomicU64,
    /// Requests by HTTP status, `error` for those without an answer.
    by_code: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

pub struct GraphClient {
    counters: Counters,
    transport: Arc<dyn HttpTransport>,
    tokens: Arc<TokenSource>,
    graph_url: url::Url,
    shape: PageShape,
    /// Its tenant's gate, then the app's across tenants (when paced): a request takes a
    /// turn at each, in this order.
    gates: Vec<Arc<RequestGate>>,
    retry: RetryOptions,
}

/// What one attempt at a page came to.
enum Attempted {
    Read(PageRead),
    /// The taker stopped reading.
    Stopped,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: GraphErrorBody,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl GraphClient {
    pub fn new(
        transport: Arc<dyn HttpTransport>,
        tokens: Arc<TokenSource>,
        graph_url: url::Url,
        shape: PageShape,
        gates: Vec<Arc<RequestGate>>,
        retry: RetryOptions,
    ) -> Self {
        GraphClient {
            counters: Counters::default(),
            transport,
            tokens,
            graph_url,
            gates,
            shape,
            retry,
        }
    }

    pub fn source(&self) -> &'static SourceSpec {
        self.shape.source
    }

    /// `$top`: the most records a page holds.
    pub fn page_size(&self) -> u32 {
        self.shape.page_size.max(1)
    }

    /// The budget spent so far.
    pub fn spent(&self) -> BudgetSpent {
        let c = &self.counters;
        BudgetSpent {
            requests: c.requests.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            waited: Duration::from_micros(c.waited_micros.load(Ordering::Relaxed)),
            waited_app: Duration::from_micros(c.waited_app_micros.load(Ordering::Relaxed)),
            answered: c.answered.load(Ordering::Relaxed),
            answering: Duration::from_micros(c.answering_micros.load(Ordering::Relaxed)),
        }
    }

    fn count_code(&self, code: String) {
        let mut by_code = self
            .counters
            .by_code
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *by_code.entry(code).or_default() += 1;
    }

    /// Requests sent so far by HTTP status (`error`: no answer).
    pub fn requests_by_code(&self) -> std::collections::BTreeMap<String, u64> {
        self.counters
            .by_code
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The first page of a frame: its `$filter`, `$top` and `$select`; later pages
    /// come from `@odata.nextLink`.
    pub fn first_url(&self, frame: &Frame) -> String {
        let top = self.page_size();
        let source = self.shape.source;
        let mut url = format!(
            "{}{}?$filter={}&$top={top}",
            self.graph_url.as_str().trim_end_matches('/'),
            source.path,
            percent_encode(&source.filter(frame)),
        );
        if let Some(select) = &self.shape.select {
            url.push_str("&$select=");
            url.push_str(&percent_encode(&select.join(",")));
        }
        url
    }

    /// Fetches `frame` page by page, handing each page's records to `taker` in
    /// chunks, in Graph's order, as they arrive. Stops at the first page that fails,
    /// or when `taker` breaks. A `deep` frame (a deeper read) leaves every window a
    /// slot for others' first and second reads.
    pub fn fetch_frame(
        &self,
        frame: &Frame,
        deep: bool,
        taker: &mut dyn ChunkTaker,
    ) -> Result<(), GraphError> {
        let reserve = u32::from(deep);
        let mut url = self.first_url(frame);
        let max_pages =
            (frame.seconds() * MAX_RECORDS_PER_SECOND).div_ceil(u64::from(self.page_size())) + 10;
        let mut guard = NextLinkGuard::new(&self.graph_url, &url, max_pages);
        // The records at a page's end held back for the next page (their second may
        // go on there); dropped, unwritten, when the frame stops before it.
        let mut carry = Carry::default();
        loop {
            let page = match self.fetch_page_as(&url, reserve, &mut carry, taker)? {
                Attempted::Read(page) => page,
                Attempted::Stopped => return Ok(()),
            };
            match page.next_link {
                None => return Ok(()),
                Some(link) => {
                    guard
                        .check(&link)
                        .map_err(|reason| GraphError::UnsafeNextLink {
                            url: display_url(&link),
                            reason,
                        })?;
                    url = link;
                }
            }
        }
    }

    /// The records of `frame`'s first page, counted and dropped (`--check`).
    pub fn count_first_page(&self, frame: &Frame) -> Result<FirstPage, GraphError> {
        #[derive(Default)]
        struct Count {
            hidden: bool,
        }
        impl ChunkTaker for Count {
            fn chunk_bytes(&self) -> usize {
                64 * 1024
            }
            fn record_cap(&self) -> u64 {
                64 << 20
            }
            fn buffer(&mut self) -> Vec<u8> {
                Vec::new()
            }
            fn discard(&mut self, _: Vec<u8>) {}
            fn take(&mut self, chunk: super::paging::Chunk) -> ControlFlow<()> {
                self.hidden |= chunk.records().any(|record| {
                    serde_json::from_str::<serde_json::Value>(record)
                        .is_ok_and(|r| r["riskLevel"] == "hidden")
                });
                ControlFlow::Continue(())
            }
        }
        let mut count = Count::default();
        let records = match self.fetch_page_as(
            &self.first_url(frame),
            0,
            &mut Carry::default(),
            &mut count,
        )? {
            Attempted::Read(page) => page.records,
            Attempted::Stopped => 0,
        };
        Ok(FirstPage {
            records,
            hidden: count.hidden,
        })
    }

    /// One page, retried while the failure is transient, up to `max_retries` more
    /// attempts and never past the deadline. A 429 pauses every stream; an expired
    /// token is replaced once. A body that broke off is asked again and what was
    /// handed on before is skipped. Its turns leave `reserve` places of every window
    /// free.
    fn fetch_page_as(
        &self,
        url: &str,
        reserve: u32,
        carry: &mut Carry,
        taker: &mut dyn ChunkTaker,
    ) -> Result<Attempted, GraphError> {
        let deadline_reached = |last: Option<GraphError>| GraphError::Deadline {
            url: display_url(url),
            last: last.map(Box::new),
        };
        let interrupted = || GraphError::Interrupted {
            url: display_url(url),
        };
        let mut retries = 0;
        let mut token_renewed = false;
        let mut delivered = Delivered::default();
        loop {
            let turns = match self.wait_turns(reserve) {
                Ok(turns) => turns,
                Err(NoTurn::Deadline) => return Err(deadline_reached(None)),
                Err(NoTurn::Stopped) => return Err(interrupted()),
                Err(NoTurn::Paused { key, left, by }) => {
                    return Err(GraphError::Paused {
                        url: display_url(url),
                        key,
                        left,
                        by,
                    });
                }
            };
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let sent = Instant::now();
            let fetched = self.fetch_once(url, (&mut delivered, &mut *carry), taker, turns);
            self.count_code(match &fetched {
                Ok(_) => "200".to_string(),
                Err(GraphError::Status { status, .. }) => status.to_string(),
                Err(_) => "error".to_string(),
            });
            let error = match fetched {
                Ok(attempted) => {
                    self.counters.answered.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .answering_micros
                        .fetch_add(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
                    return Ok(attempted);
                }
                Err(error) => error,
            };
            if error.is_throttled() {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            }
            let renew_token = error.is_expired_token() && !token_renewed;
            if !(renew_token || error.is_transient()) || retries >= self.retry.max_retries {
                return Err(error);
            }
            let wait = if renew_token {
                token_renewed = true;
                Duration::ZERO
            } else {
                // The first retry backs off up to `base`, the next up to 2·base, …
                let wait = error
                    .retry_after()
                    .unwrap_or_else(|| self.retry.backoff.delay(retries));
                retries += 1;
                wait
            };
            let resume = Instant::now() + wait;
            if resume > self.retry.deadline {
                return Err(deadline_reached(Some(error)));
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "{error}; retry {retries}/{} in {:.1}s",
                self.retry.max_retries,
                wait.as_secs_f64()
            );
            if error.is_throttled() {
                self.pause_for_429(resume);
            } else if !self.retry.stop.sleep(wait) {
                return Err(interrupted());
            }
        }
    }

    /// Graph does not say which budget a 429 is for: its tenant's, the window a run
    /// spends fastest, is paused until `resume` — and the app's across tenants too
    /// when another tenant's 429 is still being waited out.
    fn pause_for_429(&self, resume: Instant) {
        let Some((tenant, app)) = self.gates.split_first() else {
            return;
        };
        tenant.pause_all(resume);
        let who = self.shape.tenant.as_deref().unwrap_or("-");
        for app in app {
            if app.throttled_together(who, resume) {
                app.pause_all(resume);
            }
        }
    }

    /// A turn at every gate, its tenant's first: a request waiting for the app's
    /// window holds a place in its tenant's (which only its tenant uses) rather than
    /// one in the app's that every tenant waits for.
    fn wait_turns(&self, reserve: u32) -> Result<Vec<Turn<'_>>, NoTurn> {
        let mut turns = Vec::with_capacity(self.gates.len());
        for (i, gate) in self.gates.iter().enumerate() {
            // Counted as it goes, so progress lines show a long wait while it lasts.
            let waited = |d: Duration| {
                let micros = d.as_micros() as u64;
                self.counters
                    .waited_micros
                    .fetch_add(micros, Ordering::Relaxed);
                if i > 0 {
                    self.counters
                        .waited_app_micros
                        .fetch_add(micros, Ordering::Relaxed);
                }
            };
            turns.push(gate.wait_turn(self.retry.deadline, reserve, &waited)?);
        }
        Ok(turns)
    }

    /// One GET of one page, its records handed to `taker` as they arrive; `turns`
    /// are given back once Graph has answered (its headers are in: from then on the
    /// request is counted wherever Graph counts it), not when the body ends.
    fn fetch_once(
        &self,
        url: &str,
        (delivered, carry): (&mut Delivered, &mut Carry),
        taker: &mut dyn ChunkTaker,
        turns: Vec<Turn<'_>>,
    ) -> Result<Attempted, GraphError> {
        let bearer = self.tokens.bearer()?;
        let authorization = bearer.header_value();
        let request_id = ids::guid();
        let headers = [
            ("Authorization", authorization.as_str()),
            ("Accept", "application/json"),
            ("client-request-id", request_id.as_str()),
            // Graph's evolvable enums: without it, members added after
            // `unknownFutureValue` (a sign-in's NPS extension or backup-auth issuer,
            // agent identity types, newer risk details) arrive as `unknownFutureValue`
            // — the value a detection needs, gone.
            ("Prefer", "include-unknown-enum-members"),
        ];
        let shown = display_url(url);
        // Never past the deadline: a run must not overlap the next cron run's.
        let timeout = self
            .retry
            .deadline
            .saturating_duration_since(Instant::now());
        let mut turns = Some(turns);
        let mut read = None;
        let response = self
            .transport
            .get_streaming(url, &headers, timeout, &mut |body| {
                drop(turns.take());
                read = Some(read_page(body, delivered, carry, taker));
            })
            .map_err(|e| GraphError::Transport {
                url: shown.clone(),
                message: format!("{e} (client-request-id {request_id})"),
                transient: true,
            })?;
        drop(turns);
        if response.status == 401 {
            self.tokens.invalidate(&bearer);
        }
        if response.status != 200 {
            return Err(status_error(shown, &response, self.shape.source));
        }
        let page = match read {
            Some(Ok(page)) => page,
            Some(Err(ReadError::Stopped)) => return Ok(Attempted::Stopped),
            Some(Err(ReadError::Io(message))) => {
                return Err(GraphError::Transport {
                    url: shown,
                    message: format!(
                        "the body broke off: {message} (client-request-id {request_id})"
                    ),
                    transient: true,
                });
            }
            Some(Err(ReadError::TooLarge(limit))) => {
                return Err(GraphError::TooLarge { url: shown, limit });
            }
            Some(Err(e @ ReadError::Changed { .. })) => {
                return Err(GraphError::Changed {
                    url: shown,
                    message: e.to_string(),
                });
            }
            Some(Err(ReadError::Malformed(message))) => {
                return Err(GraphError::Malformed {
                    url: shown,
                    message,
                });
            }
            None => {
                return Err(GraphError::Malformed {
                    url: shown,
                    message: "no body".into(),
                });
            }
        };
        log::debug!(
            "GET {shown}: {} records, {} bytes",
            page.records,
            page.bytes
        );
        Ok(Attempted::Read(page))
    }
}

fn status_error(url: String, response: &HttpResponse, source: &'static SourceSpec) -> GraphError {
    let (code, message) = match serde_json::from_slice::<ErrorEnvelope>(&response.body) {
        Ok(envelope) => (envelope.error.code, envelope.error.message),
        Err(_) => (
            String::new(),
            String::from_utf8_lossy(&response.body[..response.body.len().min(200)]).into_owned(),
        ),
    };
    GraphError::Status {
        url,
        status: response.status,
        code,
        message: message.chars().take(300).collect(),
        request_id: response.request_id.clone(),
        retry_after: response
            .retry_after
            .as_deref()
            .and_then(|v| parse_retry_after(v, SystemTime::now())),
        source,
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3 / 2);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(
            percent_encode("createdDateTime ge 2026-01-01T00:00:00.0000000Z"),
            "createdDateTime%20ge%202026-01-01T00%3A00%3A00.0000000Z"
        );
    }
}
