//! Every option, declared once: its name (the config-file key; `--name` or `--name-…`
//! on the command line; `GRAPH_NAME` in the environment), where it may come from, its
//! default, its help text, and how its value is read into the typed [`Options`]. The
//! command line's argh struct, `--help`, the config-file checks and the typed options
//! are all generated from the declarations in [`options!`]; docs/options.md's table is
//! checked against them by a test.
//!
//! Names, meanings, defaults and `GRAPH_*` variables of the original MsGraphExporter are
//! kept; the others are new in msgx-once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::kinds::{AuthKind, auth_kind};
use super::parse::{self, AssertionAlg, Cloud, Moment, ShardOption, given, optional};
use super::{Backend, ConfigError, Output, PushTarget, QueueType, RedisTarget, StateMode, Values};
use crate::format::RecordFormat;
use crate::logging::LogFormat;
use crate::secret::Secret;
use crate::sources::{Bucket, SourceSpec};

/// What kind of option, and where it may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Value placeholder shown in `--help`; None for switches.
    pub value_name: Option<&'static str>,
    pub default: Option<&'static str>,
    /// Options that only make sense per invocation are refused in a config file.
    pub in_file: bool,
    /// A list or map: a config file may give a YAML sequence or mapping, read into the
    /// command line's comma-separated form.
    pub structured: bool,
    /// Never shown: not in errors, not in `--print_config`.
    pub secret: bool,
    /// A URL: shown without its user and password.
    pub url: bool,
}

const fn value(value_name: &'static str, default: Option<&'static str>) -> Kind {
    Kind {
        value_name: Some(value_name),
        default,
        in_file: true,
        structured: false,
        secret: false,
        url: false,
    }
}

const fn url(default: Option<&'static str>) -> Kind {
    Kind {
        url: true,
        ..value("url", default)
    }
}

const fn structured(value_name: &'static str, default: Option<&'static str>) -> Kind {
    Kind {
        structured: true,
        ..value(value_name, default)
    }
}

const fn secret(value_name: &'static str) -> Kind {
    Kind {
        secret: true,
        ..value(value_name, None)
    }
}

const fn switch(default: &'static str) -> Kind {
    Kind {
        value_name: None,
        ..value("", Some(default))
    }
}

const fn cli_only(value_name: &'static str) -> Kind {
    Kind {
        in_file: false,
        ..value(value_name, None)
    }
}

const fn cli_switch() -> Kind {
    Kind {
        in_file: false,
        ..switch("false")
    }
}

/// One option's declaration, as the rest of the configuration sees it.
#[derive(Debug)]
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: Kind,
    /// The doc comment of its declaration.
    doc: &'static str,
}

impl OptionSpec {
    pub fn is_switch(&self) -> bool {
        self.kind.value_name.is_none()
    }

    /// The help text: the declaration's doc comment on one line.
    pub fn help(&self) -> String {
        let lines: Vec<&str> = self.doc.lines().map(str::trim).collect();
        lines.join(" ").trim().to_string()
    }
}

/// Declares the options: for each, `name: Type = kind(…), reader;` after its doc
/// comment. Generates [`OPTIONS`], the typed [`Options`] and the command line's argh
/// struct, so an option is added in one place.
macro_rules! options {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $ty:ty = $kind:expr, $read:expr;
    )*) => {
        /// Every option, in `--help` order.
        pub const OPTIONS: &[OptionSpec] = &[$(
            OptionSpec {
                name: stringify!($name),
                kind: $kind,
                doc: concat!($($doc, "\n"),+),
            }
        ),*];

        /// The typed value of every option (see the declarations for each one's
        /// meaning).
        #[derive(Debug, Clone)]
        pub struct Options {
            $(
                $(#[doc = $doc])+
                pub $name: $ty,
            )*
        }

        impl Options {
            /// Reads every option from `values`; each problem joins `errors`, so all
            /// of them are reported at once.
            pub(super) fn read(values: &Values, errors: &mut Vec<ConfigError>) -> Option<Options> {
                $( let $name = values.read(stringify!($name), $read, errors); )*
                Some(Options { $( $name: $name?, )* })
            }
        }

        /// The command line as argh sees it once the original's spellings are
        /// rewritten: every option takes a value (switches get `true`/`false`).
        #[derive(argh::FromArgs)]
        /// Export Entra audit logs from Microsoft Graph into Redis (see --help).
        pub(super) struct CliArgs {
            $(
                #[argh(option, description = "see --help")]
                $name: Option<String>,
            )*
        }

        impl CliArgs {
            pub(super) fn into_values(self) -> Vec<(&'static str, Option<String>)> {
                vec![$((stringify!($name), self.$name)),*]
            }
        }
    };
}

