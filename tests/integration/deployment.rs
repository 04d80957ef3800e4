//! The deployment files work as written: the crontab line runs under cron's bare
//! environment with the crontab's PATH where the README's install puts the binary;
//! the Kubernetes manifests run as the kubelet lays out their files (owners, modes,
//! the user and groups they run as) and hold the hardening they promise; the
//! original's own config file works under every shipped form.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(relative)).expect(relative)
}

/// The crontab's variables and its one job: (variables, user, command).
fn crontab() -> (Vec<(String, String)>, String, String) {
    let text = read("crontab.example");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    let variables = lines
        .iter()
        .filter_map(|l| l.split_once('=').filter(|(name, _)| !name.contains(' ')))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let job: Vec<&&str> = lines.iter().filter(|l| l.starts_with("* ")).collect();
    assert_eq!(job.len(), 1, "one job line");
    let fields: Vec<&str> = job[0].splitn(7, ' ').collect();
    (variables, fields[5].to_string(), fields[6].to_string())
}

/// A scratch root laid out as the README's install and the crontab expect: the binary
/// in `/usr/local/bin`, and `/etc/msgx`, `/var/log/msgx`, `/var/lib/msgx`.
struct CronRoot(TempDir);

impl CronRoot {
    fn new() -> Self {
        let root = CronRoot(TempDir::new());
        for dir in [
            "/usr/local/bin",
            "/etc/msgx",
            "/var/log/msgx",
            "/var/lib/msgx",
        ] {
            std::fs::create_dir_all(root.path(dir)).unwrap();
        }
        std::fs::copy(
            env!("CARGO_BIN_EXE_msgx-once"),
            root.path("/usr/local/bin/msgx-once"),
        )
        .unwrap();
        root
    }

    /// Where absolute `path` is in the scratch root.
    fn path(&self, path: &str) -> std::path::PathBuf {
        self.0.path().join(path.trim_start_matches('/'))
    }

