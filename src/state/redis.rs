//! The redis backend's state, beside the queue in Redis: the hash
//! `{<queue_key>}:msgx:state` (named by [`keys::derived`]: a Redis Cluster hash tag
//! puts it in the queue's slot; fields `watermark`, `origin`, `rescanned`: Unix
//! seconds; `owed_first`, `owed_second`: `start-end,…`; `deeper`:
//! `depth@frontier@ranges;…`) and the lock
//! `{<queue_key>}:msgx:lock`, taken with `SET NX PX`, renewed while the run lasts and
//! released by compare-and-delete. State that earlier versions kept under other names
//! is merged in once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use time::OffsetDateTime;

use super::renewer::{self, LOCK_TTL};
use super::takeover::{QueueScan, Recovery, SCAN_BATCH, SeenFloor, Takeover, TakeoverSettings};
use super::{
    Progress, StateStore, Traces, before_second_pass, decode_deeper, decode_ranges, encode_deeper,
    encode_ranges,
};
use crate::dedup::FLOOR_MARK;
use crate::error::Error;
use crate::ids;
use crate::keys;
use crate::lane::{Lane, OtherLayout};
use crate::redis_client::{
    RedisClient, RedisSettings, connect, connect_attempt, open_client, retrying,
};
use crate::retry::RetryOptions;
use crate::window::{self, Frame};

const RELEASE_SCRIPT: &str = include_str!("lua/release.lua");
const SAVE_SCRIPT: &str = include_str!("lua/save.lua");

/// The fields of the state hash, in the order [`RedisState::read`] asks for them.
const FIELDS: [&str; 6] = [
    "watermark",
    "origin",
    "rescanned",
    "owed_first",
    "owed_second",
    "deeper",
];

/// Ids copied per command when an earlier seen-set is merged.
const MOVE_CHUNK: isize = 1000;

pub struct RedisState {
    client: RedisClient,
    location: String,
    queue_key: String,
    lock_key: String,
    state_key: String,
    rescan: u64,
    /// The lane's tenant, kept in the state's `tenant` field.
    owner: Option<String>,
    other_layout: Option<OtherLayout>,
    token: String,
    retry: RetryOptions,
    /// The lock kept alive while the run lasts.
    renewal: Option<renewer::Renewal>,
    lost: Arc<AtomicBool>,
    takeover: TakeoverSettings,
}

impl RedisState {
    pub fn new(
        settings: &super::StateSettings,
        redis: &RedisSettings,
        source: &Lane,
        retry: RetryOptions,
    ) -> Result<Self, Error> {
        Ok(RedisState {
            client: open_client(redis)?,
            location: redis.target.location().to_string(),
            queue_key: source.queue_key.clone(),
            rescan: settings.rescan,
            owner: source.owner.clone(),
            other_layout: source.other_layout.clone(),
            lock_key: source.key("lock"),
            state_key: source.key("state"),
            token: ids::guid(),
            retry,
            renewal: None,
            lost: Arc::default(),
            takeover: TakeoverSettings {
                spec: source.spec,
                versioned: source.versioned,
                window: settings.window,
                timelag: settings.timelag,
            },
        })
    }

