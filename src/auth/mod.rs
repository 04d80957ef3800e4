//! Tokens for Graph, shared by all threads, from whichever credential the
//! configuration names — one file per kind behind [`Grant`]: a client [`secret`], a
//! [`certificate`] (a signed client assertion), a [`workload`] identity's federated
//! token, or a [`managed`] identity's endpoint.
//!
//! One token serves the whole run; it is refreshed a margin before `expires_in` runs
//! out (real tokens live 60-90 minutes, test tokens seconds), and thrown away when
//! Graph says it is no longer valid. Every token request — the first included — is
//! retried on transient failures (network, 5xx, 429) like Graph requests; a refusal
//! (AADSTS) is final. Secrets, assertions, federated tokens and the tokens themselves
//! are [`Secret`]s.

mod certificate;
mod credential;
mod jwt;
mod managed;
mod secret;
mod workload;

pub use certificate::AssertionAlg;
pub use credential::{Credential, ManagedEndpoint};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::error::{AuthError, Error};
use crate::retry::{RetryOptions, parse_http_date, parse_retry_after};
use crate::secret::Secret;
use crate::transport::{HttpResponse, HttpTransport, TransportError};

/// One kind of credential: what a token request sends.
trait Grant: Send + Sync {
    /// Where tokens are asked for (for messages too).
    fn url(&self) -> &str;

    /// The request for a token, made afresh each time (an assertion is signed anew, a
    /// federated token file read again).
    fn request(&self) -> Result<TokenRequest, AuthError>;
}

/// A token request: the identity platform's form POST, or a managed identity's GET.
pub struct TokenRequest {
    url: String,
    method: Method,
}

