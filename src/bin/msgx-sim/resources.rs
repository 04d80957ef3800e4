//! The resources the simulator serves, each as strict as Graph documents it: its path,
//! the time field `$filter` may bound and with which operators, the largest `$top`, the
//! throttling bucket it counts against, and — for risk detections and alerts — records
//! that change after they are created.
//!
//! A resource's records are a [`Stream`] of events: each record's creation, and for a
//! mutable resource each later update (`update_every` seconds apart, up to two). A query
//! on the time field sees each record once, as its latest version at the query's "now".

use crate::generator::{Event, Generator, TICKS_PER_SECOND, Ticks};
use crate::{audits, protection, signins};

/// A group of resources that share one throttling budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Reports,
    IdentityProtection,
    Security,
    IntuneAuditing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    SignIns,
    DirectoryAudits,
    Provisioning,
    RiskDetections,
    Alerts,
    ServicePrincipalRiskDetections,
    AgentRiskDetections,
    IntuneAuditEvents,
}

pub struct Resource {
    /// msgx's name for it (`/_sim/records?source=…`, `--deny SOURCE`).
    pub source: &'static str,
    /// The request path, lower-cased.
    pub path: &'static str,
    /// `@odata.context` after `$metadata#`.
    pub context: &'static str,
    /// OData type, for Graph's error messages.
    pub type_name: &'static str,
    /// Beta sign-ins: the `signInEventTypes` value a query must select.
    pub event_type: Option<&'static str>,
    pub time_field: &'static str,
    /// Operators Graph documents on `time_field`.
    pub operators: &'static [&'static str],
    pub max_top: usize,
    pub bucket: Bucket,
    pub family: Family,
    /// Records per second, as a share of `--rate`.
    pub share: f64,
    /// Mixed into the seed, so each resource has records of its own.
    pub salt: u64,
}

const SIGN_IN_OPERATORS: &[&str] = &["eq", "ge", "le"];

const fn beta_sign_ins(source: &'static str, event_type: &'static str, salt: u64) -> Resource {
    Resource {
        source,
        path: "/beta/auditlogs/signins",
        context: "auditLogs/signIns",
        type_name: "microsoft.graph.signIn",
        event_type: Some(event_type),
        time_field: "createdDateTime",
        operators: SIGN_IN_OPERATORS,
        max_top: 1000,
        bucket: Bucket::Reports,
        family: Family::SignIns,
        share: 1.0,
        salt,
    }
}

pub static RESOURCES: &[Resource] = &[
    Resource {
        source: "signins",
        path: "/v1.0/auditlogs/signins",
        context: "auditLogs/signIns",
        type_name: "microsoft.graph.signIn",
        event_type: None,
        time_field: "createdDateTime",
        operators: SIGN_IN_OPERATORS,
        max_top: 1000,
        bucket: Bucket::Reports,
        family: Family::SignIns,
        share: 1.0,
        salt: 0,
    },
    beta_sign_ins("signins_noninteractive", "nonInteractiveUser", 1),
    beta_sign_ins("signins_service_principal", "servicePrincipal", 2),
    beta_sign_ins("signins_managed_identity", "managedIdentity", 3),
    Resource {
        source: "directory_audits",
        path: "/v1.0/auditlogs/directoryaudits",
        context: "auditLogs/directoryAudits",
        type_name: "microsoft.graph.directoryAudit",
        event_type: None,
        time_field: "activityDateTime",
        operators: &["eq", "ge", "le"],
        // Not documented; the simulator pages at most 500 whatever `$top` asks (up
        // to 1000), the way Graph may cap a page below the request.
        max_top: 1000,
        bucket: Bucket::Reports,
        family: Family::DirectoryAudits,
        share: 0.5,
        salt: 4,
    },
    Resource {
        source: "provisioning",
        path: "/v1.0/auditlogs/provisioning",
        context: "auditLogs/provisioning",
        type_name: "microsoft.graph.provisioningObjectSummary",
        event_type: None,
        time_field: "activityDateTime",
        operators: &["eq", "gt", "lt"],
        max_top: 1000,
        bucket: Bucket::Reports,
        family: Family::Provisioning,
        share: 0.2,
        salt: 5,
    },
    Resource {
        source: "risk_detections",
        path: "/v1.0/identityprotection/riskdetections",
        context: "identityProtection/riskDetections",
        type_name: "microsoft.graph.riskDetection",
        event_type: None,
        time_field: "lastUpdatedDateTime",
        operators: &["eq", "ge", "le"],
        max_top: 500,
        bucket: Bucket::IdentityProtection,
        family: Family::RiskDetections,
        share: 0.1,
        salt: 6,
    },
    Resource {
        source: "security_alerts",
        path: "/v1.0/security/alerts_v2",
        context: "security/alerts_v2",
        type_name: "microsoft.graph.security.alert",
        event_type: None,
        time_field: "lastUpdateDateTime",
        operators: &["eq", "ge", "le"],
        max_top: 1000,
        bucket: Bucket::Security,
        family: Family::Alerts,
        share: 0.1,
        salt: 7,
    },
    Resource {
        source: "service_principal_risk_detections",
        path: "/v1.0/identityprotection/serviceprincipalriskdetections",
        context: "identityProtection/servicePrincipalRiskDetections",
        type_name: "microsoft.graph.servicePrincipalRiskDetection",
        event_type: None,
        time_field: "detectedDateTime",
        operators: &["eq", "ge", "le"],
        max_top: 500,
        bucket: Bucket::IdentityProtection,
        family: Family::ServicePrincipalRiskDetections,
        share: 0.05,
        salt: 8,
    },
    Resource {
        source: "agent_risk_detections",
        path: "/beta/identityprotection/agentriskdetections",
        context: "identityProtection/agentRiskDetections",
        type_name: "microsoft.graph.agentRiskDetection",
        event_type: None,
        time_field: "lastModifiedDateTime",
        operators: &["eq", "ge", "le"],
        max_top: 500,
        bucket: Bucket::IdentityProtection,
        family: Family::AgentRiskDetections,
        share: 0.05,
        salt: 9,
    },
    Resource {
        source: "intune_audit_events",
        path: "/v1.0/devicemanagement/auditevents",
        context: "deviceManagement/auditEvents",
        type_name: "microsoft.graph.auditEvent",
        event_type: None,
        time_field: "activityDateTime",
        operators: &["eq", "ge", "le", "gt", "lt"],
        max_top: 1000,
        bucket: Bucket::IntuneAuditing,
        family: Family::IntuneAuditEvents,
        share: 0.2,
        salt: 10,
    },
];

