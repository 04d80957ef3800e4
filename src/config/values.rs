//! Raw option values and where each came from ([`Values`]), before they are typed:
//! the defaults, the environment, the command line and the config file, in rising
//! precedence; and what `--print_config` shows of them.

use std::collections::BTreeMap;
use std::path::Path;

use super::spec::{redact_userinfo, shown};
use super::{CRON_DEADLINE, Config, Options, spec};
use crate::error::{ConfigError, Origin};

/// Raw option values with their sources; later `set`s win.
#[derive(Default)]
pub(super) struct Values(BTreeMap<&'static str, (String, Origin)>);

/// Whether the command line or the environment asks for JSON logs (`--log_format
/// json`, `--log-format=json`, `GRAPH_LOG_FORMAT=json`): then even the configuration's
/// own errors are JSON lines, whatever else is wrong with it.
pub fn asks_for_json(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> bool {
    let json = |value: &str| value.trim().eq_ignore_ascii_case("json");
    let mut from_cli = None;
    let mut tokens = args.iter();
    while let Some(token) = tokens.next() {
        let Some(flag) = token.strip_prefix("--") else {
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag, None),
        };
        if name.replace('-', "_") == "log_format" {
            from_cli = inline.or_else(|| tokens.next().cloned());
        }
    }
    match from_cli {
        Some(value) => json(&value),
        None => env(&spec::env_name("log_format")).is_some_and(|v| json(&v)),
    }
}

/// An undocumented environment knob of the tests.
pub(super) fn test_knob<T>(
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
    reader: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    env(name)
        .map(|v| {
            reader(&v).map_err(|accepted| {
                ConfigError::usage(format!(
                    "environment variable {name}: invalid value {v:?}; accepted: {accepted}"
                ))
            })
        })
        .transpose()
}

/// Whether a config-file value is a secret: the client secret, or a URL with a
/// password.
pub(super) fn holds_secret(name: &str, value: &str) -> bool {
    match spec::find(name) {
        Some(spec) if spec.kind.secret => true,
        Some(spec) if spec.kind.url => redact_userinfo(value) != value,
        _ => false,
    }
}

/// A WARN when a config file holding `secrets` can be read by others than its owner.
#[cfg(unix)]
pub(super) fn readable_by_others(path: &Path, secrets: &[&str]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (!secrets.is_empty() && mode & 0o077 != 0).then(|| {
        format!(
            "config file {} holds {} and others can read it (mode {:o}): chmod 600 it, or \
             move the secret to a *_file option",
            path.display(),
            secrets.join(" and "),
            mode & 0o777
        )
    })
}

#[cfg(not(unix))]
pub(super) fn readable_by_others(_path: &Path, _secrets: &[&str]) -> Option<String> {
    None
}

/// The value a run uses for option `name` where it is derived rather than given, with
/// why: from the options alone (a cron run's deadline, the cloud's hosts), or from the
/// whole configuration when it could be built (the credential kind, redis_url_file).
fn derived_value(
    options: Option<&Options>,
    config: Option<&Config>,
    name: &str,
) -> Option<(String, String)> {
    let host = |given: &Option<url::Url>,
                pick: fn((&'static str, &'static str)) -> &'static str| {
        let options = options?;
        match given {
            Some(_) => None,
            None => Some((
                pick(options.cloud.hosts()).to_string(),
                format!("the {} cloud's", options.cloud.name()),
            )),
        }
    };
    match name {
        "auth" => config.map(|c| {
            (
                c.credential.kind().name().to_string(),
                "inferred from the credentials given".into(),
            )
        }),
        "graph_url" => host(&options?.graph_url, |(_, graph)| graph),
        "login_url" => host(&options?.login_url, |(login, _)| login),
        "redis_url" => config
            .filter(|c| c.redis.location() != c.options.redis_url.location())
            .map(|c| {
                (
                    c.redis.shown(),
                    "what redis_url_file holds (any password hidden)".into(),
                )
            }),
        "deadline" => {
            let options = options?;
            (options.deadline.is_none() && options.since.is_none()).then(|| {
                (
                    CRON_DEADLINE.as_secs().to_string(),
                    "a cron run's default (a --since backfill has none)".into(),
                )
            })
        }
        _ => None,
    }
}

impl Values {
    /// Every declared default.
    pub(crate) fn defaults() -> Self {
        let mut values = Values::default();
        for spec in spec::OPTIONS {
            if let Some(default) = spec.kind.default {
                values.set(spec.name, default.to_string(), Origin::Default);
            }
        }
        values
    }

