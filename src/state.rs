//! What connects consecutive runs (`state auto`): the [`Progress`] of both reads of
//! every second — the watermark (first pass), `rescanned` (second pass), the ranges
//! still owed by failed frames —, the origin — where the first run started, so that
//! nothing before it is read —, and the lock that keeps two runs from overlapping.
//!
//! The redis backend keeps them in Redis beside the queue: the hash
//! `{<queue_key>}:msgx:state` (the braces literal: a Cluster hash tag; fields
//! `watermark`, `origin`, `rescanned`: Unix seconds; `owed_first`, `owed_second`:
//! `start-end,…`) and the lock `{<queue_key>}:msgx:lock`, taken with `SET NX PX`,
//! renewed while the run lasts and released by compare-and-delete. The log and file backends keep a JSON `state_file`
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
use crate::ids;
use crate::retry::RetryOptions;
use crate::sink::dedup::SeenSet;
use crate::sink::redis::{connect, connect_attempt, open_client, retrying};
use crate::window::Frame;

/// What the runs so far have read. Every second is read twice: once when it becomes
/// due (the first pass), once more when it is `rescan` seconds past due (the second
/// pass, for sign-ins Graph published late).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Every second before it had its first read, except `owed_first`.
    pub watermark: OffsetDateTime,
    /// Where the first run started: nothing before it is ever read.
    pub origin: OffsetDateTime,
    /// Every second before it had its second read (or needs none), except
    /// `owed_second`.
    pub rescanned: OffsetDateTime,
    /// Ranges below the watermark still owed their first read: the unfinished parts of
    /// failed frames.
    pub owed_first: Vec<Frame>,
    /// Ranges below `rescanned` still owed their second read.
    pub owed_second: Vec<Frame>,
}

impl Progress {
    /// A first run's progress before it reads anything: all starts at `start`.
    pub fn starting_at(start: OffsetDateTime) -> Self {
        Progress {
            watermark: start,
            origin: start,
            rescanned: start,
            owed_first: Vec::new(),
            owed_second: Vec::new(),
        }
    }

    /// The oldest second any later run may read again.
    pub fn floor(&self) -> OffsetDateTime {
        self.owed_first
            .iter()
            .chain(&self.owed_second)
            .map(|r| r.start)
            .chain([self.rescanned, self.watermark])
            .min()
            .unwrap_or(self.watermark)
    }
}

/// Where the second pass stands for state written before it existed: that version
/// re-read the `rescan` seconds before the watermark on every run, so those seconds
/// may still be owed a second read.
fn before_second_pass(
    watermark: OffsetDateTime,
    origin: OffsetDateTime,
    rescan: u64,
) -> OffsetDateTime {
    (watermark - time::Duration::seconds(rescan as i64)).max(origin)
}

/// Ranges as stored: `start-end,start-end` in Unix seconds, both ends included.
pub fn encode_ranges(ranges: &[Frame]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|r| format!("{}-{}", r.start.unix_timestamp(), r.end.unix_timestamp()))
        .collect();
    parts.join(",")
}

/// The inverse of [`encode_ranges`]; None if `text` is not of that form.
pub fn decode_ranges(text: &str) -> Option<Vec<Frame>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|part| {
            let (start, end) = part.split_once('-')?;
            let at = |s: &str| OffsetDateTime::from_unix_timestamp(s.parse().ok()?).ok();
            let (start, end) = (at(start)?, at(end)?);
            (start <= end).then_some(Frame { start, end })
        })
        .collect()
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

/// Redis key names derived from the queue key: `{queue_key}:msgx:{purpose}`, the queue
/// key in braces — a Redis Cluster hash tag, so they share the slot of the list or
/// stream `queue_key` itself (whose name consumers know and which does not change),
/// as every key one script touches must.
pub fn redis_key(queue_key: &str, purpose: &str) -> String {
    format!("{{{queue_key}}}:msgx:{purpose}")
}

