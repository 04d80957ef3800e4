//! Many tenants, one application (`tenants`): each tenant's records once in its own
//! key, within Graph's budgets per tenant and across tenants (the simulator enforcing
//! both), in one process or several sharing Redis; a tenant without consent named and
//! left out while the others complete; one `tenant` exactly as before.

use std::collections::BTreeSet;
use std::time::Duration;

use time::OffsetDateTime;

use crate::common::*;

/// The tenants of these tests: the simulator's home tenant and 39 more.
fn fleet() -> Vec<String> {
    let mut tenants = vec![SIM_TENANT.to_string()];
    tenants.extend((1..40).map(|i| format!("t{i:02}.example")));
    tenants
}

/// The simulator serving `tenants` (its home one first) with both of Graph's budgets,
/// plus `extra`.
fn fleet_sim(tenants: &[String], extra: &[&str]) -> Sim {
    Sim::start_fleet(&tenants[1..], extra)
}

/// A cron run at `now` of `tenants` into `q:{tenant}`, paced as Graph limits them,
/// plus `extra`.
fn fleet_tick(
    sim: &Sim,
    redis: &RedisServer,
    tenants: &[String],
    now: OffsetDateTime,
    extra: &[&str],
) -> Running {
    let mut args = redis_args(sim, redis, "q", &["--rate_limit", "5/10"]);
    args.extend(strings(&[
        "--tenants",
        &tenants.join(","),
        "--max_retries",
        "20",
    ]));
    args.extend(strings(extra));
    Running::start_with_env(&args, &[("MSGX_NOW", &rfc3339(now))])
}

/// Every tenant's key holds exactly the simulator's records of `[start, end]` once.
fn assert_each_tenant_once(
    sim: &Sim,
    redis: &RedisServer,
    tenants: &[String],
    start: OffsetDateTime,
    end: OffsetDateTime,
) {
    for tenant in tenants {
        let expected = sim.tenant_records(tenant, start, end);
        assert!(!expected.is_empty(), "{tenant} has records to export");
        assert_same_records(redis.list(&format!("q:{tenant}")), expected);
    }
}

#[test]
fn forty_tenants_over_three_ticks_are_each_exported_once_within_both_budgets() {
    let tenants = fleet();
    let (sim, redis) = (fleet_sim(&tenants, &[]), RedisServer::start());
    let first = minutes_ago(10);
    let mut waited_app = 0.0;
    for tick in 0..3 {
        let now = first + time::Duration::minutes(tick);
        sim.set_clock(now);
        let sources = ["--sources", "signins,directory_audits"];
        let run =
            fleet_tick(&sim, &redis, &tenants, now, &sources).finish(Duration::from_secs(180));
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.summary_field("tenants"), "40");
        assert_eq!(run.summary_field("sources"), "2");
        assert_eq!(run.summary_field("lanes"), "80");
        assert_eq!(
            run.summary_field("throttled"),
            "0",
            "{}",
            run.summary_line()
        );
        if run.summary_line().contains(" waited_app ") {
            waited_app += run
                .summary_field("waited_app")
                .parse::<f64>()
                .expect("seconds");
        }
    }
    assert_eq!(
        sim.stats()["graph_429"].as_u64().unwrap_or(0),
        0,
        "{}",
        sim.stats()
    );
    // 40 tenants × 2 sources, a frame each a tick: 240 requests in a few seconds, more
    // than the app's 122 per 10 s — its budget held requests back, and no tenant's own
    // budget was overdrawn.
    assert!(
        waited_app > 0.0,
        "the app-wide budget never held a request back"
    );
    let last = first + time::Duration::minutes(2);
    let (start, end) = (origin(first), lagged_end(last) - time::Duration::SECOND);
    assert_each_tenant_once(&sim, &redis, &tenants, start, end);
    for tenant in &tenants {
        let expected =
            sim.tenant_records_of(tenant, "directory_audits", "activityDateTime", start, end);
        assert!(!expected.is_empty(), "{tenant} has audits to export");
        assert_same_records(
            redis.list(&format!("q:{tenant}:directory_audits")),
            expected,
        );
    }
    // Each tenant's state is its own, beside its own queue.
    let keys: BTreeSet<String> = query::<Vec<String>>(&redis, &["KEYS", "*"])
        .into_iter()
        .collect();
    for tenant in &tenants {
        for key in [
            format!("q:{tenant}"),
            format!("{{q:{tenant}}}:msgx:state"),
            format!("{{q:{tenant}}}:msgx:seen"),
            format!("msgx:budget:{{{tenant}:{SIM_CLIENT}:reports}}"),
        ] {
            assert!(keys.contains(&key), "{key} missing");
        }
    }
    assert!(keys.contains(&format!("msgx:budget:{{*:{SIM_CLIENT}:reports}}")));
}

