//! A certificate credential: for every token request a fresh client assertion (a JWT)
//! signed with the certificate's private key, as Microsoft's current document asks —
//! PS256 with the SHA-256 thumbprint `x5t#S256` — or, with `client_assertion_alg
//! rs256`, RS256 with the SHA-1 thumbprint `x5t` for tenants that still need it.
//! `aud` is the token endpoint, `iss` and `sub` the client id, `jti` new each time,
//! valid from now for 10 minutes. ring (rustls's provider) signs; rustls-pki-types
//! reads the PEM.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::jwt::{base64url, signing_input};
use super::{Grant, TokenRequest, assertion};
use crate::error::{AuthError, Error};
use crate::error::{ConfigError, Origin};
use crate::secret::Secret;

/// The signature of a certificate's client assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAlg {
    /// RSASSA-PSS with SHA-256, thumbprint `x5t#S256`: Microsoft's current document.
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, thumbprint `x5t` (SHA-1): the older form.
    Rs256,
}

/// How long an assertion is valid: Microsoft asks for at most 10 minutes.
const LIFETIME_SECONDS: u64 = 600;

pub struct ClientCertificate {
    url: String,
    client_id: String,
    scope: String,
    key: RsaKeyPair,
    alg: AssertionAlg,
    /// The JWT header's thumbprint: (`x5t#S256` or `x5t`, base64url).
    thumbprint: (&'static str, String),
    rng: SystemRandom,
}

impl ClientCertificate {
    /// Reads the certificate (and its key, from `key` or the same file). What is
    /// wrong with them is a configuration error naming the option.
    pub fn load(
        url: String,
        client_id: String,
        scope: String,
        certificate: &Path,
        key: Option<&Path>,
        alg: AssertionAlg,
    ) -> Result<Self, Error> {
        let bad = |option: &str, problem: String, accepted: &str| {
            Error::Config(ConfigError::new(option, Origin::Unset, problem, accepted))
        };
        let (key_option, key_path) = match key {
            Some(path) => ("client_certificate_key", path),
            None => ("client_certificate", certificate),
        };
        let read = |option: &str, path: &Path| {
            crate::files::read(path, crate::files::PEM_CAP).map_err(|e| {
                let problem = match e {
                    crate::files::FileError::NotFound => format!("{} not found", path.display()),
                    e => format!("cannot read {}: {e}", path.display()),
                };
                bad(option, problem, "a readable PEM file (a regular file)")
            })
        };
        let certificate_pem = read("client_certificate", certificate)?;
        let key_pem = match key {
            Some(_) => read(key_option, key_path)?,
            None => certificate_pem.clone(),
        };
        let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&certificate_pem)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(bad(
                "client_certificate",
                format!("no certificate in {}", certificate.display()),
                "a PEM file with a -----BEGIN CERTIFICATE----- block",
            ));
        }
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            bad(
                key_option,
                format!("no private key in {}", key_path.display()),
                "a PEM file with an RSA private key (PKCS#8 or PKCS#1)",
            )
        })?;
        let pair = match &private {
            PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
            _ => RsaKeyPair::from_der(&[]),
        }
        .map_err(|e| {
            // ring's reason names the problem, never the key.
            bad(
                key_option,
                format!(
                    "the private key in {} is not a usable RSA key: {e}",
                    key_path.display()
                ),
                "an RSA private key of 2048 bits or more (PKCS#8 or PKCS#1)",
            )
        })?;
        // A bundle may hold the chain too (a CA's certificate first, as CAs hand them
        // out): the certificate is the one the key belongs to.
        let cert = certs
            .into_iter()
            .find(|cert| belongs_to(cert, pair.public().as_ref()))
            .ok_or_else(|| {
                bad(
                    "client_certificate",
                    format!(
                        "no certificate in {} belongs to the private key in {}",
                        certificate.display(),
                        key_path.display()
                    ),
                    "the application's certificate and its own private key",
                )
            })?;
        let thumbprint = match alg {
            AssertionAlg::Ps256 => (
                "x5t#S256",
                base64url(ring::digest::digest(&ring::digest::SHA256, &cert).as_ref()),
            ),
            AssertionAlg::Rs256 => (
                "x5t",
                base64url(
                    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert).as_ref(),
                ),
            ),
        };
        Ok(ClientCertificate {
            url,
            client_id,
            scope,
            key: pair,
            alg,
            thumbprint,
            rng: SystemRandom::new(),
        })
    }

    /// A new signed assertion.
    fn assertion(&self) -> Result<Secret, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let (name, padding): (&str, &'static dyn signature::RsaEncoding) = match self.alg {
            AssertionAlg::Ps256 => ("PS256", &signature::RSA_PSS_SHA256),
            AssertionAlg::Rs256 => ("RS256", &signature::RSA_PKCS1_SHA256),
        };
        let mut header = serde_json::json!({ "alg": name, "typ": "JWT" });
        header[self.thumbprint.0] = serde_json::Value::from(self.thumbprint.1.clone());
        let claims = serde_json::json!({
            "aud": self.url,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": crate::ids::guid(),
            "iat": now,
            "nbf": now,
            "exp": now + LIFETIME_SECONDS,
        });
        let input = signing_input(&header, &claims);
        let mut signed = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(padding, &self.rng, input.as_bytes(), &mut signed)
            .map_err(|_| AuthError::Unavailable {
                url: self.url.clone(),
                message: "signing the client assertion failed".into(),
            })?;
        Ok(Secret::new(format!("{input}.{}", base64url(&signed))))
    }
}

/// Whether `cert`'s public key is `public` (an RSAPublicKey, DER): its
/// SubjectPublicKeyInfo ends with that key.
fn belongs_to(cert: &CertificateDer, public: &[u8]) -> bool {
    webpki::EndEntityCert::try_from(cert)
        .map(|parsed| parsed.subject_public_key_info().as_ref().ends_with(public))
        .unwrap_or(false)
}

impl Grant for ClientCertificate {
    fn url(&self) -> &str {
        &self.url
    }

    fn request(&self) -> Result<TokenRequest, AuthError> {
        Ok(TokenRequest::client_credentials(
            &self.url,
            &self.client_id,
            &self.scope,
            assertion(self.assertion()?),
        ))
    }
}
