//! Configuration: gathers option values from the config file, the command line, the
//! environment and the defaults (in that order of precedence, as the original did),
//! checks them, and builds the typed [`Config`] a run is made from.

mod cli;
mod file;
mod parse;
pub mod spec;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use crate::secret::Secret;
use crate::sources::{Bucket, SourceSpec};

/// Where an option's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Not given anywhere (for "missing" errors).
    Unset,
    Default,
    Env,
    Cli,
    File(PathBuf),
}

impl Source {
    fn describe(&self, option: &str) -> String {
        match self {
            Source::Unset => "nowhere".into(),
            Source::Default => "the default".into(),
            Source::Env => format!("environment variable {}", spec::env_name(option)),
            Source::Cli => format!("command line --{option}"),
            Source::File(path) => format!("config file {}", path.display()),
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

/// A usage or configuration error: exit code 2.
#[derive(Debug, Clone)]
pub struct ConfigError {
    option: Option<(String, Source)>,
    problem: String,
    accepted: Option<String>,
}

impl ConfigError {
    pub fn new(option: &str, source: Source, problem: String, accepted: &str) -> Self {
        ConfigError {
            option: Some((option.to_string(), source)),
            problem,
            accepted: Some(accepted.to_string()),
        }
    }

    pub fn invalid(option: &str, source: Source, value: &str, accepted: String) -> Self {
        let shown = match spec::find(option).map(|s| s.name) {
            Some("client_secret") => "(hidden)".to_string(),
            // A URL that failed to parse may still carry a password.
            Some("redis_url") => format!("{:?}", redact_userinfo(value)),
            _ => format!("{value:?}"),
        };
        Self::new(option, source, format!("invalid value {shown}"), &accepted)
    }

    pub fn usage(problem: String) -> Self {
        ConfigError {
            option: None,
            problem,
            accepted: None,
        }
    }

    /// The option the error is about, if it is about one.
    pub fn option(&self) -> Option<&str> {
        self.option.as_ref().map(|(name, _)| name.as_str())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((name, source)) = &self.option {
            write!(f, "option {name}: ")?;
            f.write_str(&self.problem)?;
            if *source != Source::Unset {
                write!(f, " (from {})", source.describe(name))?;
            }
        } else {
            f.write_str(&self.problem)?;
        }
        if let Some(accepted) = &self.accepted {
            write!(f, "; accepted: {accepted}")?;
        }
        Ok(())
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
}

impl RedisTarget {
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

/// Whether runs keep a watermark, deduplicate and lock (`state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateMode {
    Auto,
    Off,
}

/// A checked configuration: everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_config: Option<PathBuf>,
    pub tenant: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// The audit streams to export, in the order given.
    pub sources: Vec<&'static SourceSpec>,
    pub timelag: u64,
    pub streams: usize,
    pub stream_frame: u64,
    pub page_size: u32,
    /// Requests per window of the reports bucket (sign-ins, audits, provisioning) for
    /// all streams together; None: unlimited.
    pub rate_limit: Option<(u32, Duration)>,
    /// Limits of the other buckets given in `rate_limits` (Graph's otherwise).
    pub rate_limits: BTreeMap<Bucket, Option<(u32, Duration)>>,
    pub max_retries: u32,
    /// None: a cron run's default, and no deadline for a backfill.
    pub deadline: Option<Duration>,
    pub http_timeout: Duration,
    pub queue_backend: Backend,
    pub queue_type: QueueType,
    pub queue_key: String,
    /// Queue keys given in `queue_keys`, by source name.
    pub queue_keys: BTreeMap<&'static str, String>,
    pub redis: RedisTarget,
    pub greenlets_count: usize,
    pub redis_pool_block: bool,
    pub redis_pool_gevent_queue: bool,
    pub redis_pool_max_connections: u32,
    pub redis_pool_timeout: Duration,
    pub graph_url: url::Url,
    pub login_url: url::Url,
    pub file_path: Output,
    pub log_level: log::LevelFilter,
    /// Graph `$select`; None: every property.
    pub select: Option<Vec<String>>,
    pub state: StateMode,
    pub state_file: Option<PathBuf>,
    pub max_catchup: u64,
    pub rescan: u64,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// A fixed "now" for replaying cron runs in tests (`MSGX_NOW`, undocumented in --help).
    pub fixed_now: Option<OffsetDateTime>,
    /// How often a long run logs its progress (10 s; `MSGX_PROGRESS_SECONDS` in tests).
    pub progress_every: Duration,
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
        Config {
            sources: vec![source],
            streams: (self.streams / self.sources.len().max(1)).max(1),
            queue_key: self.queue_key_of(source),
            page_size: self.page_size.min(source.max_top),
            select: self.select.clone().filter(|_| source.is_sign_ins()),
            file_path: match &self.file_path {
                Output::Path(path) => Output::Path(per_source(path)),
                Output::Stdout => Output::Stdout,
            },
            state_file: self.state_file.as_ref().map(per_source),
            ..self.clone()
        }
    }
}

/// Replaced by the source's name in `file_path` and `state_file`.
const SOURCE_PLACEHOLDER: &str = "{source}";

/// What one invocation asks for.
#[derive(Debug)]
pub enum Invocation {
    Help(String),
    Version(String),
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
                "msgx-once {}",
                env!("CARGO_PKG_VERSION")
            )));
        }
        cli::CliRequest::Run(values) => values,
    };
    let mut values = Values::default();
    for spec in spec::OPTIONS {
        if let Some(default) = spec.default {
            values.set(spec.name, default.to_string(), Source::Default);
        }
        if let Some(value) = env(&spec::env_name(spec.name)).filter(|v| !v.is_empty()) {
            values.set(spec.name, value, Source::Env);
        }
    }
    for (name, value) in cli_values {
        values.set(name, value, Source::Cli);
    }
    if let Some((path, _)) = values.get("app_config") {
        let path = PathBuf::from(path);
        for (name, value) in file::read(&path)? {
            values.set(name, value, Source::File(path.clone()));
        }
    }
    let fixed_now = env("MSGX_NOW")
        .map(|v| {
            parse::timestamp(&v).map_err(|accepted| {
                ConfigError::usage(format!(
                    "environment variable MSGX_NOW: invalid value {v:?}; accepted: {accepted}"
                ))
            })
        })
        .transpose()?;
    // A test knob like MSGX_NOW: how often a long run logs its progress.
    let progress_every = env("MSGX_PROGRESS_SECONDS")
        .map(|v| {
            parse::integer(&v, 1, 3600).map_err(|accepted| {
                ConfigError::usage(format!(
                    "environment variable MSGX_PROGRESS_SECONDS: invalid value {v:?}; accepted: {accepted}"
                ))
            })
        })
        .transpose()?;
    let mut config = values.build()?;
    config.fixed_now = fixed_now;
    if let Some(seconds) = progress_every {
        config.progress_every = Duration::from_secs(seconds);
    }
    Ok(Invocation::Run(Box::new(config)))
}

