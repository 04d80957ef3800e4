//! Nothing lost under hostile input and unplanned faults: a sink that fails, a script
//! that fails halfway, a host clock that jumps, state that vanishes, a Graph that pages
//! for ever or refuses, records without ids, attacker-typed fields, foreign numbers
//! that overflow. Each test replays cron runs (MSGX_NOW + the simulator's clock) and
//! compares what arrived with the simulator's oracle.

use std::time::Duration;

use time::{Duration as Span, OffsetDateTime};

use crate::common::*;

/// Every record a first run at `first` and the runs after it up to `last` must deliver.
fn expected(sim: &Sim, first: OffsetDateTime, last: OffsetDateTime) -> Vec<String> {
    sim.records(origin(first), lagged_end(last) - Span::seconds(1))
}

/// Cron runs at one fixed `now` with the file or log backend and a state file.
struct FileRuns {
    sim: Sim,
    dir: TempDir,
    now: OffsetDateTime,
    /// The output file, for runs that write to one.
    out: std::path::PathBuf,
}

impl FileRuns {
    fn start() -> Self {
        let sim = Sim::start(&["--rate", "3"]);
        let now = minutes_ago(30);
        sim.set_clock(now);
        let dir = TempDir::new();
        let out = dir.join("out.ndjson");
        FileRuns { sim, dir, now, out }
    }

    /// The flags of a run with `backend` writing to `file_path`.
    fn args(&self, backend: &str, file_path: &str) -> Vec<String> {
        let mut args = self.sim.args();
        let state = self.dir.join("state.json");
        args.extend(strings(&[
            "--queue_backend",
            backend,
            "--file_path",
            file_path,
            "--state_file",
            state.to_str().expect("path"),
            "--page_size",
            "10",
        ]));
        args
    }

    /// A run writing to `out`.
    fn run(&self) -> Output {
        let out = self.out.to_str().expect("path");
        msgx(&self.args("file", out), &[("MSGX_NOW", &rfc3339(self.now))])
    }

    /// A run under `script` (see [`msgx_in_bash`]).
    fn run_in_bash(&self, script: &str, args: &[String]) -> Output {
        msgx_in_bash(script, args, &[("MSGX_NOW", &rfc3339(self.now))])
    }

    fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join("state.json")).expect("state file");
        serde_json::from_str(&text).expect("state JSON")
    }

    /// Every record the window holds.
    fn expected(&self) -> Vec<String> {
        expected(&self.sim, self.now, self.now)
    }
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

// 1. A file sink that cannot write marks nothing delivered.

#[test]
fn a_full_device_marks_no_record_delivered_and_the_next_run_delivers_them() {
    let runs = FileRuns::start();
    let failed = msgx(
        &runs.args("file", "/dev/full"),
        &[("MSGX_NOW", &rfc3339(runs.now))],
    );
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    failed.assert_stderr_has("/dev/full");
    let run = runs.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(lines(&runs.out), runs.expected());
}

/// A pipe cannot say what its reader took: pages it accepted count as delivered. One
/// whose reader has gone fails the page, and nothing of it is marked delivered.
#[test]
fn a_closed_stdout_pipe_marks_no_record_delivered() {
    let runs = FileRuns::start();
    let piped = runs.run_in_bash(
        r#""$0" "$@" | (exec <&-); exit "${PIPESTATUS[0]}""#,
        &runs.args("file", "-"),
    );
    assert_eq!(piped.code, 1, "{}", piped.stderr);
    let run = runs.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(lines(&runs.out), runs.expected());
}

#[test]
fn a_disk_that_fills_mid_run_leaves_whole_lines_and_loses_nothing() {
    let runs = FileRuns::start();
    // A 40 KiB file size limit stands in for a full disk: writes past it fail (EFBIG),
    // the one that crosses it is cut short.
    let limited = runs.run_in_bash(
        r#"trap "" XFSZ; ulimit -f 40; exec "$0" "$@""#,
        &runs.args("file", runs.out.to_str().expect("path")),
    );
    assert_eq!(limited.code, 1, "{}", limited.stderr);
    let text = std::fs::read_to_string(&runs.out).expect("output");
    assert!(!text.is_empty(), "some pages fit");
    assert!(text.ends_with('\n'), "no torn last record");
    let all = runs.expected();
    assert!(
        lines(&runs.out).len() < all.len(),
        "the limit cut the run short"
    );
    for line in lines(&runs.out) {
        assert!(all.contains(&line), "a whole record: {line}");
    }
    let run = runs.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(lines(&runs.out), all);
}

