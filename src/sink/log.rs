//! The log sink: one INFO line per record in the original's format,
//! `[createdDateTime]: userPrincipalName - ipAddress - countryOrRegion/city`.

use serde::Deserialize;

use super::Sink;
use crate::error::SinkError;

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

/// The original's log line for one record; missing fields print as empty.
pub fn format_record(record: &str) -> Result<String, serde_json::Error> {
    let s: Summary = serde_json::from_str(record)?;
    let location = s.location.unwrap_or_default();
    Ok(format!(
        "[{}]: {} - {} - {}/{}",
        s.created_date_time.unwrap_or_default(),
        s.user_principal_name.unwrap_or_default(),
        s.ip_address.unwrap_or_default(),
        location.country_or_region.unwrap_or_default(),
        location.city.unwrap_or_default()
    ))
}

impl Sink for LogSink {
    fn write(&self, records: &[&str]) -> Result<usize, SinkError> {
        for record in records {
            let line = format_record(record).map_err(|e| SinkError {
                target: "log".into(),
                message: format!("record is not a sign-in object: {e}"),
            })?;
            log::info!(target: "msgx::record", "{line}");
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
            super::format_record(record).unwrap(),
            "[2020-03-13T19:15:41.6195833Z]: a@b.com - 131.107.159.37 - US/Redmond"
        );
        assert_eq!(
            super::format_record(r#"{"location":null}"#).unwrap(),
            "[]:  -  - /"
        );
    }
}
