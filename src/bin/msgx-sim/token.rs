//! The identity platform, as strict as Entra ID: the client-credentials token endpoint
//! with a client secret, a certificate's client assertion (signature checked against
//! `--client-cert`, its thumbprint, `aud`, `iss`/`sub`, lifetime and `jti`
//! replay) or a federated token (`--federated-token`), each mistake with its AADSTS
//! error; and the managed-identity endpoints of the instance metadata service and App
//! Service. Issued tokens expire after `--token-ttl`; only live ones open Graph.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;

use crate::http::{Request, Response};
use crate::responses::{graph_error, json, oauth_error, request_guid};
use crate::sim::Sim;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn invalid_client(code: u32, description: &str) -> Response {
    oauth_error(401, "invalid_client", code, description)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Sim {
    pub fn token(&self, tenant: &str, body: &str) -> Response {
        let failing = self
            .fail_tokens
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return oauth_error(
                503,
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
            );
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        let Some(index) = self.tenant_index(Some(tenant)) else {
            return oauth_error(
                400,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
            );
        };
        if get("grant_type") != "client_credentials" {
            return oauth_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            );
        }
        if get("client_id") != self.client_id || !self.tenants[index].consented {
            return oauth_error(
                400,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                    get("client_id")
                ),
            );
        }
        let checked = match (get("client_assertion"), get("client_secret")) {
            ("", secret) if secret == self.client_secret => Ok("secret"),
            ("", _) => Err(invalid_client(
                7000215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    self.client_id
                ),
            )),
            (_, secret) if !secret.is_empty() => Err(oauth_error(
                400,
                "invalid_request",
                90014,
                "Only one of client_secret and client_assertion may be sent.",
            )),
            (assertion, _) if get("client_assertion_type") == JWT_BEARER => {
                self.check_assertion(tenant, assertion)
            }
            _ => Err(oauth_error(
                400,
                "invalid_request",
                90014,
                "The request body must contain client_assertion_type urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            )),
        };
        let kind = match checked {
            Ok(kind) => kind,
            Err(response) => return response,
        };
        if get("scope") != format!("{}/.default", self.base_url) {
            return oauth_error(
                400,
                "invalid_scope",
                70011,
                "The provided value for the input parameter 'scope' is not valid.",
            );
        }
        self.bump(&format!("tokens_by_{kind}"));
        let (token, ttl) = self.issue(index);
        json(
            200,
            format!(
                r#"{{"token_type":"Bearer","expires_in":{},"ext_expires_in":{ttl},"access_token":"{token}"}}"#,
                self.expires_in.as_deref().unwrap_or(&ttl.to_string())
            ),
        )
    }

    /// A new token for tenant `tenant` (an index) and its lifetime in seconds.
    /// A token: `sim.<claims>.<guid>`, the claims (`tid`, the tenant's GUID) base64url
    /// JSON where a JWT has them, as msgx-once reads the tenant GUID from a real token.
    fn issue(&self, tenant: usize) -> (String, u64) {
        let claims = format!(
            r#"{{"tid":"{}","iss":"msgx-sim"}}"#,
            self.tenant_guid(tenant)
        );
        let token = format!("sim.{}.{}", URL_SAFE_NO_PAD.encode(claims), request_guid());
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, (expiry, _)| *expiry > Instant::now());
        tokens.insert(token.clone(), (Instant::now() + self.token_ttl, tenant));
        self.bump("tokens_issued");
        (token, self.token_ttl.as_secs())
    }

    /// The GUID of tenant `index`: the one its records name for the first (`--tenant`),
    /// one derived from the name for the others.
    pub fn tenant_guid(&self, index: usize) -> String {
        let name = self.tenants.get(index).map_or("", |t| t.name.as_str());
        if index == 0 {
            return crate::signins::TENANT_ID.to_string();
        }
        let hash = |seed: u64| {
            name.bytes().fold(seed, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        let (a, b) = (hash(0xcbf2_9ce4_8422_2325), hash(0x6c62_272e_07bb_0142));
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    /// A federated token the federated credential accepts, or a certificate's signed
    /// assertion; which kind it was.
    fn check_assertion(&self, tenant: &str, assertion: &str) -> Result<&'static str, Response> {
        let federated = self
            .identities
            .federated
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if federated.iter().any(|t| t == assertion) {
            self.bump(&format!("federated_{assertion}"));
            return Ok("federated_token");
        }
        drop(federated);
        let parts: Vec<&str> = assertion.split('.').collect();
        let decode = |part: &str| -> Option<serde_json::Value> {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
        };
        let (Some(header), Some(claims), [input_header, input_claims, signature]) = (
            parts.first().and_then(|p| decode(p)),
            parts.get(1).and_then(|p| decode(p)),
            parts.as_slice(),
        ) else {
            return Err(invalid_client(
                70021,
                "No matching federated identity record found for presented assertion.",
            ));
        };
        let Some(certificate) = &self.identities.certificate else {
            return Err(invalid_client(
                700027,
                "Client assertion failed signature validation: no certificate is registered.",
            ));
        };
        self.check_signature(&header, certificate, input_header, input_claims, signature)?;
        let text = |name: &str| claims[name].as_str().unwrap_or_default().to_string();
        let number = |name: &str| claims[name].as_i64().unwrap_or_default();
        let audience = format!("{}/{tenant}/oauth2/v2.0/token", self.base_url);
        if text("aud") != audience {
            return Err(invalid_client(
                700212,
                &format!(
                    "No matching federated identity record found for presented assertion audience '{}'.",
                    text("aud")
                ),
            ));
        }
        if text("iss") != self.client_id || text("sub") != self.client_id {
            return Err(invalid_client(
                700023,
                "Client assertion audience claim does not match Realm issuer.",
            ));
        }
        let (nbf, exp, now) = (number("nbf"), number("exp"), unix_now());
        if exp <= nbf || exp - nbf > 600 || now < nbf - 300 || now > exp {
            return Err(invalid_client(
                700024,
                "Client assertion is not within its valid time range.",
            ));
        }
        let jti = text("jti");
        let fresh = !jti.is_empty()
            && self
                .identities
                .jtis
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(jti);
        if !fresh {
            return Err(invalid_client(
                7000222,
                "The provided client assertion has been used before (jti).",
            ));
        }
        self.bump(&format!(
            "assertion_{}",
            header["alg"].as_str().unwrap_or_default()
        ));
        Ok("certificate")
    }

    /// The assertion's thumbprint names the registered certificate and its signature
    /// verifies with its key: PS256 with `x5t#S256`, RS256 with `x5t`.
    fn check_signature(
        &self,
        header: &serde_json::Value,
        certificate: &[u8],
        input_header: &str,
        input_claims: &str,
        signature: &str,
    ) -> Result<(), Response> {
        let digest = |alg: &'static ring::digest::Algorithm| {
            URL_SAFE_NO_PAD.encode(ring::digest::digest(alg, certificate))
        };
        let (thumbprint, expected, verifier) = match header["alg"].as_str() {
            Some("PS256") => (
                &header["x5t#S256"],
                digest(&ring::digest::SHA256),
                webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            ),
            Some("RS256") => (
                &header["x5t"],
                digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
                webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            ),
            _ => {
                return Err(invalid_client(
                    5002738,
                    "The client assertion's algorithm is not supported.",
                ));
            }
        };
        if thumbprint.as_str() != Some(expected.as_str()) {
            return Err(invalid_client(
                700027,
                "Client assertion failed signature validation: the certificate's thumbprint is unknown.",
            ));
        }
        let der = CertificateDer::from(certificate);
        let verified = webpki::EndEntityCert::try_from(&der).ok().and_then(|cert| {
            let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
            let message = format!("{input_header}.{input_claims}");
            cert.verify_signature(verifier, message.as_bytes(), &signature)
                .ok()
        });
        verified
            .ok_or_else(|| invalid_client(700027, "Client assertion failed signature validation."))
    }

    /// `GET /metadata/identity/oauth2/token`: the instance metadata service.
    pub fn imds(&self, request: &Request, query: &HashMap<String, String>) -> Response {
        if request.header("metadata") != Some("true") {
            return json(
                400,
                r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#.into(),
            );
        }
        self.managed(query, "imds")
    }

    /// `GET /msi/token`: App Service's identity endpoint.
    pub fn app_service(&self, request: &Request, query: &HashMap<String, String>) -> Response {
        let expected = self.identities.identity_header.as_deref();
        if expected.is_none() || request.header("x-identity-header") != expected {
            return json(
                401,
                r#"{"statusCode":401,"message":"Unauthorized: the X-IDENTITY-HEADER is missing or wrong"}"#.into(),
            );
        }
        self.managed(query, "app_service")
    }

    fn managed(&self, query: &HashMap<String, String>, kind: &str) -> Response {
        if query.get("resource").map(String::as_str) != Some(self.base_url.as_str()) {
            return json(
                400,
                r#"{"error":"invalid_resource","error_description":"AADSTS500011: The resource principal was not found."}"#.into(),
            );
        }
        if query.get("client_id") != self.identities.managed_client_id.as_ref() {
            return json(
                400,
                r#"{"error":"invalid_request","error_description":"Identity not found"}"#.into(),
            );
        }
        self.bump(&format!("tokens_by_{kind}"));
        let (token, ttl) = self.issue(0);
        let expires_on = unix_now() + ttl as i64;
        // IMDS sends expires_in as a string; App Service only expires_on.
        let lifetime = match kind {
            "imds" => format!(r#""expires_in":"{ttl}","#),
            _ => String::new(),
        };
        json(
            200,
            format!(
                r#"{{"access_token":"{token}",{lifetime}"expires_on":"{expires_on}","resource":"{}","token_type":"Bearer"}}"#,
                self.base_url
            ),
        )
    }

    /// `GET /_sim/federated?accept=T1,T2`: the federated tokens accepted from now on
    /// (the kubelet rotated the file; the old token expired).
    pub fn set_federated(&self, query: &HashMap<String, String>) -> Response {
        let Some(accept) = query.get("accept") else {
            return graph_error(400, "BadRequest", "accept=T1,T2");
        };
        *self
            .identities
            .federated
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = accept
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        json(200, "{}".into())
    }

    /// The tenant (an index) of the request's live token, if it has one.
    pub fn authorized(&self, request: &Request) -> Option<usize> {
        let token = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))?;
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(token)
            .filter(|(expiry, _)| *expiry > Instant::now())
            .map(|(_, tenant)| *tenant)
    }
}
