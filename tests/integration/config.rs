//! Configuration through the binary: precedence, spellings, and exit 2 with a message
//! naming the option, its source and what is accepted.

use time::Duration as Span;

use crate::common::*;

#[test]
fn config_file_beats_cli_beats_env() {
    let sim = Sim::start(&["--rate", "3"]);
    let dir = TempDir::new();
    let (from_file, from_cli, from_env) = (
        dir.join("file.ndjson"),
        dir.join("cli.ndjson"),
        dir.join("env.ndjson"),
    );
    let config = dir.join("app_config.yaml");
    std::fs::write(
        &config,
        format!(
            "---\n# as the original's shipped file: empty credentials fall through\ntenant: \"\"\nclient_id:\nqueue_backend: file\nfile_path: {}\n",
            from_file.display()
        ),
    )
    .unwrap();
    let now = minutes_ago(4);
    let mut args = sim.args();
    args.extend(strings(&[
        "--app_config",
        config.to_str().unwrap(),
        "--queue_backend",
        "redis",
    ]));
    args.extend(strings(&[
        "--file_path",
        from_cli.to_str().unwrap(),
        "--stream_frame",
        "20",
    ]));
    let run = msgx(
        &args,
        &[
            ("MSGX_NOW", &rfc3339(now)),
            ("GRAPH_FILE_PATH", from_env.to_str().unwrap()),
            ("GRAPH_STREAM_FRAME", "5"),
            ("GRAPH_TIMELAG", "300"),
            ("GRAPH_STREAMS", "1"),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    // file_path from the file, stream_frame from the CLI, timelag and streams from ENV.
    assert!(from_file.exists() && !from_cli.exists() && !from_env.exists());
    let end = now - Span::seconds(301);
    let start = end - Span::seconds(19);
    assert_eq!(
        run.summary_window(),
        format!("[{} - {}]", rfc3339(start), rfc3339(end))
    );
}

#[test]
fn every_original_cli_spelling_works() {
    let sim = Sim::start(&["--rate", "1"]);
    let now = minutes_ago(4);
    for spelling in [
        &[
            "--stream_frame",
            "20",
            "--timelag",
            "130",
            "--no-redis_pool_block",
        ][..],
        &[
            "--stream-frame",
            "20",
            "--timelag=130",
            "--no-redis-pool-block",
        ],
        &[
            "--stream_frame=20",
            "--timelag",
            "130",
            "--redis_pool_block=false",
        ],
    ] {
        let mut args = sim.args();
        args.extend(strings(&["--queue_backend", "file"]));
        args.extend(strings(spelling));
        let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
        assert_eq!(run.code, 0, "{spelling:?}: {}", run.stderr);
        let end = now - Span::seconds(131);
        let start = end - Span::seconds(39);
        assert_eq!(
            run.summary_window(),
            format!("[{} - {}]", rfc3339(start), rfc3339(end)),
            "{spelling:?}"
        );
    }
}

#[test]
fn help_is_generated_from_the_option_table() {
    // Every option's line is checked against the table by config::spec's unit tests;
    // here, that the binary prints it and exits 0.
    let run = msgx(&strings(&["--help"]), &[]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("  --timelag <seconds>\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("[env GRAPH_TIMELAG, default 120]"));
    assert!(run.stdout.contains("  --[no-]redis_pool_block\n"));
    let version = msgx(&strings(&["--version"]), &[]);
    assert_eq!(version.code, 0);
    // msgx-once 0.1.0 (commit 0123456789ab, built 2026-11-30, x86_64-unknown-linux-gnu)
    let line = version.stdout.trim();
    let inner = line
        .strip_prefix(concat!(
            "msgx-once ",
            env!("CARGO_PKG_VERSION"),
            " (commit "
        ))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line}"));
    let parts: Vec<&str> = inner.split(", ").collect();
    assert_eq!(parts.len(), 3, "{line}");
    assert!(parts[0].len() == 12 || parts[0] == "unknown", "{line}");
    assert!(
        parts[1].starts_with("built 20") && parts[1].len() == 16,
        "{line}"
    );
    assert!(parts[2].contains("-linux-"), "{line}");
}

/// (args, env, config file text, words the message must contain)
type Case = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
    &'static [&'static str],
);

#[test]
fn bad_configuration_exits_2_naming_option_source_and_accepted_values() {
    let cases: &[Case] = &[
        (
            &["--streams", "0"],
            &[],
            None,
            &[
                "option streams",
                "\"0\"",
                "command line --streams",
                "from 1 to 64",
            ],
        ),
        (
            &[],
            &[("GRAPH_PAGE_SIZE", "1001")],
            None,
            &[
                "option page_size",
                "environment variable GRAPH_PAGE_SIZE",
                "from 1 to 1000",
            ],
        ),
        (
            &["--queue_backend", "kafka"],
            &[],
            None,
            &[
                "option queue_backend",
                "\"kafka\"",
                "one of redis, log, file",
            ],
        ),
        (
            &["--state", "sometimes"],
            &[],
            None,
            &["option state", "\"sometimes\"", "one of auto, off"],
        ),
        (
            &[],
            &[("GRAPH_SELECT", "userPrincipalName;ipAddress")],
            None,
            &[
                "option select",
                "environment variable GRAPH_SELECT",
                "comma-separated list of sign-in property names",
            ],
        ),
        (
            &["--rescan", "-1"],
            &[],
            None,
            &["option rescan", "command line --rescan"],
        ),
        (
            &["--queue_type=queue"],
            &[],
            None,
            &["option queue_type", "one of list, channel, stream"],
        ),
        (
            &["--redis_url", "localhost:6379"],
            &[],
            None,
            &["option redis_url", "redis://"],
        ),
        (
            &["--graph_url", "graph.microsoft.com"],
            &[],
            None,
            &["option graph_url", "https://"],
        ),
        (
            &["--since", "yesterday"],
            &[],
            None,
            &["option since", "RFC 3339"],
        ),
        (
            &[
                "--since",
                "2026-01-02T00:00:00Z",
                "--until",
                "2026-01-01T00:00:00Z",
            ],
            &[],
            None,
            &["option until", "not after since"],
        ),
        (
            &["--until", "2026-01-01T00:00:00Z"],
            &[],
            None,
            &["option until", "without since"],
        ),
        (
            &["--log_level", "loud"],
            &[],
            None,
            &["option log_level", "error, warn, info, debug, trace"],
        ),
        (
            &["--stream_frames", "3"],
            &[],
            None,
            &[
                "unknown option --stream_frames (from the command line): did you mean \
                 --stream_frame?",
                "--help",
            ],
        ),
        (
            &[],
            &[],
            Some("stream_frames: 3\n"),
            &[
                "unknown option \"stream_frames\"",
                "config file",
                "stream_frame",
            ],
        ),
        (
            &[],
            &[],
            Some("streams: [1, 2]\n"),
            &["option streams", "config file", "list or mapping"],
        ),
        (
            &[],
            &[],
            Some("streams: two\n"),
            &["option streams", "\"two\"", "config file"],
        ),
        (
            &[],
            &[],
            Some("redis_pool_block: maybe\n"),
            &["option redis_pool_block", "true or false"],
        ),
        (
            &[],
            &[],
            Some("since: 2026-01-01T00:00:00Z\n"),
            &["option since", "not allowed in a config file"],
        ),
        (
            &[],
            &[],
            Some("- just\n- a list\n"),
            &["option app_config", "not a mapping"],
        ),
        (
            &[],
            &[],
            Some("a: [unclosed\n"),
            &["option app_config", "not valid YAML"],
        ),
    ];
    for (args, env, file, words) in cases {
        let dir = TempDir::new();
        let mut argv = offline(args);
        if let Some(text) = file {
            let path = dir.join("bad.yaml");
            std::fs::write(&path, text).unwrap();
            argv.extend(strings(&["--app_config", path.to_str().unwrap()]));
        }
        let run = msgx(&argv, env);
        assert_eq!(run.code, 2, "{args:?} {file:?}: {}", run.stderr);
        for word in *words {
            assert!(
                run.stderr.contains(word),
                "{args:?} {env:?} {file:?}: {word:?} not in {}",
                run.stderr
            );
        }
    }
}

#[test]
fn missing_credentials_exit_2_naming_every_way_to_set_them() {
    let run = msgx(
        &strings(&["--tenant", "t.example", "--client_id", "c"]),
        &[],
    );
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr.trim(),
        "msgx-once: error: option auth: no credentials given; accepted: client_secret (or \
         client_secret_file), client_certificate, federated_token_file, or auth managed_identity"
    );
}

