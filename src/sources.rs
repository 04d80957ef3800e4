//! The Entra audit streams msgx-once can export (option `sources`): for each, where
//! Graph serves it, which time field a frame filters on and with which operators, the
//! largest page, the throttling bucket whose budget it spends, and what a 403 means.
//!
//! Every difference between sources is data in [`SOURCES`]; the rest of the run treats
//! them alike. Facts and Microsoft's pages they come from: docs/sources.md.

use std::fmt;

use crate::window::{Frame, whole_second};

/// How a frame's bounds are written in `$filter`: Graph documents different
/// operators for different time fields, and a strict Graph refuses the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    /// `ge {start}.0000000Z and le {end}.9999999Z`
    Inclusive,
    /// `gt {start − 1 tick} and lt {end + 1 s}`: provisioning allows only eq, gt, lt.
    Exclusive,
}

/// A group of resources that share one request budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// Identity and access reports: 5 requests per 10 s per app and tenant.
    Reports,
    /// Identity protection: 1 request per second per tenant (all apps), 429s carry no
    /// Retry-After.
    IdentityProtection,
    /// Security detections: 150 requests per minute per app and tenant.
    Security,
    /// Intune auditing: 1,000 requests per 20 s per app and tenant (2,000 per tenant for
    /// all apps).
    IntuneAuditing,
}

impl Bucket {
    pub const ALL: [Bucket; 4] = [
        Bucket::Reports,
        Bucket::IdentityProtection,
        Bucket::Security,
        Bucket::IntuneAuditing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bucket::Reports => "reports",
            Bucket::IdentityProtection => "identity_protection",
            Bucket::Security => "security",
            Bucket::IntuneAuditing => "intune_auditing",
        }
    }

    pub fn named(name: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Graph's documented limit: (requests, per seconds).
    pub fn graph_limit(self) -> (u32, u64) {
        match self {
            Bucket::Reports => (5, 10),
            Bucket::IdentityProtection => (1, 1),
            Bucket::Security => (150, 60),
            Bucket::IntuneAuditing => (1000, 20),
        }
    }

    /// Whether the limit is counted per tenant for all apps (so processes of other
    /// applications share it too), rather than per app and tenant.
    pub fn per_tenant(self) -> bool {
        self == Bucket::IdentityProtection
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How long Graph keeps sign-ins and audit logs (risk detections up to 90 days): a
/// backfill or a watermark further back reads nothing that is left.
pub const RETENTION: time::Duration = time::Duration::days(30);

/// What log lines about `source` start with: its name (after its tenant's, when the
/// run exports several tenants) and a space when several sources are exported
/// (`name_sources`), else nothing.
pub fn log_prefix(tenant: Option<&str>, source: &SourceSpec, name_sources: bool) -> String {
    match name_sources {
        true => format!("{} ", label(tenant, source)),
        false => String::new(),
    }
}

/// What a run's lane is called: `{tenant} {source}` when the run exports several
/// tenants, else the source's name.
pub fn label(tenant: Option<&str>, source: &SourceSpec) -> String {
    match tenant {
        Some(tenant) => format!("{tenant} {}", source.name),
        None => source.name.to_string(),
    }
}

/// One exportable stream.
#[derive(Debug, PartialEq, Eq)]
pub struct SourceSpec {
    /// The option value, and the suffix of its queue key.
    pub name: &'static str,
    /// Path below the Graph host, version included.
    pub path: &'static str,
    /// Beta sign-ins: the `signInEventTypes` value a frame is restricted to.
    pub event_type: Option<&'static str>,
    /// The time a frame filters on, and each record's place in time.
    pub time_field: &'static str,
    pub bounds: Bounds,
    /// The largest `$top` Graph takes.
    pub max_top: u32,
    pub bucket: Bucket,
    /// The application permission a 403 asks for.
    pub permission: &'static str,
    /// The licence the tenant needs, as advice names it.
    pub licence: &'static str,
    /// Microsoft marks the endpoint "not supported in production".
    pub beta: bool,
    /// Records change after creation: windowed on their last update, and each update is
    /// a new event (deduplicated by id and that time).
    pub mutable: bool,
    /// The property a log line shows (sign-ins have the original's own format).
    pub headline: Option<&'static str>,
    /// What its records are, for the shapes of `record_format`.
    pub kind: RecordKind,
}

/// What a source's records are, for the shapes other record formats give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A sign-in; `category`: its Azure Monitor diagnostic-settings category.
    SignIn {
        category: &'static str,
    },
    DirectoryAudit,
    Provisioning,
    /// A user's risk detection.
    RiskDetection,
    ServicePrincipalRiskDetection,
    AgentRiskDetection,
    Alert,
    IntuneAuditEvent,
}

impl RecordKind {
    /// The diagnostic-settings category of a sign-in stream.
    pub fn category(self) -> Option<&'static str> {
        match self {
            RecordKind::SignIn { category } => Some(category),
            _ => None,
        }
    }
}

