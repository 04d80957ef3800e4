//! Identity protection and security: risk detections and alerts (v2). Both change after
//! they are created — a risk is re-assessed, an alert is worked on — and each version
//! carries the time of its last update.

use crate::generator::{
    Event, Generator, PLACES, Record, TICKS_PER_SECOND, Ticks, USERS, close, guid, location,
    public_ip, timestamp,
};

const RISK_TYPES: &[&str] = &[
    "unfamiliarFeatures",
    "anonymizedIPAddress",
    "passwordSpray",
    "unlikelyTravel",
    "leakedCredentials",
];

/// (riskLevel, riskState, riskDetail) of each version.
const RISK_VERSIONS: [(&str, &str, &str); 3] = [
    ("medium", "atRisk", "none"),
    (
        "high",
        "confirmedCompromised",
        "adminConfirmedUserCompromised",
    ),
    ("high", "remediated", "userPerformedSecuredPasswordChange"),
];

pub fn risk_detection(g: &Generator, event: &Event, created: Ticks) -> String {
    let h = |field: u64| g.hash(event.created, event.index, field);
    let user = USERS[(h(10) % USERS.len() as u64) as usize];
    let place = PLACES[(h(11) % PLACES.len() as u64) as usize];
    let (level, state, detail) = RISK_VERSIONS[event.version as usize % RISK_VERSIONS.len()];
    let mut top = Record {
        out: String::with_capacity(1200),
        select: None,
    };
    top.out.push('{');
    top.text(
        "id",
        &format!("{:064x}", u128::from(h(20)) << 64 | u128::from(h(21))),
    );
    top.text("requestId", &guid(h(22), h(23)));
    top.text("correlationId", &guid(h(24), h(25)));
    top.text(
        "riskEventType",
        RISK_TYPES[(h(12) % RISK_TYPES.len() as u64) as usize],
    );
    top.text("riskState", state);
    top.text("riskLevel", level);
    top.text("riskDetail", detail);
    top.text("source", "IdentityProtection");
    top.text(
        "detectionTimingType",
        if h(13) % 2 == 0 {
            "realtime"
        } else {
            "offline"
        },
    );
    top.text("activity", "signin");
    top.text("tokenIssuerType", "AzureAD");
    top.text("ipAddress", &public_ip(h(26)));
    top.text("activityDateTime", &timestamp(created));
    // Microsoft's example has six digits in these two next to seven elsewhere.
    let six = |ticks: Ticks| {
        let text = timestamp(ticks);
        format!("{}Z", text.get(..26).unwrap_or(&text))
    };
    top.text("detectedDateTime", &six(created + 9 * TICKS_PER_SECOND));
    top.text("lastUpdatedDateTime", &six(event.ticks));
    top.text("userId", &guid(h(27), h(28)));
    top.text("userDisplayName", user.1);
    top.text("userPrincipalName", &format!("{}@contoso.com", user.0));
    top.text(
        "additionalInfo",
        r#"[{"Key":"userAgent","Value":"Mozilla/5.0 (Windows NT 10.0; Win64; x64)"}]"#,
    );
    top.raw("location", &location(place, false));
    close(&mut top.out);
    top.out
}

/// (title, category, MITRE technique, severity)
const ALERTS: &[(&str, &str, &str, &str)] = &[
    (
        "Suspicious execution of hidden file",
        "DefenseEvasion",
        "T1564.001",
        "low",
    ),
    (
        "Password spray against multiple accounts",
        "CredentialAccess",
        "T1110.003",
        "high",
    ),
    (
        "Suspicious inbox forwarding rule",
        "Exfiltration",
        "T1114.003",
        "medium",
    ),
];

/// (status, classification, determination) of each version.
const ALERT_VERSIONS: [(&str, &str, &str); 3] = [
    ("new", "null", "null"),
    ("inProgress", "null", "null"),
    ("resolved", "\"truePositive\"", "\"multiStagedAttack\""),
];

