//! Deduplication by record id (`state auto`). The pipeline reads each record's key
//! ([`record_keys`]) once per page; the Redis sink deduplicates with them in its script,
//! and [`DedupSink`] does it in-process for the log and file backends, whose delivered
//! ids are kept in the state file. Unlike the Redis script the in-process filter is not
//! atomic with the write: a run that crashes after writing delivers those records again
//! on the next run (at least once). An id counts as seen only once its page was written
//! and the sink finished (flushed and synced) without error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Sink;
use crate::error::SinkError;

/// What deduplication needs of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    pub id: String,
    /// createdDateTime, Unix seconds.
    pub created: i64,
}

/// A record whose id or createdDateTime cannot be read: it is still delivered, keyed
/// by its exact bytes instead of its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    /// Its place in the page, from 0.
    pub offset: usize,
    pub reason: String,
}

#[derive(serde::Deserialize)]
struct RecordFields<'a> {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(rename = "createdDateTime", borrow, default)]
    created: Option<std::borrow::Cow<'a, str>>,
}

/// Each record's key, read without copying the record. A record without a usable id
/// or createdDateTime gets a key of its own — `raw:` and a 128-bit hash of its exact
/// bytes, created at `fallback_created` (its frame's last second: Graph returned it for
/// that frame) — so one bad record is delivered once and never stops the others.
pub fn record_keys(records: &[&str], fallback_created: i64) -> (Vec<RecordKey>, Vec<KeyProblem>) {
    let mut problems = Vec::new();
    let keys = records
        .iter()
        .enumerate()
        .map(|(offset, record)| match read_key(record) {
            Ok(key) => key,
            Err((reason, created)) => {
                problems.push(KeyProblem { offset, reason });
                RecordKey {
                    id: format!("raw:{:032x}", fnv1a_128(record.as_bytes())),
                    created: created.unwrap_or(fallback_created),
                }
            }
        })
        .collect();
    (keys, problems)
}

/// The key of one record, or why there is none (with the createdDateTime if that much
/// could be read).
fn read_key(record: &str) -> Result<RecordKey, (String, Option<i64>)> {
    let fields: RecordFields = serde_json::from_str(record).map_err(|e| {
        (
            format!("not a JSON object with id and createdDateTime: {e}"),
            None,
        )
    })?;
    let created = match &fields.created {
        None => Err("no createdDateTime".to_string()),
        Some(text) => crate::window::parse_created(text)
            .ok_or_else(|| format!("createdDateTime {text:?} is not a UTC timestamp")),
    };
    let id = match fields.id {
        Some(serde_json::Value::String(id)) if !id.is_empty() => Ok(id),
        None => Err("no id".to_string()),
        Some(other) => Err(format!("id {other} is not a non-empty string")),
    };
    match (id, created) {
        (Ok(id), Ok(created)) => Ok(RecordKey { id, created }),
        (Err(reason), created) => Err((reason, created.ok())),
        (Ok(_), Err(reason)) => Err((reason, None)),
    }
}

/// The createdDateTime of a record, in Unix seconds, if it has a readable one.
pub fn created_second(record: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Created<'a> {
        #[serde(rename = "createdDateTime", borrow)]
        created: std::borrow::Cow<'a, str>,
    }
    let fields: Created = serde_json::from_str(record).ok()?;
    crate::window::parse_created(&fields.created)
}

/// FNV-1a, 128 bits: stable across runs and Rust versions (the key is stored), and wide
/// enough that two different records never share one in practice.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u128::from(*byte)).wrapping_mul(PRIME)
    })
}

/// Ids delivered so far, with their createdDateTime.
#[derive(Default)]
pub struct SeenSet(Mutex<HashMap<String, i64>>);

impl SeenSet {
    /// Replaces the set with `ids` (loaded from the state file).
    pub fn replace(&self, ids: HashMap<String, i64>) {
        *self.lock() = ids;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the keys as seen; true for each that was new.
    fn admit(&self, keys: &[RecordKey]) -> Vec<bool> {
        let mut seen = self.lock();
        keys.iter()
            .map(|k| seen.insert(k.id.clone(), k.created).is_none())
            .collect()
    }

    fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let mut seen = self.lock();
        for id in ids {
            seen.remove(id);
        }
    }

