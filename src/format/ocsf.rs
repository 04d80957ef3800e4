//! `ocsf`: sign-ins of all four kinds as OCSF 1.8.0 Authentication (3002), activity
//! Logon, with the cloud and datetime profiles. What OCSF names is mapped (status from
//! `errorCode`, `time` in integer milliseconds, `status_code` a string, the user or the
//! service principal, the source endpoint from the IP and location, the service from
//! the app); every other Graph property is kept under `unmapped` by its Graph name;
//! nulls are left out (the schema refuses them). The other sources stay Graph's.
//! The table, with its sources and what is unsure: docs/record-formats.md.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::record::{Object, Record};
use super::{Context, Shape};
use crate::sources::RecordKind;

pub fn shape(kind: &RecordKind) -> Option<&'static dyn Shape> {
    match kind {
        RecordKind::SignIn { .. } => Some(&Authentication),
        _ => None,
    }
}

/// The OCSF version written in `metadata.version`.
const VERSION: &str = "1.8.0";

/// Graph properties carried whole into OCSF attributes, and not repeated in
/// `unmapped`: always, for a user's sign-in, for a service's, and with a source
/// endpoint (there is none without an IP: then the location stays in `unmapped`).
const MAPPED: &[&str] = &[
    "id",
    "createdDateTime",
    "correlationId",
    "userAgent",
    "originalRequestId",
    "appId",
    "appDisplayName",
];
const MAPPED_USER: &[&str] = &["userId", "userPrincipalName", "userDisplayName"];
const MAPPED_SERVICE: &[&str] = &[
    "servicePrincipalId",
    "servicePrincipalName",
    "servicePrincipalCredentialKeyId",
];
const MAPPED_ENDPOINT: &[&str] = &["ipAddress", "location", "autonomousSystemNumber"];

struct Authentication;

impl Shape for Authentication {
    fn render(&self, mut record: Record, context: &Context, out: &mut String) {
        let code = record.integer(&["status", "errorCode"]).unwrap_or(0);
        let (status_id, status) = match code {
            0 => (1, "Success"),
            _ => (2, "Failure"),
        };
        let detail = match code {
            0 => record.text(&["status", "additionalDetails"]),
            _ => record.text(&["status", "failureReason"]),
        };
        let created = record.text(&["createdDateTime"]);
        let millis = created
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
        let category = context.category.unwrap_or("SignInLogs");
        let workload = matches!(
            category,
            "ServicePrincipalSignInLogs" | "ManagedIdentitySignInLogs"
        );
        let endpoint = src_endpoint(&record);
        let protocol = protocol(record.text(&["authenticationProtocol"]));
        let members = vec![
            ("activity_id", Some(json!(1))),
            ("activity_name", Some(json!("Logon"))),
            ("category_uid", Some(json!(3))),
            ("category_name", Some(json!("Identity & Access Management"))),
            ("class_uid", Some(json!(3002))),
            ("class_name", Some(json!("Authentication"))),
            ("type_uid", Some(json!(300201))),
            ("type_name", Some(json!("Authentication: Logon"))),
            ("time", Some(json!(millis))),
            ("time_dt", created.map(Value::String)),
            ("severity_id", Some(json!(1))),
            ("severity", Some(json!("Informational"))),
            ("status_id", Some(json!(status_id))),
            ("status", Some(json!(status))),
            ("status_code", Some(json!(code.to_string()))),
            ("status_detail", detail.map(Value::String)),
            ("metadata", Some(metadata(&record, context, category))),
            ("cloud", Some(cloud(context))),
            ("user", Some(user(&record, workload))),
            ("src_endpoint", endpoint.clone()),
            ("service", Some(service(&record))),
            ("http_request", http_request(&record)),
            ("is_mfa", is_mfa(&record)),
            (
                "auth_protocol_id",
                protocol.as_ref().map(|(id, _)| json!(id)),
            ),
            ("auth_protocol", protocol.map(|(_, name)| json!(name))),
        ];
        let mapped = [
            MAPPED,
            if workload {
                MAPPED_SERVICE
            } else {
                MAPPED_USER
            },
            if endpoint.is_some() {
                MAPPED_ENDPOINT
            } else {
                &[]
            },
        ]
        .concat();
        record.retain(|name| !mapped.contains(&name));
        // No nulls anywhere (the schema refuses them): only members that may hold one
        // are parsed to drop them.
        record.edit_all(|raw| raw.contains("null"), without_nulls);
        let mut object = Object::start(out);
        for (name, value) in members {
            object.member(name, value);
        }
        if !record.is_empty() {
            object.record("unmapped", &record);
        }
        object.end();
    }
}

fn metadata(record: &Record, context: &Context, category: &str) -> Value {
    let mut metadata = Map::new();
    metadata.insert("version".into(), json!(VERSION));
    metadata.insert(
        "product".into(),
        json!({"name": "Microsoft Entra ID", "vendor_name": "Microsoft"}),
    );
    metadata.insert("profiles".into(), json!(["cloud", "datetime"]));
    metadata.insert("log_name".into(), json!(category));
    for (name, from) in [("uid", "id"), ("correlation_uid", "correlationId")] {
        if let Some(value) = record.text(&[from]) {
            metadata.insert(name.into(), json!(value));
        }
    }
    if !context.tenant_id.is_empty() {
        metadata.insert("tenant_uid".into(), json!(context.tenant_id));
    }
    Value::Object(metadata)
}