#[test]
fn missing_config_file_is_named() {
    let run = msgx(&strings(&["--app_config", "/nonexistent/msgx.yaml"]), &[]);
    assert_eq!(run.code, 2);
    run.assert_stderr_has("/nonexistent/msgx.yaml");
}

#[test]
fn values_that_look_like_flags_or_help_reach_their_option() {
    let sim = Sim::start_with_secret("--Ab_c~1", &["--rate", "3"]);
    let redis = RedisServer::start();
    let mut args = sim.args_without_secret();
    args.extend(strings(&[
        "--client_secret",
        "--Ab_c~1",
        "--queue_key",
        "help",
    ]));
    args.extend(strings(&["--redis_url", &redis.url(), "--state", "off"]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(minutes_ago(5)))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        redis.len("help") > 0,
        "the records went to the key \"help\""
    );
    assert!(!run.stdout.contains("Usage:"));
}

#[test]
fn the_config_file_still_wins_but_says_what_it_overrode() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let dir = TempDir::new();
    let config = dir.join("app_config.yaml");
    std::fs::write(&config, "queue_backend: redis\npage_size: 50\n").unwrap();
    let mut args = redis_args(&sim, &redis, "k", &["--state", "off"]);
    args.extend(strings(&["--app_config", config.to_str().unwrap()]));
    args.extend(strings(&["--queue_backend", "file", "--page_size", "1000"]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(minutes_ago(5)))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warning = format!(
        "[WARN] config file {} overrides command line --queue_backend, command line \
         --page_size (the config file wins, as in the original)",
        config.display()
    );
    run.assert_stderr_has(&warning);
    assert!(redis.len("k") > 0, "redis, as the file says");
}

