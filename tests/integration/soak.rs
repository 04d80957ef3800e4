//! The nemesis: many cron ticks of a two-tenant, two-source deployment against msgx-sim
//! and a real redis-server (AOF, `appendfsync always`: a restart loses nothing it
//! acknowledged), each tick drawing faults from a seeded generator — Graph's 429s
//! (every Retry-After form), 503s, resets, cut-off pages, slow pages, a token endpoint
//! that fails, a 403 for one source of one tenant, the process SIGKILLed or SIGTERMed
//! at a random instant, Redis killed and restarted mid-run or out of memory for a tick,
//! a missed tick, two runs at once, the host clock stepping either way, a tenant
//! removed for a tick — then clean ticks until every second has had all its reads.
//! One oracle at the end: every tenant × source holds every record of the settled
//! range exactly once and nothing that is not a record of its span; and along the way,
//! every exit code one that the fault allows, no panic, no 429 that the budget should
//! have prevented, no metrics counter going down.
//!
//! A failure prints the seed, the schedule and the command that replays it
//! (`scripts/soak.sh --seed S --ticks N`). CI runs a few fixed seeds and one fresh one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use time::{Duration as Span, OffsetDateTime};

use crate::common::*;

/// The second tenant of the deployment (the simulator's home tenant is the first).
const OTHER: &str = "b.example";
/// `rescan`: a second's last read is this long after it is due.
const RESCAN: i64 = 240;
/// The simulator's late tiers (share:seconds), all within `RESCAN`.
const LATE: [&str; 2] = ["0.1:70", "0.05:200"];
/// Every source exported, with the time field its records are windowed by.
const SOURCES: [(&str, &str); 2] = [
    ("signins", "createdDateTime"),
    ("directory_audits", "activityDateTime"),
];

/// What a tick does besides running msgx-once.
#[derive(Debug, Clone, PartialEq)]
enum Fault {
    None,
    /// msgx-sim started with these flags for the tick.
    Graph(Vec<String>),
    /// `--deny TENANT/SOURCE`: a 403 for one source of one tenant.
    Forbidden,
    /// SIGKILL or SIGTERM after this many milliseconds.
    Kill(u64),
    Term(u64),
    /// redis-server killed after this many milliseconds and started again.
    RedisRestart(u64),
    /// Redis refusing writes (maxmemory) for the tick.
    RedisFull,
    /// No run this minute.
    Missed,
    /// Two runs at once.
    Twice,
    /// The host clock this many seconds off Microsoft's.
    Clock(i64),
    /// The other tenant left out of the configuration for the tick.
    TenantRemoved,
    /// Directory audits left out of the configuration for the tick.
    SourceRemoved,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("clean"),
            Fault::Graph(flags) => write!(f, "graph {}", flags.join(" ")),
            Fault::Forbidden => write!(f, "403 for {OTHER} directory_audits"),
            Fault::Kill(ms) => write!(f, "SIGKILL at {ms} ms"),
            Fault::Term(ms) => write!(f, "SIGTERM at {ms} ms"),
            Fault::RedisRestart(ms) => write!(f, "redis killed at {ms} ms and restarted"),
            Fault::RedisFull => f.write_str("redis out of memory"),
            Fault::Missed => f.write_str("missed tick"),
            Fault::Twice => f.write_str("two runs at once"),
            Fault::Clock(s) => write!(f, "host clock {s:+} s"),
            Fault::TenantRemoved => write!(f, "{OTHER} removed for the tick"),
            Fault::SourceRemoved => f.write_str("directory_audits removed for the tick"),
        }
    }
}

