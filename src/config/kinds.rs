//! The kinds of credential Entra ID lets the application in with, as a table: each
//! kind's `auth` name, the options that select it, what it needs and what only it
//! reads. Inference, "missing" errors and "has no effect" WARNs all come from it.

use super::parse;

/// How the application signs in (`auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Secret,
    Certificate,
    WorkloadIdentity,
    ManagedIdentity,
}

/// One kind of credential, as the configuration sees it.
pub struct KindSpec {
    pub kind: AuthKind,
    /// Its `auth` value.
    pub name: &'static str,
    /// Options any one of which, given, selects it (when no other kind's are).
    pub given_by: &'static [&'static str],
    /// Options it needs (one of `given_by` is needed too, when it has any).
    pub needs: &'static [&'static str],
    /// Options only it reads: given with another kind, they have no effect.
    pub reads: &'static [&'static str],
}

/// Every kind of credential. A new one is a row here, its `Credential` variant (built
/// in `credentials.rs`) and its grant in `auth/`.
pub const KINDS: &[KindSpec] = &[
    KindSpec {
        kind: AuthKind::Secret,
        name: "secret",
        given_by: &["client_secret", "client_secret_file"],
        needs: &["tenant", "client_id"],
        reads: &["client_secret", "client_secret_file"],
    },
    KindSpec {
        kind: AuthKind::Certificate,
        name: "certificate",
        given_by: &["client_certificate"],
        needs: &["tenant", "client_id"],
        reads: &[
            "client_certificate",
            "client_certificate_key",
            "client_assertion_alg",
        ],
    },
    KindSpec {
        kind: AuthKind::WorkloadIdentity,
        name: "workload_identity",
        given_by: &["federated_token_file"],
        needs: &["tenant", "client_id"],
        reads: &["federated_token_file"],
    },
    KindSpec {
        kind: AuthKind::ManagedIdentity,
        name: "managed_identity",
        given_by: &[],
        needs: &[],
        reads: &["msi_endpoint"],
    },
];

impl AuthKind {
    pub fn spec(self) -> &'static KindSpec {
        KINDS.iter().find(|k| k.kind == self).unwrap_or(&KINDS[0])
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Options only this kind reads.
    pub fn reads(self) -> &'static [&'static str] {
        self.spec().reads
    }
}

/// `auth`: one of the kinds of [`KINDS`].
pub fn auth_kind(value: &str) -> Result<AuthKind, String> {
    let table: Vec<(&str, AuthKind)> = KINDS.iter().map(|k| (k.name, k.kind)).collect();
    parse::named(value, &table)
}
