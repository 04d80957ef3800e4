//! Late and changed sign-ins over replayed cron runs (MSGX_NOW and the simulator's
//! clock, a real redis-server): lateness measured, deeper reads with the budget left,
//! and changed records delivered again only when asked.

use std::collections::BTreeMap;

use time::{Duration as Span, OffsetDateTime};

use crate::common::*;

/// A record's id and createdDateTime.
fn id_and_created(record: &str) -> (String, OffsetDateTime) {
    let value: serde_json::Value = serde_json::from_str(record).expect("JSON record");
    let created = value["createdDateTime"].as_str().expect("createdDateTime");
    let created = OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
        .expect("time");
    (value["id"].as_str().expect("id").to_string(), created)
}

/// The delivered records created in `[start, end)`.
fn created_in(records: &[String], start: OffsetDateTime, end: OffsetDateTime) -> Vec<String> {
    records
        .iter()
        .filter(|r| (start..end).contains(&id_and_created(r).1))
        .cloned()
        .collect()
}

/// How many of the records share an id with an earlier one.
fn repeated_ids(records: &[String]) -> usize {
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for record in records {
        *ids.entry(id_and_created(record).0).or_default() += 1;
    }
    ids.values().map(|n| n - 1).sum()
}

/// The runs of a replay, each asserted to exit 0.
struct Replay {
    sim: Sim,
    redis: RedisServer,
    runs: Vec<(OffsetDateTime, Output)>,
}

const STILL_ARRIVING: &str = "records are still arriving at the deepest read";

impl Replay {
    /// Runs a minute apart from `t0` for `minutes` minutes into list `key`.
    fn every_minute(
        sim: Sim,
        key: &str,
        minutes: i64,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let redis = RedisServer::start();
        let t0 = minutes_ago(3 * 60);
        let mut runs = Vec::new();
        for i in 0..minutes {
            let now = t0 + Span::minutes(i);
            sim.set_clock(now);
            let mut vars = vec![("MSGX_NOW", rfc3339(now))];
            vars.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let run = msgx(&redis_args(&sim, &redis, key, extra), &vars);
            assert_eq!(run.code, 0, "run {i}: {}", run.stderr);
            runs.push((now, run));
        }
        Replay { sim, redis, runs }
    }

    fn t0(&self) -> OffsetDateTime {
        self.runs[0].0
    }

    /// A summary figure summed over the runs (a run without it counts 0: `late`
    /// shows only once a run reads seconds again, `updated` and `deferred` when not 0).
    fn sum(&self, label: &str) -> usize {
        self.runs
            .iter()
            .filter(|(_, run)| run.summary_line().split_whitespace().any(|w| w == label))
            .map(|(_, run)| run.summary_field(label).parse::<usize>().expect("count"))
            .sum()
    }

    /// What the first reads saw: each run's new seconds, as Graph showed them then.
    fn first_reads(&self) -> Vec<String> {
        let mut seen = Vec::new();
        let mut start = origin(self.t0());
        for (now, _) in &self.runs {
            let end = lagged_end(*now);
            seen.extend(
                self.sim
                    .records_visible(start, end - Span::seconds(1), *now),
            );
            start = end;
        }
        seen
    }

    /// How many runs logged the WARN that records still arrive at the deepest read,
    /// asserting that none logged it twice.
    fn runs_still_arriving(&self) -> usize {
        self.runs
            .iter()
            .map(|(_, run)| {
                let times = run.stderr.matches(STILL_ARRIVING).count();
                assert!(times <= 1, "once per run:\n{}", run.stderr);
                times
            })
            .sum()
    }
}

/// 5 % of sign-ins show up 400 s late, 2 % 3,000 s late.
fn tiered_sim() -> Sim {
    Sim::start(&["--rate", "2", "--late", "0.05:400", "--late", "0.02:3000"])
}