    /// The ids created at or after `floor` (older ones cannot be read again).
    pub fn snapshot(&self, floor: i64) -> HashMap<String, i64> {
        let seen = self.lock();
        seen.iter()
            .filter(|(_, created)| **created >= floor)
            .map(|(id, created)| (id.clone(), *created))
            .collect()
    }
}

/// Passes on only records whose id is not in the seen-set.
pub struct DedupSink {
    inner: Box<dyn Sink>,
    seen: Arc<SeenSet>,
    /// Ids this run admitted: forgotten again if the sink cannot finish.
    admitted: Mutex<Vec<String>>,
}

impl DedupSink {
    pub fn new(inner: Box<dyn Sink>, seen: Arc<SeenSet>) -> Self {
        DedupSink {
            inner,
            seen,
            admitted: Mutex::default(),
        }
    }
}

impl Sink for DedupSink {
    fn check(&self) -> Result<(), SinkError> {
        self.inner.check()
    }

    fn write(&self, records: &[&str], keys: Option<&[RecordKey]>) -> Result<usize, SinkError> {
        let Some(keys) = keys else {
            return self.inner.write(records, None);
        };
        let fresh = self.seen.admit(keys);
        let (new_records, new_keys): (Vec<&str>, Vec<RecordKey>) = records
            .iter()
            .zip(keys)
            .zip(&fresh)
            .filter(|(_, is_new)| **is_new)
            .map(|((record, key), _)| (*record, key.clone()))
            .unzip();
        if new_records.is_empty() {
            return Ok(0);
        }
        match self.inner.write(&new_records, Some(&new_keys)) {
            Ok(written) => {
                let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
                admitted.extend(new_keys.into_iter().map(|k| k.id));
                Ok(written)
            }
            Err(e) => {
                // Not delivered, so not seen: a later run delivers them.
                self.seen.forget(new_keys.iter().map(|k| &k.id));
                Err(e)
            }
        }
    }

    fn finish(&self) -> Result<(), SinkError> {
        let finished = self.inner.finish();
        if finished.is_err() {
            // Written but perhaps not durable: deliver them again rather than lose them.
            let admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
            self.seen.forget(admitted.iter());
        }
        finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_records_are_keyed_by_id_and_created() {
        let (keys, problems) = record_keys(
            &[r#"{"id":"a-1","createdDateTime":"2026-01-01T00:00:01.5Z","x":1}"#],
            0,
        );
        assert_eq!(
            keys,
            [RecordKey {
                id: "a-1".into(),
                created: 1_767_225_601
            }]
        );
        assert!(problems.is_empty());
    }

    #[test]
    fn bad_records_are_keyed_by_their_bytes() {
        let created = r#""createdDateTime":"2026-01-01T00:00:01Z""#;
        let bad = [
            format!("{{{created}}}"),
            format!(r#"{{"id":null,{created}}}"#),
            format!(r#"{{"id":7,{created}}}"#),
            format!(r#"{{"id":"",{created}}}"#),
            r#"{"id":"x"}"#.to_string(),
            r#"{"id":"x","createdDateTime":"yesterday"}"#.to_string(),
            r#"{"id":"x","createdDateTime":5}"#.to_string(),
            "42".to_string(),
            r#"["id"]"#.to_string(),
        ];
        let records: Vec<&str> = bad.iter().map(String::as_str).collect();
        let (keys, problems) = record_keys(&records, 99);
        let offsets: Vec<usize> = problems.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, (0..bad.len()).collect::<Vec<_>>());
        assert!(
            keys.iter()
                .all(|k| k.id.starts_with("raw:") && k.id.len() == 36)
        );
        // A readable createdDateTime is kept; otherwise the frame's last second.
        assert_eq!(keys[0].created, 1_767_225_601);
        assert_eq!(keys[4].created, 99);
        let mut ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), bad.len(), "different records, different keys");
        assert_eq!(record_keys(&records, 0).0[3].id, keys[3].id, "stable");
        assert!(
            problems[2].reason.contains("id 7"),
            "{}",
            problems[2].reason
        );
    }
}
