//! What a hostile or unlucky host hands msgx-once (issue 28): a FIFO or a device where
//! a file belongs, junk in Redis's budget keys, a config file of a million keys, text
//! that would forge a log line, tenants that are paths, empty lists, metrics files
//! that are not msgx's. Each ends in a clear error or a WARN, never a hang, unbounded
//! memory, a forged line or a silent change.

use std::time::Duration;

use crate::common::*;

/// A FIFO (nobody writes to it) in `dir`.
fn fifo(dir: &TempDir) -> String {
    let path = dir.join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    path.to_string_lossy().into_owned()
}

/// msgx-once with `args` and `env`, killed after `limit` (exit 124: it hung).
fn msgx_within(args: &[String], env: &[(&str, &str)], limit: Duration) -> Output {
    let script = format!("exec timeout -s KILL {} \"$0\" \"$@\"", limit.as_secs());
    msgx_in_bash(&script, args, env)
}

#[test]
fn a_fifo_or_a_device_named_as_a_file_is_exit_2_naming_the_option() {
    let dir = TempDir::new();
    let fifo = fifo(&dir);
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "not yet").unwrap();
    let cert = cert.to_string_lossy().into_owned();
    let id = ["--tenant", "t", "--client_id", "c"];
    let secret = ["--client_secret", "s"];
    // (arguments, environment, the option named)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let with =
        |extra: &[&'static str]| -> Vec<&'static str> { id.iter().chain(extra).copied().collect() };
    let fifo: &'static str = Box::leak(fifo.into_boxed_str());
    let cert: &'static str = Box::leak(cert.into_boxed_str());
    let cases: Vec<Case> = vec![
        (
            with(&["--client_secret_file", fifo]),
            vec![],
            "client_secret_file",
        ),
        (
            with(&["--client_secret_file", "/dev/zero"]),
            vec![],
            "client_secret_file",
        ),
        (
            with(&["--print_config"]),
            vec![("GRAPH_CLIENT_SECRET_FILE", "/dev/zero")],
            "client_secret_file",
        ),
        (
            with(&["--client_secret_file", fifo, "--print_config"]),
            vec![],
            "client_secret_file",
        ),
        (
            with(&[&secret[..], &["--redis_url_file", fifo]].concat()),
            vec![],
            "redis_url_file",
        ),
        (with(&["--app_config", fifo]), vec![], "app_config"),
        (with(&["--app_config", "/dev/zero"]), vec![], "app_config"),
        (
            with(&["--federated_token_file", fifo]),
            vec![],
            "federated_token_file",
        ),
        (
            with(&["--federated_token_file", "/dev/urandom"]),
            vec![],
            "federated_token_file",
        ),
        (
            with(&["--client_certificate", "/dev/zero"]),
            vec![],
            "client_certificate",
        ),
        (
            with(&[
                "--client_certificate",
                cert,
                "--client_certificate_key",
                fifo,
            ]),
            vec![],
            "client_certificate_key",
        ),
        (
            with(&[&secret[..], &["--redis_ca_file", fifo]].concat()),
            vec![],
            "redis_ca_file",
        ),
    ];
    for (args, env, option) in cases {
        let args = strings(&args);
        let run = msgx_within(&args, &env, Duration::from_secs(20));
        // --print_config shows what is wrong under "not ready to run yet", exit 0.
        let printed = args.contains(&"--print_config".to_string());
        assert_eq!(
            run.code,
            if printed { 0 } else { 2 },
            "{args:?} {env:?}: {}",
            run.stderr
        );
        let said = if printed { &run.stdout } else { &run.stderr };
        assert!(
            said.contains(&format!("option {option}: "))
                && (said.contains("not a regular file") || said.contains("is larger than")),
            "{args:?} {env:?}: {}",
            run.stderr
        );
    }
}
