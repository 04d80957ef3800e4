//! Sign-ins as Microsoft documents them: v1.0's `signIn` (the interactive stream) and
//! beta's (the non-interactive, service principal and managed identity streams, with
//! their many more properties), checked against Microsoft's own SDK models
//! (`scripts/check-sdk.sh`). Every enabled Conditional Access policy of the tenant is
//! listed in every sign-in, applied or not, so `--ca-policies` sets the record size:
//! v1.0's about 1.9 KB with 2 policies, 11 KB (Microsoft's average, 11.5 KB) with 50,
//! 20 KB with 95; beta's about twice that.

use std::fmt::Write;

use crate::evolvable;
use crate::generator::{
    APPS, Generator, PLACES, Record, Ticks, USERS, close, field, guid, json_string, location,
    public_ip, raw, timestamp,
};
use crate::hostile;

/// The top-level properties a sign-in may have, for `$select` (v1.0's, then beta's).
pub const PROPERTIES: &[&str] = &[
    "id",
    "createdDateTime",
    "userDisplayName",
    "userPrincipalName",
    "userId",
    "appId",
    "appDisplayName",
    "ipAddress",
    "clientAppUsed",
    "userAgent",
    "correlationId",
    "conditionalAccessStatus",
    "isInteractive",
    "riskDetail",
    "riskLevelAggregated",
    "riskLevelDuringSignIn",
    "riskState",
    "riskEventTypes",
    "riskEventTypes_v2",
    "resourceDisplayName",
    "resourceId",
    "resourceTenantId",
    "homeTenantId",
    "servicePrincipalId",
    "servicePrincipalName",
    "authenticationAppDeviceDetails",
    "status",
    "deviceDetail",
    "location",
    "appliedConditionalAccessPolicies",
    // beta only
    "signInEventTypes",
    "homeTenantName",
    "appOwnerTenantId",
    "resourceOwnerTenantId",
    "resourceServicePrincipalId",
    "uniqueTokenIdentifier",
    "sessionId",
    "userType",
    "tokenIssuerType",
    "tokenIssuerName",
    "authenticationRequirement",
    "authenticationDetails",
    "authenticationProcessingDetails",
    "authenticationMethodsUsed",
    "authenticationRequirementPolicies",
    "authenticationContextClassReferences",
    "authenticationProtocol",
    "clientCredentialType",
    "crossTenantAccessType",
    "incomingTokenType",
    "originalTransferMethod",
    "autonomousSystemNumber",
    "networkLocationDetails",
    "sessionLifetimePolicies",
    "conditionalAccessAudiences",
    "appliedEventListeners",
    "flaggedForReview",
    "isTenantRestricted",
    "isThroughGlobalSecureAccess",
    "processingTimeInMilliseconds",
    "mfaDetail",
    "managedServiceIdentity",
    "privateLinkDetails",
    "tokenProtectionStatusDetails",
    "appTokenProtectionStatus",
    "signInTokenProtectionStatus",
    "signInIdentifier",
    "signInIdentifierType",
    "originalRequestId",
    "ipAddressFromResourceProvider",
    "servicePrincipalCredentialKeyId",
    "servicePrincipalCredentialThumbprint",
    "federatedCredentialId",
    "clientSessionId",
    "globalSecureAccessIpAddress",
    "agent",
    "azureResourceId",
];

/// The simulated tenant's id (the home and resource tenant of its users' sign-ins).
pub const TENANT_ID: &str = "4a06f77b-6bdb-4f5b-b1c4-2b1a5d2e1a2b";

/// (operatingSystem, browser, clientAppUsed, userAgent)
const DEVICES: &[(&str, &str, &str, &str)] = &[
    (
        "Windows 10",
        "Edge 120.0.2210",
        "Browser",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
    ),
    (
        "MacOs",
        "Safari 17.1",
        "Browser",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    ),
    (
        "Ios",
        "Mobile Safari 17.1",
        "Mobile Apps and Desktop clients",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    ),
    (
        "Android",
        "Chrome Mobile 119.0",
        "Browser",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.163 Mobile Safari/537.36",
    ),
];

/// What a tenant's Conditional Access policies are about: their names are made of these.
const POLICY_KINDS: &[(&str, &str)] = &[
    ("Require MFA for", "Mfa"),
    ("Block legacy authentication for", "Block"),
    ("Require compliant device for", "CompliantDevice"),
    ("Medium sign-in risk → block for", "Block"),
    (
        "Require password change on high user risk for",
        "PasswordChange",
    ),
    ("Require approved client app for", "ApprovedApplication"),
];

