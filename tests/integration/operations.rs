//! Operating msgx-once: metrics after every kind of run (textfile and Pushgateway),
//! JSON logs, and no progress-bar escape codes in logs that are not a terminal.

use std::collections::BTreeMap;
use std::time::Duration;

use time::Duration as Span;

use crate::common::*;

/// Parses Prometheus's text exposition format strictly: HELP and TYPE once per family
/// and before its samples, metric and label names as the format allows, label values
/// quoted with escapes, values numbers; a histogram's samples are its `_bucket`s (with
/// `le`, cumulative), `_sum` and `_count`. Returns each sample's `name{labels}` → value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let name_ok = |n: &str| {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    assert!(text.ends_with('\n'), "the last line ends with a line feed");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name, value) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_else(|| panic!("{line}"));
            assert!(name_ok(name), "{line}");
            match keyword {
                Some("HELP") => assert!(value.is_some_and(|v| !v.is_empty()), "{line}"),
                Some("TYPE") => {
                    let kind = value.unwrap_or_default();
                    assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                    assert!(
                        typed.insert(name.into(), kind.into()).is_none(),
                        "TYPE twice: {line}"
                    );
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = key.split('{').next().unwrap_or_default();
        assert!(name_ok(name), "{line}");
        let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let family = name.strip_suffix(suffix)?;
            (typed.get(family)? == "histogram").then_some((family, *suffix))
        });
        match histogram {
            Some((_, "_bucket")) => assert!(key.contains("le=\""), "a bucket without le: {line}"),
            Some(_) => {}
            None => assert!(
                typed.get(name).is_some_and(|kind| kind != "histogram"),
                "sample before its TYPE: {line}"
            ),
        }
        if let Some(labels) = key.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{line}"));
            let mut rest = inner;
            while !rest.is_empty() {
                let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(name_ok(label), "{line}");
                let mut escaped = false;
                let end = after
                    .char_indices()
                    .find(|(_, c)| {
                        let closes = *c == '"' && !escaped;
                        escaped = *c == '\\' && !escaped;
                        closes
                    })
                    .map(|(i, _)| i)
                    .unwrap_or_else(|| panic!("unterminated label in {line}"));
                rest = after[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&after[end + 1..]);
            }
        }
        assert!(
            samples.insert(key.to_string(), value).is_none(),
            "sample twice: {line}"
        );
    }
    // Buckets are cumulative: +Inf counts as many as _count.
    for (key, count) in samples.iter().filter(|(k, _)| k.contains("_bucket{")) {
        if let Some(series) = key.split_once(",le=\"+Inf\"").map(|(s, _)| s) {
            let total = format!("{}}}", series.replace("_bucket{", "_count{"));
            assert_eq!(samples.get(&total), Some(count), "{key} and {total}");
        }
    }
    samples
}

fn metrics(path: &std::path::Path) -> BTreeMap<String, f64> {
    parse_exposition(&std::fs::read_to_string(path).expect("metrics file"))
}

