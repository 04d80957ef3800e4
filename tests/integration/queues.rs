//! Redis as operators run it: streams read back by a consumer group, a channel nobody
//! listens on loses nothing, backpressure when consumers fall behind, and a whole cron
//! replay as the README's least-privilege ACL user.

use std::time::Duration;

use time::{Duration as Span, OffsetDateTime};

use crate::common::*;

/// The arguments of a run at `now` into `url` and `key` (the simulator's clock set to
/// `now`), plus `extra`.
fn args_at(sim: &Sim, now: OffsetDateTime, url: &str, key: &str, extra: &[&str]) -> Vec<String> {
    sim.set_clock(now);
    let mut args = sim.args();
    args.extend(strings(&["--redis_url", url, "--queue_key", key]));
    args.extend(strings(extra));
    args
}

#[test]
fn a_stream_is_read_back_by_a_consumer_group_once_in_the_lists_order() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    for minute in 0..3 {
        let now = t0 + Span::minutes(minute);
        // One stream and one writer: pages land in one order, comparable.
        let one = [
            "--page_size",
            "50",
            "--streams",
            "1",
            "--greenlets_count",
            "1",
        ];
        let mut stream = one.to_vec();
        stream.extend(["--queue_type", "stream"]);
        let run = tick(&sim, &redis, "s", now, &stream);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let run = tick(&sim, &redis, "l", now, &one);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let mut connection = redis.connection();
    redis::cmd("XGROUP")
        .arg(&["CREATE", "s", "siem", "0"])
        .exec(&mut connection)
        .unwrap();
    // [[stream, [[id, [field, value]], …]]]
    type Read = Vec<(String, Vec<(String, Vec<String>)>)>;
    let read: Read = redis::cmd("XREADGROUP")
        .arg(&[
            "GROUP", "siem", "c1", "COUNT", "100000", "STREAMS", "s", ">",
        ])
        .query(&mut connection)
        .unwrap();
    let records: Vec<String> = read[0]
        .1
        .iter()
        .map(|(_, fields)| {
            assert_eq!(fields[0], "record");
            fields[1].clone()
        })
        .collect();
    // With one stream the first window is one 30-second frame.
    let expected = sim.records(
        lagged_end(t0) - Span::seconds(30),
        lagged_end(t0 + Span::minutes(2)) - Span::seconds(1),
    );
    assert_same_records(records.clone(), expected);
    // Page by page in Graph's order, as the list got them.
    let list = redis.list("l");
    let first_difference = records.iter().zip(&list).position(|(a, b)| a != b);
    assert_eq!(
        first_difference,
        None,
        "the stream's order is the list's ({} vs {}): {:?} vs {:?}",
        records.len(),
        list.len(),
        first_difference.map(|i| &records[i]),
        first_difference.map(|i| &list[i])
    );
    let again: Option<Read> = redis::cmd("XREADGROUP")
        .arg(&["GROUP", "siem", "c1", "STREAMS", "s", ">"])
        .query(&mut connection)
        .unwrap();
    assert!(again.is_none_or(|r| r.is_empty()), "each entry once");
}

#[test]
fn a_channel_nobody_listens_on_loses_nothing_and_the_next_run_publishes_it() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let t0 = minutes_ago(30);
    let channel = ["--queue_type", "channel"];
    let run = tick(&sim, &redis, "ch", t0, &channel);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let records: usize = run.summary_field("records").parse().unwrap();
    assert_eq!(run.summary_field("delivered"), "0");
    assert_eq!(run.summary_field("unheard"), records.to_string());
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("[WARN] channel ch has no subscriber"))
        .collect();
    assert_eq!(warnings.len(), 1, "one WARN per run: {}", run.stderr);
    // Only the seen-set's floor mark, no id.
    let seen: Vec<String> = redis::cmd("ZRANGE")
        .arg(&["{ch}:msgx:seen", "0", "-1"])
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(seen, ["msgx floor"], "nothing marked delivered");

    // A subscriber is back: the next run publishes the owed minute and its own.
    let mut subscriber = redis.connection();
    subscriber
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe("ch").unwrap();
    let t1 = t0 + Span::minutes(1);
    let run = tick(&sim, &redis, "ch", t1, &channel);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut received = Vec::new();
    while let Ok(message) = pubsub.get_message() {
        received.push(message.get_payload::<String>().unwrap());
    }
    assert_same_records(
        received,
        sim.records(origin(t0), lagged_end(t1) - Span::seconds(1)),
    );
}

#[test]
fn fire_and_forget_is_a_choice() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let run = tick(
        &sim,
        &redis,
        "ch",
        minutes_ago(30),
        &[
            "--queue_type",
            "channel",
            "--channel_allow_no_subscribers",
            "true",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.summary_field("delivered"), run.summary_field("records"));
    assert!(!run.stderr.contains("no subscriber"));
}

