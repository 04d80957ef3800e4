//! Command-line parsing: the original's spellings rewritten for argh, then argh.
//!
//! argh only knows `--dashed-name value`; the original (argparse) also took
//! `--underscore_name`, `--name=value` and `--no-redis_pool_block`, so argv is rewritten
//! to argh's form first. The rewrite knows which flags take a value, so a value is
//! never read as a flag (`--client_secret --Ab_c~1` keeps its secret, `--queue_key help`
//! its key). Values stay strings here; `config` types and checks them so that every
//! source gets the same messages.

use argh::FromArgs;

use super::spec::{self, CliArgs, OptionSpec};
use super::{ConfigError, Origin};

/// What the command line asked for.
pub enum CliRequest {
    Help,
    Version,
    Run(Vec<(&'static str, String)>),
}

/// The option a flag (without `--` or `no-`, dashes or underscores) names.
fn option_named(name: &str) -> Option<&'static OptionSpec> {
    spec::find(&name.replace('-', "_"))
}

/// Parses `args` (without the program name) into (option, value) pairs.
pub fn parse(args: &[String]) -> Result<CliRequest, ConfigError> {
    let rewritten = rewrite(args)?;
    // Only where a flag may stand: a value that reads "help" is a value.
    let flags = flag_positions(&rewritten);
    if flags
        .iter()
        .any(|a| matches!(a.as_str(), "--help" | "-h" | "help"))
    {
        return Ok(CliRequest::Help);
    }
    if flags
        .iter()
        .any(|a| matches!(a.as_str(), "--version" | "-V"))
    {
        return Ok(CliRequest::Version);
    }
    let rewritten = last_wins(rewritten);
    let refs: Vec<&str> = rewritten.iter().map(String::as_str).collect();
    let parsed = CliArgs::from_args(&["msgx-once"], &refs).map_err(|exit| {
        ConfigError::usage(format!(
            "{} (run msgx-once --help for the options)",
            exit.output.trim()
        ))
    })?;
    Ok(CliRequest::Run(
        parsed
            .into_values()
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v)))
            .collect(),
    ))
}

/// The tokens of rewritten argv that stand where a flag may: not the value after a
/// flag, nothing after `--`.
fn flag_positions(args: &[String]) -> Vec<&String> {
    let mut flags = Vec::new();
    let mut tokens = args.iter();
    while let Some(token) = tokens.next() {
        if token == "--" {
            break;
        }
        flags.push(token);
        if token.starts_with("--") && option_named(&token[2..]).is_some() {
            tokens.next();
        }
    }
    flags
}

