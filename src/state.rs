//! What connects consecutive runs (`state auto`): the watermark — where the next run
//! starts —, the origin — where the first run started, so that a rescan never reaches
//! before it —, and the lock that keeps two runs from overlapping.
//!
//! The redis backend keeps them in Redis beside the queue: the hash
//! `{queue_key}:msgx:state` (fields `watermark`, `origin`: Unix seconds) and the lock
//! `{queue_key}:msgx:lock`, taken with `SET NX PX`, renewed while the run lasts and
//! released by compare-and-delete. The log and file backends keep a JSON `state_file`
//! and lock `{state_file}.lock` with an OS file lock.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};
use time::OffsetDateTime;

use crate::config::Config;
use crate::error::Error;
use crate::graph::retry::RetryOptions;
use crate::ids;
use crate::sink::dedup::SeenSet;
use crate::sink::redis::{connect, connect_attempt, open_client, retrying};

/// Where the next run starts, and where the first one started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub watermark: OffsetDateTime,
    pub origin: OffsetDateTime,
}

pub trait StateStore {
    /// Takes the lock for this run: [`Error::Locked`] when another run holds it.
    fn lock(&mut self) -> Result<(), Error>;
    fn load(&self) -> Result<Option<Progress>, Error>;
    /// Stores `progress` if the lock is still ours; never moves the watermark back.
    fn save(&self, progress: Progress) -> Result<(), Error>;
    /// Releases the lock; also done on drop.
    fn unlock(&mut self);

    /// Where the watermark is kept, for messages.
    fn location(&self) -> String;

    /// Signs that runs wrote here before (when no watermark was found, they mean the
    /// state was lost): a description, or None.
    fn traces(&self) -> Result<Option<String>, Error>;

    /// Delivered ids, when the store keeps them itself (the state file); the Redis
    /// backend keeps them in Redis, written atomically with each page.
    fn seen(&self) -> Option<Arc<SeenSet>> {
        None
    }
}

/// Redis key names derived from the queue key.
pub fn redis_key(queue_key: &str, purpose: &str) -> String {
    format!("{queue_key}:msgx:{purpose}")
}

/// How long the lock outlives a run that died without releasing it.
const LOCK_TTL: Duration = Duration::from_secs(30);
const LOCK_RENEW_EVERY: Duration = Duration::from_secs(10);

const RENEW_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// KEYS: lock, state. ARGV: token, watermark, origin. 0 when the lock is not ours.
const SAVE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local current = tonumber(redis.call('HGET', KEYS[2], 'watermark') or '0')
if tonumber(ARGV[2]) > current then
  redis.call('HSET', KEYS[2], 'watermark', ARGV[2])
end
redis.call('HSETNX', KEYS[2], 'origin', ARGV[3])
return 1
"#;

pub struct RedisState {
    client: redis::Client,
    endpoint: String,
    queue_key: String,
    lock_key: String,
    state_key: String,
    token: String,
    retry: RetryOptions,
    renewer: Option<(Sender<()>, std::thread::JoinHandle<()>)>,
    lost: Arc<AtomicBool>,
}

impl RedisState {
    pub fn new(config: &Config, retry: RetryOptions) -> Result<Self, Error> {
        Ok(RedisState {
            client: open_client(config)?,
            endpoint: config.redis.endpoint().to_string(),
            queue_key: config.queue_key.clone(),
            lock_key: redis_key(&config.queue_key, "lock"),
            state_key: redis_key(&config.queue_key, "state"),
            token: ids::guid(),
            retry,
            renewer: None,
            lost: Arc::default(),
        })
    }

    /// Runs `command` on a fresh connection, retried like a sink write.
    fn with_connection<T>(
        &self,
        key: &str,
        mut command: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        retrying(&self.endpoint, &self.retry, || {
            let mut connection = connect_attempt(&self.client)?;
            Ok(command(&mut connection)?)
        })
        .map_err(|message| Error::State(format!("{} key {key}: {message}", self.endpoint)))
    }

