//! Graph's evolvable enums: an enum's members added after `unknownFutureValue` are
//! sent only to a request that says `Prefer: include-unknown-enum-members`; to any
//! other they read `unknownFutureValue`. The records hold the real members (the oracle
//! shows them); a page sent without the header has them replaced.

/// The members after `unknownFutureValue` that the simulator's records carry, by the
/// property that holds them (Graph's reference lists them per enum: `tokenIssuerType`,
/// beta's `protocolType` of `authenticationProtocol`).
pub const LATER_MEMBERS: [(&str, &[&str]); 4] = [
    (
        "tokenIssuerType",
        &[
            "AzureADBackupAuth",
            "ADFederationServicesMFAAdapter",
            "NPSExtension",
        ],
    ),
    ("authenticationProtocol", &["authenticationTransfer"]),
    // A service principal's risk detection: `activityType`.
    ("activity", &["servicePrincipal"]),
    // An agent's risk detection: `agentIdentityType`.
    (
        "identityType",
        &[
            "agentIdentityBlueprintPrincipal",
            "user",
            "discoveredAgentIdentity",
        ],
    ),
];

/// Whether the request asked for the members after `unknownFutureValue`.
pub fn asked_for(prefer: Option<&str>) -> bool {
    prefer.is_some_and(|value| {
        value.split(',').any(|p| {
            p.trim()
                .eq_ignore_ascii_case("include-unknown-enum-members")
        })
    })
}

/// `member` of `property` where a record holds it: one of its later members for about
/// one record in `every` (by `hash`), else `usual`.
pub fn member(property: &str, usual: &'static str, hash: u64, every: u64) -> &'static str {
    let later = LATER_MEMBERS
        .iter()
        .find(|(name, _)| *name == property)
        .map_or(&[][..], |(_, members)| *members);
    match hash % every {
        0 if !later.is_empty() => later[(hash / every) as usize % later.len()],
        _ => usual,
    }
}

/// `page` as a request without the header sees it: every later member is
/// `unknownFutureValue`. None when the page holds none.
pub fn hidden(page: &[u8]) -> Option<Vec<u8>> {
    let mut text = String::from_utf8_lossy(page).into_owned();
    let mut changed = false;
    for (property, members) in LATER_MEMBERS {
        for member in members {
            let real = format!("\"{property}\":\"{member}\"");
            if text.contains(&real) {
                text = text.replace(&real, &format!("\"{property}\":\"unknownFutureValue\""));
                changed = true;
            }
        }
    }
    changed.then(|| text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_members_read_unknown_future_value_without_the_header() {
        let page =
            br#"{"value":[{"tokenIssuerType":"NPSExtension"},{"tokenIssuerType":"AzureAD"}]}"#;
        let seen = String::from_utf8(hidden(page).unwrap()).unwrap();
        assert_eq!(
            seen,
            r#"{"value":[{"tokenIssuerType":"unknownFutureValue"},{"tokenIssuerType":"AzureAD"}]}"#
        );
        assert!(hidden(br#"{"value":[]}"#).is_none());
        assert!(asked_for(Some(
            "odata.maxpagesize=10, include-unknown-enum-members"
        )));
        assert!(!asked_for(Some("odata.maxpagesize=10")));
        assert!(!asked_for(None));
    }
}
