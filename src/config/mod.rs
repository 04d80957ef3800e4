//! Configuration: gathers option values from the config file, the command line, the
//! environment and the defaults (in that order of precedence, as the original did),
//! checks them — reporting every problem at once —, and builds the typed [`Config`] a
//! run is made from. Every option is declared once, in [`spec`].

mod cli;
mod credentials;
mod file;
mod kinds;
mod parse;
mod rules;
mod spec;
mod targets;
mod values;

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

pub use crate::error::{ConfigError, Origin};
pub use crate::files::Output;
use crate::redis_client::{RedisSettings, RedisTarget};
pub use crate::sink::{Backend, QueueType};
pub use credentials::Credential;
pub use spec::Options;
pub use targets::{PushTarget, StateMode};
pub use values::asks_for_json;

use values::{AZURE_NAMES, Values, holds_secret, readable_by_others, test_knob};

use crate::lane::{Lane, OtherLayout, Shared};
use crate::shard::Shard;
use crate::sources::{Bucket, SourceSpec};

/// A checked configuration: every option as given ([`Options`]), what is derived from
/// them for the whole run — the credential, the effective hosts, the backfill bounds —
/// and each source's own share of the run ([`Lane`]), built once.
#[derive(Debug, Clone)]
pub struct Config {
    pub options: Options,
    /// One per source of `sources`, in that order.
    pub sources: Vec<Lane>,
    pub credential: Credential,
    /// `graph_url`, or the cloud's Graph host.
    pub graph_url: url::Url,
    /// `login_url`, or the cloud's identity platform host.
    pub login_url: url::Url,
    /// `redis_url`, or what `redis_url_file` holds.
    pub redis: RedisTarget,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// This process's share of `tenants` (`shard`), its index resolved.
    pub shard: Option<Shard>,
    /// A fixed "now" for replaying cron runs in tests (`MSGX_NOW`, undocumented in --help).
    pub fixed_now: Option<OffsetDateTime>,
    /// How often a long run logs its progress (10 s; `MSGX_PROGRESS_SECONDS` in tests).
    pub progress_every: Duration,
    /// Backoffs times this (1; `MSGX_BACKOFF_MS` = the first retry's ceiling in
    /// tests, so they need not sleep through real backoffs).
    pub backoff_scale: f64,
    /// Rate-limit windows pass this many times faster in real time (1;
    /// `MSGX_BUDGET_SPEEDUP` in tests, so a replay of cron runs need not wait through
    /// Graph's real budget). What a run may spend per second of data is unchanged.
    pub budget_speedup: u32,
    /// Said at WARN once logging is set up: values the config file overrode, options
    /// without effect, a config file others can read.
    pub warnings: Vec<String>,
}

/// `spec`'s share of the run, for `tenant` when the run exports several.
fn lane_of(
    options: &Options,
    spec: &'static SourceSpec,
    tenant: Option<&str>,
    lanes: usize,
) -> Lane {
    let named = |text: &str| {
        let text = text.replace(SOURCE_PLACEHOLDER, spec.name);
        match tenant.or(options.tenant.as_deref()) {
            Some(tenant) => text.replace(TENANT_PLACEHOLDER, tenant),
            None => text,
        }
    };
    let per_source = |path: &PathBuf| PathBuf::from(named(&path.to_string_lossy()));
    let queue_key = named(&queue_key_of(options, spec, tenant.is_some()));
    let owner = tenant.or(options.tenant.as_deref());
    let other_layout = owner
        .map(|owner| {
            let other = queue_key_of(options, spec, tenant.is_none())
                .replace(SOURCE_PLACEHOLDER, spec.name)
                .replace(TENANT_PLACEHOLDER, owner);
            let shared = tenant.map(|tenant| Shared {
                claims_unnamed: options.tenant.as_deref() == Some(tenant)
                    || options.tenants.as_ref().is_some_and(|all| all.len() == 1),
            });
            OtherLayout {
                queue_key: other,
                shared,
            }
        })
        .filter(|other| other.queue_key != queue_key);
    Lane {
        spec,
        tenant: tenant.map(str::to_string),
        queue_key,
        owner: owner.map(str::to_string),
        other_layout,
        page_size: options.page_size.min(spec.max_top),
        select: options.select.clone().filter(|_| spec.is_sign_ins()),
        frames_per_range: (options.streams / lanes.max(1)).max(1),
        versioned: options.signin_updates && spec.is_sign_ins(),
        file_path: match &options.file_path {
            Output::Path(path) => Output::Path(per_source(path)),
            Output::Stdout => Output::Stdout,
        },
        state_file: options.state_file.as_ref().map(per_source),
    }
}

