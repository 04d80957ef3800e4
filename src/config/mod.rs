//! Configuration: gathers option values from the config file, the command line, the
//! environment and the defaults (in that order of precedence, as the original did),
//! checks them — reporting every problem at once —, and builds the typed [`Config`] a
//! run is made from. Every option is declared once, in [`spec`].

mod cli;
mod file;
mod parse;
pub mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

pub use parse::{AssertionAlg, AuthKind, Cloud};
pub use spec::Options;

use crate::secret::Secret;
use crate::sources::{Bucket, SourceSpec};

/// Where an option's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Not given anywhere (for "missing" errors).
    Unset,
    Default,
    /// The environment variable it was read from.
    Env(String),
    Cli,
    File(PathBuf),
}

impl Source {
    fn describe(&self, option: &str) -> String {
        match self {
            Source::Unset => "nowhere".into(),
            Source::Default => "the default".into(),
            Source::Env(variable) => format!("environment variable {variable}"),
            Source::Cli => format!("command line --{option}"),
            Source::File(path) => format!("config file {}", path.display()),
        }
    }

    /// Given by the user rather than defaulted.
    fn is_given(&self) -> bool {
        !matches!(self, Source::Unset | Source::Default)
    }

    /// Precedence, as the original's: the config file over the command line over the
    /// environment (`GRAPH_*` over the Azure SDK's names) over the defaults.
    fn rank(&self) -> u8 {
        match self {
            Source::Unset | Source::Default => 0,
            Source::Env(variable) if !variable.starts_with("GRAPH_") => 1,
            Source::Env(_) => 2,
            Source::Cli => 3,
            Source::File(_) => 4,
        }
    }
}

/// `value` with everything between `scheme://` and its last `@` hidden: a URL's user
/// and password, however malformed the rest (a password may hold `/`, `:` or `@`).
fn redact_userinfo(value: &str) -> String {
    let Some(at) = value.rfind('@') else {
        return value.to_string();
    };
    let start = value.find("://").map_or(0, |i| i + 3).min(at);
    format!("{}[redacted]{}", &value[..start], &value[at..])
}

/// A value as it may be shown: secrets hidden, URLs without their password.
fn shown(option: &str, value: &str) -> String {
    match spec::find(option) {
        Some(spec) if spec.kind.secret => "(hidden)".to_string(),
        Some(spec) if spec.kind.url => format!("{:?}", redact_userinfo(value)),
        _ => format!("{value:?}"),
    }
}

/// A usage or configuration error: exit code 2. It may carry further problems found
/// in the same configuration, so all are reported at once.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Boxed: errors travel in `Result`s, which should stay small.
    option: Option<Box<(String, Source)>>,
    problem: String,
    accepted: Option<String>,
    more: Vec<ConfigError>,
}

impl ConfigError {
    pub fn new(option: &str, source: Source, problem: String, accepted: &str) -> Self {
        ConfigError {
            option: Some(Box::new((option.to_string(), source))),
            problem,
            accepted: Some(accepted.to_string()),
            more: Vec::new(),
        }
    }

    pub fn invalid(option: &str, source: Source, value: &str, accepted: String) -> Self {
        let problem = format!("invalid value {}", shown(option, value));
        Self::new(option, source, problem, &accepted)
    }

    pub fn usage(problem: String) -> Self {
        ConfigError {
            option: None,
            problem,
            accepted: None,
            more: Vec::new(),
        }
    }

    fn missing(option: &str, why: &str) -> Self {
        let mut accepted = format!(
            "set it in the config file, as --{option}, or as {}",
            spec::env_name(option)
        );
        if let Some((_, azure)) = AZURE_NAMES.iter().find(|(name, _)| *name == option) {
            accepted.push_str(&format!(" (or {azure})"));
        }
        ConfigError::new(option, Source::Unset, format!("missing{why}"), &accepted)
    }

    /// All of `errors` as one (None when there are none).
    fn all(mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        if errors.is_empty() {
            return None;
        }
        let mut first = errors.remove(0);
        first.more.extend(errors);
        Some(first)
    }

    /// Each problem as an error of its own.
    fn into_each(mut self) -> Vec<ConfigError> {
        let more = std::mem::take(&mut self.more);
        let mut each = vec![self];
        each.extend(more.into_iter().flat_map(ConfigError::into_each));
        each
    }

    /// The option the (first) error is about, if it is about one.
    pub fn option(&self) -> Option<&str> {
        self.option.as_ref().map(|o| o.0.as_str())
    }

    /// Every problem, one line each.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![self.line()];
        lines.extend(self.more.iter().map(ConfigError::line));
        lines
    }

    fn line(&self) -> String {
        let mut line = String::new();
        if let Some((name, source)) = self.option.as_deref() {
            line.push_str(&format!("option {name}: {}", self.problem));
            if *source != Source::Unset {
                line.push_str(&format!(" (from {})", source.describe(name)));
            }
        } else {
            line.push_str(&self.problem);
        }
        if let Some(accepted) = &self.accepted {
            line.push_str(&format!("; accepted: {accepted}"));
        }
        line
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Log,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    List,
    Channel,
    Stream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Path(PathBuf),
}

/// A Redis URL whose password must not be shown: `Debug` and [`RedisTarget::endpoint`]
/// give host, port and database only.
#[derive(Clone)]
pub struct RedisTarget {
    url: Secret,
    endpoint: String,
    /// `redis+sentinel://`: the primary is found through these sentinels.
    sentinel: Option<SentinelTarget>,
}

/// Where a Sentinel-managed primary is found.
#[derive(Clone, Debug)]
pub struct SentinelTarget {
    /// `host:port` of each sentinel.
    pub sentinels: Vec<String>,
    /// The monitored primary's name.
    pub master: String,
    pub db: i64,
    /// The primary's password (sentinels are reached without one).
    pub password: Option<Secret>,
}

