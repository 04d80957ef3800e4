//! The shapes a record is written in (`record_format`): Graph's JSON as Graph sent it
//! (`graph`, the original's contract and the default), the Azure Monitor
//! diagnostic-settings record of its category (`azure_monitor`: what Entra's
//! diagnostic settings send to Event Hub or Storage, and what Elastic's `azure`
//! integration, sof-elk and Sentinel-style parsers read), or OCSF (`ocsf`).
//!
//! A format is one file and one row of [`FORMATS`]; what it does to each kind of record
//! ([`RecordKind`], a column of the sources table) is its own. A kind a format has no
//! shape for stays Graph's, said once at start ([`unshaped`]).
//!
//! Shapes are applied after a record's key is read, so deduplication, late counting and
//! owed ranges work on Graph's `id` and time whatever the output.

mod azure_monitor;
mod ocsf;
mod record;

use record::Record;

use crate::sources::{RecordKind, SourceSpec};

/// A `record_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    Graph,
    AzureMonitor,
    Ocsf,
}

/// One format: its option value, and the shape it gives each kind of record (None: the
/// kind stays Graph's).
pub struct FormatSpec {
    pub name: &'static str,
    pub format: RecordFormat,
    shape: fn(&RecordKind) -> Option<&'static dyn Shape>,
}

pub static FORMATS: &[FormatSpec] = &[
    FormatSpec {
        name: "graph",
        format: RecordFormat::Graph,
        shape: |_| None,
    },
    FormatSpec {
        name: "azure_monitor",
        format: RecordFormat::AzureMonitor,
        shape: azure_monitor::shape,
    },
    FormatSpec {
        name: "ocsf",
        format: RecordFormat::Ocsf,
        shape: ocsf::shape,
    },
];

impl RecordFormat {
    fn spec(self) -> &'static FormatSpec {
        FORMATS
            .iter()
            .find(|f| f.format == self)
            .unwrap_or(&FORMATS[0])
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The shape of `source`'s records in this format; None: Graph's as it is.
    pub fn shape(self, source: &SourceSpec) -> Option<&'static dyn Shape> {
        (self.spec().shape)(&source.kind)
    }
}

/// What a shape knows of the records' tenant and stream.
#[derive(Debug, Clone)]
pub struct Context {
    /// The tenant's GUID (learned from the token when the tenant is configured by
    /// name): empty when unknown.
    pub tenant_id: String,
    /// The source's diagnostic-settings category, for the sign-in kinds.
    pub category: Option<&'static str>,
}

/// One kind of record in one format.
pub trait Shape: Send + Sync {
    /// Writes `record`, Graph's JSON object, in this shape to `out`.
    fn render(&self, record: Record, context: &Context, out: &mut String);
}

/// `record` (one JSON object as Graph sent it) rendered by `shape`. Err: it is not a
/// JSON object (it is then delivered as it is, said by the caller).
pub fn render(shape: &dyn Shape, record: &str, context: &Context) -> Result<String, String> {
    let parsed = Record::parse(record)?;
    let mut out = String::with_capacity(record.len() + 512);
    shape.render(parsed, context, &mut out);
    Ok(out)
}

/// The second of a record msgx-once wrote in a shape other than Graph's (the time field
/// of `source` inside an `azure_monitor` record's `properties`, or an `ocsf` record's
/// `time` in milliseconds); None for anything else. A first run reads it where a
/// backfill in that format went before it (`state::takeover`).
pub fn shaped_second(record: &str, source: &SourceSpec) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_str(record).ok()?;
    let object = value.as_object()?;
    match (object.get("category"), object.get("properties")) {
        (Some(serde_json::Value::String(_)), Some(serde_json::Value::Object(properties))) => {
            crate::window::parse_created(properties.get(source.time_field)?.as_str()?)
        }
        _ if object.get("class_uid").is_some_and(|c| c.is_u64()) => {
            Some(object.get("time")?.as_i64()?.div_euclid(1000))
        }
        _ => None,
    }
}

/// The sources among `sources` whose records `format` leaves in Graph's shape, for the
/// start-up WARN.
pub fn unshaped<'a>(format: RecordFormat, sources: &[&'a SourceSpec]) -> Vec<&'a str> {
    match format {
        RecordFormat::Graph => Vec::new(),
        _ => sources
            .iter()
            .filter(|s| format.shape(s).is_none())
            .map(|s| s.name)
            .collect(),
    }
}