fn cloud(context: &Context) -> Value {
    let mut cloud = Map::new();
    cloud.insert("provider".into(), json!("Azure"));
    if !context.tenant_id.is_empty() {
        cloud.insert(
            "account".into(),
            json!({"uid": context.tenant_id, "type_id": 6, "type": "Azure AD Account"}),
        );
    }
    Value::Object(cloud)
}

/// The user who signed in, or for a service principal's or managed identity's
/// sign-in the service principal. OCSF needs one of its uid, name or account: an
/// empty name when Graph gave none.
fn user(record: &Record, workload: bool) -> Value {
    let get = |name: &str| record.text(&[name]);
    let mut user = Map::new();
    let (uid, name) = match workload {
        true => (get("servicePrincipalId"), get("servicePrincipalName")),
        false => (get("userId"), get("userPrincipalName")),
    };
    if let Some(uid) = &uid {
        user.insert("uid".into(), json!(uid));
    }
    user.insert("name".into(), json!(name.unwrap_or_default()));
    match workload {
        true => {
            user.insert("type_id".into(), json!(4));
            user.insert("type".into(), json!("Service"));
            if let Some(key) = get("servicePrincipalCredentialKeyId") {
                user.insert("credential_uid".into(), json!(key));
            }
        }
        false => {
            user.insert("type_id".into(), json!(1));
            user.insert("type".into(), json!("User"));
            if let Some(display) = get("userDisplayName") {
                user.insert("display_name".into(), json!(display));
            }
            if let Some(uid) = uid {
                user.insert(
                    "account".into(),
                    json!({"uid": uid, "type_id": 6, "type": "Azure AD Account"}),
                );
            }
        }
    }
    Value::Object(user)
}

/// Where the sign-in came from: None without an IP (OCSF needs one of its ids; the
/// location alone does not make an endpoint).
fn src_endpoint(record: &Record) -> Option<Value> {
    let ip = record.text(&["ipAddress"])?;
    let mut endpoint = Map::new();
    endpoint.insert("ip".into(), json!(ip));
    let place = record.get("location").unwrap_or_default();
    let text = |name: &str| {
        place
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let mut location = Map::new();
    for (name, from) in [
        ("city", "city"),
        ("region", "state"),
        ("country", "countryOrRegion"),
    ] {
        if let Some(value) = text(from) {
            location.insert(name.into(), json!(value));
        }
    }
    if !location.is_empty() {
        let coordinates = place.get("geoCoordinates");
        for (name, from) in [("lat", "latitude"), ("long", "longitude")] {
            if let Some(value) = coordinates
                .and_then(|c| c.get(from))
                .filter(|v| v.is_number())
            {
                location.insert(name.into(), value.clone());
            }
        }
        endpoint.insert("location".into(), Value::Object(location));
    }
    if let Some(number) = record.integer(&["autonomousSystemNumber"]) {
        endpoint.insert("autonomous_system".into(), json!({"number": number}));
    }
    Some(Value::Object(endpoint))
}

/// The application signed in to. OCSF's Authentication needs a service (or a
/// destination): an empty name when Graph gave no app.
fn service(record: &Record) -> Value {
    let mut service = Map::new();
    if let Some(uid) = record.text(&["appId"]) {
        service.insert("uid".into(), json!(uid));
    }
    service.insert(
        "name".into(),
        json!(record.text(&["appDisplayName"]).unwrap_or_default()),
    );
    Value::Object(service)
}

fn http_request(record: &Record) -> Option<Value> {
    let mut request = Map::new();
    for (name, from) in [("user_agent", "userAgent"), ("uid", "originalRequestId")] {
        if let Some(value) = record.text(&[from]) {
            request.insert(name.into(), json!(value));
        }
    }
    (!request.is_empty()).then_some(Value::Object(request))
}

/// Whether a multi-factor step succeeded (beta's `authenticationDetails`); None when
/// Graph gave no steps.
fn is_mfa(record: &Record) -> Option<Value> {
    let steps = record.get("authenticationDetails")?;
    let steps = steps.as_array()?;
    Some(json!(steps.iter().any(|step| {
        step.get("authenticationStepRequirement")
            .and_then(Value::as_str)
            .is_some_and(|r| r.eq_ignore_ascii_case("Multi-factor authentication"))
            && step.get("succeeded").and_then(Value::as_bool) == Some(true)
    })))
}

/// OCSF's auth protocol for Entra's `authenticationProtocol` (beta).
fn protocol(value: Option<String>) -> Option<(i64, String)> {
    Some(match value?.as_str() {
        "oAuth2" => (6, "OAUTH 2.0".into()),
        "saml20" => (5, "SAML".into()),
        "none" => (0, "Unknown".into()),
        other => (99, other.to_string()),
    })
}

/// `value` without null members, recursively (OCSF's schema refuses nulls).
fn without_nulls(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(members) => Some(Value::Object(
            members
                .into_iter()
                .filter_map(|(k, v)| without_nulls(v).map(|v| (k, v)))
                .collect(),
        )),
        Value::Array(items) => Some(Value::Array(
            items.into_iter().filter_map(without_nulls).collect(),
        )),
        other => Some(other),
    }
}