#[test]
fn metrics_after_success_failure_and_interruption() {
    let sim = Sim::start(&["--rate", "3"]);
    let denying = Sim::start(&["--rate", "3", "--deny", "Authorization_RequestDenied"]);
    let redis = RedisServer::start();
    let dir = TempDir::new();
    let file = dir.join("msgx.prom");
    let t0 = minutes_ago(30);
    let flags = ["--metrics_file", file.to_str().unwrap()];

    sim.set_clock(t0);
    let args = redis_args(&sim, &redis, "k", &flags);
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(t0))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let first = metrics(&file);
    let labels = "{source=\"signins\",queue_key=\"k\"}";
    assert_eq!(first["msgx_exit_code"], 0.0);
    assert_eq!(
        first[&format!("msgx_records_read{labels}")],
        run.summary_field("records").parse::<f64>().unwrap()
    );
    assert_eq!(first[&format!("msgx_watermark_lag_seconds{labels}")], 120.0);
    assert_eq!(
        first["msgx_graph_requests_total{source=\"signins\",queue_key=\"k\",code=\"200\"}"],
        2.0
    );
    let success = first["msgx_last_success_timestamp_seconds"];
    assert!(success > 1.7e9, "{success}");

    // Refused: exit 3, the last success kept, the requests counted on.
    let t1 = t0 + Span::minutes(1);
    denying.set_clock(t1);
    // One stream: exactly one request before the refusal halts the source.
    let mut args = redis_args(&denying, &redis, "k", &flags);
    args.extend(strings(&["--streams", "1"]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(t1))]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let second = metrics(&file);
    assert_eq!(second["msgx_exit_code"], 3.0);
    assert_eq!(second["msgx_last_success_timestamp_seconds"], success);
    assert_eq!(
        second[&format!("msgx_frames_failed{labels}")],
        run.summary_field("failed").parse::<f64>().unwrap()
    );
    assert_eq!(
        second["msgx_graph_requests_total{source=\"signins\",queue_key=\"k\",code=\"403\"}"],
        1.0
    );

    // Ended before exporting (another run holds the lock): exit 4, run metrics only.
    let mut lock = redis.connection();
    redis::cmd("SET")
        .arg("{k}:msgx:lock")
        .arg("someone")
        .exec(&mut lock)
        .unwrap();
    let run = msgx(
        &redis_args(&sim, &redis, "k", &flags),
        &[("MSGX_NOW", &rfc3339(t1))],
    );
    assert_eq!(run.code, 4, "{}", run.stderr);
    let third = metrics(&file);
    assert_eq!(third["msgx_exit_code"], 4.0);
    assert_eq!(third["msgx_last_success_timestamp_seconds"], success);
    // It read nothing; every series of the file is still there.
    assert_eq!(third[&format!("msgx_records_read{labels}")], 0.0);
    assert!(second.keys().all(|k| third.contains_key(k)), "{third:?}");
    redis::cmd("DEL")
        .arg("{k}:msgx:lock")
        .exec(&mut lock)
        .unwrap();

    // Interrupted mid-run: 143.
    let slow = Sim::start(&["--rate", "3", "--latency-ms", "300"]);
    let mut args = redis_args(&slow, &redis, "slow", &flags);
    args.extend(strings(&["--page_size", "5"]));
    let running = Running::start(&args);
    assert!(
        wait_for(Duration::from_secs(20), || slow.stats()["graph_200"]
            .as_u64()
            .unwrap_or(0)
            >= 2),
        "pages flow"
    );
    running.signal("TERM");
    let run = running.finish(Duration::from_secs(30));
    assert_eq!(run.code, 143, "{}", run.stderr);
    let fourth = metrics(&file);
    assert_eq!(fourth["msgx_exit_code"], 143.0);
    assert_eq!(fourth["msgx_last_success_timestamp_seconds"], success);
}

#[test]
fn through_an_outage_the_backlog_grows_and_no_counter_or_series_goes_away() {
    // Same seed, same records: one simulator answers every Graph request 503.
    let good = Sim::start(&["--rate", "3"]);
    let down = Sim::start(&["--rate", "3", "--every-503", "1"]);
    let refusing = Sim::start(&["--rate", "3", "--deny", "Authorization_RequestDenied"]);
    let redis = RedisServer::start();
    let dir = TempDir::new();
    let file = dir.join("msgx.prom");
    let flags = [
        "--metrics_file",
        file.to_str().unwrap(),
        "--max_retries",
        "0",
    ];
    let labels = "{source=\"signins\",queue_key=\"k\"}";
    let backlog = format!("msgx_oldest_unread_age_seconds{labels}");
    let ok_requests = "msgx_graph_requests_total{source=\"signins\",queue_key=\"k\",code=\"200\"}";
    let t0 = minutes_ago(60);
    let at = |minute: i64| t0 + Span::minutes(minute);
    assert_eq!(tick(&good, &redis, "k", at(0), &flags).code, 0);
    let mut previous = metrics(&file);
    assert_eq!(
        previous[&backlog], 120.0,
        "the watermark is the oldest unread second"
    );
    let mut ages = Vec::new();
    for minute in 1..=4 {
        let run = tick(&down, &redis, "k", at(minute), &flags);
        assert_eq!(run.code, 1, "{}", run.stderr);
        let now = metrics(&file);
        for (key, value) in &previous {
            let kept = now.get(key).unwrap_or_else(|| panic!("{key} disappeared"));
            if key.contains("_total") {
                assert!(kept >= value, "{key} went back from {value} to {kept}");
            }
        }
        assert_eq!(now[ok_requests], 2.0, "the 200s stay counted");
        ages.push(now[&backlog]);
        previous = now;
    }
    // The watermark moves on past failed frames (their seconds are owed): the backlog
    // is what grows, a minute a run.
    assert_eq!(ages, [180.0, 240.0, 300.0, 360.0]);
    // A refused source (exit 3) still writes its series.
    let refused = tick(&refusing, &redis, "k", at(5), &flags);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    let now = metrics(&file);
    assert_eq!(now[&backlog], 420.0);
    assert!(now.contains_key(&format!("msgx_watermark_lag_seconds{labels}")));
    assert!(previous.keys().all(|k| now.contains_key(k)));
    // Graph is back: the owed seconds are read, the backlog is the lag again.
    let run = tick(&good, &redis, "k", at(6), &flags);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let recovered = metrics(&file);
    assert_eq!(recovered[&backlog], 120.0);
    assert_eq!(
        recovered[&format!("msgx_watermark_lag_seconds{labels}")],
        120.0
    );
    assert_same_records(
        redis.list("k"),
        good.records(origin(at(0)), lagged_end(at(6)) - Span::seconds(1)),
    );
}

