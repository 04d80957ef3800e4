//! `msgx-sim`: a Microsoft Graph simulator for tests, the demo and benchmarks.
//!
//! It serves the client-credentials token endpoint and `GET /v1.0/auditLogs/signIns`
//! with deterministic synthetic sign-ins, plus two endpoints of its own:
//! `GET /_sim/records?$filter=…` (every record in a range, oldest first, as NDJSON: the
//! oracle tests compare against) and `GET /_sim/stats` (request counts). Loopback only.

mod generator;
mod odata;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argh::FromArgs;
use tiny_http::{Header, Method, Request, Response, Server};

use generator::{Generator, TICKS_PER_SECOND, Ticks};
use odata::{Bounds, Cursor};

/// Microsoft Graph simulator for msgx-once (binds 127.0.0.1 only).
#[derive(FromArgs)]
struct Args {
    /// port to listen on; 0 picks a free one (default 0)
    #[argh(option, default = "0")]
    port: u16,
    /// write the bound port to this file once listening
    #[argh(option)]
    port_file: Option<String>,
    /// tenant the token endpoint accepts (default sim-tenant)
    #[argh(option, default = "String::from(\"sim-tenant\")")]
    tenant: String,
    /// client id the token endpoint accepts (default sim-client)
    #[argh(option, default = "String::from(\"sim-client\")")]
    client_id: String,
    /// client secret the token endpoint accepts (default sim-secret)
    #[argh(option, default = "String::from(\"sim-secret\")")]
    client_secret: String,
    /// seed of the synthetic sign-ins (default 1)
    #[argh(option, default = "1")]
    seed: u64,
    /// mean sign-ins per second (default 5)
    #[argh(option, default = "5.0")]
    rate: f64,
    /// lifetime of issued tokens in seconds (default 3599)
    #[argh(option, default = "3599")]
    token_ttl: u64,
    /// request-handling threads (default 4)
    #[argh(option, default = "4")]
    threads: usize,
    /// answer every K-th sign-ins request with 429 (0: never)
    #[argh(option, default = "0")]
    every_429: u64,
    /// seconds of the Retry-After sent with those 429s (default 1)
    #[argh(option, default = "1")]
    retry_after: u64,
    /// answer every K-th sign-ins request with 503 (0: never)
    #[argh(option, default = "0")]
    every_503: u64,
}

/// Injected failures: every K-th sign-ins request gets one.
struct Faults {
    every_429: u64,
    retry_after: u64,
    every_503: u64,
    requests: AtomicU64,
}

impl Faults {
    fn next(&self) -> Option<Reply> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let hit = |k: u64| k > 0 && n.is_multiple_of(k);
        if hit(self.every_429) {
            let reply = graph_error(429, "TooManyRequests", "Too many requests.");
            return Some(reply.with_header(header("Retry-After", &self.retry_after.to_string())));
        }
        if hit(self.every_503) {
            return Some(graph_error(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
            ));
        }
        None
    }
}

/// Graph keeps sign-ins 30 days at most; a query without a lower bound starts there.
const RETENTION: i64 = 30 * 86_400 * TICKS_PER_SECOND;

struct Sim {
    generator: Generator,
    tenant: String,
    client_id: String,
    client_secret: String,
    token_ttl: Duration,
    base_url: String,
    tokens: Mutex<HashMap<String, Instant>>,
    stats: Mutex<BTreeMap<String, u64>>,
    faults: Faults,
}

type Reply = Response<std::io::Cursor<Vec<u8>>>;

