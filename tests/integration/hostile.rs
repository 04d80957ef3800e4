//! What a hostile or unlucky host hands msgx-once (issue 28): a FIFO or a device where
//! a file belongs, junk in Redis's budget keys, a config file of a million keys, text
//! that would forge a log line, tenants that are paths, empty lists, metrics files
//! that are not msgx's. Each ends in a clear error or a WARN, never a hang, unbounded
//! memory, a forged line or a silent change.

use std::time::Duration;

use crate::common::*;

/// A FIFO (nobody writes to it) in `dir`.
fn fifo(dir: &TempDir) -> String {
    let path = dir.join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    path.to_string_lossy().into_owned()
}

/// msgx-once with `args` and `env`, killed after `limit` (exit 124: it hung).
fn msgx_within(args: &[String], env: &[(&str, &str)], limit: Duration) -> Output {
    let script = format!("exec timeout -s KILL {} \"$0\" \"$@\"", limit.as_secs());
    msgx_in_bash(&script, args, env)
}

#[test]
fn a_fifo_or_a_device_named_as_a_file_is_exit_2_naming_the_option() {
    let dir = TempDir::new();
    let fifo = fifo(&dir);
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "not yet").unwrap();
    let cert = cert.to_string_lossy().into_owned();
    let id = ["--tenant", "t.example", "--client_id", "c"];
    let secret = ["--client_secret", "s"];
    // (arguments, environment, the option named)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let with =
        |extra: &[&'static str]| -> Vec<&'static str> { id.iter().chain(extra).copied().collect() };
    let fifo: &'static str = Box::leak(fifo.into_boxed_str());
    let cert: &'static str = Box::leak(cert.into_boxed_str());
    let cases: Vec<Case> = vec![
        (
            with(&["--client_secret_file", fifo]),
            vec![],
            "client_secret_file",
        ),
        (
            with(&["--client_secret_file", "/dev/zero"]),
            vec![],
            "client_secret_file",
        ),
        (
            with(&["--print_config"]),
            vec![("GRAPH_CLIENT_SECRET_FILE", "/dev/zero")],
            "client_secret_file",
        ),
        (
            with(&["--client_secret_file", fifo, "--print_config"]),
            vec![],
            "client_secret_file",
        ),
        (
            with(&[&secret[..], &["--redis_url_file", fifo]].concat()),
            vec![],
            "redis_url_file",
        ),
        (with(&["--app_config", fifo]), vec![], "app_config"),
        (with(&["--app_config", "/dev/zero"]), vec![], "app_config"),
        (
            with(&["--federated_token_file", fifo]),
            vec![],
            "federated_token_file",
        ),
        (
            with(&["--federated_token_file", "/dev/urandom"]),
            vec![],
            "federated_token_file",
        ),
        (
            with(&["--client_certificate", "/dev/zero"]),
            vec![],
            "client_certificate",
        ),
        (
            with(&[
                "--client_certificate",
                cert,
                "--client_certificate_key",
                fifo,
            ]),
            vec![],
            "client_certificate_key",
        ),
        (
            with(&[&secret[..], &["--redis_ca_file", fifo]].concat()),
            vec![],
            "redis_ca_file",
        ),
    ];
    for (args, env, option) in cases {
        let args = strings(&args);
        let run = msgx_within(&args, &env, Duration::from_secs(20));
        // --print_config shows what is wrong under "not ready to run yet", exit 0.
        let printed = args.contains(&"--print_config".to_string());
        assert_eq!(
            run.code,
            if printed { 0 } else { 2 },
            "{args:?} {env:?}: {}",
            run.stderr
        );
        let said = if printed { &run.stdout } else { &run.stderr };
        assert!(
            said.contains(&format!("option {option}: "))
                && (said.contains("not a regular file") || said.contains("is larger than")),
            "{args:?} {env:?}: {}",
            run.stderr
        );
    }
}

/// Each sample line of a metrics file as (name, sorted labels): what identifies a
/// series, whatever the label order.
fn series(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let key = l.rsplit_once(' ').map_or(l, |(k, _)| k);
            let (name, labels) = key.split_once('{').unwrap_or((key, ""));
            let mut labels: Vec<String> = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            labels.sort();
            (name.to_string(), labels)
        })
        .collect()
}

/// A stateless run into the log with `metrics_file` at `path`.
fn run_with_metrics(sim: &Sim, path: &str) -> Output {
    let args = sim.log_args(&["--metrics_file", path]);
    msgx_within(&args, &[], Duration::from_secs(60))
}