#[test]
fn metrics_are_pushed_per_source_and_queue_key() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let (url, received) = http_receiver();
    let now = minutes_ago(10);
    sim.set_clock(now);
    let args = redis_args(
        &sim,
        &redis,
        "k",
        &[
            "--metrics_push_url",
            &url,
            "--sources",
            "signins,directory_audits",
        ],
    );
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut pushes: Vec<(String, String)> = received.try_iter().map(|r| (r.line, r.body)).collect();
    pushes.sort();
    let lines: Vec<&str> = pushes.iter().map(|(line, _)| line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "POST /metrics/job/msgx_once/source/directory_audits/queue_key/k%3Adirectory_audits HTTP/1.1",
            "POST /metrics/job/msgx_once/source/signins/queue_key/k HTTP/1.1",
        ]
    );
    let audits = parse_exposition(&pushes[0].1);
    assert_eq!(audits["msgx_exit_code"], 0.0);
    assert!(audits.contains_key(
        "msgx_records_read{source=\"directory_audits\",queue_key=\"k:directory_audits\"}"
    ));
    assert!(!audits.keys().any(|k| k.contains("source=\"signins\"")));
}

#[test]
fn json_logs_parse_line_by_line_with_the_summary_as_fields() {
    let sim = Sim::start(&["--rate", "3", "--hostile"]);
    let args = sim.log_args(&["--log_format", "json"]);
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(minutes_ago(5)))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let objects: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(objects.len() > 10);
    for object in &objects {
        assert!(
            object["ts"].is_string() && object["level"].is_string() && object["msg"].is_string()
        );
        let msg = object["msg"].as_str().unwrap();
        assert!(
            !msg.chars().any(char::is_control),
            "a control character in {msg:?}"
        );
    }
    assert!(
        objects
            .iter()
            .any(|o| o["msg"].as_str().unwrap().contains("\\n")),
        "the hostile user names' line breaks are escaped, not dropped"
    );
    let summary = objects.last().unwrap();
    assert!(
        summary["msg"]
            .as_str()
            .unwrap()
            .starts_with("summary: window [")
    );
    // Figures are JSON numbers; the window stays text.
    assert_eq!(summary["frames_ok"], 2);
    assert_eq!(summary["frames_failed"], 0);
    assert!(summary["records"].as_u64().unwrap() > 0);
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
    assert!(summary["window"].as_str().unwrap().starts_with('['));
    // Configuration errors are JSON lines too when JSON was asked for.
    for (args, env) in [
        (strings(&["--log_format", "json", "--streams", "0"]), vec![]),
        (
            strings(&["--streams=0"]),
            vec![("GRAPH_LOG_FORMAT", "json")],
        ),
    ] {
        let run = msgx(&args, &env);
        assert_eq!(run.code, 2, "{}", run.stderr);
        let lines: Vec<serde_json::Value> = run
            .stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect();
        assert!(lines.iter().all(|o| o["level"] == "ERROR"), "{lines:?}");
        assert!(
            lines.iter().any(|o| o["msg"]
                .as_str()
                .unwrap()
                .starts_with("msgx-once: error: option streams: invalid value \"0\"")),
            "{lines:?}"
        );
    }
}

