//! The simulator's state — its resources, faults, clock, identities and what it was
//! asked — and the routes every request goes through.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::args::Deny;
use crate::faults::Faults;
use crate::generator::{TICKS_PER_SECOND, Ticks};
use crate::http::{Reply, Request, Response};
use crate::identities;
use crate::odata::{self, Bounds};
use crate::pages::PageCache;
use crate::resources::{RESOURCES, Resource, Stream};
use crate::responses::{begin_request, graph_error, json};

/// Graph keeps sign-ins 30 days at most; a query without a lower bound starts there.
const RETENTION: i64 = 30 * 86_400 * TICKS_PER_SECOND;

/// One tenant the application is registered in: its records, and whether it consented.
pub struct Tenant {
    pub(crate) name: String,
    /// One per resource, in the order of [`RESOURCES`].
    pub(crate) streams: Vec<Stream>,
    /// `--unconsented`: its token requests are refused.
    pub(crate) consented: bool,
}

pub struct Sim {
    /// `--tenant` first (index 0), then `--tenants`.
    pub(crate) tenants: Vec<Tenant>,
    pub(crate) next_link_loop: bool,
    pub(crate) endless_paging: bool,
    pub(crate) oldest_first: bool,
    /// Endless pages served so far (each gets a fresh skiptoken).
    pub(crate) endless: AtomicU64,
    pub(crate) deny: Vec<Deny>,
    pub(crate) expires_in: Option<String>,
    pub(crate) identities: identities::Identities,
    /// Token requests still to be answered 503.
    pub(crate) fail_tokens: AtomicU64,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) token_ttl: Duration,
    pub(crate) base_url: String,
    /// Where nextLinks point: `base_url`, or the foreign listener.
    pub(crate) next_link_base: String,
    /// A page's answer waits this long, plus `latency_per_record` per record.
    pub(crate) latency: Duration,
    pub(crate) latency_per_record: Duration,
    pub(crate) pages: PageCache,
    pub(crate) gzip: bool,
    /// A fixed "now" set through `/_sim/clock` (None: the real clock), so tests can
    /// replay cron runs at chosen times.
    pub(crate) clock: Mutex<Option<Ticks>>,
    /// Each live token: its expiry and its tenant (an index of `tenants`).
    pub(crate) tokens: Mutex<HashMap<String, (Instant, usize)>>,
    pub(crate) stats: Mutex<BTreeMap<String, u64>>,
    /// The `$filter` range of every query's first page, in Unix seconds (both ends
    /// included), by tenant and source: which seconds were read how often.
    pub(crate) reads: Mutex<Vec<(usize, &'static str, i64, i64)>>,
    /// Every first page's `$top` and `$filter` as sent, by tenant and source.
    pub(crate) queries: Mutex<Vec<(usize, &'static str, String, String)>>,
    pub(crate) faults: Faults,
}

impl Sim {
    /// The index of the tenant `name` names (`?tenant=`; the home tenant when None).
    pub(crate) fn tenant_index(&self, name: Option<&str>) -> Option<usize> {
        match name {
            None => Some(0),
            Some(name) => self
                .tenants
                .iter()
                .position(|t| t.name.eq_ignore_ascii_case(name)),
        }
    }

    pub(crate) fn handle(&self, request: &Request) -> Reply {
        let path = request
            .target
            .split('?')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let query = parse_query(&request.target);
        let ids = begin_request(request.header("client-request-id"));
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
                let response = response
                    .with_header("request-id", &ids.request_id)
                    .with_header("client-request-id", &ids.client_request_id)
                    .with_header("Date", &http_date(self.now()));
                Reply::Full(response)
            }
            other => other,
        }
    }

    /// The foreign host of `--foreign-next-link`: counts what reaches it, above all any
    /// bearer token, and answers with an empty page.
    pub(crate) fn foreign(&self, request: &Request) -> Reply {
        self.bump("foreign_requests");
        if request.header("authorization").is_some() {
            self.bump("foreign_authorization");
        }
        Reply::Full(json(200, r#"{"value":[]}"#.to_string()))
    }

    /// Counts a Graph answer to one tenant, when the simulator serves several.
    pub(crate) fn count_tenant(&self, tenant: usize, outcome: u16) {
        if self.tenants.len() > 1
            && let Some(t) = self.tenants.get(tenant)
        {
            self.bump(&format!("tenant_{}_{outcome}", t.name));
        }
    }

    pub(crate) fn count(&self, path: &str, outcome: &str) {
        let kind = if path.ends_with("/token") || path.starts_with("/metadata/") {
            "token"
        } else if path.starts_with("/v1.0/") || path.starts_with("/beta/") {
            "graph"
        } else {
            "sim"
        };
        self.bump(&format!("{kind}_{outcome}"));
    }

    pub(crate) fn bump(&self, key: &str) {
        self.add(key, 1);
    }

    pub(crate) fn add(&self, key: &str, amount: u64) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        *stats.entry(key.to_string()).or_default() += amount;
    }

    /// The query's bounds, clipped to what exists: nothing after now, nothing older
    /// than the retention.
    pub(crate) fn now(&self) -> Ticks {
        let fixed = *self.clock.lock().unwrap_or_else(|p| p.into_inner());
        fixed.unwrap_or_else(|| {
            (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 100) as Ticks
        })
    }

    /// `?now=<RFC 3339>` fixes the clock, `?now=real` releases it.
    pub(crate) fn set_clock(&self, query: &HashMap<String, String>) -> Response {
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
    pub(crate) fn bounds(
        &self,
        filter: &str,
        resource: &Resource,
        strict: bool,
    ) -> Result<Bounds, String> {
        let now = self.now();
        let all = Bounds {
            lo: now - RETENTION,
            hi: now,
        };
        odata::parse_filter(filter, all, resource, strict)
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

fn parse_query(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}