#[test]
fn a_config_file_others_can_read_holding_a_secret_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let sim = Sim::start(&["--rate", "3"]);
    let dir = TempDir::new();
    let config = dir.join("app_config.yaml");
    std::fs::write(&config, format!("client_secret: {SIM_SECRET}\n")).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = sim.args_without_secret();
    args.extend(strings(&[
        "--app_config",
        config.to_str().unwrap(),
        "--queue_backend",
        "log",
    ]));
    args.extend(strings(&["--state", "off"]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(minutes_ago(5)))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_stderr_has(format!(
        "[WARN] config file {} holds client_secret and others can read it (mode 644)",
        config.display()
    ));
    assert!(!run.stderr.contains(SIM_SECRET));
}

#[test]
fn every_problem_is_reported_at_once_with_exit_2() {
    let run = msgx(
        &strings(&[
            "--streams",
            "0",
            "--page_size",
            "x",
            "--client_certificate",
            "/nope",
        ]),
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "msgx-once: error: option streams: invalid value \"0\" (from command line --streams); accepted: a whole number from 1 to 64",
            "msgx-once: error: option page_size: invalid value \"x\" (from command line --page_size); accepted: a whole number from 1 to 1000",
            "msgx-once: error: option tenant: missing (auth certificate); accepted: set it in the config file, as --tenant, or as GRAPH_TENANT (or AZURE_TENANT_ID)",
            "msgx-once: error: option client_id: missing (auth certificate); accepted: set it in the config file, as --client_id, or as GRAPH_CLIENT_ID (or AZURE_CLIENT_ID)",
        ]
    );
}

