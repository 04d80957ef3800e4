//! `azure_monitor`: each record as Entra's diagnostic settings write it — the Azure
//! Monitor resource-log envelope (`time`, `resourceId`, `operationName`, `category`,
//! `tenantId`, `resultType`, `durationMs`, `callerIpAddress`, `correlationId`,
//! `identity`, `Level`, `location`) around the record in `properties`, with the
//! differences of name and type parsers rely on. One record per element or entry,
//! never Event Hub's `{"records": […]}` wrapper. The derivation, field by field, with
//! its sources: docs/record-formats.md.
//!
//! Traps kept: the category strings exactly (`SignInLogs`, not `SigninLogs`);
//! `resultType` a string while `properties.status.errorCode` stays a number;
//! `durationMs` always present; times as Graph's ISO 8601 `Z`; no `failureReason` on
//! a successful sign-in (Graph's `"Other."` would become every success's message);
//! provisioning's `Id`/`Name`/`Type`/`Status` and integer step codes; a risk
//! detection's `correlationId` is its own id.

use serde_json::{Map, Value, json};

use super::record::{Object, Record};
use super::{Context, Shape};
use crate::sources::RecordKind;

pub fn shape(kind: &RecordKind) -> Option<&'static dyn Shape> {
    match kind {
        RecordKind::SignIn { .. } => Some(&SignIn),
        RecordKind::DirectoryAudit => Some(&Audit),
        RecordKind::Provisioning => Some(&Provisioning),
        RecordKind::RiskDetection => Some(&RiskDetection),
        // Entra has no diagnostic category for alerts. Service principals' and agents'
        // risk events have categories of their own (`ServicePrincipalRiskEvents`, …),
        // but no real record of them was at hand to check a mapping against; Intune's
        // audit logs are another provider's (Microsoft.Intune).
        RecordKind::Alert
        | RecordKind::ServicePrincipalRiskDetection
        | RecordKind::AgentRiskDetection
        | RecordKind::IntuneAuditEvent => None,
    }
}

/// The envelope's members in Microsoft's order (those without a value left out), then
/// the record as `properties`.
fn envelope(members: Vec<(&str, Option<Value>)>, properties: &Record, out: &mut String) {
    let mut object = Object::start(out);
    for (name, value) in members {
        object.member(name, value);
    }
    object.record("properties", properties);
    object.end();
}

fn resource_id(context: &Context, provider: &str) -> Option<Value> {
    Some(json!(format!(
        "/tenants/{}/providers/{provider}",
        context.tenant_id
    )))
}

fn string(value: Option<String>) -> Option<Value> {
    value.map(Value::String)
}

/// An IP address as written, if it is one (never `"<null>"` or a name).
fn ip(value: Option<String>) -> Option<Value> {
    value
        .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
        .map(Value::String)
}

struct SignIn;

impl Shape for SignIn {
    fn render(&self, mut record: Record, context: &Context, out: &mut String) {
        let category = context.category.unwrap_or("SignInLogs");
        let code = record.integer(&["status", "errorCode"]).unwrap_or(0);
        let failure = match code {
            0 => None,
            _ => record.text(&["status", "failureReason"]),
        };
        let members = vec![
            ("time", string(record.text(&["createdDateTime"]))),
            ("resourceId", resource_id(context, "Microsoft.aadiam")),
            ("operationName", Some(json!("Sign-in activity"))),
            ("operationVersion", Some(json!("1.0"))),
            ("category", Some(json!(category))),
            ("tenantId", Some(json!(context.tenant_id))),
            ("resultType", Some(json!(code.to_string()))),
            ("resultSignature", Some(json!("None"))),
            ("resultDescription", string(failure)),
            ("durationMs", Some(json!(0))),
            ("callerIpAddress", string(record.text(&["ipAddress"]))),
            ("correlationId", string(record.text(&["correlationId"]))),
            ("identity", string(record.text(&["userDisplayName"]))),
            ("Level", Some(json!(4))),
            (
                "location",
                string(record.text(&["location", "countryOrRegion"])),
            ),
        ];
        // The category carries the event type; the status keeps what it knows.
        record.remove("signInEventTypes");
        record.edit("status", |status| {
            if let Some(status) = status.as_object_mut() {
                status.retain(|_, v| !v.is_null());
                if code == 0 {
                    status.remove("failureReason");
                }
            }
        });
        envelope(members, &record, out);
    }
}

struct Audit;

