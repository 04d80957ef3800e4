//! `msgx-sim`: a Microsoft Graph simulator for tests, the demo and benchmarks.
//!
//! It serves the client-credentials token endpoint and every Entra audit stream msgx
//! exports ([`resources`]: sign-ins v1.0 and beta by event type, directory audits,
//! provisioning, risk detections, alerts v2) with deterministic synthetic records,
//! each with exactly its documented filter operators and page cap, plus endpoints of
//! its own: `GET /_sim/records?source=…&$filter=…` (every record in a range, oldest
//! first, as NDJSON: the oracle tests compare against), `GET /_sim/stats` (request
//! counts), `/_sim/reads` and `/_sim/queries` (what was asked). Faults (429s per
//! bucket, 503s, dropped connections, garbled pages, 403s, latency, nextLinks to a
//! foreign host) can be switched on per flag. Loopback only.

mod audits;
mod faults;
mod generator;
mod hostile;
mod http;
mod odata;
mod pages;
mod protection;
mod resources;
mod responses;
mod token;

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argh::FromArgs;

use faults::{Fault, Faults, Throttle};
use generator::{Generator, TICKS_PER_SECOND, Ticks};
use http::{Reply, Request, Response};
use odata::{Bounds, Cursor, PageQuery};
use pages::{Body, PageCache};
use resources::{Family, RESOURCES, Resource, Stream};
use responses::{graph_error, json, request_guid};

/// Microsoft Graph simulator for msgx-once (binds 127.0.0.1 only).
#[derive(FromArgs)]
struct Args {
    /// port to listen on; 0 picks a free one (default 0)
    #[argh(option, default = "0")]
    port: u16,
    /// write the bound port to this file once listening
    #[argh(option)]
    port_file: Option<String>,
    /// tenant the token endpoint accepts (default sim-tenant)
    #[argh(option, default = "String::from(\"sim-tenant\")")]
    tenant: String,
    /// client id the token endpoint accepts (default sim-client)
    #[argh(option, default = "String::from(\"sim-client\")")]
    client_id: String,
    /// client secret the token endpoint accepts (default sim-secret)
    #[argh(option, default = "String::from(\"sim-secret\")")]
    client_secret: String,
    /// seed of the synthetic sign-ins (default 1)
    #[argh(option, default = "1")]
    seed: u64,
    /// mean sign-ins per second (default 5)
    #[argh(option, default = "5.0")]
    rate: f64,
    /// lifetime of issued tokens in seconds (default 3599)
    #[argh(option, default = "3599")]
    token_ttl: u64,
    /// answer every K-th sign-ins request with 429 (0: never)
    #[argh(option, default = "0")]
    every_429: u64,
    /// seconds of the Retry-After sent with those 429s (default 1)
    #[argh(option, default = "1")]
    retry_after: u64,
    /// answer every K-th sign-ins request with 503 (0: never)
    #[argh(option, default = "0")]
    every_503: u64,
    /// drop the connection of every K-th sign-ins request, alternately before the
    /// response and halfway through the body (0: never)
    #[argh(option, default = "0")]
    every_reset: u64,
    /// answer every K-th sign-ins request with a 200 whose JSON is cut off (0: never)
    #[argh(option, default = "0")]
    garbage: u64,
    /// admit N requests per W seconds to the reports bucket (sign-ins, audits,
    /// provisioning; sliding window), 429 beyond: N/W
    #[argh(option)]
    throttle: Option<String>,
    /// the same for identity protection (risk detections); its 429s have no
    /// Retry-After
    #[argh(option)]
    throttle_identity_protection: Option<String>,
    /// the same for security (alerts)
    #[argh(option)]
    throttle_security: Option<String>,
    /// seconds between the versions of a risk detection or alert (default 900)
    #[argh(option, default = "900")]
    update_every: i64,
    /// delay every sign-ins response by this many milliseconds (default 0)
    #[argh(option, default = "0")]
    latency_ms: u64,
    /// late arrivals, P:S: a share P (0..1) of sign-ins shows up only S seconds after
    /// its createdDateTime
    #[argh(option)]
    late: Option<String>,
    /// memory for rendered pages, in MiB, so a window is rendered once (default 256)
    #[argh(option, default = "256")]
    cache_mb: usize,
    /// page every resource oldest first (Graph documents no order for some; sign-ins
    /// come newest first)
    #[argh(switch)]
    oldest_first: bool,
    /// never compress, even when the client sends Accept-Encoding: gzip
    #[argh(switch)]
    no_gzip: bool,
    /// point nextLinks at a second listener (another origin) that records the
    /// Authorization headers it receives
    #[argh(switch)]
    foreign_next_link: bool,
    /// every page's nextLink is the page's own URL (a paging loop)
    #[argh(switch)]
    next_link_loop: bool,
    /// never end a query: after the last records, empty pages with fresh skiptokens
    #[argh(switch)]
    endless_paging: bool,
    /// break every 25th sign-in: no_id, null_id, number_id, no_created, bad_created
    /// or not_object
    #[argh(option)]
    damage: Option<String>,
    /// put attacker-typed text (line breaks, escapes, a forged log line) into the user
    /// name and city of failed sign-ins
    #[argh(switch)]
    hostile: bool,
    /// answer with 403: CODE (e.g. Authorization_RequestDenied) for every resource,
    /// SOURCE (permission missing), SOURCE:licence (no P1/P2) or SOURCE:CODE;
    /// repeatable
    #[argh(option)]
    deny: Vec<String>,
    /// answer the first N token requests with 503 (default 0)
    #[argh(option, default = "0")]
    fail_tokens: u64,
    /// the token response's expires_in, as raw JSON (default: the token lifetime)
    #[argh(option)]
    expires_in: Option<String>,
    /// the PEM certificate registered for the application: client assertions signed with
    /// its key are accepted
    #[argh(option)]
    client_cert: Option<String>,
    /// a federated token (workload identity) accepted as client assertion; repeatable
    /// (/_sim/federated?accept=… changes them)
    #[argh(option)]
    federated_token: Vec<String>,
    /// the client id of the user-assigned managed identity (default: only the
    /// system-assigned one, without client_id)
    #[argh(option)]
    managed_client_id: Option<String>,
    /// the IDENTITY_HEADER of App Service's /msi/token (default: App Service is off)
    #[argh(option)]
    identity_header: Option<String>,
}

