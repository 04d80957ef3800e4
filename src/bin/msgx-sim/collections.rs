//! Graph's collections: which resource a request is for, the faults and refusals it
//! meets, and its page, rendered (once, when it cannot change) and delivered.

use std::collections::HashMap;

use crate::evolvable;
use crate::faults::{Fault, Over};
use crate::generator::{TICKS_PER_SECOND, Ticks};
use crate::http::{Reply, Request, Response};
use crate::odata::{self, Cursor, PageQuery};
use crate::pages::{self, Body};
use crate::resources::{self, Family, Resource, Stream};
use crate::responses::{graph_error, too_many_requests};
use crate::signins;
use crate::sim::Sim;

impl Sim {
    /// The resource a collection request is for: by path, and on beta by the
    /// `signInEventTypes` clause of its filter (the simulator serves beta sign-ins one
    /// event type at a time). Unknown combinations get Graph's 400.
    pub(crate) fn resource(
        &self,
        path: &str,
        query: &HashMap<String, String>,
        tenant: usize,
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
        let beta_sign_ins = path.eq_ignore_ascii_case("/beta/auditlogs/signins");
        if beta_sign_ins && event_type.is_none() {
            return Err(graph_error(
                400,
                "BadRequest",
                "msgx-sim serves beta sign-ins by event type: filter signInEventTypes/any(t: t eq '…')",
            ));
        }
        let found = resources::by_path(path, event_type.as_deref()).and_then(|r| {
            let streams = &self.tenants.get(tenant)?.streams;
            streams.iter().find(|s| std::ptr::eq(s.resource, r))
        });
        match found {
            Some(stream) => Ok((stream, rest)),
            None => Err(graph_error(
                400,
                "BadRequest",
                &format!("Invalid filter clause: unknown signInEventTypes value {event_type:?}"),
            )),
        }
    }

    /// The 403 `resource` of `tenant` (an index) gets, if denied.
    pub(crate) fn denied(&self, resource: &Resource, tenant: usize) -> Option<Response> {
        let name = &self.tenants.get(tenant)?.name;
        let deny = self.deny.iter().find(|d| {
            d.source.is_none_or(|s| s == resource.source)
                && d.tenant
                    .as_ref()
                    .is_none_or(|t| t.eq_ignore_ascii_case(name))
        })?;
        Some(graph_error(403, &deny.code, deny.message()))
    }

