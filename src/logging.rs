//! Logging to stderr (stdout stays for NDJSON output), with RFC 3339 UTC timestamps.
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

pub fn init(level: LevelFilter) {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .add_filter_allow_str("msgx")
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    let inner = WriteLogger::new(level, config, CountedStderr);
    // Only fails if a logger is already installed, which then keeps logging.
    if log::set_boxed_logger(Box::new(Escaping { inner })).is_ok() {
        log::set_max_level(level);
    }
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
    inner: Box<WriteLogger<CountedStderr>>,
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
}
