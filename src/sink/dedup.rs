//! Deduplication in-process for the log and file backends ([`DedupSink`]), whose
//! delivered ids are kept in the state file; the Redis sink deduplicates in its
//! script. Unlike the Redis script the in-process filter is not atomic with the
//! write: a run that crashes after writing delivers those records again on the next
//! run (at least once). An id counts as seen only once its page was written and the
//! sink finished (flushed and synced) without error.

use std::sync::{Arc, Mutex};

use super::{RecordKey, Sink, Written};
use crate::dedup::SeenSet;
use crate::error::SinkError;

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

    fn copy_bytes(&self, page_bytes: u64) -> u64 {
        self.inner.copy_bytes(page_bytes)
    }

    fn write(&self, records: &[&str], keys: Option<&[RecordKey]>) -> Result<Written, SinkError> {
        let Some(keys) = keys else {
            return self.inner.write(records, None);
        };
        let (admitted, added) = self.seen.admit(keys);
        let offsets: Vec<usize> = (0..records.len()).filter(|&i| admitted[i].0).collect();
        let new_records: Vec<&str> = offsets.iter().map(|&i| records[i]).collect();
        let new_keys: Vec<RecordKey> = offsets.iter().map(|&i| keys[i].clone()).collect();
        if new_records.is_empty() {
            return Ok(Written::default());
        }
        match self.inner.write(&new_records, Some(&new_keys)) {
            Ok(mut written) => {
                let mut kept = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
                kept.extend(added);
                // The inner sink's offsets are into the new records: back to the page's.
                written.fresh = written.fresh.iter().map(|&i| offsets[i]).collect();
                written.updated = written
                    .fresh
                    .iter()
                    .copied()
                    .filter(|&i| admitted[i].1)
                    .collect();
                Ok(written)
            }
            Err(e) => {
                // Not delivered, so not seen: a later run delivers them.
                self.seen.forget(added.iter());
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