impl Fault {
    /// The kind, for the figures.
    fn kind(&self) -> &'static str {
        match self {
            Fault::None => "clean",
            Fault::Graph(flags) => match flags.first().map(String::as_str) {
                Some("--every-429") => "graph 429",
                Some("--every-503") => "graph 503",
                Some("--every-reset") => "connection reset",
                Some("--garbage") => "truncated page",
                Some("--latency-ms") => "slow pages",
                Some("--fail-tokens") => "token endpoint failing",
                _ => "graph",
            },
            Fault::Forbidden => "403 one source",
            Fault::Kill(_) => "SIGKILL",
            Fault::Term(_) => "SIGTERM",
            Fault::RedisRestart(_) => "redis restarted",
            Fault::RedisFull => "redis full",
            Fault::Missed => "missed tick",
            Fault::Twice => "two runs",
            Fault::Clock(_) => "clock step",
            Fault::TenantRemoved => "tenant removed",
            Fault::SourceRemoved => "source removed",
        }
    }

    /// The exit codes this fault may end a run with (-1: killed by a signal).
    fn allowed(&self) -> &'static [i32] {
        match self {
            Fault::None
            | Fault::Clock(_)
            | Fault::TenantRemoved
            | Fault::SourceRemoved
            | Fault::Missed => &[0],
            // Retried within the run, or left owed when the retries ran out.
            Fault::Graph(_) | Fault::RedisRestart(_) | Fault::RedisFull => &[0, 1],
            Fault::Forbidden => &[3],
            Fault::Kill(_) => &[0, -1],
            Fault::Term(_) => &[0, 143],
            // The second run finds the lock of the first.
            Fault::Twice => &[0, 4],
        }
    }
}

/// SplitMix64: the schedule's only source of randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The faults of `ticks` ticks drawn from `seed`, by weight. The first tick is clean:
/// a deployment whose very first run dies has no progress to resume, and starts over
/// (said at WARN), which is not what the soak is about.
fn schedule(seed: u64, ticks: usize) -> Vec<Fault> {
    let mut rng = Rng(seed);
    let retry_after = ["1", "0.5", "2.128", "0"];
    (0..ticks)
        .map(|i| {
            if i == 0 {
                return Fault::None;
            }
            let flags = |list: &[&str]| Fault::Graph(strings(list));
            match rng.below(40) {
                0..=11 => Fault::None,
                12..=13 => {
                    let form = retry_after[rng.below(retry_after.len() as u64) as usize];
                    flags(&["--every-429", "3", "--retry-after", form])
                }
                14..=15 => flags(&["--every-503", "3"]),
                16..=17 => flags(&["--every-reset", "3"]),
                18..=19 => flags(&["--garbage", "4"]),
                20 => flags(&["--latency-ms", "400"]),
                21 => flags(&["--fail-tokens", "2"]),
                22..=23 => Fault::Forbidden,
                24..=25 => Fault::Kill(rng.below(1500)),
                26..=27 => Fault::Term(rng.below(1500)),
                28..=29 => Fault::RedisRestart(rng.below(800)),
                30 => Fault::RedisFull,
                31..=32 => Fault::Missed,
                33..=34 => Fault::Twice,
                35..=36 => Fault::Clock([-90, 90, -3600][rng.below(3) as usize]),
                37..=38 => Fault::TenantRemoved,
                _ => Fault::SourceRemoved,
            }
        })
        .collect()
}

/// What a soak found: its figures, or what went wrong where.
pub struct Soaked {
    pub ticks: usize,
    pub faults: BTreeMap<&'static str, usize>,
    pub records: usize,
}

/// The deployment under test.
struct Deployment {
    seed: u64,
    redis: RedisServer,
    dir: TempDir,
    throttled_429: u64,
}

impl Deployment {
    fn metrics_path(&self) -> String {
        self.dir.join("msgx.prom").to_string_lossy().into_owned()
    }

