//! Faults from Graph: transient ones are retried until the data is complete; lasting
//! ones fail their frames, named, with exit 1.

use std::time::Duration;

use time::Duration as Span;

use crate::common::*;

fn backfill(
    sim: &Sim,
    redis: &RedisServer,
    key: &str,
    since: time::OffsetDateTime,
    extra: &[&str],
) -> Output {
    backfill_with_env(sim, redis, key, since, extra, &[])
}

/// [`backfill`] with `env` set for msgx-once (test knobs).
fn backfill_with_env(
    sim: &Sim,
    redis: &RedisServer,
    key: &str,
    since: time::OffsetDateTime,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut args = redis_args(
        sim,
        redis,
        key,
        &["--stream_frame", "20", "--page_size", "25"],
    );
    args.extend(backfill_flags(since, since + Span::seconds(60)));
    args.extend(strings(extra));
    msgx(&args, env)
}

/// The run exited 0 and the key holds the backfilled minute, each record once.
fn assert_exported_once(
    run: &Output,
    sim: &Sim,
    redis: &RedisServer,
    key: &str,
    since: time::OffsetDateTime,
) {
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(
        redis.list(key),
        sim.records(since, since + Span::seconds(59)),
    );
}

#[test]
fn throttled_requests_are_retried_after_retry_after_and_nothing_is_lost() {
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--every-429", "3", "--retry-after", "1"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let run = backfill(&sim, &redis, "t429", since, &[]);
    assert_exported_once(&run, &sim, &redis, "t429", since);
    let throttled = sim.stats()["graph_429"].as_u64().unwrap_or(0);
    assert!(
        throttled >= 2,
        "the simulator throttled {throttled} requests"
    );
    assert!(
        run.stderr.contains("TooManyRequests"),
        "each retry is logged"
    );
}

#[test]
fn a_fractional_retry_after_as_graphs_guidance_shows_it_is_honoured() {
    // Retry-After: 0.75 (Graph's throttling guidance shows `2.128`); the backoff of a
    // 429 without one would be 1 ms here, so a client that cannot read the fraction
    // comes back early — the simulator counts every request before the wait is over.
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--every-429", "3", "--retry-after", "0.75"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let run = backfill_with_env(
        &sim,
        &redis,
        "frac429",
        since,
        &["--streams", "1"],
        &[("MSGX_BACKOFF_MS", "1")],
    );
    assert_exported_once(&run, &sim, &redis, "frac429", since);
    let stats = sim.stats();
    assert!(stats["graph_429"].as_u64().unwrap_or(0) >= 2, "{stats}");
    assert_eq!(stats["graph_early"].as_u64().unwrap_or(0), 0, "{stats}");
}

#[test]
fn service_unavailable_is_retried_and_nothing_is_lost() {
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--every-503", "2"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let run = backfill(&sim, &redis, "t503", since, &[]);
    assert_exported_once(&run, &sim, &redis, "t503", since);
    assert!(sim.stats()["graph_503"].as_u64().unwrap_or(0) >= 3);
}

#[test]
fn lasting_failure_fails_every_frame_by_name_with_exit_1() {
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--every-503", "1"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let run = backfill(&sim, &redis, "down", since, &["--max_retries", "1"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    // A minute in one frame per stream.
    assert_eq!(run.summary_field("failed"), "2");
    for i in 0..2 {
        let start = since + Span::seconds(30 * i);
        let span = format!(
            "[{} - {}]",
            rfc3339(start),
            rfc3339(start + Span::seconds(29))
        );
        run.assert_stderr_has(format!("[ERROR] frame {span} incomplete"));
    }
    // The summary names the unread minute as one range, ready to export again.
    let redo = format!(
        " unread [--since {} --until {}]",
        rfc3339(since),
        rfc3339(since + Span::seconds(60))
    );
    assert!(run.summary_line().contains(&redo), "{}", run.summary_line());
    assert_eq!(run.summary_field("requests"), "4");
    assert_eq!(run.summary_field("retries"), "2");
    assert_eq!(
        sim.stats()["graph_503"],
        4,
        "one try and one retry per frame"
    );
    assert!(redis.list("down").is_empty());
}

#[test]
fn the_rate_limit_spaces_requests_across_all_streams() {
    let sim = Sim::start(&["--rate", "1"]);
    let since = minutes_ago(6);
    let mut args = sim.args();
    args.extend(strings(&[
        "--queue_backend",
        "file",
        "--rate_limit",
        "2/1",
        "--streams",
        "6",
        "--stream_frame",
        "1",
    ]));
    args.extend(backfill_flags(since, since + Span::seconds(6)));
    let started = std::time::Instant::now();
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sim.stats()["graph_200"], 6);
    // Six requests at two per second cannot all have gone within two seconds.
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
}

