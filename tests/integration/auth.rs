//! Authentication: refusals exit 3 with the AADSTS code, and the secret never shows.

use crate::common::*;

fn with_credentials(sim: &Sim, tenant: &str, secret: &str, extra: &[&str]) -> Vec<String> {
    let url = sim.url();
    let mut args = strings(&[
        "--tenant",
        tenant,
        "--client_id",
        SIM_CLIENT,
        "--client_secret",
        secret,
        "--graph_url",
        &url,
        "--login_url",
        &url,
        "--queue_backend",
        "file",
    ]);
    args.extend(strings(extra));
    args
}

#[test]
fn wrong_secret_exits_3_with_the_aadsts_code_and_never_shows_the_secret() {
    let sim = Sim::start(&[]);
    let secret = "Wr0ng-Secret-Value~42";
    for level in ["info", "trace"] {
        let run = msgx(
            &with_credentials(&sim, SIM_TENANT, secret, &["--log_level", level]),
            &[],
        );
        assert_eq!(run.code, 3, "{}", run.stderr);
        run.assert_stderr_has("AADSTS7000215");
        run.assert_stderr_has("invalid_client");
        assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret));
    }
    assert_eq!(
        sim.stats()["graph_200"],
        serde_json::Value::Null,
        "nothing fetched"
    );
}

#[test]
fn secret_from_the_environment_is_not_shown_either() {
    let sim = Sim::start(&[]);
    let mut args = with_credentials(&sim, SIM_TENANT, "x", &["--log_level", "trace"]);
    let at = args.iter().position(|a| a == "--client_secret").unwrap();
    args.drain(at..at + 2);
    let secret = "Env-Secret-Wrong-77";
    let run = msgx(&args, &[("GRAPH_CLIENT_SECRET", secret)]);
    assert_eq!(run.code, 3);
    assert!(!run.stderr.contains(secret));
}

#[test]
fn unknown_tenant_exits_3_with_aadsts90002() {
    let sim = Sim::start(&[]);
    let run = msgx(
        &with_credentials(&sim, "no-such-tenant.example", SIM_SECRET, &[]),
        &[],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    run.assert_stderr_has("AADSTS90002");
}

#[test]
fn a_good_run_never_logs_the_token_or_secret_even_at_trace() {
    let sim = Sim::start(&["--rate", "2"]);
    let run = msgx(
        &with_credentials(&sim, SIM_TENANT, SIM_SECRET, &["--log_level", "trace"]),
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains(SIM_SECRET));
    assert!(
        !run.stderr.contains("sim."),
        "a token leaked: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("Bearer"));
    assert_eq!(
        sim.stats()["tokens_issued"],
        1,
        "one token shared by all threads"
    );
}