enum Method {
    /// Form fields; values are secrets where they must be.
    Post(Vec<(&'static str, Secret)>),
    /// Headers.
    Get(Vec<(&'static str, Secret)>),
}

impl TokenRequest {
    /// The client-credentials grant at `url` for `client_id` and `scope`, proven by
    /// `proof`: the client secret, or a client assertion (signed, or federated).
    fn client_credentials(
        url: &str,
        client_id: &str,
        scope: &str,
        proof: Vec<(&'static str, Secret)>,
    ) -> Self {
        let mut form = vec![("client_id", Secret::new(client_id))];
        form.extend(proof);
        form.push(("scope", Secret::new(scope)));
        form.push(("grant_type", Secret::new("client_credentials")));
        TokenRequest {
            url: url.to_string(),
            method: Method::Post(form),
        }
    }
}

/// A client assertion's form fields: the jwt-bearer type and the assertion.
fn assertion(assertion: Secret) -> Vec<(&'static str, Secret)> {
    vec![
        ("client_assertion_type", Secret::new(jwt::ASSERTION_TYPE)),
        ("client_assertion", assertion),
    ]
}

/// The token endpoint of the identity platform for `tenant`.
fn token_url(login_url: &url::Url, tenant: &str) -> String {
    format!(
        "{}/{tenant}/oauth2/v2.0/token",
        login_url.as_str().trim_end_matches('/')
    )
}

/// A bearer token, cheap to clone and never printed.
#[derive(Clone, Debug)]
pub struct Bearer(Arc<Secret>);

impl Bearer {
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0.expose())
    }

    /// The tenant GUID the token was issued in (its `tid` claim), when the token is a
    /// JWT that names one. Only the claim is read and kept, never the token.
    pub fn tenant_id(&self) -> Option<String> {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = self.0.expose().split('.').nth(1)?;
        let json = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
        let tid = claims.get("tid")?.as_str()?;
        crate::ids::is_guid(tid).then(|| tid.to_ascii_lowercase())
    }
}

struct Cached {
    bearer: Bearer,
    refresh_at: Instant,
}

pub struct TokenSource {
    transport: Arc<dyn HttpTransport>,
    grant: Box<dyn Grant>,
    /// Where tokens come from, for messages.
    endpoint: String,
    retry: RetryOptions,
    cached: Mutex<Option<Cached>>,
    /// The identity platform's clock (`Date` of the last token response) and when it
    /// was read.
    server_clock: Mutex<Option<(SystemTime, Instant)>>,
}

/// How long a token is used when `expires_in` is below a second (0, negative): such an
/// endpoint must not be asked again for every page. A short but real lifetime (tests
/// use 2 s) is honoured as given, so a token is never kept past its end.
const MIN_LIFETIME: Duration = Duration::from_secs(5);
/// Longest: Entra's tokens live 60-90 minutes; anything above a day is a broken answer.
const MAX_LIFETIME: Duration = Duration::from_secs(86_400);

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; the v1 endpoint and managed identities send it as a string, so both
    /// are taken.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    /// App Service's managed identity sends the expiry (Unix seconds) instead.
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// The hosts a token is asked of and for: the identity platform (`login_url`) and
/// Graph (`graph_url`, whose `.default` scope a token is for).
#[derive(Debug, Clone)]
pub struct Hosts {
    pub graph: url::Url,
    pub login: url::Url,
}

impl TokenSource {
    /// The token source of `credential` (the configured one, or its `in_tenant` form): Graph's `.default` scope (managed
    /// identities: its resource), retried within `retry`. A certificate that cannot be
    /// read is an error here, before anything else happens.
    pub fn new(
        transport: Arc<dyn HttpTransport>,
        hosts: &Hosts,
        credential: &Credential,
        retry: RetryOptions,
    ) -> Result<Self, Error> {
        let resource = hosts.graph.as_str().trim_end_matches('/').to_string();
        let scope = format!("{resource}/.default");
        let grant: Box<dyn Grant> = match credential {
            Credential::Secret {
                tenant,
                client_id,
                secret,
            } => Box::new(secret::ClientSecret {
                url: token_url(&hosts.login, tenant),
                client_id: client_id.clone(),
                secret: secret.clone(),
                scope,
            }),
            Credential::Certificate {
                tenant,
                client_id,
                certificate,
                key,
                alg,
            } => Box::new(certificate::ClientCertificate::load(
                token_url(&hosts.login, tenant),
                client_id.clone(),
                scope,
                certificate,
                key.as_deref(),
                *alg,
            )?),
            Credential::WorkloadIdentity {
                tenant,
                client_id,
                token_file,
            } => Box::new(workload::WorkloadIdentity {
                url: token_url(&hosts.login, tenant),
                client_id: client_id.clone(),
                token_file: token_file.clone(),
                scope,
            }),
            Credential::ManagedIdentity {
                client_id,
                endpoint,
            } => Box::new(managed::ManagedIdentity::new(
                endpoint,
                client_id.clone(),
                resource,
            )),
        };
        let endpoint = grant.url().to_string();
        Ok(TokenSource {
            transport,
            grant,
            endpoint: crate::transport::display_url(&endpoint),
            retry,
            cached: Mutex::new(None),
            server_clock: Mutex::new(None),
        })
    }

    /// Now, by the identity platform's clock, if a token response said (Microsoft's
    /// clock: a host clock that runs ahead must not make a run ask for the future).
    pub fn server_now(&self) -> Option<SystemTime> {
        let clock = self.server_clock.lock().unwrap_or_else(|p| p.into_inner());
        clock.and_then(|(date, read_at)| date.checked_add(read_at.elapsed()))
    }

    /// A token valid for a while yet, fetched if the cached one is due for refresh.
    pub fn bearer(&self) -> Result<Bearer, AuthError> {
        // Holding the lock while fetching makes the other threads wait for this token
        // instead of each asking for one of their own.
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.bearer.clone());
        }
        let fresh = self.fetch()?;
        let bearer = fresh.bearer.clone();
        *cached = Some(fresh);
        Ok(bearer)
    }

    /// Forgets `stale` (Graph refused it), unless another thread already replaced it.
    pub fn invalidate(&self, stale: &Bearer) {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.bearer.0, &stale.0))
        {
            *cached = None;
        }
    }

    /// A token, retrying transient failures (network, 5xx, 429: a 429's Retry-After
    /// is honoured) with backoff, never past the deadline; a refusal is final.
    fn fetch(&self) -> Result<Cached, AuthError> {
        let mut attempt = 0;
        loop {
            let (error, retry_after) = match self.fetch_once() {
                Ok(cached) => return Ok(cached),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transient(e, retry_after)) => (e, retry_after),
            };
            if attempt >= self.retry.max_retries {
                return Err(error);
            }
            let wait = retry_after.unwrap_or_else(|| self.retry.backoff.delay(attempt));
            attempt += 1;
            if Instant::now() + wait > self.retry.deadline {
                return Err(error);
            }
            log::warn!(
                "{error}; retry {attempt}/{} in {:.1}s",
                self.retry.max_retries,
                wait.as_secs_f64()
            );
            if !self.retry.stop.sleep(wait) {
                return Err(error);
            }
        }
    }

    fn fetch_once(&self) -> Result<Cached, Failure> {
        let request = self.grant.request().map_err(Failure::Final)?;
        let started = Instant::now();
        let sent = match &request.method {
            Method::Post(form) => self.transport.post_form(&request.url, &exposed(form)),
            Method::Get(headers) => {
                self.transport
                    .get(&request.url, &exposed(headers), Duration::from_secs(60))
            }
        };
        let response = sent.map_err(|e| match e {
            TransportError::Network(message) => Failure::Transient(self.unavailable(message), None),
            other => Failure::Final(self.unavailable(other.to_string())),
        })?;
        if let Some(date) = response.date.as_deref().and_then(parse_http_date) {
            *self.server_clock.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((date, Instant::now()));
        }
        if response.status == 200 {
            return self.token(&response, started).map_err(Failure::Final);
        }
        let retry_after = response
            .retry_after
            .as_deref()
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        match serde_json::from_slice::<OAuthError>(&response.body) {
            Ok(refusal) if (400..500).contains(&response.status) && response.status != 429 => {
                Err(Failure::Final(AuthError::Refused {
                    status: response.status,
                    error: refusal.error,
                    description: refusal
                        .error_description
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                }))
            }
            _ if response.status == 429 || response.status >= 500 => Err(Failure::Transient(
                self.unavailable(format!("HTTP {}", response.status)),
                retry_after,
            )),
            _ => Err(Failure::Final(
                self.unavailable(format!("HTTP {}", response.status)),
            )),
        }
    }

    fn token(&self, response: &HttpResponse, started: Instant) -> Result<Cached, AuthError> {
        let token: TokenResponse = serde_json::from_slice(&response.body).map_err(|e| {
            // serde's message names the problem, never the token's value.
            self.unavailable(format!("unreadable token response: {e}"))
        })?;
        let expires_in = token
            .expires_in
            .clone()
            .or_else(|| seconds_until(&token.expires_on));
        let lifetime = lifetime(&expires_in).map_err(|e| self.unavailable(e))?;
        log::debug!("token acquired, valid for {}s", lifetime.as_secs());
        Ok(Cached {
            bearer: Bearer(Arc::new(Secret::new(token.access_token))),
            refresh_at: started + lifetime - refresh_margin(lifetime),
        })
    }

    fn unavailable(&self, message: String) -> AuthError {
        AuthError::Unavailable {
            url: self.endpoint.clone(),
            message,
        }
    }
}