impl SourceSpec {
    /// The `$filter` that selects exactly this frame's records.
    pub fn filter(&self, frame: &Frame) -> String {
        let field = self.time_field;
        let range = match self.bounds {
            Bounds::Inclusive => format!(
                "{field} ge {}.0000000Z and {field} le {}.9999999Z",
                whole_second(frame.start),
                whole_second(frame.end)
            ),
            Bounds::Exclusive => format!(
                "{field} gt {}.9999999Z and {field} lt {}.0000000Z",
                whole_second(frame.start - time::Duration::SECOND),
                whole_second(frame.end_exclusive())
            ),
        };
        match self.event_type {
            Some(kind) => format!("signInEventTypes/any(t: t eq '{kind}') and {range}"),
            None => range,
        }
    }

    /// A sign-in stream (`select` names sign-in properties, so it applies only here).
    pub fn is_sign_ins(&self) -> bool {
        self.time_field == "createdDateTime" && self.path.ends_with("/auditLogs/signIns")
    }
}

const BETA_SIGN_INS: &str = "/beta/auditLogs/signIns";
const SIGN_IN_PERMISSION: &str = "AuditLog.Read.All";

const fn beta_sign_ins(
    name: &'static str,
    event_type: &'static str,
    category: &'static str,
) -> SourceSpec {
    SourceSpec {
        name,
        path: BETA_SIGN_INS,
        event_type: Some(event_type),
        time_field: "createdDateTime",
        bounds: Bounds::Inclusive,
        max_top: 1000,
        bucket: Bucket::Reports,
        permission: SIGN_IN_PERMISSION,
        licence: P1_P2,
        beta: true,
        mutable: false,
        headline: None,
        kind: RecordKind::SignIn { category },
    }
}

/// Most of Entra's logs need one of these.
const P1_P2: &str = "an Entra ID P1/P2 licence";

pub static SOURCES: &[SourceSpec] = &[
    SourceSpec {
        name: "signins",
        path: "/v1.0/auditLogs/signIns",
        event_type: None,
        time_field: "createdDateTime",
        bounds: Bounds::Inclusive,
        max_top: 1000,
        bucket: Bucket::Reports,
        permission: SIGN_IN_PERMISSION,
        licence: P1_P2,
        beta: false,
        mutable: false,
        headline: None,
        kind: RecordKind::SignIn {
            category: "SignInLogs",
        },
    },
    beta_sign_ins(
        "signins_noninteractive",
        "nonInteractiveUser",
        "NonInteractiveUserSignInLogs",
    ),
    beta_sign_ins(
        "signins_service_principal",
        "servicePrincipal",
        "ServicePrincipalSignInLogs",
    ),
    beta_sign_ins(
        "signins_managed_identity",
        "managedIdentity",
        "ManagedIdentitySignInLogs",
    ),
    SourceSpec {
        name: "directory_audits",
        path: "/v1.0/auditLogs/directoryAudits",
        event_type: None,
        time_field: "activityDateTime",
        bounds: Bounds::Inclusive,
        // Not documented: Graph may page smaller, which paging handles.
        max_top: 1000,
        bucket: Bucket::Reports,
        permission: "AuditLog.Read.All and Directory.Read.All",
        licence: P1_P2,
        beta: false,
        mutable: false,
        headline: Some("activityDisplayName"),
        kind: RecordKind::DirectoryAudit,
    },
    SourceSpec {
        name: "provisioning",
        path: "/v1.0/auditLogs/provisioning",
        event_type: None,
        time_field: "activityDateTime",
        bounds: Bounds::Exclusive,
        max_top: 1000,
        bucket: Bucket::Reports,
        permission: SIGN_IN_PERMISSION,
        licence: P1_P2,
        beta: false,
        mutable: false,
        headline: Some("provisioningAction"),
        kind: RecordKind::Provisioning,
    },
    SourceSpec {
        name: "risk_detections",
        path: "/v1.0/identityProtection/riskDetections",
        event_type: None,
        time_field: "lastUpdatedDateTime",
        bounds: Bounds::Inclusive,
        max_top: 500,
        bucket: Bucket::IdentityProtection,
        permission: "IdentityRiskEvent.Read.All",
        licence: "an Entra ID P1/P2 licence (P2 for the risk details)",
        beta: false,
        mutable: true,
        headline: Some("riskEventType"),
        kind: RecordKind::RiskDetection,
    },
    SourceSpec {
        name: "security_alerts",
        path: "/v1.0/security/alerts_v2",
        event_type: None,
        time_field: "lastUpdateDateTime",
        bounds: Bounds::Inclusive,
        max_top: 1000,
        bucket: Bucket::Security,
        permission: "SecurityAlert.Read.All",
        licence: "a Microsoft Defender licence",
        beta: false,
        mutable: true,
        headline: Some("title"),
        kind: RecordKind::Alert,
    },
    // Workload identities' risk: windowed on when it was detected, the time field the
    // issue and Microsoft's examples name; its later state changes are not events.
    SourceSpec {
        name: "service_principal_risk_detections",
        path: "/v1.0/identityProtection/servicePrincipalRiskDetections",
        event_type: None,
        time_field: "detectedDateTime",
        bounds: Bounds::Inclusive,
        // Undocumented; riskDetections' cap. Smaller pages are followed.
        max_top: 500,
        bucket: Bucket::IdentityProtection,
        permission: "IdentityRiskEvent.Read.All",
        // Without it Graph still answers, with riskLevel and riskDetail `hidden`:
        // `--check` says so.
        licence: "a Microsoft Entra Workload ID Premium licence",
        beta: false,
        mutable: false,
        headline: Some("riskEventType"),
        kind: RecordKind::ServicePrincipalRiskDetection,
    },
    // Agent identities' risk (Entra Agent ID, preview): beta; $filter eq/le/ge documented
    // on lastModifiedDateTime, so a detection is windowed on its last update and each
    // update (dismissed, confirmed) is an event, as for users' risk; $top 500 at most.
    SourceSpec {
        name: "agent_risk_detections",
        path: "/beta/identityProtection/agentRiskDetections",
        event_type: None,
        time_field: "lastModifiedDateTime",
        bounds: Bounds::Inclusive,
        max_top: 500,
        bucket: Bucket::IdentityProtection,
        permission: "IdentityRiskEvent.Read.All",
        licence: "an Entra ID P2 licence (ID Protection for agents is in preview)",
        beta: true,
        mutable: true,
        headline: Some("riskEventType"),
        kind: RecordKind::AgentRiskDetection,
    },
    // Intune's audit trail: its own service and throttling limits, not the reports
    // bucket.
    SourceSpec {
        name: "intune_audit_events",
        path: "/v1.0/deviceManagement/auditEvents",
        event_type: None,
        time_field: "activityDateTime",
        bounds: Bounds::Inclusive,
        // Undocumented. Smaller pages are followed.
        max_top: 1000,
        bucket: Bucket::IntuneAuditing,
        permission: "DeviceManagementApps.Read.All",
        licence: "an active Intune licence",
        beta: false,
        mutable: false,
        headline: Some("activity"),
        kind: RecordKind::IntuneAuditEvent,
    },
];