    /// A crontab command with its `/etc/…` and `/var/…` paths in the scratch root.
    fn rooted(&self, command: &str) -> String {
        command
            .split(' ')
            .map(|word| match word.find('/') {
                Some(at) if word[at..].starts_with("/etc/") || word[at..].starts_with("/var/") => {
                    format!("{}{}", &word[..at], self.path(&word[at..]).display())
                }
                _ => word.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The crontab's PATH with `/usr/local/bin` in the scratch root.
    fn rooted_path(&self, path: &str) -> String {
        path.split(':')
            .map(|p| match p {
                "/usr/local/bin" => self.path(p).display().to_string(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Runs `command` (rooted) as cron does: `/bin/sh -c` under `env -i` with `PATH`,
    /// `SHELL` and `extra` (NAME=value) only.
    fn run(&self, path: &str, command: &str, extra: &[String]) -> std::process::Output {
        Command::new("env")
            .args(["-i", &format!("PATH={path}"), "SHELL=/bin/sh"])
            .args(extra)
            .args(["/bin/sh", "-c", &self.rooted(command)])
            .stdin(Stdio::null())
            .output()
            .expect("sh runs")
    }
}

#[test]
fn the_crontabs_fleet_lines_run_their_shards_at_once_under_env_i() {
    let text = read("crontab.example");
    let (variables, _, _) = crontab();
    let path = variables
        .iter()
        .find(|(n, _)| n == "PATH")
        .map(|(_, v)| v.clone())
        .expect("PATH");
    // The commented shard lines, as an operator uncomments them.
    let shards: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#* * * * * "))
        .map(|l| {
            let (user, command) = l.split_once(' ').expect("user and command");
            assert_ne!(user, "root", "a shard runs as an unprivileged user");
            command.to_string()
        })
        .collect();
    assert!(shards.len() >= 2, "crontab.example shows a fleet's shards");
    // Every line has the whole list, and its own shard of them.
    let lists: Vec<&str> = shards
        .iter()
        .map(|c| {
            c.strip_prefix("GRAPH_TENANTS=")
                .and_then(|rest| rest.split(' ').next())
                .expect("each shard line names the tenants")
        })
        .collect();
    assert!(lists.iter().all(|l| *l == lists[0]), "one list: {lists:?}");
    let tenants: Vec<String> = lists[0].split(',').map(str::to_string).collect();
    for (i, command) in shards.iter().enumerate() {
        let shard = format!("--shard {i}/{} ", shards.len());
        assert!(
            command.contains(&shard),
            "line {i} lacks {shard}: {command}"
        );
    }
    let sim = Sim::start_fleet(&tenants, &["--rate", "3"]);
    let redis = RedisServer::start();
    let root = CronRoot::new();
    // The fleet's config file: the application, no tenant.
    std::fs::write(
        root.path("/etc/msgx/app_config.yaml"),
        format!(
            "client_id: {SIM_CLIENT}\nclient_secret: {SIM_SECRET}\ngraph_url: {url}\n\
             login_url: {url}\nredis_url: {}\nrate_limit: 5/10\n",
            redis.url(),
            url = sim.url()
        ),
    )
    .unwrap();
    let now = minutes_ago(5);
    sim.set_clock(now);
    let codes: Vec<(Option<i32>, String)> = std::thread::scope(|scope| {
        let started: Vec<_> = shards
            .iter()
            .map(|command| {
                let (root, path) = (&root, root.rooted_path(&path));
                let extra = [format!("MSGX_NOW={}", rfc3339(now))];
                scope.spawn(move || {
                    let ran = root.run(&path, command, &extra);
                    (
                        ran.status.code(),
                        String::from_utf8_lossy(&ran.stderr).into_owned(),
                    )
                })
            })
            .collect();
        started
            .into_iter()
            .map(|h| h.join().expect("a shard"))
            .collect()
    });
    for (code, stderr) in &codes {
        assert_eq!(*code, Some(0), "{stderr}");
    }
    let mut shares = 0;
    for shard in 0..shards.len() {
        let log = std::fs::read_to_string(root.path(&format!("/var/log/msgx/shard-{shard}.log")))
            .unwrap_or_default();
        assert!(log.contains("[INFO] summary: tenants "), "{log}");
        let said = format!("shard {shard}/{}: ", shards.len());
        shares += log
            .lines()
            .find_map(|l| l.split(&said).nth(1))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("shard {shard} does not say its share: {log}"));
    }
    assert_eq!(shares, tenants.len(), "every tenant in exactly one shard");
    assert_eq!(sim.stats()["graph_429"].as_u64().unwrap_or(0), 0);
    // A first run reads the original's window: `--streams` frames of 30 s.
    let streams: i64 = shards[0]
        .split(' ')
        .skip_while(|w| *w != "--streams")
        .nth(1)
        .map_or(2, |n| n.parse().expect("a number"));
    for tenant in &tenants {
        let expected = sim.tenant_records(
            tenant,
            lagged_end(now) - time::Duration::seconds(30 * streams),
            lagged_end(now) - time::Duration::SECOND,
        );
        assert_same_records(redis.list(&format!("ms_graph_exporter:{tenant}")), expected);
    }
}

#[test]
fn the_crontab_line_runs_as_written_where_the_readme_installs_the_binary() {
    let (variables, user, command) = crontab();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} in crontab.example"))
    };
    assert_ne!(user, "root", "runs as an unprivileged user");
    assert!(!variable("MAILTO").is_empty());
    let path = variable("PATH");
    // The README's install command puts the binary on that PATH, and only it.
    let readme = read("README.md");
    let install = readme
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with("cargo install "))
        .expect("an install command in the README");
    assert!(
        install.contains("--root /usr/local") && install.contains("--bin msgx-once"),
        "{install}"
    );
    assert!(path.split(':').any(|p| p == "/usr/local/bin"), "{path}");

    // A scratch root: the binary where the install puts it, the config and log
    // directories the crontab names.
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let root = CronRoot::new();
    std::fs::write(
        root.path("/etc/msgx/app_config.yaml"),
        format!(
            "tenant: {SIM_TENANT}\nclient_id: {SIM_CLIENT}\nclient_secret: {SIM_SECRET}\n\
             graph_url: {url}\nlogin_url: {url}\nredis_url: {}\nqueue_key: cron\nrate_limit: 0\n",
            redis.url(),
            url = sim.url()
        ),
    )
    .unwrap();
    let run = |path: &str| root.run(path, &command, &[]);
    // Without the install the line cannot start msgx-once: what cron mails (the
    // line's stdout and stderr, beyond the log redirection) says so.
    let missing = run(&path);
    let mailed = format!(
        "{}{}",
        String::from_utf8_lossy(&missing.stdout),
        String::from_utf8_lossy(&missing.stderr)
    );
    assert!(
        mailed.contains("msgx-once did not start (not found or not executable on PATH="),
        "mailed: {mailed:?}"
    );
    // With it, a run exits 0; what it logged.
    let ran_ok = || {
        let ran = run(&root.rooted_path(&path));
        assert_eq!(
            ran.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        // A run that started mails nothing: its words are in the log.
        assert!(ran.stdout.is_empty() && ran.stderr.is_empty(), "{ran:?}");
        std::fs::read_to_string(root.path("/var/log/msgx/msgx-once.log")).unwrap()
    };
    let log = ran_ok();
    assert!(log.contains("[INFO] summary: window ["), "{log}");
    assert!(redis.len("cron") > 0);
    let metrics = std::fs::read_to_string(root.path("/var/lib/msgx/msgx.prom")).unwrap();
    assert!(metrics.contains("\nmsgx_exit_code 0\n"), "{metrics}");

    // The original's own config file, filled in for cron (the secret in the file,
    // chmod 600), under the same line.
    let original = originals_config(&sim, &redis.url(), true).replace(
        "client_secret: \"\"",
        &format!("client_secret: {SIM_SECRET}"),
    );
    let config = root.path("/etc/msgx/app_config.yaml");
    std::fs::write(&config, original).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = ran_ok();
    assert!(
        log.contains("[WARN] option page_size 50 (from config file "),
        "{log}"
    );
    assert!(redis.len("ms_graph_exporter") > 0, "{log}");
}

/// Every container of a pod template: its securityContext, env and the pod's.
fn assert_hardened(document: &serde_yaml::Value, file: &str) {
    let job = &document["spec"]["jobTemplate"]["spec"];
    assert!(
        job["activeDeadlineSeconds"].as_u64().is_some(),
        "{file}: activeDeadlineSeconds"
    );
    assert!(
        document["spec"]["successfulJobsHistoryLimit"]
            .as_u64()
            .is_some(),
        "{file}"
    );
    assert!(
        document["spec"]["failedJobsHistoryLimit"]
            .as_u64()
            .is_some(),
        "{file}"
    );
    assert_eq!(document["spec"]["concurrencyPolicy"], "Forbid", "{file}");
    let pod = &job["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{file}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{file}"
    );
    let containers = pod["containers"].as_sequence().expect("containers");
    for container in containers {
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{file}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{file}");
        assert_eq!(security["capabilities"]["drop"][0], "ALL", "{file}");
        for variable in container["env"].as_sequence().into_iter().flatten() {
            let name = variable["name"].as_str().unwrap_or_default();
            assert!(
                !matches!(
                    name,
                    "GRAPH_CLIENT_SECRET" | "GRAPH_REDIS_URL" | "AZURE_CLIENT_SECRET"
                ),
                "{file}: a secret as a plain env value ({name})"
            );
        }
    }
}

#[test]
fn the_kubernetes_manifests_and_the_containerfile_are_hardened() {
    for (file, expected) in [
        ("scripts/k8s/cronjob.yaml", 1),
        ("scripts/k8s/cronjob-workload-identity.yaml", 1),
        ("scripts/k8s/cronjob-fleet.yaml", 1),
    ] {
        let text = read(file);
        let mut jobs = 0;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let document = serde_yaml::Value::deserialize(document).expect(file);
            if document["kind"] == "CronJob" {
                assert_hardened(&document, file);
                jobs += 1;
            }
        }
        assert_eq!(jobs, expected, "{file}");
    }
    let containerfile = read("scripts/Containerfile");
    for needed in [
        "--locked --release --bin msgx-once",
        "strip ",
        "ca-certificates",
        "USER 10001",
    ] {
        assert!(
            containerfile.contains(needed),
            "Containerfile lacks {needed:?}"
        );
    }
}

/// The original MsGraphExporter's shipped `docker/app_config.yaml` (from its README), as
/// an operator fills it in for their tenant and Redis: `tenant`, `client_id` and
/// `redis_url` set, the rest as shipped (`page_size: 50`, `client_secret: ""`);
/// then the two lines that point it at the simulator instead of Microsoft.
fn originals_config(sim: &Sim, redis_url: &str, fill_app: bool) -> String {
    let shipped = read("tests/fixtures/original_app_config.yaml");
    let mut filled = shipped.replace(
        "redis_url: redis://localhost:6379?db=0",
        &format!("redis_url: {redis_url}"),
    );
    if fill_app {
        filled = filled
            .replace("tenant: \"\"", &format!("tenant: {SIM_TENANT}"))
            .replace("client_id: \"\"", &format!("client_id: {SIM_CLIENT}"));
    }
    format!(
        "{filled}graph_url: {url}\nlogin_url: {url}\n",
        url = sim.url()
    )
}

/// The README's example production config, for the simulator's tenant and hosts.
fn example_config(sim: &Sim) -> String {
    let example = read("docs/app_config.example.yaml")
        .replace(
            "tenant: 00000000-0000-0000-0000-000000000000",
            &format!("tenant: {SIM_TENANT}"),
        )
        .replace(
            "client_id: 11111111-1111-1111-1111-111111111111",
            &format!("client_id: {SIM_CLIENT}"),
        );
    format!(
        "{example}graph_url: {url}\nlogin_url: {url}\n",
        url = sim.url()
    )
}

/// A container's env value: given, or (the Secret's key, whether optional).
type EnvValue = Result<String, (String, bool)>;

/// A pod of a CronJob manifest as the kubelet runs it.
#[derive(Clone)]
struct Pod {
    user: u32,
    group: u32,
    fs_group: Option<u32>,
    args: Vec<String>,
    env: Vec<(String, EnvValue)>,
    /// (mount path, secret name, defaultMode).
    secret_mounts: Vec<(String, String, u32)>,
}

/// A volume's `defaultMode` as Kubernetes reads it: YAML 1.1, where `0440` is octal
/// (0o440), a plain number is decimal (JSON), and absent is 0644.
fn file_mode(value: &serde_yaml::Value) -> u32 {
    match value {
        serde_yaml::Value::Null => 0o644,
        serde_yaml::Value::Number(n) => n.as_u64().expect("a mode") as u32,
        serde_yaml::Value::String(text) => {
            let digits = text
                .strip_prefix("0o")
                .or(text.strip_prefix('0'))
                .expect("octal");
            u32::from_str_radix(digits, 8).expect("an octal mode")
        }
        other => panic!("defaultMode {other:?}"),
    }
}

fn pod_of(manifest: &str) -> Pod {
    pods_of(manifest).into_iter().next().expect("a CronJob")
}

/// The pod of every CronJob of `manifest`, in its order.
/// The pods the manifest's CronJobs start at a tick: one per Job, or — for an Indexed
/// Job — one per index, each with the JOB_COMPLETION_INDEX the Job controller sets.
fn pods_of(manifest: &str) -> Vec<Pod> {
    let text = read(manifest);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect(manifest))
        .filter(|d| d["kind"] == "CronJob")
        .flat_map(|job| {
            let pod = pod_of_job(&job);
            let spec = &job["spec"]["jobTemplate"]["spec"];
            if spec["completionMode"] != "Indexed" {
                return vec![pod];
            }
            let completions = spec["completions"].as_u64().expect("completions");
            assert_eq!(
                spec["parallelism"].as_u64(),
                Some(completions),
                "{manifest}: every index at once"
            );
            (0..completions)
                .map(|index| {
                    let mut pod = pod.clone();
                    pod.env
                        .push(("JOB_COMPLETION_INDEX".into(), Ok(index.to_string())));
                    pod
                })
                .collect()
        })
        .collect()
}

fn pod_of_job(job: &serde_yaml::Value) -> Pod {
    let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let security = &pod["securityContext"];
    let number = |v: &serde_yaml::Value| v.as_u64().map(|n| n as u32);
    let container = &pod["containers"][0];
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let env = container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e["name"].as_str().expect("env name").to_string();
            let value = match e["value"].as_str() {
                Some(value) => Ok(value.to_string()),
                None => {
                    let key = &e["valueFrom"]["secretKeyRef"];
                    Err((
                        key["key"].as_str().expect("a secretKeyRef").to_string(),
                        key["optional"].as_bool().unwrap_or(false),
                    ))
                }
            };
            (name, value)
        })
        .collect();
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    let secret_mounts = container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let volume = volumes.iter().find(|v| v["name"] == m["name"])?;
            let secret = &volume["secret"];
            Some((
                m["mountPath"].as_str()?.to_string(),
                secret["secretName"].as_str()?.to_string(),
                file_mode(&secret["defaultMode"]),
            ))
        })
        .collect();
    Pod {
        user: number(&security["runAsUser"]).expect("runAsUser"),
        group: number(&security["runAsGroup"]).expect("runAsGroup"),
        fs_group: number(&security["fsGroup"]),
        args: strings(&container["args"]),
        env,
        secret_mounts,
    }
}

