//! The simulator's answers in Microsoft's formats: Graph's `{"error": {…}}` envelope,
//! the identity platform's OAuth errors with their AADSTS codes, and plain JSON.

use crate::generator::{self, Ticks};
use crate::http::Response;

pub fn json(status: u16, body: String) -> Response {
    Response::new(status, "application/json", body.into_bytes())
}

pub fn graph_error(status: u16, code: &str, message: &str) -> Response {
    let date = time::OffsetDateTime::now_utc();
    json(
        status,
        format!(
            r#"{{"error":{{"code":"{code}","message":{},"innerError":{{"date":"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}","request-id":"{}"}}}}}}"#,
            generator::json_string(message),
            date.year(),
            date.month() as u8,
            date.day(),
            date.hour(),
            date.minute(),
            date.second(),
            request_guid()
        ),
    )
}

pub fn oauth_error(status: u16, error: &str, code: u32, description: &str) -> Response {
    let trace = request_guid();
    json(
        status,
        format!(
            r#"{{"error":"{error}","error_description":{},"error_codes":[{code}],"timestamp":"{}","trace_id":"{trace}","correlation_id":"{}"}}"#,
            generator::json_string(&format!(
                "AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {trace}"
            )),
            generator::timestamp(
                (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 100) as Ticks
            ),
            request_guid()
        ),
    )
}

/// A fresh GUID for a response's `request-id`: unique, not secret, so std's randomly
/// keyed hasher over a counter and the clock is enough.
pub fn request_guid() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let random = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        hasher.write_u128(time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u128);
        hasher.finish()
    };
    generator::guid(random(), random())
}
