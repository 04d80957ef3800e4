//! The simulator's command line.

use argh::FromArgs;

use crate::fail;
use crate::resources;

/// Microsoft Graph simulator for msgx-once (binds 127.0.0.1 only).
#[derive(FromArgs)]
pub struct Args {
    /// port to listen on; 0 picks a free one (default 0)
    #[argh(option, default = "0")]
    pub port: u16,
    /// write the bound port to this file once listening
    #[argh(option)]
    pub port_file: Option<String>,
    /// tenant the token endpoint accepts (default sim-tenant.example)
    #[argh(option, default = "String::from(\"sim-tenant.example\")")]
    pub tenant: String,
    /// more tenants of the same application, comma-separated: each has records of its
    /// own (its seed mixed with its name) and its own tokens
    #[argh(option)]
    pub tenants: Option<String>,
    /// a tenant where the application is not consented: its token requests get
    /// AADSTS700016, as Entra answers; repeatable
    #[argh(option)]
    pub unconsented: Vec<String>,
    /// client id the token endpoint accepts (default sim-client)
    #[argh(option, default = "String::from(\"sim-client\")")]
    pub client_id: String,
    /// client secret the token endpoint accepts (default sim-secret)
    #[argh(option, default = "String::from(\"sim-secret\")")]
    pub client_secret: String,
    /// seed of the synthetic sign-ins (default 1)
    #[argh(option, default = "1")]
    pub seed: u64,
    /// mean sign-ins per second (default 5)
    #[argh(option, default = "5.0")]
    pub rate: f64,
    /// lifetime of issued tokens in seconds (default 3599)
    #[argh(option, default = "3599")]
    pub token_ttl: u64,
    /// answer every K-th sign-ins request with 429 (0: never)
    #[argh(option, default = "0")]
    pub every_429: u64,
    /// the Retry-After sent with those 429s, whole or fractional seconds as Graph's
    /// throttling guidance shows them (e.g. 2.128; default 1)
    #[argh(option, default = "String::from(\"1\")")]
    pub retry_after: String,
    /// answer every K-th sign-ins request with 503 (0: never)
    #[argh(option, default = "0")]
    pub every_503: u64,
    /// drop the connection of every K-th sign-ins request, alternately before the
    /// response and halfway through the body (0: never)
    #[argh(option, default = "0")]
    pub every_reset: u64,
    /// answer every K-th sign-ins request with a 200 whose JSON is cut off (0: never)
    #[argh(option, default = "0")]
    pub garbage: u64,
    /// admit N requests per W seconds to the reports bucket (sign-ins, audits,
    /// provisioning; sliding window) of each tenant, 429 beyond: N/W
    #[argh(option)]
    pub throttle: Option<String>,
    /// admit N requests per W seconds to the reports bucket across every tenant (Graph's
    /// 122/10 per app), 429 beyond: N/W
    #[argh(option)]
    pub throttle_app: Option<String>,
    /// the same for identity protection (risk detections); its 429s have no
    /// Retry-After
    #[argh(option)]
    pub throttle_identity_protection: Option<String>,
    /// the same for security (alerts)
    #[argh(option)]
    pub throttle_security: Option<String>,
    /// the same for Intune auditing (audit events)
    #[argh(option)]
    pub throttle_intune: Option<String>,
    /// seconds between the versions of a risk detection or alert (default 900)
    #[argh(option, default = "900")]
    pub update_every: i64,
    /// answer every collection page after this many milliseconds plus
    /// --latency-per-record-us for each record it holds: Graph answers a page of 1,000
    /// sign-ins in seconds (default 500)
    #[argh(option, default = "500")]
    pub latency_ms: u64,
    /// microseconds of latency per record of the page, on top of --latency-ms (default
    /// 1000: a full page of sign-ins takes 1.5 s)
    #[argh(option, default = "1000")]
    pub latency_per_record_us: u64,
    /// late arrivals, P:S: a share P (0..1) of sign-ins shows up only S seconds after
    /// its createdDateTime; repeatable (tiers, shares adding up)
    #[argh(option)]
    pub late: Vec<String>,
    /// changed records, P:S: a share P (0..1) of sign-ins gains an MFA result S seconds
    /// after its creation (same id, new content)
    #[argh(option)]
    pub changed: Option<String>,
    /// memory for rendered pages, in MiB, so a window is rendered once (default 256)
    #[argh(option, default = "256")]
    pub cache_mb: usize,
    /// page every resource oldest first (Graph documents no order for some; sign-ins
    /// come newest first)
    #[argh(switch)]
    pub oldest_first: bool,
    /// never compress, even when the client sends Accept-Encoding: gzip
    #[argh(switch)]
    pub no_gzip: bool,
    /// point nextLinks at a second listener (another origin) that records the
    /// Authorization headers it receives
    #[argh(switch)]
    pub foreign_next_link: bool,
    /// every page's nextLink is the page's own URL (a paging loop)
    #[argh(switch)]
    pub next_link_loop: bool,
    /// never end a query: after the last records, empty pages with fresh skiptokens
    #[argh(switch)]
    pub endless_paging: bool,
    /// break every 25th sign-in: no_id, null_id, number_id, no_created, bad_created
    /// or not_object
    #[argh(option)]
    pub damage: Option<String>,
    /// put attacker-typed text (line breaks, escapes, a forged log line) into the user
    /// name and city of failed sign-ins
    #[argh(switch)]
    pub hostile: bool,
    /// the tenant's enabled Conditional Access policies, each listed in every sign-in:
    /// the record size (v1.0 sign-ins: 2 about 1.9 KB; default 50 about 11 KB,
    /// Microsoft's average; 95 about 20 KB)
    #[argh(option, default = "50")]
    pub ca_policies: u32,
    /// the tenant has no Workload ID Premium licence: service principals' risk
    /// detections come with riskLevel and riskDetail `hidden`
    #[argh(switch)]
    pub no_workload_premium: bool,
    /// answer with 403: CODE (e.g. Authorization_RequestDenied) for every resource,
    /// SOURCE (permission missing), SOURCE:licence (no P1/P2) or SOURCE:CODE, in every
    /// tenant or, as TENANT/…, in that one; repeatable
    #[argh(option)]
    pub deny: Vec<String>,
    /// answer the first N token requests with 503 (default 0)
    #[argh(option, default = "0")]
    pub fail_tokens: u64,
    /// the token response's expires_in, as raw JSON (default: the token lifetime)
    #[argh(option)]
    pub expires_in: Option<String>,
    /// the PEM certificate registered for the application: client assertions signed with
    /// its key are accepted
    #[argh(option)]
    pub client_cert: Option<String>,
    /// a federated token (workload identity) accepted as client assertion; repeatable
    /// (/_sim/federated?accept=… changes them)
    #[argh(option)]
    pub federated_token: Vec<String>,
    /// the client id of the user-assigned managed identity (default: only the
    /// system-assigned one, without client_id)
    #[argh(option)]
    pub managed_client_id: Option<String>,
    /// the IDENTITY_HEADER of App Service's /msi/token (default: App Service is off)
    #[argh(option)]
    pub identity_header: Option<String>,
}