    /// Runs `command` on a fresh connection, retried like a sink write.
    fn with_connection<T>(
        &self,
        key: &str,
        mut command: impl FnMut(&mut dyn redis::ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        retrying(&self.location, &self.retry, || {
            let mut connection = connect_attempt(&self.client)?;
            Ok(command(&mut *connection)?)
        })
        .map_err(|message| Error::State(format!("{} key {key}: {message}", self.location)))
    }

    /// The progress stored in the hash `key`, if it holds a watermark.
    fn read(&self, key: &str) -> Result<Option<Progress>, Error> {
        let stored: Vec<Option<String>> = self.with_connection(key, |c| {
            redis::cmd("HMGET").arg(key).arg(&FIELDS[..]).query(c)
        })?;
        let field = |i: usize| stored.get(i).cloned().flatten();
        let corrupt = |name: &str, value: &str| {
            Error::DamagedState(format!(
                "{key} field {name}: {value:?} is not what msgx-once stored"
            ))
        };
        let at = |i: usize| -> Result<Option<OffsetDateTime>, Error> {
            field(i)
                .map(|v| {
                    v.parse::<i64>()
                        .ok()
                        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                        .ok_or_else(|| corrupt(FIELDS[i], &v))
                })
                .transpose()
        };
        let ranges = |i: usize| -> Result<Vec<Frame>, Error> {
            let text = field(i).unwrap_or_default();
            decode_ranges(&text).ok_or_else(|| corrupt(FIELDS[i], &text))
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
            deeper: {
                let text = field(5).unwrap_or_default();
                decode_deeper(&text).ok_or_else(|| corrupt(FIELDS[5], &text))?
            },
        }))
    }

    /// Replaces the state hash with `progress` (under the lock, before any export).
    fn write(&self, progress: &Progress) -> Result<(), Error> {
        let key = &self.state_key;
        let values = [
            progress.watermark.unix_timestamp().to_string(),
            progress.origin.unix_timestamp().to_string(),
            progress.rescanned.unix_timestamp().to_string(),
            encode_ranges(&progress.owed_first),
            encode_ranges(&progress.owed_second),
            encode_deeper(&progress.deeper),
        ];
        let mut pairs: Vec<(&str, &String)> = FIELDS.iter().copied().zip(&values).collect();
        if let Some(owner) = &self.owner {
            pairs.push(("tenant", owner));
        }
        self.with_connection(key, |c| redis::cmd("HSET").arg(key).arg(&pairs).exec(c))
    }

    /// Adds every id of the seen-set `from` to the current one, a chunk at a time
    /// (member by member: a Cluster refuses commands across slots); how many.
    fn copy_ids(&self, from: &str) -> Result<usize, Error> {
        let to = keys::derived(&self.queue_key, "seen");
        let mut copied = 0;
        loop {
            let start = copied as isize;
            let ids: Vec<(String, i64)> = self.with_connection(from, |c| {
                redis::cmd("ZRANGE")
                    .arg(from)
                    .arg(start)
                    .arg(start + MOVE_CHUNK - 1)
                    .arg("WITHSCORES")
                    .query(c)
            })?;
            if ids.is_empty() {
                return Ok(copied);
            }
            // The floor mark stays the current set's: the next write sets it anew.
            let marks: Vec<(i64, &String)> = ids
                .iter()
                .filter(|(id, _)| id != FLOOR_MARK)
                .map(|(id, s)| (*s, id))
                .collect();
            if !marks.is_empty() {
                self.with_connection(&to, |c| redis::cmd("ZADD").arg(&to).arg(&marks).exec(c))?;
            }
            copied += ids.len();
        }
    }

    /// Merges what earlier versions kept under other names ([`keys::earlier`]) into
    /// the current keys ([`RedisState::merge_from`]).
    fn merge_earlier_names(&self) -> Result<(), Error> {
        let earlier = keys::earlier(&self.queue_key, "state")
            .into_iter()
            .zip(keys::earlier(&self.queue_key, "seen"));
        for (old_state, old_seen) in earlier {
            self.merge_from(&old_state, &old_seen, |old, current, merged, ids| {
                let new_seen = keys::derived(&self.queue_key, "seen");
                match current {
                    None => log::info!(
                        "state moved from {old_state} and {old_seen} to {} and {new_seen} \
                         (hash-tagged names, one Redis Cluster slot)",
                        self.state_key
                    ),
                    Some(current) => log::warn!(
                        "state under both {old_state} (watermark {}) and {} (watermark {}) — \
                         a rollback and roll forward?: merged into {}, with the further \
                         progress and the {ids} ids of {old_seen} among the delivered ones; \
                         {} ranges neither read are read now",
                        window::utc_second(old.watermark),
                        self.state_key,
                        window::utc_second(current.watermark),
                        self.state_key,
                        merged.owed_first.len()
                    ),
                }
            })?;
        }
        Ok(())
    }

    /// Carries over the progress this tenant × source left under the other key
    /// layout ([`OtherLayout`]: the run before exported one `tenant`, this one
    /// `tenants`, or the other way round), once, unless another run under that layout
    /// holds its lock now. Progress under the one-tenant layout's key is this lane's
    /// only if it names this lane's tenant, or names none and this lane claims it;
    /// progress that names none and that no lane can claim stops the lane: starting
    /// it over would skip what came in since that progress.
    fn carry_over_other_layout(&self) -> Result<(), Error> {
        let Some(other) = &self.other_layout else {
            return Ok(());
        };
        let old_state = keys::derived(&other.queue_key, "state");
        let old_seen = keys::derived(&other.queue_key, "seen");
        let old_lock = keys::derived(&other.queue_key, "lock");
        let (written_for, locked): (Option<Option<String>>, bool) =
            self.with_connection(&old_state, |c| {
                let exists: bool = redis::cmd("EXISTS").arg(&old_state).query(c)?;
                let tenant: Option<String> =
                    redis::cmd("HGET").arg(&old_state).arg("tenant").query(c)?;
                let locked: bool = redis::cmd("EXISTS").arg(&old_lock).query(c)?;
                Ok((exists.then_some(tenant), locked))
            })?;
        let Some(written_for) = written_for else {
            return Ok(());
        };
        let owner = self.owner.as_deref().unwrap_or_default();
        let ours = match (other.shared, written_for.as_deref()) {
            (None, _) => true,
            (Some(_), Some(tenant)) => tenant == owner,
            (Some(shared), None) if shared.claims_unnamed => true,
            (Some(_), None) => {
                return Err(Error::State(format!(
                    "{old_state} holds the progress of a one-tenant run that did not record \
                     its tenant, and this run exports several: set tenant to that tenant \
                     beside tenants for one run, so that its progress carries over to its own \
                     keys instead of the tenant starting over"
                )));
            }
        };
        if !ours {
            return Ok(());
        }
        if locked {
            return Err(Error::Locked(format!(
                "another msgx-once run holds {old_lock}, the lock of this tenant's progress \
                 under the earlier key layout ({}): its progress is carried over once that \
                 run ends",
                other.queue_key
            )));
        }
        self.merge_from(&old_state, &old_seen, |old, _, _, ids| {
            log::warn!(
                "progress carried over from {old_state} (watermark {}) and the {ids} ids of \
                 {old_seen} to {}: the key layout changed (tenant ↔ tenants); this tenant's \
                 records now go to {}, no longer to {}",
                window::utc_second(old.watermark),
                self.state_key,
                self.queue_key,
                other.queue_key
            )
        })
    }

    /// Merges the state and seen-set under `old_state` and `old_seen` into the
    /// current keys: every id of the seen-set into the current one, the progress
    /// merged with the current ([`Progress::merged_with`]: the further frontiers,
    /// owing what neither read) — so neither a rollback and roll forward nor a move
    /// cut short delivers a record twice or skips a second; `said` tells what happened
    /// (old progress, current, merged, ids copied). The old keys go only once the new
    /// ones are complete, the seen-set before the state: a move cut by any failure
    /// leaves the old state, and the next run finishes it.
    fn merge_from(
        &self,
        old_state: &str,
        old_seen: &str,
        said: impl FnOnce(&Progress, Option<&Progress>, &Progress, usize),
    ) -> Result<(), Error> {
        let (has_state, has_seen): (bool, bool) = self.with_connection(old_state, |c| {
            let state: bool = redis::cmd("EXISTS").arg(old_state).query(c)?;
            let seen: bool = redis::cmd("EXISTS").arg(old_seen).query(c)?;
            Ok((state, seen))
        })?;
        if !has_state && !has_seen {
            return Ok(());
        }
        let ids = self.copy_ids(old_seen)?;
        let old = match has_state {
            true => self.read(old_state)?,
            false => None,
        };
        let current = self.read(&self.state_key)?;
        if let Some(old) = &old {
            let merged = current.as_ref().map_or(old.clone(), |c| c.merged_with(old));
            self.write(&merged)?;
            said(old, current.as_ref(), &merged, ids);
        }
        self.with_connection(old_seen, |c| redis::cmd("DEL").arg(old_seen).exec(c))?;
        self.with_connection(old_state, |c| redis::cmd("DEL").arg(old_state).exec(c))?;
        Ok(())
    }

    /// The seen-set's floor mark, else its oldest id's second (a set written before
    /// the mark existed), and how many ids it holds. None: no seen-set.
    fn seen_floor(&self) -> Result<Option<SeenFloor>, Error> {
        let seen = keys::derived(&self.queue_key, "seen");
        let (mark, oldest, ids): (Option<f64>, Vec<(String, f64)>, u64) =
            self.with_connection(&seen, |c| {
                let mark = redis::cmd("ZSCORE").arg(&seen).arg(FLOOR_MARK).query(c)?;
                let oldest = redis::cmd("ZRANGE")
                    .arg(&seen)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .query(c)?;
                let ids = redis::cmd("ZCARD").arg(&seen).query(c)?;
                Ok((mark, oldest, ids))
            })?;
        let second = |score: f64| Takeover::at(score as i64);
        Ok(match (mark, oldest.first()) {
            (Some(mark), _) => Some(SeenFloor {
                key: seen,
                start: second(mark),
                marked: true,
                ids: ids.saturating_sub(1),
            }),
            (None, Some((_, oldest))) => Some(SeenFloor {
                key: seen,
                start: second(*oldest),
                marked: false,
                ids,
            }),
            (None, None) => None,
        })
    }

    /// Reads the queue's tail (a list or a stream), newest pushes first, as far as a
    /// takeover needs ([`QueueScan::add`]).
    fn scan_queue(&self, now: i64) -> Result<QueueScan, Error> {
        let queue = &self.queue_key;
        let kind: String =
            self.with_connection(queue, |c| redis::cmd("TYPE").arg(queue).query(c))?;
        let mut scan = QueueScan::default();
        let batch = SCAN_BATCH as isize;
        // Consumers take from a list's head; a stream loses entries only when trimmed or
        // deleted (`entries-added` above its length; unknown before Redis 7: assumed).
        let taken = match kind.as_str() {
            "stream" => {
                let info: std::collections::HashMap<String, redis::Value> = self
                    .with_connection(queue, |c| {
                        redis::cmd("XINFO").arg("STREAM").arg(queue).query(c)
                    })?;
                let number = |field: &str| {
                    info.get(field)
                        .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
                };
                match (number("entries-added"), number("length")) {
                    (Some(added), Some(length)) => added > length,
                    _ => true,
                }
            }
            _ => true,
        };
        // A stream is read back from `before`: the entry id just under the last read.
        let mut before = "+".to_string();
        loop {
            let records: Vec<String> = match kind.as_str() {
                "list" => {
                    let end = -(scan.read as isize) - 1;
                    self.with_connection(queue, |c| {
                        redis::cmd("LRANGE")
                            .arg(queue)
                            .arg(end - batch + 1)
                            .arg(end)
                            .query::<Vec<String>>(c)
                    })?
                    .into_iter()
                    .rev()
                    .collect()
                }
                "stream" => {
                    type Entries = Vec<(String, Vec<(String, String)>)>;
                    let entries: Entries = self.with_connection(queue, |c| {
                        redis::cmd("XREVRANGE")
                            .arg(queue)
                            .arg(&before)
                            .arg("-")
                            .arg("COUNT")
                            .arg(SCAN_BATCH)
                            .query(c)
                    })?;
                    match entries.last().map(|(id, _)| previous_entry(id)) {
                        Some(Some(id)) => before = id,
                        Some(None) => before.clear(),
                        None => {}
                    }
                    entries
                        .into_iter()
                        .filter_map(|(_, fields)| {
                            fields
                                .into_iter()
                                .find(|(f, _)| f == "record")
                                .map(|(_, r)| r)
                        })
                        .collect()
                }
                _ => return Ok(scan),
            };
            let batch_read: Vec<&str> = records.iter().map(String::as_str).collect();
            let last = records.len() < SCAN_BATCH || before.is_empty();
            if !scan.add(&batch_read, &self.takeover, now, (last, taken)) {
                return Ok(scan);
            }
        }
    }

    /// Marks `takeover`'s queued records delivered in the seen-set, its start as the
    /// floor last (in the same command as the last ids): a takeover cut short leaves
    /// no mark, so a later run cannot resume at a floor whose ids are not all there.
    fn seed(&self, takeover: &Takeover, scan: &QueueScan) -> Result<usize, Error> {
        let seen = keys::derived(&self.queue_key, "seen");
        let mut marks: Vec<(i64, &str)> = Vec::new();
        for key in takeover.delivered(scan) {
            marks.push((key.second, &key.id));
            if let Some(record_id) = key.record_id() {
                marks.push((key.second, record_id));
            }
        }
        let seeded = takeover.delivered(scan).count();
        let mut chunks: Vec<Vec<(i64, &str)>> = marks
            .chunks(MOVE_CHUNK as usize)
            .map(<[_]>::to_vec)
            .collect();
        match chunks.last_mut() {
            Some(last) => last.push((takeover.start, FLOOR_MARK)),
            None => chunks.push(vec![(takeover.start, FLOOR_MARK)]),
        }
        for chunk in &chunks {
            self.with_connection(&seen, |c| redis::cmd("ZADD").arg(&seen).arg(chunk).exec(c))?;
        }
        Ok(seeded)
    }

    fn start_renewing(&mut self) {
        self.renewal = Some(renewer::renew(
            self.client.clone(),
            self.location.clone(),
            self.lock_key.clone(),
            self.token.clone(),
            self.lost.clone(),
        ));
    }
}