/// Where `source`'s records go (see [`Lane::queue_key`]), `{tenant}` still in
/// it; `several_tenants`: a `queue_key` without `{tenant}` gets `:{tenant}` appended,
/// so that each tenant has keys of its own.
fn queue_key_of(options: &Options, source: &SourceSpec, several_tenants: bool) -> String {
    let base = match several_tenants && !options.queue_key.contains(TENANT_PLACEHOLDER) {
        true => format!("{}:{TENANT_PLACEHOLDER}", options.queue_key),
        false => options.queue_key.clone(),
    };
    match options.queue_keys.get(source.name) {
        Some(key) => key.clone(),
        None if source.name == crate::sources::sign_ins().name => base,
        None => format!("{base}:{}", source.name),
    }
}

impl Config {
    /// The configuration of source `name`, if this run exports it.
    pub fn source(&self, name: &str) -> Option<&Lane> {
        self.sources.iter().find(|s| s.name() == name)
    }

    /// Several sources (or tenants) are exported: log lines and summaries name theirs.
    pub fn name_sources(&self) -> bool {
        self.sources.len() > 1 || self.options.tenants.is_some()
    }

    /// The tenants of the run: those of `tenants` (of its shard), else the
    /// credential's one (None).
    pub fn tenants(&self) -> Vec<Option<&str>> {
        tenants_of(&self.options, self.shard)
    }

    /// With `shard`: the shard, the tenants that fall to it, and how many `tenants`
    /// lists in all.
    pub fn shard_share(&self) -> Option<(Shard, Vec<&str>, usize)> {
        let (shard, all) = (self.shard?, self.options.tenants.as_ref()?);
        let mine = self.tenants().into_iter().flatten().collect();
        Some((shard, mine, all.len()))
    }

    /// The credential that signs in to `tenant` (None: the configured one).
    pub fn credential_in(&self, tenant: Option<&str>) -> Credential {
        match tenant {
            Some(tenant) => self.credential.in_tenant(tenant),
            None => self.credential.clone(),
        }
    }

    /// Fetcher threads, shared by every source: the most requests in flight. How many
    /// are in flight follows Graph's latency, from `streams` up.
    pub fn fetchers(&self) -> usize {
        MAX_IN_FLIGHT.max(self.options.streams)
    }

    /// Bytes the pages in flight may hold together (`page_memory_mb`).
    pub fn page_memory(&self) -> u64 {
        self.options.page_memory_mb << 20
    }

    /// Frames of the original's lagged window (a first run's, or `state off`):
    /// `streams` frames of `stream_frame` seconds.
    pub fn lagged_frames(&self) -> usize {
        self.options.streams
    }

    /// Frames each of a lane's ranges is cut into (every lane has the same share).
    pub fn frames_per_lane(&self) -> usize {
        self.sources.first().map_or(1, |s| s.frames_per_range)
    }

    /// The hosts tokens are asked of and for.
    pub fn hosts(&self) -> crate::auth::Hosts {
        crate::auth::Hosts {
            graph: self.graph_url.clone(),
            login: self.login_url.clone(),
        }
    }

    /// What the request budget needs of the options.
    pub fn budget_settings(&self) -> crate::budget::BudgetSettings {
        let buckets: std::collections::BTreeSet<Bucket> =
            self.sources.iter().map(|s| s.spec.bucket).collect();
        crate::budget::BudgetSettings {
            tenant_limits: buckets
                .iter()
                .filter_map(|&b| Some((b, self.rate_limit_of(b)?)))
                .collect(),
            app_limits: buckets
                .iter()
                .filter_map(|&b| Some((b, self.app_rate_limit_of(b)?)))
                .collect(),
            lanes: self
                .sources
                .iter()
                .map(|s| (s.tenant.clone(), s.spec.bucket))
                .collect(),
            deep_reads: !self.deeper_rescans().is_empty(),
            speedup: self.budget_speedup,
            shared: self.options.queue_backend.uses_redis().then(|| {
                crate::budget::SharedSettings {
                    redis: self.redis_settings(),
                    app_id: self.app_id().to_string(),
                    own_tenant: self.budget_owner(None).0,
                    http_timeout: self.options.http_timeout,
                }
            }),
        }
    }