/// Drops earlier repetitions of a flag, as argparse did (argh would refuse them).
fn last_wins(args: Vec<String>) -> Vec<String> {
    let mut pairs: Vec<(String, Option<String>)> = Vec::new();
    let mut tokens = args.into_iter();
    while let Some(token) = tokens.next() {
        if token == "--" {
            pairs.push((token, None));
            pairs.extend(tokens.by_ref().map(|t| (t, None)));
            break;
        }
        let value = match token.strip_prefix("--").and_then(option_named) {
            Some(_) => tokens.next(),
            None => None,
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
/// names, `--name=value` becomes two tokens, a switch becomes `--switch true|false`
/// (`--switch`, `--no-switch`, `--switch=false`). The token after a flag that takes a
/// value is copied as it is, whatever it looks like.
fn rewrite(args: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::with_capacity(args.len() + 4);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            out.push(arg.clone());
            break;
        }
        let Some(flag) = arg.strip_prefix("--") else {
            // `-since`: one dash where two belong, said with the option it names.
            let meant = arg
                .strip_prefix('-')
                .and_then(|name| spec::nearest(name.split('=').next().unwrap_or(name)))
                .map_or(String::new(), |name| format!(": did you mean --{name}?"));
            let shown = match arg.starts_with('-') {
                true => format!("unknown option {arg:?} (from the command line){meant}"),
                false => format!("unexpected argument {arg:?} (from the command line)"),
            };
            if matches!(arg.as_str(), "-h" | "-V" | "help") {
                out.push(arg.clone());
                continue;
            }
            return Err(ConfigError::usage(format!(
                "{shown}; accepted: --option value pairs (msgx-once --help lists them)"
            )));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (flag, None),
        };
        if matches!(flag, "help" | "version") {
            out.push(arg.clone());
            continue;
        }
        let negated = name
            .strip_prefix("no-")
            .or_else(|| name.strip_prefix("no_"))
            .and_then(option_named)
            .filter(|spec| spec.is_switch());
        let (spec, value) = match (option_named(name), negated, inline) {
            (_, Some(spec), None) => (spec, "false".to_string()),
            (Some(spec), _, Some(value)) if spec.is_switch() => {
                let on = super::parse::boolean(value).map_err(|accepted| {
                    ConfigError::invalid(
                        spec.name,
                        Origin::Cli,
                        spec::shown(spec.name, value),
                        accepted,
                    )
                })?;
                (spec, on.to_string())
            }
            (Some(spec), _, None) if spec.is_switch() => (spec, "true".to_string()),
            (Some(spec), _, Some(value)) => (spec, value.to_string()),
            (Some(spec), _, None) => match rest.next() {
                Some(value) => (spec, value.clone()),
                None => {
                    return Err(ConfigError::new(
                        spec.name,
                        Origin::Cli,
                        format!("no value after --{name}"),
                        &format!(
                            "--{} <{}>",
                            spec.name,
                            spec.kind.value_name.unwrap_or("value")
                        ),
                    ));
                }
            },
            (None, _, _) => return Err(unknown(name)),
        };
        out.push(format!("--{}", spec.name.replace('_', "-")));
        out.push(value);
    }
    out.extend(rest.cloned());
    Ok(out)
}

/// An unknown flag, as typed, with the option it most likely meant.
fn unknown(typed: &str) -> ConfigError {
    let hint = match spec::nearest(typed) {
        Some(name) => format!(": did you mean --{name}?"),
        None => String::new(),
    };
    ConfigError::usage(format!(
        "unknown option --{typed} (from the command line){hint}; accepted: the options \
         msgx-once --help lists"
    ))
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
    fn values_that_look_like_flags_or_help_stay_values() {
        assert_eq!(
            values(&["--client_secret", "--Ab_c~1"]),
            vec![("client_secret", "--Ab_c~1".to_string())]
        );
        assert_eq!(
            values(&["--queue_key", "help", "--client_secret", "-h"]),
            vec![
                ("client_secret", "-h".to_string()),
                ("queue_key", "help".to_string())
            ]
        );
        assert_eq!(
            values(&["--client_secret=--x=y"]),
            vec![("client_secret", "--x=y".to_string())]
        );
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
        // The last one wins, as for every other option.
        assert_eq!(
            values(&["--redis_pool_block", "--no-redis_pool_block"]),
            vec![("redis_pool_block", "false".into())]
        );
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
    fn unknown_flags_are_named_as_typed_with_what_was_meant() {
        let err = |list: &[&str]| match parse(&args(list)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {list:?}"),
        };
        assert_eq!(
            err(&["--stream_frames", "3"]),
            "unknown option --stream_frames (from the command line): did you mean \
             --stream_frame?; accepted: the options msgx-once --help lists"
        );
        assert!(err(&["--stream-frames=3"]).starts_with("unknown option --stream-frames "));
        assert!(!err(&["--zzzzzz"]).contains("did you mean"));
        assert!(err(&["-x"]).starts_with("unknown option \"-x\""));
        assert!(
            err(&["-since", "-1h"]).starts_with(
                "unknown option \"-since\" (from the command line): did you mean --since?"
            ),
            "{}",
            err(&["-since", "-1h"])
        );
        assert!(err(&["stray"]).starts_with("unexpected argument \"stray\""));
        assert_eq!(
            err(&["--timelag", "60", "--streams"]),
            "option streams: no value after --streams (from command line --streams); \
             accepted: --streams <count>"
        );
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
