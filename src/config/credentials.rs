//! How the application gets its tokens ([`Credential`]): the kind given by `auth` or
//! inferred from the options set, what each kind needs, secrets read from files, the
//! Azure SDK's environment names below the `GRAPH_*` ones, managed identities'
//! endpoints.

use std::path::{Path, PathBuf};

use super::kinds::{AuthKind, KINDS, auth_kind};
use super::values;
use super::{Options, Values};
pub use crate::auth::{Credential, ManagedEndpoint};
use crate::error::{ConfigError, Origin};
use crate::files;
use crate::secret::Secret;

/// The instance metadata service's address, the same on every Azure VM.
const IMDS: &str = "http://169.254.169.254";

impl Credential {
    pub fn kind(&self) -> AuthKind {
        match self {
            Credential::Secret { .. } => AuthKind::Secret,
            Credential::Certificate { .. } => AuthKind::Certificate,
            Credential::WorkloadIdentity { .. } => AuthKind::WorkloadIdentity,
            Credential::ManagedIdentity { .. } => AuthKind::ManagedIdentity,
        }
    }
}

/// The managed identity's token endpoint: `msi_endpoint`, else App Service's
/// `IDENTITY_ENDPOINT` (with `IDENTITY_HEADER`), else the instance metadata service.
pub(super) fn managed_endpoint(
    options: &Options,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> ManagedEndpoint {
    if let Some(origin) = &options.msi_endpoint {
        return ManagedEndpoint::Imds(origin.clone());
    }
    let app_service = (env("IDENTITY_ENDPOINT"), env("IDENTITY_HEADER"));
    if let (Some(endpoint), Some(header)) = app_service {
        match url::Url::parse(&endpoint) {
            Ok(url) => {
                return ManagedEndpoint::AppService {
                    url,
                    header: Secret::new(header),
                };
            }
            Err(_) => errors.push(ConfigError::usage(format!(
                "environment variable IDENTITY_ENDPOINT: invalid value {endpoint:?}; accepted: \
                 the App Service identity endpoint URL"
            ))),
        }
    }
    ManagedEndpoint::Imds(url::Url::parse(IMDS).expect("a valid URL"))
}

/// A secret kept in a file (a Kubernetes secret mount): its content without the
/// trailing line break.
pub(super) fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = files::read_text(path, files::SECRET_CAP)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(value))
}

impl Values {
    /// The kind of credential: `auth`, or the one kind whose options are given.
    pub(super) fn credential_kind(&self) -> Result<AuthKind, ConfigError> {
        if let Some(kind) = self
            .get("auth")
            .and_then(|(value, _)| auth_kind(value).ok())
        {
            return Ok(kind);
        }
        let given: Vec<(AuthKind, &str)> = KINDS
            .iter()
            .flat_map(|k| k.given_by.iter().map(move |name| (k.kind, *name)))
            .filter(|(_, name)| self.get(name).is_some())
            .collect();
        let selecting = || {
            let options: Vec<String> = KINDS
                .iter()
                .filter_map(|k| match k.given_by {
                    [] => None,
                    [one] => Some(one.to_string()),
                    [first, rest @ ..] => Some(format!("{first} (or {})", rest.join(", "))),
                })
                .collect();
            let without: Vec<String> = KINDS
                .iter()
                .filter(|k| k.given_by.is_empty())
                .map(|k| format!("auth {}", k.name))
                .collect();
            format!("{}, or {}", options.join(", "), without.join(", "))
        };
        match given.as_slice() {
            [] => Err(ConfigError::new(
                "auth",
                Origin::Unset,
                "no credentials given".into(),
                &selecting(),
            )),
            [(first, _), rest @ ..] if rest.iter().all(|(kind, _)| kind == first) => Ok(*first),
            several => {
                let names: Vec<String> = several
                    .iter()
                    .map(|(_, name)| format!("{name} ({})", self.source(name).describe(name)))
                    .collect();
                let kinds: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
                Err(ConfigError::new(
                    "auth",
                    Origin::Unset,
                    format!("ambiguous: {} are all set", names.join(" and ")),
                    &format!("auth {}, or only one kind of credential", kinds.join(", ")),
                ))
            }
        }
    }

    /// The options `kind` needs that are not set anywhere.
    pub(super) fn missing_for(&self, kind: AuthKind) -> Vec<ConfigError> {
        let spec = kind.spec();
        let why = format!(" (auth {})", spec.name);
        let mut missing: Vec<ConfigError> = spec
            .needs
            .iter()
            // `tenants` names every tenant `tenant` would.
            .filter(|name| self.get(name).is_none())
            .filter(|name| !(**name == "tenant" && self.get("tenants").is_some()))
            .map(|name| values::missing(name, &why))
            .collect();
        if let Some(first) = spec.given_by.first()
            && spec.given_by.iter().all(|name| self.get(name).is_none())
        {
            missing.push(values::missing(first, &why));
        }
        missing
    }