#[test]
fn dropped_connections_and_cut_bodies_are_retried_and_nothing_is_lost() {
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--every-reset", "2"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let run = backfill(&sim, &redis, "reset", since, &[]);
    assert_exported_once(&run, &sim, &redis, "reset", since);
    let stats = sim.stats();
    assert!(stats["graph_reset"].as_u64().unwrap_or(0) >= 1, "{stats}");
    assert!(
        stats["graph_cut_short"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
}

#[test]
fn garbled_pages_are_retried_and_nothing_is_lost() {
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--garbage", "2"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let run = backfill(&sim, &redis, "garbage", since, &[]);
    assert_exported_once(&run, &sim, &redis, "garbage", since);
    assert!(sim.stats()["graph_garbage"].as_u64().unwrap_or(0) >= 2);
    run.assert_stderr_has("malformed page");
}

#[test]
fn a_429_storm_over_four_unpaced_streams_still_delivers_everything() {
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--throttle", "2/1"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let run = backfill(
        &sim,
        &redis,
        "storm",
        since,
        &["--streams", "4", "--stream_frame", "5"],
    );
    assert_exported_once(&run, &sim, &redis, "storm", since);
    assert!(sim.stats()["graph_429"].as_u64().unwrap_or(0) >= 1);
}

#[test]
fn two_second_tokens_are_renewed_and_nothing_is_lost() {
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--token-ttl", "2", "--latency-ms", "250"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let run = backfill(
        &sim,
        &redis,
        "tokens",
        since,
        &["--streams", "1", "--page_size", "10"],
    );
    assert_exported_once(&run, &sim, &redis, "tokens", since);
    let issued = sim.stats()["tokens_issued"].as_u64().unwrap_or(0);
    assert!(
        issued >= 2,
        "{issued} tokens for a run longer than one token"
    );
}

