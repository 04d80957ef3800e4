//! `--check`: a doctor for a deployment, before its first tick. It takes the
//! configuration as loaded (so it is valid), reaches Redis (PING, a harmless write and
//! delete under each queue key's prefix, a script — so missing ACL rights show), gets
//! a token, and asks each source for one record (`$top=1`); then prints one line per
//! check with ✔ or ✘ and, for each failure, what to do. It writes no records, takes
//! no lock and moves no watermark.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::GraphError;
use crate::exit;
use crate::graph::GraphClient;
use crate::graph::PageShape;
use crate::setup::Setup;
use crate::sources::SourceSpec;
use crate::window::{self, Frame};

/// A check gives up after this long, and retries a failure this often.
const CHECK_DEADLINE: Duration = Duration::from_secs(120);
const CHECK_RETRIES: u32 = 2;

/// One check's outcome: what was checked, and what to do if it failed.
struct Outcome {
    name: String,
    result: Result<String, (String, String)>,
}

impl Outcome {
    fn line(&self) -> String {
        match &self.result {
            Ok(detail) => format!("✔ {}: {detail}", self.name),
            Err((problem, advice)) => format!("✘ {}: {problem}\n    → {advice}", self.name),
        }
    }
}

/// Runs every check, prints the lines and returns the exit code: 0 only when all
/// passed.
pub fn check(config: &Config) -> u8 {
    crate::setup::install_crypto();
    let mut outcomes = vec![Outcome {
        name: "configuration".into(),
        result: Ok(format!(
            "valid: auth {}, sources {}{}",
            config.credential.kind().name(),
            config
                .options
                .sources
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(","),
            match &config.options.tenants {
                Some(tenants) => format!(", tenants {}", tenants.join(",")),
                None => String::new(),
            }
        )),
    }];
    let health = crate::sink::health(&config.sink_settings(), &config.sources);
    outcomes.push(Outcome {
        name: health.name,
        result: health.result,
    });
    outcomes.extend(check_graph(config));
    let mut passed = true;
    for outcome in &outcomes {
        passed &= outcome.result.is_ok();
        println!("{}", outcome.line());
    }
    if passed { exit::OK } else { exit::INCOMPLETE }
}

/// A token, then one `$top=1` request per source for the last minute.
fn check_graph(config: &Config) -> Vec<Outcome> {
    // A run's set-up: the same transport, and the same request budget, shared with the
    // runs beside it — a check must not draw the 429s it is meant to warn of. A check
    // gives up sooner than a run.
    let setup = match Setup::new(config, Instant::now() + CHECK_DEADLINE, CHECK_RETRIES) {
        Ok(setup) => setup,
        Err(e) => {
            return vec![Outcome {
                name: "request budget".into(),
                result: Err((e.to_string(), "fix the Redis options named above".into())),
            }];
        }
    };
    let now = config
        .fixed_now
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let end = window::lagged_until(now, config.options.timelag);
    let frame = Frame::between(end - time::Duration::minutes(1), end);
    let mut outcomes = Vec::new();
    for tenant in config.tenants() {
        let of_tenant = |what: String| match tenant {
            Some(tenant) => format!("{what} of tenant {tenant}"),
            None => what,
        };
        let tokens = match setup.tokens(config, tenant) {
            Ok(tokens) => tokens,
            Err(e) => {
                outcomes.push(Outcome {
                    name: of_tenant("token".into()),
                    result: Err((
                        e.to_string(),
                        "fix the credential options named above".into(),
                    )),
                });
                continue;
            }
        };
        let token = Outcome {
            name: of_tenant(format!("token ({})", config.credential.kind().name())),
            result: tokens
                .bearer()
                .map(|_| {
                    format!(
                        "issued by {}",
                        config.login_url.as_str().trim_end_matches('/')
                    )
                })
                .map_err(|e| {
                    let advice = e.advice(&config.consent_url(tenant));
                    (e.to_string(), advice)
                }),
        };
        let refused = token.result.is_err();
        outcomes.push(token);
        if refused {
            continue;
        }
        for source in config
            .sources
            .iter()
            .filter(|s| s.tenant.as_deref() == tenant)
        {
            let client = GraphClient::new(
                setup.transport.clone(),
                tokens.clone(),
                config.graph_url.clone(),
                // One record is enough to know the source answers.
                PageShape {
                    page_size: 1,
                    select: None,
                    ..PageShape::of(source)
                },
                setup.gates.of(tenant, source.spec.bucket),
                setup.retry.clone(),
            );
            let result = match frame {
                Some(frame) => client
                    .count_first_page(&frame)
                    .map(|page| {
                        let hidden = match page.hidden {
                            true => format!(
                                "; its risk details come back hidden: the tenant needs {}",
                                source.spec.licence
                            ),
                            false => String::new(),
                        };
                        format!(
                            "HTTP 200, {} record(s) in the last minute's first page{hidden}",
                            page.records
                        )
                    })
                    .map_err(|e| {
                        let advice = graph_advice(&e, source.spec);
                        (e.to_string(), advice)
                    }),
                None => Ok("no minute to ask for".into()),
            };
            outcomes.push(Outcome {
                name: format!("source {}", source.label()),
                result,
            });
        }
    }
    outcomes
}

/// What to do about Graph's answer to a source's request.
fn graph_advice(error: &GraphError, source: &SourceSpec) -> String {
    match error {
        GraphError::Status { code, .. }
            if code == "Authentication_RequestFromNonPremiumTenantOrB2CTenant" =>
        {
            format!(
                "the tenant needs {} to read these logs through Graph",
                source.licence
            )
        }
        GraphError::Status { status: 403, .. } => format!(
            "grant the application permission {} and admin consent (the tenant needs {})",
            source.permission, source.licence
        ),
        GraphError::Status { status: 429, .. } => {
            "Graph throttled the check: the budget is used by other processes; try again later"
                .into()
        }
        _ => "check that graph_url is reachable from here".into(),
    }
}