    /// The files a run reads later (at sign-in, at each token, at connect) are regular
    /// files within their cap: a FIFO or a device named by mistake is refused now,
    /// naming its option, instead of hanging the run or filling its memory. A file
    /// not there yet is left to the read that needs it (a Secret mounted late).
    pub(super) fn check_files(&self, options: &Options, errors: &mut Vec<ConfigError>) {
        let table: [(&str, &Option<PathBuf>, u64); 4] = [
            (
                "client_certificate",
                &options.client_certificate,
                files::PEM_CAP,
            ),
            (
                "client_certificate_key",
                &options.client_certificate_key,
                files::PEM_CAP,
            ),
            (
                "federated_token_file",
                &options.federated_token_file,
                files::SECRET_CAP,
            ),
            ("redis_ca_file", &options.redis_ca_file, files::PEM_CAP),
        ];
        for (option, path, cap) in table {
            let Some(path) = path else { continue };
            if let Err(e @ (files::FileError::NotRegular(_) | files::FileError::TooLarge(_))) =
                files::check(path, cap)
            {
                errors.push(ConfigError::new(
                    option,
                    self.source(option),
                    format!("{} {e}", path.display()),
                    "a regular file (a symlink to one is fine)",
                ))
            }
        }
    }

    /// The credential of `kind` from the typed options; every missing or conflicting
    /// option joins `errors`.
    pub(super) fn credential(
        &self,
        options: &Options,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> Option<Credential> {
        let kind = self.credential_kind().map_err(|e| errors.push(e)).ok()?;
        errors.extend(self.missing_for(kind));
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        // With `tenants`, each tenant's credential is made from this one (`in_tenant`).
        let first_tenant = options.tenants.as_ref().and_then(|t| t.first().cloned());
        let home = options.tenant.clone().or(first_tenant);
        let path = |value: &Option<PathBuf>| value.clone().unwrap_or_default();
        Some(match kind {
            AuthKind::Secret => Credential::Secret {
                tenant: text(&home),
                client_id: text(&options.client_id),
                secret: self
                    .secret(options, errors, warnings)
                    .unwrap_or_else(|| Secret::new("")),
            },
            AuthKind::Certificate => Credential::Certificate {
                tenant: text(&home),
                client_id: text(&options.client_id),
                certificate: path(&options.client_certificate),
                key: options.client_certificate_key.clone(),
                alg: options.client_assertion_alg,
            },
            AuthKind::WorkloadIdentity => Credential::WorkloadIdentity {
                tenant: text(&home),
                client_id: text(&options.client_id),
                token_file: path(&options.federated_token_file),
            },
            AuthKind::ManagedIdentity => Credential::ManagedIdentity {
                client_id: options.client_id.clone(),
                endpoint: managed_endpoint(options, env, errors),
            },
        })
    }

    /// Which of an option and its `_file` form (`client_secret` and
    /// `client_secret_file`) counts when both are set: the one from the higher
    /// precedence, with a WARN that says so — a deployment's files and an old config
    /// file meet this way. From the same place they are a conflict.
    pub(super) fn file_form_wins(
        &self,
        direct: &str,
        file: &str,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> Option<bool> {
        let Some(direct_source) = self.given(direct) else {
            return Some(true);
        };
        let file_source = self.source(file);
        let (winner, loser, file_wins) = match direct_source.rank().cmp(&file_source.rank()) {
            std::cmp::Ordering::Equal => {
                errors.push(ConfigError::new(
                    file,
                    file_source,
                    format!(
                        "set together with {direct} (from {})",
                        direct_source.describe(direct)
                    ),
                    &format!("one of {direct} and {file}"),
                ));
                return None;
            }
            std::cmp::Ordering::Greater => ((direct, direct_source), (file, file_source), false),
            std::cmp::Ordering::Less => ((file, file_source), (direct, direct_source), true),
        };
        warnings.push(format!(
            "option {} (from {}) overrides {} (from {}): remove one of them",
            winner.0,
            winner.1.describe(winner.0),
            loser.0,
            loser.1.describe(loser.0)
        ));
        Some(file_wins)
    }

    /// `client_secret`, or what `client_secret_file` holds.
    pub(super) fn secret(
        &self,
        options: &Options,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> Option<Secret> {
        let Some(file) = options.client_secret_file.as_ref() else {
            return options.client_secret.clone();
        };
        match self.file_form_wins("client_secret", "client_secret_file", errors, warnings) {
            Some(true) => {}
            Some(false) => return options.client_secret.clone(),
            None => return None,
        }
        match read_secret_file(file) {
            Ok(secret) => Some(secret),
            Err(problem) => {
                errors.push(ConfigError::new(
                    "client_secret_file",
                    self.source("client_secret_file"),
                    problem,
                    "a readable file holding the secret",
                ));
                None
            }
        }
    }
}