/// Graph keeps sign-ins 30 days at most; a query without a lower bound starts there.
const RETENTION: i64 = 30 * 86_400 * TICKS_PER_SECOND;

struct Sim {
    /// One per resource, in the order of [`RESOURCES`].
    streams: Vec<Stream>,
    next_link_loop: bool,
    endless_paging: bool,
    oldest_first: bool,
    /// Endless pages served so far (each gets a fresh skiptoken).
    endless: AtomicU64,
    deny: Vec<Deny>,
    expires_in: Option<String>,
    identities: token::Identities,
    /// Token requests still to be answered 503.
    fail_tokens: AtomicU64,
    tenant: String,
    client_id: String,
    client_secret: String,
    token_ttl: Duration,
    base_url: String,
    /// Where nextLinks point: `base_url`, or the foreign listener.
    next_link_base: String,
    latency: Duration,
    pages: PageCache,
    gzip: bool,
    /// A fixed "now" set through `/_sim/clock` (None: the real clock), so tests can
    /// replay cron runs at chosen times.
    clock: Mutex<Option<Ticks>>,
    tokens: Mutex<HashMap<String, Instant>>,
    stats: Mutex<BTreeMap<String, u64>>,
    /// The `$filter` range of every query's first page, in Unix seconds (both ends
    /// included), by source: which seconds were read how often.
    reads: Mutex<Vec<(&'static str, i64, i64)>>,
    /// Every first page's `$top` and `$filter` as sent, by source.
    queries: Mutex<Vec<(&'static str, String, String)>>,
    faults: Faults,
}

fn main() {
    let args: Args = argh::from_env();
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        fail(2, "--rate must be a non-negative number");
    }
    let throttle = |value: &Option<String>| {
        value
            .as_deref()
            .map(Throttle::parse)
            .transpose()
            .unwrap_or_else(|e| fail(2, &e))
    };
    if args.update_every < 1 {
        fail(2, "--update-every must be at least 1");
    }
    let deny: Vec<Deny> = args.deny.iter().map(|v| Deny::parse(v)).collect();
    let listener = listen(args.port);
    let port = local_port(&listener);
    let foreign = args.foreign_next_link.then(|| listen(0));
    let base_url = format!("http://127.0.0.1:{port}");
    let next_link_base = match &foreign {
        Some(listener) => format!("http://127.0.0.1:{}", local_port(listener)),
        None => base_url.clone(),
    };
    let generator = Generator {
        seed: args.seed,
        rate: args.rate,
        late: args.late.as_deref().map(parse_late),
        damage: args
            .damage
            .as_deref()
            .map(hostile::Damage::parse)
            .transpose()
            .unwrap_or_else(|e| fail(2, &e)),
        hostile: args.hostile,
    };
    let sim = Arc::new(Sim {
        streams: RESOURCES
            .iter()
            .map(|r| Stream::new(r, generator, args.update_every))
            .collect(),
        next_link_loop: args.next_link_loop,
        oldest_first: args.oldest_first,
        endless_paging: args.endless_paging,
        endless: AtomicU64::new(0),
        deny,
        expires_in: args.expires_in,
        fail_tokens: AtomicU64::new(args.fail_tokens),
        identities: token::Identities {
            certificate: args
                .client_cert
                .as_deref()
                .map(token::Identities::load_certificate)
                .transpose()
                .unwrap_or_else(|e| fail(2, &e)),
            federated: Mutex::new(args.federated_token),
            jtis: Mutex::default(),
            managed_client_id: args.managed_client_id,
            identity_header: args.identity_header,
        },
        clock: Mutex::default(),
        tenant: args.tenant,
        client_id: args.client_id,
        client_secret: args.client_secret,
        token_ttl: Duration::from_secs(args.token_ttl),
        base_url,
        next_link_base,
        latency: Duration::from_millis(args.latency_ms),
        pages: PageCache::new(args.cache_mb << 20),
        gzip: !args.no_gzip,
        tokens: Mutex::default(),
        stats: Mutex::default(),
        reads: Mutex::default(),
        queries: Mutex::default(),
        faults: Faults {
            every_429: args.every_429,
            retry_after: args.retry_after,
            every_503: args.every_503,
            every_reset: args.every_reset,
            garbage: args.garbage,
            throttle: throttle(&args.throttle),
            throttle_identity_protection: throttle(&args.throttle_identity_protection),
            throttle_security: throttle(&args.throttle_security),
            requests: AtomicU64::new(0),
        },
    });
    if let Some(path) = &args.port_file
        && let Err(e) = std::fs::write(path, format!("{port}\n"))
    {
        fail(1, &format!("cannot write {path}: {e}"));
    }
    println!("msgx-sim listening on {}", sim.base_url);
    if let Some(listener) = foreign {
        let sim = sim.clone();
        std::thread::spawn(move || {
            http::serve(listener, Arc::new(move |request| sim.foreign(request)))
        });
    }
    http::serve(listener, Arc::new(move |request| sim.handle(request)));
}

fn parse_late(value: &str) -> (f64, i64) {
    let parsed = value
        .split_once(':')
        .and_then(|(p, s)| Some((p.parse::<f64>().ok()?, s.parse::<i64>().ok()?)));
    match parsed {
        Some((share, delay)) if (0.0..=1.0).contains(&share) && delay >= 0 => (share, delay),
        _ => fail(
            2,
            &format!("--late {value}: expected P:S, P from 0 to 1, S seconds"),
        ),
    }
}

fn listen(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| fail(1, &format!("cannot listen on 127.0.0.1:{port}: {e}")))
}