impl Pod {
    /// Lays out `secret` (key → content) under `root` as the kubelet does for each
    /// secret mount: files owned by root, group fsGroup when set (group read added,
    /// as for every volume fsGroup applies to), mode defaultMode.
    fn lay_out(&self, root: &Path, secret: &[(&str, String)]) {
        use std::os::unix::fs::PermissionsExt;
        for (mount, _, mode) in &self.secret_mounts {
            let dir = root.join(mount.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).unwrap();
            for (key, content) in secret {
                let file = dir.join(key);
                std::fs::write(&file, content).unwrap();
                let group = self.fs_group.unwrap_or(0);
                std::os::unix::fs::chown(&file, Some(0), Some(group)).unwrap();
                let mode = match self.fs_group {
                    Some(_) => mode | 0o440,
                    None => *mode,
                };
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    }

    /// Runs the container's command (`binary` and its args, plus `extra`) as the pod's
    /// user and groups, with its environment (secret keys resolved from `secret`) and
    /// `injected` (what a webhook adds), the mounts under `root`.
    fn run(
        &self,
        root: &Path,
        binary: &Path,
        secret: &[(&str, String)],
        injected: &[(&str, String)],
        extra: &[&str],
    ) -> Output {
        let rooted = |value: &str| match value
            .find("=/")
            .map(|i| i + 1)
            .or_else(|| value.starts_with('/').then_some(0))
        {
            Some(at) => format!(
                "{}{}",
                &value[..at],
                root.join(value[at..].trim_start_matches('/')).display()
            ),
            None => value.to_string(),
        };
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={}", self.user))
            .arg(format!("--regid={}", self.group));
        match self.fs_group {
            Some(group) => command.arg(format!("--groups={group}")),
            None => command.arg("--clear-groups"),
        };
        command
            .arg("--")
            .arg(binary)
            .args(self.args.iter().map(|a| rooted(a)))
            .args(extra)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(root)
            .stdin(Stdio::null());
        for (name, value) in &self.env {
            match value {
                Ok(value) => {
                    command.env(name, rooted(value));
                }
                Err((key, optional)) => match secret.iter().find(|(k, _)| k == key) {
                    Some((_, value)) => {
                        command.env(name, value);
                    }
                    None => assert!(optional, "{name}: secret key {key} missing"),
                },
            }
        }
        for (name, value) in injected {
            command.env(name, rooted(value));
        }
        let output = command.output().expect("setpriv runs");
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A scratch root with the binary where the image puts it, readable by anyone.
fn image_root() -> (TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let root = TempDir::new();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = root.join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    let binary = bin.join("msgx-once");
    std::fs::copy(env!("CARGO_BIN_EXE_msgx-once"), &binary).unwrap();
    (root, binary)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `--check` passes and a run exports, as the manifest's pod, with `config` as the
/// Secret's app_config.yaml and `secret_redis_url` as its redis_url; `injected` and
/// `prepare` are what a webhook adds (variables, files).
fn pod_exports(
    manifest: &str,
    config: String,
    redis: &RedisServer,
    secret_redis_url: &str,
    injected: &[(&str, String)],
    prepare: &dyn Fn(&Path),
) -> Output {
    let pod = pod_of(manifest);
    let (root, binary) = image_root();
    prepare(root.path());
    let (push_url, pushes) = http_receiver();
    let secret = [
        ("app_config.yaml", config),
        ("client_secret", format!("{SIM_SECRET}\n")),
        ("redis_url", format!("{secret_redis_url}\n")),
        ("metrics_push_url", push_url),
    ];
    pod.lay_out(root.path(), &secret);
    let check = pod.run(root.path(), &binary, &secret, injected, &["--check"]);
    assert_eq!(
        check.code, 0,
        "{manifest}: {}\n{}",
        check.stdout, check.stderr
    );
    assert!(
        check.stdout.lines().all(|l| l.starts_with('✔')),
        "{manifest}: {}",
        check.stdout
    );
    let run = pod.run(root.path(), &binary, &secret, injected, &[]);
    assert_eq!(run.code, 0, "{manifest}: {}", run.stderr);
    run.assert_stderr_has("\"msg\":\"summary: window [");
    assert!(
        redis.len("ms_graph_exporter") > 0,
        "{manifest}: records in Redis"
    );
    let pushed = pushes
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("metrics pushed");
    assert!(
        pushed.line.starts_with("POST /metrics/job/msgx_once/"),
        "{}",
        pushed.line
    );
    run
}

#[test]
fn the_secret_cronjob_runs_as_its_pod_on_the_files_the_kubelet_lays_out() {
    assert!(
        is_root(),
        "this test lays out files as the kubelet (root) does: run as root"
    );
    let manifest = "scripts/k8s/cronjob.yaml";
    let sim = Sim::start(&["--rate", "3"]);
    // The example config, the secret and the Redis URL from the Secret's files.
    let redis = RedisServer::start();
    let run = pod_exports(
        manifest,
        example_config(&sim),
        &redis,
        &redis.url(),
        &[],
        &|_| {},
    );
    assert!(!run.stderr.contains("overrides"), "{}", run.stderr);
    // The original's own config file, with its redis_url: it wins over the mounted
    // file, as the original's precedence says, and says so; its page_size 50 too.
    let redis = RedisServer::start();
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    let original = originals_config(&sim, &redis.url(), true);
    let run = pod_exports(manifest, original, &redis, &nowhere, &[], &|_| {});
    for warning in [
        "option redis_url (from config file ",
        ") overrides redis_url_file (from environment variable GRAPH_REDIS_URL_FILE)",
        "option page_size 50 (from config file ",
        " caps keep-up at about 12 sign-ins/s at rate_limit 5/10 (each second read twice); \
         Graph allows 1000 a page",
    ] {
        assert!(run.stderr.contains(warning), "{warning}: {}", run.stderr);
    }
}

#[test]
fn the_workload_identity_cronjob_runs_as_its_pod_with_what_the_webhook_injects() {
    assert!(
        is_root(),
        "this test lays out files as the kubelet (root) does: run as root"
    );
    let manifest = "scripts/k8s/cronjob-workload-identity.yaml";
    let sim = Sim::start(&["--rate", "3", "--federated-token", "projected-sa-token"]);
    // What the Azure workload identity webhook adds: the variables, and the
    // projected service account token (default mode 0644, root-owned).
    let token_file = "/var/run/secrets/azure/tokens/azure-identity-token";
    let injected = [
        ("AZURE_CLIENT_ID", SIM_CLIENT.to_string()),
        ("AZURE_TENANT_ID", SIM_TENANT.to_string()),
        ("AZURE_AUTHORITY_HOST", sim.url()),
        ("AZURE_FEDERATED_TOKEN_FILE", token_file.to_string()),
    ];
    let project_token = |root: &Path| {
        let file = root.join(token_file.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "projected-sa-token").unwrap();
    };
    // The example config without tenant and client id: the webhook gives them.
    let redis = RedisServer::start();
    let example: String = example_config(&sim)
        .lines()
        .filter(|l| !l.starts_with("tenant:") && !l.starts_with("client_id:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let run = pod_exports(
        manifest,
        example,
        &redis,
        &redis.url(),
        &injected,
        &project_token,
    );
    assert!(!run.stderr.contains("overrides"), "{}", run.stderr);
    // The original's file as shipped but for its redis_url: its empty tenant,
    // client_id and client_secret fall through to what the webhook injects.
    let redis = RedisServer::start();
    let nowhere = format!("redis://127.0.0.1:{}/0", free_port());
    let original = originals_config(&sim, &redis.url(), false);
    let run = pod_exports(
        manifest,
        original,
        &redis,
        &nowhere,
        &injected,
        &project_token,
    );
    run.assert_stderr_has(
        ") overrides redis_url_file (from environment variable GRAPH_REDIS_URL_FILE)",
    );
}

#[test]
fn the_fleets_indexed_job_runs_its_shards_at_once_and_exports_each_tenant_once() {
    assert!(
        is_root(),
        "this test lays out files as the kubelet (root) does: run as root"
    );
    let manifest = "scripts/k8s/cronjob-fleet.yaml";
    let pods = pods_of(manifest);
    let value_of = |pod: &Pod, name: &str| -> String {
        pod.env
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, value)| value.clone().ok())
            .unwrap_or_else(|| panic!("{manifest}: no {name}"))
    };
    assert!(pods.len() >= 2, "{manifest}: a fleet of shards");
    // K is said twice, as completions and as GRAPH_SHARD: they must agree.
    assert_eq!(value_of(&pods[0], "GRAPH_SHARD"), pods.len().to_string());
    let tenants: Vec<String> = value_of(&pods[0], "GRAPH_TENANTS")
        .split(',')
        .map(str::to_string)
        .collect();
    assert!(tenants.len() > pods.len(), "more tenants than shards");
    // The manifest's own tenants, one application consented in each, both budgets
    // enforced as Graph does.
    let sim = Sim::start_fleet(&tenants, &["--rate", "3"]);
    let redis = RedisServer::start();
    // The example config without a tenant: the list is GRAPH_TENANTS.
    let config: String = example_config(&sim)
        .lines()
        .filter(|l| !l.starts_with("tenant:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (root, binary) = image_root();
    let secret = [
        ("app_config.yaml", config),
        ("client_secret", format!("{SIM_SECRET}\n")),
        ("redis_url", format!("{}\n", redis.url())),
    ];
    // Every pod lays out the same Secret.
    pods[0].lay_out(root.path(), &secret);
    let now = minutes_ago(5);
    sim.set_clock(now);
    let injected = [("MSGX_NOW", rfc3339(now))];
    // Every index at once, and the first twice (a pod of the previous K still running
    // while K changes): the tenants' locks let one of them export each.
    let runs: Vec<Output> = std::thread::scope(|scope| {
        let started: Vec<_> = pods
            .iter()
            .chain(std::iter::once(&pods[0]))
            .map(|pod| scope.spawn(|| pod.run(root.path(), &binary, &secret, &injected, &[])))
            .collect();
        started
            .into_iter()
            .map(|h| h.join().expect("a shard"))
            .collect()
    });
    // Each pod names its shard and its share; the shares add up to the fleet.
    let mut shares = 0;
    for (index, run) in runs.iter().take(pods.len()).enumerate() {
        assert_eq!(run.code, 0, "{}", run.stderr);
        let said = format!("shard {index}/{}: ", pods.len());
        let share: usize = run
            .stderr
            .lines()
            .find_map(|l| l.split(&said).nth(1))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("pod {index} does not say `{said}N of …`: {}", run.stderr));
        shares += share;
    }
    assert_eq!(shares, tenants.len(), "every tenant in exactly one shard");
    assert_eq!(runs[pods.len()].code, 0, "{}", runs[pods.len()].stderr);
    assert_eq!(sim.stats()["graph_429"].as_u64().unwrap_or(0), 0);
    // A first run reads the original's window: `streams` frames of 30 s.
    let start = lagged_end(now) - time::Duration::seconds(30 * 2);
    for tenant in &tenants {
        let expected = sim.tenant_records(tenant, start, lagged_end(now) - time::Duration::SECOND);
        assert!(!expected.is_empty());
        assert_same_records(redis.list(&format!("ms_graph_exporter:{tenant}")), expected);
    }
}

/// Whether `path` (relative to the context) is left out by `patterns` (the
/// `.dockerignore` forms the file uses: a name or path at the root, `**/*.ext`).
fn ignored(path: &str, patterns: &[&str]) -> bool {
    patterns.iter().any(|p| match p.strip_prefix("**/*") {
        Some(ending) => path.ends_with(ending),
        None => match p.strip_prefix('*') {
            Some(ending) => !path.contains('/') && path.ends_with(ending),
            None => path == *p || path.starts_with(&format!("{p}/")),
        },
    })
}

#[test]
fn the_image_build_context_leaves_out_the_build_output_and_git() {
    let rules = read("scripts/Containerfile.dockerignore");
    let patterns: Vec<&str> = rules
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // What `COPY . .` sends: every file of the checkout not ignored, as on disk.
    let mut sent = Vec::new();
    let mut pending = vec![std::path::PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(Path::new(ROOT).join(&relative)).unwrap() {
            let entry = entry.unwrap();
            let path = relative.join(entry.file_name());
            let shown = path.to_string_lossy().into_owned();
            if ignored(&shown, &patterns) {
                continue;
            }
            let meta = entry.metadata().unwrap();
            match meta.is_dir() {
                true => pending.push(path),
                false => sent.push((shown, meta.len())),
            }
        }
    }
    assert!(
        sent.iter().any(|(p, _)| p == "Cargo.lock"),
        "the sources are sent"
    );
    assert!(sent.iter().any(|(p, _)| p == "src/main.rs"));
    for (path, _) in &sent {
        assert!(
            !path.starts_with("target/") && !path.starts_with(".git/"),
            "{path} would be sent"
        );
    }
    let bytes: u64 = sent.iter().map(|(_, size)| size).sum();
    assert!(bytes < 20 << 20, "a context of {bytes} bytes");
    // Without git in the context, the commit comes as a build argument.
    let containerfile = read("scripts/Containerfile");
    assert!(containerfile.contains("ARG MSGX_GIT_COMMIT"));
    assert!(containerfile.contains("ENV MSGX_GIT_COMMIT=${MSGX_GIT_COMMIT}"));
    assert!(read("build.rs").contains("std::env::var(\"MSGX_GIT_COMMIT\")"));
}

/// The commands of the README's numbered step `step`'s shell block, as written.
fn readme_step_commands(step: &str) -> Vec<String> {
    let readme = read("README.md");
    let start = readme
        .find(&format!("\n{step}. **"))
        .unwrap_or_else(|| panic!("step {step} in the README"));
    let block = &readme[start..];
    let open = block.find("```sh\n").expect("a shell block") + "```sh\n".len();
    let close = open + block[open..].find("```").expect("the block ends");
    block[open..close]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readmes_backfill_of_an_added_source_exports_that_source_alone() {
    // Step 7 with the example config as an operator has it then: sources added.
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let dir = TempDir::new();
    let etc = dir.join("etc-msgx");
    std::fs::create_dir_all(&etc).unwrap();
    let config = format!(
        "{}sources: [signins, directory_audits]\nclient_secret: {SIM_SECRET}\nredis_url: {}\n",
        example_config(&sim),
        redis.url()
    );
    std::fs::write(etc.join("app_config.yaml"), config).unwrap();
    let until = minutes_ago(3);
    let since = until - time::Duration::minutes(5);
    // As written, but for this machine: no msgx user (the test's own), the scratch
    // directory for /etc/msgx, five minutes for thirty days, the window's start for T.
    let script: Vec<String> = readme_step_commands("7")
        .iter()
        .map(|line| {
            line.replace("install -o msgx ", "install ")
                .replace("sudo -u msgx ", "")
                .replace("/etc/msgx", etc.to_str().unwrap())
                .replace("--since -30d", &format!("--since {}", rfc3339(since)))
                .replace("--until T", &format!("--until {}", rfc3339(until)))
        })
        .collect();
    assert_eq!(script.len(), 2, "{script:?}");
    let binary_dir = Path::new(env!("CARGO_BIN_EXE_msgx-once")).parent().unwrap();
    let path = format!("{}:/usr/bin:/bin", binary_dir.display());
    let run = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script.join("\n")])
        .env_clear()
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{script:?}: {stderr}");
    assert_eq!(
        redis.len("ms_graph_exporter"),
        0,
        "sign-ins exported too: {stderr}"
    );
    assert_same_records(
        redis.list("ms_graph_exporter:directory_audits"),
        sim.records_of(
            "directory_audits",
            "activityDateTime",
            since,
            until - time::Duration::SECOND,
        ),
    );
    // The same backfill with the config file as it is: refused, both values named.
    let mut args = strings(&[
        "--app_config",
        etc.join("app_config.yaml").to_str().unwrap(),
    ]);
    args.extend(strings(&["--sources", "directory_audits"]));
    args.extend(backfill_flags(since, until));
    let refused = msgx(&args, &[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("option sources: is \"signins,directory_audits\" in the config file, which wins over the command line's \"directory_audits\"")
            && refused.stderr.contains("a backfill does not deduplicate"),
        "{}",
        refused.stderr
    );
    assert_eq!(redis.len("ms_graph_exporter"), 0);
}
