//! The crate's error type, one variant per boundary, and the exit codes they map to.
//!
//! Messages carry context (which option and where it came from, which frame, which URL
//! with its paging token elided, which Redis host) and never a secret.

use std::fmt;

mod config;

use crate::exit;
use crate::sources::SourceSpec;
pub use config::{ConfigError, Origin};

/// Why the token endpoint did not give us a token.
#[derive(Debug, Clone)]
pub enum AuthError {
    /// The identity platform answered with an OAuth error: the credentials are wrong.
    Refused {
        status: u16,
        error: String,
        description: String,
    },
    /// The token endpoint could not be reached or answered something unexpected.
    Unavailable { url: String, message: String },
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Refused {
                status,
                error,
                description,
            } => write!(
                f,
                "authentication refused (HTTP {status}, {error}): {description}"
            ),
            AuthError::Unavailable { url, message } => {
                write!(f, "token endpoint {url} unavailable: {message}")
            }
        }
    }
}

impl AuthError {
    /// What to do about it, by the refusal's AADSTS code; `consent_url` is where an
    /// administrator of the tenant grants the application its consent.
    pub fn advice(&self, consent_url: &str) -> String {
        let AuthError::Refused { .. } = self else {
            return "check that the identity platform (login_url, msi_endpoint) is reachable from \
                    here"
                .into();
        };
        match self.aadsts().unwrap_or_default() {
            "7000215" | "7000222" => "the client secret is wrong or expired: create a new one under Certificates & secrets".into(),
            "700016" | "65001" | "7000229" | "500011" => format!(
                "the application is not consented in this tenant (or client_id is wrong): an \
                 administrator of the tenant grants it at {consent_url}"
            ),
            "90002" => "the tenant is unknown: check tenant (and cloud)".into(),
            "700027" => "the certificate does not match: upload client_certificate's certificate to the app registration, or try client_assertion_alg rs256".into(),
            "70021" | "700212" => "no federated credential matches: check the app's federated credential (issuer, subject = system:serviceaccount:<namespace>:<name>)".into(),
            _ => "see the AADSTS code in Microsoft's error reference".into(),
        }
    }

    /// The refusal's AADSTS number (`AADSTS700016: …` → `700016`).
    pub fn aadsts(&self) -> Option<&str> {
        let AuthError::Refused { description, .. } = self else {
            return None;
        };
        let code = description
            .split(':')
            .next()?
            .trim()
            .strip_prefix("AADSTS")?;
        code.bytes().all(|b| b.is_ascii_digit()).then_some(code)
    }
}

/// Why one Graph request (one page) failed.
#[derive(Debug, Clone)]
pub enum GraphError {
    /// Graph answered with a non-success status.
    Status {
        url: String,
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        retry_after: Option<std::time::Duration>,
        /// The source asked, whose permission a 403's hint names.
        source: &'static SourceSpec,
    },
    /// No usable answer: connection refused or reset, timeout, TLS or IO error
    /// (`transient`).
    Transport {
        url: String,
        message: String,
        transient: bool,
    },
    /// One record over the cap (`page_memory_mb`, in bytes): asking again will not
    /// make it smaller.
    TooLarge { url: String, limit: u64 },
    /// A page asked again after its body broke off came back different from the
    /// records of it already delivered.
    Changed { url: String, message: String },
    /// The run's deadline passed before the request could be (re)sent.
    Deadline {
        url: String,
        last: Option<Box<GraphError>>,
    },
    /// The run was asked to stop (SIGTERM/SIGINT) before this page was fetched.
    Interrupted { url: String },
    /// The budget shared with other processes is paused (a 429 one of them got) past
    /// the run's deadline: the pause's key, how long it lasts, what set it.
    Paused {
        url: String,
        key: String,
        left: std::time::Duration,
        by: String,
    },
    /// A 200 whose body is not a Graph collection page.
    Malformed { url: String, message: String },
    /// A paging link that must not be followed.
    UnsafeNextLink { url: String, reason: String },
    /// No token to send.
    Auth(AuthError),
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::Status {
                url,
                status,
                code,
                message,
                request_id,
                source,
                ..
            } => {
                write!(f, "GET {url}: HTTP {status} {code}: {message}")?;
                if let Some(id) = request_id {
                    write!(f, " (request-id {id})")?;
                }
                match forbidden_hint(*status, code, source) {
                    Some(hint) => write!(f, "; {hint}"),
                    None => Ok(()),
                }
            }
            GraphError::Transport { url, message, .. } => write!(f, "GET {url}: {message}"),
            GraphError::TooLarge { url, limit } => write!(
                f,
                "GET {url}: a record is larger than page_memory_mb ({} MiB)",
                limit >> 20
            ),
            GraphError::Changed { url, message } => write!(f, "GET {url}: {message}"),
            GraphError::Deadline { url, last } => {
                write!(f, "GET {url}: run deadline reached")?;
                match last {
                    Some(last) => write!(f, "; last error: {last}"),
                    None => Ok(()),
                }
            }
            GraphError::Interrupted { url } => write!(f, "GET {url}: interrupted by a signal"),
            GraphError::Paused { url, key, left, by } => write!(
                f,
                "GET {url}: the request budget shared with other processes is paused ({key}, \
                 {:.0} s more, set by {by}) past this run's deadline",
                left.as_secs_f64()
            ),
            GraphError::Malformed { url, message } => {
                write!(f, "GET {url}: malformed page: {message}")
            }
            GraphError::UnsafeNextLink { url, reason } => {
                write!(f, "refusing to follow @odata.nextLink {url}: {reason}")
            }
            GraphError::Auth(e) => e.fmt(f),
        }
    }
}

