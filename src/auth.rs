//! Client-credentials tokens from the identity platform, shared by all threads.
//!
//! One token serves the whole run; it is refreshed a margin before `expires_in` runs
//! out (real tokens live 60-90 minutes, test tokens seconds), and thrown away when
//! Graph says it is no longer valid. The secret and the token are [`Secret`]s.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::AuthError;
use crate::graph::transport::HttpTransport;
use crate::secret::Secret;

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
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; the v1 endpoint sent it as a string, so both are taken.
    expires_in: serde_json::Value,
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
        }
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
        let scrub = |text: &str| c.client_secret.scrub(text);
        if response.status == 200 {
            let token: TokenResponse = serde_json::from_slice(&response.body)
                .map_err(|e| self.unavailable(format!("unreadable token response: {e}")))?;
            let lifetime = lifetime(&token.expires_in)
                .ok_or_else(|| self.unavailable("token response without expires_in".into()))?;
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

fn lifetime(expires_in: &serde_json::Value) -> Option<Duration> {
    let seconds = match expires_in {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }?;
    Some(Duration::from_secs(seconds))
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
    fn expires_in_as_number_or_string() {
        assert_eq!(
            lifetime(&serde_json::json!(3599)),
            Some(Duration::from_secs(3599))
        );
        assert_eq!(
            lifetime(&serde_json::json!("3599")),
            Some(Duration::from_secs(3599))
        );
        assert_eq!(lifetime(&serde_json::json!(null)), None);
    }
}
