//! The file sink: NDJSON, one record per line, to a file or to stdout. Nothing else is
//! ever written to stdout (logs go to stderr), so the output can be piped.
//!
//! A page is written with one `write_all` and nothing is buffered between pages, so a
//! failing disk or a closed pipe fails the page it hit, not a later flush. A page cut
//! short in a file (disk full, file size limit) is truncated back to its last whole
//! line; a pipe cannot be taken back, so its reader may see a partial last line, and
//! the records of that page count as not delivered. The file is synced to disk when the
//! run finishes, before the state file records its ids as delivered.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

use super::{Health, RecordKey, Sink, SinkSettings, Written};
use crate::error::{Error, SinkError};
use crate::files::Output;
use crate::lane::Lane;
use crate::redis_client::RedisPool;
use crate::retry::RetryOptions;

/// The lane's file sink: its `file_path`.
pub fn open(
    _: &SinkSettings,
    source: &Lane,
    _: Option<&RedisPool>,
    _: RetryOptions,
    _: Option<super::redis::Dedup>,
) -> Result<Box<dyn Sink>, Error> {
    Ok(Box::new(FileSink::open(&source.file_path)?))
}

/// `--check`: the output file's directory must exist and be writable (nothing is written to the
/// file itself).
pub fn health(_: &SinkSettings, lanes: &[Lane]) -> Health {
    let mut paths = Vec::new();
    for source in lanes {
        if let Output::Path(path) = &source.file_path {
            paths.push(path.clone());
        }
    }
    let problem = paths.iter().find_map(|path| {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let probe = dir.join(format!(".msgx-check-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .err()
            .map(|e| (path.clone(), e))
    });
    Health {
        name: "output file".into(),
        result: match problem {
            None if paths.is_empty() => Ok("stdout".into()),
            None => Ok(format!(
                "{} writable",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some((path, e)) => Err((
                format!("cannot write beside {}: {e}", path.display()),
                "create the directory and give the user msgx-once runs as write access".into(),
            )),
        },
    }
}

enum Target {
    Stdout,
    File(File),
}

pub struct FileSink {
    target: String,
    /// The destination and a page buffer reused from page to page.
    out: Mutex<(Target, Vec<u8>)>,
}

impl FileSink {
    /// Opens `output` for appending, so consecutive runs add to one file.
    pub fn open(output: &Output) -> Result<Self, Error> {
        let (target, out) = match output {
            Output::Stdout => ("stdout".into(), Target::Stdout),
            Output::Path(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::Setup(format!("cannot open {}: {e}", path.display())))?;
                (path.display().to_string(), Target::File(file))
            }
        };
        Ok(FileSink {
            target,
            out: Mutex::new((out, Vec::new())),
        })
    }

    fn failed(&self, e: std::io::Error) -> SinkError {
        SinkError {
            target: self.target.clone(),
            message: e.to_string(),
        }
    }
}

/// The page as NDJSON lines.
fn pack(page: &mut Vec<u8>, records: &[&str]) {
    page.clear();
    for record in records {
        // Raw line breaks can only be whitespace between JSON tokens; blanks keep the
        // record valid JSON and the output one record per line.
        if record.contains(['\n', '\r']) {
            page.extend(record.bytes().map(|b| match b {
                b'\n' | b'\r' => b' ',
                other => other,
            }));
        } else {
            page.extend_from_slice(record.as_bytes());
        }
        page.push(b'\n');
    }
}

impl Sink for FileSink {
    fn write(&self, records: &[&str], _keys: Option<&[RecordKey]>) -> Result<Written, SinkError> {
        let mut guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let (out, page) = &mut *guard;
        pack(page, records);
        match out {
            Target::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(page)
                    .and_then(|()| stdout.flush())
                    .map_err(|e| self.failed(e))?;
            }
            Target::File(file) => {
                let before = file.metadata().map(|m| m.len()).ok();
                if let Err(e) = file.write_all(page) {
                    // Leave no half record behind: cut back to the last whole line.
                    if let (Some(len), true) = (before, file.metadata().is_ok_and(|m| m.is_file()))
                        && let Err(cut) = file.set_len(len)
                    {
                        log::error!(
                            "{}: cannot remove the partial page after a failed write: {cut}",
                            self.target
                        );
                    }
                    return Err(self.failed(e));
                }
            }
        }
        Ok(Written::all(records.len()))
    }

    fn finish(&self) -> Result<(), SinkError> {
        let mut guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        match &mut guard.0 {
            Target::Stdout => std::io::stdout().flush(),
            // A character device (/dev/stdout, /dev/null) cannot be synced.
            Target::File(file) if file.metadata().is_ok_and(|m| m.is_file()) => file.sync_data(),
            Target::File(_) => Ok(()),
        }
        .map_err(|e| self.failed(e))
    }
}