fn local_port(listener: &TcpListener) -> u16 {
    listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(1, &format!("no local address: {e}")))
}

fn fail(code: i32, message: &str) -> ! {
    eprintln!("msgx-sim: {message}");
    std::process::exit(code)
}

impl Sim {
    fn handle(&self, request: &Request) -> Reply {
        let path = request
            .target
            .split('?')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let query = parse_query(&request.target);
        let reply = match (request.method.as_str(), path.as_str()) {
            ("POST", p) if p.ends_with("/oauth2/v2.0/token") => {
                let tenant = p.trim_start_matches('/').split('/').next();
                let body = String::from_utf8_lossy(&request.body);
                Reply::Full(self.token(tenant.unwrap_or_default(), &body))
            }
            ("GET", p) if RESOURCES.iter().any(|r| r.path == p) => {
                self.collection(request, p, &query)
            }
            ("GET", "/_sim/records") => Reply::Full(self.oracle(&query)),
            ("GET", "/_sim/stats") => Reply::Full(self.stats()),
            ("GET", "/_sim/reads") => Reply::Full(self.reads(&query)),
            ("GET", "/_sim/queries") => Reply::Full(self.queries(&query)),
            ("GET", "/_sim/federated") => Reply::Full(self.set_federated(&query)),
            ("GET", "/metadata/identity/oauth2/token") => Reply::Full(self.imds(request, &query)),
            ("GET", "/msi/token") => Reply::Full(self.app_service(request, &query)),
            ("GET", "/_sim/clock") => Reply::Full(self.set_clock(&query)),
            _ => Reply::Full(graph_error(
                404,
                "Request_ResourceNotFound",
                "Resource not found for the segment.",
            )),
        };
        match reply {
            Reply::Full(response) => {
                self.count(&path, &response.status.to_string());
                let mut response = response
                    .with_header("request-id", &request_guid())
                    .with_header("Date", &http_date(self.now()));
                if let Some(id) = request.header("client-request-id") {
                    response = response.with_header("client-request-id", id);
                }
                Reply::Full(response)
            }
            other => other,
        }
    }