#[test]
fn forty_tenants_over_four_overlapping_processes_stay_within_the_app_budget() {
    let tenants = fleet();
    let (sim, redis) = (fleet_sim(&tenants, &[]), RedisServer::start());
    let first = minutes_ago(10);
    for tick in 0..3 {
        let now = first + time::Duration::minutes(tick);
        sim.set_clock(now);
        // Four shards of ten, each overlapping the next one's first two tenants: a
        // tenant two processes export at once is still exported once (its lock). Two
        // sources: 240 requests in all, more than the app's 122 per 10 s, which only
        // the budget the processes share in Redis keeps them within.
        let runs: Vec<Running> = (0..4)
            .map(|shard| {
                let shard: Vec<String> = (0..12)
                    .map(|i| tenants[(shard * 10 + i) % 40].clone())
                    .collect();
                fleet_tick(
                    &sim,
                    &redis,
                    &shard,
                    now,
                    &["--sources", "signins,directory_audits"],
                )
            })
            .collect();
        for run in runs {
            let run = run.finish(Duration::from_secs(180));
            assert_eq!(run.code, 0, "{}", run.stderr);
        }
    }
    let throttled = sim.stats()["graph_429"].as_u64().unwrap_or(0);
    assert!(throttled <= 1, "{throttled} answered 429: {}", sim.stats());
    let last = first + time::Duration::minutes(2);
    assert_each_tenant_once(
        &sim,
        &redis,
        &tenants,
        origin(first),
        lagged_end(last) - time::Duration::SECOND,
    );
}

#[test]
fn a_tenant_without_consent_is_named_with_its_fix_and_the_others_complete() {
    let tenants = fleet();
    let refused = &tenants[7];
    let sim = fleet_sim(&tenants, &["--unconsented", refused]);
    let redis = RedisServer::start();
    let now = minutes_ago(5);
    sim.set_clock(now);
    let dir = TempDir::new();
    let metrics = dir.join("msgx.prom");
    let metrics_flag = metrics.display().to_string();
    let run = fleet_tick(
        &sim,
        &redis,
        &tenants,
        now,
        &["--metrics_file", &metrics_flag],
    )
    .finish(Duration::from_secs(180));
    assert_eq!(run.code, 3, "{}", run.stderr);
    // Each tenant's series are labelled with it; the refused one has its lane's
    // success time alone, 0 (never), so the per-lane alert names it while the
    // others' success times move.
    let metrics = std::fs::read_to_string(&metrics).expect("metrics written");
    let other = &tenants[8];
    let delivered = redis.len(&format!("q:{other}"));
    let series = format!(
        "msgx_records_delivered{{tenant=\"{other}\",source=\"signins\",queue_key=\"q:{other}\"}} {delivered}\n"
    );
    assert!(metrics.contains(&series), "{series} in {metrics}");
    let success = |tenant: &str| {
        let key = format!(
            "msgx_lane_last_success_timestamp_seconds{{tenant=\"{tenant}\",source=\"signins\",queue_key=\"q:{tenant}\"}} "
        );
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&key))
            .unwrap_or_else(|| panic!("{key} in {metrics}"));
        line[key.len()..].parse::<f64>().expect("a number")
    };
    assert_eq!(success(refused), 0.0);
    assert!(success(other) > 1.7e9);
    let refused_series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains(&format!("tenant=\"{refused}\"")))
        .collect();
    assert_eq!(refused_series.len(), 1, "{refused_series:?}");
    // Each lane's summary at the level of its own outcome: the healthy ones at INFO.
    let healthy = format!("[INFO] summary of {other} signins:");
    run.assert_stderr_has(&healthy);
    assert!(!run.stderr.contains(&format!("[ERROR] summary of {other} ")));
    assert_eq!(run.summary_field("failed_tenants"), *refused);
    assert_eq!(run.summary_field("tenants"), "40");
    assert_eq!(run.summary_field("sources"), "1");
    assert_eq!(run.summary_field("lanes"), "39");
    let errors = run.errors();
    let consent_url = format!(
        "{}/{refused}/adminconsent?client_id={SIM_CLIENT}",
        sim.url()
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&format!("tenant {refused}:")),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("AADSTS700016"), "{}", errors[0]);
    assert!(errors[0].contains(&consent_url), "{}", errors[0]);
    let others: Vec<String> = tenants.iter().filter(|t| *t != refused).cloned().collect();
    assert_each_tenant_once(
        &sim,
        &redis,
        &others,
        origin(now),
        lagged_end(now) - time::Duration::SECOND,
    );
    // Nothing of the refused tenant's: no queue, no state, no lock.
    let keys: Vec<String> = query(&redis, &["KEYS", &format!("*{refused}*")]);
    assert_eq!(keys, Vec::<String>::new());
}

