//! The credentials the application signs in with, as `config` builds them: what each
//! kind of grant needs (secrets kept in [`Secret`]).

use std::path::PathBuf;

use super::certificate::AssertionAlg;
use crate::secret::Secret;

/// How the application gets its tokens, with what it needs.
#[derive(Debug, Clone)]
pub enum Credential {
    Secret {
        tenant: String,
        client_id: String,
        secret: Secret,
    },
    Certificate {
        tenant: String,
        client_id: String,
        /// PEM with the certificate (and the key, unless `key` is given).
        certificate: PathBuf,
        key: Option<PathBuf>,
        alg: AssertionAlg,
    },
    WorkloadIdentity {
        tenant: String,
        client_id: String,
        token_file: PathBuf,
    },
    ManagedIdentity {
        /// A user-assigned identity's client id; None: the system-assigned one.
        client_id: Option<String>,
        endpoint: ManagedEndpoint,
    },
}

/// Where a managed identity's tokens come from.
#[derive(Debug, Clone)]
pub enum ManagedEndpoint {
    /// The instance metadata service (VMs, AKS nodes): `{origin}/metadata/identity/oauth2/token`.
    Imds(url::Url),
    /// App Service / Functions: `IDENTITY_ENDPOINT` with the `IDENTITY_HEADER` secret.
    AppService { url: url::Url, header: Secret },
}

impl Credential {
    /// The same application's credential in `tenant` (a multi-tenant application
    /// signs in to each tenant with one secret, certificate or federated token). A
    /// managed identity belongs to one tenant: the configuration refuses `tenants`
    /// with it, and it is returned as it is.
    pub fn in_tenant(&self, tenant: &str) -> Credential {
        let mut credential = self.clone();
        match &mut credential {
            Credential::Secret { tenant: t, .. }
            | Credential::Certificate { tenant: t, .. }
            | Credential::WorkloadIdentity { tenant: t, .. } => *t = tenant.to_string(),
            Credential::ManagedIdentity { .. } => {}
        }
        credential
    }

    /// The tenant it signs in to (a managed identity: the one its host is in, unknown
    /// here).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Credential::Secret { tenant, .. }
            | Credential::Certificate { tenant, .. }
            | Credential::WorkloadIdentity { tenant, .. } => Some(tenant),
            Credential::ManagedIdentity { .. } => None,
        }
    }

    /// The application's client id (a system-assigned managed identity: none).
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Credential::Secret { client_id, .. }
            | Credential::Certificate { client_id, .. }
            | Credential::WorkloadIdentity { client_id, .. } => Some(client_id),
            Credential::ManagedIdentity { client_id, .. } => client_id.as_deref(),
        }
    }
}