impl RedisTarget {
    /// `redis+sentinel://[:password@]host1:port1,host2:port2/master_name[/db]`.
    fn sentinel(target: SentinelTarget) -> Self {
        let endpoint = format!(
            "redis+sentinel://{}/{}/{}",
            target.sentinels.join(","),
            target.master,
            target.db
        );
        RedisTarget {
            url: Secret::new(""),
            endpoint,
            sentinel: Some(target),
        }
    }

    /// The sentinels to ask for the primary, if this is a Sentinel deployment.
    pub fn sentinels(&self) -> Option<&SentinelTarget> {
        self.sentinel.as_ref()
    }

    fn new(url: url::Url) -> Self {
        let endpoint = format!(
            "{}://{}:{}{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port().unwrap_or(6379),
            url.path()
        );
        RedisTarget {
            url: Secret::new(url.to_string()),
            endpoint,
            sentinel: None,
        }
    }

    /// The full URL, password included: only for opening the connection.
    pub fn url(&self) -> &Secret {
        &self.url
    }

    /// `redis://host:port/db`, safe to log.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({})", self.endpoint)
    }
}

/// A Pushgateway: its URL without credentials (safe to log) and, when the URL held
/// `user:password@`, the basic-auth header value they make.
#[derive(Clone)]
pub struct PushTarget {
    pub url: url::Url,
    pub authorization: Option<Secret>,
}

impl fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PushTarget({})", self.url)
    }
}

/// Whether runs keep a watermark, deduplicate and lock (`state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateMode {
    Auto,
    Off,
}

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

/// A checked configuration: every option ([`Options`], through `Deref`) and what is
/// derived from them — the credential, the effective hosts, the backfill bounds.
#[derive(Debug, Clone)]
pub struct Config {
    pub options: Options,
    pub credential: Credential,
    /// `graph_url`, or the cloud's Graph host.
    pub graph_url: url::Url,
    /// `login_url`, or the cloud's identity platform host.
    pub login_url: url::Url,
    /// `redis_url`, or what `redis_url_file` holds.
    pub redis: RedisTarget,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// A fixed "now" for replaying cron runs in tests (`MSGX_NOW`, undocumented in --help).
    pub fixed_now: Option<OffsetDateTime>,
    /// How often a long run logs its progress (10 s; `MSGX_PROGRESS_SECONDS` in tests).
    pub progress_every: Duration,
    /// Backoffs times this (1; `MSGX_BACKOFF_MS` = the first retry's ceiling in
    /// tests, so they need not sleep through real backoffs).
    pub backoff_scale: f64,
    /// Said at WARN once logging is set up: values the config file overrode, options
    /// without effect, a config file others can read.
    pub warnings: Vec<String>,
}

impl std::ops::Deref for Config {
    type Target = Options;

    fn deref(&self) -> &Options {
        &self.options
    }
}

impl Config {
    /// Where `source`'s records go: `queue_key` for signins, `{queue_key}:{source}` for
    /// the others, unless `queue_keys` says otherwise. Its state keys follow it.
    pub fn queue_key_of(&self, source: &SourceSpec) -> String {
        match self.queue_keys.get(source.name) {
            Some(key) => key.clone(),
            None if source.name == crate::sources::sign_ins().name => self.queue_key.clone(),
            None => format!("{}:{}", self.queue_key, source.name),
        }
    }

    /// When no request may start any more, from the run's start: `deadline`, else
    /// [`CRON_DEADLINE`] for a cron run — so a stuck run never overlaps several later
    /// ticks — and never for a backfill.
    pub fn run_deadline(&self) -> Duration {
        match (self.deadline, self.since) {
            (Some(deadline), _) => deadline,
            (None, None) => CRON_DEADLINE,
            // A century: never, in a form `Instant` arithmetic takes.
            (None, Some(_)) => Duration::from_secs(100 * 365 * 86_400),
        }
    }

    /// The request budget of `bucket`: `rate_limit` for reports, `rate_limits` or
    /// Graph's documented limit for the others.
    pub fn rate_limit_of(&self, bucket: Bucket) -> Option<(u32, Duration)> {
        match (bucket, self.rate_limits.get(&bucket)) {
            (Bucket::Reports, _) => self.rate_limit,
            (_, Some(limit)) => *limit,
            (_, None) => {
                let (requests, seconds) = bucket.graph_limit();
                Some((requests, Duration::from_secs(seconds)))
            }
        }
    }

    /// Whose budget the run spends: (tenant, application), as Graph counts it.
    pub fn budget_owner(&self) -> (String, String) {
        let (tenant, client) = match &self.credential {
            Credential::Secret {
                tenant, client_id, ..
            }
            | Credential::Certificate {
                tenant, client_id, ..
            }
            | Credential::WorkloadIdentity {
                tenant, client_id, ..
            } => (Some(tenant.as_str()), Some(client_id.as_str())),
            Credential::ManagedIdentity { client_id, .. } => {
                (self.tenant.as_deref(), client_id.as_deref())
            }
        };
        (
            tenant.unwrap_or("-").to_string(),
            client.unwrap_or("managed-identity").to_string(),
        )
    }