options! {
    /// YAML config file; its directives are the option names below
    app_config: Option<PathBuf> = cli_only("path"), optional(parse::path);
    /// print every effective option with where it came from (secrets hidden), then exit
    print_config: bool = cli_switch(), given(parse::boolean);
    /// check the deployment instead of exporting: Redis (with a harmless write), a
    /// token, one record of each source; exit 0 only when all pass
    check: bool = cli_switch(), given(parse::boolean);
    /// how the application signs in: secret, certificate, workload_identity or
    /// managed_identity (default: inferred from the credentials given)
    auth: Option<AuthKind> = value("kind", None), optional(auth_kind);
    /// Entra ID tenant (GUID or domain) of the application (AZURE_TENANT_ID also works)
    tenant: Option<String> = value("tenant", None), optional(parse::tenant);
    /// several tenants to export in one run with the application's credentials,
    /// comma-separated (YAML: a list); each has its own keys ({tenant} in queue_key,
    /// queue_keys, file_path and state_file; queue_key without it becomes
    /// {queue_key}:{tenant}), state, budget and token, and is used instead of tenant
    tenants: Option<Vec<String>> = structured("tenants", None), optional(parse::tenants);
    /// this process's share of tenants when K processes split them (a Kubernetes
    /// Indexed Job): i/K exports the tenants that fall to shard i of K (0 to K-1) by a
    /// stable hash; K alone takes i from JOB_COMPLETION_INDEX; default: every tenant
    shard: Option<ShardOption> = value("i/K", None), optional(parse::shard);
    /// client id of the application, or of a user-assigned managed identity
    /// (AZURE_CLIENT_ID also works)
    client_id: Option<String> = value("id", None), optional(parse::non_empty);
    /// client secret of the application (never logged; AZURE_CLIENT_SECRET also works)
    client_secret: Option<Secret> = secret("secret"), optional(|v| parse::non_empty(v).map(Secret::new));
    /// file holding the client secret (a Kubernetes secret mount; GRAPH_CLIENT_SECRET_FILE)
    client_secret_file: Option<PathBuf> = value("path", None), optional(parse::path);
    /// PEM file with the certificate and its private key, or the certificate alone
    /// with client_certificate_key (AZURE_CLIENT_CERTIFICATE_PATH also works)
    client_certificate: Option<PathBuf> = value("path", None), optional(parse::path);
    /// PEM file with the certificate's private key, when it is not in client_certificate
    client_certificate_key: Option<PathBuf> = value("path", None), optional(parse::path);
    /// signature of the certificate's client assertion: ps256 (x5t#S256, Microsoft's
    /// current form) or rs256 (x5t, SHA-1 thumbprint, for tenants that still need it)
    client_assertion_alg: AssertionAlg = value("ps256|rs256", Some("ps256")), given(parse::assertion_alg);
    /// workload identity: file with the federated (Kubernetes service account) token,
    /// read afresh for every token request (AZURE_FEDERATED_TOKEN_FILE also works)
    federated_token_file: Option<PathBuf> = value("path", None), optional(parse::path);
    /// managed identity: the instance metadata endpoint (default
    /// http://169.254.169.254; App Service's IDENTITY_ENDPOINT is used when set)
    msi_endpoint: Option<url::Url> = url(None), optional(parse::origin);
    /// national cloud: global, usgov, usgov_dod or china; sets login_url and graph_url
    /// unless they are given
    cloud: Cloud = value("name", Some("global")), given(parse::cloud);
    /// audit streams to export, comma-separated: signins, signins_noninteractive,
    /// signins_service_principal, signins_managed_identity, directory_audits,
    /// provisioning, risk_detections, security_alerts
    sources: Vec<&'static SourceSpec> = structured("names", Some("signins")), given(parse::sources);
    /// seconds to shift the window back from now, so late records are in Graph
    timelag: u64 = value("seconds", Some("120")), given(|v| parse::integer(v, 0, 30 * 86_400));
    /// number of frames fetched in parallel
    streams: usize = value("count", Some("2")), given(|v| parse::integer(v, 1, 64).map(|n| n as usize));
    /// seconds of records per frame (one Graph query each)
    stream_frame: u64 = value("seconds", Some("30")), given(|v| parse::integer(v, 1, 86_400));
    /// records per Graph page ($top), 1 to 1000 (the original defaulted to 50)
    page_size: u32 = value("records", Some("1000")), given(|v| parse::integer(v, 1, 1000).map(|n| n as u32));
    /// requests allowed per window of the reports bucket (sign-ins, audits,
    /// provisioning), shared by all streams (Graph: 5 per 10 s per app and tenant);
    /// 0 disables
    rate_limit: Option<(u32, Duration)> = value("n/seconds", Some("5/10")), given(parse::rate_limit);
    /// requests allowed per window of the reports bucket across every tenant of the
    /// application, shared by all its processes (Graph: 122 per 10 s per app); 0
    /// disables
    app_rate_limit: Option<(u32, Duration)> = value("n/seconds", Some("122/10")), given(parse::rate_limit);
    /// limits of the other buckets (defaults: Graph's identity_protection=1/1,
    /// security=150/60, intune_auditing=1000/20), comma-separated; 0 disables
    rate_limits: BTreeMap<Bucket, Option<(u32, Duration)>> = structured("bucket=n/seconds", Some("")), given(parse::rate_limits);
    /// retries of one transient failure (429, 5xx, network, garbled page) before its
    /// frame fails
    max_retries: u32 = value("count", Some("8")), given(|v| parse::integer(v, 0, 100).map(|n| n as u32));
    /// no request starts after this many seconds of run time (default 300; none for a
    /// --since backfill); unfinished frames fail
    deadline: Option<Duration> = value("seconds", None), optional(|v| parse::integer(v, 1, 86_400).map(Duration::from_secs));
    /// limit for one HTTP request, body included
    http_timeout: Duration = value("seconds", Some("60")), given(|v| parse::integer(v, 1, 3600).map(Duration::from_secs));
    /// where records go: Redis, the log, or an NDJSON file
    queue_backend: Backend = value("redis|log|file", Some("redis")), given(parse::backend);
    /// Redis list (RPUSH), pub/sub channel (PUBLISH) or stream (XADD)
    queue_type: QueueType = value("list|channel|stream", Some("list")), given(parse::queue_type);
    /// a stream's approximate length cap (XADD MAXLEN ~ N; default none)
    stream_maxlen: Option<u64> = value("entries", None), optional(|v| parse::integer(v, 1, u64::MAX >> 1));
    /// refuse to write while the list or stream already holds this many entries (the
    /// consumers are behind); the frame fails and the watermark holds
    max_queue_len: Option<u64> = value("entries", None), optional(|v| parse::integer(v, 1, u64::MAX >> 1));
    /// a channel PUBLISH that reaches no subscriber counts as delivered (fire and
    /// forget; default: those records fail their frame and are published again later)
    channel_allow_no_subscribers: bool = value("true|false", Some("false")), given(parse::boolean);
    /// name of the Redis list or channel of signins; other sources use
    /// {queue_key}:{source}
    queue_key: String = value("key", Some("ms_graph_exporter")), given(parse::non_empty);
    /// Redis keys of sources other than by the {queue_key}:{source} rule,
    /// comma-separated (e.g. directory_audits=entra_audit)
    queue_keys: BTreeMap<&'static str, String> = structured("source=key", Some("")), given(parse::queue_keys);
    /// redis:// or rediss:// URL (a password as redis://:password@host, an ACL user as
    /// redis://user:password@host), or
    /// redis+sentinel://[:password@]host1:port1,host2:port2/master_name[/db]
    redis_url: RedisTarget = url(Some("redis://localhost:6379?db=0")), given(parse::redis_target);
    /// a Redis Cluster's seed nodes, host:port comma-separated (YAML: a list); redis_url
    /// then gives only the scheme (TLS) and the credentials
    redis_cluster: Option<Vec<String>> = structured("host:port", None), optional(parse::nodes);
    /// file holding redis_url (a Kubernetes secret mount; GRAPH_REDIS_URL_FILE)
    redis_url_file: Option<PathBuf> = value("path", None), optional(parse::path);
    /// PEM file of the CA that signed a rediss:// server's certificate (a private CA)
    redis_ca_file: Option<PathBuf> = value("path", None), optional(parse::path);
    /// do not verify a rediss:// server's certificate (a WARN every run)
    redis_tls_insecure: bool = value("true|false", Some("false")), given(parse::boolean);
    /// number of writer threads (the original's greenlets, same name)
    greenlets_count: usize = value("count", Some("10")), given(|v| parse::integer(v, 1, 256).map(|n| n as usize));
    /// MiB that pages may hold between their request and their write (a page larger
    /// goes alone)
    page_memory_mb: u64 = value("MiB", Some("24")), given(|v| parse::integer(v, 1, 4096));
    /// wait up to redis_pool_timeout for a pooled connection (--no-redis_pool_block:
    /// take a free or new one up to the maximum, fail at once when all are in use)
    redis_pool_block: bool = switch("true"), given(parse::boolean);
    /// accepted for compatibility with the original; has no effect
    redis_pool_gevent_queue: bool = switch("true"), given(parse::boolean);
    /// size of the Redis connection pool
    redis_pool_max_connections: u32 = value("count", Some("15")), given(|v| parse::integer(v, 1, 1024).map(|n| n as u32));
    /// seconds to wait for a pooled Redis connection
    redis_pool_timeout: Duration = value("seconds", Some("1")), given(|v| parse::integer(v, 1, 3600).map(Duration::from_secs));
    /// Microsoft Graph host (default: the cloud's, https://graph.microsoft.com)
    graph_url: Option<url::Url> = url(None), optional(parse::origin);
    /// identity platform host that issues tokens (default: the cloud's,
    /// https://login.microsoftonline.com; AZURE_AUTHORITY_HOST also works)
    login_url: Option<url::Url> = url(None), optional(parse::origin);
    /// NDJSON output of queue_backend file; - is stdout; {source} is replaced by the
    /// source (required with several sources)
    file_path: Output = value("path", Some("-")), given(parse::output);
    /// error, warn, info, debug or trace (logs go to stderr)
    log_level: log::LevelFilter = value("level", Some("info")), given(parse::log_level);
    /// write the run's metrics (Prometheus text format) to this file at the end of
    /// every run, for node_exporter's textfile collector
    metrics_file: Option<PathBuf> = value("path", None), optional(parse::path);
    /// push the run's metrics to this Pushgateway (job msgx_once, grouped by source
    /// and queue key); user:password@ in the URL is sent as basic auth
    metrics_push_url: Option<PushTarget> = url(None), optional(parse::push_url);
    /// text, or json: one object per line with ts, level, msg and fields (the
    /// summary's figures among them)
    log_format: LogFormat = value("text|json", Some("text")), given(parse::log_format);
    /// fetch only these sign-in properties (Graph $select, comma-separated; id and
    /// createdDateTime are always added; sign-in sources only)
    select: Option<Vec<String>> = value("properties", None), optional(parse::select);
    /// auto: resume from the stored watermark, rescan, deduplicate, one run at a time;
    /// off: the original's stateless window
    state: StateMode = value("mode", Some("auto")), given(parse::state_mode);
    /// watermark file of the log and file backends (the redis backend keeps its state
    /// in Redis); {source} as in file_path
    state_file: Option<PathBuf> = value("path", None), optional(parse::path);
    /// most seconds of backlog one run works off, oldest first
    max_catchup: u64 = value("seconds", Some("86400")), given(|v| parse::integer(v, 60, 30 * 86_400));
    /// each second is read once more this many seconds after it became due, for late
    /// records; a list reads it again at each depth (600,7200), deeper reads with the
    /// budget the others leave (0: once only)
    rescan: Vec<u64> = structured("seconds", Some("600")), given(parse::rescan);
    /// sign-ins Microsoft changed after they were first read (an MFA result merged)
    /// are delivered again, whole: deduplicated on id and content
    signin_updates: bool = value("true|false", Some("false")), given(parse::boolean);
    /// how each record is written: graph (as Graph sent it), azure_monitor (the
    /// diagnostic-settings record of its category, as parsers of Entra's Event Hub
    /// export read it) or ocsf (sign-ins as OCSF 1.8.0 Authentication); a source
    /// without such a shape stays graph, said at start
    record_format: RecordFormat = value("graph|azure_monitor|ocsf", Some("graph")), given(parse::record_format);
    /// backfill: export [since, until) instead of the lagged window; a time, a date
    /// (2026-11-29) or an age (-24h, -90m, -2d)
    since: Option<Moment> = cli_only("when"), optional(parse::moment);
    /// backfill end (exclusive), in the same forms; defaults to the end of the lagged
    /// window
    until: Option<Moment> = cli_only("when"), optional(parse::moment);
}