pub fn alert(g: &Generator, event: &Event, created: Ticks) -> String {
    let h = |field: u64| g.hash(event.created, event.index, field);
    let user = USERS[(h(10) % USERS.len() as u64) as usize];
    let kind = ALERTS[(h(12) % ALERTS.len() as u64) as usize];
    let (status, classification, determination) =
        ALERT_VERSIONS[event.version as usize % ALERT_VERSIONS.len()];
    let id = format!(
        "da{:018}_{}",
        h(20) % 1_000_000_000_000_000_000,
        h(21) % 2_000_000_000
    );
    let mut top = Record {
        out: String::with_capacity(1800),
        select: None,
    };
    top.out.push('{');
    top.text("@odata.type", "#microsoft.graph.security.alert");
    top.text("id", &id);
    top.text("providerAlertId", &id);
    top.text("incidentId", &(20_000 + h(22) % 10_000).to_string());
    top.text("status", status);
    top.text("severity", kind.3);
    top.raw("classification", classification);
    top.raw("determination", determination);
    top.text("serviceSource", "microsoftDefenderForEndpoint");
    top.text("detectionSource", "antivirus");
    top.text("productName", "Microsoft Defender for Endpoint");
    top.text("detectorId", &guid(h(23), h(24)));
    top.text("tenantId", "4a06f77b-6bdb-4f5b-b1c4-2b1a5d2e1a2b");
    top.text("alertPolicyId", &guid(h(29), h(30)));
    top.text("title", kind.0);
    top.text(
        "description",
        &format!("{} was observed on a device of {}.", kind.0, user.1),
    );
    top.text(
        "recommendedActions",
        "Collect artifacts and determine scope.",
    );
    top.text("category", kind.1);
    top.raw("categories", &format!(r#"["{}"]"#, kind.1));
    top.raw("systemTags", r#"["Credential Phish"]"#);
    top.raw("customDetails", "{}");
    top.text(
        "investigationState",
        match status {
            "resolved" => "benign",
            _ => "unknown",
        },
    );
    top.raw(
        "assignedTo",
        if event.version == 0 {
            "null"
        } else {
            "\"secops@contoso.com\""
        },
    );
    top.text(
        "alertWebUrl",
        &format!("https://security.microsoft.com/alerts/{id}"),
    );
    top.text(
        "incidentWebUrl",
        &format!(
            "https://security.microsoft.com/incidents/{}",
            20_000 + h(22) % 10_000
        ),
    );
    top.raw("actorDisplayName", "null");
    top.raw("threatDisplayName", "null");
    top.raw("threatFamilyName", "null");
    top.raw("mitreTechniques", &format!(r#"["{}"]"#, kind.2));
    top.text("createdDateTime", &timestamp(created));
    top.text("lastUpdateDateTime", &timestamp(event.ticks));
    match status {
        "resolved" => top.text("resolvedDateTime", &timestamp(event.ticks)),
        _ => top.raw("resolvedDateTime", "null"),
    }
    // Microsoft's example has three digits here.
    let first = timestamp(created - 60 * TICKS_PER_SECOND);
    top.text("firstActivityDateTime", &format!("{}Z", &first[..23]));
    top.text("lastActivityDateTime", &timestamp(created));
    top.raw("comments", "[]");
    top.raw(
        "evidence",
        &format!(
            r##"[{{"@odata.type":"#microsoft.graph.security.userEvidence","createdDateTime":"{}","verdict":"unknown","remediationStatus":"none","remediationStatusDetails":null,"roles":["compromised"],"detailedRoles":["PrimaryAccount"],"tags":[],"userAccount":{{"accountName":"{}","domainName":"contoso.com","userSid":"S-1-5-21-{}","azureAdUserId":"{}","userPrincipalName":"{}@contoso.com"}}}}]"##,
            timestamp(created),
            user.0,
            h(25) % 1_000_000_000,
            guid(h(26), h(27)),
            user.0
        ),
    );
    close(&mut top.out);
    top.out
}

/// (riskEventType, riskLevel) of service principals' detections (Microsoft's
/// documented types).
const SP_RISKS: &[(&str, &str)] = &[
    ("investigationsThreatIntelligence", "high"),
    ("suspiciousSignins", "medium"),
    ("leakedCredentials", "high"),
    ("anomalousServicePrincipalActivity", "low"),
];

/// A workload identity's risk detection, as `/identityProtection/servicePrincipalRiskDetections`
/// lists it (Microsoft's example: offline detections have no request or IP). `hidden`:
/// the tenant has no Workload ID Premium licence, so level and detail read `hidden`.
/// Its `activity`, `servicePrincipal`, is a member after `unknownFutureValue`.
pub fn service_principal_risk_detection(g: &Generator, event: &Event, hidden: bool) -> String {
    let h = |field: u64| g.hash(event.created, event.index, field);
    let (kind, level) = SP_RISKS[(h(12) % SP_RISKS.len() as u64) as usize];
    let app = crate::generator::APPS[(h(11) % crate::generator::APPS.len() as u64) as usize];
    let offline = h(13) % 3 != 0;
    let mut top = Record {
        out: String::with_capacity(1000),
        select: None,
    };
    top.out.push('{');
    top.text(
        "id",
        &format!(
            "{:016x}{:016x}{:016x}{:04x}",
            h(20),
            h(21),
            h(31),
            h(32) & 0xffff
        ),
    );
    match offline {
        true => {
            top.raw("requestId", "null");
            top.raw("correlationId", "null");
        }
        false => {
            top.text("requestId", &guid(h(22), h(23)));
            top.text("correlationId", &guid(h(24), h(25)));
        }
    }
    top.text("riskEventType", kind);
    top.text("riskState", "atRisk");
    top.text("riskLevel", if hidden { "hidden" } else { level });
    top.text("riskDetail", if hidden { "hidden" } else { "none" });
    top.text("source", "IdentityProtection");
    top.text(
        "detectionTimingType",
        if offline { "offline" } else { "realtime" },
    );
    top.text("activity", "servicePrincipal");
    top.text("tokenIssuerType", "AzureAD");
    match offline {
        true => {
            top.raw("ipAddress", "null");
            top.raw("location", "null");
        }
        false => {
            let place = PLACES[(h(14) % PLACES.len() as u64) as usize];
            top.text("ipAddress", &public_ip(h(26)));
            top.raw("location", &location(place, false));
        }
    }
    // Detected when it shows in the window: the activity came first.
    top.text(
        "activityDateTime",
        &timestamp(event.ticks - (60 + h(15) % 3600) as i64 * TICKS_PER_SECOND),
    );
    top.text("detectedDateTime", &timestamp(event.ticks));
    top.text(
        "lastUpdatedDateTime",
        &timestamp(event.ticks + 3 * TICKS_PER_SECOND),
    );
    top.text("servicePrincipalId", &guid(h(27), h(28)));
    top.text("servicePrincipalDisplayName", app.1);
    top.text("appId", app.0);
    top.raw(
        "keyIds",
        &format!("[{}]", crate::generator::json_string(&guid(h(29), h(30)))),
    );
    top.text("additionalInfo", r#"[{"Key":"alertUrl","Value":null}]"#);
    close(&mut top.out);
    top.out
}

/// (riskEventType, identityType) of agents' detections (Microsoft's offline types).
const AGENT_RISKS: &[&str] = &[
    "unfamiliarResourceAccess",
    "signInSpike",
    "failedAccessAttempt",
];

/// The agent identity types: the first two are ordinary members, the blueprint
/// principal comes after `unknownFutureValue`.
const AGENT_TYPES: &[&str] = &[
    "agentIdentity",
    "agentUser",
    "agentIdentityBlueprintPrincipal",
];

/// (riskLevel, riskState, riskDetail) of each version of an agent's detection.
const AGENT_VERSIONS: [(&str, &str, &str); 3] = [
    ("medium", "atRisk", "none"),
    (
        "high",
        "confirmedCompromised",
        "adminConfirmedAgentCompromised",
    ),
    ("none", "dismissed", "adminDismissedRiskForAgent"),
];

/// An agent's risk detection (beta `/identityProtection/agentRiskDetections`), windowed
/// on `lastModifiedDateTime`: each version is the record as it stands after an update.
/// `agentId` and `agentDisplayName` are deprecated copies of `identityId` and
/// `displayName`, still sent.
pub fn agent_risk_detection(g: &Generator, event: &Event, created: Ticks) -> String {
    let h = |field: u64| g.hash(event.created, event.index, field);
    let app = crate::generator::APPS[(h(11) % crate::generator::APPS.len() as u64) as usize];
    let name = format!("{} agent", app.1);
    let identity = guid(h(22), h(23));
    let (level, state, detail) = AGENT_VERSIONS[event.version as usize % AGENT_VERSIONS.len()];
    let mut top = Record {
        out: String::with_capacity(900),
        select: None,
    };
    top.out.push('{');
    top.text(
        "id",
        &format!("{:064x}", u128::from(h(20)) << 64 | u128::from(h(21))),
    );
    top.text("identityId", &identity);
    top.text("displayName", &name);
    top.text(
        "identityType",
        AGENT_TYPES[(h(12) % AGENT_TYPES.len() as u64) as usize],
    );
    top.text("agentId", &identity);
    top.text("agentDisplayName", &name);
    top.text("blueprintId", &guid(h(24), h(25)));
    top.text(
        "riskEventType",
        AGENT_RISKS[(h(13) % AGENT_RISKS.len() as u64) as usize],
    );
    top.text("riskLevel", level);
    top.text("riskState", state);
    top.text("riskDetail", detail);
    top.text("detectionTimingType", "offline");
    top.text("source", "IdentityProtection");
    top.text(
        "activityDateTime",
        &timestamp(created - 300 * TICKS_PER_SECOND),
    );
    top.text("detectedDateTime", &timestamp(created));
    top.text("lastModifiedDateTime", &timestamp(event.ticks));
    top.text("additionalInfo", "[]");
    close(&mut top.out);
    top.out
}