    pub(super) fn set(&mut self, name: &str, value: String, source: Origin) {
        if let Some(spec) = spec::find(name) {
            self.0.insert(spec.name, (value, source));
        }
    }

    pub(super) fn get(&self, name: &str) -> Option<(&str, &Origin)> {
        self.0.get(name).map(|(v, s)| (v.as_str(), s))
    }

    pub(super) fn source(&self, name: &str) -> Origin {
        self.get(name).map_or(Origin::Unset, |(_, s)| s.clone())
    }

    /// Where the user gave `name`, if they did.
    pub(super) fn given(&self, name: &str) -> Option<Origin> {
        Some(self.source(name)).filter(Origin::is_given)
    }

    /// Reads option `name` with `reader`; a complaint joins `errors`.
    pub(super) fn read<T>(
        &self,
        name: &str,
        reader: impl Fn(Option<&str>) -> Result<T, String>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<T> {
        let (value, source) = match self.get(name) {
            Some((value, source)) => (Some(value), source.clone()),
            None => (None, Origin::Unset),
        };
        reader(value)
            .map_err(|accepted| {
                errors.push(ConfigError::invalid(
                    name,
                    source,
                    shown(name, value.unwrap_or_default()),
                    accepted,
                ))
            })
            .ok()
    }

    /// `--print_config`: every option with a value, where it came from, secrets hidden.
    ///
    /// Where a value is derived rather than given, the effective one is shown with why
    /// (the credential kind inferred, the cloud's hosts, a cron run's deadline); when
    /// the configuration cannot run yet, `problems` close the listing.
    pub(super) fn print(
        &self,
        config: Option<&Config>,
        problems: Option<&ConfigError>,
        warnings: &[String],
    ) -> String {
        let mut text = String::new();
        let options = Options::read(self, &mut Vec::new());
        for spec in spec::OPTIONS {
            let derived = derived_value(options.as_ref(), config, spec.name);
            let (value, source) = match (self.get(spec.name), derived) {
                (_, Some((value, why))) if spec.name == "redis_url" => (format!("{value:?}"), why),
                (Some((value, source)), _) if source.is_given() => {
                    (shown(spec.name, value), source.describe(spec.name))
                }
                (_, Some((value, why))) => (format!("{value:?}"), why),
                (Some((value, source)), None) => {
                    (shown(spec.name, value), source.describe(spec.name))
                }
                (None, None) => ("(not set)".to_string(), "nowhere".to_string()),
            };
            text.push_str(&format!("{} = {value}  # {source}\n", spec.name));
        }
        // Which tenants this process's shard exports, its index resolved.
        if let Some((shard, mine, all)) = config.and_then(Config::shard_share) {
            text.push_str(&format!(
                "# shard {shard}: {} of the {all} tenants: {}\n",
                mine.len(),
                crate::logging::escape(&mine.join(","))
            ));
        }
        // What a run would say at WARN, before whether it can run.
        for warning in warnings
            .iter()
            .chain(config.iter().flat_map(|c| &c.warnings))
        {
            text.push_str(&format!("# WARN: {warning}\n"));
        }
        match problems {
            None => text.push_str("# ready to run\n"),
            Some(problems) => {
                text.push_str("# not ready to run yet:\n");
                for line in problems.lines() {
                    text.push_str(&format!("#   {line}\n"));
                }
            }
        }
        text
    }
}

/// The Azure SDK's environment names, read below the `GRAPH_*` ones (the AKS
/// workload-identity webhook injects these).
pub(super) const AZURE_NAMES: &[(&str, &str)] = &[
    ("tenant", "AZURE_TENANT_ID"),
    ("client_id", "AZURE_CLIENT_ID"),
    ("client_secret", "AZURE_CLIENT_SECRET"),
    ("client_certificate", "AZURE_CLIENT_CERTIFICATE_PATH"),
    ("federated_token_file", "AZURE_FEDERATED_TOKEN_FILE"),
    ("login_url", "AZURE_AUTHORITY_HOST"),
];

/// `option` is needed but set nowhere: where it can be set.
pub(super) fn missing(option: &str, why: &str) -> ConfigError {
    let mut accepted = format!(
        "set it in the config file, as --{option}, or as {}",
        spec::env_name(option)
    );
    if let Some((_, azure)) = AZURE_NAMES.iter().find(|(name, _)| *name == option) {
        accepted.push_str(&format!(" (or {azure})"));
    }
    ConfigError::new(option, Origin::Unset, format!("missing{why}"), &accepted)
}