    /// The configuration of one source's export: its queue key, its `{source}` in
    /// file_path and state_file, its page cap; `select` only for sign-ins. The
    /// sources share the fetchers, so each cuts its ranges into its share of `streams`
    /// frames (at least one): a quiet source's minute costs one request a pass, not
    /// one per stream.
    pub fn for_source(&self, source: &'static SourceSpec) -> Config {
        let per_source = |path: &PathBuf| {
            PathBuf::from(
                path.to_string_lossy()
                    .replace(SOURCE_PLACEHOLDER, source.name),
            )
        };
        let mut options = self.options.clone();
        options.sources = vec![source];
        options.streams = (self.streams / self.sources.len().max(1)).max(1);
        options.queue_key = self.queue_key_of(source);
        options.page_size = self.page_size.min(source.max_top);
        options.select = self.select.clone().filter(|_| source.is_sign_ins());
        if let Output::Path(path) = &self.file_path {
            options.file_path = Output::Path(per_source(path));
        }
        options.state_file = self.state_file.as_ref().map(per_source);
        Config {
            options,
            ..self.clone()
        }
    }
}

/// A cron run's deadline unless one is given.
pub const CRON_DEADLINE: Duration = Duration::from_secs(300);

/// Replaced by the source's name in `file_path` and `state_file`.
const SOURCE_PLACEHOLDER: &str = "{source}";

/// The Azure SDK's environment names, read below the `GRAPH_*` ones (the AKS
/// workload-identity webhook injects these).
const AZURE_NAMES: &[(&str, &str)] = &[
    ("tenant", "AZURE_TENANT_ID"),
    ("client_id", "AZURE_CLIENT_ID"),
    ("client_secret", "AZURE_CLIENT_SECRET"),
    ("client_certificate", "AZURE_CLIENT_CERTIFICATE_PATH"),
    ("federated_token_file", "AZURE_FEDERATED_TOKEN_FILE"),
    ("login_url", "AZURE_AUTHORITY_HOST"),
];

/// Graph keeps audit logs 30 days (sign-ins and audits; risk detections up to 90).
const RETENTION_DAYS: i64 = 30;

/// What one invocation asks for.
#[derive(Debug)]
pub enum Invocation {
    Help(String),
    Version(String),
    /// `--print_config`: every effective option and its source.
    PrintConfig(String),
    Run(Box<Config>),
}