#[test]
fn one_tenant_keeps_its_keys_state_and_summary() {
    let (sim, redis) = sim_and_redis(&[]);
    let now = minutes_ago(5);
    let run = tick(&sim, &redis, "q", now, &["--rate_limit", "5/10"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut keys: Vec<String> = query(&redis, &["KEYS", "*"]);
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("msgx:budget:{{*:{SIM_CLIENT}:reports}}"),
            format!("msgx:budget:{{*:{SIM_CLIENT}:reports}}:limits"),
            format!("msgx:budget:{{{SIM_TENANT}:{SIM_CLIENT}:reports}}"),
            format!("msgx:budget:{{{SIM_TENANT}:{SIM_CLIENT}:reports}}:limits"),
            "q".to_string(),
            "{q}:msgx:seen".to_string(),
            "{q}:msgx:state".to_string(),
        ]
    );
    assert_same_records(
        redis.list("q"),
        sim.records(origin(now), lagged_end(now) - time::Duration::SECOND),
    );
    // The one summary line, with the figures it always had, in their order.
    let line = run.summary_line();
    let message = line.splitn(3, ' ').nth(2).expect("message");
    let labels: Vec<&str> = message
        .split_whitespace()
        .filter(|w| {
            w.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == ':')
        })
        .collect();
    assert_eq!(
        labels,
        [
            "summary:",
            "window",
            "frames",
            "ok",
            "failed",
            "pages",
            "records",
            "delivered",
            "requests",
            "throttled",
            "retries",
            "waited",
            "seconds",
            "watermark"
        ],
        "{line}"
    );
    assert_eq!(run.stderr.matches("summary").count(), 1, "{}", run.stderr);
}

