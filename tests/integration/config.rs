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
fn help_lists_every_option_with_its_env_name_and_default() {
    let run = msgx(&strings(&["--help"]), &[]);
    assert_eq!(run.code, 0);
    for (option, default) in [
        ("timelag", Some("120")),
        ("streams", Some("2")),
        ("stream_frame", Some("30")),
        ("page_size", Some("1000")),
        ("rate_limit", Some("5/10")),
        ("max_retries", Some("8")),
        ("deadline", None),
        ("http_timeout", Some("60")),
        ("redis_url", Some("redis://localhost:6379?db=0")),
        ("greenlets_count", Some("10")),
        ("redis_pool_block", Some("true")),
        ("redis_pool_gevent_queue", Some("true")),
        ("redis_pool_max_connections", Some("15")),
        ("redis_pool_timeout", Some("1")),
        ("graph_url", Some("https://graph.microsoft.com")),
        ("login_url", Some("https://login.microsoftonline.com")),
        ("file_path", Some("-")),
        ("log_level", Some("info")),
        ("queue_backend", Some("redis")),
        ("queue_type", Some("list")),
        ("state", Some("auto")),
        ("max_catchup", Some("86400")),
        ("rescan", Some("600")),
        ("state_file", None),
        ("select", None),
        ("queue_key", Some("ms_graph_exporter")),
        ("app_config", None),
        ("tenant", None),
        ("client_id", None),
        ("client_secret", None),
        ("since", None),
        ("until", None),
    ] {
        assert!(
            run.stdout.contains(&format!("--{option} "))
                || run.stdout.contains(&format!("--[no-]{option}")),
            "{option}"
        );
        let env = format!("[env GRAPH_{}", option.to_uppercase());
        let line = run.stdout.lines().find(|l| {
            l.contains(&format!("{env},"))
                || l.contains(&format!("{env}]"))
                || l.contains(&format!("{env};"))
        });
        let line = line.unwrap_or_else(|| panic!("{env} missing from --help"));
        if let Some(default) = default {
            assert!(line.contains(&format!("default {default}")), "{line}");
        }
    }
    let version = msgx(&strings(&["--version"]), &[]);
    assert_eq!(version.code, 0);
    assert!(version.stdout.starts_with("msgx-once "));
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
    let creds = ["--tenant", "t", "--client_id", "c", "--client_secret", "s"];
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
            &["--queue_type=stream"],
            &[],
            None,
            &["option queue_type", "one of list, channel"],
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
            &["--stream-frames", "--help"],
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
        let mut argv = strings(&creds);
        argv.extend(strings(args));
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
    let run = msgx(&strings(&["--tenant", "t", "--client_id", "c"]), &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("option client_secret: missing"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("GRAPH_CLIENT_SECRET"), "{}", run.stderr);
}

#[test]
fn missing_config_file_is_named() {
    let run = msgx(&strings(&["--app_config", "/nonexistent/msgx.yaml"]), &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("/nonexistent/msgx.yaml"),
        "{}",
        run.stderr
    );
}