#[test]
fn a_read_at_each_rescan_depth_delivers_every_tier_once_and_counts_the_late_ones() {
    // Five minutes of data, replayed until their read at 3,600 s is done.
    let replay = Replay::every_minute(
        tiered_sim(),
        "tiers",
        5 + 62,
        &["--rescan", "600,3600"],
        &[],
    );
    let (sim, t0) = (&replay.sim, replay.t0());
    let delivered = replay.redis.list("tiers");
    assert_eq!(repeated_ids(&delivered), 0, "nothing delivered twice");
    let (start, end) = (origin(t0), origin(t0) + Span::minutes(5));
    let all = sim.records(start, end - Span::seconds(1));
    // The range has both tiers: some are not visible by the read at 600 s.
    let by_600 = sim.records_visible(start, end - Span::seconds(1), end + Span::seconds(780));
    assert!(by_600.len() < all.len() && !by_600.is_empty());
    assert_same_records(created_in(&delivered, start, end), all);
    // Each second of the range was read three times: when due, at 600 s, at 3,600 s.
    let counts = sim.read_counts(start, end - Span::seconds(1));
    assert!(counts.iter().all(|&c| c == 3), "{counts:?}");
    // `late` counts exactly what the first reads did not see.
    assert_eq!(
        replay.sum("late"),
        delivered.len() - replay.first_reads().len()
    );
    assert!(replay.sum("late") > 0);
}

#[test]
fn with_the_default_rescan_the_latest_tier_is_missed_and_the_warn_says_so() {
    let replay = Replay::every_minute(tiered_sim(), "tiers_default", 5 + 13, &[], &[]);
    let (sim, t0) = (&replay.sim, replay.t0());
    let last = replay.runs.last().expect("runs").0;
    let delivered = replay.redis.list("tiers_default");
    let (start, end) = (origin(t0), origin(t0) + Span::minutes(5));
    // Delivered: what was visible by the read at 600 s, i.e. all but the +3,000 s tier.
    let visible = sim.records_visible(start, end - Span::seconds(1), last);
    let all = sim.records(start, end - Span::seconds(1));
    assert!(
        visible.len() < all.len(),
        "the +3,000 s tier is not visible yet"
    );
    assert_same_records(created_in(&delivered, start, end), visible);
    assert_eq!(
        replay.sum("late"),
        delivered.len() - replay.first_reads().len()
    );
    // The read at 600 s keeps finding the +400 s tier: every run that does says so.
    let warned = replay.runs_still_arriving();
    assert!(warned >= 5, "{warned} runs warned");
    let (_, run) = replay
        .runs
        .iter()
        .find(|(_, run)| run.stderr.contains(STILL_ARRIVING))
        .expect("a WARN");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains(STILL_ARRIVING))
        .expect("line");
    assert!(line.contains("[WARN]"), "{line}");
    assert!(line.contains("(rescan depth 600 s)"), "{line}");
    assert!(
        line.contains("read deeper: rescan 600,7200 (GRAPH_RESCAN)"),
        "{line}"
    );
}

#[test]
fn deeper_reads_spend_only_what_the_first_two_leave_and_say_how_far_behind_they_are() {
    // 200 sign-ins/s: 12 pages a minute per read, 24 for the first two of Graph's 30.
    let sim = Sim::start(&["--rate", "200"]);
    let minutes = 28;
    let replay = Replay::every_minute(
        sim,
        "deep_budget",
        minutes,
        // The default budget (5 per 10 s) instead of the tests' none; its windows
        // pass 200 times faster in real time, per minute of data it is the same.
        &["--rescan", "600,1200", "--rate_limit", "5/10"],
        &[("MSGX_BUDGET_SPEEDUP", "200")],
    );
    let mut deep_behind = Vec::new();
    for (now, run) in &replay.runs {
        // The first reads are never behind, nor the 600 s reads.
        assert_eq!(
            run.summary_field("watermark"),
            rfc3339(lagged_end(*now)),
            "{}",
            run.summary_line()
        );
        let behind = run.summary_field("rescan_behind");
        let (at_600, at_1200) = behind
            .strip_prefix("600:0,1200:")
            .map(|rest| ("0", rest))
            .unwrap_or_else(|| panic!("{}", run.summary_line()));
        assert_eq!(at_600, "0");
        deep_behind.push(at_1200.parse::<i64>().expect("seconds"));
        // Within Graph's 30 requests a minute of data.
        let requests: usize = run.summary_field("requests").parse().expect("count");
        assert!(requests <= 30, "{}", run.summary_line());
    }
    // The 1,200 s read started once its seconds were due, and falls behind.
    let last = *deep_behind.last().expect("runs");
    assert!(last > 0, "{deep_behind:?}");
    assert!(replay.sum("deferred") > 0);
    // Nothing lost, nothing twice: every record of the replay was read when due.
    let end = lagged_end(replay.runs.last().expect("runs").0);
    let delivered = replay.redis.list("deep_budget");
    assert_eq!(repeated_ids(&delivered), 0, "nothing delivered twice");
    assert_same_records(
        delivered,
        replay
            .sim
            .records(origin(replay.t0()), end - Span::seconds(1)),
    );
}

