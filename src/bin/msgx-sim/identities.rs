//! What the simulated identity platform knows of the application besides its secret:
//! its registered certificate, the federated tokens it trusts, the assertions it has
//! seen, its managed identities.

use std::collections::HashSet;
use std::sync::Mutex;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// What the identity platform knows of the application besides its secret.
#[derive(Default)]
pub struct Identities {
    /// The certificate uploaded to the app registration (DER).
    pub certificate: Option<Vec<u8>>,
    /// Federated tokens a federated credential accepts now (`/_sim/federated`).
    pub federated: Mutex<Vec<String>>,
    /// `jti`s seen: an assertion is good once.
    pub jtis: Mutex<HashSet<String>>,
    /// The user-assigned managed identity's client id.
    pub managed_client_id: Option<String>,
    /// App Service's `IDENTITY_HEADER`.
    pub identity_header: Option<String>,
}

impl Identities {
    pub fn load_certificate(path: &str) -> Result<Vec<u8>, String> {
        CertificateDer::from_pem_file(path)
            .map(|c| c.to_vec())
            .map_err(|e| format!("--client-cert {path}: {e:?}"))
    }
}
