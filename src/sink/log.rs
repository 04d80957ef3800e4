//! The log sink: one INFO line per record in the original's format,
//! `[createdDateTime]: userPrincipalName - ipAddress - countryOrRegion/city`. Field
//! values are attacker-controlled (a failed sign-in records what was typed); the logger
//! escapes them, so a record cannot forge a line.

use serde::Deserialize;

use super::{RecordKey, Sink};
use crate::error::SinkError;
use crate::logging;

pub struct LogSink;

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

impl Sink for LogSink {
    fn write(&self, records: &[&str], _keys: Option<&[RecordKey]>) -> Result<usize, SinkError> {
        let failures = logging::write_failures();
        for record in records {
            log::info!(target: "msgx::record", "{}", format_record(record));
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
        Ok(records.len())
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
}