fn main() {
    let args: Args = argh::from_env();
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        eprintln!("msgx-sim: --rate must be a non-negative number");
        std::process::exit(2);
    }
    let server = match Server::http(("127.0.0.1", args.port)) {
        Ok(server) => Arc::new(server),
        Err(e) => {
            eprintln!("msgx-sim: cannot listen on 127.0.0.1:{}: {e}", args.port);
            std::process::exit(1);
        }
    };
    let port = server
        .server_addr()
        .to_ip()
        .map(|a| a.port())
        .unwrap_or(args.port);
    let sim = Arc::new(Sim {
        generator: Generator {
            seed: args.seed,
            rate: args.rate,
        },
        tenant: args.tenant,
        client_id: args.client_id,
        client_secret: args.client_secret,
        token_ttl: Duration::from_secs(args.token_ttl),
        base_url: format!("http://127.0.0.1:{port}"),
        tokens: Mutex::default(),
        stats: Mutex::default(),
        faults: Faults {
            every_429: args.every_429,
            retry_after: args.retry_after,
            every_503: args.every_503,
            requests: AtomicU64::new(0),
        },
    });
    if let Some(path) = &args.port_file
        && let Err(e) = std::fs::write(path, format!("{port}\n"))
    {
        eprintln!("msgx-sim: cannot write {path}: {e}");
        std::process::exit(1);
    }
    println!("msgx-sim listening on {}", sim.base_url);
    let workers: Vec<_> = (0..args.threads.max(1))
        .map(|_| {
            let (server, sim) = (server.clone(), sim.clone());
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    sim.handle(request);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

impl Sim {
    fn handle(&self, mut request: Request) {
        let url = request.url().to_string();
        let path = url
            .split('?')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let query = parse_query(&url);
        let reply = match (request.method(), path.as_str()) {
            (Method::Post, p) if p.ends_with("/oauth2/v2.0/token") => {
                let tenant = p
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let mut body = String::new();
                let read = request.as_reader().take(1 << 16).read_to_string(&mut body);
                match read {
                    Ok(_) => self.token(&tenant, &body),
                    Err(_) => graph_error(400, "BadRequest", "unreadable body"),
                }
            }
            (Method::Get, "/v1.0/auditlogs/signins") => self.sign_ins(&request, &query),
            (Method::Get, "/_sim/records") => self.oracle(&query),
            (Method::Get, "/_sim/stats") => self.stats(),
            _ => graph_error(
                404,
                "Request_ResourceNotFound",
                "Resource not found for the segment.",
            ),
        };
        self.count(&path, reply.status_code().0);
        let client_request_id = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("client-request-id"))
            .map(|h| h.value.to_string());
        let mut reply = reply.with_header(header("request-id", &request_guid()));
        if let Some(id) = client_request_id {
            reply = reply.with_header(header("client-request-id", &id));
        }
        let _ = request.respond(reply);
    }

    fn count(&self, path: &str, status: u16) {
        let kind = if path.ends_with("/token") {
            "token"
        } else if path.starts_with("/v1.0/") {
            "graph"
        } else {
            "sim"
        };
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        *stats.entry(format!("{kind}_{status}")).or_default() += 1;
    }

    fn token(&self, tenant: &str, body: &str) -> Reply {
        let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        if tenant != self.tenant {
            return oauth_error(
                400,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
            );
        }
        if get("grant_type") != "client_credentials" {
            return oauth_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            );
        }
        if get("client_id") != self.client_id {
            return oauth_error(
                400,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{}' was not found in the directory '{tenant}'.",
                    get("client_id")
                ),
            );
        }
        if get("client_secret") != self.client_secret {
            return oauth_error(
                401,
                "invalid_client",
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    self.client_id
                ),
            );
        }
        if get("scope") != format!("{}/.default", self.base_url) {
            return oauth_error(
                400,
                "invalid_scope",
                70011,
                "The provided value for the input parameter 'scope' is not valid.",
            );
        }
        let token = format!("sim.{}.{}", request_guid(), request_guid());
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, expiry| *expiry > Instant::now());
        tokens.insert(token.clone(), Instant::now() + self.token_ttl);
        *self
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry("tokens_issued".into())
            .or_default() += 1;
        json(
            200,
            format!(
                r#"{{"token_type":"Bearer","expires_in":{ttl},"ext_expires_in":{ttl},"access_token":"{token}"}}"#,
                ttl = self.token_ttl.as_secs()
            ),
        )
    }

    fn authorized(&self, request: &Request) -> bool {
        let Some(header) = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("authorization"))
        else {
            return false;
        };
        let Some(token) = header.value.as_str().strip_prefix("Bearer ") else {
            return false;
        };
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    fn sign_ins(&self, request: &Request, query: &HashMap<String, String>) -> Reply {
        if !self.authorized(request) {
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            );
        }
        if let Some(fault) = self.faults.next() {
            return fault;
        }
        let top = match query.get("$top").map(|t| t.parse::<usize>()) {
            None => 1000,
            Some(Ok(top)) if (1..=1000).contains(&top) => top,
            Some(_) => {
                return graph_error(
                    400,
                    "BadRequest",
                    "Invalid $top value: must be between 1 and 1000.",
                );
            }
        };
        let bounds = match self.bounds(query) {
            Ok(bounds) => bounds,
            Err(message) => return graph_error(400, "BadRequest", &message),
        };
        let cursor = match query.get("$skiptoken").map(|t| Cursor::decode(t)) {
            None => None,
            Some(Some(cursor)) => Some(cursor),
            Some(None) => return graph_error(400, "BadRequest", "Invalid skip token."),
        };
        let (records, next) = odata::page(&self.generator, bounds, cursor, top);
        let mut body = format!(
            r#"{{"@odata.context":"{}/v1.0/$metadata#auditLogs/signIns","value":["#,
            self.base_url
        );
        body.push_str(&records.join(","));
        body.push(']');
        if let Some(next) = next {
            let mut link = format!("{}/v1.0/auditLogs/signins?", self.base_url);
            if let Some(filter) = query.get("$filter") {
                link.push_str("$filter=");
                link.push_str(
                    &url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>(),
                );
                link.push('&');
            }
            link.push_str(&format!("$top={top}&$skiptoken={}", next.encode()));
            body.push_str(&format!(r#","@odata.nextLink":"{link}""#));
        }
        body.push('}');
        json(200, body)
    }

    /// The query's bounds, clipped to what exists: nothing after now, nothing older
    /// than the retention.
    fn bounds(&self, query: &HashMap<String, String>) -> Result<Bounds, String> {
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 100) as Ticks;
        let all = Bounds {
            lo: now - RETENTION,
            hi: now,
        };
        match query.get("$filter") {
            Some(filter) => odata::parse_filter(filter, all),
            None => Ok(all),
        }
    }

    fn oracle(&self, query: &HashMap<String, String>) -> Reply {
        match self.bounds(query) {
            Ok(bounds) => {
                let mut body = odata::all(&self.generator, bounds).join("\n");
                if !body.is_empty() {
                    body.push('\n');
                }
                Response::from_data(body.into_bytes())
                    .with_header(header("Content-Type", "application/x-ndjson"))
            }
            Err(message) => graph_error(400, "BadRequest", &message),
        }
    }

    fn stats(&self) -> Reply {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let fields: Vec<String> = stats.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        json(200, format!("{{{}}}", fields.join(",")))
    }
}

fn parse_query(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap_or_else(|_| {
        Header::from_bytes(&b"X-Invalid"[..], &b"1"[..]).expect("static header")
    })
}

fn json(status: u16, body: String) -> Reply {
    Response::from_data(body.into_bytes())
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"))
}

fn graph_error(status: u16, code: &str, message: &str) -> Reply {
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

fn oauth_error(status: u16, error: &str, code: u32, description: &str) -> Reply {
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

fn request_guid() -> String {
    msgx::ids::guid()
}
