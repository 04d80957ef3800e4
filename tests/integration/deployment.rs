//! The deployment files work as written: the crontab line runs under cron's bare
//! environment with the crontab's PATH where the README's install puts the binary,
//! and the Kubernetes manifests and Containerfile hold the hardening they promise.

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
        .find(|l| l.starts_with("cargo install "))
        .expect("an install command in the README");
    assert!(
        install.contains("--root /usr/local") && install.contains("--bin msgx-once"),
        "{install}"
    );
    assert!(path.split(':').any(|p| p == "/usr/local/bin"), "{path}");

    // A scratch root: the binary where the install puts it, the config and log
    // directories the crontab names.
    let sim = Sim::start(&["--rate", "3"]);
    let redis = RedisServer::start();
    let root = TempDir::new();
    let scratch = |p: &str| root.path().join(p.trim_start_matches('/'));
    for dir in [
        "/usr/local/bin",
        "/etc/msgx",
        "/var/log/msgx",
        "/var/lib/msgx",
    ] {
        std::fs::create_dir_all(scratch(dir)).unwrap();
    }
    std::fs::copy(
        env!("CARGO_BIN_EXE_msgx-once"),
        scratch("/usr/local/bin/msgx-once"),
    )
    .unwrap();
    std::fs::write(
        scratch("/etc/msgx/app_config.yaml"),
        format!(
            "tenant: {SIM_TENANT}\nclient_id: {SIM_CLIENT}\nclient_secret: {SIM_SECRET}\n\
             graph_url: {url}\nlogin_url: {url}\nredis_url: {}\nqueue_key: cron\nrate_limit: 0\n",
            redis.url(),
            url = sim.url()
        ),
    )
    .unwrap();
    let rooted = |text: &str| {
        text.split(' ')
            .map(|word| match word.find('/') {
                Some(at) if word[at..].starts_with("/etc/") || word[at..].starts_with("/var/") => {
                    format!("{}{}", &word[..at], scratch(&word[at..]).display())
                }
                _ => word.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rooted_path: Vec<String> = path
        .split(':')
        .map(|p| match p {
            "/usr/local/bin" => scratch(p).display().to_string(),
            other => other.to_string(),
        })
        .collect();
    let run = |path: &str| {
        Command::new("env")
            .args([
                "-i",
                &format!("PATH={path}"),
                "SHELL=/bin/sh",
                "/bin/sh",
                "-c",
            ])
            .arg(rooted(&command))
            .stdin(Stdio::null())
            .output()
            .expect("sh runs")
    };
    // Without the install, cron would mail "not found" (127).
    let missing = run(&path);
    assert_eq!(missing.status.code(), Some(127));
    let ran = run(&rooted_path.join(":"));
    assert_eq!(
        ran.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let log = std::fs::read_to_string(scratch("/var/log/msgx/msgx-once.log")).unwrap();
    assert!(log.contains("[INFO] summary: window ["), "{log}");
    assert!(redis.len("cron") > 0);
    let metrics = std::fs::read_to_string(scratch("/var/lib/msgx/msgx.prom")).unwrap();
    assert!(metrics.contains("\nmsgx_exit_code 0\n"), "{metrics}");
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
    for file in [
        "scripts/k8s/cronjob.yaml",
        "scripts/k8s/cronjob-workload-identity.yaml",
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
        assert_eq!(jobs, 1, "{file}");
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