    /// What the state stores need of the options.
    pub fn state_settings(&self) -> crate::state::StateSettings {
        crate::state::StateSettings {
            keep: self.options.state == StateMode::Auto && self.since.is_none(),
            redis: self
                .options
                .queue_backend
                .uses_redis()
                .then(|| self.redis_settings()),
            rescan: self.rescan(),
            window: self.options.streams as i64 * self.options.stream_frame as i64,
            timelag: self.options.timelag as i64,
        }
    }

    /// What the sinks need of the options.
    pub fn sink_settings(&self) -> crate::sink::SinkSettings {
        crate::sink::SinkSettings {
            backend: self.options.queue_backend,
            queue_type: self.options.queue_type,
            max_queue_len: self.options.max_queue_len,
            stream_maxlen: self.options.stream_maxlen,
            allow_no_subscribers: self.options.channel_allow_no_subscribers,
            record_format: self.options.record_format,
            name_sources: self.name_sources(),
            redis: self.redis_settings(),
        }
    }

    /// What the Redis client needs of the options.
    pub fn redis_settings(&self) -> RedisSettings {
        RedisSettings {
            target: self.redis.clone(),
            cluster: self.options.redis_cluster.clone(),
            tls_insecure: self.options.redis_tls_insecure,
            ca_file: self.options.redis_ca_file.clone(),
            pool_max_connections: self.options.redis_pool_max_connections,
            pool_timeout: self.options.redis_pool_timeout,
            pool_block: self.options.redis_pool_block,
            pool_gevent_queue: self.options.redis_pool_gevent_queue,
        }
    }

    /// The first rescan depth: when each second is read the second time (0: never).
    pub fn rescan(&self) -> u64 {
        self.options.rescan.first().copied().unwrap_or(0)
    }

    /// The rescan depths after the first: each second is read once more at each, with
    /// the budget the first two reads leave.
    pub fn deeper_rescans(&self) -> &[u64] {
        self.options.rescan.get(1..).unwrap_or_default()
    }

    /// Frames a backfill's range is cut into, per source: one per fetcher.
    pub fn backfill_frames(&self) -> usize {
        self.options.streams
    }

    /// When no request may start any more, from the run's start: `deadline`, else
    /// [`CRON_DEADLINE`] for a cron run — so a stuck run never overlaps several later
    /// ticks — and never for a backfill.
    pub fn run_deadline(&self) -> Duration {
        match (self.options.deadline, self.since) {
            (Some(deadline), _) => deadline,
            (None, None) => CRON_DEADLINE,
            // A century: never, in a form `Instant` arithmetic takes.
            (None, Some(_)) => Duration::from_secs(100 * 365 * 86_400),
        }
    }

    /// The request budget of `bucket`: `rate_limit` for reports, `rate_limits` or
    /// Graph's documented limit for the others.
    pub fn rate_limit_of(&self, bucket: Bucket) -> Option<(u32, Duration)> {
        match (bucket, self.options.rate_limits.get(&bucket)) {
            (Bucket::Reports, _) => self.options.rate_limit,
            (_, Some(limit)) => *limit,
            (_, None) => {
                let (requests, seconds) = bucket.graph_limit();
                Some((requests, Duration::from_secs(seconds)))
            }
        }
    }

    /// The request budget of `bucket` across every tenant of the application:
    /// `app_rate_limit` for reports (Graph documents no such limit for the others);
    /// none when the bucket is not paced per tenant either (`rate_limit 0`).
    pub fn app_rate_limit_of(&self, bucket: Bucket) -> Option<(u32, Duration)> {
        match bucket {
            Bucket::Reports => self
                .options
                .app_rate_limit
                .filter(|_| self.rate_limit_of(bucket).is_some()),
            _ => None,
        }
    }

    /// Whose budget the requests to `tenant` (None: the credential's) spend:
    /// (tenant, application), as Graph counts it.
    pub fn budget_owner(&self, tenant: Option<&str>) -> (String, String) {
        let tenant = tenant
            .or(self.credential.tenant())
            .or(self.options.tenant.as_deref());
        (tenant.unwrap_or("-").to_string(), self.app_id().to_string())
    }

    /// Where an administrator of `tenant` (None: the credential's) grants the
    /// application its admin consent.
    pub fn consent_url(&self, tenant: Option<&str>) -> String {
        let (tenant, client_id) = self.budget_owner(tenant);
        format!(
            "{}/{tenant}/adminconsent?client_id={client_id}",
            self.login_url.as_str().trim_end_matches('/')
        )
    }