#[test]
fn a_tenant_refused_a_source_is_named_and_its_other_sources_and_tenants_complete() {
    let tenants: Vec<String> = fleet().into_iter().take(5).collect();
    let refused = &tenants[2];
    let deny = format!("{refused}/directory_audits:licence");
    let sim = fleet_sim(&tenants, &["--deny", &deny]);
    let redis = RedisServer::start();
    let now = minutes_ago(5);
    sim.set_clock(now);
    // The tenants and sources as YAML lists in the config file.
    let dir = TempDir::new();
    let config = dir.join("app_config.yaml");
    let list: String = tenants.iter().map(|t| format!("  - {t}\n")).collect();
    std::fs::write(
        &config,
        format!("tenants:\n{list}sources: [signins, directory_audits]\n"),
    )
    .unwrap();
    let mut args = redis_args(&sim, &redis, "q", &["--rate_limit", "5/10"]);
    args.extend(strings(&["--app_config", &config.display().to_string()]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(run.summary_field("failed_tenants"), *refused);
    assert_eq!(
        run.summary_field("incomplete"),
        format!("{refused}/directory_audits")
    );
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&format!("{refused} directory_audits:")) && errors[0].contains("P1/P2"),
        "{}",
        errors[0]
    );
    let (start, end) = (origin(now), lagged_end(now) - time::Duration::SECOND);
    assert_each_tenant_once(&sim, &redis, &tenants, start, end);
    for tenant in tenants.iter().filter(|t| *t != refused) {
        let audits = redis.len(&format!("q:{tenant}:directory_audits"));
        assert!(audits > 0, "{tenant}'s directory audits exported");
    }
    assert_eq!(redis.len(&format!("q:{refused}:directory_audits")), 0);
}

#[test]
fn check_asks_every_tenant_and_names_the_one_without_consent() {
    let tenants: Vec<String> = fleet().into_iter().take(3).collect();
    let refused = &tenants[1];
    let sim = fleet_sim(&tenants, &["--unconsented", refused]);
    let redis = RedisServer::start();
    let mut args = redis_args(&sim, &redis, "q", &["--rate_limit", "5/10", "--check"]);
    args.extend(strings(&["--tenants", &tenants.join(",")]));
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let report = format!("{}{}", run.stdout, run.stderr);
    for tenant in [&tenants[0], &tenants[2]] {
        assert!(
            report.contains(&format!("source {tenant} signins")),
            "{tenant}: {report}"
        );
    }
    let consent_url = format!(
        "{}/{refused}/adminconsent?client_id={SIM_CLIENT}",
        sim.url()
    );
    let refused_line = report
        .lines()
        .find(|l| l.contains(&format!("of tenant {refused}")))
        .unwrap_or_else(|| panic!("{refused} not named: {report}"));
    assert!(refused_line.contains("AADSTS700016"), "{refused_line}");
    assert!(report.contains(&consent_url), "{report}");
    assert!(
        !report.contains(&format!("source {refused} signins")),
        "{report}"
    );
}

#[test]
fn one_tenants_damaged_state_is_named_and_the_others_are_exported() {
    let tenants: Vec<String> = fleet().into_iter().take(4).collect();
    let damaged = &tenants[3];
    let (sim, redis) = (fleet_sim(&tenants, &[]), RedisServer::start());
    let state_key = format!("{{q:{damaged}}}:msgx:state");
    let _: () = query(&redis, &["HSET", &state_key, "watermark", "soon"]);
    let now = minutes_ago(5);
    sim.set_clock(now);
    // The tenants from the environment, as a CronJob's GRAPH_TENANTS gives them.
    let run = msgx(
        &redis_args(&sim, &redis, "q", &["--rate_limit", "5/10"]),
        &[
            ("MSGX_NOW", &rfc3339(now)),
            ("GRAPH_TENANTS", &tenants.join(",")),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.summary_field("incomplete"),
        format!("{damaged}/signins")
    );
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&format!("{damaged} signins: {state_key} field watermark")),
        "{}",
        errors[0]
    );
    let others: Vec<String> = tenants.iter().filter(|t| *t != damaged).cloned().collect();
    assert_each_tenant_once(
        &sim,
        &redis,
        &others,
        origin(now),
        lagged_end(now) - time::Duration::SECOND,
    );
    // Left as it was, for the repair the ERROR names; nothing written for it.
    let kept: String = query(&redis, &["HGET", &state_key, "watermark"]);
    assert_eq!(kept, "soon");
    assert_eq!(redis.len(&format!("q:{damaged}")), 0);
}