    /// The simulator of one tick: the deployment's records (same seed, tenants,
    /// rate, late tiers), Graph's budgets, and `extra` faults.
    fn sim(&self, extra: &[String]) -> Sim {
        let seed = self.seed.to_string();
        let latency = ["--latency-ms", "40"];
        let mut flags = vec![
            "--tenants",
            OTHER,
            "--seed",
            &seed,
            "--rate",
            "2",
            "--late",
            LATE[0],
            "--late",
            LATE[1],
            // Graph's budgets, 5 / 10 s per tenant and 122 / 10 s per app, on the clock
            // msgx-once is told runs ten times faster (MSGX_BUDGET_SPEEDUP).
            "--throttle",
            "5/1",
            "--throttle-app",
            "122/1",
        ];
        if !extra.iter().any(|f| f == "--latency-ms") {
            flags.extend(latency);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        flags.extend(&extra);
        Sim::start(&flags)
    }

    fn args(&self, sim: &Sim, tenants: &[&str], sources: &[&str]) -> Vec<String> {
        let mut args = redis_args(sim, &self.redis, "q", &[]);
        // The shipped pacing: 5 / 10 s per tenant (sped up tenfold with the simulator's).
        let at = args
            .iter()
            .position(|a| a == "--rate_limit")
            .expect("rate_limit");
        args[at + 1] = "5/10".into();
        args.extend(strings(&[
            "--tenants",
            &tenants.join(","),
            "--sources",
            &sources.join(","),
            "--rescan",
            &RESCAN.to_string(),
            "--metrics_file",
            &self.metrics_path(),
            "--max_retries",
            "6",
        ]));
        args
    }

    /// Waits until no lock of a killed run is left (it expires by itself, 30 s).
    fn wait_for_locks(&self) {
        wait_for(Duration::from_secs(40), || {
            let locks: Vec<String> = query(&self.redis, &["KEYS", "*:msgx:lock"]);
            locks.is_empty()
        });
    }
}

/// Environment of a run at `now` as the host sees it.
fn env(now: OffsetDateTime) -> Vec<(&'static str, String)> {
    vec![
        ("MSGX_NOW", rfc3339(now)),
        ("MSGX_BUDGET_SPEEDUP", "10".into()),
        ("MSGX_BACKOFF_MS", "20".into()),
    ]
}

fn run_env<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Series of a metrics file by key, counters only (names ending in `_total`, and the
/// late histogram's buckets, sum and count).
fn counters(path: &str) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(k, _)| {
            let name = k.split('{').next().unwrap_or_default();
            name.ends_with("_total") || name.starts_with("msgx_late_record_age_seconds")
        })
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// Runs the soak of `seed` over `ticks` fault ticks (then clean ones until settled).
pub fn soak(seed: u64, ticks: usize) -> Result<Soaked, String> {
    let faults = schedule(seed, ticks);
    let replay = format!("scripts/soak.sh --seed {seed} --ticks {ticks}");
    let shown: Vec<String> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| format!("  tick {i}: {f}"))
        .collect();
    soak_schedule(seed, &faults).map_err(|problem| {
        format!(
            "soak seed {seed} failed: {problem}\nschedule:\n{}\nreplay: {replay}",
            shown.join("\n")
        )
    })
}

