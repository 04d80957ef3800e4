//! The simulator's answers in Microsoft's formats: Graph's `{"error": {…}}` envelope
//! (with `innerError`'s `date`, `request-id` — the same as the response's `request-id`
//! header — and `client-request-id`, the client's or else the request id, as Graph
//! answers), the throttling docs' 429 body, the identity platform's OAuth errors with
//! their AADSTS codes, and plain JSON.

use std::cell::RefCell;

use crate::generator::{self, Ticks};
use crate::http::Response;

/// The request being answered on this thread: (request-id, client-request-id).
#[derive(Clone, Default)]
pub struct RequestIds {
    pub request_id: String,
    pub client_request_id: String,
}

thread_local! {
    static CURRENT: RefCell<RequestIds> = RefCell::default();
}

/// Starts answering a request on this thread: a fresh `request-id`, and the client's
/// `client-request-id` (or that id when the client sent none).
pub fn begin_request(client_request_id: Option<&str>) -> RequestIds {
    let request_id = request_guid();
    let ids = RequestIds {
        client_request_id: client_request_id.map_or_else(|| request_id.clone(), str::to_string),
        request_id,
    };
    CURRENT.with(|current| *current.borrow_mut() = ids.clone());
    ids
}

fn current() -> RequestIds {
    CURRENT.with(|current| current.borrow().clone())
}

/// `innerError.date` as Graph writes it: no fraction, no zone.
fn inner_date() -> String {
    let date = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        date.year(),
        date.month() as u8,
        date.day(),
        date.hour(),
        date.minute(),
        date.second()
    )
}

pub fn json(status: u16, body: String) -> Response {
    Response::new(status, "application/json", body.into_bytes())
}

pub fn graph_error(status: u16, code: &str, message: &str) -> Response {
    let ids = current();
    json(
        status,
        format!(
            r#"{{"error":{{"code":"{code}","message":{},"innerError":{{"date":"{}","request-id":"{}","client-request-id":"{}"}}}}}}"#,
            generator::json_string(message),
            inner_date(),
            ids.request_id,
            ids.client_request_id
        ),
    )
}

/// A 429 as Graph's throttling guidance shows it, with `Retry-After` when given
/// (`retry_after` as sent: whole or fractional seconds).
pub fn too_many_requests(retry_after: Option<&str>) -> Response {
    let ids = current();
    let response = json(
        429,
        format!(
            r#"{{"error":{{"code":"TooManyRequests","innerError":{{"code":"429","date":"{}","message":"Please retry after","request-id":"{}","status":"429","client-request-id":"{}"}},"message":"Please retry again later."}}}}"#,
            inner_date(),
            ids.request_id,
            ids.client_request_id
        ),
    );
    match retry_after {
        Some(value) => response.with_header("Retry-After", value),
        None => response,
    }
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