/// 10 % of sign-ins gain an MFA result 300 s after creation: after their first read,
/// before their second.
fn changing_sim() -> Sim {
    Sim::start(&["--rate", "3", "--changed", "0.1:300"])
}

#[test]
fn with_signin_updates_a_changed_sign_in_is_delivered_again_whole_and_no_other() {
    let replay = Replay::every_minute(
        changing_sim(),
        "updates_on",
        3 + 12,
        &["--signin_updates", "true"],
        &[],
    );
    let (sim, t0) = (&replay.sim, replay.t0());
    let last = replay.runs.last().expect("runs").0;
    let (start, end) = (origin(t0), origin(t0) + Span::minutes(3));
    let before = sim.records_as_of(start, end - Span::seconds(1), start);
    let after = sim.records_as_of(start, end - Span::seconds(1), last);
    let changed: Vec<String> = after
        .iter()
        .filter(|r| !before.contains(r))
        .cloned()
        .collect();
    assert!(!changed.is_empty());
    assert!(
        changed
            .iter()
            .all(|r| r.contains("MFA completed in Azure AD"))
    );
    let delivered = replay.redis.list("updates_on");
    let expected: Vec<String> = before.iter().chain(&changed).cloned().collect();
    assert_same_records(created_in(&delivered, start, end), expected);
    assert_eq!(replay.sum("updated"), repeated_ids(&delivered));
    assert_eq!(replay.sum("late"), 0, "a change is not a late record");
}

#[test]
fn without_signin_updates_every_sign_in_is_delivered_once_as_first_seen() {
    let replay = Replay::every_minute(changing_sim(), "updates_off", 3 + 12, &[], &[]);
    let (sim, t0) = (&replay.sim, replay.t0());
    let (start, end) = (origin(t0), origin(t0) + Span::minutes(3));
    let delivered = replay.redis.list("updates_off");
    assert_eq!(repeated_ids(&delivered), 0);
    assert_same_records(
        created_in(&delivered, start, end),
        sim.records_as_of(start, end - Span::seconds(1), start),
    );
}

#[test]
fn a_depth_more_than_its_length_behind_drops_those_seconds_with_a_warn_naming_them() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let now = minutes_ago(3 * 60);
    let end = lagged_end(now);
    let unix = |t: OffsetDateTime| t.unix_timestamp().to_string();
    // A deployment whose read at 900 s was starved: it still owes a minute an hour
    // old, more than 900 s past its due time; every other read is up to date.
    let (owed_start, owed_end) = (
        end - Span::hours(1),
        end - Span::hours(1) + Span::seconds(60),
    );
    let deeper = format!(
        "900@{}@{}-{}",
        unix(end - Span::seconds(900 + 60)),
        unix(owed_start),
        unix(owed_end - Span::seconds(1))
    );
    let _: () = query(
        &redis,
        &[
            "HSET",
            "{dropped}:msgx:state",
            "watermark",
            &unix(end - Span::seconds(60)),
            "origin",
            &unix(end - Span::hours(3)),
            "rescanned",
            &unix(end - Span::seconds(600 + 60)),
            "owed_first",
            "",
            "owed_second",
            "",
            "deeper",
            &deeper,
        ],
    );
    let args = ["--rescan", "600,900"];
    let run = tick(&sim, &redis, "dropped", now, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warning = format!(
        "signins: the read at rescan depth 900 s fell more than 900 s behind: 60 s get no \
         read at that depth — [--since {} --until {}]",
        rfc3339(owed_start),
        rfc3339(owed_end)
    );
    run.assert_stderr_has(&warning);
    assert!(run.stderr.contains("[WARN]"));
    // Not read, and no longer owed: the next run neither reads nor names them.
    let overlaps = |reads: &[(i64, i64)]| {
        reads
            .iter()
            .any(|(lo, hi)| *lo < owed_end.unix_timestamp() && *hi >= owed_start.unix_timestamp())
    };
    assert!(!overlaps(&sim.reads()), "{:?}", sim.reads());
    assert_eq!(run.summary_field("rescan_behind"), "600:0,900:0");
    let next = tick(&sim, &redis, "dropped", now + Span::minutes(1), &args);
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert!(!next.stderr.contains("fell more than"), "{}", next.stderr);
    assert!(!overlaps(&sim.reads()));
}