#[test]
fn with_graphs_budget_paced_a_run_of_twenty_pages_gets_at_most_one_429() {
    let (sim, redis) = (
        Sim::start(&["--rate", "1", "--throttle", "5/10"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let expected = sim.records(since, since + Span::seconds(59));
    // Small enough pages for at least 22 requests, whatever this minute holds.
    let page_size = (expected.len() / 22).max(1).to_string();
    let run = backfill(
        &sim,
        &redis,
        "paced",
        since,
        &[
            "--rate_limit",
            "5/10",
            "--streams",
            "4",
            "--page_size",
            &page_size,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(redis.list("paced"), expected);
    let stats = sim.stats();
    assert!(stats["graph_200"].as_u64().unwrap_or(0) >= 22, "{stats}");
    assert!(stats["graph_429"].as_u64().unwrap_or(0) <= 1, "{stats}");
}

#[test]
fn a_foreign_next_link_fails_the_frame_and_gets_no_request() {
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--foreign-next-link"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let mut args = redis_args(&sim, &redis, "foreign", &["--page_size", "10"]);
    args.extend(backfill_flags(since, since + Span::seconds(20)));
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has("refusing to follow @odata.nextLink");
    let span = format!(
        "[{} - {}]",
        rfc3339(since),
        rfc3339(since + Span::seconds(19))
    );
    assert!(run.summary_line().contains(&span), "{}", run.summary_line());
    let stats = sim.stats();
    assert_eq!(
        stats["foreign_requests"],
        serde_json::Value::Null,
        "{stats}"
    );
    // The first page was ours to write — but its last second, which the refused next
    // page would have gone on with, is held back and owed with the rest.
    let first_page = first_page_whole_seconds(&sim, since, since + Span::seconds(19), 10);
    assert_same_records(redis.list("foreign"), first_page);
}

#[test]
fn redis_down_at_start_exits_1_naming_the_host_and_spends_no_graph_request() {
    let sim = Sim::start(&["--rate", "1"]);
    let port = free_port();
    let mut args = sim.args();
    args.extend(strings(&[
        "--redis_url",
        &format!("redis://:Pa55-Hidden@127.0.0.1:{port}/0"),
        "--max_retries",
        "2",
        "--log_level",
        "trace",
    ]));
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let endpoint = format!("redis://127.0.0.1:{port}/0");
    assert!(run.stderr.contains(&format!("{endpoint}: cannot connect")));
    assert_eq!(run.stderr.matches("retry ").count(), 2, "{}", run.stderr);
    assert!(!run.stderr.contains("Pa55-Hidden"), "{}", run.stderr);
    assert_eq!(sim.stats()["graph_200"], serde_json::Value::Null);
}

#[test]
fn redis_killed_and_restarted_mid_run_loses_nothing() {
    let sim = Sim::start(&["--rate", "3", "--latency-ms", "150"]);
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let since = minutes_ago(6);
    let mut args = redis_args(
        &sim,
        &redis,
        "restart",
        &[
            "--stream_frame",
            "10",
            "--page_size",
            "10",
            "--streams",
            "2",
        ],
    );
    args.extend(backfill_flags(since, since + Span::seconds(60)));
    let running = Running::start(&args);
    assert!(wait_for(Duration::from_secs(30), || redis.len("restart") > 0));
    redis.kill();
    assert!(
        wait_for(Duration::from_secs(30), || running
            .stderr()
            .contains("; retry 1/")),
        "{}",
        running.stderr()
    );
    redis.restart();
    let run = running.finish(Duration::from_secs(90));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let delivered = redis.list("restart");
    let expected = sim.records(since, since + Span::seconds(59));
    let mut unique = sorted(delivered.clone());
    unique.dedup();
    // At least once: a page whose reply was lost with the server is written again.
    assert!(
        delivered.len() - unique.len() <= 10,
        "more than one page twice"
    );
    assert_same_records(unique, expected);
}

/// Interrupts a slow backfill once records are arriving, then checks that what was
/// written is exact, that the exit code is the signal's, and that the frames named as
/// failed are exactly what a re-export needs.
fn interrupted_run_names_what_is_missing(signal: &str, code: i32) {
    let (sim, redis) = sim_and_redis(&["--rate", "3", "--latency-ms", "200"]);
    let key = format!("sig{signal}");
    let since = minutes_ago(6);
    let mut args = redis_args(&sim, &redis, &key, &["--page_size", "10", "--streams", "2"]);
    args.extend(backfill_flags(since, since + Span::seconds(120)));
    let running = Running::start(&args);
    assert!(wait_for(Duration::from_secs(30), || redis.len(&key) > 0));
    running.signal(signal);
    let run = running.finish(Duration::from_secs(15));
    assert_eq!(run.code, code, "{}", run.stderr);
    let line = run.summary_line().to_string();
    let unread: Vec<(String, String)> = line
        .split(" [--since ")
        .skip(1)
        .map(|part| {
            let (since, rest) = part.split_once(" --until ").expect("--until");
            (
                since.to_string(),
                rest[..rest.find(']').expect("]")].to_string(),
            )
        })
        .collect();
    assert!(!unread.is_empty(), "{line}");
    let all = sim.records(since, since + Span::seconds(119));
    let delivered = redis.list(&key);
    assert!(delivered.len() < all.len(), "the signal cut the run short");
    assert!(delivered.iter().all(|r| all.contains(r)));
    // Exporting the named ranges again completes the data, each record at most twice
    // (the second where a frame stopped may be in both).
    for (since, until) in &unread {
        let mut again = redis_args(&sim, &redis, &key, &[]);
        again.extend(strings(&["--since", since, "--until", until]));
        assert_eq!(msgx(&again, &[]).code, 0);
    }
    // Only records of an owed range's first or last second are delivered twice (where
    // a chunk stopped mid-second; the summary joins the ranges of adjoining frames, so
    // a frame's first and last second count too): writers finish a frame's chunks in
    // any order, and one written after an unwritten one is not named again.
    let unix = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .expect("an RFC 3339 time")
            .unix_timestamp()
    };
    run.assert_stderr_has(" in 2 frames ");
    let frames = [0, 59, 60, 119].map(|s| (since + Span::seconds(s)).unix_timestamp());
    let boundaries: Vec<i64> = unread
        .iter()
        .flat_map(|(since, until)| [unix(since), unix(until) - 1])
        .chain(frames)
        .collect();
    let mut all_delivered = sorted(redis.list(&key));
    let mut twice: Vec<String> = Vec::new();
    for pair in all_delivered.windows(2) {
        if pair[0] == pair[1] {
            twice.push(pair[0].clone());
        }
    }
    for record in &twice {
        let value: serde_json::Value = serde_json::from_str(record).expect("JSON");
        let created = unix(value["createdDateTime"].as_str().expect("createdDateTime"));
        assert!(
            boundaries.contains(&created),
            "delivered twice outside the boundary seconds {boundaries:?} of {line}: {record}\n{}",
            run.stderr
        );
    }
    all_delivered.dedup();
    assert_same_records(all_delivered, all);
}

#[test]
fn sigterm_mid_run_writes_what_was_fetched_and_exits_143() {
    interrupted_run_names_what_is_missing("TERM", 143);
}

#[test]
fn sigint_mid_run_exits_130() {
    interrupted_run_names_what_is_missing("INT", 130);
}

/// A bearer token as the simulator issues them: `sim.<claims>.<guid>`, the claims
/// base64url JSON (`{"tid"…` starts `eyJ0aWQi`).
fn contains_sim_token(text: &str) -> bool {
    text.contains("sim.eyJ0aWQi")
}

#[test]
fn secrets_stay_out_of_trace_logs_under_every_fault() {
    let sim = Sim::start(&[
        "--rate",
        "3",
        "--every-429",
        "4",
        "--every-503",
        "5",
        "--every-reset",
        "6",
        "--garbage",
        "7",
        "--token-ttl",
        "2",
        "--latency-ms",
        "100",
    ]);
    let password = "Redis-Pw-Secret-93";
    let redis = RedisServer::start_with(&["--requirepass", password]);
    let since = minutes_ago(6);
    let run = backfill(
        &sim,
        &redis,
        "secrets",
        since,
        &["--log_level", "trace", "--streams", "2"],
    );
    assert_exported_once(&run, &sim, &redis, "secrets", since);
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(output.contains("[TRACE]") || output.contains("[DEBUG]"));
    assert!(!output.contains(SIM_SECRET));
    assert!(!output.contains(password));
    assert!(!contains_sim_token(&output), "a bearer token was logged");
}

#[test]
fn a_long_run_logs_its_progress_with_an_eta() {
    let (sim, redis) = sim_and_redis(&["--rate", "3", "--latency-ms", "150"]);
    let since = minutes_ago(10);
    let mut args = redis_args(&sim, &redis, "progress", &["--page_size", "10"]);
    args.extend(backfill_flags(since, since + Span::seconds(120)));
    let run = msgx(&args, &[("MSGX_PROGRESS_SECONDS", "1")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let progress: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("[INFO] progress: frames "))
        .collect();
    assert!(!progress.is_empty(), "{}", run.stderr);
    assert!(
        progress.iter().all(|l| l.contains(" of the window, ETA ")),
        "{progress:?}"
    );
}

#[test]
fn a_cron_run_cut_by_its_deadline_says_how_far_behind_and_the_next_catches_up() {
    let (sim, redis) = sim_and_redis(&["--rate", "3", "--latency-ms", "300"]);
    let now = minutes_ago(30);
    sim.set_clock(now);
    let env = [("MSGX_NOW", rfc3339(now))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = redis_args(
        &sim,
        &redis,
        "cut",
        &["--page_size", "5", "--deadline", "1"],
    );
    let cut = msgx(&args, &env);
    assert_eq!(cut.code, 1, "{}", cut.stderr);
    assert!(
        cut.stderr
            .contains("[WARN] the deadline (1 s) ended this run with ")
            && cut
                .stderr
                .contains(" s behind): the next run reads them first"),
        "{}",
        cut.stderr
    );
    assert!(
        cut.summary_line()
            .contains("(owed: the next run reads them)")
    );
    let next = redis_args(&sim, &redis, "cut", &["--page_size", "5"]);
    assert_eq!(msgx(&next, &env).code, 0);
    let end = now - Span::seconds(120);
    assert_same_records(
        redis.list("cut"),
        sim.records(end - Span::seconds(60), end - Span::seconds(1)),
    );
}

#[test]
fn two_processes_share_one_budget_through_redis() {
    let (throttled, outputs) = two_processes_at_once(&[], ["10/2", "10/2"]);
    assert!(throttled <= 1, "{throttled} answered 429");
    let reported: u64 = outputs
        .iter()
        .map(|o| o.summary_field("throttled").parse::<u64>().expect("count"))
        .sum();
    assert_eq!(reported, throttled, "each summary counts its 429s");
}

#[test]
fn without_the_shared_budget_a_run_paces_itself_alone_and_says_so() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "noeval",
            "on",
            ">noeval-pw-5",
            "~*",
            "&*",
            "+@all",
            "-eval",
            "-evalsha",
        ])
        .query(&mut redis.connection())
        .expect("ACL SETUSER");
    let mut args = sim.args();
    let url = format!("redis://noeval:noeval-pw-5@127.0.0.1:{}/0", redis.port);
    args.extend(strings(&[
        "--redis_url",
        &url,
        "--queue_key",
        "alone",
        "--state",
        "off",
    ]));
    args.extend(strings(&["--rate_limit", "5/10"]));
    let since = minutes_ago(6);
    args.extend(backfill_flags(since, since + Span::seconds(60)));
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| {
            l.contains("[WARN] the request budget shared with other processes is unavailable")
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert_same_records(
        redis.list("alone"),
        sim.records(since, since + Span::seconds(59)),
    );
}