#[test]
fn print_config_shows_each_value_and_its_source_without_secrets() {
    let run = msgx(
        &strings(&[
            "--client_secret",
            "hunter2-Zq",
            "--tenant",
            "t.example",
            "--client_id",
            "c",
            "--print_config",
        ]),
        &[("GRAPH_REDIS_URL", "redis://:pw-Zq@127.0.0.1:1/0")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("client_secret = (hidden)  # command line --client_secret\n")
    );
    assert!(run.stdout.contains(
        "redis_url = \"redis://[redacted]@127.0.0.1:1/0\"  # environment variable GRAPH_REDIS_URL\n"
    ));
    assert!(!run.stdout.contains("hunter2") && !run.stdout.contains("pw-Zq"));
}

#[test]
fn since_and_until_take_dates_and_ages_and_warn_beyond_retention() {
    let sim = Sim::start(&["--rate", "3"]);
    let now = minutes_ago(1);
    let mut args = sim.args();
    args.extend(strings(&[
        "--queue_backend",
        "log",
        "--since",
        "-40d",
        "--until",
        "-39d",
    ]));
    args.extend(strings(&["--stream_frame", "86400", "--streams", "1"]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_stderr_has("is older than Graph's 30-day retention");
    let start = now.replace_nanosecond(0).unwrap() - Span::days(40);
    assert!(
        run.summary_window()
            .starts_with(&format!("[{}", rfc3339(start))),
        "{}",
        run.summary_window()
    );
}

#[test]
fn print_config_works_before_any_credential_and_says_what_is_missing() {
    let run = msgx(&strings(&["--print_config"]), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for line in [
        "timelag = \"120\"  # the default\n",
        "deadline = \"300\"  # a cron run's default (a --since backfill has none)\n",
        "graph_url = \"https://graph.microsoft.com\"  # the global cloud's\n",
        "# not ready to run yet:\n",
        "#   option auth: no credentials given; accepted: ",
    ] {
        assert!(run.stdout.contains(line), "{line:?} in:\n{}", run.stdout);
    }
    let ready = msgx(&offline(&["--print_config"]), &[]);
    assert_eq!(ready.code, 0, "{}", ready.stderr);
    assert!(
        ready
            .stdout
            .contains("auth = \"secret\"  # inferred from the credentials given\n")
    );
    assert!(
        ready.stdout.ends_with("# ready to run\n"),
        "{}",
        ready.stdout
    );
}

#[test]
fn a_missing_value_and_an_unknown_config_key_hide_no_other_problem() {
    let run = msgx(&strings(&["--tenant", "t.example", "--timelag"]), &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        "msgx-once: error: option timelag: no value after --timelag (from command line \
         --timelag); accepted: --timelag <seconds>"
    );
    let dir = TempDir::new();
    let config = dir.join("app_config.yaml");
    std::fs::write(&config, "stream_frames: 3\nstreams: 0\nsince: -1h\n").unwrap();
    let run = msgx(
        &strings(&["--app_config", config.to_str().unwrap(), "--page_size", "0"]),
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    for problem in [
        "unknown option \"stream_frames\" (did you mean stream_frame?)",
        "option since: not allowed in a config file",
        "option streams: invalid value \"0\"",
        "option page_size: invalid value \"0\"",
        "option auth: no credentials given",
    ] {
        assert!(run.stderr.contains(problem), "{problem}: {}", run.stderr);
    }
}

#[test]
fn a_redis_password_with_reserved_characters_says_to_percent_encode_it() {
    let dir = TempDir::new();
    let file = dir.join("redis_url");
    for url in [
        "redis://msgx:pa#ss@127.0.0.1:6379/0",
        "redis://:pa/ss@127.0.0.1:6379/0",
        "redis://msgx:pa?ss@127.0.0.1:6379/0",
    ] {
        std::fs::write(&file, format!("{url}\n")).unwrap();
        let from_file = ["--redis_url_file", file.to_str().unwrap()];
        for extra in [&["--redis_url", url][..], &from_file[..]] {
            let run = msgx(&offline(extra), &[]);
            assert_eq!(run.code, 2, "{url}: {}", run.stderr);
            assert!(
                run.stderr
                    .contains("percent-encode them (# as %23, / as %2F, ? as %3F)")
                    && run.stderr.contains("redis://user:p%23ss@host:6379/0"),
                "{url}: {}",
                run.stderr
            );
            assert!(!run.stderr.contains("pa#ss") && !run.stderr.contains("pa/ss"));
            assert!(!run.stderr.contains("pa?ss"), "{}", run.stderr);
        }
    }
}

#[test]
fn a_misspelled_source_or_a_list_for_one_value_says_what_was_meant() {
    let run = msgx(&offline(&["--sources", "signins,directory_audit"]), &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    run.assert_stderr_has("(directory_audit: did you mean directory_audits?)");
    let dir = TempDir::new();
    let file = dir.join("app_config.yaml");
    std::fs::write(&file, "streams: [2]\n").unwrap();
    let run = msgx(&offline(&["--app_config", file.to_str().unwrap()]), &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("option streams: expected one value, found a list or mapping")
            && run
                .stderr
                .contains("accepted: one value, as in `streams: <value>`"),
        "{}",
        run.stderr
    );
}

#[test]
fn print_config_says_what_a_run_would_warn_and_marks_a_hidden_password() {
    let dir = TempDir::new();
    let config = dir.join("app_config.yaml");
    std::fs::write(
        &config,
        "tenant: t.example\nclient_id: c\nclient_secret: s\npage_size: 50\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url_file = dir.join("redis_url");
    std::fs::write(&url_file, "redis://msgx:pw@127.0.0.1:6390/0\n").unwrap();
    let args = strings(&[
        "--app_config",
        config.to_str().unwrap(),
        "--redis_url_file",
        url_file.to_str().unwrap(),
        "--page_size",
        "100",
        "--print_config",
    ]);
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "redis_url = \"redis://[redacted]@127.0.0.1:6390/0\"  # what redis_url_file holds"
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("pw@"), "{}", run.stdout);
    let ready = run.stdout.find("# ready to run").expect("ready");
    for warning in [
        "# WARN: config file ",
        " overrides command line --page_size",
        " holds client_secret and others can read it (mode 644)",
        "# WARN: option page_size 50 (from config file ",
    ] {
        let at = run
            .stdout
            .find(warning)
            .unwrap_or_else(|| panic!("{warning}: {}", run.stdout));
        assert!(at < ready, "{warning} after the verdict");
    }
}
