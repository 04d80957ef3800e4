//! The locks of every lane of the process, renewed by one thread: a fleet run holds a
//! lock per tenant × source, and a thread (and a connection a round) per lock would
//! make a process's threads and memory grow with its tenants.
//!
//! A lock is renewed every [`LOCK_RENEW_EVERY`] while its [`Renewal`] lives; dropping
//! it stops the renewals before the lock is released, so a released lock is never
//! renewed (which would find it gone and call it lost).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::redis_client::{RedisClient, RedisConnection, connect};

/// How long the lock outlives a run that died without releasing it.
pub const LOCK_TTL: Duration = Duration::from_secs(30);
pub const LOCK_RENEW_EVERY: Duration = Duration::from_secs(10);

const RENEW_SCRIPT: &str = include_str!("lua/renew.lua");

/// One lock to keep.
struct Held {
    client: RedisClient,
    /// Where its Redis is: locks of one Redis are renewed on one connection a round.
    location: String,
    key: String,
    token: String,
    lost: Arc<AtomicBool>,
}

#[derive(Default)]
struct Renewer {
    /// Held while a round renews, so a lock is never renewed after its Renewal ends.
    locks: Mutex<BTreeMap<u64, Held>>,
    next: AtomicU64,
    started: AtomicBool,
}

fn renewer() -> &'static Renewer {
    static RENEWER: OnceLock<Renewer> = OnceLock::new();
    RENEWER.get_or_init(Renewer::default)
}

/// A lock being renewed; dropping it stops the renewals.
pub struct Renewal(u64);

impl Drop for Renewal {
    fn drop(&mut self) {
        renewer()
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

/// Renews `key` (held with `token`) until the returned Renewal is dropped; `lost` is set
/// if another run took it meanwhile.
pub fn renew(
    client: RedisClient,
    location: String,
    key: String,
    token: String,
    lost: Arc<AtomicBool>,
) -> Renewal {
    let shared = renewer();
    let id = shared.next.fetch_add(1, Ordering::Relaxed);
    shared
        .locks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            id,
            Held {
                client,
                location,
                key,
                token,
                lost,
            },
        );
    if !shared.started.swap(true, Ordering::SeqCst) {
        let spawned = std::thread::Builder::new().name("lock".into()).spawn(|| {
            loop {
                std::thread::sleep(LOCK_RENEW_EVERY);
                renewer().round();
            }
        });
        if let Err(e) = spawned {
            shared.started.store(false, Ordering::SeqCst);
            log::warn!("cannot start the lock renewer: {e}");
        }
    }
    Renewal(id)
}

impl Renewer {
    /// Renews every lock once, on one connection per Redis. A Redis that cannot be
    /// reached (or fails a renewal) is tried once a round, not once per lock — the
    /// locks are held meanwhile, and registering or releasing one waits for the round.
    fn round(&self) {
        let script = redis::Script::new(RENEW_SCRIPT);
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Per Redis: its connection, or None once it failed this round.
        let mut connections: BTreeMap<&str, Option<RedisConnection>> = BTreeMap::new();
        let mut gone = Vec::new();
        for (id, held) in locks.iter() {
            let connection =
                connections
                    .entry(&held.location)
                    .or_insert_with(|| match connect(&held.client) {
                        Ok(connection) => Some(connection),
                        Err(e) => {
                            log::warn!(
                                "cannot renew the locks on {}: {e} (they hold for {} s more; \
                             tried again in {} s)",
                                held.location,
                                LOCK_TTL.as_secs(),
                                LOCK_RENEW_EVERY.as_secs()
                            );
                            None
                        }
                    });
            let Some(open) = connection else {
                continue;
            };
            let renewed = script
                .key(&held.key)
                .arg(&held.token)
                .arg(LOCK_TTL.as_millis() as u64)
                .invoke::<i64>(&mut **open);
            match renewed {
                Ok(1) => {}
                Ok(_) => {
                    log::error!(
                        "lock {} was lost: this run's watermark will not be saved",
                        held.key
                    );
                    held.lost.store(true, Ordering::SeqCst);
                    gone.push(*id);
                }
                Err(e) => {
                    log::warn!(
                        "cannot renew lock {}: {e} (the other locks on {} wait for the next \
                         round)",
                        held.key,
                        held.location
                    );
                    *connection = None;
                }
            }
        }
        drop(connections);
        for id in gone {
            locks.remove(&id);
        }
    }
}
