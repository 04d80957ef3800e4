//! The file sink: NDJSON, one record per line, to a file or to stdout. Nothing else is
//! ever written to stdout (logs go to stderr), so the output can be piped.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::sync::Mutex;

use super::Sink;
use crate::config::Output;
use crate::error::{Error, SinkError};

pub struct FileSink {
    target: String,
    out: Mutex<BufWriter<Box<dyn Write + Send>>>,
}

impl FileSink {
    /// Opens `output` for appending, so consecutive runs add to one file.
    pub fn open(output: &Output) -> Result<Self, Error> {
        let (target, writer): (String, Box<dyn Write + Send>) = match output {
            Output::Stdout => ("stdout".into(), Box::new(std::io::stdout())),
            Output::Path(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::Setup(format!("cannot open {}: {e}", path.display())))?;
                (path.display().to_string(), Box::new(file))
            }
        };
        Ok(FileSink {
            target,
            out: Mutex::new(BufWriter::with_capacity(1 << 20, writer)),
        })
    }

    fn failed(&self, e: std::io::Error) -> SinkError {
        SinkError {
            target: self.target.clone(),
            message: e.to_string(),
        }
    }
}

impl Sink for FileSink {
    fn write(&self, records: &[&str]) -> Result<usize, SinkError> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        for record in records {
            // Raw line breaks can only be whitespace between JSON tokens; blanks keep
            // the record valid JSON and the output one record per line.
            let line = if record.contains(['\n', '\r']) {
                record.replace(['\n', '\r'], " ").into()
            } else {
                std::borrow::Cow::Borrowed(*record)
            };
            out.write_all(line.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
                .map_err(|e| self.failed(e))?;
        }
        Ok(records.len())
    }

    fn finish(&self) -> Result<(), SinkError> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.flush().map_err(|e| self.failed(e))
    }
}
