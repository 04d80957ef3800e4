//! The edges of the shared budget, the hash-tagged state keys and their one-time move,
//! Cluster, Pushgateway, certificates and relative times, tried as a hostile or
//! unlucky production environment would: a stray character in cron's environment,
//! junk in Redis, a rollback and roll forward, a move cut by maxmemory, a resource that
//! pages oldest first. Each must end in a clear error or in every record exactly once.

use std::time::Duration;

use time::{Duration as Span, OffsetDateTime};

use crate::common::*;

/// Redis's clock in milliseconds (the budget's scores are on it).
fn redis_millis(redis: &RedisServer) -> i64 {
    let (seconds, micros): (i64, i64) = query(redis, &["TIME"]);
    seconds * 1000 + micros / 1000
}

// 1. A stray character in a relative time.

#[test]
fn a_stray_character_in_a_relative_time_is_exit_2_naming_the_option() {
    /// (arguments, environment, the option named).
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        (&["--since", "-5ｈ"], &[], "since"),
        (&["--since", "-1€"], &[], "since"),
        (&["--since", "-ｈ"], &[], "since"),
        (&["--since", "-1h", "--until", "-é"], &[], "until"),
        (&[], &[("GRAPH_SINCE", "-2ｄ")], "since"),
    ];
    for (args, env, option) in cases {
        let run = msgx(&offline(args), env);
        assert_eq!(run.code, 2, "{args:?} {env:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        run.assert_stderr_has(format!("msgx-once: error: option {option}: invalid value"));
        run.assert_stderr_has("or an age (-90m, -24h, -2d)");
    }
}

// 2. Credentials in any URL-valued option.

#[test]
fn a_password_in_any_url_option_is_never_shown() {
    let sim = Sim::start(&["--rate", "1"]);
    let closed = free_port();
    let push = format!("http://pushuser:hunter2-push@127.0.0.1:{closed}/");
    let now = minutes_ago(10);
    sim.set_clock(now);
    let args = sim.log_args(&["--metrics_push_url", &push]);
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("[WARN] metrics_push_url"),
        "the push fails: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    let mut printed = args.clone();
    printed.push("--print_config".into());
    let shown = msgx(&printed, &[]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(!shown.stdout.contains("hunter2"), "{}", shown.stdout);
    assert!(
        shown
            .stdout
            .contains("metrics_push_url = \"http://[redacted]@127.0.0.1:"),
        "{}",
        shown.stdout
    );
    // An invalid value of every URL-valued option is quoted without its credentials,
    // whether it came from the command line or the environment.
    let bad = "ftp://someone:hunter2-url@127.0.0.1/x?y#z";
    for option in [
        "graph_url",
        "login_url",
        "msi_endpoint",
        "metrics_push_url",
        "redis_url",
    ] {
        let from_cli = msgx(&offline(&[&format!("--{option}"), bad]), &[]);
        let variable = format!("GRAPH_{}", option.to_ascii_uppercase());
        let from_env = msgx(&offline(&[]), &[(&variable, bad)]);
        for run in [from_cli, from_env] {
            assert_eq!(run.code, 2, "{option}: {}", run.stderr);
            assert!(!run.stderr.contains("hunter2"), "{option}: {}", run.stderr);
            assert!(
                run.stderr.contains("ftp://[redacted]@127.0.0.1"),
                "{option}: {}",
                run.stderr
            );
        }
    }
}

#[test]
fn a_pushgateway_behind_basic_auth_gets_the_credentials_as_a_header() {
    let (base, received) = http_receiver();
    let port = base.rsplit(':').next().unwrap().to_string();
    let sim = Sim::start(&["--rate", "1"]);
    let now = minutes_ago(10);
    sim.set_clock(now);
    let push = format!("http://push%20user:hunter2%3Apush@127.0.0.1:{port}");
    let run = msgx(
        &sim.log_args(&["--metrics_push_url", &push]),
        &[("MSGX_NOW", &rfc3339(now))],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
    let push = received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        push.line.starts_with("POST /metrics/job/msgx_once/"),
        "{}",
        push.line
    );
    let head = push.headers;
    // base64("push user:hunter2:push"), as Pushgateway's basic auth takes it.
    assert!(
        head.iter().any(
            |h| h == "authorization: Basic cHVzaCB1c2VyOmh1bnRlcjI6cHVzaA=="
                || h == "Authorization: Basic cHVzaCB1c2VyOmh1bnRlcjI6cHVzaA=="
        ),
        "{head:?}"
    );
}

// 3. redis_pool_block false.

#[test]
fn without_pool_blocking_every_page_still_gets_a_connection() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let now = minutes_ago(30);
    for block in ["--no-redis_pool_block", "--redis_pool_block=false"] {
        let key = format!("noblock{}", block.len());
        let run = tick(&sim, &redis, &key, now, &[block, "--page_size", "10"]);
        assert_eq!(run.code, 0, "{block}: {}", run.stderr);
        assert_same_records(
            redis.list(&key),
            sim.records(origin(now), lagged_end(now) - Span::seconds(1)),
        );
    }
}

