//! End-to-end exports: which records arrive, how often, byte for byte, per backend.

use std::time::Duration;

use time::Duration as Span;

use crate::common::*;

/// The lagged window msgx-once must export at `now` with these options: its first
/// and last second.
fn lagged(
    now: time::OffsetDateTime,
    timelag: i64,
    streams: i64,
    frame: i64,
) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let end = now - Span::seconds(timelag + 1);
    (end - Span::seconds(streams * frame - 1), end)
}

#[test]
fn lagged_window_lands_in_redis_exactly_once_byte_for_byte() {
    let (sim, redis) = sim_and_redis(&["--rate", "20"]);
    let now = minutes_ago(3);
    let args = redis_args(
        &sim,
        &redis,
        "signins",
        &["--page_size", "50", "--greenlets_count", "3"],
    );
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let (start, end) = lagged(now, 120, 2, 30);
    let expected = sim.records(start, end);
    assert!(expected.len() > 500, "the window should span many pages");
    assert_eq!(run.summary_field("records"), expected.len().to_string());
    assert_same_records(redis.list("signins"), expected);
    assert_eq!(
        run.summary_window(),
        format!("[{} - {}]", rfc3339(start), rfc3339(end))
    );
}

#[test]
fn one_stream_and_one_writer_keep_graphs_order_page_by_page() {
    let (sim, redis) = sim_and_redis(&["--rate", "8"]);
    let since = minutes_ago(5);
    let until = since + Span::seconds(20);
    let mut args = redis_args(&sim, &redis, "ordered", &["--streams", "1"]);
    args.extend(backfill_flags(since, until));
    let run = msgx(
        &args,
        &[
            ("GRAPH_STREAM_FRAME", "10"),
            ("GRAPH_PAGE_SIZE", "7"),
            ("GRAPH_GREENLETS_COUNT", "1"),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    // One stream, one frame; Graph pages newest first.
    let expected: Vec<String> = sim
        .records(since, until - Span::SECOND)
        .into_iter()
        .rev()
        .collect();
    assert!(expected.len() > 14, "several pages");
    assert_eq!(redis.list("ordered"), expected);
}

#[test]
fn real_clock_run_exports_the_window_ending_timelag_before_now() {
    let (sim, redis) = sim_and_redis(&["--rate", "5"]);
    let before = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let run = msgx(
        &redis_args(&sim, &redis, "clock", &["--timelag", "30"]),
        &[],
    );
    let after = time::OffsetDateTime::now_utc();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let window = run.summary_window();
    let candidates: Vec<String> = (0..=(after - before).whole_seconds())
        .map(|s| {
            let (start, end) = lagged(before + Span::seconds(s), 30, 2, 30);
            format!("[{} - {}]", rfc3339(start), rfc3339(end))
        })
        .collect();
    assert!(
        candidates.contains(&window),
        "{window} not in {candidates:?}"
    );
    let start = time::PrimitiveDateTime::parse(
        &window[1..20],
        &time::format_description::well_known::Iso8601::DEFAULT,
    )
    .unwrap()
    .assume_utc();
    assert_same_records(
        redis.list("clock"),
        sim.records(start, start + Span::seconds(59)),
    );
}

#[test]
fn backfill_over_many_frames_exports_exactly_since_to_until() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let since = minutes_ago(20);
    let until = since + Span::seconds(600);
    let mut args = redis_args(
        &sim,
        &redis,
        "backfill",
        &["--stream_frame", "7", "--streams", "3", "--page_size", "13"],
    );
    args.extend(backfill_flags(since, until));
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Cut by streams, not by stream_frame: requests follow the records.
    assert_eq!(
        run.summary_field("ok"),
        "3",
        "600 s in one frame per stream"
    );
    let expected = sim.records(since, until - Span::SECOND);
    let requests = sim.stats()["graph_200"].as_u64().unwrap_or(0) as usize;
    assert!(
        requests <= expected.len().div_ceil(13) + 3,
        "{requests} requests"
    );
    assert_same_records(redis.list("backfill"), expected);
}

#[test]
fn channel_mode_publishes_every_record_to_a_live_subscriber() {
    let (sim, redis) = sim_and_redis(&["--rate", "10"]);
    let mut subscriber = redis.connection();
    subscriber
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe("live").unwrap();

    let now = minutes_ago(3);
    let run = msgx(
        &redis_args(
            &sim,
            &redis,
            "live",
            &["--queue_type", "channel", "--page_size", "100"],
        ),
        &[("MSGX_NOW", &rfc3339(now))],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (start, end) = lagged(now, 120, 2, 30);
    let expected = sim.records(start, end);
    let mut received = Vec::new();
    wait_for(Duration::from_secs(10), || {
        while let Ok(message) = pubsub.get_message() {
            received.push(message.get_payload::<String>().unwrap());
        }
        received.len() >= expected.len()
    });
    assert_same_records(received, expected);
    assert!(
        redis.list("live").is_empty(),
        "channel mode must not fill a list"
    );
}

#[test]
fn log_backend_writes_one_line_per_record_in_the_originals_format() {
    let sim = Sim::start(&["--rate", "2"]);
    let now = minutes_ago(3);
    let mut args = sim.args();
    args.extend(strings(&["--queue_backend", "log"]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (start, end) = lagged(now, 120, 2, 30);
    let expected: Vec<String> = sim
        .records(start, end)
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            format!(
                "[INFO] [{}]: {} - {} - {}/{}",
                v["createdDateTime"].as_str().unwrap(),
                v["userPrincipalName"].as_str().unwrap(),
                v["ipAddress"].as_str().unwrap(),
                v["location"]["countryOrRegion"].as_str().unwrap(),
                v["location"]["city"].as_str().unwrap()
            )
        })
        .collect();
    let logged: Vec<String> = run
        .stderr
        .lines()
        .filter_map(|l| l.find("[INFO] [").map(|at| l[at..].to_string()))
        .collect();
    assert!(!expected.is_empty());
    assert_same_records(logged, expected);
    assert!(run.stdout.is_empty());
}

#[test]
fn file_backend_writes_ndjson_to_stdout_and_nothing_else() {
    let sim = Sim::start(&["--rate", "4"]);
    let now = minutes_ago(3);
    let mut args = sim.args();
    args.extend(strings(&[
        "--queue_backend",
        "file",
        "--log_level",
        "debug",
    ]));
    let run = msgx(&args, &[("MSGX_NOW", &rfc3339(now))]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (start, end) = lagged(now, 120, 2, 30);
    let lines: Vec<String> = run.stdout.lines().map(str::to_string).collect();
    assert_same_records(lines, sim.records(start, end));
}

#[test]
fn file_backend_appends_to_file_path() {
    let sim = Sim::start(&["--rate", "4"]);
    let dir = TempDir::new();
    let path = dir.join("out.ndjson");
    let since = minutes_ago(10);
    let mut args = sim.args();
    args.extend(strings(&[
        "--queue_backend",
        "file",
        "--file_path",
        path.to_str().unwrap(),
    ]));
    for offset in [0, 30] {
        let mut run_args = args.clone();
        let from = since + Span::seconds(offset);
        run_args.extend(backfill_flags(from, from + Span::seconds(30)));
        let run = msgx(&run_args, &[]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stdout.is_empty());
    }
    let written: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_same_records(written, sim.records(since, since + Span::seconds(59)));
}

#[test]
fn an_empty_window_is_a_success() {
    let (sim, redis) = sim_and_redis(&["--rate", "0"]);
    let run = msgx(&redis_args(&sim, &redis, "empty", &[]), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.summary_field("records"), "0");
    assert_eq!(run.summary_field("pages"), "2", "one empty page per frame");
    assert!(redis.list("empty").is_empty());
}

#[test]
fn select_fetches_only_the_named_properties_plus_id_and_created() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let since = minutes_ago(20);
    let until = since + Span::seconds(60);
    let mut args = redis_args(
        &sim,
        &redis,
        "selected",
        &[
            "--select",
            "userPrincipalName,ipAddress",
            "--page_size",
            "50",
        ],
    );
    args.extend(backfill_flags(since, until));
    let run = msgx(&args, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let id_of = |record: &str| -> String {
        let value: serde_json::Value = serde_json::from_str(record).expect("JSON record");
        value["id"].as_str().expect("id").to_string()
    };
    let delivered = redis.list("selected");
    for record in &delivered {
        let value: serde_json::Value = serde_json::from_str(record).expect("JSON record");
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            ["createdDateTime", "id", "ipAddress", "userPrincipalName"]
        );
    }
    let ids: Vec<String> = delivered.iter().map(|r| id_of(r)).collect();
    let expected: Vec<String> = sim
        .records(since, until - Span::SECOND)
        .iter()
        .map(|r| id_of(r))
        .collect();
    assert_same_records(ids, expected);
}
