//! Every way Entra lets the application in — a client secret, a certificate (PS256 and
//! RS256), workload identity federation, a managed identity (IMDS and App Service) —
//! end to end against the simulator's identity platform; token requests retried like
//! Graph requests; and no private key, assertion or federated token in any output.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use time::Duration as Span;

use crate::common::*;

/// A self-signed RSA certificate and its key, made by openssl: (cert, key, both in one).
fn certificate(dir: &TempDir, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key, both) = (
        dir.join(&format!("{name}.crt")),
        dir.join(&format!("{name}.key")),
        dir.join(&format!("{name}.pem")),
    );
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=msgx-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pem = std::fs::read_to_string(&key).unwrap() + &std::fs::read_to_string(&cert).unwrap();
    std::fs::write(&both, pem).unwrap();
    (cert, key, both)
}

/// A backfill of the last few minutes into Redis with `credential` flags; returns the
/// run and the records it should have delivered.
fn export(
    sim: &Sim,
    redis: &RedisServer,
    credential: &[&str],
    env: &[(&str, &str)],
) -> (Output, Vec<String>) {
    let until = minutes_ago(3);
    let since = until - Span::minutes(2);
    let mut args = sim.args_without_secret();
    args.extend(strings(credential));
    args.extend(strings(&[
        "--redis_url",
        &redis.url(),
        "--queue_key",
        "k",
        "--log_level",
        "trace",
    ]));
    args.extend(backfill_flags(since, until));
    let run = msgx(&args, env);
    (run, sim.records(since, until - Span::seconds(1)))
}

/// The base64 body of a PEM file's first block, e.g. a private key's.
fn pem_body(path: &PathBuf) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .take(3)
        .collect()
}

fn assert_no_secrets(output: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!output.contains(secret), "{secret:?} in output:\n{output}");
    }
    // No JWT (assertion or federated token) and no sim bearer token either.
    assert!(!output.contains("eyJ"), "a JWT in output:\n{output}");
    assert!(
        !output.contains("sim."),
        "a bearer token in output:\n{output}"
    );
}