fn soak_schedule(seed: u64, faults: &[Fault]) -> Result<Soaked, String> {
    let mut deployment = Deployment {
        seed,
        redis: RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]),
        dir: TempDir::new(),
        throttled_429: 0,
    };
    let tenants = [SIM_TENANT, OTHER];
    // The clean tail: until the last fault tick's seconds have had their last read.
    let settle = (RESCAN / 60 + 3) as usize;
    let all: Vec<Fault> = faults
        .iter()
        .cloned()
        .chain(std::iter::repeat_n(Fault::None, settle))
        .collect();
    // Every tick in the past: the simulator shows nothing after its clock.
    let first = minutes_ago(all.len() as i64 + 5);
    let mut last_counters: BTreeMap<String, f64> = BTreeMap::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut last = first;
    for (i, fault) in all.iter().enumerate() {
        let now = first + Span::minutes(i as i64);
        last = now;
        *counts.entry(fault.kind()).or_default() += usize::from(i < faults.len());
        let at = |what: String| format!("tick {i} ({fault}): {what}");
        let codes = tick(&mut deployment, fault, now, &tenants).map_err(at)?;
        if std::env::var_os("MSGX_SOAK_VERBOSE").is_some() {
            let shown: Vec<i32> = codes.iter().map(|(code, _)| *code).collect();
            eprintln!("tick {i} ({fault}): exit {shown:?}");
        }
        for (code, stderr) in &codes {
            if !fault.allowed().contains(code) {
                return Err(at(format!(
                    "exit {code}, allowed {:?}:\n{stderr}",
                    fault.allowed()
                )));
            }
            if stderr.contains("panicked") {
                return Err(at(format!("a panic:\n{stderr}")));
            }
        }
        // Counters never go down, and no series of a lane still configured vanishes
        // (a lane taken out leaves the file: its series come back from 0).
        let now_counters = counters(&deployment.metrics_path());
        if !matches!(fault, Fault::TenantRemoved | Fault::SourceRemoved) {
            for (key, before) in &last_counters {
                match now_counters.get(key) {
                    Some(after) if after < before => {
                        return Err(at(format!("metric {key} went from {before} to {after}")));
                    }
                    None => return Err(at(format!("series {key} vanished"))),
                    _ => {}
                }
            }
        }
        last_counters = now_counters;
        // A run that ended by itself released its locks: the next minute must not find
        // them. A killed run's expire by themselves, as the next cron minute finds
        // them; the replay is faster than cron's minutes, so it waits for that.
        let locks: Vec<String> = query(&deployment.redis, &["KEYS", "*:msgx:lock"]);
        let may_leave = matches!(fault, Fault::Kill(_) | Fault::RedisRestart(_));
        if !locks.is_empty() && !may_leave {
            return Err(at(format!("the run left its locks: {locks:?}")));
        }
        deployment.wait_for_locks();
    }
    if deployment.throttled_429 > 0 {
        return Err(format!(
            "{} requests the budget should have held back were answered 429",
            deployment.throttled_429
        ));
    }
    // The oracle: every lane's settled span, exactly once.
    let sim = deployment.sim(&[]);
    sim.set_clock(last);
    let start = origin(first);
    let settled = lagged_end(last) - Span::seconds(RESCAN) - Span::SECOND;
    let end = lagged_end(last) - Span::SECOND;
    let mut records = 0;
    for tenant in tenants {
        for (source, field) in SOURCES {
            let key = match source {
                "signins" => format!("q:{tenant}"),
                other => format!("q:{tenant}:{other}"),
            };
            let delivered = deployment.redis.list(&key);
            let ids: Vec<String> = delivered.iter().map(|r| id_of(r)).collect();
            let unique: BTreeSet<&String> = ids.iter().collect();
            if unique.len() != ids.len() {
                return Err(format!(
                    "{key}: {} records delivered twice",
                    ids.len() - unique.len()
                ));
            }
            let span: BTreeSet<String> = sim
                .tenant_records_of(tenant, source, field, start, end)
                .iter()
                .map(|r| id_of(r))
                .collect();
            let strays = unique.iter().filter(|id| !span.contains(**id)).count();
            if strays > 0 {
                return Err(format!("{key}: {strays} records outside [{start}, {end}]"));
            }
            let expected = sim.tenant_records_of(tenant, source, field, start, settled);
            let missing = expected
                .iter()
                .filter(|r| !unique.contains(&id_of(r)))
                .count();
            if missing > 0 {
                return Err(format!(
                    "{key}: {missing} of {} records of [{start}, {settled}] never delivered",
                    expected.len()
                ));
            }
            records += expected.len();
        }
    }
    Ok(Soaked {
        ticks: faults.len(),
        faults: counts,
        records,
    })
}

fn id_of(record: &str) -> String {
    serde_json::from_str::<serde_json::Value>(record)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
        .unwrap_or_else(|| record.to_string())
}

