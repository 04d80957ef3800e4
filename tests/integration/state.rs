//! Consecutive cron runs with `state auto`: replayed at chosen times (MSGX_NOW and the
//! simulator's clock), their union must be every sign-in of the covered period, once.

use std::time::Duration;

use time::{Duration as Span, OffsetDateTime};

use crate::common::*;

/// Runs `ticks` (seconds after `t0`) in order, each expected to exit 0, and checks that
/// everything from the first window's start to the last window's end arrived once.
fn replay(ticks: &[i64], key: &str) {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    let mut delivered = 0;
    for offset in ticks {
        let run = tick(&sim, &redis, key, t0 + Span::seconds(*offset), &[]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        delivered += run
            .summary_field("delivered")
            .parse::<usize>()
            .expect("count");
    }
    let last = t0 + Span::seconds(*ticks.last().expect("ticks"));
    let expected = sim.records(origin(t0), lagged_end(last) - Span::seconds(1));
    assert!(!expected.is_empty());
    assert_eq!(
        delivered,
        expected.len(),
        "the summaries count each record once"
    );
    assert_same_records(redis.list(key), expected);
}

#[test]
fn on_time_ticks_add_up_to_every_record_once() {
    replay(&[0, 60, 120, 180], "ontime");
}

#[test]
fn a_tick_a_second_late_skips_nothing_and_repeats_nothing() {
    replay(&[0, 61, 120, 181], "late_tick");
}

#[test]
fn five_missed_ticks_are_caught_up_by_the_next_one() {
    replay(&[0, 360], "missed");
}

#[test]
fn the_first_run_exports_the_originals_window_and_stores_where_it_ended() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    let run = tick(&sim, &redis, "first", t0, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let end = lagged_end(t0);
    assert_eq!(
        run.summary_window(),
        format!(
            "[{} - {}]",
            rfc3339(origin(t0)),
            rfc3339(end - Span::seconds(1))
        )
    );
    assert_eq!(run.summary_field("watermark"), rfc3339(end));
    let stored: Vec<Option<i64>> = redis::cmd("HMGET")
        .arg("{first}:msgx:state")
        .arg("watermark")
        .arg("origin")
        .query(&mut redis.connection())
        .expect("state hash");
    assert_eq!(
        stored,
        vec![
            Some(end.unix_timestamp()),
            Some(origin(t0).unix_timestamp())
        ]
    );
    let lock: Option<String> = redis::cmd("GET")
        .arg("{first}:msgx:lock")
        .query(&mut redis.connection())
        .expect("GET");
    assert_eq!(lock, None, "the lock is released");
}

#[test]
fn a_run_that_fails_mid_frame_is_completed_by_the_next_without_duplicates() {
    // Same seed, same records: one simulator fails every second request.
    let flaky = Sim::start(&["--rate", "3", "--every-503", "2"]);
    let good = Sim::start(&["--rate", "3"]);
    let redis = RedisServer::start();
    let t0 = minutes_ago(30);
    flaky.set_clock(t0);
    let small_pages = ["--page_size", "10", "--max_retries", "0"];
    let failed = tick(&flaky, &redis, "resume", t0, &small_pages);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let written = redis.len("resume");
    assert!(written > 0, "the failed run wrote part of a frame first");
    let t1 = t0 + Span::seconds(60);
    let run = tick(&good, &redis, "resume", t1, &small_pages);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let expected = good.records(origin(t0), lagged_end(t1) - Span::seconds(1));
    assert_same_records(redis.list("resume"), expected);
    // The redo is what the failed run did not read, plus the records it had already
    // written of the one second where it stopped (rate 3: a handful).
    let read: usize = run.summary_field("records").parse().expect("count");
    let delivered: usize = run.summary_field("delivered").parse().expect("count");
    assert!(read - delivered <= 10, "{read} read, {delivered} new");
}

#[test]
fn a_catch_up_costs_requests_by_its_records_not_by_its_length() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(150);
    assert_eq!(tick(&sim, &redis, "catchup", t0, &[]).code, 0);
    let (requests_before, reads_before) = (
        sim.stats()["graph_200"].as_u64().unwrap_or(0),
        sim.reads().len(),
    );
    // Two hours later: both passes, each cut into one frame per stream.
    let t1 = t0 + Span::hours(2);
    let run = tick(&sim, &redis, "catchup", t1, &["--page_size", "100"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let requests = sim.stats()["graph_200"].as_u64().unwrap_or(0) - requests_before;
    let reads = &sim.reads()[reads_before..];
    assert!(reads.len() <= 4, "{reads:?}");
    let records: usize = run.summary_field("records").parse().expect("count");
    assert!(records > 20_000);
    assert!(
        requests as usize <= records.div_ceil(100) + reads.len(),
        "{requests} requests for {records} records"
    );
    assert_same_records(
        redis.list("catchup"),
        sim.records(origin(t0), lagged_end(t1) - Span::seconds(1)),
    );
}

/// `runs` runs a minute apart against a simulator where 30 % of sign-ins show up
/// 150 s late; returns the simulator, the delivered records and the runs' times.
fn late_arrivals(rescan: &str, key: &str, runs: i64) -> (Sim, Vec<String>, Vec<OffsetDateTime>) {
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--late", "0.3:150"]),
        RedisServer::start(),
    );
    let t0 = minutes_ago(30);
    let times: Vec<_> = (0..runs).map(|i| t0 + Span::seconds(60 * i)).collect();
    for now in &times {
        let run = tick(&sim, &redis, key, *now, &["--rescan", rescan]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let delivered = redis.list(key);
    (sim, delivered, times)
}

/// A record's createdDateTime.
fn created(record: &str) -> OffsetDateTime {
    let value: serde_json::Value = serde_json::from_str(record).expect("JSON record");
    let text = value["createdDateTime"].as_str().expect("createdDateTime");
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("time")
}

/// What the first reads of `times` saw: each run's new seconds, as visible then.
fn first_reads(sim: &Sim, times: &[OffsetDateTime]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut start = origin(times[0]);
    for now in times {
        let end = lagged_end(*now);
        seen.extend(sim.records_visible(start, end - Span::seconds(1), *now));
        start = end;
    }
    seen
}

#[test]
fn late_sign_ins_are_delivered_once_by_the_second_pass_and_no_second_is_read_thrice() {
    let (sim, delivered, times) = late_arrivals("120", "late_on", 9);
    let (first, last) = (times[0], times[times.len() - 1]);
    // Seconds older than `rescan` past due had their second read, 240 s or more
    // after they were created: every late one (150 s) is visible by then. The newest
    // 120 s had only their first read.
    let second_read = lagged_end(last) - Span::seconds(120);
    let (first_head, first_tail): (Vec<String>, Vec<String>) = first_reads(&sim, &times)
        .into_iter()
        .partition(|r| created(r) < second_read);
    let head = sim.records(origin(first), second_read - Span::seconds(1));
    assert!(
        head.len() > first_head.len(),
        "the second pass found late ones"
    );
    let expected: Vec<String> = head.into_iter().chain(first_tail).collect();
    assert_same_records(delivered, expected);
    let counts = sim.read_counts(origin(first), lagged_end(last) - Span::seconds(1));
    let split = (second_read - origin(first)).whole_seconds() as usize;
    assert!(counts[..split].iter().all(|&c| c == 2), "{counts:?}");
    assert!(counts[split..].iter().all(|&c| c == 1), "{counts:?}");
}

#[test]
fn without_rescan_late_sign_ins_are_lost_as_documented() {
    let (sim, delivered, times) = late_arrivals("0", "late_off", 6);
    // Each run sees exactly what was visible at its own time in its own window.
    let expected = first_reads(&sim, &times);
    let (first, last) = (times[0], times[times.len() - 1]);
    let visible_by_last =
        sim.records_visible(origin(first), lagged_end(last) - Span::seconds(1), last);
    assert!(
        expected.len() < visible_by_last.len(),
        "rescan off loses some"
    );
    assert_same_records(delivered, expected);
}

#[test]
fn of_two_runs_started_at_the_same_moment_one_exits_4_and_writes_nothing() {
    let (sim, redis) = sim_and_redis(&["--rate", "3", "--latency-ms", "300"]);
    let now = minutes_ago(30);
    sim.set_clock(now);
    let args = redis_args(&sim, &redis, "locked", &["--page_size", "10"]);
    let env = [("MSGX_NOW", rfc3339(now))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let runs = [
        Running::start_with_env(&args, &env),
        Running::start_with_env(&args, &env),
    ];
    let mut outputs: Vec<Output> = runs
        .into_iter()
        .map(|r| r.finish(Duration::from_secs(60)))
        .collect();
    outputs.sort_by_key(|o| o.code);
    let codes: Vec<i32> = outputs.iter().map(|o| o.code).collect();
    assert_eq!(
        codes,
        vec![0, 4],
        "{}\n---\n{}",
        outputs[0].stderr,
        outputs[1].stderr
    );
    let refused: Vec<&str> = outputs[1].stderr.lines().collect();
    assert_eq!(refused.len(), 1, "{}", outputs[1].stderr);
    assert!(
        refused[0].contains("another msgx-once run holds the lock {locked}:msgx:lock"),
        "{}",
        refused[0]
    );
    assert_same_records(
        redis.list("locked"),
        sim.records(origin(now), lagged_end(now) - Span::seconds(1)),
    );
}

#[test]
fn a_run_killed_mid_frame_loses_nothing_and_its_successor_repeats_nothing() {
    let (sim, redis) = sim_and_redis(&["--rate", "3", "--latency-ms", "200"]);
    let t0 = minutes_ago(30);
    sim.set_clock(t0);
    let args = redis_args(&sim, &redis, "killed", &["--page_size", "10"]);
    let killed = Running::start_with_env(&args, &[("MSGX_NOW", &rfc3339(t0))]);
    assert!(wait_for(Duration::from_secs(30), || redis.len("killed") > 0));
    killed.signal("KILL");
    let _ = killed.finish(Duration::from_secs(10));
    // Its lock would expire within 30 s; expire it now.
    let _: i64 = redis::cmd("DEL")
        .arg("{killed}:msgx:lock")
        .query(&mut redis.connection())
        .expect("DEL");
    let t1 = t0 + Span::seconds(60);
    let run = tick(&sim, &redis, "killed", t1, &["--page_size", "10"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(
        redis.list("killed"),
        sim.records(origin(t0), lagged_end(t1) - Span::seconds(1)),
    );
}

#[test]
fn state_off_reproduces_the_originals_windows_and_keeps_nothing() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    for now in [t0, t0 + Span::seconds(61)] {
        let run = tick(&sim, &redis, "stateless", now, &["--state", "off"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(
            run.summary_window(),
            format!(
                "[{} - {}]",
                rfc3339(origin(now)),
                rfc3339(lagged_end(now) - Span::seconds(1))
            )
        );
    }
    let kept: Vec<String> = redis::cmd("KEYS")
        .arg("{stateless}:msgx:*")
        .query(&mut redis.connection())
        .expect("KEYS");
    assert!(kept.is_empty(), "{kept:?}");
}

#[test]
fn the_file_backend_keeps_its_watermark_and_seen_ids_in_state_file() {
    let sim = Sim::start(&["--rate", "3", "--late", "0.3:150"]);
    let dir = TempDir::new();
    let (out, state) = (dir.join("out.ndjson"), dir.join("state.json"));
    let t0 = minutes_ago(30);
    let times: Vec<_> = (0..5).map(|i| t0 + Span::seconds(60 * i)).collect();
    for now in &times {
        sim.set_clock(*now);
        let mut args = sim.args();
        args.extend(strings(&["--queue_backend", "file", "--file_path"]));
        args.push(out.display().to_string());
        args.push("--state_file".into());
        args.push(state.display().to_string());
        let run = msgx(&args, &[("MSGX_NOW", &rfc3339(*now))]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let last = times[times.len() - 1];
    let delivered: Vec<String> = std::fs::read_to_string(&out)
        .expect("output file")
        .lines()
        .map(str::to_string)
        .collect();
    // Five runs with the default 600 s rescan: no second read has come due yet.
    assert_same_records(delivered, first_reads(&sim, &times));
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state file")).expect("JSON");
    assert_eq!(stored["watermark"], lagged_end(last).unix_timestamp());
    assert_eq!(stored["origin"], origin(t0).unix_timestamp());
}

#[test]
fn a_backlog_beyond_max_catchup_is_worked_off_oldest_first_over_several_runs() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    let catch_up = ["--max_catchup", "120"];
    assert_eq!(tick(&sim, &redis, "backlog", t0, &catch_up).code, 0);
    // Six minutes later: 360 s behind, 120 s per run.
    let t1 = t0 + Span::seconds(360);
    let mut watermarks = Vec::new();
    for _ in 0..3 {
        let run = tick(&sim, &redis, "backlog", t1, &catch_up);
        assert_eq!(run.code, 0, "{}", run.stderr);
        watermarks.push(run.summary_field("watermark"));
        if watermarks.len() == 1 {
            run.assert_stderr_has("[WARN] 360 s behind");
        }
    }
    let end = lagged_end(t0);
    let expected_marks: Vec<String> = [120, 240, 360]
        .iter()
        .map(|s| rfc3339(end + Span::seconds(*s)))
        .collect();
    assert_eq!(watermarks, expected_marks);
    assert_same_records(
        redis.list("backlog"),
        sim.records(origin(t0), lagged_end(t1) - Span::seconds(1)),
    );
}

#[test]
fn a_corrupt_watermark_fails_loudly_and_writes_nothing() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let _: () = redis::cmd("HSET")
        .arg("{corrupt}:msgx:state")
        .arg("watermark")
        .arg("yesterday")
        .arg("origin")
        .arg("1")
        .query(&mut redis.connection())
        .expect("HSET");
    let run = tick(&sim, &redis, "corrupt", minutes_ago(30), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has(
        "[ERROR] {corrupt}:msgx:state field watermark: \"yesterday\" is not what msgx-once stored",
    );
    assert!(!run.stderr.contains("retry"), "not retried: {}", run.stderr);
    assert_eq!(redis.len("corrupt"), 0);
    assert_eq!(sim.stats()["graph_200"], serde_json::Value::Null);
}

#[test]
fn state_under_the_names_before_the_hash_tag_is_moved_once_and_resumed() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    let first = tick(&sim, &redis, "m", t0, &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    // As an earlier version left it: m:msgx:state and m:msgx:seen.
    let mut connection = redis.connection();
    for purpose in ["state", "seen"] {
        redis::cmd("RENAME")
            .arg(format!("{{m}}:msgx:{purpose}"))
            .arg(format!("m:msgx:{purpose}"))
            .exec(&mut connection)
            .unwrap();
    }
    let t1 = t0 + Span::seconds(60);
    let run = tick(&sim, &redis, "m", t1, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_stderr_has(
        "[INFO] state moved from m:msgx:state and m:msgx:seen to {m}:msgx:state and {m}:msgx:seen",
    );
    assert!(!run.stderr.contains("no watermark"), "{}", run.stderr);
    let old: i64 = redis::cmd("EXISTS")
        .arg(&["m:msgx:state", "m:msgx:seen"])
        .query(&mut connection)
        .unwrap();
    assert_eq!(old, 0);
    assert_same_records(
        redis.list("m"),
        sim.records(origin(t0), lagged_end(t1) - Span::seconds(1)),
    );
}

#[test]
fn a_queue_the_original_filled_is_a_switch_over_not_lost_state() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    // What MsGraphExporter left: records in the list, no trace of msgx-once.
    let earlier: Vec<String> = (0..5)
        .map(|i| format!("{{\"id\":\"original-{i}\"}}"))
        .collect();
    redis::cmd("RPUSH")
        .arg("ms_graph_exporter")
        .arg(&earlier)
        .exec(&mut redis.connection())
        .unwrap();
    let t0 = minutes_ago(30);
    let run = tick(&sim, &redis, "ms_graph_exporter", t0, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warning = format!(
        "[WARN] no watermark at redis://127.0.0.1:{}/0 key {{ms_graph_exporter}}:msgx:state, and \
         the queue ms_graph_exporter holds 5 records that no msgx-once run wrote (a switch-over \
         from MsGraphExporter, or a backfill before the first cron run): starting a first window \
         at {start} — export what lies between the last record there and it with --since <end \
         of the last export> --until {start}",
        redis.port,
        start = rfc3339(origin(t0))
    );
    run.assert_stderr_has(&warning);
    assert!(!run.stderr.contains("ERROR"), "{}", run.stderr);
    let mut expected = earlier;
    expected.extend(sim.records(origin(t0), lagged_end(t0) - Span::seconds(1)));
    assert_same_records(redis.list("ms_graph_exporter"), expected);
}

/// What MsGraphExporter's beat at `beat` pushes into the list `key` (its defaults:
/// timelag 120, streams 2, stream_frame 30, page_size 50): its window `[beat − 180,
/// beat − 121]` (whole seconds, inclusive) as two 30 s frames, each read newest first
/// and pushed a page at a time. `older_frame_pages`: how many pages of the older frame
/// it pushed before it was stopped (None: all).
fn original_beat(
    sim: &Sim,
    redis: &RedisServer,
    key: &str,
    beat: OffsetDateTime,
    older_frame_pages: Option<usize>,
) {
    let end = beat - Span::seconds(121);
    for (frame, pages) in [(0, None), (1, older_frame_pages)] {
        let last = end - Span::seconds(30 * frame);
        let mut records = sim.records(last - Span::seconds(29), last);
        records.reverse();
        for page in records.chunks(50).take(pages.unwrap_or(usize::MAX)) {
            redis::cmd("RPUSH")
                .arg(key)
                .arg(page)
                .exec(&mut redis.connection())
                .unwrap();
        }
    }
}

/// Beats the original ran for in these tests.
const BEATS: i64 = 8;

/// The original ran for [`BEATS`] beats, the last stopped halfway (its older frame's
/// second page never pushed); the list `key` holds what it pushed. Returns the last
/// beat.
fn original_stopped_midway(sim: &Sim, redis: &RedisServer, key: &str) -> OffsetDateTime {
    let first_beat = minutes_ago(45);
    for i in 0..BEATS {
        let stopped = (i == BEATS - 1).then_some(1);
        original_beat(sim, redis, key, first_beat + Span::minutes(i), stopped);
    }
    first_beat + Span::minutes(BEATS - 1)
}

/// The original's first window starts three minutes before its first beat.
fn originals_start(last_beat: OffsetDateTime) -> OffsetDateTime {
    last_beat - Span::minutes(BEATS - 1) - Span::seconds(180)
}

/// A record's createdDateTime, to the second.
fn created_second(record: &str) -> OffsetDateTime {
    created(record).replace_nanosecond(0).unwrap()
}

/// Cron starts msgx-once `after` seconds after the original's last beat, as the
/// README's least-privileged Redis user. The list then holds every record from the
/// original's first window to msgx-once's lagged end once.
fn switch_over(after: i64) -> Output {
    let key = "ms_graph_exporter";
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let last_beat = original_stopped_midway(&sim, &redis, key);
    let now = last_beat + Span::seconds(after);
    // The newest record the original queued, and those of the two windows up to it.
    let queued: Vec<OffsetDateTime> = redis.list(key).iter().map(|r| created_second(r)).collect();
    let newest = *queued.iter().max().unwrap();
    let start = newest - Span::seconds(120);
    let since = queued.iter().filter(|t| **t >= start).count();
    let user = readme_acl_user(&redis, "switch-pw-7Q");
    let run = run_at(&sim, &user, key, now, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warning = format!(
        "[WARN] no watermark at redis://127.0.0.1:{}/0 key {{{key}}}:msgx:state, and the queue \
         {key} holds records no msgx-once run wrote, the newest from {} (a switch-over from \
         MsGraphExporter, or a backfill before the first cron run): this run starts at {} and \
         skips the {since} records queued since (of ",
        redis.port,
        rfc3339(newest),
        rfc3339(start),
    );
    assert!(run.stderr.contains(&warning), "{warning}\n{}", run.stderr);
    assert_eq!(
        run.summary_window(),
        format!(
            "[{} - {}]",
            rfc3339(start),
            rfc3339(lagged_end(now) - Span::seconds(1))
        )
    );
    assert_same_records(
        redis.list(key),
        sim.records(
            originals_start(last_beat),
            lagged_end(now) - Span::seconds(1),
        ),
    );
    run
}

#[test]
fn a_switch_over_after_consumers_took_most_of_the_queue_reads_nothing_they_may_have_had() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let last_beat = original_stopped_midway(&sim, &redis, "drained");
    let written = redis.list("drained");
    // A consumer took all but the last 30 pushes: the older frame's first page's
    // oldest records.
    let _: () = query(&redis, &["LTRIM", "drained", "-30", "-1"]);
    let left: Vec<OffsetDateTime> = redis
        .list("drained")
        .iter()
        .map(|r| created_second(r))
        .collect();
    let newest = *left.iter().max().unwrap();
    let oldest_push = *left.first().unwrap();
    let now = last_beat + Span::seconds(180);
    let start = (oldest_push + Span::seconds(120)).min(lagged_end(now));
    assert!(start < lagged_end(now));
    let run = tick(&sim, &redis, "drained", now, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warning = format!(
        "[WARN] the queue drained holds too few records to vouch for what lies before {start}: \
         consumers may have taken them, so this run reads nothing before it — if the exporter \
         before stopped midway through a window, what it did not write lies in --since {wanted} \
         --until {start} (a backfill of it delivers again what it did write)",
        start = rfc3339(start),
        wanted = rfc3339(newest - Span::seconds(120)),
    );
    assert!(run.stderr.contains(&warning), "{warning}\n{}", run.stderr);
    // What the original wrote (taken or not) and what msgx-once wrote: nothing twice,
    // everything from the start, and nothing missing outside the range named.
    let mut delivered = written;
    delivered.extend(redis.list("drained").split_off(30));
    let expected = sim.records(
        originals_start(last_beat),
        lagged_end(now) - Span::seconds(1),
    );
    let unsure = |r: &String| (newest - Span::seconds(120)..start).contains(&created_second(r));
    let delivered_outside: Vec<String> = delivered.iter().filter(|r| !unsure(r)).cloned().collect();
    let expected_outside: Vec<String> = expected.iter().filter(|r| !unsure(r)).cloned().collect();
    assert_same_records(delivered_outside, expected_outside);
    let mut all = sorted(delivered);
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "nothing delivered twice");
}

#[test]
fn a_switch_over_in_the_originals_last_window_delivers_its_overlap_once_and_fills_its_holes() {
    let run = switch_over(30);
    assert!(!run.stderr.contains("ERROR"), "{}", run.stderr);
}

#[test]
fn a_switch_over_minutes_after_the_original_stopped_exports_the_gap() {
    let run = switch_over(300);
    assert!(!run.stderr.contains("ERROR"), "{}", run.stderr);
}

#[test]
fn lost_state_beside_a_surviving_seen_set_resumes_where_later_runs_would_read_again() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    for offset in [0, 60, 120] {
        let run = tick(&sim, &redis, "lost", t0 + Span::seconds(offset), &[]);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    // The state hash goes (a DEL, an eviction); the seen-set stays. Three ticks missed.
    let _: i64 = query(&redis, &["DEL", "{lost}:msgx:state"]);
    let last = t0 + Span::seconds(300);
    let delivered: i64 = query(&redis, &["LLEN", "lost"]);
    let run = tick(&sim, &redis, "lost", last, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The last run's floor: its window started at the origin, which is not yet past
    // rescan (600 s), so the second read of every second is still to come.
    let warning = format!(
        "[WARN] no watermark at redis://127.0.0.1:{}/0 key {{lost}}:msgx:state, but the \
         seen-set {{lost}}:msgx:seen holds the {delivered} ids delivered since {}: state was \
         lost",
        redis.port,
        rfc3339(origin(t0))
    );
    assert!(run.stderr.contains(&warning), "{warning}\n{}", run.stderr);
    assert!(!run.stderr.contains("ERROR"), "{}", run.stderr);
    assert_same_records(
        redis.list("lost"),
        sim.records(origin(t0), lagged_end(last) - Span::seconds(1)),
    );
}

/// One run at `now` into `key` on the Redis at `url` (the simulator's clock set to it).
fn run_at(sim: &Sim, url: &str, key: &str, now: OffsetDateTime, extra: &[&str]) -> Output {
    sim.set_clock(now);
    let mut args = sim.args();
    args.extend(strings(&["--redis_url", url, "--queue_key", key]));
    args.extend(strings(extra));
    msgx(&args, &[("MSGX_NOW", &rfc3339(now))])
}

#[test]
fn a_backfill_into_a_stream_before_the_first_cron_run_is_taken_over_without_an_overlap() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let user = readme_acl_user(&redis, "stream-pw-4K");
    let (key, stream) = ("ms_graph_exporter", ["--queue_type", "stream"]);
    // Ten minutes of history up to its lagged now, then cron's first run 30 s later:
    // its own first window would have overlapped the backfill's last 30 s.
    let b = minutes_ago(30);
    let since = rfc3339(b - Span::minutes(12));
    let backfill = run_at(
        &sim,
        &user,
        key,
        b,
        &["--since", &since, stream[0], stream[1]],
    );
    assert_eq!(backfill.code, 0, "{}", backfill.stderr);
    let first = b + Span::seconds(30);
    let run = run_at(&sim, &user, key, first, &stream);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_stderr_has("a backfill before the first cron run): this run starts at");
    // Nothing was taken from the stream: no range left unsure.
    assert!(!run.stderr.contains("too few records"), "{}", run.stderr);
    let records: Vec<String> = stream_entries(&redis, key)
        .into_iter()
        .map(|fields| fields[0].1.clone())
        .collect();
    assert!(
        records.len() > 1000,
        "several scan batches: {}",
        records.len()
    );
    assert_same_records(
        records,
        sim.records(b - Span::minutes(12), lagged_end(first) - Span::seconds(1)),
    );
}

/// The Graph ids of shaped records: `properties.id` (azure_monitor) or `metadata.uid`
/// (ocsf).
fn shaped_ids(records: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).expect("JSON");
            let id = match v.get("properties") {
                Some(properties) => &properties["id"],
                None => &v["metadata"]["uid"],
            };
            id.as_str().expect("an id").to_string()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_backfill_in_another_record_format_before_the_first_cron_run_is_taken_over() {
    for (format, queue) in [("azure_monitor", "list"), ("ocsf", "stream")] {
        let (sim, redis) = sim_and_redis(&["--rate", "3"]);
        let user = readme_acl_user(&redis, "shaped-pw-4K");
        let key = "ms_graph_exporter";
        let shape = ["--record_format", format, "--queue_type", queue];
        // Ten minutes of history up to its lagged now, cron's first run 30 s later, and
        // a second one a minute after.
        let b = minutes_ago(30);
        let since = rfc3339(b - Span::minutes(12));
        let mut args = vec!["--since", since.as_str()];
        args.extend(shape);
        let backfill = run_at(&sim, &user, key, b, &args);
        assert_eq!(backfill.code, 0, "{}", backfill.stderr);
        let mut last = b;
        let mut unsure = None;
        for at in [b + Span::seconds(30), b + Span::seconds(90)] {
            let run = run_at(&sim, &user, key, at, &shape);
            assert_eq!(run.code, 0, "{format}: {}", run.stderr);
            assert!(!run.stderr.contains("[ERROR]"), "{format}: {}", run.stderr);
            unsure = unsure.or_else(|| unsure_range(&run.stderr));
            last = at;
        }
        let records: Vec<String> = match queue {
            "list" => redis.list(key),
            _ => stream_entries(&redis, key)
                .into_iter()
                .map(|fields| fields[0].1.clone())
                .collect(),
        };
        // Consumers take a list's oldest pushes, and a backfill pushes its frames side
        // by side: when its oldest push left is within two windows of its newest
        // record, the run cannot vouch for the seconds between and names them in a WARN
        // (a stream says whether entries were taken). Only those may be missing.
        let delivered = shaped_ids(&records);
        let mut once = delivered.clone();
        once.dedup();
        assert_eq!(once, delivered, "{format}: nothing delivered twice");
        let all = sim.records(b - Span::minutes(12), lagged_end(last) - Span::seconds(1));
        for record in &all {
            let v: serde_json::Value = serde_json::from_str(record).expect("JSON");
            let id = v["id"].as_str().expect("id");
            if delivered.binary_search(&id.to_string()).is_ok() {
                continue;
            }
            let created = time::OffsetDateTime::parse(
                v["createdDateTime"].as_str().expect("createdDateTime"),
                &time::format_description::well_known::Rfc3339,
            )
            .expect("a time");
            assert!(
                queue == "list" && unsure.is_some_and(|(from, to)| from <= created && created < to),
                "{format}: {id} of {created} missing outside the range a WARN named ({unsure:?})"
            );
        }
    }
}

/// The `--since/--until` of the WARN that names seconds a takeover cannot vouch for.
fn unsure_range(stderr: &str) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let line = stderr
        .lines()
        .find(|l| l.contains("too few records to vouch"))?;
    let (_, rest) = line.split_once(" lies in --since ")?;
    let (since, rest) = rest.split_once(" --until ")?;
    let until = rest.split_whitespace().next()?;
    let parse =
        |t: &str| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
    Some((parse(since)?, parse(until)?))
}