// 4. Queue keys that hold braces, on a real Cluster.

#[test]
fn on_a_cluster_every_queue_key_keeps_its_state_in_the_queues_slot() {
    let nodes = cluster();
    let seeds: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let joined = seeds.join(",");
    let sim = Sim::start(&["--rate", "3"]);
    let mut client = cluster_connection(&seeds);
    let t0 = minutes_ago(30);
    let t1 = t0 + Span::seconds(60);
    for key in [
        "{entra}:signins",
        "audit{x}",
        "k}",
        "k{}",
        "{}k",
        "a{b",
        "x{y}z{w}",
    ] {
        for now in [t0, t1] {
            sim.set_clock(now);
            let mut args = sim.args();
            args.extend(strings(&[
                "--redis_url",
                &nodes[0].url(),
                "--redis_cluster",
                &joined,
                "--queue_key",
                key,
            ]));
            let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
            assert_eq!(run.code, 0, "{key}: {}", run.stderr);
        }
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg(&[key, "0", "-1"])
            .query(&mut client)
            .unwrap();
        assert_same_records(
            list,
            sim.records(origin(t0), lagged_end(t1) - Span::seconds(1)),
        );
    }
}

// 5. The README's ACL covers every path.

#[test]
fn the_readme_acl_user_runs_the_key_move_a_run_a_backfill_and_check() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let mut admin = redis.connection();
    let user_url = readme_acl_user(&redis, "acl-pw-Mv3");
    let key = "ms_graph_exporter";
    let budget = ["--rate_limit", "100/1"];
    let t0 = minutes_ago(30);
    // An earlier version's state, under the names before the hash tag.
    let first = tick(&sim, &redis, key, t0, &budget);
    assert_eq!(first.code, 0, "{}", first.stderr);
    for purpose in ["state", "seen"] {
        redis::cmd("RENAME")
            .arg(format!("{{{key}}}:msgx:{purpose}"))
            .arg(format!("{key}:msgx:{purpose}"))
            .exec(&mut admin)
            .unwrap();
    }
    let as_user = |now: OffsetDateTime, extra: &[&str]| {
        sim.set_clock(now);
        let mut args = sim.args();
        args.extend(strings(&["--redis_url", &user_url, "--queue_key", key]));
        args.extend(strings(&budget));
        args.extend(strings(extra));
        msgx(&args, &[("MSGX_NOW", &rfc3339(now))])
    };
    let t1 = t0 + Span::seconds(60);
    let t2 = t1 + Span::seconds(60);
    let moved = as_user(t1, &[]);
    assert_eq!(moved.code, 0, "{}", moved.stderr);
    moved.assert_stderr_has("state moved from");
    let steady = as_user(t2, &[]);
    assert_eq!(steady.code, 0, "{}", steady.stderr);
    assert_same_records(
        redis.list(key),
        sim.records(origin(t0), lagged_end(t2) - Span::seconds(1)),
    );
    let mut backfill = backfill_flags(origin(t0), lagged_end(t2));
    backfill.extend(strings(&["--sources", "signins,directory_audits"]));
    let refs: Vec<&str> = backfill.iter().map(String::as_str).collect();
    let backfilled = as_user(t2, &refs);
    assert_eq!(backfilled.code, 0, "{}", backfilled.stderr);
    let checked = as_user(t2, &["--check"]);
    assert_eq!(checked.code, 0, "{}\n{}", checked.stdout, checked.stderr);
    for run in [&moved, &steady, &backfilled, &checked] {
        assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
        assert!(!run.stderr.contains("acl-pw-Mv3"));
    }
    // Nothing was refused, not even what a run can do without (the shared budget).
    let refused: Vec<redis::Value> = redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    assert!(refused.is_empty(), "ACL LOG: {refused:?}");
}