/// One tick with its fault: the exit code and stderr of each run.
fn tick(
    d: &mut Deployment,
    fault: &Fault,
    now: OffsetDateTime,
    tenants: &[&str],
) -> Result<Vec<(i32, String)>, String> {
    if *fault == Fault::Missed {
        return Ok(Vec::new());
    }
    let extra = match fault {
        Fault::Graph(flags) => flags.clone(),
        Fault::Forbidden => strings(&["--deny", &format!("{OTHER}/directory_audits")]),
        _ => Vec::new(),
    };
    let sim = d.sim(&extra);
    sim.set_clock(now);
    let tenants: Vec<&str> = match fault {
        Fault::TenantRemoved => vec![tenants[0]],
        _ => tenants.to_vec(),
    };
    let sources: Vec<&str> = match fault {
        Fault::SourceRemoved => vec![SOURCES[0].0],
        _ => SOURCES.iter().map(|(s, _)| *s).collect(),
    };
    let args = d.args(&sim, &tenants, &sources);
    let host_now = match fault {
        Fault::Clock(seconds) => now + Span::seconds(*seconds),
        _ => now,
    };
    let vars = env(host_now);
    let limit = Duration::from_secs(120);
    if matches!(fault, Fault::RedisFull) {
        let _: () = query(&d.redis, &["CONFIG", "SET", "maxmemory", "1"]);
    }
    let outputs = match fault {
        Fault::Kill(ms) | Fault::Term(ms) | Fault::RedisRestart(ms) => {
            let running = Running::start_with_env(&args, &run_env(&vars));
            std::thread::sleep(Duration::from_millis(*ms));
            match fault {
                Fault::Kill(_) => running.signal("KILL"),
                Fault::Term(_) => running.signal("TERM"),
                _ => {
                    d.redis.kill();
                    std::thread::sleep(Duration::from_millis(200));
                    d.redis.restart();
                }
            }
            let out = running.finish(limit);
            vec![(out.code, out.stderr)]
        }
        Fault::Twice => {
            let one = Running::start_with_env(&args, &run_env(&vars));
            let two = Running::start_with_env(&args, &run_env(&vars));
            [one.finish(limit), two.finish(limit)]
                .into_iter()
                .map(|o| (o.code, o.stderr))
                .collect()
        }
        _ => {
            let out = msgx(&args, &run_env(&vars));
            vec![(out.code, out.stderr)]
        }
    };
    if matches!(fault, Fault::RedisFull) {
        let _: () = query(&d.redis, &["CONFIG", "SET", "maxmemory", "0"]);
    }
    let stats = sim.stats();
    let budget_429 = ["graph_429_tenant", "graph_429_app"]
        .iter()
        .map(|k| stats[*k].as_u64().unwrap_or(0))
        .sum::<u64>();
    d.throttled_429 += budget_429;
    Ok(outputs)
}

/// The seeds CI runs every time, and how many fault ticks each.
const FIXED: [u64; 3] = [1, 7, 2026];
const SHORT: usize = 12;

#[test]
fn a_short_soak_of_fixed_seeds_and_a_fresh_one_delivers_every_record_once() {
    let fresh = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    println!("soak: fresh seed {fresh} (replay: scripts/soak.sh --seed {fresh} --ticks {SHORT})");
    for seed in FIXED.into_iter().chain([fresh]) {
        match soak(seed, SHORT) {
            Ok(soaked) => println!(
                "soak seed {seed}: {} ticks, {} records, faults {:?}, lost 0, twice 0",
                soaked.ticks, soaked.records, soaked.faults
            ),
            Err(failure) => panic!("{failure}"),
        }
    }
}

/// `scripts/soak.sh`: the seed and ticks from MSGX_SOAK_SEED and MSGX_SOAK_TICKS.
#[test]
#[ignore = "long: run by scripts/soak.sh"]
fn soak_from_the_environment() {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seed = number("MSGX_SOAK_SEED", 1);
    let ticks = number("MSGX_SOAK_TICKS", 100) as usize;
    let started = Instant::now();
    match soak(seed, ticks) {
        Ok(soaked) => println!(
            "soak seed {seed}: {} fault ticks in {:.0} s, {} records of the settled span, \
             faults {:?}, lost 0, twice 0",
            soaked.ticks,
            started.elapsed().as_secs_f64(),
            soaked.records,
            soaked.faults
        ),
        Err(failure) => panic!("{failure}"),
    }
}