    /// The foreign host of `--foreign-next-link`: counts what reaches it, above all any
    /// bearer token, and answers with an empty page.
    fn foreign(&self, request: &Request) -> Reply {
        self.bump("foreign_requests");
        if request.header("authorization").is_some() {
            self.bump("foreign_authorization");
        }
        Reply::Full(json(200, r#"{"value":[]}"#.to_string()))
    }

    fn count(&self, path: &str, outcome: &str) {
        let kind = if path.ends_with("/token") || path.starts_with("/metadata/") {
            "token"
        } else if path.starts_with("/v1.0/") || path.starts_with("/beta/") {
            "graph"
        } else {
            "sim"
        };
        self.bump(&format!("{kind}_{outcome}"));
    }

    fn bump(&self, key: &str) {
        self.add(key, 1);
    }

    fn add(&self, key: &str, amount: u64) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        *stats.entry(key.to_string()).or_default() += amount;
    }

    /// The resource a collection request is for: by path, and on beta by the
    /// `signInEventTypes` clause of its filter (the simulator serves beta sign-ins one
    /// event type at a time). Unknown combinations get Graph's 400.
    fn resource(
        &self,
        path: &str,
        query: &HashMap<String, String>,
    ) -> Result<(&Stream, String), Response> {
        let filter = query.get("$filter").cloned().unwrap_or_default();
        let (event_type, rest) = odata::event_type(&filter);
        let beta = path.starts_with("/beta/");
        if event_type.is_some() && !beta {
            return Err(graph_error(
                400,
                "BadRequest",
                "Could not find a property named 'signInEventTypes' on type 'microsoft.graph.signIn'.",
            ));
        }
        if beta && event_type.is_none() {
            return Err(graph_error(
                400,
                "BadRequest",
                "msgx-sim serves beta sign-ins by event type: filter signInEventTypes/any(t: t eq '…')",
            ));
        }
        let found = resources::by_path(path, event_type.as_deref())
            .and_then(|r| self.streams.iter().find(|s| std::ptr::eq(s.resource, r)));
        match found {
            Some(stream) => Ok((stream, rest)),
            None => Err(graph_error(
                400,
                "BadRequest",
                &format!("Invalid filter clause: unknown signInEventTypes value {event_type:?}"),
            )),
        }
    }

    /// The 403 `resource` gets, if denied.
    fn denied(&self, resource: &Resource) -> Option<Response> {
        let deny = self
            .deny
            .iter()
            .find(|d| d.source.is_none_or(|s| s == resource.source))?;
        Some(graph_error(403, &deny.code, deny.message()))
    }

    fn collection(&self, request: &Request, path: &str, query: &HashMap<String, String>) -> Reply {
        if !self.authorized(request) {
            return Reply::Full(graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            ));
        }
        std::thread::sleep(self.latency);
        let (stream, filter) = match self.resource(path, query) {
            Ok(found) => found,
            Err(response) => return Reply::Full(response),
        };
        let resource = stream.resource;
        let reply = self.serve(request, stream, &filter, query);
        if let Reply::Full(response) = &reply {
            self.bump(&format!("{}_{}", resource.source, response.status));
        }
        reply
    }