// 6. Junk in the shared budget.

#[test]
fn junk_in_the_shared_budget_is_removed_and_every_budget_key_expires() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let claims = "msgx:budget:{sim-tenant.example:sim-client:reports}";
    let pause = format!("{claims}:pause");
    let now_ms = redis_millis(&redis);
    let decade = 10 * 365 * 86_400_000_i64;
    for (score, member) in [
        ((now_ms + decade).to_string(), "junk-1"),
        ((now_ms + decade).to_string(), "junk-2"),
        ((now_ms + decade).to_string(), "junk-3"),
        ((now_ms + decade).to_string(), "junk-4"),
        ("+inf".to_string(), "junk-inf"),
    ] {
        let _: i64 = query(&redis, &["ZADD", claims, &score, member]);
    }
    let _: () = query(&redis, &["SET", &pause, "1", "PX", &decade.to_string()]);
    let now = minutes_ago(30);
    let limits = ["--rate_limit", "5/10", "--deadline", "30"];
    let run = tick(&sim, &redis, "junk", now, &limits);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(
        redis.list("junk"),
        sim.records(origin(now), lagged_end(now) - Span::seconds(1)),
    );
    for member in ["junk-1", "junk-inf"] {
        let score: Option<String> = query(&redis, &["ZSCORE", claims, member]);
        assert_eq!(score, None, "{member} removed");
    }
    let pause_left: i64 = query(&redis, &["PTTL", &pause]);
    assert!(pause_left < 0, "the junk pause is gone: {pause_left}");
    let keys: Vec<String> = query(&redis, &["KEYS", "msgx:budget:*"]);
    assert!(!keys.is_empty());
    for key in keys {
        let left: i64 = query(&redis, &["PTTL", &key]);
        assert!(left > 0, "{key} expires: PTTL {left}");
    }
}

// 7. A shared pause that outlasts the run.

