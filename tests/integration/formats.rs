//! `record_format`: the records in the shapes SIEM parsers already read, checked
//! against what no one here wrote — Microsoft's documented diagnostic-settings records
//! (tests/fixtures/azure_monitor, CC BY 4.0) and OCSF's own JSON Schema of class 3002
//! (tests/fixtures/ocsf, Apache-2.0).

use serde_json::{Map, Value};
use time::Duration as Span;

use crate::common::*;

/// The simulator's tenant GUID (the first tenant's records name it; its tokens carry
/// it as `tid`): what `tenantId` must be when the tenant is configured by name.
const TENANT_GUID: &str = "4a06f77b-6bdb-4f5b-b1c4-2b1a5d2e1a2b";

const SIGN_INS: [(&str, &str); 4] = [
    ("signins", "SignInLogs"),
    ("signins_noninteractive", "NonInteractiveUserSignInLogs"),
    ("signins_service_principal", "ServicePrincipalSignInLogs"),
    ("signins_managed_identity", "ManagedIdentitySignInLogs"),
];

/// Graph (beta) names the conditions a policy met, diagnostic records give bit flags:
/// kept as Graph's (docs/record-formats.md).
const CA_FLAGS: &[(&str, &str)] = &[
    (
        "properties.appliedConditionalAccessPolicies[].conditionsSatisfied",
        "Graph's enum names, not the diagnostic bit flags",
    ),
    (
        "properties.appliedConditionalAccessPolicies[].conditionsNotSatisfied",
        "Graph's enum names, not the diagnostic bit flags",
    ),
];

fn fixture(name: &str) -> Map<String, Value> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    match serde_json::from_str(&text).expect("fixture JSON") {
        Value::Object(members) => members,
        _ => panic!("{path}: not an object"),
    }
}

fn object(record: &str) -> Map<String, Value> {
    match serde_json::from_str(record).expect("JSON record") {
        Value::Object(members) => members,
        other => panic!("not an object: {other}"),
    }
}

/// A JSON value's type, as the checks compare them.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `ours` against a real record (`sample`) of the same category: every member of the
/// envelope is one the sample has, of the sample's type, except the divergences
/// named in `differ` (member → why); inside `properties`, every member both have is of
/// the same type (Graph's nulls aside), down through objects and the elements of
/// arrays, except those in `differ` too (by dotted path).
fn like_sample(
    ours: &Map<String, Value>,
    sample: &Map<String, Value>,
    differ: &[(&str, &str)],
    label: &str,
) {
    let differs = |name: &str| differ.iter().any(|(n, _)| *n == name);
    for (name, value) in ours {
        if differs(name) {
            continue;
        }
        let theirs = sample
            .get(name)
            .unwrap_or_else(|| panic!("{label}: envelope member {name} is not in the sample"));
        assert_eq!(kind(value), kind(theirs), "{label}: type of {name}");
    }
    let (Some(ours), Some(theirs)) = (ours.get("properties"), sample.get("properties")) else {
        panic!("{label}: no properties");
    };
    same_types(ours, theirs, "properties", &differs, label);
}

fn same_types(
    ours: &Value,
    theirs: &Value,
    path: &str,
    differs: &dyn Fn(&str) -> bool,
    label: &str,
) {
    if ours.is_null() || theirs.is_null() || differs(path) {
        return;
    }
    assert_eq!(kind(ours), kind(theirs), "{label}: type of {path}");
    match (ours, theirs) {
        (Value::Object(ours), Value::Object(theirs)) => {
            for (name, value) in ours {
                if let Some(their) = theirs.get(name) {
                    same_types(value, their, &format!("{path}.{name}"), differs, label);
                }
            }
        }
        (Value::Array(ours), Value::Array(theirs)) => {
            if let Some(their) = theirs.first() {
                for value in ours {
                    same_types(value, their, &format!("{path}[]"), differs, label);
                }
            }
        }
        _ => {}
    }
}

