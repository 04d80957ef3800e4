//! Deduplication by record id for the log and file backends (`state auto` with a
//! `state_file`): ids already delivered are kept with their createdDateTime in the
//! state file, and a page's records go to the sink only if their id is new. Unlike
//! the Redis script this is not atomic with the write: a run that crashes after
//! writing delivers those records again on the next run (at least once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Sink;
use crate::error::SinkError;

/// What deduplication needs of a record.
pub struct RecordKey {
    pub id: String,
    /// createdDateTime, Unix seconds.
    pub created: i64,
}

#[derive(serde::Deserialize)]
struct RecordFields<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(rename = "createdDateTime", borrow)]
    created: std::borrow::Cow<'a, str>,
}

/// Each record's id and createdDateTime, read without copying the record.
pub fn record_keys(records: &[&str]) -> Result<Vec<RecordKey>, String> {
    records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let fields: RecordFields = serde_json::from_str(record).map_err(|e| {
                format!("record {i} of the page has no usable id/createdDateTime: {e}")
            })?;
            let created = crate::window::parse_created(&fields.created).ok_or_else(|| {
                format!(
                    "record {i} of the page: createdDateTime {:?} is not a timestamp",
                    fields.created
                )
            })?;
            Ok(RecordKey {
                id: fields.id.into_owned(),
                created,
            })
        })
        .collect()
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

    fn forget(&self, keys: &[&RecordKey]) {
        let mut seen = self.lock();
        for key in keys {
            seen.remove(&key.id);
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
    pub inner: Box<dyn Sink>,
    pub seen: Arc<SeenSet>,
}

impl Sink for DedupSink {
    fn check(&self) -> Result<(), SinkError> {
        self.inner.check()
    }

    fn write(&self, records: &[&str]) -> Result<usize, SinkError> {
        let keys = record_keys(records).map_err(|message| SinkError {
            target: "deduplication".into(),
            message,
        })?;
        let fresh = self.seen.admit(&keys);
        let (new_records, new_keys): (Vec<&str>, Vec<&RecordKey>) = records
            .iter()
            .zip(&keys)
            .zip(&fresh)
            .filter(|(_, is_new)| **is_new)
            .map(|((record, key), _)| (*record, key))
            .unzip();
        if new_records.is_empty() {
            return Ok(0);
        }
        let written = self.inner.write(&new_records);
        if written.is_err() {
            // Not delivered, so not seen: a later run may deliver them.
            self.seen.forget(&new_keys);
        }
        written
    }

    fn finish(&self) -> Result<(), SinkError> {
        self.inner.finish()
    }
}
