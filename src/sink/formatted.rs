//! A sink that writes each record in the shape of `record_format` (`format`) and
//! passes it on. The keys (id and time) were read from Graph's record before, so
//! deduplication is the same whatever the shape; a record that is not a JSON object
//! is written as Graph sent it, said once per run and lane at WARN: never dropped.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{RecordKey, Sink, Written};
use crate::error::SinkError;
use crate::format::{self, Context, Shape};

pub struct FormattedSink {
    inner: Box<dyn Sink>,
    shape: &'static dyn Shape,
    context: Context,
    /// The log prefix of the lane, for the WARN.
    prefix: String,
    warned: AtomicBool,
}

impl FormattedSink {
    pub fn new(
        inner: Box<dyn Sink>,
        shape: &'static dyn Shape,
        context: Context,
        prefix: String,
    ) -> Self {
        FormattedSink {
            inner,
            shape,
            context,
            prefix,
            warned: AtomicBool::new(false),
        }
    }
}

/// A rendered record is a little larger than Graph's (the envelope), and is held
/// beside it while the page is written.
const GROWTH: f64 = 1.25;

impl Sink for FormattedSink {
    fn check(&self) -> Result<(), SinkError> {
        self.inner.check()
    }

    fn write(&self, records: &[&str], keys: Option<&[RecordKey]>) -> Result<Written, SinkError> {
        let mut unshaped = Vec::new();
        let rendered: Vec<String> = records
            .iter()
            .enumerate()
            .map(|(offset, record)| {
                format::render(self.shape, record, &self.context).unwrap_or_else(|reason| {
                    unshaped.push((offset, reason));
                    record.to_string()
                })
            })
            .collect();
        if let Some((offset, reason)) = unshaped.first()
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            log::warn!(
                "{}{} records written as Graph sent them (the first at page offset {offset}: \
                 {reason}); later pages say no more",
                self.prefix,
                unshaped.len()
            );
        }
        let views: Vec<&str> = rendered.iter().map(String::as_str).collect();
        self.inner.write(&views, keys)
    }

    fn copy_bytes(&self, page_bytes: u64) -> u64 {
        let rendered = (page_bytes as f64 * GROWTH) as u64;
        rendered + self.inner.copy_bytes(rendered)
    }

    fn finish(&self) -> Result<(), SinkError> {
        self.inner.finish()
    }
}