    /// The application, as Graph counts its app-wide budget.
    pub fn app_id(&self) -> &str {
        self.credential.client_id().unwrap_or("managed-identity")
    }
}

/// The pod's index in a Kubernetes Indexed Job.
const JOB_COMPLETION_INDEX: &str = "JOB_COMPLETION_INDEX";

/// The most requests in flight: the app's budget across tenants (122 per 10 s) at 4 s a
/// page with headroom — Graph's pace at its slowest in practice.
pub const MAX_IN_FLIGHT: usize = 64;

/// A cron run's deadline unless one is given.
pub const CRON_DEADLINE: Duration = Duration::from_secs(300);

/// Replaced by the source's name in `file_path` and `state_file`.
const SOURCE_PLACEHOLDER: &str = "{source}";
/// Replaced by the tenant in `queue_key`, `queue_keys`, `file_path` and `state_file`.
const TENANT_PLACEHOLDER: &str = "{tenant}";

/// What one invocation asks for.
#[derive(Debug)]
pub enum Invocation {
    Help(String),
    Version(String),
    /// `--print_config`: every effective option and its source.
    PrintConfig(String),
    Run(Box<Config>),
}

/// A WARN for each `GRAPH_*` variable of `names` that names no option (a typo such as
/// `GRAPH_TIMELAGG` would otherwise be ignored without a word), with the option it
/// probably meant.
pub fn stray_variables(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut strays: Vec<String> = names
        .into_iter()
        .filter(|name| name.starts_with("GRAPH_"))
        .filter(|name| {
            !spec::OPTIONS
                .iter()
                .any(|s| spec::env_name(s.name) == *name)
        })
        .collect();
    strays.sort();
    strays
        .into_iter()
        .map(|name| {
            let typed = name["GRAPH_".len()..].to_ascii_lowercase();
            let hint = match spec::nearest(&typed) {
                Some(meant) => format!(" (did you mean {}?)", spec::env_name(meant)),
                None => String::new(),
            };
            format!("environment variable {name} names no option{hint}: it is ignored")
        })
        .collect()
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
            values.set(option, value, Origin::Env(variable.to_string()));
        }
    }
    for spec in spec::OPTIONS {
        let variable = spec::env_name(spec.name);
        if let Some(value) = env(&variable).filter(|v| !v.is_empty()) {
            values.set(spec.name, value, Origin::Env(variable));
        }
    }
    for (name, value) in cli_values {
        values.set(name, value, Origin::Cli);
    }
    let mut warnings = Vec::new();
    let mut file_errors = Vec::new();
    if let Some((path, _)) = values.get("app_config") {
        let path = PathBuf::from(path);
        let (read, errors) = file::read(&path)?;
        file_errors = errors;
        // Only what the file changes: the same value given twice overrides nothing.
        let changed: Vec<&(&str, String)> = read
            .iter()
            .filter(|(name, value)| values.get(name).is_some_and(|(given, _)| given != value))
            .collect();
        // A backfill does not deduplicate: a command-line option the file overrides
        // (`--sources directory_audits` against the file's two sources) would export,
        // and deliver again, what was not asked for. Refused, not a WARN.
        let backfill = ["since", "until"]
            .iter()
            .any(|name| values.get(name).is_some() || read.iter().any(|(n, _)| n == name));
        if backfill {
            let refused: Vec<ConfigError> = changed
                .iter()
                .filter(|(name, _)| values.given(name) == Some(Origin::Cli))
                .map(|(name, value)| {
                    let given = values
                        .get(name)
                        .map(|(v, _)| v.to_string())
                        .unwrap_or_default();
                    ConfigError::new(
                        name,
                        Origin::File(path.clone()),
                        format!(
                            "is {} in the config file, which wins over the command line's {} \
                             (as in the original), and a backfill does not deduplicate: it \
                             would export what was not asked for",
                            spec::shown(name, value),
                            spec::shown(name, &given)
                        ),
                        &format!(
                            "for this backfill, a copy of {} without {name} (e.g. sed \
                             '/^{name}:/d'), or {name} set in the config file to what you want",
                            path.display()
                        ),
                    )
                })
                .collect();
            if let Some(error) = ConfigError::all(refused) {
                return Err(error);
            }
        }
        let overridden: Vec<String> = changed
            .iter()
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
            values.set(name, value, Origin::File(path.clone()));
        }
    }
    let fixed_now = test_knob(env, "MSGX_NOW", parse::timestamp)?;
    // A test knob like MSGX_NOW: how often a long run logs its progress.
    let progress_every = test_knob(env, "MSGX_PROGRESS_SECONDS", |v| parse::integer(v, 1, 3600))?;
    let backoff_ms = test_knob(env, "MSGX_BACKOFF_MS", |v| parse::integer(v, 1, 60_000))?;
    let budget_speedup = test_knob(env, "MSGX_BUDGET_SPEEDUP", |v| parse::integer(v, 1, 10_000))?;
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
        return Ok(Invocation::PrintConfig(values.print(
            built.as_ref().ok(),
            problems.as_ref(),
            &warnings,
        )));
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
    if let Some(speedup) = budget_speedup {
        config.budget_speedup = speedup as u32;
    }
    Ok(Invocation::Run(Box::new(config)))
}