/// Name-value pairs as they go on the wire.
fn exposed<'a>(pairs: &'a [(&'static str, Secret)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.expose())).collect()
}

/// Why one token request failed, and whether to try again (after a Retry-After).
enum Failure {
    Transient(AuthError, Option<Duration>),
    Final(AuthError),
}

/// `expires_on` (Unix seconds, a number or a string) as seconds from now.
fn seconds_until(expires_on: &Option<serde_json::Value>) -> Option<serde_json::Value> {
    let at = match expires_on.as_ref()? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(serde_json::Value::from(at - now))
}

/// How long a token is used: `expires_in` seconds (a number or a numeric string,
/// fractions dropped); below a second it is [`MIN_LIFETIME`], above [`MAX_LIFETIME`]
/// that, each with a WARN.
fn lifetime(expires_in: &Option<serde_json::Value>) -> Result<Duration, String> {
    let seconds = match expires_in {
        None | Some(serde_json::Value::Null) => {
            return Err("token response without expires_in".into());
        }
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    }
    .filter(|s| s.is_finite())
    .ok_or_else(|| {
        let shown: String = expires_in
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default()
            .chars()
            .take(40)
            .collect();
        format!("token response: expires_in {shown} is not a number of seconds")
    })?;
    let used = if seconds < 1.0 {
        MIN_LIFETIME
    } else {
        Duration::from_secs(seconds.min(MAX_LIFETIME.as_secs_f64()) as u64)
    };
    if seconds < 1.0 || seconds > MAX_LIFETIME.as_secs_f64() {
        log::warn!(
            "token response: expires_in {seconds} is not a lifetime from 1 to {} s; the token is used for {} s",
            MAX_LIFETIME.as_secs(),
            used.as_secs()
        );
    }
    Ok(used)
}

/// How long before expiry a token is replaced: a tenth of its life, at most 5 minutes,
/// so a request never leaves with a token that dies on the way.
fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_tenant_is_its_tid_claim_when_it_has_one() {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwt = |claims: &str| {
            let token = format!("h.{}.s", URL_SAFE_NO_PAD.encode(claims));
            Bearer(Arc::new(Secret::new(token)))
        };
        assert_eq!(
            jwt(r#"{"tid":"4A06F77B-6bdb-4f5b-b1c4-2b1a5d2e1a2b","oid":"x"}"#).tenant_id(),
            Some("4a06f77b-6bdb-4f5b-b1c4-2b1a5d2e1a2b".into())
        );
        assert_eq!(jwt(r#"{"tid":"contoso.com"}"#).tenant_id(), None);
        assert_eq!(jwt(r#"{"oid":"x"}"#).tenant_id(), None);
        assert_eq!(jwt("not json").tenant_id(), None);
        assert_eq!(Bearer(Arc::new(Secret::new("opaque"))).tenant_id(), None);
    }

    #[test]
    fn refresh_margin_scales_with_lifetime() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3599)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn expires_in_as_number_or_string_within_bounds() {
        let secs = |v: serde_json::Value| lifetime(&Some(v)).map(|d| d.as_secs());
        assert_eq!(secs(serde_json::json!(3599)), Ok(3599));
        assert_eq!(secs(serde_json::json!("3599")), Ok(3599));
        assert_eq!(secs(serde_json::json!(3599.5)), Ok(3599));
        assert_eq!(secs(serde_json::json!(0)), Ok(5));
        assert_eq!(secs(serde_json::json!(2)), Ok(2));
        assert_eq!(secs(serde_json::json!(-1)), Ok(5));
        assert_eq!(secs(serde_json::json!(u64::MAX)), Ok(86_400));
        assert_eq!(
            secs(serde_json::json!("soon")),
            Err("token response: expires_in \"soon\" is not a number of seconds".into())
        );
        assert_eq!(
            lifetime(&None),
            Err("token response without expires_in".into())
        );
        assert_eq!(
            secs(serde_json::json!(null)),
            Err("token response without expires_in".into())
        );
    }
}
