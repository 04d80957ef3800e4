//! Every Entra audit stream (`sources`): each one's own keys and state, its documented
//! filter operators and page cap, mutable records exported once per version, budgets
//! per bucket, and a 403 that fails one source only.

use time::{Duration as Span, OffsetDateTime};

use crate::common::*;

/// (source, time field, where it goes under queue key `k`)
const ALL: [(&str, &str); 11] = [
    ("signins", "createdDateTime"),
    ("signins_noninteractive", "createdDateTime"),
    ("signins_service_principal", "createdDateTime"),
    ("signins_managed_identity", "createdDateTime"),
    ("directory_audits", "activityDateTime"),
    ("provisioning", "activityDateTime"),
    ("risk_detections", "lastUpdatedDateTime"),
    ("security_alerts", "lastUpdateDateTime"),
    ("service_principal_risk_detections", "detectedDateTime"),
    ("agent_risk_detections", "lastModifiedDateTime"),
    ("intune_audit_events", "activityDateTime"),
];

fn names(sources: &[(&str, &str)]) -> String {
    let names: Vec<&str> = sources.iter().map(|(name, _)| *name).collect();
    names.join(",")
}

/// The Redis key a source writes to under queue key `key` (no explicit mapping).
fn key_of(key: &str, source: &str) -> String {
    match source {
        "signins" => key.to_string(),
        other => format!("{key}:{other}"),
    }
}

/// One cron run at `now` into queue key `k`.
fn tick(sim: &Sim, redis: &RedisServer, now: OffsetDateTime, extra: &[&str]) -> Output {
    crate::common::tick(sim, redis, "k", now, extra)
}

#[test]
fn every_source_over_cron_replays_delivers_the_oracle_once_each_update_included() {
    // Versions of risk detections and alerts 300 s apart: every version is the latest
    // when its second is first read (120 s lag, one-minute ticks).
    let (sim, redis) = sim_and_redis(&["--rate", "3", "--update-every", "300"]);
    let t0 = minutes_ago(40);
    let sources = names(&ALL);
    let ticks: Vec<OffsetDateTime> = (0..16).map(|m| t0 + Span::minutes(m)).collect();
    for now in &ticks {
        let run = tick(&sim, &redis, *now, &["--sources", &sources]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.summary_line()
                .contains("] summary: sources 11 frames ok "),
            "{}",
            run.summary_line()
        );
    }
    let last = *ticks.last().expect("ticks");
    for (source, field) in ALL {
        let expected = sim.records_of(
            source,
            field,
            origin(t0),
            lagged_end(last) - Span::seconds(1),
        );
        assert!(!expected.is_empty(), "{source}: the oracle has records");
        let delivered = redis.list(&key_of("k", source));
        if matches!(
            source,
            "risk_detections" | "security_alerts" | "agent_risk_detections"
        ) {
            // Updates arrived as events of their own: some ids more than once, each
            // (id, last update) once.
            let ids: Vec<String> = delivered
                .iter()
                .map(|r| {
                    let v: serde_json::Value = serde_json::from_str(r).expect("JSON");
                    v["id"].as_str().expect("id").to_string()
                })
                .collect();
            let mut distinct = ids.clone();
            distinct.sort();
            distinct.dedup();
            assert!(distinct.len() < ids.len(), "{source}: no update exported");
        }
        assert_same_records(delivered, expected);
    }
    // Only documented operators and page sizes reached Graph.
    assert_eq!(sim.stats()["graph_400"], serde_json::Value::Null);
    let provisioning = sim.queries("provisioning");
    assert!(!provisioning.is_empty());
    for (_, filter) in &provisioning {
        assert!(
            filter.contains(" gt ") && filter.contains(" lt "),
            "{filter}"
        );
        assert!(
            !filter.contains(" ge ") && !filter.contains(" le "),
            "{filter}"
        );
    }
    let risk = sim.queries("risk_detections");
    assert!(!risk.is_empty() && risk.iter().all(|(top, _)| top == "500"));
    // The sources Microsoft added: their documented (or, for Intune, Graph's usual)
    // operators and caps.
    for (source, field, top) in [
        (
            "service_principal_risk_detections",
            "detectedDateTime",
            "500",
        ),
        ("agent_risk_detections", "lastModifiedDateTime", "500"),
        ("intune_audit_events", "activityDateTime", "1000"),
    ] {
        let queries = sim.queries(source);
        assert!(!queries.is_empty(), "{source}");
        for (asked, filter) in &queries {
            assert_eq!(asked, top, "{source}");
            assert!(
                filter.starts_with(&format!("{field} ge "))
                    && filter.contains(&format!(" and {field} le ")),
                "{source}: {filter}"
            );
        }
    }
    assert!(
        sim.queries("signins_noninteractive")
            .iter()
            .all(|(_, f)| f.starts_with("signInEventTypes/any(t: t eq 'nonInteractiveUser') and "))
    );
}