    fn serve(
        &self,
        request: &Request,
        stream: &Stream,
        filter: &str,
        query: &HashMap<String, String>,
    ) -> Reply {
        let resource = stream.resource;
        if let Some(response) = self.denied(resource) {
            return Reply::Full(response);
        }
        let fault = self.faults.next(resource.bucket);
        match fault {
            Some(Fault::TooManyRequests(retry_after)) => {
                let response = graph_error(429, "TooManyRequests", "Too many requests.");
                return Reply::Full(match retry_after {
                    Some(seconds) => response.with_header("Retry-After", &seconds.to_string()),
                    None => response,
                });
            }
            Some(Fault::ServiceUnavailable) => {
                return Reply::Full(graph_error(
                    503,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable.",
                ));
            }
            Some(Fault::Reset) => {
                self.bump("graph_reset");
                return Reply::Reset;
            }
            _ => {}
        }
        // Counted here, not in `page`: a cached page is a read too.
        if query.get("$skiptoken").is_none() {
            if let Ok(bounds) = self.bounds(filter, resource, true) {
                let second = |ticks: Ticks| ticks.div_euclid(TICKS_PER_SECOND);
                let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
                reads.push((resource.source, second(bounds.lo), second(bounds.hi)));
            }
            let mut queries = self.queries.lock().unwrap_or_else(|p| p.into_inner());
            queries.push((
                resource.source,
                query.get("$top").cloned().unwrap_or_default(),
                query.get("$filter").cloned().unwrap_or_default(),
            ));
        }
        let page = match self.pages.get_or_render(&request.target, || {
            self.page(&request.target, stream, filter, query)
        }) {
            Ok(page) => page,
            Err(response) => return Reply::Full(response),
        };
        match fault {
            Some(Fault::CutShort) => {
                self.bump("graph_cut_short");
                Reply::CutShort(Response::shared(200, "application/json", page))
            }
            Some(Fault::Garbage) => {
                self.bump("graph_garbage");
                let cut = page.len() / 2;
                Reply::Full(Response::new(200, "application/json", page[..cut].to_vec()))
            }
            _ => Reply::Full(self.deliver(request, page)),
        }
    }

    /// A page as it goes on the wire: gzipped (once, then cached) when the client
    /// accepts it.
    fn deliver(&self, request: &Request, page: Body) -> Response {
        let accepts_gzip = request
            .header("accept-encoding")
            .is_some_and(|v| v.split(',').any(|e| e.trim() == "gzip"));
        let response = if self.gzip && accepts_gzip {
            let key = format!("gzip {}", request.target);
            // Kept only alongside a kept (stable) plain page.
            let stable = self.pages.get(&request.target).is_some();
            let zipped = self
                .pages
                .get_or_render(&key, || Ok::<_, ()>((pages::gzip(&page), stable)))
                .unwrap_or(page);
            Response::shared(200, "application/json", zipped)
                .with_header("Content-Encoding", "gzip")
        } else {
            Response::shared(200, "application/json", page)
        };
        self.add("graph_bytes", response.body.len() as u64);
        response
    }

