//! `msgx-once`: parse the configuration, run one export, exit with a code for cron.

use std::process::ExitCode;

use msgx::config::{self, Invocation};
use msgx::error::exit;
use msgx::metrics::RunFigures;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect();
    let Ok(args) = args else {
        eprintln!("msgx-once: error: an argument is not valid UTF-8");
        return ExitCode::from(exit::USAGE);
    };
    let config = match config::load(&args, &|name| std::env::var(name).ok()) {
        Ok(Invocation::Help(text))
        | Ok(Invocation::Version(text))
        | Ok(Invocation::PrintConfig(text)) => {
            print!("{}", text.trim_end().to_string() + "\n");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Run(config)) => config,
        Err(e) => {
            // Every problem at once, one line each; as JSON when the command line or
            // the environment asked for JSON logs.
            let json = config::asks_for_json(&args, &|name| std::env::var(name).ok());
            for line in e.lines() {
                match json {
                    true => eprintln!(
                        "{}",
                        msgx::logging::json_line(
                            log::Level::Error,
                            &format!("msgx-once: error: {line}")
                        )
                    ),
                    false => eprintln!("msgx-once: error: {line}"),
                }
            }
            return ExitCode::from(exit::USAGE);
        }
    };
    msgx::logging::init(config.log_level, config.log_format);
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    if config.check {
        return ExitCode::from(msgx::check::check(&config));
    }
    let started = Instant::now();
    let figures = match msgx::run(&config) {
        Ok(report) => {
            let code = report.exit_code();
            let level = match code {
                exit::OK => log::Level::Info,
                _ => log::Level::Error,
            };
            for line in report.summary() {
                msgx::logging::log_with_fields(level, &line.text, &line.fields);
            }
            let key_of = |name: &str| {
                msgx::sources::named(name).map_or_else(String::new, |s| config.queue_key_of(s))
            };
            let now = config
                .fixed_now
                .unwrap_or_else(time::OffsetDateTime::now_utc);
            RunFigures::of(&report, code, now, key_of)
        }
        Err(e) => {
            log::error!("{e}");
            RunFigures {
                exit_code: e.exit_code(),
                duration: started.elapsed(),
                sources: Vec::new(),
            }
        }
    };
    msgx::metrics::publish(&config, &figures);
    ExitCode::from(figures.exit_code)
}