/// The stream entry id just before `id` (`ms-seq`), None at the very first.
fn previous_entry(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    match (ms, seq) {
        (_, 1..) => Some(format!("{ms}-{}", seq - 1)),
        (1.., 0) => Some(format!("{}-{}", ms - 1, u64::MAX)),
        (0, 0) => None,
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
                self.location,
                (left.max(0) + 999) / 1000
            )));
        }
        self.start_renewing();
        Ok(())
    }

    fn load(&self) -> Result<Option<Progress>, Error> {
        self.merge_earlier_names()?;
        self.carry_over_other_layout()?;
        self.read(&self.state_key)
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
                .arg(encode_deeper(&progress.deeper))
                .arg(self.owner.as_deref().unwrap_or_default())
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
        format!("{} key {}", self.location, self.state_key)
    }

    fn repair(&self, field: &str) -> String {
        match field {
            "watermark" | "rescanned" => format!(
                "HSET {} {field} <Unix second of the last export's end>",
                self.state_key
            ),
            _ => format!("HSET {} owed_first \"\" owed_second \"\"", self.state_key),
        }
    }

    fn traces(&self) -> Result<Traces, Error> {
        let (queue, seen) = (&self.queue_key, keys::derived(&self.queue_key, "seen"));
        // Two commands, not a pipeline: a Cluster connection takes no pipelines.
        let (kind, seen_exists): (String, bool) = self.with_connection(queue, |c| {
            let kind: String = redis::cmd("TYPE").arg(queue).query(c)?;
            let exists: bool = redis::cmd("EXISTS").arg(&seen).query(c)?;
            Ok((kind, exists))
        })?;
        let length = match kind.as_str() {
            "list" => Some("LLEN"),
            "stream" => Some("XLEN"),
            _ => None,
        };
        let queued: i64 = match length {
            Some(command) => {
                self.with_connection(queue, |c| redis::cmd(command).arg(queue).query(c))?
            }
            None => 0,
        };
        Ok(Traces {
            ours: seen_exists.then(|| format!("the seen-set {seen} of delivered ids exists")),
            queued: (queued > 0).then(|| format!("the queue {queue} holds {queued} records")),
        })
    }

    fn recover(&self, now: OffsetDateTime) -> Result<Option<Recovery>, Error> {
        // A seen-set of another type is refused by the first write, naming it.
        let seen = keys::derived(&self.queue_key, "seen");
        let kind: String =
            self.with_connection(&seen, |c| redis::cmd("TYPE").arg(&seen).query(c))?;
        if kind != "zset" && kind != "none" {
            return Ok(None);
        }
        if let Some(floor) = self.seen_floor()? {
            return Ok(Some(Recovery::Seen(floor)));
        }
        let now = now.unix_timestamp();
        let scan = self.scan_queue(now)?;
        let lagged_end = now - self.takeover.timelag;
        let Some(takeover) = Takeover::plan(&scan, self.takeover.window, lagged_end) else {
            return Ok(None);
        };
        let seeded = self.seed(&takeover, &scan)?;
        Ok(Some(Recovery::Queue {
            queue: self.queue_key.clone(),
            takeover,
            seeded,
            read: scan.read,
        }))
    }

    fn unlock(&mut self) {
        // No renewal after this: the lock is about to go.
        if self.renewal.take().is_none() {
            return;
        }
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
