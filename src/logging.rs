//! Logging to stderr (stdout stays for NDJSON output), with RFC 3339 UTC timestamps:
//! text lines (`log_format text`, the default) or one JSON object per line
//! (`log_format json`: `ts`, `level`, `msg` and the record's fields, e.g. the
//! summary's figures).
//!
//! Only this crate's records pass: ureq logs requests unredacted at trace level, and
//! its Authorization header must not reach a log at any level.
//!
//! Every message is [`escape`]d before it is written: sign-in fields, Graph's error
//! bodies and Redis errors come from outside (a failed sign-in records whatever was
//! typed as the user name), and one event must stay one line that nobody can forge.
//! Failed writes to stderr are counted, so the log sink can tell that its records did
//! not get out.

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use log::{LevelFilter, Log, Metadata, Record};
use simplelog::{ConfigBuilder, WriteLogger};

static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(level: LevelFilter, format: LogFormat) {
    let inner: Box<dyn Log> = match format {
        LogFormat::Text => {
            let config = ConfigBuilder::new()
                .set_time_format_rfc3339()
                .add_filter_allow_str("msgx")
                .set_thread_level(LevelFilter::Off)
                .set_target_level(LevelFilter::Off)
                .set_location_level(LevelFilter::Off)
                .build();
            WriteLogger::new(level, config, CountedStderr)
        }
        LogFormat::Json => Box::new(JsonLogger { level }),
    };
    // Only fails if a logger is already installed, which then keeps logging.
    if log::set_boxed_logger(Box::new(Escaping { inner })).is_ok() {
        log::set_max_level(level);
    }
}

/// Logs `message` at `level` with `fields` (text: the message; JSON: the fields too).
pub fn log_with_fields(level: log::Level, message: &str, fields: &[(&'static str, String)]) {
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    log::logger().log(
        &Record::builder()
            .level(level)
            .target("msgx")
            .args(format_args!("{message}"))
            .key_values(&fields.as_slice())
            .build(),
    );
}

/// `log_format json`: one object per line.
struct JsonLogger {
    level: LevelFilter,
}

impl Log for JsonLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level && metadata.target().starts_with("msgx")
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut object = serde_json::Map::new();
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        object.insert("ts".into(), ts.into());
        object.insert("level".into(), record.level().as_str().into());
        object.insert("msg".into(), record.args().to_string().into());
        let mut fields = Fields(&mut object);
        let _ = record.key_values().visit(&mut fields);
        let mut line = serde_json::Value::Object(object).to_string();
        line.push('\n');
        let _ = CountedStderr.write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = CountedStderr.flush();
    }
}

/// Collects a record's key-values into the JSON object (escaped like the message).
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let text = value.to_string();
        self.0.insert(key.as_str().to_string(), json_value(&text));
        Ok(())
    }
}

/// A field as JSON: a number when it is one (`"records": 312`, `"seconds": 0.076`),
/// else the escaped text.
fn json_value(text: &str) -> serde_json::Value {
    if let Ok(n) = text.parse::<i64>() {
        return n.into();
    }
    let decimal = text.contains('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    if let Some(n) = decimal
        .then(|| text.parse::<f64>().ok())
        .flatten()
        .and_then(serde_json::Number::from_f64)
    {
        return n.into();
    }
    escape(text).into_owned().into()
}

/// The configuration's errors on stderr, before logging is set up: `msgx-once: error:
/// …` lines, or JSON lines of level ERROR.
pub fn print_errors(lines: &[String], json: bool) {
    for line in lines {
        let line = format!("msgx-once: error: {line}");
        // What the user typed is echoed: escaped, so it cannot start a line of its own
        // or colour the terminal (JSON escapes it in `json_line`).
        match json {
            true => eprintln!("{}", json_line(log::Level::Error, &line)),
            false => eprintln!("{}", escape(&line)),
        }
    }
}

/// One JSON log line of `level` and `msg`.
fn json_line(level: log::Level, msg: &str) -> String {
    let ts = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut object = serde_json::Map::new();
    object.insert("ts".into(), ts.into());
    object.insert("level".into(), level.as_str().into());
    object.insert("msg".into(), escape(msg).into_owned().into());
    serde_json::Value::Object(object).to_string()
}

/// How many writes to stderr have failed in this process so far.
pub fn write_failures() -> u64 {
    WRITE_FAILURES.load(Ordering::SeqCst)
}

/// `text` with every control character, C1 control, line or paragraph separator and
/// bidirectional override shown as an escape (`\n`, `\r`, `\t`, `\u{1b}`).
pub fn escape(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.contains(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

struct Escaping {
    inner: Box<dyn Log>,
}

impl Log for Escaping {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = record.args().to_string();
        self.inner.log(
            &Record::builder()
                .metadata(record.metadata().clone())
                .args(format_args!("{}", escape(&text)))
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .target(record.target())
                .key_values(record.key_values())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// stderr, counting the writes that fail (simplelog drops write errors).
struct CountedStderr;

impl Write for CountedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write(buf).inspect_err(|_| {
            WRITE_FAILURES.fetch_add(1, Ordering::SeqCst);
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush().inspect_err(|_| {
            WRITE_FAILURES.fetch_add(1, Ordering::SeqCst);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn one_event_stays_one_line() {
        assert_eq!(escape("plain é text"), "plain é text");
        assert_eq!(
            escape("a\nb\r\x1b[31m\u{85}\u{2028}\u{202e}\tc"),
            "a\\nb\\r\\u{1b}[31m\\u{85}\\u{2028}\\u{202e}\\tc"
        );
    }

    #[test]
    fn json_lines_carry_only_this_crates_records() {
        use log::Log;
        let logger = super::JsonLogger {
            level: log::LevelFilter::Info,
        };
        assert!(
            logger.enabled(
                &log::Metadata::builder()
                    .level(log::Level::Info)
                    .target("msgx::run")
                    .build()
            )
        );
        assert!(
            !logger.enabled(
                &log::Metadata::builder()
                    .level(log::Level::Info)
                    .target("ureq")
                    .build()
            )
        );
    }
}