/// Raw option values with their sources; later `set`s win.
#[derive(Default)]
struct Values(BTreeMap<&'static str, (String, Source)>);

impl Values {
    fn set(&mut self, name: &'static str, value: String, source: Source) {
        self.0.insert(name, (value, source));
    }

    fn get(&self, name: &str) -> Option<(&str, &Source)> {
        self.0.get(name).map(|(v, s)| (v.as_str(), s))
    }

    /// Parses option `name` with `parser`, turning its complaint into a ConfigError.
    fn typed<T>(
        &self,
        name: &str,
        parser: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some((value, source)) => parser(value)
                .map(Some)
                .map_err(|accepted| ConfigError::invalid(name, source.clone(), value, accepted)),
        }
    }

    fn required<T>(
        &self,
        name: &str,
        parser: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.typed(name, parser)?.ok_or_else(|| ConfigError {
            option: Some((name.to_string(), Source::Unset)),
            problem: "missing".into(),
            accepted: Some(format!(
                "set it in the config file, as --{name}, or as {}",
                spec::env_name(name)
            )),
        })
    }

    fn number(&self, name: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        self.required(name, |v| parse::integer(v, min, max))
    }

    fn build(&self) -> Result<Config, ConfigError> {
        let text = |v: &str| Ok::<_, String>(v.to_string());
        let non_empty = |v: &str| {
            if v.trim().is_empty() {
                Err("a non-empty string".to_string())
            } else {
                Ok(v.to_string())
            }
        };
        let since = self.typed("since", parse::timestamp)?;
        let until = self.typed("until", parse::timestamp)?;
        self.check_backfill_bounds(since, until)?;
        let config = Config {
            app_config: self.typed("app_config", text)?.map(PathBuf::from),
            tenant: self.required("tenant", parse::tenant)?,
            client_id: self.required("client_id", non_empty)?,
            client_secret: self.required("client_secret", |v| non_empty(v).map(Secret::new))?,
            sources: self.required("sources", parse::sources)?,
            timelag: self.number("timelag", 0, 30 * 86_400)?,
            streams: self.number("streams", 1, 64)? as usize,
            stream_frame: self.number("stream_frame", 1, 86_400)?,
            page_size: self.number("page_size", 1, 1000)? as u32,
            rate_limit: self
                .required("rate_limit", parse::rate_limit)?
                .map(|(n, seconds)| (n, Duration::from_secs(seconds))),
            rate_limits: self
                .typed("rate_limits", parse::rate_limits)?
                .unwrap_or_default()
                .into_iter()
                .map(|(bucket, limit)| (bucket, limit.map(|(n, s)| (n, Duration::from_secs(s)))))
                .collect(),
            max_retries: self.number("max_retries", 0, 100)? as u32,
            deadline: self
                .typed("deadline", |v| parse::integer(v, 1, 86_400))?
                .map(Duration::from_secs),
            http_timeout: Duration::from_secs(self.number("http_timeout", 1, 3600)?),
            queue_backend: self.required("queue_backend", |v| {
                parse::choice(v, &["redis", "log", "file"]).map(|c| match c {
                    "redis" => Backend::Redis,
                    "log" => Backend::Log,
                    _ => Backend::File,
                })
            })?,
            queue_type: self.required("queue_type", |v| {
                parse::choice(v, &["list", "channel"]).map(|c| match c {
                    "list" => QueueType::List,
                    _ => QueueType::Channel,
                })
            })?,
            queue_key: self.required("queue_key", non_empty)?,
            queue_keys: self
                .typed("queue_keys", parse::queue_keys)?
                .unwrap_or_default(),
            redis: self.required("redis_url", |v| parse::redis_url(v).map(RedisTarget::new))?,
            greenlets_count: self.number("greenlets_count", 1, 256)? as usize,
            redis_pool_block: self.required("redis_pool_block", parse::boolean)?,
            redis_pool_gevent_queue: self.required("redis_pool_gevent_queue", parse::boolean)?,
            redis_pool_max_connections: self.number("redis_pool_max_connections", 1, 1024)? as u32,
            redis_pool_timeout: Duration::from_secs(self.number("redis_pool_timeout", 1, 3600)?),
            graph_url: self.required("graph_url", parse::origin)?,
            login_url: self.required("login_url", parse::origin)?,
            file_path: self.required("file_path", |v| {
                non_empty(v).map(|p| match p.as_str() {
                    "-" => Output::Stdout,
                    _ => Output::Path(PathBuf::from(p)),
                })
            })?,
            log_level: self.required("log_level", parse::log_level)?,
            select: self.typed("select", parse::select)?.flatten(),
            state: self.required("state", |v| {
                parse::choice(v, &["auto", "off"]).map(|c| match c {
                    "auto" => StateMode::Auto,
                    _ => StateMode::Off,
                })
            })?,
            state_file: self.typed("state_file", non_empty)?.map(PathBuf::from),
            // Graph keeps sign-ins 30 days: a longer catch-up could only find nothing.
            max_catchup: self.number("max_catchup", 60, 30 * 86_400)?,
            rescan: self.number("rescan", 0, 7 * 86_400)?,
            since,
            until,
            fixed_now: None,
            progress_every: Duration::from_secs(10),
        };
        self.check_sources(&config)?;
        Ok(config)
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
        let source = self.get(option).map_or(Source::Default, |(_, s)| s.clone());
        ConfigError::new(option, source, problem, accepted)
    }

    fn check_backfill_bounds(
        &self,
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
    ) -> Result<(), ConfigError> {
        let until_source = || {
            self.get("until")
                .map(|(_, s)| s.clone())
                .unwrap_or(Source::Cli)
        };
        match (since, until) {
            (None, Some(_)) => Err(ConfigError::new(
                "until",
                until_source(),
                "given without since".into(),
                "--until together with --since",
            )),
            (Some(since), Some(until)) if since >= until => Err(ConfigError::new(
                "until",
                until_source(),
                "not after since".into(),
                "a time later than --since",
            )),
            _ => Ok(()),
        }
    }
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
        assert_eq!(err.option(), Some("client_secret"));
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
}