impl Resource {
    pub fn mutable(&self) -> bool {
        matches!(
            self.family,
            Family::RiskDetections | Family::Alerts | Family::AgentRiskDetections
        )
    }

    /// Records a page holds at most, whatever `$top` asked.
    pub fn page_cap(&self) -> usize {
        match self.family {
            Family::DirectoryAudits => 500,
            _ => self.max_top,
        }
    }
}

pub fn by_source(source: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.source == source)
}

/// The resource a request path and (beta) event type name.
pub fn by_path(path: &str, event_type: Option<&str>) -> Option<&'static Resource> {
    let event_type = event_type.filter(|t| *t != "interactiveUser");
    RESOURCES
        .iter()
        .find(|r| r.path == path && r.event_type == event_type)
}

/// The records of one resource.
#[derive(Clone, Copy)]
pub struct Stream {
    pub resource: &'static Resource,
    pub generator: Generator,
    /// Seconds between a mutable record's versions.
    pub update_every: i64,
}

/// Updates a mutable record gets at most.
const MAX_UPDATES: u64 = 2;

impl Stream {
    pub fn new(resource: &'static Resource, base: Generator, update_every: i64) -> Self {
        let sign_ins = resource.family == Family::SignIns;
        Stream {
            resource,
            generator: Generator {
                seed: base.seed ^ resource.salt.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                rate: base.rate * resource.share,
                damage: base.damage.filter(|_| sign_ins),
                hostile: base.hostile && sign_ins,
                ..base
            },
            update_every,
        }
    }

    /// How many updates the record gets.
    fn updates(&self, created: i64, index: u64) -> u64 {
        match self.resource.mutable() {
            true => self.generator.hash(created, index, 50) % (MAX_UPDATES + 1),
            false => 0,
        }
    }

    /// Every version made during `second`, in time order.
    pub fn events(&self, second: i64) -> Vec<Event> {
        let mut events = Vec::new();
        for version in 0..=MAX_UPDATES {
            if version > 0 && !self.resource.mutable() {
                break;
            }
            let created = second - version as i64 * self.update_every;
            for (index, offset) in self.generator.offsets(created).into_iter().enumerate() {
                let index = index as u64;
                if version <= self.updates(created, index) {
                    events.push(Event {
                        created,
                        index,
                        version,
                        ticks: second * TICKS_PER_SECOND + offset,
                        created_ticks: created * TICKS_PER_SECOND + offset,
                    });
                }
            }
        }
        events.sort_by_key(|e| (e.ticks, e.version, e.index));
        events
    }

    /// When the version shows up in Graph.
    pub fn visible_at(&self, event: &Event) -> Ticks {
        let created = event.created_ticks;
        self.generator
            .visible_at(event.created, event.index, created)
            .max(created)
            + (event.ticks - created)
    }

    /// Whether the version is still the record's latest at `now`.
    pub fn current_at(&self, event: &Event, now: Ticks) -> bool {
        event.version == self.updates(event.created, event.index)
            || event.ticks + self.update_every * TICKS_PER_SECOND > now
    }

    /// The record of `event` as Graph shows it at `now`.
    pub fn render(&self, event: &Event, now: Ticks, select: Option<&[String]>) -> String {
        let created = event.created_ticks;
        let g = &self.generator;
        match self.resource.family {
            Family::SignIns => signins::render(
                g,
                (event.created, event.index, created),
                now,
                select,
                self.resource.event_type,
            ),
            Family::DirectoryAudits => audits::directory_audit(g, event),
            Family::Provisioning => audits::provisioning(g, event),
            Family::RiskDetections => protection::risk_detection(g, event, created),
            Family::Alerts => protection::alert(g, event, created),
            Family::ServicePrincipalRiskDetections => {
                protection::service_principal_risk_detection(g, event, g.hidden_risk)
            }
            Family::AgentRiskDetections => protection::agent_risk_detection(g, event, created),
            Family::IntuneAuditEvents => crate::intune::audit_event(g, event),
        }
    }
}