#[test]
fn a_shared_pause_longer_than_the_deadline_is_named_and_its_time_counted() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let pause = "msgx:budget:{sim-tenant.example:sim-client:reports}:pause";
    let _: () = query(&redis, &["SET", pause, "1", "PX", "60000"]);
    let now = minutes_ago(30);
    let run = tick(
        &sim,
        &redis,
        "paused",
        now,
        &["--rate_limit", "5/10", "--deadline", "10"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stderr.contains("raise deadline"), "{}", run.stderr);
    run.assert_stderr_has(format!(
        "the request budget shared with other processes is paused ({pause}"
    ));
    run.assert_stderr_has(" s more, set by ");
    assert_eq!(sim.stats()["graph_200"], serde_json::Value::Null);
    // A backfill waits it out, and its progress lines count the wait.
    let _: () = query(&redis, &["SET", pause, "1", "PX", "3000"]);
    let mut args = redis_args(&sim, &redis, "paused_backfill", &["--rate_limit", "5/10"]);
    args.extend(backfill_flags(
        now - Span::seconds(120),
        now - Span::seconds(60),
    ));
    let run = msgx(&args, &[("MSGX_PROGRESS_SECONDS", "1")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let waited_before_any_request: Vec<f64> = run
        .stderr
        .lines()
        .filter(|l| l.contains("progress:") && l.contains(", requests 0 (throttled 0, waited "))
        .filter_map(|l| {
            let after = l.split("waited ").nth(1)?;
            after.split(' ').next()?.parse().ok()
        })
        .collect();
    assert!(
        waited_before_any_request.iter().any(|w| *w >= 0.5),
        "{waited_before_any_request:?}\n{}",
        run.stderr
    );
}

// 8 and 9. The one-time move of the state: rolled back and forward, or cut halfway.

#[test]
fn state_under_both_names_after_a_rollback_is_merged_and_nothing_arrives_twice() {
    let (sim, redis) = sim_and_redis(&["--rate", "5"]);
    let mut admin = redis.connection();
    let t0 = minutes_ago(40);
    let at = |minute: i64| t0 + Span::minutes(minute);
    for minute in 0..2 {
        assert_eq!(tick(&sim, &redis, "rb", at(minute), &[]).code, 0);
    }
    // What the current names hold after minute 1, saved as an upgrade would find it.
    let saved: Vec<(String, Vec<u8>)> = ["state", "seen"]
        .iter()
        .map(|purpose| {
            let name = format!("{{rb}}:msgx:{purpose}");
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&name).query(&mut admin).unwrap();
            (name, dump)
        })
        .collect();
    // The rolled-back version went on under the old names.
    for minute in 2..5 {
        assert_eq!(tick(&sim, &redis, "rb", at(minute), &[]).code, 0);
    }
    for purpose in ["state", "seen"] {
        redis::cmd("RENAME")
            .arg(format!("{{rb}}:msgx:{purpose}"))
            .arg(format!("rb:msgx:{purpose}"))
            .exec(&mut admin)
            .unwrap();
    }
    for (name, dump) in &saved {
        redis::cmd("RESTORE")
            .arg(name)
            .arg(0)
            .arg(dump.as_slice())
            .exec(&mut admin)
            .unwrap();
    }
    // Rolled forward: both names hold state, the old ones the further progress.
    let run = tick(&sim, &redis, "rb", at(5), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_stderr_has("rb:msgx:state");
    let old: i64 = query(&redis, &["EXISTS", "rb:msgx:state", "rb:msgx:seen"]);
    assert_eq!(old, 0, "the old names are gone once merged");
    assert_eq!(tick(&sim, &redis, "rb", at(6), &[]).code, 0);
    assert_same_records(
        redis.list("rb"),
        sim.records(origin(t0), lagged_end(at(6)) - Span::seconds(1)),
    );
}

#[test]
fn a_move_cut_by_maxmemory_is_resumed_and_nothing_arrives_twice() {
    let sim = Sim::start(&["--rate", "60"]);
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let mut admin = redis.connection();
    let t0 = minutes_ago(30);
    assert_eq!(tick(&sim, &redis, "cut", t0, &[]).code, 0);
    let seen: i64 = query(&redis, &["ZCARD", "{cut}:msgx:seen"]);
    assert!(seen > 2000, "{seen} ids: more than two chunks of the move");
    for purpose in ["state", "seen"] {
        redis::cmd("RENAME")
            .arg(format!("{{cut}}:msgx:{purpose}"))
            .arg(format!("cut:msgx:{purpose}"))
            .exec(&mut admin)
            .unwrap();
    }
    // Room for the lock and the state, and for half the seen-set: the move is cut
    // before all its ids are across.
    let info: String = query(&redis, &["INFO", "memory"]);
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let size: u64 = query(&redis, &["MEMORY", "USAGE", "cut:msgx:seen"]);
    let limit = (used + size / 2).to_string();
    let _: () = query(&redis, &["CONFIG", "SET", "maxmemory", &limit]);
    let t1 = t0 + Span::seconds(60);
    let cut = tick(&sim, &redis, "cut", t1, &[]);
    assert_ne!(cut.code, 0, "{}", cut.stderr);
    cut.assert_stderr_has("OOM");
    let moved: i64 = query(&redis, &["ZCARD", "{cut}:msgx:seen"]);
    assert!(
        moved < seen,
        "cut: {moved} of {seen} ids moved: {}",
        cut.stderr
    );
    let _: () = query(&redis, &["CONFIG", "SET", "maxmemory", "0"]);
    let run = tick(&sim, &redis, "cut", t1, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let old: i64 = query(&redis, &["EXISTS", "cut:msgx:state", "cut:msgx:seen"]);
    assert_eq!(old, 0);
    // The second read of the first window is where the ids of the cut move matter.
    let t2 = t0 + Span::minutes(12);
    let run = tick(&sim, &redis, "cut", t2, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(
        redis.list("cut"),
        sim.records(origin(t0), lagged_end(t2) - Span::seconds(1)),
    );
}

// 10. Progress stored ahead of Microsoft's clock.

#[test]
fn a_watermark_ahead_of_microsofts_clock_is_an_error_naming_the_key_and_the_repair() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    let once = ["--rescan", "0"];
    assert_eq!(tick(&sim, &redis, "ahead", t0, &once).code, 0);
    let good = lagged_end(t0).unix_timestamp().to_string();
    let future = (t0 + Span::hours(1)).unix_timestamp().to_string();
    let _: () = query(
        &redis,
        &["HSET", "{ahead}:msgx:state", "watermark", &future],
    );
    let t1 = t0 + Span::seconds(60);
    for _ in 0..2 {
        let run = tick(&sim, &redis, "ahead", t1, &once);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("[ERROR] redis://127.0.0.1:")
                && run.stderr.contains("key {ahead}:msgx:state: watermark ")
                && run.stderr.contains("is ahead of Microsoft's clock"),
            "{}",
            run.stderr
        );
        run.assert_stderr_has(
            "HSET {ahead}:msgx:state watermark <Unix second of the last export's end>",
        );
    }
    // Repaired as the message says, the next run reads what the damage held back.
    let _: () = query(&redis, &["HSET", "{ahead}:msgx:state", "watermark", &good]);
    let run = tick(&sim, &redis, "ahead", t1, &once);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(
        redis.list("ahead"),
        sim.records(origin(t0), lagged_end(t1) - Span::seconds(1)),
    );
}

// 11. A resource that pages oldest first.

#[test]
fn a_frame_failed_midway_on_an_oldest_first_resource_owes_what_it_did_not_write() {
    for order in [&["--oldest-first"][..], &[]] {
        let mut flaky_flags = vec!["--rate", "5", "--every-503", "7"];
        flaky_flags.extend(order);
        let mut good_flags = vec!["--rate", "5"];
        good_flags.extend(order);
        let flaky = Sim::start(&flaky_flags);
        let good = Sim::start(&good_flags);
        let redis = RedisServer::start();
        let t0 = minutes_ago(30);
        let flags = ["--page_size", "10", "--max_retries", "0", "--rescan", "0"];
        let failed = tick(&flaky, &redis, "order", t0, &flags);
        assert_eq!(failed.code, 1, "{}", failed.stderr);
        assert!(redis.len("order") > 0, "part of a frame was written");
        let t1 = t0 + Span::seconds(60);
        let run = tick(&good, &redis, "order", t1, &flags);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_same_records(
            redis.list("order"),
            good.records(origin(t0), lagged_end(t1) - Span::seconds(1)),
        );
    }
}

// 12. A backfill into the future.

#[test]
fn a_backfill_into_the_future_stops_at_microsofts_now_and_names_the_rest() {
    let sim = Sim::start(&["--rate", "3"]);
    let now = minutes_ago(30);
    sim.set_clock(now);
    let until = now + Span::hours(1);
    let mut args = sim.log_args(&[]);
    args.extend(backfill_flags(now - Span::minutes(5), until));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let end = lagged_end(now);
    assert_eq!(
        run.summary_window(),
        format!(
            "[{} - {}]",
            rfc3339(now - Span::minutes(5)),
            rfc3339(end - Span::seconds(1))
        )
    );
    run.assert_stderr_has(format!(
        "[WARN] --until {} is after what Graph can have yet ({}: Microsoft's clock minus \
             timelag): this backfill stops there; export the rest later with --since {} \
             --until {}",
        rfc3339(until),
        rfc3339(end),
        rfc3339(end),
        rfc3339(until)
    ));
}

// 13. Sharers with different limits.

#[test]
fn sharers_of_a_budget_obey_the_tightest_limit_any_of_them_declared() {
    let (throttled, outputs) = two_processes_at_once(&[], ["10/2", "40/2"]);
    assert!(throttled <= 1, "{throttled} answered 429");
    assert!(
        outputs.iter().any(|o| o.stderr.contains(
            "[WARN] rate_limit 40/2 is looser than 10/2, which another process sharing \
             msgx:budget:{sim-tenant.example:sim-client:reports} declared: obeying 10/2"
        )),
        "{}",
        outputs[1].stderr
    );
}

// 14 and 15. --check spends the shared budget and names a refused password.

#[test]
fn check_of_every_source_spends_the_shared_budget_and_draws_no_429() {
    let mut flags = vec!["--rate", "3"];
    flags.extend(GRAPH_THROTTLES);
    let (sim, redis) = sim_and_redis(&flags);
    let all = ALL_SOURCES;
    let args = redis_args(
        &sim,
        &redis,
        "k",
        &["--check", "--sources", all, "--rate_limit", "5/10"],
    );
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        sim.stats()["graph_429"],
        serde_json::Value::Null,
        "{}",
        run.stdout
    );
}

#[test]
fn check_with_a_wrong_redis_password_names_the_password() {
    let sim = Sim::start(&["--rate", "3"]);
    let redis = RedisServer::start_with(&["--requirepass", "right-pw-7q"]);
    let wrong = format!("redis://:wrong-pw-7q@127.0.0.1:{}/0", redis.port);
    let mut args = sim.args();
    args.extend(strings(&[
        "--redis_url",
        &wrong,
        "--queue_key",
        "k",
        "--check",
    ]));
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "the password (or ACL user and password) in redis_url was refused: set the right \
             one in redis_url or redis_url_file (redis://user:password@host:port/db)"
        ),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("check that Redis runs"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("wrong-pw-7q") && !run.stderr.contains("wrong-pw-7q"));
}