// 15. The log sink fails its frames when stderr cannot be written.

#[test]
fn a_log_sink_whose_stderr_is_full_fails_and_the_next_run_logs_every_record() {
    let runs = FileRuns::start();
    let args = runs.args("log", "-");
    let full = runs.run_in_bash(r#"exec "$0" "$@" 2>/dev/full"#, &args);
    assert_eq!(full.code, 1);
    let window = format!(
        "{}-{}",
        origin(runs.now).unix_timestamp(),
        lagged_end(runs.now).unix_timestamp() - 1
    );
    let state = runs.state();
    assert_eq!(
        state["owed_first"],
        window.as_str(),
        "the whole window is owed"
    );
    assert_eq!(state["seen"], serde_json::json!({}), "nothing marked seen");
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(runs.now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let logged = run
        .stderr
        .lines()
        .filter(|l| l.contains("[INFO] ["))
        .count();
    assert_eq!(logged, runs.expected().len());
}

// 2. and 7. The dedup script writes nothing unless all of it can be written.

/// A run into queue `queue` while `bad_key` holds a string where a `kind` belongs:
/// exit 1 naming the key, `untouched` still holds (the script wrote nothing); once the
/// key is deleted the next run delivers every record once.
fn wrong_type_then_fixed(
    queue: &str,
    bad_key: &str,
    kind: &str,
    untouched: impl Fn(&RedisServer) -> bool,
) {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let now = minutes_ago(30);
    let _: () = query(&redis, &["SET", bad_key, "not a list or zset"]);
    let failed = tick(&sim, &redis, queue, now, &[]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let refusal = format!("WRONGTYPE\": key {bad_key} holds a string, not a {kind}");
    failed.assert_stderr_has(&refusal);
    assert!(untouched(&redis), "the failed script wrote something");
    let _: () = query(&redis, &["DEL", bad_key]);
    let run = tick(&sim, &redis, queue, now, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(redis.list(queue), expected(&sim, now, now));
}

#[test]
fn a_queue_key_of_the_wrong_type_leaves_no_id_marked_seen() {
    wrong_type_then_fixed("wq", "wq", "list", |redis| {
        query::<i64>(redis, &["EXISTS", "{wq}:msgx:seen"]) == 0
    });
}

#[test]
fn a_seen_set_of_the_wrong_type_leaves_nothing_pushed() {
    wrong_type_then_fixed("ws", "{ws}:msgx:seen", "zset", |redis| redis.len("ws") == 0);
}

#[test]
fn a_full_redis_refuses_pages_and_every_record_arrives_once_memory_is_freed() {
    let sim = Sim::start(&["--rate", "40"]);
    let redis =
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let now = minutes_ago(30);
    let pages = ["--page_size", "20"];
    let failed = tick(&sim, &redis, "oom", now, &pages);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    failed.assert_stderr_has("OOM");
    let info: String = query(&redis, &["INFO", "memory"]);
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    // Over the limit by at most a page or so (20 records of ~1.4 KB), not by megabytes.
    assert!(used < (2 << 20) + (256 << 10), "used_memory {used}");
    // What was refused is owed to the next run — or, if Redis was too full to store
    // the run's progress too, the watermark is still where the run started.
    let (watermark, owed): (i64, String) = query(
        &redis,
        &["HMGET", "{oom}:msgx:state", "watermark", "owed_first"],
    );
    assert!(
        watermark == origin(now).unix_timestamp() || !owed.is_empty(),
        "watermark {watermark} moved on and nothing is owed"
    );
    let _: () = query(&redis, &["CONFIG", "SET", "maxmemory", "0"]);
    let run = tick(&sim, &redis, "oom", now, &pages);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(redis.list("oom"), expected(&sim, now, now));
}

// 3. A host clock that jumps ahead cannot move the watermark into the future.

#[test]
fn a_host_clock_a_day_ahead_is_bounded_by_microsofts_and_loses_nothing() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    sim.set_clock(t0);
    let ahead = t0 + Span::days(1);
    let args = redis_args(&sim, &redis, "skew", &[]);
    let jumped = msgx(&args, &[("MSGX_NOW", &rfc3339(ahead))]);
    assert_eq!(jumped.code, 0, "{}", jumped.stderr);
    assert!(
        jumped.stderr.contains("[WARN] the host clock (")
            && jumped.stderr.contains("s ahead of Microsoft's"),
        "{}",
        jumped.stderr
    );
    // Microsoft's Date has whole seconds: its clock may be up to a second later.
    let bounded = t0 + Span::seconds(1);
    assert_eq!(
        jumped.summary_field("watermark"),
        rfc3339(lagged_end(bounded))
    );
    let last = t0 + Span::seconds(120);
    for now in [t0 + Span::seconds(60), last] {
        let run = tick(&sim, &redis, "skew", now, &[]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    assert_same_records(
        redis.list("skew"),
        sim.records(origin(bounded), lagged_end(last) - Span::seconds(1)),
    );
}

// 4. Lost state is reported; runs resume where the seen-set shows they got to.

#[test]
fn a_redis_restarted_without_persistence_gets_a_warning_naming_the_backfill() {
    let (sim, mut redis) = (Sim::start(&["--rate", "3"]), RedisServer::start());
    let t0 = minutes_ago(30);
    let first = tick(&sim, &redis, "lost", t0, &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    first.assert_stderr_has("[WARN] no watermark at");
    redis.kill();
    redis.restart();
    let t1 = t0 + Span::seconds(60);
    let run = tick(&sim, &redis, "lost", t1, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warning = format!(
        "[WARN] no watermark at redis://127.0.0.1:{}/0 key {{lost}}:msgx:state: starting a first \
         window at {}; if this is not the first run, state was lost — backfill the gap with \
         --since <end of the last export> --until {}",
        redis.port,
        rfc3339(origin(t1)),
        rfc3339(origin(t1))
    );
    run.assert_stderr_has(&warning);
}

#[test]
fn a_lost_watermark_beside_a_seen_set_from_before_its_floor_mark_is_an_error_but_loses_nothing() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    assert_eq!(tick(&sim, &redis, "gone", t0, &[]).code, 0);
    let queued = redis.len("gone");
    // As a version before the floor mark left it, then the state hash went.
    let _: () = query(&redis, &["DEL", "{gone}:msgx:state"]);
    let _: () = query(&redis, &["ZREM", "{gone}:msgx:seen", "msgx floor"]);
    let oldest: Vec<(String, i64)> = query(
        &redis,
        &["ZRANGE", "{gone}:msgx:seen", "0", "0", "WITHSCORES"],
    );
    let oldest = OffsetDateTime::from_unix_timestamp(oldest[0].1).unwrap();
    let t1 = t0 + Span::seconds(60);
    let run = tick(&sim, &redis, "gone", t1, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(queued > 0);
    let error = format!(
        "[ERROR] no watermark at redis://127.0.0.1:{}/0 key {{gone}}:msgx:state, but the seen-set \
         {{gone}}:msgx:seen holds {queued} delivered ids, the oldest from {start}: state was \
         lost; this run resumes at {start} and skips what was delivered — seconds before \
         {start} that the lost state still owed (a failed frame's, a second read) cannot be \
         known (the set predates its floor mark): if earlier summaries named unread ranges \
         before {start}, backfill them",
        redis.port,
        start = rfc3339(oldest)
    );
    run.assert_stderr_has(&error);
    // The run exported from there and stored a watermark: the next one is normal, and
    // nothing was lost or delivered twice.
    let t2 = t1 + Span::seconds(60);
    assert_eq!(tick(&sim, &redis, "gone", t2, &[]).code, 0);
    assert_same_records(
        redis.list("gone"),
        sim.records(origin(t0), lagged_end(t2) - Span::seconds(1)),
    );
}

// 5. The deadline holds on every path, and a Graph that pages for ever is stopped.

#[test]
fn no_request_starts_after_the_deadline_even_unpaced_and_paging_for_ever() {
    let (sim, redis) = sim_and_redis(&["--rate", "3", "--endless-paging", "--latency-ms", "200"]);
    let now = minutes_ago(30);
    sim.set_clock(now);
    let args = redis_args(
        &sim,
        &redis,
        "endless",
        &["--deadline", "2", "--state", "off"],
    );
    let running = Running::start_with_env(&args, &[("MSGX_NOW", &rfc3339(now))]);
    let run = running.finish(Duration::from_secs(60));
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has("run deadline reached");
    // Two streams, 200 ms a request, 2 s: at most 2 × (10 + 1) requests.
    let requests = sim.stats()["graph_200"].as_u64().unwrap_or(0);
    assert!(requests <= 22, "{requests} requests");
}

#[test]
fn a_frame_that_pages_beyond_what_its_seconds_can_hold_fails_by_name() {
    let (sim, redis) = sim_and_redis(&["--rate", "3", "--endless-paging"]);
    let now = minutes_ago(30);
    sim.set_clock(now);
    let extra = [
        "--stream_frame",
        "1",
        "--page_size",
        "1000",
        "--state",
        "off",
    ];
    let run = msgx(
        &redis_args(&sim, &redis, "pages", &extra),
        &[("MSGX_NOW", &rfc3339(now))],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has(
        "it would be page 21 of the frame, more than the 20 its length can need (Graph \
             keeps sending nextLinks)",
    );
    // Two 1 s frames, 20 pages each at most (1 s × 10,000 records / 1000 + 10).
    assert_eq!(sim.stats()["graph_200"], 40);
}

// 6. One bad record costs at most that record's deduplication.

#[test]
fn records_without_usable_ids_are_delivered_once_and_hold_nothing_up() {
    for damage in [
        "no_id",
        "null_id",
        "number_id",
        "no_created",
        "bad_created",
        "not_object",
    ] {
        let (sim, redis) = sim_and_redis(&["--rate", "5", "--damage", damage]);
        let t0 = minutes_ago(30);
        let last = t0 + Span::seconds(120);
        let mut unkeyed = 0;
        for now in [t0, t0 + Span::seconds(60), last] {
            let run = tick(&sim, &redis, "bad", now, &["--page_size", "20"]);
            assert_eq!(run.code, 0, "{damage}: {}", run.stderr);
            assert!(!run.stderr.contains("write failed"), "{}", run.stderr);
            if run.stderr.contains(" unkeyed ") {
                unkeyed += run
                    .summary_field("unkeyed")
                    .parse::<usize>()
                    .expect("count");
                let error = run
                    .stderr
                    .lines()
                    .find(|l| l.contains("[ERROR] frame ["))
                    .expect("an ERROR per bad record");
                assert!(
                    error.contains(" page ")
                        && error.contains(" record ")
                        && error.contains("delivered as Graph sent it"),
                    "{error}"
                );
            }
        }
        let all = expected(&sim, t0, last);
        let damaged = all.iter().filter(|r| !is_sound(r)).count();
        assert!(
            damaged > 0 && unkeyed >= damaged,
            "{damage}: {damaged} damaged, {unkeyed} unkeyed"
        );
        assert_same_records(redis.list("bad"), all);
    }
}

/// A record with a string id and a createdDateTime of this century.
fn is_sound(record: &str) -> bool {
    let value: serde_json::Value = serde_json::from_str(record).unwrap_or_default();
    value["id"].is_string()
        && value["createdDateTime"]
            .as_str()
            .is_some_and(|t| t.starts_with("20"))
}

// 9. Attacker-typed fields cannot forge log lines.

#[test]
fn attacker_typed_fields_stay_inside_their_own_log_line() {
    let sim = Sim::start(&["--rate", "5", "--hostile"]);
    let now = minutes_ago(30);
    sim.set_clock(now);
    let mut args = sim.args();
    args.extend(strings(&["--queue_backend", "log", "--state", "off"]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let all = expected(&sim, now, now);
    let typed = all.iter().filter(|r| r.contains("forged line")).count();
    assert!(typed > 0, "the window has attacker-typed sign-ins");
    for bad in ['\r', '\u{1b}', '\u{2028}', '\u{85}'] {
        assert!(!run.stderr.contains(bad), "{bad:?} reached the log");
    }
    let lines: Vec<&str> = run.stderr.lines().collect();
    for line in &lines {
        let level = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            line.starts_with("20") && level.starts_with('[') && level.ends_with(']'),
            "a line that is no log event: {line:?}"
        );
    }
    let records = lines.iter().filter(|l| l.contains("[INFO] [")).count();
    assert_eq!(records, all.len(), "one line per record");
    let forged = lines.iter().filter(|l| l.contains("forged line")).count();
    assert_eq!(forged, typed, "each typed name stays in its record's line");
    let summaries = lines.iter().filter(|l| is_summary(l)).count();
    assert_eq!(summaries, 1, "the typed city forges no summary");
}

// 10. and 11. Foreign numbers neither overflow nor surprise.

#[test]
fn a_retry_after_of_centuries_ends_at_the_deadline_without_a_panic() {
    let (sim, redis) = sim_and_redis(&[
        "--rate",
        "3",
        "--every-429",
        "1",
        "--retry-after",
        "9300000000000000000",
    ]);
    let now = minutes_ago(30);
    sim.set_clock(now);
    let run = msgx(
        &redis_args(&sim, &redis, "ra", &["--state", "off"]),
        &[("MSGX_NOW", &rfc3339(now))],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run.assert_stderr_has("run deadline reached; last error");
    assert_eq!(run.summary_field("failed"), "2");
}

#[test]
fn odd_token_lifetimes_are_used_within_bounds_or_named() {
    for (expires_in, code, warns) in [
        ("18446744073709551615", 0, true),
        ("0", 0, true),
        ("-1", 0, true),
        ("3599.5", 0, false),
        (r#""3599""#, 0, false),
    ] {
        let (sim, redis) = sim_and_redis(&["--rate", "3", "--expires-in", expires_in]);
        let now = minutes_ago(30);
        sim.set_clock(now);
        let run = msgx(
            &redis_args(
                &sim,
                &redis,
                "ttl",
                &["--state", "off", "--page_size", "10"],
            ),
            &[("MSGX_NOW", &rfc3339(now))],
        );
        assert_eq!(run.code, code, "{expires_in}: {}", run.stderr);
        assert_eq!(
            run.stderr.contains("[WARN] token response: expires_in"),
            warns,
            "{}",
            run.stderr
        );
        // Many pages, one token: even a 0 s lifetime is used for 5 s.
        assert!(sim.stats()["graph_200"].as_u64().unwrap_or(0) > 10);
        assert_eq!(sim.stats()["tokens_issued"], 1, "{expires_in}");
        assert_same_records(redis.list("ttl"), expected(&sim, now, now));
    }
    let sim = Sim::start(&["--expires-in", r#""soon""#]);
    let run = msgx(&sim.args(), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has(r#"token response: expires_in "soon" is not a number of seconds"#);
}

// 12. A 403 stops the run at once and says what to grant.

#[test]
fn a_403_stops_all_requests_exits_3_and_names_the_fix() {
    for (code, fix) in [
        (
            "Authorization_RequestDenied",
            "grant the application permission AuditLog.Read.All (admin consent)",
        ),
        (
            "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
            "the tenant needs an Entra ID P1/P2 licence",
        ),
    ] {
        let (sim, redis) = sim_and_redis(&["--deny", code]);
        let now = minutes_ago(30);
        sim.set_clock(now);
        // A 10-minute backfill of 30 s frames: 20 frames, one 403 is enough.
        let mut args = redis_args(&sim, &redis, "denied", &["--streams", "1"]);
        args.extend(backfill_flags(
            lagged_end(now) - Span::seconds(600),
            lagged_end(now),
        ));
        let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
        assert_eq!(run.code, 3, "{}", run.stderr);
        run.assert_stderr_has(fix);
        assert_eq!(sim.stats()["graph_403"], 1, "one request, then none");
    }
}

// 13. A Redis user without script rights is told which, and the lock is freed.

#[test]
fn a_redis_user_without_eval_gets_the_acl_to_add_and_leaves_no_lock() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let _: () = query(
        &redis,
        &[
            "ACL",
            "SETUSER",
            "msgx",
            "on",
            ">msgx-pass-81",
            "~*",
            "&*",
            "+@all",
            "-eval",
            "-evalsha",
            "-eval_ro",
            "-evalsha_ro",
        ],
    );
    let now = minutes_ago(30);
    sim.set_clock(now);
    let mut args = sim.args();
    let url = format!("redis://msgx:msgx-pass-81@127.0.0.1:{}/0", redis.port);
    args.extend(strings(&["--redis_url", &url, "--queue_key", "acl"]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has("NoPerm: this user has no permissions to run the 'evalsha' command");
    run.assert_stderr_has(
        "lacks the right to run evalsha: add it with ACL SETUSER <user> +evalsha",
    );
    assert!(!run.stderr.contains("msgx-pass-81"));
    assert_eq!(
        query::<i64>(&redis, &["EXISTS", "{acl}:msgx:lock"]),
        0,
        "lock released"
    );
}

// 14. A nextLink back to the first page is not followed.

#[test]
fn a_next_link_to_the_same_page_is_never_followed() {
    let sim = Sim::start(&["--rate", "3", "--next-link-loop"]);
    let now = minutes_ago(30);
    sim.set_clock(now);
    let mut args = sim.args();
    args.extend(strings(&[
        "--queue_backend",
        "file",
        "--state",
        "off",
        "--page_size",
        "10",
    ]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has("it was already followed in this frame");
    // The first page of each of the two frames, each once — but the last second of
    // each, which the refused next page would have gone on with, held back.
    let records: Vec<String> = run.stdout.lines().map(str::to_string).collect();
    let end = lagged_end(now) - Span::SECOND;
    let mut expected =
        first_page_whole_seconds(&sim, end - Span::seconds(59), end - Span::seconds(30), 10);
    expected.extend(first_page_whole_seconds(
        &sim,
        end - Span::seconds(29),
        end,
        10,
    ));
    assert_same_records(records, expected);
    assert_eq!(sim.stats()["graph_200"], 2);
}

#[test]
fn a_host_clock_stepped_back_is_said_and_exports_nothing_twice() {
    // Runs at T, then with the host an hour behind (an NTP step, a VM resumed) while
    // Microsoft's clock went on: not damaged state, nothing re-delivered, exit 0.
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    assert_eq!(tick(&sim, &redis, "back", t0, &[]).code, 0);
    let delivered = redis.len("back");
    let t1 = t0 + Span::minutes(1);
    sim.set_clock(t1);
    let behind = t1 - Span::hours(1);
    let args = redis_args(&sim, &redis, "back", &[]);
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(behind))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("damaged"), "{}", run.stderr);
    run.assert_stderr_has(format!(
        "[WARN] the host clock ({}) is 3600 s behind Microsoft's",
        rfc3339(behind)
    ));
    assert_eq!(redis.len("back"), delivered, "{}", run.stderr);
    // The clock fixed, the next tick goes on where the first left off.
    let t2 = t1 + Span::minutes(1);
    assert_eq!(tick(&sim, &redis, "back", t2, &[]).code, 0);
    assert_same_records(
        redis.list("back"),
        sim.records(origin(t0), lagged_end(t2) - Span::seconds(1)),
    );
}

#[test]
fn an_interrupted_backfills_unread_ranges_are_exactly_what_it_did_not_write() {
    // Issue 31.5: SIGINT a backfill while pages are arriving, then export the ranges
    // its summary names as unread, as an operator would: every record once. A page
    // of 40 holds a few seconds of 20 sign-ins/s, so a stop lands mid-frame, with a
    // second's records on both sides of what was written.
    let (sim, redis) = (
        Sim::start(&["--rate", "20", "--latency-ms", "150"]),
        RedisServer::start(),
    );
    let since = minutes_ago(12);
    let until = since + Span::seconds(240);
    let flags = ["--page_size", "40", "--rate_limit", "0", "--streams", "2"];
    let mut args = redis_args(&sim, &redis, "b", &flags);
    args.extend(backfill_flags(since, until));
    let run = Running::start(&args);
    let llen = || query::<usize>(&redis, &["LLEN", "b"]);
    assert!(wait_for(Duration::from_secs(60), || llen() > 400));
    run.signal("INT");
    let run = run.finish(Duration::from_secs(60));
    assert_eq!(run.code, 130, "{}", run.stderr);
    let expected = sim.records(since, until - Span::SECOND);
    assert!(
        llen() < expected.len(),
        "the backfill finished before the stop"
    );
    // `unread [--since A --until B] [--since C --until D]`, each exported again.
    let line = run.summary_line();
    let unread = line
        .split(" unread ")
        .nth(1)
        .unwrap_or_else(|| panic!("no unread ranges: {line}"));
    let ranges: Vec<&str> = unread
        .split('[')
        .skip(1)
        .filter_map(|r| r.split(']').next())
        .collect();
    assert!(!ranges.is_empty(), "{line}");
    for range in ranges {
        let mut again = redis_args(&sim, &redis, "b", &flags);
        again.extend(range.split(' ').map(str::to_string));
        let rerun = msgx(&again, &[]);
        assert_eq!(rerun.code, 0, "{range}: {}", rerun.stderr);
    }
    assert_same_records(redis.list("b"), expected);
}
