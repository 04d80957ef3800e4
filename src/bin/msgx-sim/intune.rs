//! Intune's audit trail: `/deviceManagement/auditEvents`, with the members and nesting
//! of Microsoft's `auditEvent`, `auditActor`, `auditResource` and `auditProperty`.

use crate::generator::{
    Event, Generator, Record, USERS, close, field, guid, json_string, public_ip, raw, timestamp,
};

/// (activity, activityType, activityOperationType, componentName, resource type,
/// category)
const ACTIVITIES: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "Create DeviceConfiguration",
        "Create DeviceConfiguration",
        "Create",
        "DeviceConfiguration",
        "DeviceConfiguration",
        "DeviceConfiguration",
    ),
    (
        "Patch DeviceCompliancePolicy",
        "Patch DeviceCompliancePolicy",
        "Patch",
        "DeviceCompliance",
        "DeviceCompliancePolicy",
        "Compliance",
    ),
    (
        "Wipe ManagedDevice",
        "Wipe ManagedDevice",
        "Action",
        "Devices",
        "ManagedDevice",
        "Device",
    ),
    (
        "Delete MobileApp",
        "Delete MobileApp",
        "Delete",
        "MobileApps",
        "MobileApp",
        "Application",
    ),
];

pub fn audit_event(g: &Generator, event: &Event) -> String {
    let h = |field: u64| g.hash(event.created, event.index, field);
    let user = USERS[(h(10) % USERS.len() as u64) as usize];
    let activity = ACTIVITIES[(h(12) % ACTIVITIES.len() as u64) as usize];
    let mut top = Record {
        out: String::with_capacity(1200),
        select: None,
    };
    top.out.push('{');
    top.text("id", &guid(h(20), h(21)));
    top.text("displayName", activity.0);
    top.text("componentName", activity.3);
    let mut actor = String::from("{");
    field(&mut actor, "auditActorType", "ItPro");
    raw(
        &mut actor,
        "userPermissions",
        &format!("[{}]", json_string("*")),
    );
    field(
        &mut actor,
        "applicationId",
        "0000000a-0000-0000-c000-000000000000",
    );
    field(&mut actor, "applicationDisplayName", "Microsoft Intune");
    field(
        &mut actor,
        "userPrincipalName",
        &format!("{}@contoso.com", user.0),
    );
    raw(&mut actor, "servicePrincipalName", "null");
    field(&mut actor, "ipAddress", &public_ip(h(26)));
    field(&mut actor, "userId", &guid(h(27), h(28)));
    close(&mut actor);
    top.raw("actor", &actor);
    top.text("activity", activity.0);
    top.text("activityDateTime", &timestamp(event.ticks));
    top.text("activityType", activity.1);
    top.text("activityOperationType", activity.2);
    top.text(
        "activityResult",
        if h(13) % 20 == 0 {
            "Failure"
        } else {
            "Success"
        },
    );
    top.text("correlationId", &guid(h(22), h(23)));
    let mut property = String::from("{");
    field(&mut property, "displayName", "DisplayName");
    field(&mut property, "oldValue", "");
    field(
        &mut property,
        "newValue",
        &format!("{} {}", activity.4, h(14) % 1000),
    );
    close(&mut property);
    let mut resource = String::from("{");
    field(
        &mut resource,
        "displayName",
        &format!("{} {}", activity.4, h(14) % 1000),
    );
    raw(
        &mut resource,
        "modifiedProperties",
        &format!("[{property}]"),
    );
    field(&mut resource, "auditResourceType", activity.4);
    field(&mut resource, "resourceId", &guid(h(24), h(25)));
    close(&mut resource);
    top.raw("resources", &format!("[{resource}]"));
    top.text("category", activity.5);
    close(&mut top.out);
    top.out
}
