//! Records a hostile or broken Graph could send, for tests of what msgx-once does with
//! them: `--damage KIND` breaks every 25th sign-in's id or createdDateTime (or makes it
//! no object at all), `--hostile` puts attacker-typed text — line breaks, a forged log
//! line, terminal escapes, U+2028 — into the user name and city of failed sign-ins, as
//! a failed sign-in records whatever was typed. Both show in the oracle too, so a test
//! compares exports with exactly what the simulator served.

/// What `--damage` does to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    NoId,
    NullId,
    NumberId,
    NoCreated,
    BadCreated,
    NotObject,
}

impl Damage {
    pub fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "no_id" => Damage::NoId,
            "null_id" => Damage::NullId,
            "number_id" => Damage::NumberId,
            "no_created" => Damage::NoCreated,
            "bad_created" => Damage::BadCreated,
            "not_object" => Damage::NotObject,
            _ => {
                return Err(format!(
                    "--damage {value}: expected no_id, null_id, number_id, no_created, \
                     bad_created or not_object"
                ));
            }
        })
    }

    /// `record` (rendered with `"id"` and `"createdDateTime"` first) damaged.
    pub fn apply(self, record: String) -> String {
        let Some(id_end) = record.find("\",\"createdDateTime\":\"") else {
            return record;
        };
        let id = &record[r#"{"id":""#.len()..id_end];
        let created_start = id_end + 2;
        let created_end = record[created_start..]
            .find("\",")
            .map_or(record.len(), |i| created_start + i + 2);
        let rest = &record[created_end..];
        match self {
            Damage::NoId => format!("{{{}", &record[created_start..]),
            Damage::NullId => format!("{{\"id\":null,{}", &record[created_start..]),
            Damage::NumberId => {
                let number = id
                    .bytes()
                    .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
                format!("{{\"id\":{},{}", number >> 12, &record[created_start..])
            }
            Damage::NoCreated => format!("{{\"id\":\"{id}\",{rest}"),
            Damage::BadCreated => {
                format!("{{\"id\":\"{id}\",\"createdDateTime\":\"yesterday\",{rest}")
            }
            Damage::NotObject => format!("[\"damaged\",\"{id}\"]"),
        }
    }
}

/// A user name an attacker typed into a sign-in page.
pub const TYPED_USER: &str =
    "evil\n2026-01-01T00:00:00Z [ERROR] forged line\r\u{1b}[2J\u{1b}[31m\u{2028}\u{85}";
/// A city that tries to forge the run's summary line.
pub const TYPED_CITY: &str = "X\n2026-01-01T00:00:00Z [INFO] summary: window [forged] frames ok 9";