impl Values {
    /// `shard` with its index resolved (`K` alone: from `JOB_COMPLETION_INDEX`).
    fn shard(
        &self,
        options: &Options,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Shard> {
        let given = options.shard?;
        let origin = self
            .get("shard")
            .map_or(Origin::Cli, |(_, origin)| origin.clone());
        let mut refuse = |problem: String, accepted: &str| {
            errors.push(ConfigError::new("shard", origin.clone(), problem, accepted));
            None
        };
        if options.tenants.is_none() {
            return refuse(
                "splits the tenants of `tenants`, but none are given".into(),
                "tenants (the whole fleet's list, the same in every shard) with shard",
            );
        }
        let count = given.count;
        let index = match given.index {
            Some(index) => index,
            None => match env(JOB_COMPLETION_INDEX) {
                Some(index) => match index.trim().parse::<u32>() {
                    Ok(index) if index < count => index,
                    _ => {
                        let shown = crate::logging::escape(&index);
                        return refuse(
                            format!(
                                "is {count} shards, but {JOB_COMPLETION_INDEX} is {shown}, \
                                 not a shard of them"
                            ),
                            &format!("{JOB_COMPLETION_INDEX} from 0 to {}", count - 1),
                        );
                    }
                },
                None => {
                    return refuse(
                        format!(
                            "is {count} shards without an index, and {JOB_COMPLETION_INDEX} \
                             is not set (a Kubernetes Indexed Job sets it)"
                        ),
                        "i/K, or K in an Indexed Job's pod",
                    );
                }
            },
        };
        Some(Shard { index, count })
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
        self.check_files(&options, &mut errors);
        let credential = self.credential(&options, env, &mut errors, &mut warnings);
        let redis = self.redis_target(&options, &mut errors, &mut warnings);
        let (login_default, graph_default) = options.cloud.hosts();
        let host = |given: &Option<url::Url>, default: &str| {
            given.clone().unwrap_or_else(|| {
                url::Url::parse(default).expect("the cloud table holds valid URLs")
            })
        };
        let (since, until) = self.backfill(&options, now, &mut errors);
        let shard = self.shard(&options, env, &mut errors);
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
            sources: source_configs(&options, shard),
            options,
            credential,
            since,
            until,
            shard,
            fixed_now: None,
            progress_every: Duration::from_secs(10),
            backoff_scale: 1.0,
            budget_speedup: 1,
            warnings: Vec::new(),
        };
        self.check_sources(&config)?;
        config.warnings = warnings;
        config.warnings.extend(self.without_effect(&config));
        if let Some(warning) = self.page_size_cap(&config) {
            config.warnings.push(warning);
        }
        let format = config.options.record_format;
        let unshaped = crate::format::unshaped(format, &config.options.sources);
        if !unshaped.is_empty() {
            config.warnings.push(format!(
                "record_format {}: {} {} no shape in it and {} written as Graph sends {}",
                format.name(),
                unshaped.join(", "),
                if unshaped.len() == 1 { "has" } else { "have" },
                if unshaped.len() == 1 { "is" } else { "are" },
                if unshaped.len() == 1 { "it" } else { "them" },
            ));
        }
        if config.options.redis_tls_insecure {
            config.warnings.push(
                "redis_tls_insecure: the Redis server's certificate is not verified; anyone \
                 between here and Redis can read and change what is written"
                    .into(),
            );
        }
        if let Some(since) = config.since
            && since < now - crate::sources::RETENTION
        {
            config.warnings.push(format!(
                "--since {} is older than Graph's {}-day retention of sign-ins \
                 and audit logs: what is older is gone",
                crate::window::utc_second(since),
                crate::sources::RETENTION.whole_days()
            ));
        }
        Ok(config)
    }
}