pub fn find(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|spec| spec.name == name)
}

/// The option a mistyped name most likely meant (dashes read as underscores).
pub fn nearest(typed: &str) -> Option<&'static str> {
    let wanted = typed.replace('-', "_");
    let (d, name) = OPTIONS
        .iter()
        .map(|spec| (distance(&wanted, spec.name), spec.name))
        .min()?;
    (d <= 3 && d * 3 <= wanted.chars().count()).then_some(name)
}

/// Levenshtein distance, by characters.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `value` with everything between `scheme://` and its last `@` hidden: a URL's user
/// and password, however malformed the rest (a password may hold `/`, `:` or `@`).
pub(super) fn redact_userinfo(value: &str) -> String {
    let Some(at) = value.rfind('@') else {
        return value.to_string();
    };
    let start = value.find("://").map_or(0, |i| i + 3).min(at);
    format!("{}[redacted]{}", &value[..start], &value[at..])
}

/// A value as it may be shown: secrets hidden, URLs without their password.
pub(super) fn shown(option: &str, value: &str) -> String {
    match find(option) {
        Some(spec) if spec.kind.secret => "(hidden)".to_string(),
        Some(spec) if spec.kind.url => format!("{:?}", redact_userinfo(value)),
        _ => format!("{value:?}"),
    }
}