#[test]
fn a_log_that_is_not_a_terminal_gets_progress_lines_and_no_escape_codes() {
    let sim = Sim::start(&["--rate", "3", "--latency-ms", "300"]);
    let args = sim.log_args(&["--page_size", "5"]);
    let run = msgx(
        &args,
        &[
            ("MSGX_NOW", &rfc3339(minutes_ago(5))),
            ("MSGX_PROGRESS_SECONDS", "1"),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_stderr_has("[INFO] progress: frames ");
    assert!(!run.stderr.contains('\x1b'), "escape codes in a log file");
    assert!(!run.stderr.contains('\r'));
}

#[test]
fn check_passes_on_a_sound_deployment_and_writes_nothing() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let args = redis_args(
        &sim,
        &redis,
        "k",
        &["--check", "--sources", "signins,risk_detections"],
    );
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let marks: Vec<&str> = run
        .stdout
        .lines()
        .map(|l| l.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        marks,
        [
            "✔ configuration",
            &format!("✔ redis {}/0", redis.url().trim_end_matches("/0")),
            "✔ token (secret)",
            "✔ source signins",
            "✔ source risk_detections",
        ]
    );
    // No record, state or lock: only the shared request budget's claims (risk
    // detections are paced by Graph's 1/1 whatever rate_limit says), which expire.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.connection())
        .unwrap();
    for key in &keys {
        assert!(key.starts_with("msgx:budget:"), "{keys:?}");
        let left: i64 = redis::cmd("PTTL")
            .arg(key)
            .query(&mut redis.connection())
            .unwrap();
        assert!(left > 0, "{key} expires");
    }
    let queries = sim.queries("signins");
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0].0, "1", "$top=1");
}

/// The sources Microsoft added name their own permission and licence: a workload
/// identity's risk details come back hidden without Workload ID Premium, Intune's audit
/// trail needs an Intune licence and its own permission.
#[test]
fn check_names_the_licence_each_new_source_needs() {
    let (sim, redis) = sim_and_redis(&[
        "--rate",
        "20",
        "--no-workload-premium",
        "--deny",
        "intune_audit_events:licence",
        "--deny",
        "agent_risk_detections",
    ]);
    let now = minutes_ago(10);
    sim.set_clock(now);
    let args = redis_args(
        &sim,
        &redis,
        "k",
        &[
            "--check",
            "--sources",
            "service_principal_risk_detections,agent_risk_detections,intune_audit_events",
        ],
    );
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    for line in [
        "record(s) in the last minute's first page; its risk details come back hidden: the \
         tenant needs a Microsoft Entra Workload ID Premium licence\n",
        "\n    → grant the application permission IdentityRiskEvent.Read.All and admin consent \
         (the tenant needs an Entra ID P2 licence (ID Protection for agents is in preview))\n",
        "\n    → the tenant needs an active Intune licence to read these logs through Graph\n",
    ] {
        assert!(run.stdout.contains(line), "{line:?} in:\n{}", run.stdout);
    }
    assert!(
        run.stdout
            .contains("✔ source service_principal_risk_detections: HTTP 200, ")
    );
}

#[test]
fn check_names_each_failure_and_what_to_do() {
    let (sim, redis) = sim_and_redis(&[
        "--deny",
        "directory_audits",
        "--deny",
        "provisioning:licence",
    ]);
    let args = redis_args(
        &sim,
        &redis,
        "k",
        &[
            "--check",
            "--sources",
            "signins,directory_audits,provisioning",
        ],
    );
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("✔ source signins: HTTP 200"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(
        "\n    → grant the application permission AuditLog.Read.All and Directory.Read.All and admin \
         consent (the tenant needs an Entra ID P1/P2 licence)\n"
    ), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "\n    → the tenant needs an Entra ID P1/P2 licence to read these logs through Graph\n"
        ),
        "{}",
        run.stdout
    );

    // A wrong secret: the token fails, and no source is asked.
    let mut args = redis_args(&sim, &redis, "k", &["--check"]);
    args.extend(strings(&["--client_secret", "wrong"]));
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "✘ token (secret): authentication refused (HTTP 401, invalid_client): AADSTS7000215"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("    → the client secret is wrong or expired"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("source signins"));

    // A Redis user without the rights a run needs.
    let mut admin = redis.connection();
    redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "reader",
            "on",
            ">reader-pw",
            "~*",
            "+ping",
            "+get",
        ])
        .exec(&mut admin)
        .unwrap();
    let url = redis.url().replace("redis://", "redis://reader:reader-pw@");
    let mut args = sim.args();
    args.extend(strings(&[
        "--check",
        "--redis_url",
        &url,
        "--queue_key",
        "k",
    ]));
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("no permissions to run the 'set' command"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "    → grant the Redis user every right a run needs: ACL SETUSER msgx on \
             ><password> resetkeys ~k ~k:* ~{k* ~msgx:budget:* "
        ),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("reader-pw") && !run.stderr.contains("reader-pw"));
}