/// The tenants `options` export: those of `tenants` that fall to `shard`, else the
/// credential's one (None).
fn tenants_of(options: &Options, shard: Option<Shard>) -> Vec<Option<&str>> {
    match &options.tenants {
        Some(tenants) => tenants
            .iter()
            .filter(|t| shard.is_none_or(|shard| shard.owns(t)))
            .map(|t| Some(t.as_str()))
            .collect(),
        None => vec![None],
    }
}

/// Every tenant × source of a run: each tenant's sources in `sources` order, the
/// tenants in `tenants` order (one tenant: the sources alone).
fn source_configs(options: &Options, shard: Option<Shard>) -> Vec<Lane> {
    let tenants = tenants_of(options, shard);
    // How many tenant × sources share the fetchers.
    let lanes = options.sources.len() * tenants.len();
    tenants
        .into_iter()
        .flat_map(|tenant| {
            options
                .sources
                .iter()
                .map(move |spec| lane_of(options, spec, tenant, lanes))
        })
        .collect()
}

/// The test credentials of [`test_config`] and the unit tests.
#[cfg(test)]
const TEST_CREDS: [&str; 6] = [
    "--tenant",
    "t.example",
    "--client_id",
    "c",
    "--client_secret",
    "s",
];

/// A run's configuration from `args` plus test credentials, without the environment.
#[cfg(test)]
pub fn test_config(args: &[&str]) -> Config {
    let mut all = TEST_CREDS.to_vec();
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
        let env: std::collections::BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match load(&args, &|name| env.get(name).cloned())? {
            Invocation::Run(config) => Ok(*config),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    const CREDS: [&str; 6] = TEST_CREDS;

    #[test]
    fn a_shard_exports_its_tenants_of_the_list_and_names_its_index_source() {
        let fleet = "a.example,b.example,c.example,d.example,e.example,f.example";
        let with = |shard: &str, env: &[(&str, &str)]| {
            let mut args = CREDS.to_vec();
            args.extend(["--tenants", fleet, "--shard", shard]);
            load_with(&args, env)
        };
        let mut seen = Vec::new();
        for index in 0..3 {
            let config = with(&format!("{index}/3"), &[]).unwrap();
            assert_eq!(config.shard, Some(Shard { index, count: 3 }));
            let mine: Vec<String> = config
                .tenants()
                .into_iter()
                .flatten()
                .map(str::to_string)
                .collect();
            assert_eq!(config.sources.len(), mine.len(), "one source each");
            // The layout is the whole list's: keys carry the tenant.
            assert!(
                config
                    .sources
                    .iter()
                    .all(|s| s.queue_key.ends_with(s.tenant.as_deref().unwrap()))
            );
            seen.extend(mine);
        }
        seen.sort();
        assert_eq!(seen.join(","), fleet, "every tenant in exactly one shard");
        // K alone: the index Kubernetes sets in an Indexed Job's pod.
        let config = with("3", &[("JOB_COMPLETION_INDEX", "2")]).unwrap();
        assert_eq!(config.shard, Some(Shard { index: 2, count: 3 }));
        for (shard, env, says) in [
            ("3", &[][..], "JOB_COMPLETION_INDEX is not set"),
            (
                "3",
                &[("JOB_COMPLETION_INDEX", "3")][..],
                "JOB_COMPLETION_INDEX is 3, not a shard",
            ),
            (
                "3",
                &[("JOB_COMPLETION_INDEX", "x\ny")][..],
                "JOB_COMPLETION_INDEX is x\\ny",
            ),
            ("3/3", &[][..], "i/K (shard i of K"),
            ("0/0", &[][..], "i/K (shard i of K"),
            ("-1/2", &[][..], "i/K (shard i of K"),
            ("1/2000", &[][..], "K <= 1000"),
            ("", &[][..], "i/K"),
        ] {
            let err = with(shard, env).unwrap_err();
            assert_eq!(err.option(), Some("shard"), "{shard}");
            assert!(err.to_string().contains(says), "{shard}: {err}");
        }
        // --print_config names the shard's tenants.
        let mut args: Vec<String> = CREDS.iter().map(|s| s.to_string()).collect();
        args.extend(["--tenants", fleet, "--shard", "3", "--print_config"].map(String::from));
        let env = |name: &str| (name == "JOB_COMPLETION_INDEX").then(|| "1".to_string());
        let Ok(Invocation::PrintConfig(text)) = load(&args, &env) else {
            panic!("print_config");
        };
        let mine = with("1/3", &[]).unwrap();
        let mine: Vec<&str> = mine.tenants().into_iter().flatten().collect();
        assert!(
            text.contains(&format!(
                "# shard 1/3: {} of the 6 tenants: {}\n",
                mine.len(),
                mine.join(",")
            )),
            "{text}"
        );
        let mut alone = CREDS.to_vec();
        alone.extend(["--shard", "0/2"]);
        let err = load_with(&alone, &[]).unwrap_err();
        assert!(err.to_string().contains("none are given"), "{err}");
    }

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
        assert_eq!(config.options.timelag, 120);
        assert_eq!(config.options.streams, 2);
        assert_eq!(config.options.stream_frame, 30);
        assert_eq!(config.options.page_size, 1000);
        assert_eq!(
            config.options.rate_limit,
            Some((5, Duration::from_secs(10)))
        );
        assert_eq!(config.options.max_retries, 8);
        assert_eq!(
            config.options.deadline, None,
            "300 s for cron runs, none for backfills"
        );
        assert_eq!(config.options.http_timeout, Duration::from_secs(60));
        assert_eq!(config.options.state, StateMode::Auto);
        assert_eq!(config.options.state_file, None);
        assert_eq!(config.options.max_catchup, 86_400);
        assert_eq!(config.options.rescan, [600]);
        assert_eq!(config.options.queue_backend, Backend::Redis);
        assert_eq!(config.options.queue_type, QueueType::List);
        assert_eq!(config.options.queue_key, "ms_graph_exporter");
        assert_eq!(config.redis.location(), "redis://localhost:6379/0");
        assert_eq!(config.options.greenlets_count, 10);
        assert!(config.options.redis_pool_block);
        assert_eq!(config.options.redis_pool_max_connections, 15);
        assert_eq!(config.options.redis_pool_timeout, Duration::from_secs(1));
        assert_eq!(config.options.file_path, Output::Stdout);
    }

    #[test]
    fn cli_beats_env() {
        let config = load_with(
            &["--streams", "4"],
            &[
                ("GRAPH_STREAMS", "3"),
                ("GRAPH_TIMELAG", "60"),
                ("GRAPH_TENANT", "t.example"),
                ("GRAPH_CLIENT_ID", "c"),
                ("GRAPH_CLIENT_SECRET", "s"),
            ],
        )
        .unwrap();
        assert_eq!(config.options.streams, 4);
        assert_eq!(config.options.timelag, 60);
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
        let err = load_with(&["--tenant", "t.example", "--client_id", "c"], &[]).unwrap_err();
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
            &[
                "--tenant",
                "t.example",
                "--client_id",
                "c",
                "--client_secret",
                " ",
            ],
            &[],
        )
        .unwrap_err();
        assert!(!err.to_string().contains("\" \""), "{err}");
        let config = load_with(
            &[
                "--tenant",
                "t.example",
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
        let key = |name| config.source(name).unwrap().queue_key.clone();
        assert_eq!(key("signins"), "ms_graph_exporter");
        assert_eq!(key("risk_detections"), "ms_graph_exporter:risk_detections");
        assert_eq!(key("directory_audits"), "entra_audit");
        let risk = config.source("risk_detections").unwrap();
        assert_eq!(risk.page_size, 500);
        assert_eq!(
            risk.frames_per_range, 1,
            "two streams shared by three sources"
        );
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
    fn each_tenant_gets_keys_files_and_a_credential_of_its_own() {
        let creds = ["--client_id", "c", "--client_secret", "s"];
        let keys = |config: &Config| -> Vec<(Option<String>, String)> {
            config
                .sources
                .iter()
                .map(|s| (s.tenant.clone(), s.queue_key.clone()))
                .collect()
        };
        // From the environment, the default queue key gets the tenant appended.
        let mut args = creds.to_vec();
        args.extend(["--sources", "signins,provisioning"]);
        let config = load_with(&args, &[("GRAPH_TENANTS", "a.example, b-2.example")]).unwrap();
        let some = |t: &str| Some(t.to_string());
        assert_eq!(
            keys(&config),
            [
                (some("a.example"), "ms_graph_exporter:a.example".into()),
                (
                    some("a.example"),
                    "ms_graph_exporter:a.example:provisioning".into()
                ),
                (some("b-2.example"), "ms_graph_exporter:b-2.example".into()),
                (
                    some("b-2.example"),
                    "ms_graph_exporter:b-2.example:provisioning".into()
                ),
            ]
        );
        assert_eq!(
            config.credential_in(Some("b-2.example")).tenant(),
            Some("b-2.example")
        );
        assert_eq!(config.sources[2].label(), "b-2.example signins");
        assert!(config.name_sources());
        // `{tenant}` wherever it is given; `tenants` needs no `tenant`.
        let mut args = creds.to_vec();
        args.extend([
            "--tenants",
            "a.example,b.example",
            "--queue_key",
            "entra:{tenant}:in",
            "--queue_backend",
            "file",
            "--file_path",
            "/var/lib/msgx/{tenant}-{source}.ndjson",
        ]);
        let config = load_with(&args, &[]).unwrap();
        assert_eq!(config.sources[1].queue_key, "entra:b.example:in");
        assert_eq!(
            config.sources[1].file_path,
            Output::Path("/var/lib/msgx/b.example-signins.ndjson".into())
        );
        // One tenant: the keys of before, `{tenant}` being the tenant's name.
        let config = load_with(&CREDS, &[]).unwrap();
        assert_eq!(keys(&config), [(None, "ms_graph_exporter".into())]);
        let mut args = CREDS.to_vec();
        args.extend(["--queue_key", "x:{tenant}"]);
        assert_eq!(
            load_with(&args, &[]).unwrap().sources[0].queue_key,
            "x:t.example"
        );
    }

    #[test]
    fn tenants_that_would_share_keys_files_or_a_managed_identity_are_refused() {
        let creds = ["--client_id", "c", "--client_secret", "s"];
        let refused = |extra: &[&str]| {
            let mut args = creds.to_vec();
            args.extend(extra);
            load_with(&args, &[]).unwrap_err()
        };
        let err = refused(&[
            "--tenants",
            "a.example,b.example",
            "--queue_keys",
            "signins=one",
        ]);
        assert_eq!(
            err.to_string(),
            "option queue_keys: sources a.example signins and b.example signins would both write to \"one\" \
             (and share its state) (from command line --queue_keys); accepted: a different key \
             per source and tenant ({tenant} in it)"
        );
        let err = refused(&["--tenants", "a.example,A.example"]);
        assert_eq!(err.option(), Some("tenants"));
        assert!(err.to_string().contains("A.example is repeated"), "{err}");
        let err = refused(&["--tenants", "a.example,b/c"]);
        assert_eq!(err.option(), Some("tenants"));
        let err = refused(&[
            "--tenants",
            "a.example,b.example",
            "--queue_backend",
            "file",
            "--file_path",
            "/x/{source}.ndjson",
        ]);
        assert_eq!(err.option(), Some("file_path"));
        let err = load_with(
            &[
                "--auth",
                "managed_identity",
                "--tenants",
                "a.example,b.example",
            ],
            &[],
        )
        .unwrap_err();
        assert_eq!(err.option(), Some("tenants"));
        assert!(err.to_string().contains("managed_identity"), "{err}");
        // Paths and empty names are no tenants.
        for bad in [
            ".",
            "..",
            "a..b",
            ".a",
            "a.",
            "a",
            "a.example,,b.example",
            "a.example,",
            "a_b.c",
        ] {
            let err = refused(&["--tenants", bad]);
            assert_eq!(err.option(), Some("tenants"), "{bad}");
        }
        // Neither tenant nor tenants: still missing.
        let err = load_with(&creds, &[]).unwrap_err();
        assert!(err.to_string().contains("tenant"), "{err}");
    }

    #[test]
    fn the_azure_sdk_names_are_a_fallback_below_graph_names() {
        let env = [
            ("AZURE_TENANT_ID", "azure-tenant.example"),
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
                assert_eq!(tenant, "azure-tenant.example");
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
        assert_eq!(config.credential.kind(), kinds::AuthKind::WorkloadIdentity);
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
        let args = [
            "--tenant",
            "t.example",
            "--client_id",
            "c",
            "--cloud",
            "usgov",
        ];
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
                endpoint: crate::auth::ManagedEndpoint::AppService { url, .. },
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