    pub(crate) fn collection(
        &self,
        request: &Request,
        path: &str,
        query: &HashMap<String, String>,
    ) -> Reply {
        let Some(tenant) = self.authorized(request) else {
            return Reply::Full(graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            ));
        };
        let (stream, filter) = match self.resource(path, query, tenant) {
            Ok(found) => found,
            Err(response) => return Reply::Full(response),
        };
        let resource = stream.resource;
        let reply = self.serve(request, stream, &filter, query, tenant);
        if let Reply::Full(response) = &reply {
            self.bump(&format!("{}_{}", resource.source, response.status));
            self.count_tenant(tenant, response.status);
        }
        reply
    }

    pub(crate) fn serve(
        &self,
        request: &Request,
        stream: &Stream,
        filter: &str,
        query: &HashMap<String, String>,
        tenant: usize,
    ) -> Reply {
        let resource = stream.resource;
        if let Some(response) = self.denied(resource, tenant) {
            return Reply::Full(response);
        }
        // A request sent before the last 429's Retry-After has passed: counted, so a
        // test can tell that a client honours it (fractions included).
        if self.faults.early(tenant) {
            self.bump("graph_early");
        }
        let (fault, over) = self.faults.next(resource.bucket, tenant).unzip();
        match fault {
            Some(Fault::TooManyRequests(retry_after)) => {
                self.faults.throttled(tenant, over, retry_after.as_deref());
                match over {
                    Some(Over::Tenant) => self.bump("graph_429_tenant"),
                    Some(Over::App) => self.bump("graph_429_app"),
                    _ => {}
                }
                return Reply::Full(too_many_requests(retry_after.as_deref()));
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
                reads.push((
                    tenant,
                    resource.source,
                    second(bounds.lo),
                    second(bounds.hi),
                ));
            }
            let mut queries = self.queries.lock().unwrap_or_else(|p| p.into_inner());
            queries.push((
                tenant,
                resource.source,
                query.get("$top").cloned().unwrap_or_default(),
                query.get("$filter").cloned().unwrap_or_default(),
            ));
        }
        // Another tenant's page of the same query is another page.
        let cache_key = match tenant {
            0 => request.target.clone(),
            n => format!("{n} {}", request.target),
        };
        let page = match self.pages.get_or_render(&cache_key, || {
            self.page(&request.target, stream, filter, query)
        }) {
            Ok(page) => page,
            Err(response) => return Reply::Full(response),
        };
        // Graph's pace: a base, plus the time its records take to gather (the page
        // scanned for its records only when they cost time).
        let gathering = match self.latency_per_record.is_zero() {
            true => std::time::Duration::ZERO,
            false => self.latency_per_record * u32::try_from(records_in(&page)).unwrap_or(u32::MAX),
        };
        std::thread::sleep(self.latency + gathering);
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
            _ => Reply::Full(self.deliver(request, &cache_key, page)),
        }
    }

    /// A page as it goes on the wire: gzipped (once, then cached) when the client
    /// accepts it.
    pub(crate) fn deliver(&self, request: &Request, cache_key: &str, page: Body) -> Response {
        // Without `Prefer: include-unknown-enum-members`, as Graph sends it.
        let (page, cache_key) = match evolvable::asked_for(request.header("prefer")) {
            true => (page, cache_key.to_string()),
            false => match evolvable::hidden(&page) {
                Some(hidden) => (Body::new(hidden), format!("hidden {cache_key}")),
                None => (page, cache_key.to_string()),
            },
        };
        let cache_key = cache_key.as_str();
        let accepts_gzip = request
            .header("accept-encoding")
            .is_some_and(|v| v.split(',').any(|e| e.trim() == "gzip"));
        let response = if self.gzip && accepts_gzip {
            let key = format!("gzip {cache_key}");
            // Kept only alongside a kept (stable) plain page.
            let stable = self.pages.get(cache_key).is_some();
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
    pub(crate) fn page(
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
            None if matches!(
                resource.family,
                Family::RiskDetections | Family::AgentRiskDetections
            ) =>
            {
                20
            }
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
        let stable = stream.generator.late.is_empty()
            && stream.generator.changed.is_none()
            && !resource.mutable()
            && !self.endless_paging
            && bounds.hi + TICKS_PER_SECOND < now;
        Ok((body.into_bytes(), stable))
    }
}

/// `$select=a,b`: known sign-in properties only, as Graph insists.
fn parse_select(value: &str) -> Result<Vec<String>, Response> {
    value
        .split(',')
        .map(|name| {
            let name = name.trim();
            match signins::PROPERTIES
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

/// The records of a rendered page: the objects directly inside its `value` array (a
/// scan of the body, strings skipped).
fn records_in(page: &[u8]) -> usize {
    let (mut depth, mut in_string, mut escaped, mut records) = (0usize, false, false, 0);
    for &byte in page {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                // The page object is depth 1, `value` depth 2, its records depth 3.
                depth += 1;
                records += usize::from(byte == b'{' && depth == 3);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    records
}

#[cfg(test)]
mod record_count {
    #[test]
    fn records_of_the_value_array_are_counted() {
        let page = br#"{"@odata.context":"x{","value":[{"a":{"b":1},"s":"}{\"["},{"c":[{}]}],"@odata.nextLink":"y"}"#;
        assert_eq!(super::records_in(page), 2);
        assert_eq!(super::records_in(br#"{"value":[]}"#), 0);
    }
}