    /// The JSON body of one page of `stream` and whether it can be cached, or Graph's
    /// answer to a bad query. `filter` is the `$filter` without a beta event type.
    fn page(
        &self,
        target: &str,
        stream: &Stream,
        filter: &str,
        query: &HashMap<String, String>,
    ) -> Result<(Vec<u8>, bool), Response> {
        let resource = stream.resource;
        let max = resource.max_top;
        let top = match query.get("$top").map(|t| t.parse::<usize>()) {
            // Graph's documented defaults: 20 risk detections, else the maximum.
            None if resource.family == Family::RiskDetections => 20,
            None => max,
            Some(Ok(top)) if (1..=max).contains(&top) => top,
            Some(_) => {
                return Err(graph_error(
                    400,
                    "BadRequest",
                    &format!("Invalid $top value: must be between 1 and {max}."),
                ));
            }
        }
        .min(resource.page_cap());
        let bounds = self
            .bounds(filter, resource, true)
            .map_err(|message| graph_error(400, "BadRequest", &message))?;

        let endless = query
            .get("$skiptoken")
            .is_some_and(|t| t.starts_with("endless"));
        let cursor = match query
            .get("$skiptoken")
            .filter(|_| !endless)
            .map(|t| Cursor::decode(t))
        {
            None => None,
            Some(Some(cursor)) => Some(cursor),
            Some(None) => return Err(graph_error(400, "BadRequest", "Invalid skip token.")),
        };
        let select = match (query.get("$select"), resource.family) {
            (None, _) => None,
            (Some(select), Family::SignIns) => Some(parse_select(select)?),
            (Some(_), _) => {
                return Err(graph_error(
                    400,
                    "BadRequest",
                    "msgx-sim supports $select on sign-ins only",
                ));
            }
        };
        let now = self.now();
        let page_query = PageQuery {
            bounds,
            cursor,
            top,
            now,
            select: select.as_deref(),
            oldest_first: self.oldest_first,
        };
        let (records, next) = match endless {
            true => (Vec::new(), None),
            false => odata::page(stream, &page_query),
        };
        let version = if resource.path.starts_with("/beta/") {
            "beta"
        } else {
            "v1.0"
        };
        let mut body = format!(
            r#"{{"@odata.context":"{}/{version}/$metadata#{}","value":["#,
            self.base_url, resource.context
        );
        body.push_str(&records.join(","));
        body.push(']');
        let next = next.map(|cursor| cursor.encode()).or_else(|| {
            self.endless_paging.then(|| {
                let n = self
                    .endless
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                format!("endless{n}")
            })
        });
        if self.next_link_loop {
            body.push_str(&format!(
                r#","@odata.nextLink":"{}{target}""#,
                self.next_link_base
            ));
        } else if let Some(next) = next {
            // Graph hands the path back lower-cased.
            let mut link = format!("{}{}?", self.next_link_base, resource.path);
            for name in ["$filter", "$select"] {
                if let Some(value) = query.get(name) {
                    let encoded: String =
                        url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
                    link.push_str(&format!("{name}={encoded}&"));
                }
            }
            link.push_str(&format!("$top={top}&$skiptoken={next}"));
            body.push_str(&format!(r#","@odata.nextLink":"{link}""#));
        }
        body.push('}');
        // A page reaching into the last second, or with late arrivals, can still change.
        let stable = stream.generator.late.is_none()
            && !resource.mutable()
            && !self.endless_paging
            && bounds.hi + TICKS_PER_SECOND < now;
        Ok((body.into_bytes(), stable))
    }

    /// The query's bounds, clipped to what exists: nothing after now, nothing older
    /// than the retention.
    fn now(&self) -> Ticks {
        let fixed = *self.clock.lock().unwrap_or_else(|p| p.into_inner());
        fixed.unwrap_or_else(|| {
            (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 100) as Ticks
        })
    }

    /// `?now=<RFC 3339>` fixes the clock, `?now=real` releases it.
    fn set_clock(&self, query: &HashMap<String, String>) -> Response {
        let fixed = match query.get("now").map(String::as_str) {
            Some("real") => None,
            Some(value) => match odata::parse_ticks(value) {
                Ok(ticks) => Some(ticks),
                Err(message) => return graph_error(400, "BadRequest", &message),
            },
            None => return graph_error(400, "BadRequest", "now=<RFC 3339> or now=real"),
        };
        *self.clock.lock().unwrap_or_else(|p| p.into_inner()) = fixed;
        json(200, "{}".to_string())
    }

    /// The bounds of `filter` on `resource`'s time field; `strict`: only the operators
    /// Graph documents for it.
    fn bounds(&self, filter: &str, resource: &Resource, strict: bool) -> Result<Bounds, String> {
        let now = self.now();
        let all = Bounds {
            lo: now - RETENTION,
            hi: now,
        };
        odata::parse_filter(filter, all, resource, strict)
    }

    /// The stream `?source=` names (signins when not given).
    fn stream_named(&self, query: &HashMap<String, String>) -> Result<&Stream, Response> {
        let source = query.get("source").map_or("signins", String::as_str);
        self.streams
            .iter()
            .find(|s| s.resource.source == source)
            .ok_or_else(|| graph_error(400, "BadRequest", &format!("unknown source {source:?}")))
    }

    fn oracle(&self, query: &HashMap<String, String>) -> Response {
        let visible_by = match query.get("visible_by").map(|v| odata::parse_ticks(v)) {
            None => None,
            Some(Ok(ticks)) => Some(ticks),
            Some(Err(message)) => return graph_error(400, "BadRequest", &message),
        };
        let stream = match self.stream_named(query) {
            Ok(stream) => stream,
            Err(response) => return response,
        };
        let filter = query.get("$filter").map_or("", String::as_str);
        match self.bounds(filter, stream.resource, false) {
            Ok(bounds) => {
                let mut body = odata::all(stream, bounds, visible_by).join("\n");
                if !body.is_empty() {
                    body.push('\n');
                }
                Response::new(200, "application/x-ndjson", body.into_bytes())
            }
            Err(message) => graph_error(400, "BadRequest", &message),
        }
    }

    /// `GET /_sim/reads?source=…`: one `start end` line per query of the source
    /// (signins when not given), in Unix seconds.
    fn reads(&self, query: &HashMap<String, String>) -> Response {
        let source = query.get("source").map_or("signins", String::as_str);
        let reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        let lines: Vec<String> = reads
            .iter()
            .filter(|(s, ..)| *s == source)
            .map(|(_, lo, hi)| format!("{lo} {hi}\n"))
            .collect();
        Response::new(200, "text/plain", lines.concat().into_bytes())
    }

    /// `GET /_sim/queries`: one `source<TAB>$top<TAB>$filter` line per query, as sent.
    fn queries(&self, query: &HashMap<String, String>) -> Response {
        let queries = self.queries.lock().unwrap_or_else(|p| p.into_inner());
        let lines: Vec<String> = queries
            .iter()
            .filter(|(s, ..)| query.get("source").is_none_or(|wanted| wanted == s))
            .map(|(source, top, filter)| format!("{source}\t{top}\t{filter}\n"))
            .collect();
        Response::new(200, "text/plain", lines.concat().into_bytes())
    }

    fn stats(&self) -> Response {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let fields: Vec<String> = stats.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        json(200, format!("{{{}}}", fields.join(",")))
    }
}

/// A `--deny`: which resources answer 403, with which Graph error code.
struct Deny {
    /// None: every resource.
    source: Option<&'static str>,
    code: String,
}

const LICENCE_CODE: &str = "Authentication_RequestFromNonPremiumTenantOrB2CTenant";

impl Deny {
    /// `CODE`, `SOURCE`, `SOURCE:licence` or `SOURCE:CODE`.
    fn parse(value: &str) -> Deny {
        let (name, code) = value.split_once(':').unwrap_or((value, ""));
        match resources::by_source(name) {
            Some(resource) => Deny {
                source: Some(resource.source),
                code: match code {
                    "" => "Authorization_RequestDenied".into(),
                    "licence" | "license" => LICENCE_CODE.into(),
                    code => code.into(),
                },
            },
            None => Deny {
                source: None,
                code: value.to_string(),
            },
        }
    }

    fn message(&self) -> &'static str {
        match self.code.as_str() {
            LICENCE_CODE => "Neither tenant is B2C or tenant doesn't have premium license",
            _ => "Insufficient privileges to complete the operation.",
        }
    }
}

/// An HTTP-date (IMF-fixdate) of the simulator's clock, for the `Date` header.
fn http_date(now: Ticks) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from_unix_timestamp(now.div_euclid(TICKS_PER_SECOND))
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

/// `$select=a,b`: known sign-in properties only, as Graph insists.
fn parse_select(value: &str) -> Result<Vec<String>, Response> {
    value
        .split(',')
        .map(|name| {
            let name = name.trim();
            match generator::PROPERTIES
                .iter()
                .find(|p| p.eq_ignore_ascii_case(name))
            {
                Some(property) => Ok(property.to_string()),
                None => Err(graph_error(
                    400,
                    "BadRequest",
                    &format!(
                        "Could not find a property named '{name}' on type 'microsoft.graph.signIn'."
                    ),
                )),
            }
        })
        .collect()
}

fn parse_query(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}