#[test]
fn a_certificate_signs_ps256_assertions_by_default_and_rs256_on_request() {
    let dir = TempDir::new();
    let (cert, key, both) = certificate(&dir, "app");
    let (sim, redis) = sim_and_redis(&["--rate", "3", "--client-cert", cert.to_str().unwrap()]);
    let (run, expected) = export(
        &sim,
        &redis,
        &["--client_certificate", both.to_str().unwrap()],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(redis.list("k"), expected);
    let stats = sim.stats();
    assert_eq!(stats["assertion_PS256"], serde_json::json!(1), "{stats}");
    assert_eq!(stats["tokens_by_certificate"], serde_json::json!(1));
    assert_no_secrets(&run.stderr, &[&pem_body(&key)]);

    let redis = RedisServer::start();
    let (run, expected) = export(
        &sim,
        &redis,
        &[
            "--client_certificate",
            cert.to_str().unwrap(),
            "--client_certificate_key",
            key.to_str().unwrap(),
            "--client_assertion_alg",
            "rs256",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(redis.list("k"), expected);
    assert_eq!(sim.stats()["assertion_RS256"], serde_json::json!(1));
    assert_no_secrets(&run.stderr, &[&pem_body(&key)]);
}

#[test]
fn a_certificate_the_app_does_not_know_is_refused_with_700027() {
    let dir = TempDir::new();
    let (registered, _, _) = certificate(&dir, "registered");
    // A sound certificate and key, but not the one registered for the application.
    let (other, other_key, _) = certificate(&dir, "other");
    let (sim, redis) = sim_and_redis(&["--client-cert", registered.to_str().unwrap()]);
    let (run, _) = export(
        &sim,
        &redis,
        &[
            "--client_certificate",
            other.to_str().unwrap(),
            "--client_certificate_key",
            other_key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    run.assert_stderr_has("AADSTS700027: Client assertion failed signature validation");
    assert_eq!(sim.stats()["token_401"], serde_json::json!(1), "no retries");
    assert_no_secrets(&run.stderr, &[&pem_body(&other_key)]);
}

#[test]
fn a_missing_or_keyless_certificate_is_a_config_error() {
    let dir = TempDir::new();
    let (cert, _, _) = certificate(&dir, "app");
    let (sim, redis) = sim_and_redis(&[]);
    let (run, _) = export(
        &sim,
        &redis,
        &["--client_certificate", cert.to_str().unwrap()],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    run.assert_stderr_has(format!(
        "option client_certificate: no private key in {}",
        cert.display()
    ));
}

#[test]
fn workload_identity_reads_the_rotated_token_file_for_each_token() {
    let dir = TempDir::new();
    let token_file = dir.join("azure-identity-token");
    std::fs::write(&token_file, "federated-token-A\n").unwrap();
    // Two-second tokens and slow pages: the run asks for several tokens.
    let (sim, redis) = sim_and_redis(&[
        "--rate",
        "3",
        "--token-ttl",
        "2",
        "--latency-ms",
        "150",
        "--federated-token",
        "federated-token-A",
    ]);
    let until = minutes_ago(3);
    let since = until - Span::minutes(2);
    let mut args = sim.args_without_secret();
    args.extend(strings(&[
        "--redis_url",
        &redis.url(),
        "--queue_key",
        "k",
        "--page_size",
        "10",
    ]));
    args.extend(strings(&["--log_level", "trace"]));
    args.extend(backfill_flags(since, until));
    let env = [
        ("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap()),
        ("AZURE_TENANT_ID", SIM_TENANT),
    ];
    let running = Running::start_with_env(&args, &env);
    assert!(
        wait_for(Duration::from_secs(20), || sim.stats()["tokens_issued"]
            == serde_json::json!(1)),
        "a first token"
    );
    // The kubelet rotates the file; the old token then expires.
    sim.get("/_sim/federated?accept=federated-token-A,federated-token-B");
    std::fs::write(&token_file, "federated-token-B\n").unwrap();
    sim.get("/_sim/federated?accept=federated-token-B");
    let run = running.finish(Duration::from_secs(60));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(
        redis.list("k"),
        sim.records(since, until - Span::seconds(1)),
    );
    let stats = sim.stats();
    assert_eq!(
        stats["federated_federated-token-A"],
        serde_json::json!(1),
        "{stats}"
    );
    assert!(
        stats["federated_federated-token-B"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
    assert_no_secrets(&run.stderr, &["federated-token-A", "federated-token-B"]);
}

#[test]
fn a_managed_identity_gets_tokens_from_imds_or_app_service() {
    let (sim, redis) = sim_and_redis(&[
        "--rate",
        "3",
        "--managed-client-id",
        "mi-client",
        "--identity-header",
        "app-service-header-Zx9",
    ]);
    let imds = [
        "--auth",
        "managed_identity",
        "--client_id",
        "mi-client",
        "--msi_endpoint",
        &sim.url(),
    ];
    // No tenant needed; args_without_secret's tenant and client id are overridden.
    let (run, expected) = export(&sim, &redis, &imds, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(redis.list("k"), expected);
    assert_eq!(sim.stats()["tokens_by_imds"], serde_json::json!(1));

    let redis = RedisServer::start();
    let endpoint = format!("{}/msi/token", sim.url());
    let (run, expected) = export(
        &sim,
        &redis,
        &["--auth", "managed_identity", "--client_id", "mi-client"],
        &[
            ("IDENTITY_ENDPOINT", &endpoint),
            ("IDENTITY_HEADER", "app-service-header-Zx9"),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(redis.list("k"), expected);
    assert_eq!(sim.stats()["tokens_by_app_service"], serde_json::json!(1));
    assert_no_secrets(&run.stderr, &["app-service-header-Zx9"]);

    // A system-assigned identity the VM does not have: refused, exit 3.
    let (run, _) = export(
        &sim,
        &redis,
        &["--auth", "managed_identity", "--msi_endpoint", &sim.url()],
        &[],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    run.assert_stderr_has("invalid_request): Identity not found");
}

#[test]
fn the_azure_sdk_environment_alone_signs_in() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let now = minutes_ago(5);
    sim.set_clock(now);
    let args = strings(&[
        "--graph_url",
        &sim.url(),
        "--redis_url",
        &redis.url(),
        "--queue_key",
        "k",
        "--rate_limit",
        "0",
    ]);
    let env = [
        ("AZURE_TENANT_ID", SIM_TENANT),
        ("AZURE_CLIENT_ID", SIM_CLIENT),
        ("AZURE_CLIENT_SECRET", SIM_SECRET),
        ("AZURE_AUTHORITY_HOST", &sim.url()),
        ("MSGX_NOW", &rfc3339(now)),
    ];
    let run = msgx(&args, &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(redis.len("k") > 0);
}

#[test]
fn the_first_token_request_is_retried_like_graph_requests() {
    let (sim, redis) = sim_and_redis(&["--rate", "3", "--fail-tokens", "2"]);
    let (run, expected) = export(
        &sim,
        &redis,
        &["--client_secret", SIM_SECRET],
        &[("MSGX_BACKOFF_MS", "5")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(redis.list("k"), expected);
    let retries: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("[WARN] token endpoint") && l.contains("HTTP 503; retry "))
        .collect();
    assert_eq!(retries.len(), 2, "{}", run.stderr);
    assert_eq!(sim.stats()["token_503"], serde_json::json!(2));

    // Nothing listening: every attempt fails, then exit 1.
    let mut args = sim.args();
    args.extend(strings(&[
        "--login_url",
        &format!("http://127.0.0.1:{}", free_port()),
    ]));
    args.extend(strings(&[
        "--max_retries",
        "3",
        "--redis_url",
        &redis.url(),
    ]));
    let run = msgx(&args, &[("MSGX_BACKOFF_MS", "5")]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stderr.matches("; retry ").count(), 3, "{}", run.stderr);
}