const POLICY_GROUPS: &[&str] = &[
    "admins",
    "all users",
    "guests",
    "Zürich office",
    "finance",
    "break-glass exclusions",
    "contractors",
];

/// The JSON text of the `index`-th sign-in of `second`, created at `ticks`, as Graph
/// shows it at `now` (a changed one with its MFA result from then; `--damage` breaks
/// every 25th); with `select`, only those top-level properties (Graph's `$select`).
/// `event_type` is a beta stream's `signInEventTypes` value: beta's shape; None:
/// v1.0's.
pub fn render(
    g: &Generator,
    (second, index, ticks): (i64, u64, Ticks),
    now: Ticks,
    select: Option<&[String]>,
    event_type: Option<&str>,
) -> String {
    let mfa_done = g
        .changes_at(second, index, ticks)
        .is_some_and(|at| at <= now);
    let record = sound(g, second, index, ticks, mfa_done, select, event_type);
    match g.damage {
        Some(damage) if g.hash(second, index, 30).is_multiple_of(25) => damage.apply(record),
        _ => record,
    }
}

fn sound(
    g: &Generator,
    second: i64,
    index: u64,
    ticks: Ticks,
    mfa_done: bool,
    select: Option<&[String]>,
    event_type: Option<&str>,
) -> String {
    let h = |field: u64| g.hash(second, index, field);
    let mut user = USERS[(h(10) % USERS.len() as u64) as usize];
    let mut place = PLACES[(h(11) % PLACES.len() as u64) as usize];
    let app = APPS[(h(12) % APPS.len() as u64) as usize];
    let device = DEVICES[(h(13) % DEVICES.len() as u64) as usize];
    let failed = h(14) % 10 == 0;
    if failed && g.hostile {
        user = (hostile::TYPED_USER, hostile::TYPED_USER);
        place.0 = hostile::TYPED_CITY;
    }
    let beta = event_type.is_some();
    let service = matches!(event_type, Some("servicePrincipal" | "managedIdentity"));
    let mut top = Record {
        out: String::with_capacity(2000 + 400 * g.ca_policies as usize),
        select,
    };
    top.out.push('{');
    top.text("id", &guid(h(20), h(21)));
    top.text("createdDateTime", &timestamp(ticks));
    // A service principal or managed identity signs in as itself: no user; a managed
    // identity from inside Azure, with no client IP.
    let (display, upn, user_id) = match service {
        true => (String::new(), String::new(), String::new()),
        false => (
            user.1.to_string(),
            format!("{}@contoso.com", user.0),
            guid(h(22), h(23)),
        ),
    };
    top.text("userDisplayName", &display);
    top.text("userPrincipalName", &upn);
    top.text("userId", &user_id);
    top.text("appId", app.0);
    top.text("appDisplayName", app.1);
    let ip = match event_type {
        Some("managedIdentity") => String::new(),
        _ => public_ip(h(24)),
    };
    top.text("ipAddress", &ip);
    top.text("clientAppUsed", device.2);
    top.text("userAgent", device.3);
    top.text("correlationId", &guid(h(25), h(26)));
    top.text(
        "conditionalAccessStatus",
        if failed { "failure" } else { "success" },
    );
    top.raw(
        "isInteractive",
        match event_type {
            None | Some("interactiveUser") => "true",
            Some(_) => "false",
        },
    );
    if let Some(kind) = event_type {
        top.raw("signInEventTypes", &format!("[\"{kind}\"]"));
    }
    let (sp_id, sp_name) = match service {
        true => (guid(h(27), h(28)), app.1),
        false => (String::new(), ""),
    };
    top.text("servicePrincipalId", &sp_id);
    top.text("servicePrincipalName", sp_name);
    for name in [
        "riskDetail",
        "riskLevelAggregated",
        "riskLevelDuringSignIn",
        "riskState",
    ] {
        top.text(name, "none");
    }
    // Beta has only the second; v1.0 both.
    if !beta {
        top.raw("riskEventTypes", "[]");
    }
    top.raw("riskEventTypes_v2", "[]");
    top.text("resourceDisplayName", "Microsoft Graph");
    top.text("resourceId", "00000003-0000-0000-c000-000000000000");
    top.text("resourceTenantId", TENANT_ID);
    top.text("homeTenantId", TENANT_ID);
    top.raw("authenticationAppDeviceDetails", "null");
    // An MFA result merged after the sign-in first showed (Microsoft: "MFA sign-in
    // data might take up to two hours to fully aggregate").
    let status = match (failed, mfa_done) {
        (true, _) => {
            r#"{"errorCode":50126,"failureReason":"Error validating credentials due to invalid username or password.","additionalDetails":null}"#
        }
        (false, true) => {
            r#"{"errorCode":0,"failureReason":null,"additionalDetails":"MFA completed in Azure AD"}"#
        }
        (false, false) => r#"{"errorCode":0,"failureReason":null,"additionalDetails":null}"#,
    };
    top.raw("status", status);
    let mut detail = String::from("{");
    field(&mut detail, "deviceId", "");
    raw(&mut detail, "displayName", "null");
    field(&mut detail, "operatingSystem", device.0);
    field(&mut detail, "browser", device.1);
    raw(&mut detail, "isCompliant", "null");
    raw(&mut detail, "isManaged", "null");
    raw(&mut detail, "trustType", "null");
    if beta {
        field(&mut detail, "browserId", "");
    }
    close(&mut detail);
    top.raw("deviceDetail", &detail);
    top.raw("location", &location(place, true));
    if beta {
        beta_properties(&mut top, g, second, index, ticks, failed);
    }
    // One service principal sign-in in six is an agent's (Entra Agent ID): beta's
    // `agent` object names its kind and the agent it acts for.
    if event_type == Some("servicePrincipal") && h(36) % 6 == 0 {
        let kinds = [
            "agenticAppInstance",
            "agenticApp",
            "agentIdentityBlueprintPrincipal",
        ];
        let kind = kinds[(h(37) % kinds.len() as u64) as usize];
        let mut agent = String::from("{");
        field(&mut agent, "agentType", kind);
        field(&mut agent, "agentSubjectType", kind);
        field(&mut agent, "agentSubjectParentId", &guid(h(38), h(39)));
        field(&mut agent, "parentAppId", &guid(h(40), h(41)));
        close(&mut agent);
        top.raw("agent", &agent);
    }
    top.raw(
        "appliedConditionalAccessPolicies",
        &policies(g, h(15), failed, beta),
    );
    close(&mut top.out);
    top.out
}

