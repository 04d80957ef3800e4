//! Command-line parsing: the original's spellings rewritten for argh, then argh.
//!
//! argh only knows `--dashed-name value`; the original (argparse) also took
//! `--underscore_name`, `--name=value` and `--no-redis_pool_block`, so argv is rewritten
//! to argh's form first. Values stay strings here; `config` types and checks them so
//! that every source gets the same messages.

use argh::FromArgs;

use super::{ConfigError, Source};

/// What the command line asked for.
pub enum CliRequest {
    Help,
    Version,
    Run(Vec<(&'static str, String)>),
}

/// Boolean options: `--name`, `--no-name`, and `--name=true|false`.
const SWITCHES: &[&str] = &["redis_pool_block", "redis_pool_gevent_queue"];

/// The switch a flag name (without `--` or `no-`, dashes or underscores) stands for.
fn switch_named(name: &str) -> Option<&'static str> {
    let underscored = name.replace('-', "_");
    SWITCHES.iter().copied().find(|s| *s == underscored)
}

macro_rules! cli_args {
    ($($field:ident),* $(,)?) => {
        /// Export sign-ins from Microsoft Graph into Redis (see --help).
        #[derive(FromArgs)]
        struct CliArgs {
            $(
                #[argh(option, description = "see --help")]
                $field: Option<String>,
            )*
            #[argh(switch, description = "see --help")]
            redis_pool_block: bool,
            #[argh(switch, description = "see --help")]
            no_redis_pool_block: bool,
            #[argh(switch, description = "see --help")]
            redis_pool_gevent_queue: bool,
            #[argh(switch, description = "see --help")]
            no_redis_pool_gevent_queue: bool,
        }

        impl CliArgs {
            fn valued(self) -> Vec<(&'static str, Option<String>)> {
                vec![$((stringify!($field), self.$field)),*]
            }
        }
    };
}

cli_args!(
    app_config,
    tenant,
    client_id,
    client_secret,
    sources,
    timelag,
    streams,
    stream_frame,
    page_size,
    rate_limit,
    rate_limits,
    max_retries,
    deadline,
    http_timeout,
    queue_backend,
    queue_type,
    queue_key,
    queue_keys,
    redis_url,
    greenlets_count,
    redis_pool_max_connections,
    redis_pool_timeout,
    graph_url,
    login_url,
    file_path,
    log_level,
    select,
    state,
    state_file,
    max_catchup,
    rescan,
    since,
    until,
);

/// Parses `args` (without the program name) into (option, value) pairs.
pub fn parse(args: &[String]) -> Result<CliRequest, ConfigError> {
    if args
        .iter()
        .any(|a| a == "--help" || a == "-h" || a == "help")
    {
        return Ok(CliRequest::Help);
    }
    if args.iter().any(|a| a == "--version" || a == "-V") {
        return Ok(CliRequest::Version);
    }
    let rewritten = last_wins(rewrite(args)?);
    let refs: Vec<&str> = rewritten.iter().map(String::as_str).collect();
    let parsed = CliArgs::from_args(&["msgx-once"], &refs).map_err(|exit| {
        ConfigError::usage(format!(
            "{} (run msgx-once --help for the options)",
            exit.output.trim()
        ))
    })?;
    let switches = [
        (
            "redis_pool_block",
            parsed.redis_pool_block,
            parsed.no_redis_pool_block,
        ),
        (
            "redis_pool_gevent_queue",
            parsed.redis_pool_gevent_queue,
            parsed.no_redis_pool_gevent_queue,
        ),
    ];
    let mut values: Vec<(&'static str, String)> = parsed
        .valued()
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect();
    for (name, on, off) in switches {
        match (on, off) {
            (true, true) => {
                return Err(ConfigError::new(
                    name,
                    Source::Cli,
                    format!("both --{name} and --no-{name} given"),
                    "one of them",
                ));
            }
            (true, false) => values.push((name, "true".into())),
            (false, true) => values.push((name, "false".into())),
            (false, false) => {}
        }
    }
    Ok(CliRequest::Run(values))
}

/// Drops earlier repetitions of a valued flag, as argparse did (argh would refuse them).
fn last_wins(args: Vec<String>) -> Vec<String> {
    let is_switch = |flag: &str| {
        switch_named(flag.trim_start_matches("--").trim_start_matches("no-")).is_some()
    };
    let mut pairs: Vec<(String, Option<String>)> = Vec::new();
    let mut tokens = args.into_iter();
    while let Some(token) = tokens.next() {
        if token == "--" {
            pairs.push((token, None));
            pairs.extend(tokens.by_ref().map(|t| (t, None)));
            break;
        }
        let value = if token.starts_with("--") && !is_switch(&token) {
            tokens.next()
        } else {
            None
        };
        if value.is_some() {
            pairs.retain(|(flag, v)| !(v.is_some() && *flag == token));
        }
        pairs.push((token, value));
    }
    pairs
        .into_iter()
        .flat_map(|(flag, value)| std::iter::once(flag).chain(value))
        .collect()
}

/// Rewrites the original's spellings into argh's: underscores become dashes in flag
/// names, `--name=value` becomes two tokens, `--switch=false` becomes `--no-switch`.
fn rewrite(args: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::with_capacity(args.len() + 4);
    let mut rest = args.iter();
    for arg in rest.by_ref() {
        if arg == "--" {
            out.push(arg.clone());
            break;
        }
        let Some(flag) = arg.strip_prefix("--") else {
            out.push(arg.clone());
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (flag, None),
        };
        let dashed = name.replace('_', "-");
        match value {
            None => out.push(format!("--{dashed}")),
            Some(value) => {
                if let Some(switch) = switch_named(name) {
                    let on = super::parse::boolean(value).map_err(|accepted| {
                        ConfigError::invalid(switch, Source::Cli, value, accepted)
                    })?;
                    out.push(if on {
                        format!("--{dashed}")
                    } else {
                        format!("--no-{dashed}")
                    });
                } else {
                    out.push(format!("--{dashed}"));
                    out.push(value.to_string());
                }
            }
        }
    }
    out.extend(rest.cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn values(list: &[&str]) -> Vec<(&'static str, String)> {
        match parse(&args(list)) {
            Ok(CliRequest::Run(values)) => values,
            Ok(_) => panic!("expected option values"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn every_original_spelling_is_accepted() {
        for spelling in [
            &["--stream_frame", "30"][..],
            &["--stream-frame", "30"],
            &["--stream_frame=30"],
            &["--stream-frame=30"],
        ] {
            assert_eq!(values(spelling), vec![("stream_frame", "30".to_string())]);
        }
        assert_eq!(values(&["--timelag=120"]), vec![("timelag", "120".into())]);
    }

    #[test]
    fn switches_take_no_prefix_and_explicit_values() {
        assert_eq!(
            values(&["--no-redis_pool_block"]),
            vec![("redis_pool_block", "false".into())]
        );
        assert_eq!(
            values(&["--redis_pool_block"]),
            vec![("redis_pool_block", "true".into())]
        );
        assert_eq!(
            values(&["--redis-pool-gevent-queue=false"]),
            vec![("redis_pool_gevent_queue", "false".into())]
        );
        assert!(parse(&args(&["--redis_pool_block=maybe"])).is_err());
        assert!(parse(&args(&["--redis_pool_block", "--no-redis_pool_block"])).is_err());
    }

    #[test]
    fn a_repeated_option_takes_the_last_value_like_argparse() {
        assert_eq!(
            values(&["--streams", "2", "--stream_frame=5", "--streams=4"]),
            vec![("streams", "4".into()), ("stream_frame", "5".into())]
        );
    }

    #[test]
    fn values_with_equals_signs_survive() {
        assert_eq!(
            values(&["--redis_url=redis://h:1?db=2"]),
            vec![("redis_url", "redis://h:1?db=2".into())]
        );
    }

    #[test]
    fn unknown_flags_are_usage_errors() {
        let err = match parse(&args(&["--stream_frames", "3"])) {
            Err(e) => e,
            Ok(_) => panic!("accepted an unknown flag"),
        };
        assert!(err.to_string().contains("--stream-frames"), "{err}");
    }

    #[test]
    fn help_and_version_win() {
        assert!(matches!(
            parse(&args(&["--streams", "0", "--help"])),
            Ok(CliRequest::Help)
        ));
        assert!(matches!(
            parse(&args(&["--version"])),
            Ok(CliRequest::Version)
        ));
    }
}
