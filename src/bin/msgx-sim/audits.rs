//! The audit-log family besides sign-ins: directory audits and provisioning events,
//! with the field names and nesting of Microsoft's documented examples.

use crate::generator::{
    APPS, Event, Generator, Record, TICKS_PER_SECOND, USERS, close, field, guid, raw, timestamp,
};

/// (activityDisplayName, category, operationType, target type, result reason)
const ACTIVITIES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "Add member to group",
        "GroupManagement",
        "Assign",
        "Group",
        "",
    ),
    ("Update user", "UserManagement", "Update", "User", ""),
    (
        "Reset user password",
        "UserManagement",
        "Update",
        "User",
        "",
    ),
    (
        "Add app role assignment to service principal",
        "ApplicationManagement",
        "Assign",
        "ServicePrincipal",
        "",
    ),
    (
        "Consent to application",
        "ApplicationManagement",
        "Assign",
        "ServicePrincipal",
        "Microsoft.Online.Security.UserConsentBlockedForRiskyAppsException",
    ),
];

pub fn directory_audit(g: &Generator, event: &Event) -> String {
    let h = |field: u64| g.hash(event.created, event.index, field);
    let user = USERS[(h(10) % USERS.len() as u64) as usize];
    let target = USERS[(h(11) % USERS.len() as u64) as usize];
    let activity = ACTIVITIES[(h(12) % ACTIVITIES.len() as u64) as usize];
    let failed = !activity.4.is_empty();
    let mut top = Record {
        out: String::with_capacity(1200),
        select: None,
    };
    top.out.push('{');
    top.text("id", &format!("Directory_{}", guid(h(20), h(21))));
    top.text("category", activity.1);
    top.text("correlationId", &guid(h(22), h(23)));
    top.text("result", if failed { "failure" } else { "success" });
    top.text("resultReason", activity.4);
    top.text("activityDisplayName", activity.0);
    top.text("activityDateTime", &timestamp(event.ticks));
    top.text("loggedByService", "Core Directory");
    top.text("operationType", activity.2);
    let mut initiator = String::from("{");
    raw(&mut initiator, "app", "null");
    let mut by = String::from("{");
    field(&mut by, "id", &guid(h(24), h(25)));
    field(&mut by, "displayName", user.1);
    field(
        &mut by,
        "userPrincipalName",
        &format!("{}@contoso.com", user.0),
    );
    field(
        &mut by,
        "ipAddress",
        &format!("10.0.{}.{}", h(26) % 256, 1 + h(27) % 254),
    );
    raw(&mut by, "userType", "null");
    close(&mut by);
    raw(&mut initiator, "user", &by);
    close(&mut initiator);
    top.raw("initiatedBy", &initiator);
    let mut resource = String::from("{");
    field(&mut resource, "id", &guid(h(28), h(29)));
    field(&mut resource, "displayName", target.1);
    field(&mut resource, "type", activity.3);
    field(
        &mut resource,
        "userPrincipalName",
        &format!("{}@contoso.com", target.0),
    );
    raw(&mut resource, "groupType", "null");
    raw(
        &mut resource,
        "modifiedProperties",
        r#"[{"displayName":"AccountEnabled","oldValue":"[false]","newValue":"[true]"}]"#,
    );
    close(&mut resource);
    top.raw("targetResources", &format!("[{resource}]"));
    top.raw(
        "additionalDetails",
        &format!(
            r#"[{{"key":"User-Agent","value":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Edge/{}"}}]"#,
            100 + h(30) % 30
        ),
    );
    close(&mut top.out);
    top.out
}

/// `2019-05-04T03:00:54Z`: Microsoft's provisioning example has no fraction, so the
/// exporter must not assume seven digits.
fn whole_second(ticks: i64) -> String {
    let text = timestamp(ticks.div_euclid(TICKS_PER_SECOND) * TICKS_PER_SECOND);
    format!("{}Z", &text[..19])
}

pub fn provisioning(g: &Generator, event: &Event) -> String {
    let h = |field: u64| g.hash(event.created, event.index, field);
    let user = USERS[(h(10) % USERS.len() as u64) as usize];
    let app = APPS[(h(12) % APPS.len() as u64) as usize];
    let (action, step_status) = match h(13) % 4 {
        0 => ("Create", "success"),
        1 => ("Update", "success"),
        2 => ("Delete", "success"),
        _ => ("Update", "failure"),
    };
    let mut top = Record {
        out: String::with_capacity(1600),
        select: None,
    };
    top.out.push('{');
    top.text("id", &guid(h(20), h(21)));
    top.text("activityDateTime", &whole_second(event.ticks));
    top.text("tenantId", "4a06f77b-6bdb-4f5b-b1c4-2b1a5d2e1a2b");
    top.text(
        "jobId",
        &format!("aws.{:032x}.{}", h(22), guid(h(23), h(24))),
    );
    top.text("cycleId", &guid(h(25), h(26)));
    top.text("changeId", &guid(h(27), h(28)));
    top.text("action", action);
    top.text("provisioningAction", &action.to_ascii_lowercase());
    top.raw("durationInMilliseconds", &(200 + h(29) % 5000).to_string());
    top.raw(
        "initiatedBy",
        r#"{"id":"","displayName":"Azure AD Provisioning Service","initiatorType":"system"}"#,
    );
    top.raw(
        "servicePrincipal",
        &format!(r#"{{"id":"{}","displayName":"{}"}}"#, app.0, app.1),
    );
    top.raw(
        "sourceSystem",
        r#"{"id":"0d9eef2c-b1d1-4a8b-9e6a-3f1a2b3c4d5e","displayName":"Azure Active Directory","details":{}}"#,
    );
    top.raw(
        "targetSystem",
        &format!(
            r#"{{"id":"{}","displayName":"{}","details":{{"ApplicationId":"{}"}}}}"#,
            guid(h(30), h(31)),
            app.1,
            app.0
        ),
    );
    let mut source = String::from("{");
    field(&mut source, "id", &guid(h(32), h(33)));
    field(&mut source, "displayName", user.1);
    field(&mut source, "identityType", "User");
    raw(&mut source, "details", "{}");
    close(&mut source);
    top.raw("sourceIdentity", &source);
    top.raw(
        "targetIdentity",
        &format!(
            r#"{{"id":"{}","displayName":"{}@contoso.com","identityType":"User","details":{{}}}}"#,
            guid(h(34), h(35)),
            user.0
        ),
    );
    let error = match step_status {
        "failure" => {
            r#"{"errorCode":"AzureActiveDirectoryInsufficientRights","reason":"Insufficient privileges to complete the operation.","additionalDetails":null,"errorCategory":"nonServiceFailure","recommendedAction":null}"#
        }
        _ => "null",
    };
    top.raw(
        "provisioningStatusInfo",
        &format!(r#"{{"status":"{step_status}","errorInformation":{error}}}"#),
    );
    top.raw(
        "provisioningSteps",
        &format!(
            r#"[{{"name":"EntryImport{action}","provisioningStepType":"import","status":"success","description":{},"details":{{}}}}]"#,
            crate::generator::json_string(&format!(
                "Received User '{}@contoso.com' change of type ({action}) from Azure Active Directory",
                user.0
            ))
        ),
    );
    top.raw(
        "modifiedProperties",
        r#"[{"displayName":"accountEnabled","oldValue":null,"newValue":"True"}]"#,
    );
    close(&mut top.out);
    top.out
}