/// Members every record of the category has.
fn has_all(record: &Map<String, Value>, names: &[&str], label: &str) {
    for name in names {
        assert!(record.contains_key(*name), "{label}: no {name}: {record:?}");
    }
}

/// The ids of Graph's records, in order, and of the shaped ones (in `properties`).
fn ids(records: &[String], inside: Option<&str>) -> Vec<String> {
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| {
            let record = object(r);
            let record = match inside {
                Some(member) => record[member].as_object().expect("inside").clone(),
                None => record,
            };
            record["id"].as_str().expect("id").to_string()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn azure_monitor_writes_each_category_as_microsofts_diagnostic_settings_do() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let now = minutes_ago(30);
    let run = tick(
        &sim,
        &redis,
        "am",
        now,
        &["--sources", ALL_SOURCES, "--record_format", "azure_monitor"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_stderr_has(
        "[WARN] record_format azure_monitor: security_alerts has no shape in it and is \
             written as Graph sends it",
    );
    let (start, end) = (origin(now), lagged_end(now) - Span::seconds(1));
    let key = |source: &str| match source {
        "signins" => "am".to_string(),
        other => format!("am:{other}"),
    };

    let sample = fixture("azure_monitor/signinlogs.microsoft-docs.json");
    let mut failures = 0;
    let mut without_ip = 0;
    for (source, category) in SIGN_INS {
        let written = redis.list(&key(source));
        let graph = sim.records_of(source, "createdDateTime", start, end);
        assert!(!graph.is_empty(), "{source}");
        assert_eq!(
            ids(&written, Some("properties")),
            ids(&graph, None),
            "{source}"
        );
        for record in &written {
            let record = object(record);
            let label = format!("{source} {}", record["properties"]["id"]);
            like_sample(&record, &sample, CA_FLAGS, &label);
            has_all(
                &record,
                &[
                    "time",
                    "resourceId",
                    "operationName",
                    "operationVersion",
                    "category",
                    "tenantId",
                    "resultType",
                    "resultSignature",
                    "durationMs",
                    "correlationId",
                    "Level",
                    "properties",
                ],
                &label,
            );
            let properties = record["properties"].as_object().unwrap();
            assert_eq!(record["category"], category, "{label}");
            assert_eq!(record["tenantId"], TENANT_GUID, "{label}");
            assert_eq!(
                record["resourceId"],
                format!("/tenants/{TENANT_GUID}/providers/Microsoft.aadiam"),
                "{label}"
            );
            assert_eq!(record["operationName"], "Sign-in activity");
            assert_eq!(record["time"], properties["createdDateTime"], "{label}");
            assert_eq!(record["durationMs"], 0);
            assert_eq!(record["Level"], 4);
            // resultType a string, the errorCode inside a number.
            let code = properties["status"]["errorCode"]
                .as_i64()
                .expect("errorCode a number");
            assert_eq!(record["resultType"], code.to_string(), "{label}");
            match code {
                0 => {
                    assert!(!record.contains_key("resultDescription"), "{label}");
                    assert!(
                        properties["status"].get("failureReason").is_none(),
                        "no failureReason on success: {label}"
                    );
                }
                _ => {
                    failures += 1;
                    assert_eq!(
                        record["resultDescription"], properties["status"]["failureReason"],
                        "{label}"
                    );
                }
            }
            match properties["ipAddress"].as_str() {
                Some("") | None => {
                    without_ip += 1;
                    assert!(!record.contains_key("callerIpAddress"), "{label}");
                }
                Some(ip) => assert_eq!(record["callerIpAddress"], ip, "{label}"),
            }
            match properties["userDisplayName"].as_str() {
                Some("") | None => assert!(!record.contains_key("identity"), "{label}"),
                Some(name) => assert_eq!(record["identity"], name, "{label}"),
            }
            assert!(!properties.contains_key("signInEventTypes"), "{label}");
        }
    }
    assert!(failures > 0 && without_ip > 0, "{failures} {without_ip}");

    // Directory audits: the 2018 sample writes `level: "Informational"` and
    // `callerIpAddress: "<null>"`, and `result` as 0; records since 2022 write `Level: 4`
    // (docs/record-formats.md), an IP or nothing, and Elastic needs `result` a string.
    let sample = fixture("azure_monitor/auditlogs.microsoft-docs.json");
    let written = redis.list(&key("directory_audits"));
    let graph = sim.records_of("directory_audits", "activityDateTime", start, end);
    assert!(!graph.is_empty());
    assert_eq!(ids(&written, Some("properties")), ids(&graph, None));
    for record in &written {
        let record = object(record);
        let label = format!("directory_audits {}", record["properties"]["id"]);
        like_sample(
            &record,
            &sample,
            &[
                ("Level", "since 2022 `Level: 4`, the sample's `level`"),
                ("resultDescription", "the resultReason, when there is one"),
                ("properties.result", "a string, as Elastic's pipeline needs"),
            ],
            &label,
        );
        let properties = record["properties"].as_object().unwrap();
        assert_eq!(record["category"], "AuditLogs");
        assert_eq!(record["operationName"], properties["activityDisplayName"]);
        assert_eq!(record["time"], properties["activityDateTime"]);
        assert!(!record.contains_key("resultType"), "{label}");
        if let Some(ip) = record.get("callerIpAddress") {
            let ip = ip.as_str().unwrap();
            assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{label}: {ip}");
        }
    }

    // Provisioning: the renames and numbered steps of the derivation table, and the
    // names and types of real records (the shape's NOTICE names them).
    let sample = fixture("azure_monitor/provisioninglogs.shape.json");
    let written = redis.list(&key("provisioning"));
    assert!(!written.is_empty());
    for record in &written {
        let record = object(record);
        let properties = record["properties"].as_object().unwrap();
        let label = format!("provisioning {}", properties["id"]);
        like_sample(&record, &sample, &[], &label);
        assert_eq!(record["category"], "ProvisioningLogs");
        assert_eq!(record["operationName"], "Provisioning activity");
        assert_eq!(record["correlationId"], properties["changeId"], "{label}");
        assert_eq!(record["identity"], properties["id"], "{label}");
        assert!(record["durationMs"].is_i64(), "{label}");
        let result = record["resultType"].as_str().unwrap();
        assert!(
            ["Success", "Failure", "Skipped", "Warning"].contains(&result),
            "{label}: {result}"
        );
        assert_eq!(
            properties["provisioningStatusInfo"]["Status"]
                .as_str()
                .map(str::to_lowercase),
            Some(result.to_lowercase())
        );
        for identity in ["initiatedBy", "sourceIdentity", "targetIdentity"] {
            let identity = properties[identity].as_object().unwrap();
            assert!(identity.contains_key("Id") && identity.contains_key("Name"));
            assert!(!identity.contains_key("id") && !identity.contains_key("displayName"));
        }
        assert!(properties["initiatedBy"].get("Type").is_some(), "{label}");
        for step in properties["provisioningSteps"].as_array().unwrap() {
            assert!(step["provisioningStepType"].is_i64(), "{label}: {step}");
            assert!(step["status"].is_i64(), "{label}: {step}");
        }
    }

    // Risk detections: the detection's own id as correlationId, lower-cased
    // identity and location, and the names and types of real records.
    let sample = fixture("azure_monitor/userriskevents.shape.json");
    let written = redis.list(&key("risk_detections"));
    assert!(!written.is_empty());
    for record in &written {
        let record = object(record);
        let properties = record["properties"].as_object().unwrap();
        like_sample(&record, &sample, &[], &format!("risk {}", properties["id"]));
        assert_eq!(record["category"], "UserRiskEvents");
        assert_eq!(record["operationName"], "User Risk Detection");
        assert_eq!(record["correlationId"], properties["id"]);
        assert_eq!(record["time"], properties["lastUpdatedDateTime"]);
        assert_eq!(
            record["resourceId"],
            format!("/tenants/{TENANT_GUID}/providers/microsoft.aadiam")
        );
        if let Some(name) = properties["userDisplayName"].as_str() {
            assert_eq!(record["identity"], name.to_lowercase());
        }
        if let Some(country) = properties["location"]["countryOrRegion"].as_str() {
            assert_eq!(record["location"], country.to_lowercase());
        }
    }

    // Alerts stay Graph's, whole.
    let written = redis.list(&key("security_alerts"));
    let graph = sim.records_of("security_alerts", "lastUpdateDateTime", start, end);
    assert_same_records(written, graph);
}

#[test]
fn ocsf_sign_ins_of_a_day_of_every_kind_are_valid_ocsf_authentication_records() {
    let path = format!(
        "{}/tests/fixtures/ocsf/authentication-1.8.0.schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
    // A day at about 4 sign-ins a minute of each kind, backfilled.
    let (sim, redis) = sim_and_redis(&["--rate", "0.07"]);
    let now = minutes_ago(30);
    let since = rfc3339(lagged_end(now) - Span::days(1));
    let sources = "signins,signins_noninteractive,signins_service_principal,\
                   signins_managed_identity,directory_audits";
    let run = tick(
        &sim,
        &redis,
        "oc",
        now,
        &[
            "--sources",
            sources,
            "--record_format",
            "ocsf",
            "--since",
            &since,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_stderr_has(
        "[WARN] record_format ocsf: directory_audits has no shape in it and is written as \
             Graph sends it",
    );
    let (mut failures, mut services, mut without_ip) = (0, 0, 0);
    for (source, category) in SIGN_INS {
        let key = match source {
            "signins" => "oc".to_string(),
            other => format!("oc:{other}"),
        };
        let written = redis.list(&key);
        assert!(written.len() > 1000, "{source}: {}", written.len());
        for text in &written {
            let record: Value = serde_json::from_str(text).unwrap();
            if let Some(error) = validator.iter_errors(&record).next() {
                panic!(
                    "{source}: not OCSF 3002: {error} at {}: {text}",
                    error.instance_path()
                );
            }
            assert!(!text.contains("null"), "{source}: a null: {text}");
            assert_eq!(record["metadata"]["log_name"], category);
            assert_eq!(record["cloud"]["provider"], "Azure");
            assert_eq!(record["metadata"]["tenant_uid"], TENANT_GUID);
            let code = record["status_code"]
                .as_str()
                .expect("status_code a string");
            match code {
                "0" => assert_eq!(record["status_id"], 1),
                _ => {
                    failures += 1;
                    assert_eq!(record["status_id"], 2);
                    assert!(record["status_detail"].is_string());
                }
            }
            if record["user"]["type_id"] == 4 {
                services += 1;
                assert!(record["user"]["uid"].is_string(), "{text}");
            }
            if record.get("src_endpoint").is_none() {
                without_ip += 1;
                // No endpoint without an IP: the location stays, under its Graph name.
                assert!(record["unmapped"]["location"].is_object(), "{text}");
            }
        }
        // Each record is the sign-in of its id, at its time in milliseconds.
        let first: Value = serde_json::from_str(&written[0]).unwrap();
        let uid = first["metadata"]["uid"].as_str().unwrap();
        let time = first["time_dt"].as_str().unwrap();
        let parsed =
            time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert_eq!(
            first["time"].as_i64().unwrap(),
            (parsed.unix_timestamp_nanos() / 1_000_000) as i64
        );
        assert_eq!(uid.len(), 36);
    }
    assert!(failures > 0 && services > 0 && without_ip > 0);
}

#[test]
fn stream_entries_name_tenant_source_id_and_format_beside_the_record() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let now = minutes_ago(30);
    let stream = [
        "--queue_type",
        "stream",
        "--sources",
        "signins,security_alerts",
    ];
    // A cron run (deduplicating, in the dedup script) in azure_monitor, then a
    // backfill of the minute before it (written as it is) in graph.
    let mut args = stream.to_vec();
    args.extend(["--record_format", "azure_monitor"]);
    let run = tick(&sim, &redis, "st", now, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let since = rfc3339(origin(now) - Span::minutes(1));
    let until = rfc3339(origin(now));
    let mut args = stream.to_vec();
    args.extend(["--since", &since, "--until", &until]);
    let backfill = tick(&sim, &redis, "st", now, &args);
    assert_eq!(backfill.code, 0, "{}", backfill.stderr);
    for (key, source, formats) in [
        ("st", "signins", ["azure_monitor", "graph"]),
        ("st:security_alerts", "security_alerts", ["graph", "graph"]),
    ] {
        let written = stream_entries(&redis, key);
        assert!(!written.is_empty(), "{key}");
        let cron = sim.records_of(
            source,
            if source == "signins" {
                "createdDateTime"
            } else {
                "lastUpdateDateTime"
            },
            origin(now),
            lagged_end(now) - Span::seconds(1),
        );
        for (i, fields) in written.iter().enumerate() {
            let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                ["record", "tenant", "source", "id", "format"],
                "{key}"
            );
            let record = object(&fields[0].1);
            let format = formats[usize::from(i >= cron.len())];
            let id = match format {
                "azure_monitor" => &record["properties"]["id"],
                _ => &record["id"],
            };
            assert_eq!(fields[1].1, SIM_TENANT, "{key}");
            assert_eq!(fields[2].1, source);
            assert_eq!(Some(fields[3].1.as_str()), id.as_str(), "{key} entry {i}");
            assert_eq!(fields[4].1, format, "{key} entry {i}");
        }
    }
}

/// The Redis side of the consumers' recipes (docs/consumers.md): a consumer group
/// reads every entry of a stream once in order and acknowledges it (Redpanda Connect's
/// `redis_streams`), and a list is popped front first, one JSON document per element,
/// in the order written (Logstash's and Vector's `redis` inputs pop the list's head).
#[test]
fn consumers_read_each_stream_entry_once_and_each_list_element_as_one_document_in_order() {
    let (sim, redis) = sim_and_redis(&["--rate", "3"]);
    let now = minutes_ago(30);
    let stream = ["--queue_type", "stream", "--record_format", "azure_monitor"];
    assert_eq!(tick(&sim, &redis, "cs", now, &stream).code, 0);
    assert_eq!(
        tick(&sim, &redis, "cl", now, &["--record_format", "ocsf"]).code,
        0
    );
    let written = stream_entries(&redis, "cs");
    let mut connection = redis.connection();
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", "cs", "siem", "0"])
        .query(&mut connection)
        .unwrap();
    type Read = Vec<(String, Vec<(String, Vec<(String, String)>)>)>;
    let mut read = Vec::new();
    loop {
        let batch: Option<Read> = redis::cmd("XREADGROUP")
            .arg(&["GROUP", "siem", "c1", "COUNT", "50", "STREAMS", "cs", ">"])
            .query(&mut connection)
            .unwrap();
        let Some(batch) = batch.filter(|b| !b.is_empty() && !b[0].1.is_empty()) else {
            break;
        };
        for (id, fields) in &batch[0].1 {
            let acked: i64 = redis::cmd("XACK")
                .arg(&["cs", "siem", id])
                .query(&mut connection)
                .unwrap();
            assert_eq!(acked, 1);
            read.push(fields.clone());
        }
    }
    assert_eq!(read, written, "every entry once, in order");
    let pending: (i64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&["cs", "siem"])
        .query(&mut connection)
        .unwrap();
    assert_eq!(pending.0, 0, "all acknowledged");

    let listed = redis.list("cl");
    let mut popped = Vec::new();
    loop {
        let batch: Option<Vec<String>> = redis::cmd("LPOP")
            .arg(&["cl", "125"])
            .query(&mut connection)
            .unwrap();
        match batch {
            Some(batch) if !batch.is_empty() => popped.extend(batch),
            _ => break,
        }
    }
    assert_eq!(popped, listed, "popped front first, in the order written");
    for element in &popped {
        let document: Value = serde_json::from_str(element).expect("one JSON document");
        assert_eq!(document["class_uid"], 3002);
    }
}
