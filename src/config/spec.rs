//! The table of options: names, defaults, ENV variables and help text, in one place.
//!
//! Names, meanings, defaults and `GRAPH_*` variables of the original MsGraphExporter are
//! kept; the options after `redis_pool_timeout` are new in msgx-once.

pub struct OptionSpec {
    /// The config-file key; the CLI flag is `--name` (or with dashes); ENV is `GRAPH_NAME`.
    pub name: &'static str,
    /// Value placeholder shown in `--help`; `None` for boolean switches.
    pub value_name: Option<&'static str>,
    pub default: Option<&'static str>,
    /// Options that only make sense per invocation are refused in a config file.
    pub in_file: bool,
    /// A list or map: a config file may give a YAML sequence or mapping, read into the
    /// command line's comma-separated form.
    pub structured: bool,
    pub help: &'static str,
}

const fn opt(
    name: &'static str,
    value_name: &'static str,
    default: Option<&'static str>,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        value_name: Some(value_name),
        default,
        in_file: true,
        structured: false,
        help,
    }
}

const fn structured(
    name: &'static str,
    value_name: &'static str,
    default: Option<&'static str>,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        structured: true,
        ..opt(name, value_name, default, help)
    }
}

const fn switch(name: &'static str, default: &'static str, help: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        value_name: None,
        default: Some(default),
        in_file: true,
        structured: false,
        help,
    }
}

const fn cli_only(name: &'static str, value_name: &'static str, help: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        value_name: Some(value_name),
        default: None,
        in_file: false,
        structured: false,
        help,
    }
}