impl GraphError {
    /// Worth another attempt at the same URL: throttling, server errors, network
    /// failures, a truncated or garbled page, an unreachable token endpoint.
    pub fn is_transient(&self) -> bool {
        match self {
            GraphError::Status { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
            GraphError::Transport { transient, .. } => *transient,
            GraphError::Malformed { .. } => true,
            GraphError::Auth(AuthError::Unavailable { .. }) => true,
            GraphError::Auth(AuthError::Refused { .. })
            | GraphError::UnsafeNextLink { .. }
            | GraphError::TooLarge { .. }
            | GraphError::Changed { .. }
            | GraphError::Deadline { .. }
            | GraphError::Paused { .. }
            | GraphError::Interrupted { .. } => false,
        }
    }

    /// Graph's verdict on a token it no longer accepts: worth one retry with a new one.
    pub fn is_expired_token(&self) -> bool {
        matches!(self, GraphError::Status { status: 401, code, .. } if code == "InvalidAuthenticationToken")
    }

    /// Graph or the identity platform refused the credentials or the application's
    /// rights: nothing in this run will change that.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            GraphError::Auth(AuthError::Refused { .. }) | GraphError::Status { status: 403, .. }
        )
    }

    pub fn is_throttled(&self) -> bool {
        matches!(self, GraphError::Status { status: 429, .. })
    }

    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            GraphError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What to do about a 403 from `source`'s resource.
fn forbidden_hint(status: u16, code: &str, source: &SourceSpec) -> Option<String> {
    let (permission, licence) = (source.permission, source.licence);
    match (status, code) {
        (403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant") => Some(format!(
            "the tenant needs {licence} to read these logs through Graph"
        )),
        (403, "Authorization_RequestDenied") => Some(format!(
            "grant the application permission {permission} (admin consent) and make sure \
             it can read the directory"
        )),
        (403, _) => Some(format!(
            "Graph refused the application: it needs {permission} with admin consent \
             (and the tenant {licence})"
        )),
        _ => None,
    }
}

impl From<AuthError> for GraphError {
    fn from(e: AuthError) -> Self {
        GraphError::Auth(e)
    }
}

/// Why a sink could not take a page.
#[derive(Debug, Clone)]
pub struct SinkError {
    /// Where the records were going: `redis 127.0.0.1:6379`, a file path, `stdout`.
    pub target: String,
    pub message: String,
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.target, self.message)
    }
}

/// Errors that end a run before or outside the per-frame work.
#[derive(Debug)]
pub enum Error {
    Config(ConfigError),
    Auth(AuthError),
    Sink(SinkError),
    /// Setting up the run failed (thread pool, output file).
    Setup(String),
    /// SIGTERM/SIGINT arrived before the export began; carries the exit code.
    Interrupted(u8),
    /// The run state (watermark, lock) could not be read or written.
    State(String),
    /// The stored state was read and is not what a run can have written: the repair
    /// is named.
    DamagedState(String),
    /// Another run holds the lock.
    Locked(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => exit::USAGE,
            Error::Auth(AuthError::Refused { .. }) => exit::AUTH,
            Error::Auth(AuthError::Unavailable { .. }) | Error::Sink(_) | Error::Setup(_) => {
                exit::INCOMPLETE
            }
            Error::Interrupted(code) => *code,
            Error::State(_) | Error::DamagedState(_) => exit::INCOMPLETE,
            Error::Locked(_) => exit::LOCKED,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => e.fmt(f),
            Error::Auth(e) => e.fmt(f),
            Error::Sink(e) => e.fmt(f),
            Error::Setup(message) => f.write_str(message),
            Error::Interrupted(_) => f.write_str("interrupted by a signal before the export began"),
            Error::State(message) | Error::DamagedState(message) | Error::Locked(message) => {
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        Error::Auth(e)
    }
}

impl From<SinkError> for Error {
    fn from(e: SinkError) -> Self {
        Error::Sink(e)
    }
}
