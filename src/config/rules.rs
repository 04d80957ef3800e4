//! The rules a configuration must follow beyond each value's own: backfill bounds in
//! order, a key, a file and a state file of its own per source, and WARNs for options
//! without effect and settings that cost (a small `page_size`).

use std::path::PathBuf;

use time::OffsetDateTime;

use super::kinds::{AuthKind, KINDS};
use super::{Config, Options, Output, SOURCE_PLACEHOLDER, TENANT_PLACEHOLDER, Values};
use crate::error::ConfigError;

impl Values {
    /// `--since/--until`, resolved against `now`, in order.
    pub(super) fn backfill(
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
    pub(super) fn check_sources(&self, config: &Config) -> Result<(), ConfigError> {
        let keys: Vec<&String> = config.sources.iter().map(|s| &s.queue_key).collect();
        for (i, key) in keys.iter().enumerate() {
            if let Some(j) = keys[..i].iter().position(|k| *k == *key) {
                return Err(self.conflict(
                    "queue_keys",
                    format!(
                        "sources {} and {} would both write to {key:?} (and share its state)",
                        config.sources[j].label(),
                        config.sources[i].label()
                    ),
                    match config.options.tenants.is_some() {
                        true => "a different key per source and tenant ({tenant} in it)",
                        false => "a different key per source",
                    },
                ));
            }
        }
        // A queue must not be another source's state, lock or seen-set either.
        for (i, key) in keys.iter().enumerate() {
            for (j, other) in keys.iter().enumerate().filter(|(j, _)| *j != i) {
                if let Some(clash) = crate::keys::all(other)
                    .into_iter()
                    .skip(1)
                    .find(|k| k == *key)
                {
                    return Err(self.conflict(
                        "queue_keys",
                        format!(
                            "source {}'s queue {clash:?} is a key source {} keeps its state in \
                             (beside its queue {other:?})",
                            config.sources[i].label(),
                            config.sources[j].label()
                        ),
                        "a queue key of its own per source, not named like another's \
                         :msgx:state, :msgx:lock or :msgx:seen",
                    ));
                }
            }
        }
        self.check_tenants(config)?;
        if config.options.sources.len() < 2 {
            return Ok(());
        }
        self.paths_name(config, SOURCE_PLACEHOLDER, "sources", "{source}")
    }

    /// What several tenants need: a credential that can sign in to each (not a managed
    /// identity's), and a file and a state file of their own.
    fn check_tenants(&self, config: &Config) -> Result<(), ConfigError> {
        let Some(tenants) = &config.options.tenants else {
            return Ok(());
        };
        if config.credential.kind() == AuthKind::ManagedIdentity {
            return Err(self.conflict(
                "tenants",
                "is given with auth managed_identity, whose identity signs in to its own \
                 tenant only"
                    .into(),
                "auth secret, certificate or workload_identity of a multi-tenant application",
            ));
        }
        if tenants.len() < 2 {
            return Ok(());
        }
        self.paths_name(config, TENANT_PLACEHOLDER, "tenants", "{tenant}-{source}")
    }

    /// With several `what` (sources, tenants) exported, the file backend's
    /// `file_path` and the log and file backends' `state_file` must hold `placeholder`,
    /// so that each has its own (`stem` is an example file name).
    fn paths_name(
        &self,
        config: &Config,
        placeholder: &str,
        what: &str,
        stem: &str,
    ) -> Result<(), ConfigError> {
        let lacks = |path: &PathBuf| !path.to_string_lossy().contains(placeholder);
        let file_shared = match &config.options.file_path {
            Output::Stdout => true,
            Output::Path(path) => lacks(path),
        };
        let refused = |option: &str, extension: &str| {
            self.conflict(
                option,
                format!("has no {placeholder}, but several {what} are exported"),
                &format!("a path with {placeholder}, e.g. /var/lib/msgx/{stem}.{extension}"),
            )
        };
        if config.options.queue_backend.writes_file() && file_shared {
            return Err(refused("file_path", "ndjson"));
        }
        if !config.options.queue_backend.uses_redis()
            && config.options.state_file.as_ref().is_some_and(lacks)
        {
            return Err(refused("state_file", "state"));
        }
        Ok(())
    }

    pub(super) fn conflict(&self, option: &str, problem: String, accepted: &str) -> ConfigError {
        ConfigError::new(option, self.source(option), problem, accepted)
    }

    /// A `page_size` below Graph's 1000 costs a request per page out of a budget of
    /// `rate_limit`: the original's file sets 50, which caps keep-up at a tenth of what
    /// Graph allows. Said with the figure.
    pub(super) fn page_size_cap(&self, config: &Config) -> Option<String> {
        let source = self.given("page_size")?;
        let (requests, per) = config.options.rate_limit?;
        if config.options.page_size >= 1000 {
            return None;
        }
        // Each second is read twice (when due and `rescan` later) unless rescan is 0.
        let (passes, reads) = match config.rescan() {
            0 => (1.0, "each second read once"),
            _ => (2.0, "each second read twice"),
        };
        let ceiling =
            f64::from(requests) / per.as_secs_f64() * f64::from(config.options.page_size) / passes;
        let what = match config.sources.iter().any(|s| s.spec.is_sign_ins()) {
            true => "sign-ins",
            false => "records",
        };
        Some(format!(
            "option page_size {} (from {}) caps keep-up at about {ceiling:.0} {what}/s at \
             rate_limit {requests}/{} ({reads}); Graph allows 1000 a page: leave page_size \
             unset",
            config.options.page_size,
            source.describe("page_size"),
            per.as_secs()
        ))
    }

    /// A WARN for each option the user set that this configuration ignores.
    pub(super) fn without_effect(&self, config: &Config) -> Vec<String> {
        let redis = config.options.queue_backend.uses_redis();
        let kind = config.credential.kind();
        let sign_ins = config.sources.iter().any(|s| s.spec.is_sign_ins());
        let mut ignored: Vec<(&str, bool, String)> = vec![
            (
                "state_file",
                redis,
                "the redis backend keeps its state in Redis".into(),
            ),
            (
                "queue_type",
                !redis,
                "only the redis backend has a queue type".into(),
            ),
            (
                "queue_key",
                config.options.queue_backend.writes_file(),
                "the file backend writes to file_path".into(),
            ),
            (
                "redis_pool_max_connections",
                !redis,
                "only the redis backend connects to Redis".into(),
            ),
            (
                "file_path",
                !config.options.queue_backend.writes_file(),
                "only the file backend writes to file_path".into(),
            ),
            (
                "tenant",
                config.options.tenants.is_some(),
                "tenants names the tenants this run exports".into(),
            ),
            (
                "select",
                !sign_ins,
                "$select applies to sign-in sources only".into(),
            ),
        ];
        // What only other kinds of credential read.
        for other in KINDS.iter().filter(|k| k.kind != kind) {
            for name in other.reads {
                ignored.push((
                    name,
                    true,
                    format!("it is read with auth {} only", other.name),
                ));
            }
        }
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