    fn start_renewing(&mut self) {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (client, key, token, lost) = (
            self.client.clone(),
            self.lock_key.clone(),
            self.token.clone(),
            self.lost.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("lock".into())
            .spawn(move || {
                let script = redis::Script::new(RENEW_SCRIPT);
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(LOCK_RENEW_EVERY) {
                    let renewed = connect(&client).and_then(|mut c| {
                        script
                            .key(&key)
                            .arg(&token)
                            .arg(LOCK_TTL.as_millis() as u64)
                            .invoke::<i64>(&mut c)
                    });
                    match renewed {
                        Ok(1) => {}
                        Ok(_) => {
                            log::error!(
                                "lock {key} was lost: this run's watermark will not be saved"
                            );
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => log::warn!("cannot renew lock {key}: {e}"),
                    }
                }
            });
        match spawned {
            Ok(handle) => self.renewer = Some((stop, handle)),
            Err(e) => log::warn!("cannot start the lock renewer: {e}"),
        }
    }
}

impl StateStore for RedisState {
    fn lock(&mut self) -> Result<(), Error> {
        let ttl_ms = LOCK_TTL.as_millis() as u64;
        let (key, token) = (&self.lock_key, &self.token);
        let taken: Option<String> = self.with_connection(key, |c| {
            redis::cmd("SET")
                .arg(key)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query(c)
        })?;
        // A retried SET whose first reply was lost finds its own token there.
        let ours = taken.is_some()
            || self
                .with_connection(key, |c| {
                    redis::cmd("GET").arg(key).query::<Option<String>>(c)
                })?
                .is_some_and(|holder| holder == *token);
        if !ours {
            let left: i64 = self
                .with_connection(key, |c| redis::cmd("PTTL").arg(key).query(c))
                .unwrap_or(-1);
            return Err(Error::Locked(format!(
                "another msgx-once run holds the lock {key} on {} (it expires in {} s unless renewed)",
                self.endpoint,
                (left.max(0) + 999) / 1000
            )));
        }
        self.start_renewing();
        Ok(())
    }

    fn load(&self) -> Result<Option<Progress>, Error> {
        let key = &self.state_key;
        let (watermark, origin): (Option<i64>, Option<i64>) = self.with_connection(key, |c| {
            redis::cmd("HMGET")
                .arg(key)
                .arg("watermark")
                .arg("origin")
                .query(c)
        })?;
        let at = |field: &str, seconds: i64| {
            OffsetDateTime::from_unix_timestamp(seconds)
                .map_err(|_| Error::State(format!("{key} field {field}: {seconds} is not a time")))
        };
        match (watermark, origin) {
            (Some(watermark), Some(origin)) => Ok(Some(Progress {
                watermark: at("watermark", watermark)?,
                origin: at("origin", origin)?,
            })),
            _ => Ok(None),
        }
    }

    fn save(&self, progress: Progress) -> Result<(), Error> {
        let script = redis::Script::new(SAVE_SCRIPT);
        let saved: i64 = self.with_connection(&self.state_key, |c| {
            script
                .key(&self.lock_key)
                .key(&self.state_key)
                .arg(&self.token)
                .arg(progress.watermark.unix_timestamp())
                .arg(progress.origin.unix_timestamp())
                .invoke(c)
        })?;
        if saved == 1 && !self.lost.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::State(format!(
                "the lock {} was lost during the run; watermark not saved",
                self.lock_key
            )))
        }
    }

    fn location(&self) -> String {
        format!("{} key {}", self.endpoint, self.state_key)
    }

    fn traces(&self) -> Result<Option<String>, Error> {
        let (queue, seen) = (&self.queue_key, redis_key(&self.queue_key, "seen"));
        let (kind, seen_exists): (String, bool) = self.with_connection(queue, |c| {
            redis::pipe()
                .cmd("TYPE")
                .arg(queue)
                .cmd("EXISTS")
                .arg(&seen)
                .query(c)
        })?;
        let queued: i64 = match kind.as_str() {
            "list" => self.with_connection(queue, |c| redis::cmd("LLEN").arg(queue).query(c))?,
            _ => 0,
        };
        Ok(if queued > 0 {
            Some(format!("the queue {queue} holds {queued} records"))
        } else {
            seen_exists.then(|| format!("the seen-set {seen} of delivered ids exists"))
        })
    }

    fn unlock(&mut self) {
        let Some((stop, handle)) = self.renewer.take() else {
            return;
        };
        drop(stop);
        let _ = handle.join();
        let script = redis::Script::new(RELEASE_SCRIPT);
        let released = connect(&self.client).and_then(|mut c| {
            match script
                .key(&self.lock_key)
                .arg(&self.token)
                .invoke::<i64>(&mut c)
            {
                // A user without script rights still frees the lock for the next run.
                Err(e) if e.code() == Some("NOPERM") => {
                    release_without_script(&mut c, &self.lock_key, &self.token)
                }
                other => other.map(drop),
            }
        });
        if let Err(e) = released {
            log::warn!(
                "cannot release lock {} (it expires by itself in {} s): {e}",
                self.lock_key,
                LOCK_TTL.as_secs()
            );
        }
    }
}