#[test]
fn on_a_cluster_every_tenant_and_both_budgets_keep_their_keys_in_one_slot_each() {
    let tenants: Vec<String> = fleet().into_iter().take(6).collect();
    let nodes = cluster();
    let seeds: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let sim = fleet_sim(&tenants, &[]);
    let now = minutes_ago(5);
    sim.set_clock(now);
    let mut args = sim.args();
    args.extend(strings(&[
        "--redis_url",
        &nodes[0].url(),
        "--redis_cluster",
        &seeds.join(","),
        "--queue_key",
        "q",
        "--rate_limit",
        "5/10",
        "--tenants",
        &tenants.join(","),
        "--sources",
        "signins,directory_audits",
    ]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !run.stderr.contains("[WARN] the request budget shared"),
        "{}",
        run.stderr
    );
    let mut client = cluster_connection(&seeds);
    let list = |client: &mut redis::cluster::ClusterConnection, key: &str| -> Vec<String> {
        redis::cmd("LRANGE")
            .arg(&[key, "0", "-1"])
            .query(client)
            .unwrap()
    };
    let (start, end) = (origin(now), lagged_end(now) - time::Duration::SECOND);
    for tenant in &tenants {
        assert_same_records(
            list(&mut client, &format!("q:{tenant}")),
            sim.tenant_records(tenant, start, end),
        );
    }
    // The app's window across tenants was claimed: it holds this run's requests.
    let claims: i64 = redis::cmd("ZCARD")
        .arg(format!("msgx:budget:{{*:{SIM_CLIENT}:reports}}"))
        .query(&mut client)
        .unwrap();
    assert_eq!(claims, 12, "one claim per request of 6 tenants × 2 sources");
}

#[test]
fn every_tenant_gets_its_deeper_reads_from_its_own_budget() {
    // Twenty tenants: their first two reads together spend more than one tenant's
    // budget earns a minute, which must not keep any tenant from its deeper read.
    let tenants: Vec<String> = fleet().into_iter().take(20).collect();
    let sim = Sim::start(&["--tenants", &tenants[1..].join(",")]);
    let redis = RedisServer::start();
    let first = minutes_ago(30);
    let mut last = None;
    for tick in 0..5 {
        let now = first + time::Duration::minutes(tick);
        sim.set_clock(now);
        let mut args = redis_args(&sim, &redis, "q", &["--rate_limit", "5/10"]);
        args.extend(strings(&[
            "--tenants",
            &tenants.join(","),
            "--rescan",
            "60,120",
        ]));
        let run = msgx(
            &args,
            &[("MSGX_NOW", &rfc3339(now)), ("MSGX_BUDGET_SPEEDUP", "100")],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            !run.summary_line().contains(" deferred "),
            "tick {tick}: {}",
            run.summary_line()
        );
        last = Some(run);
    }
    let last = last.expect("runs");
    for tenant in &tenants {
        let line = last
            .stderr
            .lines()
            .find(|l| l.contains(&format!("summary of {tenant} signins:")))
            .unwrap_or_else(|| panic!("{tenant}: {}", last.stderr));
        assert!(line.contains(" rescan_behind 60:0,120:0"), "{line}");
    }
}

#[test]
fn two_tenants_throttled_at_once_pause_every_tenant_and_say_so_once() {
    // The app's budget across tenants is overdrawn by someone else (the simulator
    // allows 6 per 4 s in all; this run is told 1000 per 10 s): each tenant's own
    // window is wide, so 429s for two tenants at once must be the app's.
    let tenants: Vec<String> = fleet().into_iter().take(10).collect();
    let sim = Sim::start(&[
        "--tenants",
        &tenants[1..].join(","),
        "--throttle-app",
        "6/4",
    ]);
    let redis = RedisServer::start();
    let now = minutes_ago(5);
    sim.set_clock(now);
    let mut args = redis_args(
        &sim,
        &redis,
        "q",
        &["--rate_limit", "100/10", "--app_rate_limit", "1000/10"],
    );
    args.extend(strings(&[
        "--tenants",
        &tenants.join(","),
        "--max_retries",
        "30",
    ]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(sim.stats()["graph_429_app"].as_u64().unwrap_or(0) > 0);
    assert_eq!(
        run.stderr
            .matches("[WARN] 429s for two tenants at once: the application's budget")
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert_each_tenant_once(
        &sim,
        &redis,
        &tenants,
        origin(now),
        lagged_end(now) - time::Duration::SECOND,
    );
}

/// Runs at `first` with `before`'s tenant flags, then five minutes later with
/// `after`'s, into `q` (one tenant) or `q:{tenant}` (several): the home tenant's
/// records of the whole span are delivered exactly once over the two keys, and the
/// switch is said at INFO naming both keys.
fn switch_layout(before: &[&str], after: &[&str]) {
    let tenants = [SIM_TENANT.to_string(), "b.example".to_string()];
    let (sim, redis) = (fleet_sim(&tenants, &[]), RedisServer::start());
    let first = minutes_ago(10);
    let second = first + time::Duration::minutes(5);
    for (now, flags) in [(first, before), (second, after)] {
        let run = tick(&sim, &redis, "q", now, flags);
        assert_eq!(run.code, 0, "{}", run.stderr);
        if now == second {
            for key in ["{q}", &format!("{{q:{SIM_TENANT}}}")] {
                assert!(
                    !run.stderr
                        .contains(&format!("key {key}:msgx:state: starting a first")),
                    "started over: {}",
                    run.stderr
                );
            }
            run.assert_stderr_has("progress carried over from");
        }
    }
    assert_home_tenant_once(&sim, &redis, first, second);
}

/// The home tenant's records from `first`'s run to `last`'s, once over its keys of
/// both layouts (`q` and `q:{tenant}`).
fn assert_home_tenant_once(
    sim: &Sim,
    redis: &RedisServer,
    first: OffsetDateTime,
    last: OffsetDateTime,
) {
    let mut delivered = redis.list("q");
    delivered.extend(redis.list(&format!("q:{SIM_TENANT}")));
    let end = lagged_end(last) - time::Duration::SECOND;
    assert_same_records(
        delivered,
        sim.tenant_records(SIM_TENANT, origin(first), end),
    );
}

#[test]
fn a_tenant_switched_to_tenants_resumes_from_its_progress() {
    let both = format!("{SIM_TENANT},b.example");
    switch_layout(&[], &["--tenants", &both]);
}

#[test]
fn tenants_switched_back_to_one_tenant_resume_from_its_progress() {
    let both = format!("{SIM_TENANT},b.example");
    switch_layout(&["--tenants", &both], &[]);
}

#[test]
fn a_tenant_switched_to_a_list_of_itself_resumes_from_its_progress() {
    switch_layout(&[], &["--tenants", SIM_TENANT]);
}

#[test]
fn progress_that_names_no_tenant_is_not_given_to_a_guessed_one() {
    // State from before progress named its tenant, then `tenants` of two without
    // `tenant`: whose it is cannot be told, so neither lane starts over silently.
    let tenants = [SIM_TENANT.to_string(), "b.example".to_string()];
    let (sim, redis) = (fleet_sim(&tenants, &[]), RedisServer::start());
    let first = minutes_ago(10);
    let run = tick(&sim, &redis, "q", first, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let _: i64 = query(&redis, &["HDEL", "{q}:msgx:state", "tenant"]);
    let now = first + time::Duration::minutes(5);
    sim.set_clock(now);
    let mut args = redis_args(&sim, &redis, "q", &["--tenants", &tenants.join(",")]);
    let at = args.iter().position(|a| a == "--tenant").expect("--tenant");
    args.drain(at..at + 2);
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has(
        "{q}:msgx:state holds the progress of a one-tenant run that did not record its tenant",
    );
    assert_eq!(redis.len(&format!("q:{SIM_TENANT}")), 0);
    // Naming it for one run carries it over.
    let run = tick(&sim, &redis, "q", now, &["--tenants", &tenants.join(",")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_home_tenant_once(&sim, &redis, first, now);
}