/// The names before the hash tag, `queue_key:msgx:{purpose}`: read once, when the new
/// ones are absent, and moved.
fn legacy_key(queue_key: &str, purpose: &str) -> String {
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

/// KEYS: lock, state. ARGV: token, watermark, origin, rescanned, owed_first,
/// owed_second. 0 when the lock is not ours. The frontiers never move back.
const SAVE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
for i, field in ipairs({'watermark', 'rescanned'}) do
  local current = tonumber(redis.call('HGET', KEYS[2], field) or '0')
  if tonumber(ARGV[i * 2]) > current then
    redis.call('HSET', KEYS[2], field, ARGV[i * 2])
  end
end
redis.call('HSETNX', KEYS[2], 'origin', ARGV[3])
redis.call('HSET', KEYS[2], 'owed_first', ARGV[5], 'owed_second', ARGV[6])
return 1
"#;

pub struct RedisState {
    client: crate::sink::redis::Endpoint,
    endpoint: String,
    queue_key: String,
    lock_key: String,
    state_key: String,
    rescan: u64,
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
            rescan: config.rescan,
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
        mut command: impl FnMut(&mut dyn redis::ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        retrying(&self.endpoint, &self.retry, || {
            let mut connection = connect_attempt(&self.client)?;
            Ok(command(&mut *connection)?)
        })
        .map_err(|message| Error::State(format!("{} key {key}: {message}", self.endpoint)))
    }

    /// Moves the state and seen-set of the names before the hash tag to the current
    /// ones, once: when the current state is absent and the old one exists. Field by
    /// field and member by member (a Cluster would refuse a RENAME across slots).
    fn move_legacy_names(&self) -> Result<(), Error> {
        let (old_state, old_seen) = (
            legacy_key(&self.queue_key, "state"),
            legacy_key(&self.queue_key, "seen"),
        );
        let new_seen = redis_key(&self.queue_key, "seen");
        let key = &self.state_key;
        let (current, old): (bool, bool) = self.with_connection(key, |c| {
            let current: bool = redis::cmd("EXISTS").arg(key).query(c)?;
            let old: bool = redis::cmd("EXISTS").arg(&old_state).query(c)?;
            Ok((current, old))
        })?;
        if current || !old {
            return Ok(());
        }
        self.with_connection(key, |c| {
            let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg(&old_state).query(c)?;
            if !fields.is_empty() {
                redis::cmd("HSET").arg(key).arg(&fields).exec(c)?;
            }
            let ids: Vec<(String, i64)> = redis::cmd("ZRANGE")
                .arg(&old_seen)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(c)?;
            for chunk in ids.chunks(1000) {
                let marks: Vec<(i64, &String)> = chunk.iter().map(|(id, s)| (*s, id)).collect();
                redis::cmd("ZADD").arg(&new_seen).arg(&marks).exec(c)?;
            }
            redis::cmd("DEL").arg(&old_state).exec(c)?;
            redis::cmd("DEL").arg(&old_seen).exec(c)
        })?;
        log::info!(
            "state moved from {old_state} and {old_seen} to {key} and {new_seen} (hash-tagged \
             names, one Redis Cluster slot)"
        );
        Ok(())
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
                            .invoke::<i64>(&mut *c)
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
        self.move_legacy_names()?;
        let key = &self.state_key;
        let fields = [
            "watermark",
            "origin",
            "rescanned",
            "owed_first",
            "owed_second",
        ];
        let stored: Vec<Option<String>> = self.with_connection(key, |c| {
            redis::cmd("HMGET").arg(key).arg(&fields[..]).query(c)
        })?;
        let field = |i: usize| stored.get(i).cloned().flatten();
        let corrupt = |name: &str, value: &str| {
            Error::State(format!(
                "{key} field {name}: {value:?} is not what msgx-once stored"
            ))
        };
        let at = |i: usize| -> Result<Option<OffsetDateTime>, Error> {
            field(i)
                .map(|v| {
                    v.parse::<i64>()
                        .ok()
                        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                        .ok_or_else(|| corrupt(fields[i], &v))
                })
                .transpose()
        };
        let ranges = |i: usize| -> Result<Vec<Frame>, Error> {
            let text = field(i).unwrap_or_default();
            decode_ranges(&text).ok_or_else(|| corrupt(fields[i], &text))
        };
        let (Some(watermark), Some(origin)) = (at(0)?, at(1)?) else {
            return Ok(None);
        };
        Ok(Some(Progress {
            watermark,
            origin,
            // State from before the second pass existed: that version re-read the
            // `rescan` seconds before the watermark on every run.
            rescanned: at(2)?
                .unwrap_or_else(|| before_second_pass(watermark, origin, self.rescan))
                .min(watermark),
            owed_first: ranges(3)?,
            owed_second: ranges(4)?,
        }))
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
                .arg(progress.rescanned.unix_timestamp())
                .arg(encode_ranges(&progress.owed_first))
                .arg(encode_ranges(&progress.owed_second))
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
        // Two commands, not a pipeline: a Cluster connection takes no pipelines.
        let (kind, seen_exists): (String, bool) = self.with_connection(queue, |c| {
            let kind: String = redis::cmd("TYPE").arg(queue).query(c)?;
            let exists: bool = redis::cmd("EXISTS").arg(&seen).query(c)?;
            Ok((kind, exists))
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
                .invoke::<i64>(&mut *c)
            {
                // A user without script rights still frees the lock for the next run.
                Err(e) if e.code() == Some("NOPERM") => {
                    release_without_script(&mut *c, &self.lock_key, &self.token)
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
    connection: &mut dyn redis::ConnectionLike,
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
    rescan: u64,
    lock: Option<File>,
    /// The lock file was there before this run: an earlier run used this state file.
    lock_file_existed: bool,
    seen: Arc<SeenSet>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FileProgress {
    watermark: i64,
    origin: i64,
    /// Absent in state files written before the second pass existed.
    #[serde(default)]
    rescanned: Option<i64>,
    #[serde(default)]
    owed_first: String,
    #[serde(default)]
    owed_second: String,
    #[serde(default)]
    seen: HashMap<String, i64>,
}

impl FileState {
    pub fn new(path: &Path, rescan: u64) -> Self {
        FileState {
            path: path.to_path_buf(),
            rescan,
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
        let (watermark, origin) = (at(stored.watermark)?, at(stored.origin)?);
        let ranges = |text: &str| {
            decode_ranges(text).ok_or_else(|| self.failed("not a msgx state file", text))
        };
        let progress = Progress {
            watermark,
            origin,
            rescanned: match stored.rescanned {
                Some(seconds) => at(seconds)?,
                None => before_second_pass(watermark, origin, self.rescan),
            }
            .min(watermark),
            owed_first: ranges(&stored.owed_first)?,
            owed_second: ranges(&stored.owed_second)?,
        };
        self.seen.replace(stored.seen);
        Ok(Some(progress))
    }

    fn save(&self, progress: Progress) -> Result<(), Error> {
        let current = self.read()?;
        let never_back = |ours: OffsetDateTime, theirs: Option<i64>| {
            ours.unix_timestamp().max(theirs.unwrap_or(i64::MIN))
        };
        let stored = FileProgress {
            watermark: never_back(progress.watermark, current.as_ref().map(|c| c.watermark)),
            origin: progress.origin.unix_timestamp(),
            rescanned: Some(never_back(
                progress.rescanned,
                current.as_ref().and_then(|c| c.rescanned),
            )),
            owed_first: encode_ranges(&progress.owed_first),
            owed_second: encode_ranges(&progress.owed_second),
            seen: self.seen.snapshot(progress.floor().unix_timestamp()),
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
