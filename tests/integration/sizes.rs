//! Records of Microsoft's sizes: every sign-in lists each enabled Conditional Access
//! policy, so a record is 2 KB in a small tenant and 20 KB in a large one. They
//! arrive byte for byte at every size, and the pages in flight stay within
//! `page_memory_mb` however big the records are.

use std::time::Duration;

use time::Duration as Span;

use crate::common::*;

/// A backfilled minute at `rate` sign-ins/s of records listing `policies` policies.
fn backfill_at_size(
    policies: &str,
    rate: &str,
    key: &str,
    extra: &[&str],
) -> (Sim, RedisServer, Output, Vec<String>) {
    let (sim, redis) = (
        Sim::start(&["--rate", rate, "--ca-policies", policies]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let mut args = redis_args(&sim, &redis, key, extra);
    args.extend(backfill_flags(since, since + Span::seconds(60)));
    let run = msgx(&args, &[]);
    let expected = sim.records(since, since + Span::seconds(59));
    (sim, redis, run, expected)
}

fn mean_bytes(records: &[String]) -> usize {
    records.iter().map(String::len).sum::<usize>() / records.len().max(1)
}

#[test]
fn records_arrive_byte_for_byte_at_every_size() {
    // 2, 50 (the simulator's default: Microsoft's 11.5 KB average) and 95 policies.
    for (policies, low, high) in [
        ("2", 1_500, 2_500),
        ("50", 10_000, 12_500),
        ("95", 18_500, 21_500),
    ] {
        let key = format!("size{policies}");
        let (_sim, redis, run, expected) =
            backfill_at_size(policies, "4", &key, &["--page_size", "50"]);
        assert_eq!(run.code, 0, "{policies} policies: {}", run.stderr);
        let size = mean_bytes(&expected);
        assert!(
            (low..high).contains(&size),
            "{policies} policies: records of {size} bytes"
        );
        assert_same_records(redis.list(&key), expected);
    }
}

/// The run's debug line `page memory: at most X bytes held at once, of Y allowed, in
/// chunks of C bytes; requests in flight: at most F of T fetchers …` → its figures.
struct PageMemory {
    held: u64,
    allowed: u64,
    chunk: u64,
    fetchers: u64,
}

fn page_memory(run: &Output) -> PageMemory {
    let line = run
        .stderr
        .lines()
        .find_map(|l| l.split_once("page memory: at most ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no page memory line in {}", run.stderr));
    let numbers: Vec<u64> = line
        .split([' ', ';', ','])
        .filter_map(|word| word.parse().ok())
        .collect();
    match numbers[..] {
        [held, allowed, chunk, _in_flight, fetchers, ..] => PageMemory {
            held,
            allowed,
            chunk,
            fetchers,
        },
        _ => panic!("page memory line: {line}"),
    }
}

#[test]
fn records_in_flight_stay_within_the_byte_budget_with_big_records() {
    // 20 KB sign-ins, 100 to a page: pages of about 2 MB, six frames at once, ten
    // writers. Read whole, six pages would be 12 MB; read in chunks, the budget holds
    // — down to 1 MiB, a chunk of a few records per request in flight.
    let flags = |mb| {
        vec![
            "--page_size",
            "100",
            "--greenlets_count",
            "10",
            "--streams",
            "6",
            "--stream_frame",
            "10",
            "--rate_limit",
            "0",
            "--log_level",
            "debug",
            "--page_memory_mb",
            mb,
        ]
    };
    for mb in ["4", "1"] {
        let key = format!("big{mb}");
        let (_sim, redis, run, expected) = backfill_at_size("95", "40", &key, &flags(mb));
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_same_records(redis.list(&key), expected.clone());
        let largest_record = expected.iter().map(String::len).max().unwrap_or(0) as u64;
        let largest_page = 100 * largest_record;
        let memory = page_memory(&run);
        assert_eq!(memory.allowed, mb.parse::<u64>().unwrap() << 20);
        assert!(
            memory.chunk < largest_page / 4,
            "chunks of {} bytes: pages are not read in pieces",
            memory.chunk
        );
        // Within the budget, except that a chunk's last record may take it past its
        // room: by a record per request in flight at most.
        assert!(
            memory.held <= memory.allowed + memory.fetchers * (largest_record + 4096),
            "held {} bytes with a budget of {} and records up to {largest_record}",
            memory.held,
            memory.allowed
        );
        assert!(
            memory.held >= largest_record,
            "held {}: nothing counted?",
            memory.held
        );
    }
}

/// A memory cgroup (v1, as the kubelet's runtime sets `limits.memory`) for the
/// processes a test puts in it; removed when dropped.
struct MemoryCgroup(std::path::PathBuf);

impl MemoryCgroup {
    fn new(limit: u64) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::path::PathBuf::from(format!(
            "/sys/fs/cgroup/memory/msgx-test-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot create {} (the test needs root and cgroup v1's memory controller): {e}",
                dir.display()
            )
        });
        let cgroup = MemoryCgroup(dir);
        cgroup.write("memory.limit_in_bytes", &limit.to_string());
        cgroup
    }

    fn write(&self, file: &str, value: &str) {
        std::fs::write(self.0.join(file), value).unwrap_or_else(|e| panic!("{file}: {e}"));
    }

    fn read(&self, file: &str) -> u64 {
        let text = std::fs::read_to_string(self.0.join(file)).expect(file);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{file}: {text}"))
    }

    /// What ran in it stayed within `limit` and never reached it.
    fn assert_never_reached(&self, limit: u64) {
        let (peak, hits) = (
            self.read("memory.max_usage_in_bytes"),
            self.read("memory.failcnt"),
        );
        assert!(peak <= limit, "peak {peak} of {limit}");
        assert_eq!(
            hits, 0,
            "the run reached the limit {hits} times (peak {peak})"
        );
    }

    /// A bash line that moves the shell into the cgroup, then runs msgx-once.
    fn script(&self) -> String {
        format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
            self.0.display()
        )
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A cron run at `t0` into `key`, then one at `t0 + seconds` (a catch-up) inside a
/// memory cgroup limited to `limit`: the catch-up run and the cgroup, to read its peak.
fn catch_up_within(
    limit: u64,
    (sim, redis, key): (&Sim, &RedisServer, &str),
    extra: &[&str],
    t0: time::OffsetDateTime,
    seconds: i64,
) -> (Output, MemoryCgroup) {
    let first = tick(sim, redis, key, t0, extra);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let t1 = t0 + Span::seconds(seconds);
    sim.set_clock(t1);
    let cgroup = MemoryCgroup::new(limit);
    let run = msgx_in_bash(
        &cgroup.script(),
        &redis_args(sim, redis, key, extra),
        &[("MSGX_NOW", &rfc3339(t1))],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    (run, cgroup)
}

/// `limits: {memory: 128Mi}` of a manifest, in bytes.
fn manifest_memory_limit(path: &str) -> u64 {
    let text = std::fs::read_to_string(path).expect(path);
    let limit = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("limits: {memory: "))
        .and_then(|rest| rest.strip_suffix("Mi}"))
        .and_then(|mi| mi.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no `limits: {{memory: NMi}}` in {path}"));
    limit << 20
}

#[test]
fn a_cron_run_of_20_kb_sign_ins_fits_the_cronjobs_memory_limit() {
    // The CronJob's limit, applied as the container runtime applies it; the previous
    // release held 625 MiB catching up 20 KB sign-ins and would be OOM-killed here.
    let limit = manifest_memory_limit(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/k8s/cronjob.yaml"
    ));
    let (sim, redis) = (
        Sim::start(&["--rate", "50", "--ca-policies", "96"]),
        RedisServer::start(),
    );
    let t0 = minutes_ago(10);
    // Four minutes later, as after missed ticks: 200 s of 20 KB sign-ins in one run.
    let (_, cgroup) = catch_up_within(limit, (&sim, &redis, "k"), &["--rate_limit", "0"], t0, 200);
    let t1 = t0 + Span::seconds(200);
    let expected = sim.records(origin(t0), lagged_end(t1) - Span::seconds(1));
    assert!(
        expected.len() > 9_000 && mean_bytes(&expected) > 19_000,
        "{} records of {} bytes",
        expected.len(),
        mean_bytes(&expected)
    );
    assert_same_records(redis.list("k"), expected);
    cgroup.assert_never_reached(limit);
}

#[test]
fn a_page_of_75_kb_records_streams_through_within_the_budget() {
    // 360 policies: records of about 75 KB (Entra allows 195 policies, beta records
    // are twice v1.0's size), 1,000 to a page: 75 MB, three times the default page
    // memory. Read in chunks as it arrives, the page goes through whole, at $top 1000.
    let (sim, redis) = (
        Sim::start(&["--rate", "45", "--ca-policies", "360"]),
        RedisServer::start(),
    );
    let since = minutes_ago(6);
    let mut args = redis_args(
        &sim,
        &redis,
        "big",
        &["--page_size", "1000", "--log_level", "debug"],
    );
    args.extend(backfill_flags(since, since + Span::seconds(30)));
    let run = msgx(&args, &[]);
    let expected = sim.records(since, since + Span::seconds(29));
    assert!(expected.len() > 1000, "{} records", expected.len());
    assert!(
        mean_bytes(&expected) > 70_000,
        "{} bytes",
        mean_bytes(&expected)
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("[WARN]"), "{}", run.stderr);
    assert_same_records(redis.list("big"), expected.clone());
    // Every page asked for 1,000 records.
    let queries = sim.queries("signins");
    assert!(
        !queries.is_empty() && queries.iter().all(|(top, _)| top == "1000"),
        "{queries:?}"
    );
    let largest_record = expected.iter().map(String::len).max().unwrap_or(0) as u64;
    let memory = page_memory(&run);
    assert_eq!(memory.allowed, 24 << 20);
    assert!(
        memory.held <= memory.allowed + memory.fetchers * (largest_record + 4096),
        "held {} bytes of {}",
        memory.held,
        memory.allowed
    );
}

#[test]
fn a_run_killed_between_the_chunks_of_a_page_delivers_nothing_twice_after() {
    // 20 KB sign-ins, 1,000 to a page (20 MB), read in chunks of a few records (1 MiB
    // of page memory): a SIGKILL lands with part of a page written.
    let (sim, redis) = (
        Sim::start(&["--rate", "50", "--ca-policies", "95"]),
        RedisServer::start(),
    );
    let extra = ["--rate_limit", "0", "--page_memory_mb", "1"];
    let t0 = minutes_ago(10);
    let first = tick(&sim, &redis, "k", t0, &extra);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let before = redis.list("k").len();
    let t1 = t0 + Span::seconds(120);
    sim.set_clock(t1);
    let expected = sim.records(origin(t0), lagged_end(t1) - Span::seconds(1));
    let llen = || query::<usize>(&redis, &["LLEN", "k"]);
    let mut run = msgx_spawn(
        &redis_args(&sim, &redis, "k", &extra),
        &[("MSGX_NOW", &rfc3339(t1))],
    );
    let started = wait_for(Duration::from_secs(60), || llen() > before);
    run.kill().expect("SIGKILL");
    run.wait().expect("reaped");
    let at_kill = llen();
    assert!(started, "the run wrote nothing in 60 s");
    assert!(
        at_kill < expected.len(),
        "the run finished ({at_kill} of {}) before it was killed",
        expected.len()
    );
    // The lock of a run that died expires; the next tick at the same time reads the
    // window again and delivers only what the killed run had not.
    query::<i64>(&redis, &["DEL", "{k}:msgx:lock"]);
    let next = tick(&sim, &redis, "k", t1, &extra);
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert_same_records(redis.list("k"), expected);
}

#[test]
fn chunked_and_whole_page_writes_are_identical_byte_for_byte() {
    // Pages of 300 sign-ins of about 2 KB (600 KB): a 1 MiB chunk takes a page whole,
    // 1 MiB of page memory makes chunks of half that. One stream, one writer: the
    // list's order is Graph's, so the two lists must be the same, entry for entry.
    let (sim, redis) = sim_and_redis(&["--rate", "20"]);
    let since = minutes_ago(6);
    let run = |key: &str, mb: &str| {
        let mut args = redis_args(
            &sim,
            &redis,
            key,
            &[
                "--page_size",
                "300",
                "--streams",
                "1",
                "--greenlets_count",
                "1",
                "--rate_limit",
                "0",
                "--log_level",
                "debug",
                "--page_memory_mb",
                mb,
            ],
        );
        args.extend(backfill_flags(since, since + Span::seconds(60)));
        let run = msgx(&args, &[]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        (redis.list(key), page_memory(&run).chunk)
    };
    let (whole, whole_chunk) = run("whole", "4096");
    let (chunked, small_chunk) = run("chunked", "1");
    let expected = sim.records(since, since + Span::seconds(59));
    assert!(expected.len() > 1000 && mean_bytes(&expected) > 1500);
    let page = 300 * expected.iter().map(String::len).max().unwrap_or(0) as u64;
    assert!(
        whole_chunk > page && small_chunk < page,
        "chunks of {whole_chunk} and {small_chunk} bytes, pages up to {page}"
    );
    assert_same_records(whole.clone(), expected);
    assert!(whole == chunked, "the lists differ");
}

#[test]
fn a_fleet_of_40_tenants_catching_up_20_kb_sign_ins_fits_the_fleet_manifests_limit() {
    // The fleet manifest's limit, applied as the container runtime applies it, to one
    // process exporting 40 tenants: what each tenant holds (its token, lock, sink,
    // buffers) adds up with the fleet, and the records in flight must not.
    let limit = manifest_memory_limit(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/k8s/cronjob-fleet.yaml"
    ));
    let mut tenants = vec![SIM_TENANT.to_string()];
    tenants.extend((1..40).map(|i| format!("t{i:02}.example")));
    let sim = Sim::start_fleet(&tenants[1..], &["--rate", "2", "--ca-policies", "95"]);
    let redis = RedisServer::start();
    let list = tenants.join(",");
    let extra = [
        "--tenants",
        &list,
        "--max_retries",
        "20",
        "--log_level",
        "debug",
    ];
    let t0 = minutes_ago(10);
    // Two minutes later, as after a missed tick: every tenant catches up at once.
    let (run, cgroup) = catch_up_within(limit, (&sim, &redis, "q"), &extra, t0, 120);
    let t1 = t0 + Span::seconds(120);
    let mut largest_record = 0;
    for tenant in &tenants {
        let expected = sim.tenant_records(tenant, origin(t0), lagged_end(t1) - Span::seconds(1));
        assert!(
            mean_bytes(&expected) > 19_000,
            "{tenant}: {}",
            mean_bytes(&expected)
        );
        largest_record = largest_record.max(expected.iter().map(String::len).max().unwrap_or(0));
        assert_same_records(redis.list(&format!("q:{tenant}")), expected);
    }
    let memory = page_memory(&run);
    assert!(
        memory.held <= memory.allowed + memory.fetchers * (largest_record as u64 + 4096),
        "held {} bytes of {}",
        memory.held,
        memory.allowed
    );
    cgroup.assert_never_reached(limit);
}