#[test]
fn without_sources_the_keys_and_the_summary_are_todays() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let now = minutes_ago(10);
    let run = tick(&sim, &redis, now, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.summary_line().contains("] summary: window ["));
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.connection())
        .expect("KEYS");
    keys.sort();
    assert_eq!(keys, ["k", "{k}:msgx:seen", "{k}:msgx:state"]);
    assert_eq!(sim.stats()["graph_200"], serde_json::json!(2));
    assert_eq!(
        sim.queries("signins")
            .iter()
            .map(|(top, _)| top.as_str())
            .collect::<Vec<_>>(),
        ["1000", "1000"]
    );
}

#[test]
fn adding_a_source_starts_its_first_window_and_leaves_the_others_alone() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    for minute in 0..3 {
        let run = tick(&sim, &redis, t0 + Span::minutes(minute), &[]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let t1 = t0 + Span::minutes(3);
    let run = tick(
        &sim,
        &redis,
        t1,
        &[
            "--sources",
            "signins,directory_audits",
            "--queue_keys",
            "directory_audits=entra_audit",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    // signins went on from its watermark; the audits began with the original window.
    let signins = sim.records(origin(t0), lagged_end(t1) - Span::seconds(1));
    assert_same_records(redis.list("k"), signins);
    let audits = sim.records_of(
        "directory_audits",
        "activityDateTime",
        origin(t1),
        lagged_end(t1) - Span::seconds(1),
    );
    assert!(!audits.is_empty());
    assert_same_records(redis.list("entra_audit"), audits);
    run.assert_stderr_has(" key {entra_audit}:msgx:state: starting a first window at ");
    let audits_line = run
        .stderr
        .lines()
        .find(|l| l.contains("summary of directory_audits: window ["))
        .expect("a summary line per source");
    assert!(audits_line.contains(&format!("watermark {}", rfc3339(lagged_end(t1)))));
}

#[test]
fn a_403_fails_only_its_source_naming_the_permission_and_the_next_run_catches_up() {
    let denying = Sim::start(&[
        "--rate",
        "3",
        "--deny",
        "risk_detections",
        "--deny",
        "provisioning:licence",
    ]);
    let good = Sim::start(&["--rate", "3"]);
    let redis = RedisServer::start();
    let t0 = minutes_ago(30);
    let sources = ["--sources", "signins,provisioning,risk_detections"];
    let run = tick(&denying, &redis, t0, &sources);
    assert_eq!(run.code, 3, "{}", run.stderr);
    run.assert_stderr_has(
        "grant the application permission IdentityRiskEvent.Read.All (admin consent)",
    );
    run.assert_stderr_has("the tenant needs an Entra ID P1/P2 licence");
    // Each refused source gave up at once: a frame of it already asked for when the
    // first 403 came (two fetchers: at most one more) is the only other request;
    // sign-ins went on.
    let stats = denying.stats();
    for refused in ["risk_detections_403", "provisioning_403"] {
        let asked = stats[refused].as_u64().unwrap_or(0);
        assert!((1..=2).contains(&asked), "{refused}: {asked} in {stats}");
    }
    assert_eq!(stats["signins_200"], serde_json::json!(2));
    assert_same_records(
        redis.list("k"),
        denying.records(origin(t0), lagged_end(t0) - Span::seconds(1)),
    );
    assert_eq!(redis.len("k:risk_detections"), 0);
    assert!(
        run.summary_line()
            .ends_with(" incomplete provisioning,risk_detections")
    );
    // Permission granted: the next run reads what the refused sources owe.
    let t1 = t0 + Span::minutes(1);
    let run = tick(&good, &redis, t1, &sources);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for (source, field) in [
        ("provisioning", "activityDateTime"),
        ("risk_detections", "lastUpdatedDateTime"),
    ] {
        assert_same_records(
            redis.list(&key_of("k", source)),
            good.records_of(source, field, origin(t0), lagged_end(t1) - Span::seconds(1)),
        );
    }
}

#[test]
fn sources_under_their_buckets_throttles_get_no_429() {
    // Graph's limits in the simulator; msgx-once's default budgets, shared in Redis.
    let mut flags = vec!["--rate", "3"];
    flags.extend(GRAPH_THROTTLES);
    let (sim, redis) = sim_and_redis(&flags);
    let now = minutes_ago(10);
    let run = tick(
        &sim,
        &redis,
        now,
        &[
            "--sources",
            "signins,directory_audits,provisioning,risk_detections,security_alerts",
            "--rate_limit",
            "5/10",
            "--page_size",
            "50",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let stats = sim.stats();
    assert_eq!(stats["graph_429"], serde_json::Value::Null, "{stats}");
    let reports: u64 = ["signins_200", "directory_audits_200", "provisioning_200"]
        .iter()
        .map(|k| stats[k].as_u64().unwrap_or(0))
        .sum();
    assert!(reports > 5, "the reports bucket had to wait: {stats}");
    assert_eq!(run.summary_field("throttled"), "0");
}

#[test]
fn several_sources_need_a_file_each_and_log_lines_name_their_source() {
    let sim = Sim::start(&["--rate", "3"]);
    let dir = TempDir::new();
    let shared = dir.join("all.ndjson");
    let mut args = sim.args();
    args.extend(strings(&[
        "--queue_backend",
        "file",
        "--sources",
        "signins,directory_audits",
        "--file_path",
        shared.to_str().unwrap(),
    ]));
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(
        run.stderr.trim(),
        format!(
            "msgx-once: error: option file_path: has no {{source}}, but several sources are \
             exported (from command line --file_path); accepted: a path with {{source}}, e.g. \
             /var/lib/msgx/{{source}}.ndjson"
        )
    );
    let args = sim.log_args(&["--sources", "signins,directory_audits"]);
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(minutes_ago(5)))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = |prefix: &str| {
        run.stderr
            .lines()
            .filter(|l| l.contains(&format!("] {prefix}: [")))
            .count()
    };
    assert!(
        lines("signins") > 0 && lines("directory_audits") > 0,
        "{}",
        run.stderr
    );
}

#[test]
fn a_yaml_list_and_mapping_configure_sources_keys_and_budgets() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let dir = TempDir::new();
    let config = dir.join("app_config.yaml");
    std::fs::write(
        &config,
        "sources:\n  - signins\n  - security_alerts\nqueue_keys:\n  security_alerts: alerts\n\
         rate_limits:\n  security: 0\n",
    )
    .unwrap();
    let now = minutes_ago(10);
    sim.set_clock(now);
    let mut args = redis_args(&sim, &redis, "k", &[]);
    args.extend(strings(&["--app_config", config.to_str().unwrap()]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(
        redis.list("alerts"),
        sim.records_of(
            "security_alerts",
            "lastUpdateDateTime",
            origin(now),
            lagged_end(now) - Span::seconds(1),
        ),
    );
    assert!(redis.len("k") > 0);
}

#[test]
fn pages_smaller_than_asked_are_followed_to_the_end() {
    // Directory audits' page cap is undocumented: the simulator pages at most 500
    // records whatever $top asks.
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let until = minutes_ago(5);
    let since = until - Span::minutes(20);
    let mut extra = strings(&["--sources", "directory_audits"]);
    extra.extend(backfill_flags(since, until));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    sim.set_clock(minutes_ago(1));
    let run = msgx(&redis_args(&sim, &redis, "k", &extra), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let expected = sim.records_of(
        "directory_audits",
        "activityDateTime",
        since,
        until - Span::seconds(1),
    );
    assert!(expected.len() > 1000, "{} records", expected.len());
    assert_same_records(redis.list("k:directory_audits"), expected.clone());
    let queries = sim.queries("directory_audits");
    assert_eq!(queries.len(), 2, "one query per frame");
    assert!(queries.iter().all(|(top, _)| top == "1000"));
    let pages = sim.stats()["directory_audits_200"].as_u64().expect("pages");
    // Each frame took more pages than $top=1000 would need: at least ceil(N / 500).
    assert!(
        pages as usize >= expected.len().div_ceil(500),
        "{pages} pages"
    );
}

#[test]
fn a_source_a_day_behind_catches_up_after_the_others_minute() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(26 * 60);
    let first = tick(&sim, &redis, t0, &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    // A day later, with a second source: sign-ins catch up an hour, the audits start.
    let t1 = t0 + Span::days(1);
    let run = tick(
        &sim,
        &redis,
        t1,
        &[
            "--sources",
            "signins,directory_audits",
            "--max_catchup",
            "3600",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let all = sim.get("/_sim/queries");
    let order: Vec<&str> = all.lines().filter_map(|l| l.split('\t').next()).collect();
    // The first run's two queries, then the audits' minute before any catch-up frame.
    // Two fetchers: the catch-up's first frame may be asked for while the audits'
    // second is (the order of requests sent at once is the network's), never later.
    assert_eq!(
        order[..3],
        ["signins", "signins", "directory_audits"],
        "{order:?}"
    );
    let audits = order[3..]
        .iter()
        .position(|s| *s == "directory_audits")
        .map(|p| p + 3);
    assert!(matches!(audits, Some(3 | 4)), "{order:?}");
    assert_eq!(
        order.iter().filter(|s| **s == "directory_audits").count(),
        2,
        "{order:?}"
    );
    assert_same_records(
        redis.list("k:directory_audits"),
        sim.records_of(
            "directory_audits",
            "activityDateTime",
            origin(t1),
            lagged_end(t1) - Span::seconds(1),
        ),
    );
    assert_same_records(
        redis.list("k"),
        sim.records(origin(t0), lagged_end(t0) + Span::seconds(3599)),
    );
}

/// Entra Agent ID: an agent's sign-ins are service principal sign-ins with beta's
/// `agent` object, and its identity types include members after `unknownFutureValue`:
/// both reach the queue whole, byte for byte as Graph sends them.
#[test]
fn agent_sign_ins_and_agent_risk_arrive_whole() {
    let (sim, redis) = sim_and_redis(&["--rate", "20", "--update-every", "300"]);
    let t0 = minutes_ago(30);
    let sources = "signins_service_principal,agent_risk_detections";
    for minute in 0..3 {
        let run = tick(
            &sim,
            &redis,
            t0 + Span::minutes(minute),
            &["--sources", sources],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let end = lagged_end(t0 + Span::minutes(2)) - Span::seconds(1);
    let sign_ins = redis.list(&key_of("k", "signins_service_principal"));
    let agents = sign_ins
        .iter()
        .filter(|r| r.contains(r#""agent":{"agentType":"#))
        .count();
    assert!(agents > 0, "no agent sign-in among {}", sign_ins.len());
    assert_same_records(
        sign_ins,
        sim.records_of(
            "signins_service_principal",
            "createdDateTime",
            origin(t0),
            end,
        ),
    );
    let risk = redis.list(&key_of("k", "agent_risk_detections"));
    assert!(
        risk.iter()
            .any(|r| r.contains(r#""identityType":"agentIdentityBlueprintPrincipal""#)),
        "a later member of identityType reached the queue as it is"
    );
    assert!(!risk.iter().any(|r| r.contains("unknownFutureValue")));
    assert_same_records(
        risk,
        sim.records_of(
            "agent_risk_detections",
            "lastModifiedDateTime",
            origin(t0),
            end,
        ),
    );
}