/// Reads the configuration from `args` (without the program name), the environment
/// lookup `env`, and the config file they name.
pub fn load(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, ConfigError> {
    let cli_values = match cli::parse(args)? {
        cli::CliRequest::Help => return Ok(Invocation::Help(spec::help_text())),
        cli::CliRequest::Version => {
            return Ok(Invocation::Version(format!(
                "msgx-once {} (commit {}, built {}, {})",
                env!("CARGO_PKG_VERSION"),
                env!("MSGX_GIT_COMMIT"),
                env!("MSGX_BUILD_DATE"),
                env!("MSGX_TARGET")
            )));
        }
        cli::CliRequest::Run(values) => values,
    };
    let mut values = Values::defaults();
    for (option, variable) in AZURE_NAMES {
        if let Some(value) = env(variable).filter(|v| !v.is_empty()) {
            values.set(option, value, Source::Env(variable.to_string()));
        }
    }
    for spec in spec::OPTIONS {
        let variable = spec::env_name(spec.name);
        if let Some(value) = env(&variable).filter(|v| !v.is_empty()) {
            values.set(spec.name, value, Source::Env(variable));
        }
    }
    for (name, value) in cli_values {
        values.set(name, value, Source::Cli);
    }
    let mut warnings = Vec::new();
    let mut file_errors = Vec::new();
    if let Some((path, _)) = values.get("app_config") {
        let path = PathBuf::from(path);
        let (read, errors) = file::read(&path)?;
        file_errors = errors;
        // Only what the file changes: the same value given twice overrides nothing.
        let overridden: Vec<String> = read
            .iter()
            .filter(|(name, value)| values.get(name).is_some_and(|(given, _)| given != value))
            .filter_map(|(name, _)| values.given(name).map(|s| s.describe(name)))
            .collect();
        if !overridden.is_empty() {
            warnings.push(format!(
                "config file {} overrides {} (the config file wins, as in the original)",
                path.display(),
                overridden.join(", ")
            ));
        }
        let secrets: Vec<&str> = read
            .iter()
            .filter(|(name, value)| holds_secret(name, value))
            .map(|(name, _)| *name)
            .collect();
        if let Some(warning) = readable_by_others(&path, &secrets) {
            warnings.push(warning);
        }
        for (name, value) in read {
            values.set(name, value, Source::File(path.clone()));
        }
    }
    let fixed_now = test_knob(env, "MSGX_NOW", parse::timestamp)?;
    // A test knob like MSGX_NOW: how often a long run logs its progress.
    let progress_every = test_knob(env, "MSGX_PROGRESS_SECONDS", |v| parse::integer(v, 1, 3600))?;
    let backoff_ms = test_knob(env, "MSGX_BACKOFF_MS", |v| parse::integer(v, 1, 60_000))?;
    let now = fixed_now.unwrap_or_else(OffsetDateTime::now_utc);
    // What is wrong with single keys of the file goes with every other problem.
    let built = values.build(env, now);
    // --print_config shows what there is, runnable or not: defaults, effective values,
    // and what is still missing or wrong.
    if values
        .get("print_config")
        .is_some_and(|(v, _)| parse::boolean(v) == Ok(true))
    {
        let problems = match (&built, ConfigError::all(file_errors)) {
            (Ok(_), file) => file,
            (Err(e), None) => Some(e.clone()),
            (Err(e), Some(mut file)) => {
                file.more.extend(e.clone().into_each());
                Some(file)
            }
        };
        return Ok(Invocation::PrintConfig(
            values.print(built.as_ref().ok(), problems.as_ref()),
        ));
    }
    let mut config = match (built, ConfigError::all(file_errors)) {
        (Ok(config), None) => config,
        (Ok(_), Some(file)) => return Err(file),
        (Err(e), None) => return Err(e),
        (Err(e), Some(mut file)) => {
            file.more.extend(e.into_each());
            return Err(file);
        }
    };
    config.warnings.splice(0..0, warnings);
    config.fixed_now = fixed_now;
    if let Some(seconds) = progress_every {
        config.progress_every = Duration::from_secs(seconds);
    }
    if let Some(ms) = backoff_ms {
        config.backoff_scale = ms as f64 / 1000.0;
    }
    Ok(Invocation::Run(Box::new(config)))
}

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
fn test_knob<T>(
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
fn holds_secret(name: &str, value: &str) -> bool {
    match spec::find(name) {
        Some(spec) if spec.kind.secret => true,
        Some(spec) if spec.kind.url => redact_userinfo(value) != value,
        _ => false,
    }
}

/// A WARN when a config file holding `secrets` can be read by others than its owner.
#[cfg(unix)]
fn readable_by_others(path: &Path, secrets: &[&str]) -> Option<String> {
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
fn readable_by_others(_path: &Path, _secrets: &[&str]) -> Option<String> {
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
            .filter(|c| c.redis.endpoint() != c.redis_url.endpoint())
            .map(|c| {
                (
                    c.redis.endpoint().to_string(),
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

/// Raw option values with their sources; later `set`s win.
#[derive(Default)]
pub(crate) struct Values(BTreeMap<&'static str, (String, Source)>);

impl Values {
    /// Every declared default.
    pub(crate) fn defaults() -> Self {
        let mut values = Values::default();
        for spec in spec::OPTIONS {
            if let Some(default) = spec.kind.default {
                values.set(spec.name, default.to_string(), Source::Default);
            }
        }
        values
    }

    fn set(&mut self, name: &str, value: String, source: Source) {
        if let Some(spec) = spec::find(name) {
            self.0.insert(spec.name, (value, source));
        }
    }

    fn get(&self, name: &str) -> Option<(&str, &Source)> {
        self.0.get(name).map(|(v, s)| (v.as_str(), s))
    }

    fn source(&self, name: &str) -> Source {
        self.get(name).map_or(Source::Unset, |(_, s)| s.clone())
    }

    /// Where the user gave `name`, if they did.
    fn given(&self, name: &str) -> Option<Source> {
        Some(self.source(name)).filter(Source::is_given)
    }

    /// Reads option `name` with `reader`; a complaint joins `errors`.
    fn read<T>(
        &self,
        name: &str,
        reader: impl Fn(Option<&str>) -> Result<T, String>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<T> {
        let (value, source) = match self.get(name) {
            Some((value, source)) => (Some(value), source.clone()),
            None => (None, Source::Unset),
        };
        reader(value)
            .map_err(|accepted| {
                errors.push(ConfigError::invalid(
                    name,
                    source,
                    value.unwrap_or_default(),
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
    fn print(&self, config: Option<&Config>, problems: Option<&ConfigError>) -> String {
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

    fn build(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        now: OffsetDateTime,
    ) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let options = Options::read(self, &mut errors);
        let Some(options) = options else {
            // What is missing is worth knowing too, in the same go.
            match self.credential_kind() {
                Ok(kind) => errors.extend(self.missing_for(kind)),
                Err(e) => errors.push(e),
            }
            return Err(ConfigError::all(errors).unwrap_or_else(|| {
                ConfigError::usage("the configuration could not be read".into())
            }));
        };
        let mut warnings = Vec::new();
        let credential = self.credential(&options, env, &mut errors, &mut warnings);
        let redis = self.redis_target(&options, &mut errors, &mut warnings);
        let (login_default, graph_default) = options.cloud.hosts();
        let host = |given: &Option<url::Url>, default: &str| {
            given.clone().unwrap_or_else(|| {
                url::Url::parse(default).expect("the cloud table holds valid URLs")
            })
        };
        let (since, until) = self.backfill(&options, now, &mut errors);
        if let Some(error) = ConfigError::all(errors) {
            return Err(error);
        }
        let Some(credential) = credential else {
            return Err(ConfigError::usage("no credentials".into()));
        };
        let mut config = Config {
            graph_url: host(&options.graph_url, graph_default),
            login_url: host(&options.login_url, login_default),
            redis: redis.unwrap_or_else(|| options.redis_url.clone()),
            options,
            credential,
            since,
            until,
            fixed_now: None,
            progress_every: Duration::from_secs(10),
            backoff_scale: 1.0,
            warnings: Vec::new(),
        };
        self.check_sources(&config)?;
        config.warnings = warnings;
        config.warnings.extend(self.without_effect(&config));
        if let Some(warning) = self.page_size_cap(&config) {
            config.warnings.push(warning);
        }
        if config.redis_tls_insecure {
            config.warnings.push(
                "redis_tls_insecure: the Redis server's certificate is not verified; anyone \
                 between here and Redis can read and change what is written"
                    .into(),
            );
        }
        if let Some(since) = config.since
            && since < now - time::Duration::days(RETENTION_DAYS)
        {
            config.warnings.push(format!(
                "--since {} is older than Graph's {RETENTION_DAYS}-day retention of sign-ins \
                 and audit logs: what is older is gone",
                crate::window::utc_second(since)
            ));
        }
        Ok(config)
    }

    /// The kind of credential: `auth`, or the one kind whose options are given.
    fn credential_kind(&self) -> Result<AuthKind, ConfigError> {
        if let Some(kind) = self
            .get("auth")
            .and_then(|(value, _)| parse::auth_kind(value).ok())
        {
            return Ok(kind);
        }
        let set = |name: &str| self.get(name).is_some();
        let given: Vec<(AuthKind, &str)> = [
            (AuthKind::Secret, "client_secret", set("client_secret")),
            (
                AuthKind::Secret,
                "client_secret_file",
                set("client_secret_file"),
            ),
            (
                AuthKind::Certificate,
                "client_certificate",
                set("client_certificate"),
            ),
            (
                AuthKind::WorkloadIdentity,
                "federated_token_file",
                set("federated_token_file"),
            ),
        ]
        .into_iter()
        .filter(|(_, _, set)| *set)
        .map(|(kind, name, _)| (kind, name))
        .collect();
        match given.as_slice() {
            [] => Err(ConfigError::new(
                "auth",
                Source::Unset,
                "no credentials given".into(),
                "client_secret (or client_secret_file), client_certificate, \
                 federated_token_file, or auth managed_identity",
            )),
            [(kind, _)] => Ok(*kind),
            [(first, _), rest @ ..] if rest.iter().all(|(kind, _)| kind == first) => Ok(*first),
            several => {
                let names: Vec<String> = several
                    .iter()
                    .map(|(_, name)| format!("{name} ({})", self.source(name).describe(name)))
                    .collect();
                Err(ConfigError::new(
                    "auth",
                    Source::Unset,
                    format!("ambiguous: {} are all set", names.join(" and ")),
                    "auth secret, certificate, workload_identity or managed_identity, or \
                     only one kind of credential",
                ))
            }
        }
    }

    /// The options `kind` needs that are not set anywhere.
    fn missing_for(&self, kind: AuthKind) -> Vec<ConfigError> {
        let needed: &[&str] = match kind {
            AuthKind::Secret => &["tenant", "client_id"],
            AuthKind::Certificate => &["tenant", "client_id", "client_certificate"],
            AuthKind::WorkloadIdentity => &["tenant", "client_id", "federated_token_file"],
            AuthKind::ManagedIdentity => &[],
        };
        let mut missing: Vec<ConfigError> = needed
            .iter()
            .filter(|name| self.get(name).is_none())
            .map(|name| ConfigError::missing(name, &format!(" (auth {})", kind.name())))
            .collect();
        let secret_set =
            self.get("client_secret").is_some() || self.get("client_secret_file").is_some();
        if kind == AuthKind::Secret && !secret_set {
            missing.push(ConfigError::missing("client_secret", " (auth secret)"));
        }
        missing
    }

    /// The credential of `kind` from the typed options; every missing or conflicting
    /// option joins `errors`.
    fn credential(
        &self,
        options: &Options,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> Option<Credential> {
        let kind = self.credential_kind().map_err(|e| errors.push(e)).ok()?;
        errors.extend(self.missing_for(kind));
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        let path = |value: &Option<PathBuf>| value.clone().unwrap_or_default();
        Some(match kind {
            AuthKind::Secret => Credential::Secret {
                tenant: text(&options.tenant),
                client_id: text(&options.client_id),
                secret: self
                    .secret(options, errors, warnings)
                    .unwrap_or_else(|| Secret::new("")),
            },
            AuthKind::Certificate => Credential::Certificate {
                tenant: text(&options.tenant),
                client_id: text(&options.client_id),
                certificate: path(&options.client_certificate),
                key: options.client_certificate_key.clone(),
                alg: options.client_assertion_alg,
            },
            AuthKind::WorkloadIdentity => Credential::WorkloadIdentity {
                tenant: text(&options.tenant),
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
    fn file_form_wins(
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
    fn secret(
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

    /// What `redis_url_file` holds, when given and not overridden by `redis_url`.
    fn redis_target(
        &self,
        options: &Options,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> Option<RedisTarget> {
        let file = options.redis_url_file.as_ref()?;
        let source = self.source("redis_url_file");
        if self.file_form_wins("redis_url", "redis_url_file", errors, warnings) != Some(true) {
            return None;
        }
        let read = read_secret_file(file).and_then(|url| {
            parse::redis_target(url.expose())
                .map_err(|accepted| format!("does not hold a Redis URL; accepted: {accepted}"))
        });
        read.map_err(|problem| {
            errors.push(ConfigError::new(
                "redis_url_file",
                source,
                problem,
                "a readable file holding the Redis URL",
            ))
        })
        .ok()
    }

    /// `--since/--until`, resolved against `now`, in order.
    fn backfill(
        &self,
        options: &Options,
        now: OffsetDateTime,
        errors: &mut Vec<ConfigError>,
    ) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
        let since = options.since.map(|m| m.resolve(now));
        let until = options.until.map(|m| m.resolve(now));
        match (since, until) {
            (None, Some(_)) => errors.push(ConfigError::new(
                "until",
                self.source("until"),
                "given without since".into(),
                "--until together with --since",
            )),
            (Some(since), Some(until)) if since >= until => errors.push(ConfigError::new(
                "until",
                self.source("until"),
                "not after since".into(),
                "a time later than --since",
            )),
            _ => {}
        }
        (since, until)
    }

    /// What several sources need: a key, a file and a state file of their own each.
    fn check_sources(&self, config: &Config) -> Result<(), ConfigError> {
        let keys: Vec<String> = config
            .sources
            .iter()
            .map(|s| config.queue_key_of(s))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            if let Some(j) = keys[..i].iter().position(|k| k == key) {
                return Err(self.conflict(
                    "queue_keys",
                    format!(
                        "sources {} and {} would both write to {key:?} (and share its state)",
                        config.sources[j].name, config.sources[i].name
                    ),
                    "a different key per source",
                ));
            }
        }
        // A queue must not be another source's state, lock or seen-set either.
        for (i, key) in keys.iter().enumerate() {
            for (j, other) in keys.iter().enumerate().filter(|(j, _)| *j != i) {
                if let Some(clash) = crate::keys::all(other)
                    .into_iter()
                    .skip(1)
                    .find(|k| k == key)
                {
                    return Err(self.conflict(
                        "queue_keys",
                        format!(
                            "source {}'s queue {clash:?} is a key source {} keeps its state in \
                             (beside its queue {other:?})",
                            config.sources[i].name, config.sources[j].name
                        ),
                        "a queue key of its own per source, not named like another's \
                         :msgx:state, :msgx:lock or :msgx:seen",
                    ));
                }
            }
        }
        if config.sources.len() < 2 {
            return Ok(());
        }
        let lacks_placeholder =
            |path: &PathBuf| !path.to_string_lossy().contains(SOURCE_PLACEHOLDER);
        let file_shared = match &config.file_path {
            Output::Stdout => true,
            Output::Path(path) => lacks_placeholder(path),
        };
        if config.queue_backend == Backend::File && file_shared {
            return Err(self.conflict(
                "file_path",
                "has no {source}, but several sources are exported".into(),
                "a path with {source}, e.g. /var/lib/msgx/{source}.ndjson",
            ));
        }
        if config.queue_backend != Backend::Redis
            && config.state_file.as_ref().is_some_and(lacks_placeholder)
        {
            return Err(self.conflict(
                "state_file",
                "has no {source}, but several sources are exported".into(),
                "a path with {source}, e.g. /var/lib/msgx/{source}.state",
            ));
        }
        Ok(())
    }

    fn conflict(&self, option: &str, problem: String, accepted: &str) -> ConfigError {
        ConfigError::new(option, self.source(option), problem, accepted)
    }

    /// A `page_size` below Graph's 1000 costs a request per page out of a budget of
    /// `rate_limit`: the original's file sets 50, which caps keep-up at a tenth of what
    /// Graph allows. Said with the figure.
    fn page_size_cap(&self, config: &Config) -> Option<String> {
        let source = self.given("page_size")?;
        let (requests, per) = config.rate_limit?;
        if config.page_size >= 1000 {
            return None;
        }
        // Each second is read twice (when due and `rescan` later) unless rescan is 0.
        let (passes, reads) = match config.rescan {
            0 => (1.0, "each second read once"),
            _ => (2.0, "each second read twice"),
        };
        let ceiling =
            f64::from(requests) / per.as_secs_f64() * f64::from(config.page_size) / passes;
        let what = match config.sources.iter().any(|s| s.is_sign_ins()) {
            true => "sign-ins",
            false => "records",
        };
        Some(format!(
            "option page_size {} (from {}) caps keep-up at about {ceiling:.0} {what}/s at \
             rate_limit {requests}/{} ({reads}); Graph allows 1000 a page: leave page_size \
             unset",
            config.page_size,
            source.describe("page_size"),
            per.as_secs()
        ))
    }

    /// A WARN for each option the user set that this configuration ignores.
    fn without_effect(&self, config: &Config) -> Vec<String> {
        let redis = config.queue_backend == Backend::Redis;
        let kind = config.credential.kind();
        let sign_ins = config.sources.iter().any(|s| s.is_sign_ins());
        let ignored: [(&str, bool, &str); 12] = [
            (
                "state_file",
                redis,
                "the redis backend keeps its state in Redis",
            ),
            (
                "queue_type",
                !redis,
                "only the redis backend has a queue type",
            ),
            (
                "queue_key",
                config.queue_backend == Backend::File,
                "the file backend writes to file_path",
            ),
            (
                "redis_pool_max_connections",
                !redis,
                "only the redis backend connects to Redis",
            ),
            (
                "file_path",
                config.queue_backend != Backend::File,
                "only the file backend writes to file_path",
            ),
            (
                "select",
                !sign_ins,
                "$select applies to sign-in sources only",
            ),
            (
                "client_certificate_key",
                kind != AuthKind::Certificate,
                "it is read with auth certificate only",
            ),
            (
                "client_assertion_alg",
                kind != AuthKind::Certificate,
                "it is used with auth certificate only",
            ),
            (
                "msi_endpoint",
                kind != AuthKind::ManagedIdentity,
                "it is used with auth managed_identity only",
            ),
            (
                "client_secret",
                kind != AuthKind::Secret,
                "auth is not secret",
            ),
            (
                "federated_token_file",
                kind != AuthKind::WorkloadIdentity,
                "auth is not workload_identity",
            ),
            (
                "client_certificate",
                kind != AuthKind::Certificate,
                "auth is not certificate",
            ),
        ];
        ignored
            .into_iter()
            .filter(|(_, ignored, _)| *ignored)
            .filter_map(|(name, _, why)| {
                let source = self.given(name)?;
                Some(format!(
                    "option {name} (from {}) has no effect: {why}",
                    source.describe(name)
                ))
            })
            .collect()
    }
}

/// The managed identity's token endpoint: `msi_endpoint`, else App Service's
/// `IDENTITY_ENDPOINT` (with `IDENTITY_HEADER`), else the instance metadata service.
fn managed_endpoint(
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
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(value))
}
/// A run's configuration from `args` plus test credentials, without the environment.
#[cfg(test)]
pub fn test_config(args: &[&str]) -> Config {
    let mut all = vec!["--tenant", "t", "--client_id", "c", "--client_secret", "s"];
    all.extend(args);
    let args: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    match load(&args, &|_| None) {
        Ok(Invocation::Run(config)) => *config,
        other => panic!("expected a run, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match load(&args, &|name| env.get(name).cloned())? {
            Invocation::Run(config) => Ok(*config),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    const CREDS: [&str; 6] = ["--tenant", "t", "--client_id", "c", "--client_secret", "s"];

    #[test]
    fn backfills_have_no_deadline_unless_given() {
        assert_eq!(test_config(&[]).run_deadline(), CRON_DEADLINE);
        assert_eq!(
            test_config(&["--deadline", "9"]).run_deadline(),
            Duration::from_secs(9)
        );
        let backfill = [
            "--since",
            "2026-01-01T00:00:00Z",
            "--until",
            "2026-01-02T00:00:00Z",
        ];
        assert!(test_config(&backfill).run_deadline() > Duration::from_secs(86_400 * 365));
        let mut limited = backfill.to_vec();
        limited.extend(["--deadline", "60"]);
        assert_eq!(
            test_config(&limited).run_deadline(),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn defaults_match_the_original() {
        let config = load_with(&CREDS, &[]).unwrap();
        assert_eq!(config.timelag, 120);
        assert_eq!(config.streams, 2);
        assert_eq!(config.stream_frame, 30);
        assert_eq!(config.page_size, 1000);
        assert_eq!(config.rate_limit, Some((5, Duration::from_secs(10))));
        assert_eq!(config.max_retries, 8);
        assert_eq!(
            config.deadline, None,
            "300 s for cron runs, none for backfills"
        );
        assert_eq!(config.http_timeout, Duration::from_secs(60));
        assert_eq!(config.state, StateMode::Auto);
        assert_eq!(config.state_file, None);
        assert_eq!(config.max_catchup, 86_400);
        assert_eq!(config.rescan, 600);
        assert_eq!(config.queue_backend, Backend::Redis);
        assert_eq!(config.queue_type, QueueType::List);
        assert_eq!(config.queue_key, "ms_graph_exporter");
        assert_eq!(config.redis.endpoint(), "redis://localhost:6379/0");
        assert_eq!(config.greenlets_count, 10);
        assert!(config.redis_pool_block);
        assert_eq!(config.redis_pool_max_connections, 15);
        assert_eq!(config.redis_pool_timeout, Duration::from_secs(1));
        assert_eq!(config.file_path, Output::Stdout);
    }

    #[test]
    fn cli_beats_env() {
        let config = load_with(
            &["--streams", "4"],
            &[
                ("GRAPH_STREAMS", "3"),
                ("GRAPH_TIMELAG", "60"),
                ("GRAPH_TENANT", "t"),
                ("GRAPH_CLIENT_ID", "c"),
                ("GRAPH_CLIENT_SECRET", "s"),
            ],
        )
        .unwrap();
        assert_eq!(config.streams, 4);
        assert_eq!(config.timelag, 60);
    }

    #[test]
    fn errors_name_option_source_and_accepted_values() {
        let mut args = CREDS.to_vec();
        args.extend(["--streams", "0"]);
        let err = load_with(&args, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "option streams: invalid value \"0\" (from command line --streams); \
             accepted: a whole number from 1 to 64"
        );
        let err = load_with(&CREDS, &[("GRAPH_PAGE_SIZE", "1001")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("(from environment variable GRAPH_PAGE_SIZE)"),
            "{err}"
        );
    }

    #[test]
    fn missing_credentials_are_errors() {
        let err = load_with(&["--tenant", "t", "--client_id", "c"], &[]).unwrap_err();
        assert_eq!(err.option(), Some("auth"));
        assert_eq!(
            err.to_string(),
            "option auth: no credentials given; accepted: client_secret (or \
             client_secret_file), client_certificate, federated_token_file, or auth \
             managed_identity"
        );
    }

    #[test]
    fn secrets_are_never_echoed() {
        let err = load_with(
            &["--tenant", "t", "--client_id", "c", "--client_secret", " "],
            &[],
        )
        .unwrap_err();
        assert!(!err.to_string().contains("\" \""), "{err}");
        let config = load_with(
            &[
                "--tenant",
                "t",
                "--client_id",
                "c",
                "--client_secret",
                "hunter2",
            ],
            &[],
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn redis_passwords_are_never_echoed() {
        for bad in [
            "redis://:hunter2-redis-pass@127.0.0.1:6379/x",
            "redis://user:hunter2-redis-pass@127.0.0.1:port/0",
            "redis://:hunter2-redis-pass/with/slash@127.0.0.1/0",
            "redis//:hunter2-redis-pass@127.0.0.1/0",
            "http://:hunter2-redis-pass@h@127.0.0.1/0",
        ] {
            let mut args = CREDS.to_vec();
            args.extend(["--redis_url", bad]);
            let env = [("GRAPH_REDIS_URL", bad)];
            let from_env = load_with(&CREDS, &env).unwrap_err().to_string();
            let from_cli = load_with(&args, &[]).unwrap_err().to_string();
            for err in [from_env, from_cli] {
                assert!(!err.contains("hunter2"), "{err}");
                assert!(err.contains("[redacted]@"), "{err}");
            }
        }
    }

    #[test]
    fn backfill_bounds_are_ordered() {
        let mut args = CREDS.to_vec();
        args.extend([
            "--since",
            "2026-01-02T00:00:00Z",
            "--until",
            "2026-01-01T00:00:00Z",
        ]);
        assert_eq!(load_with(&args, &[]).unwrap_err().option(), Some("until"));
    }

    #[test]
    fn each_source_gets_its_key_file_page_cap_and_budget() {
        let mut args = CREDS.to_vec();
        args.extend([
            "--sources",
            "signins,risk_detections,directory_audits",
            "--queue_keys",
            "directory_audits=entra_audit",
            "--queue_backend",
            "file",
            "--file_path",
            "/out/{source}.ndjson",
            "--select",
            "userPrincipalName",
            "--rate_limits",
            "security=10/60",
        ]);
        let config = load_with(&args, &[]).unwrap();
        let key = |name| config.queue_key_of(crate::sources::named(name).unwrap());
        assert_eq!(key("signins"), "ms_graph_exporter");
        assert_eq!(key("risk_detections"), "ms_graph_exporter:risk_detections");
        assert_eq!(key("directory_audits"), "entra_audit");
        let risk = config.for_source(crate::sources::named("risk_detections").unwrap());
        assert_eq!(risk.page_size, 500);
        assert_eq!(risk.streams, 1, "two streams shared by three sources");
        assert_eq!(risk.select, None, "$select names sign-in properties");
        assert_eq!(
            risk.file_path,
            Output::Path("/out/risk_detections.ndjson".into())
        );
        assert_eq!(
            config.rate_limit_of(Bucket::IdentityProtection),
            Some((1, Duration::from_secs(1)))
        );
        assert_eq!(
            config.rate_limit_of(Bucket::Security),
            Some((10, Duration::from_secs(60)))
        );
        assert_eq!(
            config.rate_limit_of(Bucket::Reports),
            Some((5, Duration::from_secs(10)))
        );
    }

    #[test]
    fn two_sources_never_share_a_key() {
        let mut args = CREDS.to_vec();
        args.extend([
            "--sources",
            "signins,provisioning",
            "--queue_keys",
            "provisioning=ms_graph_exporter",
        ]);
        let err = load_with(&args, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "option queue_keys: sources signins and provisioning would both write to \
             \"ms_graph_exporter\" (and share its state) (from command line --queue_keys); \
             accepted: a different key per source"
        );
        let err = load_with(&CREDS, &[("GRAPH_SOURCES", "signins,audits")]).unwrap_err();
        assert_eq!(err.option(), Some("sources"));
        assert!(
            err.to_string()
                .contains("(from environment variable GRAPH_SOURCES)")
        );
    }

    #[test]
    fn the_azure_sdk_names_are_a_fallback_below_graph_names() {
        let env = [
            ("AZURE_TENANT_ID", "azure-tenant"),
            ("AZURE_CLIENT_ID", "azure-client"),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
            ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
            ("GRAPH_CLIENT_ID", "graph-client"),
        ];
        let config = load_with(&[], &env).unwrap();
        match &config.credential {
            Credential::WorkloadIdentity {
                tenant, client_id, ..
            } => {
                assert_eq!(tenant, "azure-tenant");
                assert_eq!(client_id, "graph-client", "GRAPH_* wins");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            config.login_url.as_str(),
            "https://login.microsoftonline.us/"
        );
    }

    #[test]
    fn every_missing_or_invalid_option_is_reported_at_once() {
        let err = load_with(
            &[
                "--client_certificate",
                "/c.pem",
                "--streams",
                "0",
                "--page_size",
                "x",
            ],
            &[],
        )
        .unwrap_err();
        let options: Vec<Option<&str>> = std::iter::once(&err)
            .chain(&err.more)
            .map(ConfigError::option)
            .collect();
        assert_eq!(
            options,
            [
                Some("streams"),
                Some("page_size"),
                Some("tenant"),
                Some("client_id")
            ]
        );
        assert_eq!(err.lines().len(), 4);
        assert!(
            err.lines()[2].contains("missing (auth certificate)"),
            "{err}"
        );
    }

    #[test]
    fn several_kinds_of_credential_are_ambiguous_unless_auth_says() {
        let mut args = CREDS.to_vec();
        args.extend(["--federated_token_file", "/t"]);
        let err = load_with(&args, &[]).unwrap_err();
        assert_eq!(err.option(), Some("auth"));
        assert!(
            err.to_string().contains("ambiguous: client_secret"),
            "{err}"
        );
        args.extend(["--auth", "workload_identity"]);
        let config = load_with(&args, &[]).unwrap();
        assert_eq!(config.credential.kind(), AuthKind::WorkloadIdentity);
        assert!(
            config.warnings.iter().any(|w| w.starts_with(
                "option client_secret (from command line --client_secret) has no effect"
            )),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn a_secret_in_a_file_and_clouds() {
        let dir = std::env::temp_dir().join(format!("msgx-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let path = file.to_str().unwrap();
        let args = ["--tenant", "t", "--client_id", "c", "--cloud", "usgov"];
        let config = load_with(&args, &[("GRAPH_CLIENT_SECRET_FILE", path)]).unwrap();
        match &config.credential {
            Credential::Secret { secret, .. } => assert_eq!(secret.expose(), "from-a-file"),
            other => panic!("{other:?}"),
        }
        assert_eq!(config.graph_url.as_str(), "https://graph.microsoft.us/");
        assert_eq!(
            config.login_url.as_str(),
            "https://login.microsoftonline.us/"
        );
        let err = load_with(
            &args,
            &[
                ("GRAPH_CLIENT_SECRET_FILE", path),
                ("GRAPH_CLIENT_SECRET", "x"),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "option client_secret_file: set together with client_secret (from environment \
             variable GRAPH_CLIENT_SECRET) (from environment variable GRAPH_CLIENT_SECRET_FILE); \
             accepted: one of client_secret and client_secret_file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn managed_identity_needs_no_tenant_and_takes_app_services_endpoint() {
        let config = load_with(
            &["--auth", "managed_identity"],
            &[
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:41234/msi/token"),
                ("IDENTITY_HEADER", "header-secret"),
            ],
        )
        .unwrap();
        match &config.credential {
            Credential::ManagedIdentity {
                client_id: None,
                endpoint: ManagedEndpoint::AppService { url, .. },
            } => assert_eq!(url.path(), "/msi/token"),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{config:?}").contains("header-secret"));
    }

    #[test]
    fn print_config_shows_sources_and_hides_secrets() {
        let mut args = CREDS.to_vec();
        args.push("--print_config");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let printed = match load(&args, &|name| (name == "GRAPH_STREAMS").then(|| "3".into())) {
            Ok(Invocation::PrintConfig(text)) => text,
            other => panic!("{other:?}"),
        };
        assert!(printed.contains("client_secret = (hidden)  # command line --client_secret\n"));
        assert!(printed.contains("streams = \"3\"  # environment variable GRAPH_STREAMS\n"));
        assert!(printed.contains("timelag = \"120\"  # the default\n"));
        assert!(!printed.contains("\"s\""), "{printed}");
    }
}
