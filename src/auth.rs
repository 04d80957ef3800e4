//! Client-credentials tokens from the identity platform, shared by all threads.
//!
//! One token serves the whole run; it is refreshed a margin before `expires_in` runs
//! out (real tokens live 60-90 minutes, test tokens seconds), and thrown away when
//! Graph says it is no longer valid. The secret and the token are [`Secret`]s.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::error::AuthError;
use crate::retry::parse_http_date;
use crate::secret::Secret;
use crate::transport::HttpTransport;

/// A bearer token, cheap to clone and never printed.
#[derive(Clone, Debug)]
pub struct Bearer(Arc<Secret>);

impl Bearer {
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0.expose())
    }
}

pub struct Credentials {
    pub login_url: url::Url,
    pub tenant: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// `{graph_url}/.default`: tokens are per cloud.
    pub scope: String,
}

struct Cached {
    bearer: Bearer,
    refresh_at: Instant,
}

pub struct TokenSource {
    transport: Arc<dyn HttpTransport>,
    token_url: String,
    credentials: Credentials,
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
    /// Seconds; the v1 endpoint sent it as a string, so both are taken.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: String,
}

impl TokenSource {
    pub fn new(transport: Arc<dyn HttpTransport>, credentials: Credentials) -> Self {
        let token_url = format!(
            "{}/{}/oauth2/v2.0/token",
            credentials.login_url.as_str().trim_end_matches('/'),
            credentials.tenant
        );
        TokenSource {
            transport,
            token_url,
            credentials,
            cached: Mutex::new(None),
            server_clock: Mutex::new(None),
        }
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

    fn fetch(&self) -> Result<Cached, AuthError> {
        let c = &self.credentials;
        let form = [
            ("client_id", c.client_id.as_str()),
            ("client_secret", c.client_secret.expose()),
            ("scope", c.scope.as_str()),
            ("grant_type", "client_credentials"),
        ];
        let started = Instant::now();
        let response = self
            .transport
            .post_form(&self.token_url, &form)
            .map_err(|e| self.unavailable(e.to_string()))?;
        if let Some(date) = response.date.as_deref().and_then(parse_http_date) {
            *self.server_clock.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((date, Instant::now()));
        }
        let scrub = |text: &str| c.client_secret.scrub(text);
        if response.status == 200 {
            let token: TokenResponse = serde_json::from_slice(&response.body).map_err(|e| {
                // serde's message names the problem, never the token's value.
                self.unavailable(format!("unreadable token response: {e}"))
            })?;
            let lifetime = lifetime(&token.expires_in).map_err(|e| self.unavailable(e))?;
            log::debug!("token acquired, valid for {}s", lifetime.as_secs());
            return Ok(Cached {
                bearer: Bearer(Arc::new(Secret::new(token.access_token))),
                refresh_at: started + lifetime - refresh_margin(lifetime),
            });
        }
        match serde_json::from_slice::<OAuthError>(&response.body) {
            Ok(refusal) if (400..500).contains(&response.status) => Err(AuthError::Refused {
                status: response.status,
                error: scrub(&refusal.error),
                description: scrub(refusal.error_description.lines().next().unwrap_or_default()),
            }),
            _ => Err(self.unavailable(format!("HTTP {}", response.status))),
        }
    }

    fn unavailable(&self, message: String) -> AuthError {
        AuthError::Unavailable {
            url: self.token_url.clone(),
            message: self.credentials.client_secret.scrub(&message),
        }
    }
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