impl Shape for Audit {
    fn render(&self, record: Record, context: &Context, out: &mut String) {
        let identity = record
            .text(&["initiatedBy", "user", "displayName"])
            .or_else(|| record.text(&["initiatedBy", "app", "displayName"]));
        let members = vec![
            ("time", string(record.text(&["activityDateTime"]))),
            ("resourceId", resource_id(context, "Microsoft.aadiam")),
            (
                "operationName",
                string(record.text(&["activityDisplayName"])),
            ),
            ("operationVersion", Some(json!("1.0"))),
            ("category", Some(json!("AuditLogs"))),
            ("tenantId", Some(json!(context.tenant_id))),
            ("resultSignature", Some(json!("None"))),
            ("resultDescription", string(record.text(&["resultReason"]))),
            ("durationMs", Some(json!(0))),
            (
                "callerIpAddress",
                ip(record.text(&["initiatedBy", "user", "ipAddress"])),
            ),
            ("correlationId", string(record.text(&["correlationId"]))),
            ("identity", string(identity)),
            ("Level", Some(json!(4))),
        ];
        envelope(members, &record, out);
    }
}

struct Provisioning;

impl Shape for Provisioning {
    fn render(&self, mut record: Record, context: &Context, out: &mut String) {
        let result = record
            .text(&["provisioningStatusInfo", "status"])
            .map(|s| capitalised(&s));
        let duration = record.integer(&["durationInMilliseconds"]).unwrap_or(0);
        let members = vec![
            ("time", string(record.text(&["activityDateTime"]))),
            ("resourceId", resource_id(context, "Microsoft.aadiam")),
            ("operationName", Some(json!("Provisioning activity"))),
            ("operationVersion", Some(json!("1.0"))),
            ("category", Some(json!("ProvisioningLogs"))),
            ("tenantId", Some(json!(context.tenant_id))),
            ("resultType", string(result)),
            ("durationMs", Some(json!(duration))),
            ("correlationId", string(record.text(&["changeId"]))),
            ("identity", string(record.text(&["id"]))),
            ("Level", Some(json!(4))),
        ];
        for name in [
            "servicePrincipal",
            "sourceSystem",
            "targetSystem",
            "initiatedBy",
            "sourceIdentity",
            "targetIdentity",
        ] {
            record.edit(name, rename_identity);
        }
        record.edit("provisioningStatusInfo", |info| {
            if let Some(info) = info.as_object_mut()
                && let Some(status) = info.remove("status")
            {
                info.insert("Status".into(), status);
            }
        });
        record.edit("provisioningSteps", |steps| {
            for step in steps.as_array_mut().into_iter().flatten() {
                if let Some(step) = step.as_object_mut() {
                    code(step, "provisioningStepType", STEP_TYPES);
                    code(step, "status", STEP_STATUSES);
                }
            }
        });
        envelope(members, &record, out);
    }
}

/// Diagnostic records number a provisioning step's type and status; Graph names them.
/// Observed: import 0, scoping 1, matching 2, processing 3, export 5; success 0,
/// skipped 2. The others follow Graph's enum order (docs/record-formats.md).
const STEP_TYPES: &[(&str, i64)] = &[
    ("import", 0),
    ("scoping", 1),
    ("matching", 2),
    ("processing", 3),
    ("referenceResolution", 4),
    ("export", 5),
];
const STEP_STATUSES: &[(&str, i64)] = &[
    ("success", 0),
    ("failure", 1),
    ("skipped", 2),
    ("warning", 3),
];

/// `step[name]`'s Graph name as its number; a name not in `codes` stays as it is.
fn code(step: &mut Map<String, Value>, name: &str, codes: &[(&str, i64)]) {
    let number = step
        .get(name)
        .and_then(Value::as_str)
        .and_then(|v| codes.iter().find(|(n, _)| *n == v))
        .map(|(_, c)| *c);
    if let Some(number) = number {
        step.insert(name.into(), json!(number));
    }
}

/// A provisioning identity (or a list of them) with diagnostic names: `id` → `Id`,
/// `displayName` → `Name`, `initiatorType` → `Type`.
fn rename_identity(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(rename_identity),
        Value::Object(members) => {
            for (from, to) in [
                ("id", "Id"),
                ("displayName", "Name"),
                ("initiatorType", "Type"),
            ] {
                if let Some(v) = members.remove(from) {
                    members.insert(to.into(), v);
                }
            }
        }
        _ => {}
    }
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

struct RiskDetection;

impl Shape for RiskDetection {
    fn render(&self, record: Record, context: &Context, out: &mut String) {
        let lower = |v: Option<String>| v.map(|s| Value::String(s.to_lowercase()));
        let members = vec![
            ("time", string(record.text(&["lastUpdatedDateTime"]))),
            ("resourceId", resource_id(context, "microsoft.aadiam")),
            ("operationName", Some(json!("User Risk Detection"))),
            ("operationVersion", Some(json!("1.0"))),
            ("category", Some(json!("UserRiskEvents"))),
            ("tenantId", Some(json!(context.tenant_id))),
            ("resultSignature", Some(json!("None"))),
            ("durationMs", Some(json!(0))),
            ("callerIpAddress", string(record.text(&["ipAddress"]))),
            ("correlationId", string(record.text(&["id"]))),
            ("identity", lower(record.text(&["userDisplayName"]))),
            ("Level", Some(json!(4))),
            (
                "location",
                lower(record.text(&["location", "countryOrRegion"])),
            ),
        ];
        envelope(members, &record, out);
    }
}