/// `P:S` of `--late` and `--changed`.
pub fn parse_late(value: &str) -> (f64, i64) {
    let parsed = value
        .split_once(':')
        .and_then(|(p, s)| Some((p.parse::<f64>().ok()?, s.parse::<i64>().ok()?)));
    match parsed {
        Some((share, delay)) if (0.0..=1.0).contains(&share) && delay >= 0 => (share, delay),
        _ => fail(
            2,
            &format!("--late/--changed {value}: expected P:S, P from 0 to 1, S seconds"),
        ),
    }
}

/// A `--deny`: which resources answer 403, with which Graph error code.
pub struct Deny {
    /// None: every tenant.
    pub tenant: Option<String>,
    /// None: every resource.
    pub source: Option<&'static str>,
    pub code: String,
}

const LICENCE_CODE: &str = "Authentication_RequestFromNonPremiumTenantOrB2CTenant";

impl Deny {
    /// `CODE`, `SOURCE`, `SOURCE:licence` or `SOURCE:CODE`, perhaps after `TENANT/`.
    pub fn parse(value: &str) -> Deny {
        let (tenant, value) = match value.split_once('/') {
            Some((tenant, rest)) => (Some(tenant.to_string()), rest),
            None => (None, value),
        };
        let (name, code) = value.split_once(':').unwrap_or((value, ""));
        match resources::by_source(name) {
            Some(resource) => Deny {
                tenant,
                source: Some(resource.source),
                code: match code {
                    "" => "Authorization_RequestDenied".into(),
                    "licence" | "license" => LICENCE_CODE.into(),
                    code => code.into(),
                },
            },
            None => Deny {
                tenant,
                source: None,
                code: value.to_string(),
            },
        }
    }

    pub fn message(&self) -> &'static str {
        match self.code.as_str() {
            LICENCE_CODE => "Neither tenant is B2C or tenant doesn't have premium license",
            _ => "Insufficient privileges to complete the operation.",
        }
    }
}
