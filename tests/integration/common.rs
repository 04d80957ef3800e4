//! Test helpers: a real redis-server and a real msgx-sim on free loopback ports, each
//! stopped by pid when dropped, and a runner for the msgx-once binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const SIM_TENANT: &str = "sim-tenant.example";
pub const SIM_CLIENT: &str = "sim-client";
pub const SIM_SECRET: &str = "sim-secret-Zq81";

/// Polls `ready` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ready()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "msgx-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: TempDir,
    extra: Vec<String>,
    password: Option<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A redis-server with extra configuration, e.g. `["--requirepass", "pw"]` or
    /// `["--appendonly", "yes"]` (data that survives a restart).
    pub fn start_with(extra: &[&str]) -> Self {
        let extra = strings(extra);
        let password = extra
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| extra.get(i + 1).cloned());
        for _ in 0..5 {
            let dir = TempDir::new();
            let port = free_port();
            if let Some(child) = spawn_redis(port, &dir, &extra, password.as_deref()) {
                return RedisServer {
                    child,
                    port,
                    dir,
                    extra,
                    password,
                };
            }
        }
        panic!("redis-server did not start");
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits until the port is
    /// free of it.
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        let password = self.password.as_deref();
        self.child = spawn_redis(self.port, &self.dir, &self.extra, password)
            .expect("redis-server restarts on its port");
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("test connection to redis")
    }

    pub fn list(&self, key: &str) -> Vec<String> {
        redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut self.connection())
            .expect("LRANGE")
    }

    pub fn len(&self, key: &str) -> usize {
        redis::cmd("LLEN")
            .arg(key)
            .query(&mut self.connection())
            .unwrap_or(0)
    }
}

/// Three redis-servers made one Redis Cluster (three primaries, no replicas).
pub fn cluster() -> Vec<RedisServer> {
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| {
            RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ])
        })
        .collect();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let created = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stdout)
    );
    let ready = || {
        nodes.iter().all(|n| {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut n.connection())
                .unwrap_or_default();
            info.contains("cluster_state:ok")
        })
    };
    assert!(
        wait_for(Duration::from_secs(30), ready),
        "the cluster forms"
    );
    nodes
}

/// The documented least-privilege ACL (docs/redis.md) for queue key
/// `ms_graph_exporter`, verbatim.
pub fn readme_acl() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/redis.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("ACL SETUSER msgx "))
        .expect("the ACL line in docs/redis.md");
    line.split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// A CA, and a certificate it signed for 127.0.0.1: (dir, ca, server cert, server key).
pub fn private_ca() -> (TempDir, String, String, String) {
    let dir = TempDir::new();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ca_key, ca, key, csr, cert, ext) = (
        path("ca.key"),
        path("ca.crt"),
        path("server.key"),
        path("server.csr"),
        path("server.crt"),
        path("ext"),
    );
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=msgx test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (dir, ca, cert, key)
}

