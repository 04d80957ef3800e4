//! The log sink: one INFO line per record in the original's format,
//! `[createdDateTime]: userPrincipalName - ipAddress - countryOrRegion/city`; records of
//! other sources as `[time]: headline - id`. When several sources are exported, each
//! line starts with its source. Field values are attacker-controlled (a failed sign-in
//! records what was typed); the logger escapes them, so a record cannot forge a line.

use serde::Deserialize;

use super::{Health, RecordKey, Sink, SinkSettings, Written};
use crate::error::{Error, SinkError};
use crate::lane::Lane;
use crate::logging;
use crate::redis_client::RedisPool;
use crate::retry::RetryOptions;
use crate::sources::SourceSpec;

pub struct LogSink {
    pub source: &'static SourceSpec,
    /// Start each line with the source's name (several sources are exported).
    pub name_sources: bool,
}

/// The lane's log sink.
pub fn open(
    settings: &SinkSettings,
    source: &Lane,
    _: Option<&RedisPool>,
    _: RetryOptions,
    _: Option<super::redis::Dedup>,
) -> Result<Box<dyn Sink>, Error> {
    Ok(Box::new(LogSink {
        source: source.spec,
        name_sources: settings.name_sources,
    }))
}

/// `--check`: the log needs nothing.
pub fn health(_: &SinkSettings, _: &[Lane]) -> Health {
    Health {
        name: "output".into(),
        result: Ok("the log (stderr)".into()),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Summary {
    created_date_time: Option<String>,
    user_principal_name: Option<String>,
    ip_address: Option<String>,
    location: Option<Location>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Location {
    country_or_region: Option<String>,
    city: Option<String>,
}

/// The original's log line for one record; missing fields print as empty. A record
/// that is not a sign-in object is logged as Graph sent it.
pub fn format_record(record: &str) -> String {
    let Ok(s) = serde_json::from_str::<Summary>(record) else {
        return format!("(not a sign-in object) {record}");
    };
    let location = s.location.unwrap_or_default();
    format!(
        "[{}]: {} - {} - {}/{}",
        s.created_date_time.unwrap_or_default(),
        s.user_principal_name.unwrap_or_default(),
        s.ip_address.unwrap_or_default(),
        location.country_or_region.unwrap_or_default(),
        location.city.unwrap_or_default()
    )
}

/// The log line of a record of a source other than sign-ins.
fn format_other(record: &str, source: &SourceSpec) -> String {
    let Ok(fields) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(record)
    else {
        return format!("(not a {} object) {record}", source.name);
    };
    let text = |name: &str| match fields.get(name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    format!(
        "[{}]: {} - {}",
        text(source.time_field),
        source.headline.map(text).unwrap_or_default(),
        text("id")
    )
}

impl Sink for LogSink {
    fn write(&self, records: &[&str], _keys: Option<&[RecordKey]>) -> Result<Written, SinkError> {
        let failures = logging::write_failures();
        for record in records {
            let line = match self.source.headline {
                None => format_record(record),
                Some(_) => format_other(record, self.source),
            };
            match self.name_sources {
                true => log::info!(target: "msgx::record", "{}: {line}", self.source.name),
                false => log::info!(target: "msgx::record", "{line}"),
            }
        }
        log::logger().flush();
        if logging::write_failures() != failures {
            // Another thread's line may have been the one that failed: failing this
            // page too only delivers it again later.
            return Err(SinkError {
                target: "log (stderr)".into(),
                message: "writing to stderr failed".into(),
            });
        }
        Ok(Written::all(records.len()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_the_original() {
        let record = r#"{"createdDateTime":"2020-03-13T19:15:41.6195833Z","userPrincipalName":"a@b.com","ipAddress":"131.107.159.37","location":{"city":"Redmond","countryOrRegion":"US"}}"#;
        assert_eq!(
            super::format_record(record),
            "[2020-03-13T19:15:41.6195833Z]: a@b.com - 131.107.159.37 - US/Redmond"
        );
        assert_eq!(super::format_record(r#"{"location":null}"#), "[]:  -  - /");
        assert_eq!(super::format_record("42"), "(not a sign-in object) 42");
    }

    #[test]
    fn other_sources_show_time_headline_and_id() {
        let audits = crate::sources::named("directory_audits").unwrap();
        let record = r#"{"id":"Directory_1","activityDateTime":"2026-11-30T12:00:01.5Z","activityDisplayName":"Add member to group"}"#;
        assert_eq!(
            super::format_other(record, audits),
            "[2026-11-30T12:00:01.5Z]: Add member to group - Directory_1"
        );
    }
}
