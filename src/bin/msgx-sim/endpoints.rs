//! The simulator's own endpoints: the oracle of every record in a range
//! (`/_sim/records`), what was asked (`/_sim/reads`, `/_sim/queries`) and the request
//! counts (`/_sim/stats`).

use std::collections::HashMap;

use crate::http::Response;
use crate::odata;
use crate::resources::Stream;
use crate::responses::{graph_error, json};
use crate::sim::Sim;

impl Sim {
    /// The tenant `?tenant=` names (the home tenant when not given).
    fn tenant_asked(&self, query: &HashMap<String, String>) -> Result<usize, Response> {
        let name = query.get("tenant").map(String::as_str);
        self.tenant_index(name)
            .ok_or_else(|| graph_error(400, "BadRequest", &format!("unknown tenant {name:?}")))
    }

    /// The stream `?source=` names (signins when not given) of the tenant `?tenant=`
    /// names.
    pub(crate) fn stream_named(
        &self,
        query: &HashMap<String, String>,
    ) -> Result<&Stream, Response> {
        let source = query.get("source").map_or("signins", String::as_str);
        let tenant = self.tenant_asked(query)?;
        self.tenants[tenant]
            .streams
            .iter()
            .find(|s| s.resource.source == source)
            .ok_or_else(|| graph_error(400, "BadRequest", &format!("unknown source {source:?}")))
    }

    pub(crate) fn oracle(&self, query: &HashMap<String, String>) -> Response {
        let visible_by = match query.get("visible_by").map(|v| odata::parse_ticks(v)) {
            None => None,
            Some(Ok(ticks)) => Some(ticks),
            Some(Err(message)) => return graph_error(400, "BadRequest", &message),
        };
        // `as_of`: the records as Graph shows them then (changed ones change); the
        // simulator's "now" by default.
        let as_of = match query.get("as_of").map(|v| odata::parse_ticks(v)) {
            None => self.now(),
            Some(Ok(ticks)) => ticks,
            Some(Err(message)) => return graph_error(400, "BadRequest", &message),
        };
        let stream = match self.stream_named(query) {
            Ok(stream) => stream,
            Err(response) => return response,
        };
        let filter = query.get("$filter").map_or("", String::as_str);
        match self.bounds(filter, stream.resource, false) {
            Ok(bounds) => {
                let mut body = odata::all(stream, bounds, visible_by, as_of).join("\n");
                if !body.is_empty() {
                    body.push('\n');
                }
                Response::new(200, "application/x-ndjson", body.into_bytes())
            }
            Err(message) => graph_error(400, "BadRequest", &message),
        }
    }

    /// `GET /_sim/reads?source=…&tenant=…`: one `start end` line per query of the
    /// source (signins when not given) of the tenant (the home one), in Unix seconds.
    pub(crate) fn reads(&self, query: &HashMap<String, String>) -> Response {
        let source = query.get("source").map_or("signins", String::as_str);
        let tenant = match self.tenant_asked(query) {
            Ok(tenant) => tenant,
            Err(response) => return response,
        };
        let reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        let lines: Vec<String> = reads
            .iter()
            .filter(|(t, s, ..)| *t == tenant && *s == source)
            .map(|(_, _, lo, hi)| format!("{lo} {hi}\n"))
            .collect();
        Response::new(200, "text/plain", lines.concat().into_bytes())
    }

    /// `GET /_sim/queries`: one `source<TAB>$top<TAB>$filter` line per query of the
    /// tenant (`?tenant=`, the home one), as sent.
    pub(crate) fn queries(&self, query: &HashMap<String, String>) -> Response {
        let tenant = match self.tenant_asked(query) {
            Ok(tenant) => tenant,
            Err(response) => return response,
        };
        let queries = self.queries.lock().unwrap_or_else(|p| p.into_inner());
        let lines: Vec<String> = queries
            .iter()
            .filter(|(t, ..)| *t == tenant)
            .filter(|(_, s, ..)| query.get("source").is_none_or(|wanted| wanted == s))
            .map(|(_, source, top, filter)| format!("{source}\t{top}\t{filter}\n"))
            .collect();
        Response::new(200, "text/plain", lines.concat().into_bytes())
    }

    pub(crate) fn stats(&self) -> Response {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let fields: Vec<String> = stats.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        json(200, format!("{{{}}}", fields.join(",")))
    }
}