/// The source exported when `sources` is not set: the original's one stream.
pub fn sign_ins() -> &'static SourceSpec {
    &SOURCES[0]
}

pub fn named(name: &str) -> Option<&'static SourceSpec> {
    SOURCES.iter().find(|s| s.name == name)
}

/// The names, for error messages.
pub fn names() -> String {
    let names: Vec<&str> = SOURCES.iter().map(|s| s.name).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn frame() -> Frame {
        Frame {
            start: datetime!(2026-11-30 12:00:00 UTC),
            end: datetime!(2026-11-30 12:00:29 UTC),
        }
    }

    #[test]
    fn sign_ins_keep_the_originals_filter() {
        assert_eq!(
            sign_ins().filter(&frame()),
            "createdDateTime ge 2026-11-30T12:00:00.0000000Z and \
             createdDateTime le 2026-11-30T12:00:29.9999999Z"
        );
    }

    #[test]
    fn provisioning_uses_only_gt_and_lt_around_the_same_seconds() {
        let filter = named("provisioning").unwrap().filter(&frame());
        assert_eq!(
            filter,
            "activityDateTime gt 2026-11-30T11:59:59.9999999Z and \
             activityDateTime lt 2026-11-30T12:00:30.0000000Z"
        );
        assert!(!filter.contains(" ge ") && !filter.contains(" le "));
    }

    #[test]
    fn beta_sign_ins_select_their_event_type() {
        let filter = named("signins_service_principal").unwrap().filter(&frame());
        assert!(
            filter.starts_with(
                "signInEventTypes/any(t: t eq 'servicePrincipal') and createdDateTime ge "
            ),
            "{filter}"
        );
    }

    #[test]
    fn every_source_has_a_unique_name_and_a_page_cap() {
        for (i, source) in SOURCES.iter().enumerate() {
            assert_eq!(named(source.name), Some(source), "{i}");
            assert!((1..=1000).contains(&source.max_top));
            assert_eq!(source.is_sign_ins(), source.name.starts_with("signins"));
        }
        assert_eq!(named("risk_detections").unwrap().max_top, 500);
    }
}
