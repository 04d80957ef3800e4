//! Faults from Graph: transient ones are retried until the data is complete; lasting
//! ones fail their frames, named, with exit 1.

use time::Duration as Span;

use crate::common::*;

fn backfill(
    sim: &Sim,
    redis: &RedisServer,
    key: &str,
    since: time::OffsetDateTime,
    extra: &[&str],
) -> Output {
    let mut args = redis_args(
        sim,
        redis,
        key,
        &["--stream_frame", "20", "--page_size", "25"],
    );
    args.extend(backfill_flags(since, since + Span::seconds(60)));
    args.extend(strings(extra));
    msgx(&args, &[])
}

#[test]
fn throttled_requests_are_retried_after_retry_after_and_nothing_is_lost() {
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--every-429", "3", "--retry-after", "1"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let run = backfill(&sim, &redis, "t429", since, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(
        redis.list("t429"),
        sim.records(since, since + Span::seconds(59)),
    );
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
fn service_unavailable_is_retried_and_nothing_is_lost() {
    let (sim, redis) = (
        Sim::start(&["--rate", "3", "--every-503", "2"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let run = backfill(&sim, &redis, "t503", since, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(
        redis.list("t503"),
        sim.records(since, since + Span::seconds(59)),
    );
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
    assert_eq!(run.summary_field("failed"), "3");
    for i in 0..3 {
        let start = since + Span::seconds(20 * i);
        let span = format!(
            "[{} - {}]",
            rfc3339(start),
            rfc3339(start + Span::seconds(19))
        );
        assert!(
            run.summary_line().contains(&span),
            "{span} not in {}",
            run.summary_line()
        );
        assert!(
            run.stderr
                .contains(&format!("[ERROR] frame {span} incomplete")),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        sim.stats()["graph_503"],
        6,
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
        "4",
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