pub const OPTIONS: &[OptionSpec] = &[
    cli_only(
        "app_config",
        "path",
        "YAML config file; its directives are the option names below",
    ),
    opt(
        "tenant",
        "tenant",
        None,
        "Entra ID tenant (GUID or domain) of the service principal (required)",
    ),
    opt(
        "client_id",
        "id",
        None,
        "client id of the service principal (required)",
    ),
    opt(
        "client_secret",
        "secret",
        None,
        "client secret of the service principal (required; never logged)",
    ),
    structured(
        "sources",
        "names",
        Some("signins"),
        "audit streams to export, comma-separated: signins, signins_noninteractive, signins_service_principal, signins_managed_identity, directory_audits, provisioning, risk_detections, security_alerts",
    ),
    opt(
        "timelag",
        "seconds",
        Some("120"),
        "seconds to shift the window back from now, so late sign-ins are in Graph",
    ),
    opt(
        "streams",
        "count",
        Some("2"),
        "number of frames fetched in parallel",
    ),
    opt(
        "stream_frame",
        "seconds",
        Some("30"),
        "seconds of sign-ins per frame (one Graph query each)",
    ),
    opt(
        "page_size",
        "records",
        Some("1000"),
        "records per Graph page ($top), 1 to 1000 (the original defaulted to 50)",
    ),
    opt(
        "rate_limit",
        "n/seconds",
        Some("5/10"),
        "requests allowed per window, shared by all streams (Graph: 5 per 10 s per app and tenant); 0 disables",
    ),
    structured(
        "rate_limits",
        "bucket=n/seconds",
        None,
        "limits of the other buckets (defaults: Graph's identity_protection=1/1, security=150/60), comma-separated; 0 disables",
    ),
    opt(
        "max_retries",
        "count",
        Some("8"),
        "retries of one transient failure (429, 5xx, network, garbled page) before its frame fails",
    ),
    opt(
        "deadline",
        "seconds",
        None,
        "no request starts after this many seconds of run time (default 300; none for a --since backfill); unfinished frames fail",
    ),
    opt(
        "http_timeout",
        "seconds",
        Some("60"),
        "limit for one HTTP request, body included",
    ),
    opt(
        "queue_backend",
        "redis|log|file",
        Some("redis"),
        "where records go: Redis, the log, or an NDJSON file",
    ),
    opt(
        "queue_type",
        "list|channel",
        Some("list"),
        "Redis list (RPUSH) or pub/sub channel (PUBLISH)",
    ),
    opt(
        "queue_key",
        "key",
        Some("ms_graph_exporter"),
        "name of the Redis list or channel of signins; other sources use {queue_key}:{source}",
    ),
    structured(
        "queue_keys",
        "source=key",
        None,
        "Redis keys of sources other than by the {queue_key}:{source} rule, comma-separated (e.g. directory_audits=entra_audit)",
    ),
    opt(
        "redis_url",
        "url",
        Some("redis://localhost:6379?db=0"),
        "redis:// or rediss:// URL; a password goes in as redis://:password@host",
    ),
    opt(
        "greenlets_count",
        "count",
        Some("10"),
        "number of writer threads (the original's greenlets, same name)",
    ),
    switch(
        "redis_pool_block",
        "true",
        "wait up to redis_pool_timeout for a pooled connection (--no-redis_pool_block: fail at once)",
    ),
    switch(
        "redis_pool_gevent_queue",
        "true",
        "accepted for compatibility with the original; has no effect",
    ),
    opt(
        "redis_pool_max_connections",
        "count",
        Some("15"),
        "size of the Redis connection pool",
    ),
    opt(
        "redis_pool_timeout",
        "seconds",
        Some("1"),
        "seconds to wait for a pooled Redis connection",
    ),
    opt(
        "graph_url",
        "url",
        Some("https://graph.microsoft.com"),
        "Microsoft Graph host (national clouds, the simulator)",
    ),
    opt(
        "login_url",
        "url",
        Some("https://login.microsoftonline.com"),
        "identity platform host that issues tokens",
    ),
    opt(
        "file_path",
        "path",
        Some("-"),
        "NDJSON output of queue_backend file; - is stdout; {source} is replaced by the source (required with several sources)",
    ),
    opt(
        "log_level",
        "level",
        Some("info"),
        "error, warn, info, debug or trace (logs go to stderr)",
    ),
    opt(
        "select",
        "properties",
        None,
        "fetch only these sign-in properties (Graph $select, comma-separated; id and createdDateTime are always added; sign-in sources only)",
    ),
    opt(
        "state",
        "mode",
        Some("auto"),
        "auto: resume from the stored watermark, rescan, deduplicate, one run at a time; off: the original's stateless window",
    ),
    opt(
        "state_file",
        "path",
        None,
        "watermark file of the log and file backends (the redis backend keeps its state in Redis); {source} as in file_path",
    ),
    opt(
        "max_catchup",
        "seconds",
        Some("86400"),
        "most seconds of backlog one run works off, oldest first",
    ),
    opt(
        "rescan",
        "seconds",
        Some("600"),
        "each second is read once more this many seconds after it became due, for late sign-ins (0: once only)",
    ),
    cli_only(
        "since",
        "rfc3339",
        "backfill: export [since, until) instead of the lagged window",
    ),
    cli_only(
        "until",
        "rfc3339",
        "backfill end (exclusive); defaults to the end of the lagged window",
    ),
];

pub fn find(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|spec| spec.name == name)
}

pub fn env_name(name: &str) -> String {
    format!("GRAPH_{}", name.to_ascii_uppercase())
}

/// The `--help` text, generated from the table so it cannot drift from it.
pub fn help_text() -> String {
    let mut text = String::from(
        "Usage: msgx-once [--option value]...\n\n\
         Export one lagged window (or a --since/--until backfill) of Entra ID sign-ins\n\
         from Microsoft Graph into Redis, then exit.\n\n\
         Every option can also be set as GRAPH_<NAME> in the environment or as a\n\
         directive in the --app_config YAML file. Precedence: config file, then\n\
         command line, then environment, then default. Flags may be spelled with\n\
         underscores or dashes, and as --name value or --name=value.\n\nOptions:\n",
    );
    for spec in OPTIONS {
        let flag = match spec.value_name {
            Some(value) => format!("--{} <{}>", spec.name, value),
            None => format!("--[no-]{}", spec.name),
        };
        text.push_str(&format!("  {flag}\n        {}\n", spec.help));
        let default = spec
            .default
            .map(|d| format!(", default {d}"))
            .unwrap_or_default();
        let scope = if spec.in_file {
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
