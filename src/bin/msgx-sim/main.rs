//! `msgx-sim`: a Microsoft Graph simulator for tests, the demo and benchmarks.
//!
//! It serves the client-credentials token endpoint and every Entra audit stream msgx
//! exports ([`resources`]: sign-ins v1.0 and beta by event type, directory audits,
//! provisioning, risk detections, alerts v2) with deterministic synthetic records,
//! each with exactly its documented filter operators and page cap, plus endpoints of
//! its own: `GET /_sim/records?source=…&$filter=…` (every record in a range, oldest
//! first, as NDJSON: the oracle tests compare against), `GET /_sim/stats` (request
//! counts), `/_sim/reads` and `/_sim/queries` (what was asked). Faults (429s per
//! bucket, 503s, dropped connections, garbled pages, 403s, latency, nextLinks to a
//! foreign host) can be switched on per flag. Loopback only.

mod args;
mod audits;
mod collections;
mod endpoints;
mod evolvable;
mod faults;
mod generator;
mod hostile;
mod http;
mod identities;
mod intune;
mod odata;
mod pages;
mod protection;
mod resources;
mod responses;
mod signins;
mod sim;
mod token;

use std::net::TcpListener;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use args::{Args, Deny, parse_late};
use faults::{Faults, Throttle};
use generator::Generator;
use pages::PageCache;
use resources::{RESOURCES, Stream};
use sim::{Sim, Tenant};

fn main() {
    let args: Args = argh::from_env();
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        fail(2, "--rate must be a non-negative number");
    }
    let throttle = |value: &Option<String>| {
        value
            .as_deref()
            .map(Throttle::parse)
            .transpose()
            .unwrap_or_else(|e| fail(2, &e))
    };
    if args.late.iter().map(|v| parse_late(v).0).sum::<f64>() > 1.0 {
        fail(2, "--late: the tiers' shares add up to more than 1");
    }
    if args.update_every < 1 {
        fail(2, "--update-every must be at least 1");
    }
    let deny: Vec<Deny> = args.deny.iter().map(|v| Deny::parse(v)).collect();
    let listener = listen(args.port);
    let port = local_port(&listener);
    let foreign = args.foreign_next_link.then(|| listen(0));
    let base_url = format!("http://127.0.0.1:{port}");
    let next_link_base = match &foreign {
        Some(listener) => format!("http://127.0.0.1:{}", local_port(listener)),
        None => base_url.clone(),
    };
    let generator = Generator {
        seed: args.seed,
        rate: args.rate,
        late: Vec::leak(args.late.iter().map(|v| parse_late(v)).collect()),
        changed: args.changed.as_deref().map(parse_late),
        damage: args
            .damage
            .as_deref()
            .map(hostile::Damage::parse)
            .transpose()
            .unwrap_or_else(|e| fail(2, &e)),
        hostile: args.hostile,
        ca_policies: args.ca_policies,
        hidden_risk: args.no_workload_premium,
    };
    let mut names = vec![args.tenant.clone()];
    for name in args.tenants.iter().flat_map(|t| t.split(',')) {
        let name = name.trim();
        if name.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            fail(2, &format!("--tenants: {name:?} is empty or repeated"));
        }
        names.push(name.to_string());
    }
    for name in &args.unconsented {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            fail(
                2,
                &format!("--unconsented {name}: not a tenant of --tenant/--tenants"),
            );
        }
    }
    let tenants = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            // The home tenant keeps the seed's records; each other its own.
            let seed = match i {
                0 => generator.seed,
                _ => generator.seed ^ fnv1a(name.as_bytes()),
            };
            let generator = Generator { seed, ..generator };
            Tenant {
                streams: RESOURCES
                    .iter()
                    .map(|r| Stream::new(r, generator, args.update_every))
                    .collect(),
                consented: !args
                    .unconsented
                    .iter()
                    .any(|u| u.eq_ignore_ascii_case(&name)),
                name,
            }
        })
        .collect();
    let sim = Arc::new(Sim {
        tenants,
        next_link_loop: args.next_link_loop,
        oldest_first: args.oldest_first,
        endless_paging: args.endless_paging,
        endless: AtomicU64::new(0),
        deny,
        expires_in: args.expires_in,
        fail_tokens: AtomicU64::new(args.fail_tokens),
        identities: identities::Identities {
            certificate: args
                .client_cert
                .as_deref()
                .map(identities::Identities::load_certificate)
                .transpose()
                .unwrap_or_else(|e| fail(2, &e)),
            federated: Mutex::new(args.federated_token),
            jtis: Mutex::default(),
            managed_client_id: args.managed_client_id,
            identity_header: args.identity_header,
        },
        clock: Mutex::default(),
        client_id: args.client_id,
        client_secret: args.client_secret,
        token_ttl: Duration::from_secs(args.token_ttl),
        base_url,
        next_link_base,
        latency: Duration::from_millis(args.latency_ms),
        latency_per_record: Duration::from_micros(args.latency_per_record_us),
        pages: PageCache::new(args.cache_mb << 20),
        gzip: !args.no_gzip,
        tokens: Mutex::default(),
        stats: Mutex::default(),
        reads: Mutex::default(),
        queries: Mutex::default(),
        faults: Faults {
            every_429: args.every_429,
            retry_after: args.retry_after.clone(),
            every_503: args.every_503,
            every_reset: args.every_reset,
            garbage: args.garbage,
            throttle: throttle(&args.throttle),
            throttle_app: throttle(&args.throttle_app),
            throttle_identity_protection: throttle(&args.throttle_identity_protection),
            throttle_security: throttle(&args.throttle_security),
            throttle_intune: throttle(&args.throttle_intune),
            requests: AtomicU64::new(0),
            quiet_until: Default::default(),
        },
    });
    if let Some(path) = &args.port_file
        && let Err(e) = std::fs::write(path, format!("{port}\n"))
    {
        fail(1, &format!("cannot write {path}: {e}"));
    }
    println!("msgx-sim listening on {}", sim.base_url);
    if let Some(listener) = foreign {
        let sim = sim.clone();
        std::thread::spawn(move || {
            http::serve(listener, Arc::new(move |request| sim.foreign(request)))
        });
    }
    http::serve(listener, Arc::new(move |request| sim.handle(request)));
}

fn listen(port: u16) -> TcpListener {
    TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| fail(1, &format!("cannot listen on 127.0.0.1:{port}: {e}")))
}

fn local_port(listener: &TcpListener) -> u16 {
    listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| fail(1, &format!("no local address: {e}")))
}

/// FNV-1a: a tenant's name mixed into the seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn fail(code: i32, message: &str) -> ! {
    eprintln!("msgx-sim: {message}");
    std::process::exit(code)
}