/// Two backfills of the same app and tenant at once against Graph's `10/2`, each
/// paced to its `rate_limit` of `limits`: with the Redis backend they share one window
/// in Redis and together stay within it. Returns the 429s Graph answered and the runs.
pub fn two_processes_at_once(backend: &[&str], limits: [&str; 2]) -> (u64, Vec<Output>) {
    let sim = Sim::start(&["--rate", "3", "--throttle", "10/2"]);
    let redis = RedisServer::start();
    let since = minutes_ago(20);
    let runs: Vec<Running> = (0..2)
        .map(|i| {
            let key = format!("shared{i}");
            let mut args = redis_args(
                &sim,
                &redis,
                &key,
                &["--page_size", "20", "--max_retries", "20"],
            );
            args.extend(strings(backend));
            args.extend(strings(&["--rate_limit", limits[i as usize]]));
            args.extend(backfill_flags(
                since + time::Duration::seconds(120 * i),
                since + time::Duration::seconds(120 * i + 120),
            ));
            Running::start(&args)
        })
        .collect();
    let outputs: Vec<Output> = runs
        .into_iter()
        .map(|r| r.finish(Duration::from_secs(120)))
        .collect();
    for run in &outputs {
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let throttled = sim.stats()["graph_429"].as_u64().unwrap_or(0);
    let requests: u64 = outputs
        .iter()
        .map(|o| o.summary_field("requests").parse::<u64>().expect("count"))
        .sum();
    assert!(
        requests >= 30,
        "{requests} requests: enough to overdraw 10/2 twice over"
    );
    (throttled, outputs)
}

/// One request an [`http_receiver`] got: its request line, its header lines (as sent,
/// trimmed) and its body.
pub struct Received {
    pub line: String,
    pub headers: Vec<String>,
    pub body: String,
}

/// An HTTP server on loopback that answers every request 200 (a Pushgateway, say) and
/// sends each request through the channel.
pub fn http_receiver() -> (String, std::sync::mpsc::Receiver<Received>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (sent, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let (mut headers, mut length) = (Vec::new(), 0);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                headers.push(header.trim().to_string());
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = sent.send(Received {
                line: line.trim().to_string(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
    });
    (url, received)
}

/// The simulator's flags for Graph's own limits of every bucket.
pub const GRAPH_THROTTLES: [&str; 6] = [
    "--throttle",
    "5/10",
    "--throttle-identity-protection",
    "1/1",
    "--throttle-security",
    "150/60",
];

/// Creates the README's least-privileged user on `redis` with `password`; the URL
/// that connects as it.
pub fn readme_acl_user(redis: &RedisServer, password: &str) -> String {
    let acl: Vec<String> = readme_acl()
        .into_iter()
        .map(|word| word.replace("<password>", password))
        .collect();
    redis::cmd("ACL")
        .arg(&acl)
        .exec(&mut redis.connection())
        .expect("ACL SETUSER");
    redis
        .url()
        .replace("redis://", &format!("redis://msgx:{password}@"))
}

/// Runs openssl with `args`; fails the test with its stderr if it fails.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Redis Sentinel on a free loopback port monitoring the primary at `primary_port`
/// as `name`; it declares a primary down after 1 s.
pub struct SentinelServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl SentinelServer {
    pub fn start(name: &str, primary_port: u16) -> Self {
        let dir = TempDir::new();
        let port = free_port();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 3000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut child = Command::new(&binary)
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        if !wait_for(Duration::from_secs(10), || ping(port, None)) {
            stop(&mut child);
            panic!("redis sentinel did not start");
        }
        SentinelServer {
            child,
            port,
            _dir: dir,
        }
    }

    /// The sentinel's answer to `SENTINEL <args…>`.
    pub fn ask<T: redis::FromRedisValue>(&self, args: &[&str]) -> Option<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).ok()?;
        let mut connection = client.get_connection().ok()?;
        redis::cmd("SENTINEL").arg(args).query(&mut connection).ok()
    }
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn spawn_redis(
    port: u16,
    dir: &TempDir,
    extra: &[String],
    password: Option<&str>,
) -> Option<Child> {
    let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let mut child = Command::new(&binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (scripts/test.sh installs it)");
    let up = wait_for(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(None)) && ping(port, password)
    });
    if up {
        Some(child)
    } else {
        stop(&mut child);
        None
    }
}

fn ping(port: u16, password: Option<&str>) -> bool {
    let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
    redis::Client::open(format!("redis://{auth}127.0.0.1:{port}/0"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

pub struct Sim {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Sim {
    /// msgx-sim with the test credentials and `extra` flags (e.g. `--rate 20`).
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_secret(SIM_SECRET, extra)
    }

    /// msgx-sim whose application has client secret `secret`. Its sign-ins list 2
    /// Conditional Access policies (about 1.9 KB) unless `extra` says how many: the
    /// tests that are about record size ask for Microsoft's sizes.
    pub fn start_with_secret(secret: &str, extra: &[&str]) -> Self {
        let dir = TempDir::new();
        let small = match extra.contains(&"--ca-policies") {
            true => None,
            false => Some(["--ca-policies", "2"]),
        };
        // Graph's pace only where a test asks for it: most tests are about what is
        // delivered, not when.
        let pace = [["--latency-ms", "0"], ["--latency-per-record-us", "0"]]
            .into_iter()
            .filter(|[flag, _]| !extra.contains(flag))
            .flatten();
        let port_file = dir.join("port");
        let mut child = Command::new(env!("CARGO_BIN_EXE_msgx-sim"))
            .args([
                "--port",
                "0",
                "--tenant",
                SIM_TENANT,
                "--client-id",
                SIM_CLIENT,
            ])
            .args(["--client-secret", secret])
            .arg("--port-file")
            .arg(&port_file)
            .args(extra)
            .args(small.iter().flatten())
            .args(pace)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("msgx-sim");
        let mut port = 0;
        let up = wait_for(Duration::from_secs(10), || {
            port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            port != 0
        });
        if !up {
            stop(&mut child);
            panic!("msgx-sim did not start");
        }
        Sim {
            child,
            port,
            _dir: dir,
        }
    }

    /// msgx-sim serving `tenants` besides its own, one application consented in each,
    /// with Graph's two budgets of the reports bucket — 5 per 10 s per tenant, 122
    /// per 10 s across them — and `extra` flags.
    pub fn start_fleet(tenants: &[String], extra: &[&str]) -> Self {
        let tenants = tenants.join(",");
        let mut flags = vec![
            "--tenants",
            &tenants,
            "--throttle",
            "5/10",
            "--throttle-app",
            "122/10",
        ];
        flags.extend(extra);
        Self::start(&flags)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The flags that point msgx-once at this simulator, with its client secret.
    pub fn args(&self) -> Vec<String> {
        let mut args = strings(&["--client_secret", SIM_SECRET]);
        args.extend(self.args_without_secret());
        args
    }

    /// The flags of a stateless run into the log (stderr), plus `extra`.
    pub fn log_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = self.args();
        args.extend(strings(&["--queue_backend", "log", "--state", "off"]));
        args.extend(strings(extra));
        args
    }

    /// The flags that point msgx-once at this simulator, without a credential.
    pub fn args_without_secret(&self) -> Vec<String> {
        let url = self.url();
        [
            "--tenant",
            SIM_TENANT,
            "--client_id",
            SIM_CLIENT,
            "--graph_url",
            &url,
            "--login_url",
            &url,
            // The simulator does not throttle unless asked to; tests need no pacing.
            "--rate_limit",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The body of a simulator endpoint, e.g. `/_sim/queries`.
    pub fn get(&self, path_and_query: &str) -> String {
        ureq::get(format!("{}{path_and_query}", self.url()))
            .call()
            .and_then(|mut r| r.body_mut().with_config().limit(1 << 30).read_to_string())
            .expect("simulator answers")
    }

    /// Every record with createdDateTime in `[start, end]` (inclusive whole seconds,
    /// i.e. up to end.9999999), oldest first, as the simulator renders them.
    pub fn records(&self, start: OffsetDateTime, end: OffsetDateTime) -> Vec<String> {
        self.oracle(start, end, None)
    }

    /// Every record with createdDateTime in `[start, end]` that Graph shows by `by`.
    pub fn records_visible(
        &self,
        start: OffsetDateTime,
        end: OffsetDateTime,
        by: OffsetDateTime,
    ) -> Vec<String> {
        self.oracle(start, end, Some(by))
    }

    /// Every sign-in with createdDateTime in `[start, end]` as Graph shows it at
    /// `as_of` (a changed one with its change only from then).
    pub fn records_as_of(
        &self,
        start: OffsetDateTime,
        end: OffsetDateTime,
        as_of: OffsetDateTime,
    ) -> Vec<String> {
        let as_of = rfc3339(as_of);
        self.oracle_query("signins", "createdDateTime", start, end, ("as_of", &as_of))
    }

    fn oracle(
        &self,
        start: OffsetDateTime,
        end: OffsetDateTime,
        visible_by: Option<OffsetDateTime>,
    ) -> Vec<String> {
        self.oracle_of("signins", "createdDateTime", start, end, visible_by)
    }

    /// Every record of `source` with `time_field` in `[start, end]` — of a mutable
    /// source every version made then —, oldest first.
    pub fn records_of(
        &self,
        source: &str,
        time_field: &str,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> Vec<String> {
        self.oracle_of(source, time_field, start, end, None)
    }

    fn oracle_of(
        &self,
        source: &str,
        time_field: &str,
        start: OffsetDateTime,
        end: OffsetDateTime,
        visible_by: Option<OffsetDateTime>,
    ) -> Vec<String> {
        match visible_by {
            Some(by) => {
                let by = rfc3339(by);
                self.oracle_query(source, time_field, start, end, ("visible_by", &by))
            }
            None => self.oracle_query(source, time_field, start, end, ("", "")),
        }
    }

    /// `/_sim/records` of `source` in `[start, end]`, with one more parameter (none
    /// when its name is empty).
    fn oracle_query(
        &self,
        source: &str,
        time_field: &str,
        start: OffsetDateTime,
        end: OffsetDateTime,
        (name, value): (&str, &str),
    ) -> Vec<String> {
        let filter = format!(
            "{time_field} ge {}.0000000Z and {time_field} le {}.9999999Z",
            second(start),
            second(end)
        );
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("source", source);
        query.append_pair("$filter", &filter);
        if !name.is_empty() {
            query.append_pair(name, value);
        }
        self.get(&format!("/_sim/records?{}", query.finish()))
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Every sign-in of tenant `tenant` (served with `--tenants`) with createdDateTime
    /// in `[start, end]`, oldest first.
    pub fn tenant_records(
        &self,
        tenant: &str,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> Vec<String> {
        self.tenant_records_of(tenant, "signins", "createdDateTime", start, end)
    }

    /// Every record of `source` of tenant `tenant` with `time_field` in `[start, end]`.
    pub fn tenant_records_of(
        &self,
        tenant: &str,
        source: &str,
        time_field: &str,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> Vec<String> {
        self.oracle_query(source, time_field, start, end, ("tenant", tenant))
    }

    /// Fixes the simulator's "now" (what it shows and clips to).
    pub fn set_clock(&self, now: OffsetDateTime) {
        self.get(&format!("/_sim/clock?now={}", rfc3339(now)));
    }

    /// The `$filter` range of every query's first page so far, in Unix seconds (both
    /// ends included), in the order they came.
    pub fn reads(&self) -> Vec<(i64, i64)> {
        self.get("/_sim/reads")
            .lines()
            .filter_map(|l| {
                let (lo, hi) = l.split_once(' ')?;
                Some((lo.parse().ok()?, hi.parse().ok()?))
            })
            .collect()
    }

    /// How often each second from `start` to `end` (included) was read.
    pub fn read_counts(&self, start: OffsetDateTime, end: OffsetDateTime) -> Vec<usize> {
        let reads = self.reads();
        (start.unix_timestamp()..=end.unix_timestamp())
            .map(|s| {
                reads
                    .iter()
                    .filter(|(lo, hi)| (*lo..=*hi).contains(&s))
                    .count()
            })
            .collect()
    }

    /// `($top, $filter)` of every query's first page for `source`, as sent.
    pub fn queries(&self, source: &str) -> Vec<(String, String)> {
        self.get(&format!("/_sim/queries?source={source}"))
            .lines()
            .filter_map(|l| {
                let mut fields = l.splitn(3, '\t').skip(1);
                Some((fields.next()?.to_string(), fields.next()?.to_string()))
            })
            .collect()
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/_sim/stats")).expect("stats JSON")
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// `2026-11-29T13:57:00` (no zone) of a UTC time.
pub fn second(t: OffsetDateTime) -> String {
    let text = t.format(&Rfc3339).expect("format");
    text[..19].to_string()
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    format!("{}Z", second(t))
}

/// A whole second `minutes` minutes ago: a fixed "now" with records already in Graph.
pub fn minutes_ago(minutes: i64) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("truncate");
    now - time::Duration::minutes(minutes)
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts that the run logged `text`, showing everything it logged if not.
    #[track_caller]
    pub fn assert_stderr_has(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        assert!(
            self.stderr.contains(text),
            "{text:?} not logged:\n{}",
            self.stderr
        );
    }

    /// The run's last summary line: a log line whose message starts with `summary: `.
    pub fn summary_line(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| is_summary(l))
            .unwrap_or_else(|| panic!("no summary line in:\n{}", self.stderr))
    }

    /// The value after `label` in the summary line, e.g. `records`.
    pub fn summary_field(&self, label: &str) -> String {
        let line = self.summary_line();
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| *w == label)
            .unwrap_or_else(|| panic!("no {label} in {line}"));
        words[at + 1].to_string()
    }

    /// The ERROR lines it logged, its summary lines left out.
    pub fn errors(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.contains("[ERROR]") && !l.contains("summary"))
            .collect()
    }

    /// The summary's window, `[start - end]`.
    pub fn summary_window(&self) -> String {
        let line = self.summary_line();
        let window = &line[line.find("window [").expect("window") + "window ".len()..];
        window[..=window.find(']').expect("window end")].to_string()
    }
}

/// A log line (`<time> [LEVEL] message`) whose message starts with `summary: `.
pub fn is_summary(line: &str) -> bool {
    line.splitn(3, ' ')
        .nth(2)
        .is_some_and(|message| message.starts_with("summary: "))
}

fn msgx_command(args: &[String], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_msgx-once"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command
}

/// Starts msgx-once with `args` and only the environment in `env` (plus PATH), its
/// output discarded: for a test that stops it.
pub fn msgx_spawn(args: &[String], env: &[(&str, &str)]) -> Child {
    msgx_command(args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("msgx-once starts")
}

/// Runs msgx-once with `args` and only the environment in `env` (plus PATH).
pub fn msgx(args: &[String], env: &[(&str, &str)]) -> Output {
    let output = msgx_command(args, env).output().expect("msgx-once runs");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs msgx-once under bash: `script` runs it as `"$0" "$@"`, e.g. with a pipe or a
/// ulimit around it.
pub fn msgx_in_bash(script: &str, args: &[String], env: &[(&str, &str)]) -> Output {
    let output = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_msgx-once"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// msgx-once running in the background, its stderr going to a file the test can watch.
pub struct Running {
    child: Child,
    stderr: PathBuf,
    _dir: TempDir,
}

impl Running {
    pub fn start(args: &[String]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[String], env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new();
        let stderr = dir.join("stderr");
        let file = std::fs::File::create(&stderr).expect("stderr file");
        let child = msgx_command(args, env)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("msgx-once starts");
        Running {
            child,
            stderr,
            _dir: dir,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Waits up to `limit` for the exit; kills the process and panics after that.
    pub fn finish(mut self, limit: Duration) -> Output {
        let mut code = None;
        wait_for(limit, || {
            code = self.child.try_wait().ok().flatten();
            code.is_some()
        });
        let Some(status) = code else {
            stop(&mut self.child);
            panic!(
                "msgx-once still running after {limit:?}:\n{}",
                self.stderr()
            );
        };
        Output {
            code: status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A simulator started with `sim_args` and a Redis beside it: what most tests start
/// with.
pub fn sim_and_redis(sim_args: &[&str]) -> (Sim, RedisServer) {
    (Sim::start(sim_args), RedisServer::start())
}

/// The simulator flags plus a Redis list or channel `key` on `redis`, then `extra`.
pub fn redis_args(sim: &Sim, redis: &RedisServer, key: &str, extra: &[&str]) -> Vec<String> {
    let mut args = sim.args();
    args.extend(strings(&["--redis_url", &redis.url(), "--queue_key", key]));
    args.extend(strings(extra));
    args
}

/// One cron run at `now` into the Redis list `key` (the simulator's clock set to
/// `now`; defaults: timelag 120, streams 2, stream_frame 30), plus `extra`.
pub fn tick(
    sim: &Sim,
    redis: &RedisServer,
    key: &str,
    now: OffsetDateTime,
    extra: &[&str],
) -> Output {
    sim.set_clock(now);
    msgx(
        &redis_args(sim, redis, key, extra),
        &[("MSGX_NOW", &rfc3339(now))],
    )
}

/// The lagged window's exclusive end at `now` (timelag 120).
pub fn lagged_end(now: OffsetDateTime) -> OffsetDateTime {
    now - time::Duration::seconds(120)
}

/// The first run's window start: the original's window, two 30 s frames before the
/// lagged end.
pub fn origin(first: OffsetDateTime) -> OffsetDateTime {
    lagged_end(first) - time::Duration::seconds(60)
}

/// The records of `[start, end]`'s first page of `page_size` sign-ins (newest first)
/// that a frame stopped after it writes: all but those of its last second, which is
/// held back for the next page.
pub fn first_page_whole_seconds(
    sim: &Sim,
    start: OffsetDateTime,
    end: OffsetDateTime,
    page_size: usize,
) -> Vec<String> {
    let second = |record: &String| -> String {
        let value: serde_json::Value = serde_json::from_str(record).expect("JSON");
        let time = value["createdDateTime"].as_str().expect("a time");
        time.get(..19).expect("to the second").to_string()
    };
    let mut page = sim.records(start, end);
    page.reverse();
    page.truncate(page_size);
    let last = page.last().map(second);
    page.retain(|r| Some(second(r)) != last);
    assert!(!page.is_empty(), "the page is of one second");
    page
}

/// `--since since --until until`: a backfill of `[since, until)`.
pub fn backfill_flags(since: OffsetDateTime, until: OffsetDateTime) -> Vec<String> {
    strings(&["--since", &rfc3339(since), "--until", &rfc3339(until)])
}

pub fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Sorted copy, for comparing record sets.
pub fn sorted(mut records: Vec<String>) -> Vec<String> {
    records.sort();
    records
}

/// Fails the test with both sides' sizes and a sample when two record sets differ.
pub fn assert_same_records(actual: Vec<String>, expected: Vec<String>) {
    let (actual, expected) = (sorted(actual), sorted(expected));
    let mut deduped = actual.clone();
    deduped.dedup();
    assert_eq!(deduped.len(), actual.len(), "duplicates delivered");
    if actual != expected {
        let missing = expected.iter().filter(|r| !actual.contains(r)).count();
        let extra = actual.iter().filter(|r| !expected.contains(r)).count();
        panic!(
            "record sets differ: {} delivered, {} expected, {missing} missing, {extra} unexpected",
            actual.len(),
            expected.len()
        );
    }
}

/// A connection to the Redis Cluster of `seeds` (host:port).
pub fn cluster_connection(seeds: &[String]) -> redis::cluster::ClusterConnection {
    redis::cluster::ClusterClient::new(
        seeds
            .iter()
            .map(|s| format!("redis://{s}"))
            .collect::<Vec<_>>(),
    )
    .unwrap()
    .get_connection()
    .unwrap()
}

/// One Redis command's reply, or the test fails naming the command.
pub fn query<T: redis::FromRedisValue>(redis: &RedisServer, args: &[&str]) -> T {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query(&mut redis.connection())
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Test credentials for runs that end before any request.
pub fn offline(extra: &[&str]) -> Vec<String> {
    let mut args = strings(&[
        "--tenant",
        "t.example",
        "--client_id",
        "c",
        "--client_secret",
        "s",
    ]);
    args.extend(strings(extra));
    args
}

/// Every source, as `--sources` names them.
pub const ALL_SOURCES: &str = "signins,signins_noninteractive,signins_service_principal,\
    signins_managed_identity,directory_audits,provisioning,risk_detections,security_alerts";

/// Every entry of the stream `key`: its fields, in order.
pub fn stream_entries(redis: &RedisServer, key: &str) -> Vec<Vec<(String, String)>> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&[key, "-", "+"])
        .query(&mut redis.connection())
        .expect("XRANGE");
    entries.into_iter().map(|(_, fields)| fields).collect()
}
