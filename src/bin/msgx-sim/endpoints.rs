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
    /// The stream `?source=` names (signins when not given).
    pub(crate) fn stream_named(
        &self,
        query: &HashMap<String, String>,
    ) -> Result<&Stream, Response> {
        let source = query.get("source").map_or("signins", String::as_str);
        self.streams
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

    /// `GET /_sim/reads?source=…`: one `start end` line per query of the source
    /// (signins when not given), in Unix seconds.
    pub(crate) fn reads(&self, query: &HashMap<String, String>) -> Response {
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
    pub(crate) fn queries(&self, query: &HashMap<String, String>) -> Response {
        let queries = self.queries.lock().unwrap_or_else(|p| p.into_inner());
        let lines: Vec<String> = queries
            .iter()
            .filter(|(s, ..)| query.get("source").is_none_or(|wanted| wanted == s))
            .map(|(source, top, filter)| format!("{source}\t{top}\t{filter}\n"))
            .collect();
        Response::new(200, "text/plain", lines.concat().into_bytes())
    }

    pub(crate) fn stats(&self) -> Response {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let fields: Vec<String> = stats.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        json(200, format!("{{{}}}", fields.join(",")))
    }
}
