//! The identity platform's client-credentials token endpoint, as strict as Entra ID:
//! wrong tenant, grant, client, secret or scope each get their AADSTS error; issued
//! tokens expire after `--token-ttl`, and only live ones open the Graph endpoints.

use std::collections::HashMap;
use std::time::Instant;

use crate::Sim;
use crate::http::{Request, Response};
use crate::responses::{json, oauth_error, request_guid};

impl Sim {
    pub fn token(&self, tenant: &str, body: &str) -> Response {
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
        self.bump("tokens_issued");
        let ttl = self.token_ttl.as_secs().to_string();
        json(
            200,
            format!(
                r#"{{"token_type":"Bearer","expires_in":{},"ext_expires_in":{ttl},"access_token":"{token}"}}"#,
                self.expires_in.as_deref().unwrap_or(&ttl)
            ),
        )
    }

    pub fn authorized(&self, request: &Request) -> bool {
        let Some(token) = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }
}