/// Compare-and-delete with WATCH/MULTI instead of a script: the DEL happens only if
/// nobody changed the lock since it was read as ours.
fn release_without_script(
    connection: &mut redis::Connection,
    key: &str,
    token: &str,
) -> redis::RedisResult<()> {
    redis::cmd("WATCH").arg(key).exec(connection)?;
    let holder: Option<String> = redis::cmd("GET").arg(key).query(connection)?;
    if holder.as_deref() != Some(token) {
        return redis::cmd("UNWATCH").exec(connection);
    }
    redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg(key)
        .query::<Option<(i64,)>>(connection)
        .map(drop)
}

impl Drop for RedisState {
    fn drop(&mut self) {
        self.unlock();
    }
}

/// State of the log and file backends: `{"watermark": …, "origin": …, "seen": {id:
/// created, …}}` in Unix seconds, replaced atomically (write, then rename). `seen`
/// holds the delivered ids the next run's rescan can meet again.
pub struct FileState {
    path: PathBuf,
    rescan: i64,
    lock: Option<File>,
    /// The lock file was there before this run: an earlier run used this state file.
    lock_file_existed: bool,
    seen: Arc<SeenSet>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FileProgress {
    watermark: i64,
    origin: i64,
    #[serde(default)]
    seen: HashMap<String, i64>,
}

impl FileState {
    pub fn new(path: &Path, rescan: u64) -> Self {
        FileState {
            path: path.to_path_buf(),
            rescan: rescan as i64,
            lock: None,
            lock_file_existed: false,
            seen: Arc::default(),
        }
    }

    fn read(&self) -> Result<Option<FileProgress>, Error> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.failed("cannot read", e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| self.failed("not a msgx state file", e))
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::State(format!("state_file {}: {what}: {e}", self.path.display()))
    }
}

impl StateStore for FileState {
    fn lock(&mut self) -> Result<(), Error> {
        let lock_path = PathBuf::from(format!("{}.lock", self.path.display()));
        self.lock_file_existed = lock_path.exists();
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.failed("cannot open its lock file", e))?;
        match file.try_lock() {
            Ok(()) => {
                self.lock = Some(file);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(format!(
                "another msgx-once run holds the lock {}",
                lock_path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(self.failed("cannot lock", e)),
        }
    }

    fn load(&self) -> Result<Option<Progress>, Error> {
        let Some(stored) = self.read()? else {
            return Ok(None);
        };
        let at = |seconds| {
            OffsetDateTime::from_unix_timestamp(seconds)
                .map_err(|e| self.failed("not a msgx state file", e))
        };
        let progress = Progress {
            watermark: at(stored.watermark)?,
            origin: at(stored.origin)?,
        };
        self.seen.replace(stored.seen);
        Ok(Some(progress))
    }

    fn save(&self, progress: Progress) -> Result<(), Error> {
        let watermark = match self.read()? {
            Some(current) => progress.watermark.unix_timestamp().max(current.watermark),
            None => progress.watermark.unix_timestamp(),
        };
        let floor = (watermark - self.rescan).max(progress.origin.unix_timestamp());
        let stored = FileProgress {
            watermark,
            origin: progress.origin.unix_timestamp(),
            seen: self.seen.snapshot(floor),
        };
        let text = serde_json::to_string(&stored).map_err(|e| self.failed("cannot encode", e))?;
        let temporary = PathBuf::from(format!("{}.tmp", self.path.display()));
        std::fs::write(&temporary, text + "\n")
            .and_then(|()| std::fs::rename(&temporary, &self.path))
            .map_err(|e| self.failed("cannot write", e))
    }

    fn seen(&self) -> Option<Arc<SeenSet>> {
        Some(self.seen.clone())
    }

    fn location(&self) -> String {
        format!("state_file {}", self.path.display())
    }

    fn traces(&self) -> Result<Option<String>, Error> {
        Ok(self.lock_file_existed.then(|| {
            format!(
                "its lock file {}.lock was left by an earlier run",
                self.path.display()
            )
        }))
    }

    fn unlock(&mut self) {
        if let Some(file) = self.lock.take() {
            let _ = file.unlock();
        }
    }
}
