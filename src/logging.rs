//! Logging to stderr (stdout stays for NDJSON output), with RFC 3339 UTC timestamps.
//!
//! Only this crate's records pass: ureq logs requests unredacted at trace level, and
//! its Authorization header must not reach a log at any level.

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};

pub fn init(level: LevelFilter) {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .add_filter_allow_str("msgx")
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    // Only fails if a logger is already installed, which then keeps logging.
    let _ = WriteLogger::init(level, config, std::io::stderr());
}