#[test]
fn a_metrics_file_that_is_no_regular_file_is_left_alone_with_a_warn() {
    let sim = Sim::start(&["--rate", "2"]);
    let dir = TempDir::new();
    let fifo = fifo(&dir);
    let real = dir.join("real.prom");
    std::fs::write(&real, "").unwrap();
    let link = dir.join("link.prom");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let to_zero = dir.join("zero.prom");
    std::os::unix::fs::symlink("/dev/zero", &to_zero).unwrap();
    for path in [
        fifo.clone(),
        link.to_string_lossy().into(),
        to_zero.to_string_lossy().into(),
    ] {
        let run = run_with_metrics(&sim, &path);
        assert_eq!(run.code, 0, "{path}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("[WARN] metrics_file {path}: "))
                && run
                    .stderr
                    .contains("not a regular file: metrics not written"),
            "{path}: {}",
            run.stderr
        );
    }
    // Each is what it was.
    let kind = |p: &str| std::fs::symlink_metadata(p).unwrap().file_type();
    use std::os::unix::fs::FileTypeExt;
    assert!(kind(&fifo).is_fifo());
    assert!(kind(&link.to_string_lossy()).is_symlink());
    assert!(kind(&to_zero.to_string_lossy()).is_symlink());
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "");
}

#[test]
fn a_previous_metrics_file_in_another_label_order_or_with_timestamps_holds_each_series_once() {
    let sim = Sim::start(&["--rate", "2"]);
    let dir = TempDir::new();
    let path = dir.join("msgx.prom").to_string_lossy().into_owned();
    assert_eq!(run_with_metrics(&sim, &path).code, 0);
    // Valid exposition format a collector or a person may leave: labels reordered,
    // a sample with a timestamp.
    let text = std::fs::read_to_string(&path).unwrap();
    let rewritten: String = text
        .lines()
        .map(|l| {
            if l.starts_with("msgx_graph_requests_total{") {
                let (key, value) = l.rsplit_once(' ').unwrap();
                let (name, labels) = key.split_once('{').unwrap();
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.reverse();
                format!("{name}{{{}}} {value}\n", labels.join(","))
            } else if l.starts_with("msgx_records_delivered{") {
                format!("{l} 1765000000000\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(rewritten, text);
    std::fs::write(&path, rewritten).unwrap();
    let run = run_with_metrics(&sim, &path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = std::fs::read_to_string(&path).unwrap();
    let all = series(&after);
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(all.len(), unique.len(), "a series twice:\n{after}");
    // Counted on, not started over.
    let read = after
        .lines()
        .find(|l| l.starts_with("msgx_graph_requests_total"))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .unwrap();
    let first = text
        .lines()
        .find(|l| l.starts_with("msgx_graph_requests_total"))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .unwrap();
    assert!(read > first, "{first} then {read}");
}

#[test]
fn a_previous_metrics_file_msgx_did_not_write_is_replaced_with_a_warn() {
    let sim = Sim::start(&["--rate", "2"]);
    let dir = TempDir::new();
    let path = dir.join("msgx.prom").to_string_lossy().into_owned();
    let junk = "x".repeat(100) + "\n";
    let cases = [
        junk.repeat(200_000),
        "msgx_records_read{source=\"signins\",queue_key=\"ms_graph_exporter\"} NaN\n".into(),
        "msgx_graph_requests_total{source=\"signins\",queue_key=\"ms_graph_exporter\",code=\"200\"} -5\n"
            .into(),
    ];
    for previous in cases {
        std::fs::write(&path, &previous).unwrap();
        let run = run_with_metrics(&sim, &path);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.assert_stderr_has(format!("[WARN] metrics_file {path}: "));
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(after.len() < 20_000, "{} bytes carried", after.len());
        assert!(!after.contains("NaN") && !after.contains(" -5"), "{after}");
        assert!(
            after
                .lines()
                .all(|l| l.is_empty() || l.starts_with("# ") || l.starts_with("msgx_"))
        );
    }
}

#[test]
fn a_tenant_no_longer_exported_leaves_the_metrics_file() {
    let tenants = [SIM_TENANT.to_string(), "b.example".to_string()];
    let (sim, redis) = (Sim::start_fleet(&tenants[1..], &[]), RedisServer::start());
    let dir = TempDir::new();
    let path = dir.join("msgx.prom").to_string_lossy().into_owned();
    let now = minutes_ago(10);
    for (tick, list) in [(0, tenants.join(",")), (1, SIM_TENANT.to_string())] {
        let at = now + time::Duration::minutes(tick);
        let flags = ["--tenants", list.as_str(), "--metrics_file", path.as_str()];
        let run = tick_at(&sim, &redis, at, &flags);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(
        after.contains(&format!("tenant=\"{SIM_TENANT}\"")),
        "{after}"
    );
    assert!(!after.contains("b.example"), "{after}");
}

fn tick_at(sim: &Sim, redis: &RedisServer, now: time::OffsetDateTime, extra: &[&str]) -> Output {
    tick(sim, redis, "q", now, extra)
}

#[test]
fn a_limit_declaration_no_rate_limit_can_make_is_dropped_with_a_warn() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let now = minutes_ago(5);
    let (seconds, _): (i64, i64) = query(&redis, &["TIME"]);
    let until = (seconds * 1000 + 60_000).to_string();
    let keys = [
        format!("msgx:budget:{{{SIM_TENANT}:{SIM_CLIENT}:reports}}:limits"),
        format!("msgx:budget:{{*:{SIM_CLIENT}:reports}}:limits"),
    ];
    for key in &keys {
        let _: i64 = query(&redis, &["HSET", key, "1/999999999", &until]);
    }
    let run = tick(&sim, &redis, "q", now, &["--rate_limit", "5/10"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for key in &keys {
        assert!(
            run.stderr.contains("[WARN]") && run.stderr.contains(key.as_str()),
            "{key}: {}",
            run.stderr
        );
        let left: Option<String> = query(&redis, &["HGET", key, "1/999999999"]);
        assert_eq!(left, None);
    }
    assert!(!run.stderr.contains("another process"), "{}", run.stderr);
    assert_same_records(
        redis.list("q"),
        sim.records(origin(now), lagged_end(now) - time::Duration::SECOND),
    );
}

#[test]
fn a_config_file_of_many_unknown_keys_is_reported_by_its_first_problems_and_a_count() {
    let dir = TempDir::new();
    let path = dir.join("app_config.yaml");
    let mut yaml = String::from("tenant: t.example\nclient_id: c\nclient_secret: s\n");
    // As many as fit in the 1 MiB a config file may have.
    for i in 0..100_000 {
        yaml.push_str(&format!("k{i}: 1\n"));
    }
    std::fs::write(&path, yaml).unwrap();
    let args = strings(&["--app_config", path.to_str().unwrap()]);
    let run = msgx_within(&args, &[], Duration::from_secs(60));
    assert_eq!(run.code, 2, "{}", &run.stderr[..run.stderr.len().min(2000)]);
    assert!(
        run.stderr.len() < 64 << 10,
        "{} bytes of stderr",
        run.stderr.len()
    );
    assert_eq!(run.stderr.matches("unknown option").count(), 10);
    run.assert_stderr_has("99990 more problems in this file, not listed");
}

#[test]
fn an_unknown_option_cannot_forge_a_log_line() {
    let forged = "--zz\n2026-01-01T00:00:00Z [ERROR] forged\u{1b}[31m";
    let run = msgx(&strings(&[forged]), &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
    run.assert_stderr_has("unknown option --zz\\n2026-01-01T00:00:00Z [ERROR] forged\\u{1b}[31m");
}

#[test]
fn a_tenant_that_is_a_path_is_exit_2_naming_the_option() {
    for (option, value) in [
        ("tenants", "..,b.example"),
        ("tenants", "."),
        ("tenants", "a.example,,b.example"),
        ("tenant", ".."),
    ] {
        let mut args = strings(&["--client_id", "c", "--client_secret", "s"]);
        args.extend(strings(&["--login_url", "http://127.0.0.1:1"]));
        args.extend(strings(&[
            &format!("--{option}"),
            value,
            "--queue_backend",
            "file",
            "--file_path",
            "/tmp/{tenant}/{source}.ndjson",
        ]));
        let run = msgx(&args, &[]);
        assert_eq!(run.code, 2, "{value}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("option {option}: invalid value")),
            "{value}: {}",
            run.stderr
        );
    }
}

#[test]
fn an_empty_element_or_an_empty_list_is_exit_2_naming_the_option() {
    // Loopback hosts: a case accepted by mistake must not try to reach Microsoft.
    let loopback = [
        "--login_url",
        "http://127.0.0.1:1",
        "--graph_url",
        "http://127.0.0.1:1",
    ];
    let dir = TempDir::new();
    /// (arguments, environment, config file line, the option named)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 12] = [
        (&["--sources", ","], &[], "", "sources"),
        (
            &["--sources", "signins,,directory_audits"],
            &[],
            "",
            "sources",
        ),
        (&["--sources", "signins,"], &[], "", "sources"),
        (&[], &[("GRAPH_SOURCES", "signins,")], "", "sources"),
        (&[], &[], "sources: []", "sources"),
        (&[], &[], "sources: [signins, \"\"]", "sources"),
        (&[], &[], "sources: \",\"", "sources"),
        (&["--queue_keys", ","], &[], "", "queue_keys"),
        (&["--queue_keys", "signins=a,"], &[], "", "queue_keys"),
        (
            &["--rate_limits", "identity_protection=1/1,,"],
            &[],
            "",
            "rate_limits",
        ),
        (&[], &[], "tenants: []", "tenants"),
        (&[], &[], "queue_keys: \",\"", "queue_keys"),
    ];
    for (args, env, line, option) in cases {
        let mut all = offline(&loopback);
        all.extend(strings(args));
        if !line.is_empty() {
            let file = dir.join("app_config.yaml");
            std::fs::write(&file, format!("{line}\n")).unwrap();
            all.extend(strings(&["--app_config", file.to_str().unwrap()]));
        }
        let run = msgx(&all, env);
        assert_eq!(run.code, 2, "{args:?} {env:?} {line}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("option {option}: ")),
            "{args:?} {env:?} {line}: {}",
            run.stderr
        );
    }
}

#[test]
fn graphs_newer_enum_members_reach_the_queue_as_they_are() {
    // Beta sign-ins through an NPS extension, backup authentication or an AD FS MFA
    // adapter, or by authentication transfer: members after unknownFutureValue, sent
    // only to a request with `Prefer: include-unknown-enum-members`.
    let (sim, redis) = sim_and_redis(&["--rate", "5"]);
    let now = minutes_ago(5);
    let flags = [
        "--sources",
        "signins_noninteractive",
        "--queue_keys",
        "signins_noninteractive=ni",
    ];
    let run = tick(&sim, &redis, "q", now, &flags);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let delivered = redis.list("ni");
    let expected = sim.records_of(
        "signins_noninteractive",
        "createdDateTime",
        origin(now),
        lagged_end(now) - time::Duration::SECOND,
    );
    for member in [
        "NPSExtension",
        "AzureADBackupAuth",
        "ADFederationServicesMFAAdapter",
    ] {
        let field = format!("\"tokenIssuerType\":\"{member}\"");
        assert!(
            expected.iter().any(|r| r.contains(&field)),
            "{member} in the oracle"
        );
    }
    assert!(
        !delivered.iter().any(|r| r.contains("unknownFutureValue")),
        "a newer member arrived as unknownFutureValue"
    );
    assert_same_records(delivered, expected);
}

#[test]
fn a_deployment_that_never_succeeds_still_has_a_success_time_for_its_alert() {
    // The first run cannot reach Redis: the file still says "never" (0), so
    // `time() - msgx_last_success_timestamp_seconds > 600` fires.
    let sim = Sim::start(&["--rate", "2"]);
    let dir = TempDir::new();
    let path = dir.join("msgx.prom").to_string_lossy().into_owned();
    let mut args = sim.args();
    let closed = format!("redis://127.0.0.1:{}/0", free_port());
    args.extend(strings(&["--redis_url", &closed, "--metrics_file", &path]));
    let run = msgx_within(&args, &[("MSGX_BACKOFF_MS", "5")], Duration::from_secs(60));
    assert_eq!(run.code, 1, "{}", run.stderr);
    let text = std::fs::read_to_string(&path).expect("metrics written");
    assert!(
        text.contains("\nmsgx_last_success_timestamp_seconds 0\n"),
        "{text}"
    );
    assert!(text.contains("\nmsgx_exit_code 1\n"), "{text}");
}

#[test]
fn a_graph_variable_that_names_no_option_is_a_warn_with_what_it_meant() {
    let sim = Sim::start(&["--rate", "2"]);
    let run = msgx(
        &sim.log_args(&[]),
        &[("GRAPH_TIMELAGG", "60"), ("GRAPH_ZZZ", "1")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_stderr_has(
        "[WARN] environment variable GRAPH_TIMELAGG names no option (did you mean \
             GRAPH_TIMELAG?): it is ignored",
    );
    run.assert_stderr_has("[WARN] environment variable GRAPH_ZZZ names no option: it is ignored");
}