/// Every enabled policy of the tenant, with its result for this sign-in: the one in
/// `applied % n` (and the next) applied, the rest not, some report-only.
fn policies(g: &Generator, applied: u64, failed: bool, beta: bool) -> String {
    let n = u64::from(g.ca_policies);
    let mut out = String::from("[");
    for p in 0..n {
        let (kind, grant) = POLICY_KINDS[(p % POLICY_KINDS.len() as u64) as usize];
        let group =
            POLICY_GROUPS[((p / POLICY_KINDS.len() as u64) % POLICY_GROUPS.len() as u64) as usize];
        let hit = n > 0 && (p == applied % n || p == (applied + 1) % n);
        let result = match (hit, failed, p % 5) {
            (true, true, _) => "failure",
            (true, false, _) => "success",
            (false, _, 4) => "reportOnlyNotApplied",
            (false, _, 3) => "notEnabled",
            _ => "notApplied",
        };
        let grants = if hit {
            format!(r#"["{grant}"]"#)
        } else {
            "[]".into()
        };
        let _ = write!(
            out,
            r#"{{"id":"{}","displayName":{},"enforcedGrantControls":{grants},"enforcedSessionControls":[],"result":"{result}""#,
            guid(g.seed ^ 0xca, p),
            json_string(&format!("CA{:03} {kind} {group}", p + 1)),
        );
        if beta {
            let (satisfied, rules) = match hit {
                true => (
                    "application,users",
                    r#"[{"conditionalAccessCondition":"application","ruleSatisfied":"allApps"},{"conditionalAccessCondition":"users","ruleSatisfied":"allUsers"}]"#,
                ),
                false => ("none", "[]"),
            };
            let _ = write!(
                out,
                r#","conditionsSatisfied":"{satisfied}","conditionsNotSatisfied":"none","includeRulesSatisfied":{rules},"excludeRulesSatisfied":[],"sessionControlsNotSatisfied":[],"authenticationStrength":null"#
            );
        }
        out.push_str("},");
    }
    if out.ends_with(',') {
        out.pop();
    }
    out.push(']');
    out
}

/// What beta's `signIn` has beyond v1.0's, filled the way Microsoft's beta example
/// fills it.
fn beta_properties(
    top: &mut Record,
    g: &Generator,
    second: i64,
    index: u64,
    ticks: Ticks,
    failed: bool,
) {
    let h = |field: u64| g.hash(second, index, field);
    top.text("homeTenantName", "Contoso");
    top.text("appOwnerTenantId", "f8cdef31-a31e-4b4a-93e4-5f571e91255a");
    top.text(
        "resourceOwnerTenantId",
        "f8cdef31-a31e-4b4a-93e4-5f571e91255a",
    );
    top.text("resourceServicePrincipalId", &guid(h(30), h(31)));
    top.text("uniqueTokenIdentifier", &token_identifier(h(32), h(33)));
    top.text("sessionId", &guid(h(34), h(35)));
    top.text("userType", "member");
    // One sign-in in eight through an issuer Graph added after unknownFutureValue
    // (NPS extension, backup authentication, AD FS MFA adapter).
    top.text(
        "tokenIssuerType",
        evolvable::member("tokenIssuerType", "AzureAD", h(60), 8),
    );
    top.text("tokenIssuerName", "");
    let requirement = if h(36) % 3 == 0 {
        "multiFactorAuthentication"
    } else {
        "singleFactorAuthentication"
    };
    top.text("authenticationRequirement", requirement);
    let (result, succeeded) = match failed {
        true => (
            "Invalid username or password or Invalid on-premise username or password.",
            "false",
        ),
        false => ("Correct password", "true"),
    };
    top.raw(
        "authenticationDetails",
        &format!(
            r#"[{{"authenticationStepDateTime":"{}","authenticationMethod":"Password","authenticationMethodDetail":"Password in the cloud","succeeded":{succeeded},"authenticationStepResultDetail":{},"authenticationStepRequirement":"Primary authentication"}}]"#,
            timestamp(ticks),
            json_string(result)
        ),
    );
    top.raw(
        "authenticationProcessingDetails",
        r#"[{"key":"Legacy TLS (TLS 1.0, 1.1, 3DES)","value":"False"},{"key":"Is CAE Token","value":"False"}]"#,
    );
    top.raw("authenticationMethodsUsed", "[]");
    top.raw(
        "authenticationRequirementPolicies",
        &format!(
            r#"[{{"requirementProvider":"{}","detail":"Conditional Access"}}]"#,
            if requirement == "multiFactorAuthentication" {
                "multiConditionalAccess"
            } else {
                "user"
            }
        ),
    );
    top.text(
        "authenticationProtocol",
        evolvable::member("authenticationProtocol", "none", h(61), 10),
    );
    // Constant in every record.
    for (name, json) in [
        ("authenticationContextClassReferences", "[]"),
        ("clientCredentialType", "\"none\""),
        ("crossTenantAccessType", "\"none\""),
        ("incomingTokenType", "\"none\""),
        ("originalTransferMethod", "\"none\""),
    ] {
        top.raw(name, json);
    }
    top.raw(
        "autonomousSystemNumber",
        &(3598 + h(37) % 60_000).to_string(),
    );
    top.raw("networkLocationDetails", "[]");
    top.raw("sessionLifetimePolicies", "[]");
    top.raw(
        "conditionalAccessAudiences",
        // A string collection in beta's metadata (the SDK's model): the resources'
        // application ids.
        r#"["00000003-0000-0000-c000-000000000000"]"#,
    );
    // Constant in every record.
    for (name, json) in [
        ("appliedEventListeners", "[]"),
        ("flaggedForReview", "false"),
        ("isTenantRestricted", "false"),
        ("isThroughGlobalSecureAccess", "false"),
    ] {
        top.raw(name, json);
    }
    top.raw(
        "processingTimeInMilliseconds",
        &(40 + h(38) % 400).to_string(),
    );
    top.raw("mfaDetail", "null");
    top.raw(
        "managedServiceIdentity",
        r#"{"msiType":"none","associatedResourceId":null,"federatedTokenId":null,"federatedTokenIssuer":null}"#,
    );
    top.raw(
        "privateLinkDetails",
        r#"{"policyId":"","policyName":"","resourceId":"","policyTenantId":""}"#,
    );
    top.raw(
        "tokenProtectionStatusDetails",
        r#"{"signInSessionStatus":"unbound","signInSessionStatusCode":1002}"#,
    );
    // Constant in every record.
    for (name, json) in [
        ("appTokenProtectionStatus", "\"none\""),
        ("signInTokenProtectionStatus", "\"none\""),
        ("signInIdentifier", "\"\""),
        ("signInIdentifierType", "null"),
        ("originalRequestId", "\"\""),
        ("ipAddressFromResourceProvider", "null"),
        ("servicePrincipalCredentialKeyId", "\"\""),
        ("servicePrincipalCredentialThumbprint", "\"\""),
        ("federatedCredentialId", "\"\""),
        ("clientSessionId", "\"\""),
        ("globalSecureAccessIpAddress", "\"\""),
        ("azureResourceId", "\"\""),
    ] {
        top.raw(name, json);
    }
}

/// A `uniqueTokenIdentifier` as Entra writes them: 22 characters of base64url.
fn token_identifier(a: u64, b: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = u128::from(a) << 64 | u128::from(b);
    (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect()
}
