//! `msgx-once`: parse the configuration, run one export, exit with a code for cron.

use std::process::ExitCode;

use msgx::{Invocation, exit};

fn main() -> ExitCode {
    msgx::tune_allocator();
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect();
    let Ok(args) = args else {
        eprintln!("msgx-once: error: an argument is not valid UTF-8");
        return ExitCode::from(exit::USAGE);
    };
    let config = match msgx::load(&args, &|name| std::env::var(name).ok()) {
        Ok(Invocation::Help(text))
        | Ok(Invocation::Version(text))
        | Ok(Invocation::PrintConfig(text)) => {
            print!("{}", text.trim_end().to_string() + "\n");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Run(config)) => config,
        Err(e) => {
            // Every problem at once, one line each (JSON lines when JSON logs were asked
            // for on the command line or in the environment).
            let json = msgx::asks_for_json(&args, &|name| std::env::var(name).ok());
            msgx::print_errors(&e.lines(), json);
            return ExitCode::from(exit::USAGE);
        }
    };
    msgx::init_logging(config.options.log_level, config.options.log_format);
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    for warning in msgx::stray_variables(names) {
        log::warn!("{warning}");
    }
    if config.options.check {
        return ExitCode::from(msgx::check(&config));
    }
    ExitCode::from(msgx::export(&config))
}