// 16. A queue key that is another source's state key.

#[test]
fn a_queue_key_onto_another_sources_state_is_a_config_error() {
    for (queue_key, mapped, clash) in [
        ("k", "directory_audits={k}:msgx:seen", "{k}:msgx:seen"),
        ("k", "directory_audits=k:msgx:state", "k:msgx:state"),
        ("k", "directory_audits={k}:msgx:lock", "{k}:msgx:lock"),
    ] {
        let run = msgx(
            &offline(&[
                "--sources",
                "signins,directory_audits",
                "--queue_key",
                queue_key,
                "--queue_keys",
                mapped,
            ]),
            &[],
        );
        assert_eq!(run.code, 2, "{mapped}: {}", run.stderr);
        assert!(
            run.stderr.contains("option queue_keys: ") && run.stderr.contains(clash),
            "{mapped}: {}",
            run.stderr
        );
    }
}

// 17. Certificates as people hand them over.

#[test]
fn a_certificate_is_found_not_found_or_matched_to_its_key() {
    let (dir, ca, leaf, leaf_key) = private_ca();
    let (sim, redis) = sim_and_redis(&["--rate", "3", "--client-cert", &leaf]);
    let until = minutes_ago(3);
    let since = until - Span::minutes(1);
    let run_with = |credential: &[&str]| {
        let mut args = sim.args_without_secret();
        args.extend(strings(credential));
        args.extend(strings(&[
            "--redis_url",
            &redis.url(),
            "--queue_key",
            "cert",
        ]));
        args.extend(backfill_flags(since, until));
        msgx(&args, &[])
    };
    let missing = dir.join("missing.pem");
    let run = run_with(&["--client_certificate", missing.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    run.assert_stderr_has(format!(
        "option client_certificate: {} not found",
        missing.display()
    ));
    let run = run_with(&["--client_certificate", dir.path().to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    run.assert_stderr_has(format!(
        "option client_certificate: {} is a directory",
        dir.path().display()
    ));
    // The chain as a CA hands it out: its own certificate first, then the leaf, then
    // the leaf's key.
    let read = |path: &str| std::fs::read_to_string(path).unwrap();
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, read(&ca) + &read(&leaf) + &read(&leaf_key)).unwrap();
    let run = run_with(&["--client_certificate", bundle.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(
        redis.list("cert"),
        sim.records(since, until - Span::seconds(1)),
    );
    // No certificate of the file belongs to the key: refused before any token request.
    let other_key = dir.join("other.key");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        other_key.to_str().unwrap(),
    ]);
    let tokens_before = sim.stats()["token_200"].as_u64().unwrap_or(0);
    let run = run_with(&[
        "--client_certificate",
        &ca,
        "--client_certificate_key",
        other_key.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    run.assert_stderr_has(format!(
        "option client_certificate: no certificate in {ca} belongs to the private key in {}",
        other_key.display()
    ));
    assert_eq!(
        sim.stats()["token_200"].as_u64().unwrap_or(0),
        tokens_before
    );
    assert_eq!(sim.stats()["token_401"], serde_json::Value::Null);
}