pub fn env_name(name: &str) -> String {
    format!("GRAPH_{}", name.to_ascii_uppercase())
}

/// The `--help` text, generated from the table so it cannot drift from it.
pub fn help_text() -> String {
    let mut text = String::from(
        "Usage: msgx-once [--option value]...\n\n\
         Export one lagged window (or a --since/--until backfill) of Entra ID audit logs\n\
         from Microsoft Graph into Redis, then exit.\n\n\
         Every option can also be set as GRAPH_<NAME> in the environment or as a\n\
         directive in the --app_config YAML file. Precedence: config file, then\n\
         command line, then environment, then default. Flags may be spelled with\n\
         underscores or dashes, and as --name value or --name=value.\n\nOptions:\n",
    );
    for spec in OPTIONS {
        let flag = match spec.kind.value_name {
            Some(value) => format!("--{} <{}>", spec.name, value),
            None => format!("--[no-]{}", spec.name),
        };
        text.push_str(&format!("  {flag}\n        {}\n", spec.help()));
        let default = spec
            .kind
            .default
            .filter(|d| !d.is_empty())
            .map(|d| format!(", default {d}"))
            .unwrap_or_default();
        let scope = if spec.kind.in_file {
            ""
        } else {
            "; not in the config file"
        };
        text.push_str(&format!(
            "        [env {}{default}{scope}]\n",
            env_name(spec.name)
        ));
    }
    text.push_str(
        "  --help, -h\n        print this help\n  --version\n        print the version\n\n\
         Exit codes: 0 exported, 1 incomplete (a frame failed), 2 usage or config error,\n\
         3 authentication refused, 4 another run holds the lock, 130/143 interrupted.\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend is its file and a row of `sink::BACKENDS`; `--help`'s placeholder for
    /// `queue_backend` must name every row, in order.
    #[test]
    fn queue_backends_placeholder_names_every_backend() {
        let names: Vec<&str> = crate::sink::BACKENDS.iter().map(|b| b.name).collect();
        assert_eq!(
            find("queue_backend").and_then(|o| o.kind.value_name),
            Some(names.join("|").as_str())
        );
    }

    /// The options table of docs/options.md: one row per option, `| \`name\` |
    /// default | … |`.
    fn documented_rows() -> Vec<(String, String)> {
        include_str!("../../docs/options.md")
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split(" | ").collect();
                (
                    cells[0].trim_start_matches("| ").to_string(),
                    cells[1].to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn the_options_doc_documents_every_option_with_its_default() {
        let rows = documented_rows();
        let documented: Vec<String> = rows.iter().map(|(name, _)| name.clone()).collect();
        let declared: Vec<String> = OPTIONS.iter().map(|s| format!("`{}`", s.name)).collect();
        assert_eq!(
            documented, declared,
            "docs/options.md rows, in declaration order"
        );
        for (spec, (_, default)) in OPTIONS.iter().zip(&rows) {
            let expected = match spec.kind.default.filter(|d| !d.is_empty()) {
                Some(d) => format!("`{d}`"),
                None => "—".to_string(),
            };
            assert!(
                default.starts_with(&expected),
                "docs/options.md default of {}: {default:?}, declared {expected:?}",
                spec.name
            );
        }
    }

    #[test]
    fn every_default_reads() {
        let values = Values::defaults();
        let mut errors = Vec::new();
        assert!(Options::read(&values, &mut errors).is_some(), "{errors:?}");
        assert!(errors.is_empty());
    }

    #[test]
    fn help_lists_every_option_once() {
        let help = help_text();
        for spec in OPTIONS {
            let flag = match spec.is_switch() {
                true => format!("--[no-]{}\n", spec.name),
                false => format!("--{} <", spec.name),
            };
            assert_eq!(help.matches(&flag).count(), 1, "{}", spec.name);
        }
    }
}