#[test]
fn a_queue_its_consumers_left_full_holds_the_watermark_until_they_drain_it() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let mut connection = redis.connection();
    redis::cmd("RPUSH")
        .arg(&["k", "a", "b", "c", "d", "e"])
        .exec(&mut connection)
        .unwrap();
    let t0 = minutes_ago(30);
    let limit = ["--max_queue_len", "5"];
    let run = tick(&sim, &redis, "k", t0, &limit);
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has("consumer behind: k holds 5 >= max_queue_len 5");
    assert_eq!(redis.len("k"), 5, "nothing written");
    // The consumers drain it; the next run delivers everything once.
    redis::cmd("DEL").arg("k").exec(&mut connection).unwrap();
    let t1 = t0 + Span::minutes(1);
    let run = tick(&sim, &redis, "k", t1, &["--max_queue_len", "100000"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_records(
        redis.list("k"),
        sim.records(origin(t0), lagged_end(t1) - Span::seconds(1)),
    );
}

#[test]
fn a_whole_cron_replay_runs_as_the_least_privileged_user() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let mut admin = redis.connection();
    let url = readme_acl_user(&redis, "acl-pw-Qx7");
    // A run as that user at `now`, with `extra` flags.
    let run_at = |now: OffsetDateTime, extra: &[&str]| {
        let args = args_at(&sim, now, &url, "ms_graph_exporter", extra);
        msgx(&args, &[("MSGX_NOW", &rfc3339(now))])
    };
    let t0 = minutes_ago(30);
    for minute in 0..3 {
        let extra = [
            "--rate_limit",
            "100/1",
            "--sources",
            "signins,directory_audits",
        ];
        let run = run_at(t0 + Span::minutes(minute), &extra);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(!run.stderr.contains("acl-pw-Qx7"));
    }
    let last = lagged_end(t0 + Span::minutes(2)) - Span::seconds(1);
    assert_same_records(
        redis.list("ms_graph_exporter"),
        sim.records(origin(t0), last),
    );
    // A right taken away is named, with the ACL line to add, and not retried (a
    // stateless run pushes without a script).
    redis::cmd("ACL")
        .arg(&["SETUSER", "msgx", "-rpush"])
        .exec(&mut admin)
        .unwrap();
    let run = run_at(
        t0 + Span::minutes(3),
        &["--rate_limit", "0", "--state", "off"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has("'rpush' command");
    run.assert_stderr_has("ACL SETUSER <user> +rpush");
    assert!(!run.stderr.contains("; retry "), "{}", run.stderr);
}

#[test]
fn rediss_verifies_the_server_against_a_private_ca_and_the_host_name() {
    let (_dir, ca, cert, key) = private_ca();
    let tls_port = free_port().to_string();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let sim = Sim::start(&["--rate", "3"]);
    let now = minutes_ago(10);
    sim.set_clock(now);
    let run_with = |url: &str, extra: &[&str]| {
        let mut args = sim.args();
        args.extend(strings(&[
            "--redis_url",
            url,
            "--queue_key",
            "tls",
            "--state",
            "off",
        ]));
        args.extend(strings(extra));
        msgx(
            &args,
            &[("MSGX_NOW", &rfc3339(now)), ("MSGX_BACKOFF_MS", "1")],
        )
    };
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let run = run_with(&url, &["--redis_ca_file", &ca]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(redis.len("tls").to_string(), run.summary_field("delivered"));
    // The system's roots do not know the private CA: refused, at once, saying where
    // the CA goes.
    let run = run_with(&url, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has("certificate");
    run.assert_stderr_has("give the CA that signed it in redis_ca_file");
    assert!(!run.stderr.contains("; retry "), "{}", run.stderr);
    // The certificate names 127.0.0.1, not localhost.
    let run = run_with(
        &format!("rediss://localhost:{tls_port}/0"),
        &["--redis_ca_file", &ca],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    run.assert_stderr_has("certificate");
    // Verification off only on request, and said every run.
    let run = run_with(&url, &["--redis_tls_insecure", "true"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_stderr_has(
        "[WARN] redis_tls_insecure: the Redis server's certificate is not verified",
    );
}

#[test]
fn a_sentinel_failover_mid_run_loses_nothing_and_repeats_nothing() {
    let sim = Sim::start(&["--rate", "5", "--latency-ms", "60"]);
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let sentinel = SentinelServer::start("msgx", primary.port);
    let in_sync = || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.connection())
            .unwrap_or_default();
        let known: Vec<redis::Value> = sentinel.ask(&["replicas", "msgx"]).unwrap_or_default();
        info.contains("master_link_status:up") && known.len() == 1
    };
    assert!(
        wait_for(Duration::from_secs(30), in_sync),
        "the replica syncs and the sentinel knows it"
    );
    let url = format!("redis+sentinel://127.0.0.1:{}/msgx/0", sentinel.port);
    let run_at = |now: OffsetDateTime| {
        let args = args_at(&sim, now, &url, "k", &["--page_size", "20"]);
        Running::start_with_env(&args, &[("MSGX_NOW", &rfc3339(now))])
    };
    let t0 = minutes_ago(60);
    let first = run_at(t0).finish(Duration::from_secs(60));
    assert_eq!(first.code, 0, "{}", first.stderr);
    // Ten minutes of backlog, paged slowly; the primary dies halfway.
    let t1 = t0 + Span::minutes(10);
    let running = run_at(t1);
    assert!(
        wait_for(Duration::from_secs(60), || replica.len("k") >= 1000),
        "pages flow: {}",
        running.stderr()
    );
    primary.kill();
    let run = running.finish(Duration::from_secs(120));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let promoted: Option<Vec<String>> = sentinel.ask(&["get-master-addr-by-name", "msgx"]);
    assert_eq!(
        promoted.unwrap()[1],
        replica.port.to_string(),
        "the replica took over"
    );
    assert_same_records(
        replica.list("k"),
        sim.records(origin(t0), lagged_end(t1) - Span::seconds(1)),
    );
}

fn node_id(node: &RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node.connection())
        .unwrap()
}

/// Moves `slot` from `from` to `to` while clients use it: IMPORTING/MIGRATING, MIGRATE of
/// its keys, then the new owner announced to every node (clients then get MOVED).
fn move_slot(nodes: &[RedisServer], slot: u16, from: usize, to: usize) {
    let (source, target) = (&nodes[from], &nodes[to]);
    let slot = slot.to_string();
    let mut s = source.connection();
    let mut t = target.connection();
    redis::cmd("CLUSTER")
        .arg(&["SETSLOT", &slot, "IMPORTING", &node_id(source)])
        .exec(&mut t)
        .unwrap();
    redis::cmd("CLUSTER")
        .arg(&["SETSLOT", &slot, "MIGRATING", &node_id(target)])
        .exec(&mut s)
        .unwrap();
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg(&["GETKEYSINSLOT", &slot, "100"])
            .query(&mut s)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        redis::cmd("MIGRATE")
            .arg(&[
                "127.0.0.1",
                &target.port.to_string(),
                "",
                "0",
                "5000",
                "REPLACE",
                "KEYS",
            ])
            .arg(&keys)
            .exec(&mut s)
            .unwrap();
    }
    for node in nodes {
        redis::cmd("CLUSTER")
            .arg(&["SETSLOT", &slot, "NODE", &node_id(target)])
            .exec(&mut node.connection())
            .unwrap();
    }
}

#[test]
fn a_cluster_keeps_every_script_in_one_slot_and_rides_out_a_moved_slot() {
    let nodes = cluster();
    let seeds: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let sim = Sim::start(&["--rate", "3", "--latency-ms", "40"]);
    let joined = seeds.join(",");
    let cluster_flags = [
        "--redis_cluster",
        joined.as_str(),
        "--sources",
        "signins,directory_audits",
        "--rate_limit",
        "1000/1",
        "--page_size",
        "10",
    ];
    let run_at = |now: OffsetDateTime| {
        let args = args_at(&sim, now, &nodes[0].url(), "k", &cluster_flags);
        Running::start_with_env(&args, &[("MSGX_NOW", &rfc3339(now))])
    };
    let mut client = cluster_connection(&seeds);
    let slot: u16 = redis::cmd("CLUSTER")
        .arg(&["KEYSLOT", "k"])
        .query(&mut client)
        .unwrap();
    let owner = |slot: u16| {
        nodes
            .iter()
            .position(|n| {
                let count: i64 = redis::cmd("CLUSTER")
                    .arg(&["COUNTKEYSINSLOT", &slot.to_string()])
                    .query(&mut n.connection())
                    .unwrap_or(0);
                count > 0
            })
            .expect("a node holds the slot's keys")
    };
    let t0 = minutes_ago(30);
    let first = run_at(t0).finish(Duration::from_secs(60));
    assert_eq!(first.code, 0, "{}", first.stderr);
    // Ten minutes to catch up in small pages; the queue's slot moves meanwhile.
    let t1 = t0 + Span::minutes(10);
    let running = run_at(t1);
    let from = owner(slot);
    let length = |c: &mut redis::cluster::ClusterConnection| -> i64 {
        redis::cmd("LLEN").arg("k").query(c).unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(60), || length(&mut client) >= 300),
        "pages flow: {}",
        running.stderr()
    );
    move_slot(&nodes, slot, from, (from + 1) % 3);
    let run = running.finish(Duration::from_secs(120));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(owner(slot), (from + 1) % 3, "the slot moved");
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(&["k", "0", "-1"])
        .query(&mut client)
        .unwrap();
    assert_same_records(
        list,
        sim.records(origin(t0), lagged_end(t1) - Span::seconds(1)),
    );
    let audits: Vec<String> = redis::cmd("LRANGE")
        .arg(&["k:directory_audits", "0", "-1"])
        .query(&mut client)
        .unwrap();
    assert_same_records(
        audits,
        sim.records_of(
            "directory_audits",
            "activityDateTime",
            origin(t0),
            lagged_end(t1) - Span::seconds(1),
        ),
    );
}
