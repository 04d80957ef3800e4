//! The state of the log and file backends: a JSON `state_file`, replaced atomically,
//! and its lock `{state_file}.lock`, an OS file lock.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::OffsetDateTime;

use super::{
    Progress, StateStore, Traces, before_second_pass, decode_deeper, decode_ranges, encode_deeper,
    encode_ranges,
};
use crate::dedup::SeenSet;
use crate::error::Error;

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
    deeper: String,
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
        let text = match crate::files::read_text(&self.path, crate::files::STATE_CAP) {
            Ok(text) => text,
            Err(crate::files::FileError::NotFound) => return Ok(None),
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
            deeper: decode_deeper(&stored.deeper)
                .ok_or_else(|| self.failed("not a msgx state file", &stored.deeper))?,
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
            deeper: encode_deeper(&progress.deeper),
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

    fn repair(&self, field: &str) -> String {
        match field {
            "watermark" | "rescanned" => format!(
                "set \"{field}\" in {} to the Unix second of the last export's end",
                self.path.display()
            ),
            _ => format!(
                "set \"owed_first\" and \"owed_second\" in {} to \"\"",
                self.path.display()
            ),
        }
    }

    fn traces(&self) -> Result<Traces, Error> {
        Ok(Traces {
            ours: self.lock_file_existed.then(|| {
                format!(
                    "its lock file {}.lock was left by an earlier run",
                    self.path.display()
                )
            }),
            queued: None,
        })
    }

    fn unlock(&mut self) {
        if let Some(file) = self.lock.take() {
            let _ = file.unlock();
        }
    }
}
