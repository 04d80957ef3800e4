//! Graph collection pages, read as they arrive: the records of the `value` array in
//! their exact original JSON text, handed on in chunks of bounded size while the rest
//! of the body is still on its way, and the `@odata.nextLink` to the next page,
//! followed only where it is safe to send a token.
//!
//! A page of 1,000 sign-ins is 2 to 20 MB; held whole, a few pages in flight are the
//! process's memory and the number of pages in flight is what memory allows. Read in
//! chunks, a request in flight holds one chunk, whatever the page or record size.
//!
//! A body that breaks off halfway (a dropped connection, a garbled page) has had its
//! first chunks handed on already. The request is retried, and the records handed on
//! before are recognised by their digests and skipped — so the page is delivered once
//! whether or not the run deduplicates. Should the page come back different, the
//! frame fails ([`ReadError::Changed`]) and its unread part is owed to a later run.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::ops::{ControlFlow, Range};
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Bytes read ahead of the parser.
const READ_AHEAD: usize = 64 * 1024;

/// A run of records of one page, in Graph's order.
#[derive(Debug)]
pub struct Chunk {
    text: String,
    records: Vec<Range<usize>>,
    /// The page position of its first record.
    pub first: usize,
    /// Set on the page's last chunk: whether another page follows.
    pub end: Option<PageEnd>,
}

/// How a page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageEnd {
    /// An `@odata.nextLink` follows.
    pub more: bool,
}

impl Chunk {
    pub fn records(&self) -> impl ExactSizeIterator<Item = &str> {
        self.records.iter().map(|r| &self.text[r.clone()])
    }

    /// The bytes its buffer holds (what the chunk weighs in memory).
    pub fn weight(&self) -> usize {
        self.text.capacity() + self.records.capacity() * size_of::<Range<usize>>()
    }

    /// The buffer, for a later chunk to reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.text.into_bytes()
    }
}

/// Where a page's chunks go as they are read.
pub trait ChunkTaker {
    /// Bytes a chunk should hold at most (a record larger goes alone).
    fn chunk_bytes(&self) -> usize;
    /// Bytes one record may take at most: the page fails beyond.
    fn record_cap(&self) -> u64;
    /// An empty buffer for the next chunk; may wait until memory allows one.
    fn buffer(&mut self) -> Vec<u8>;
    /// A buffer that will not become a chunk (the page broke off).
    fn discard(&mut self, buffer: Vec<u8>);
    /// A chunk, in order; `Break`: read no further.
    fn take(&mut self, chunk: Chunk) -> ControlFlow<()>;
}

/// A page read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRead {
    /// Records in the page (those skipped as handed on before included).
    pub records: usize,
    pub next_link: Option<String>,
    /// Bytes of the body as received (after decompression).
    pub bytes: u64,
}

/// Why a page was not read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The taker asked to stop.
    Stopped,
    /// Not a collection page, or cut off: worth another try.
    Malformed(String),
    /// The body broke off (connection dropped, timeout): worth another try.
    Io(String),
    /// One record larger than the cap (bytes).
    TooLarge(u64),
    /// A retry's page differs from the records already handed on: record `at` of the
    /// page is not the one handed on before.
    Changed { at: usize },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Stopped => f.write_str("stopped"),
            ReadError::Malformed(m) | ReadError::Io(m) => f.write_str(m),
            ReadError::TooLarge(cap) => write!(f, "a record larger than {cap} bytes"),
            ReadError::Changed { at } => write!(
                f,
                "the page came back different on a retry (record {at} is not the one \
                 delivered before)"
            ),
        }
    }
}

/// The digests of the records of one page handed on so far, across attempts.
#[derive(Debug, Default)]
pub struct Delivered(Vec<u64>);

impl Delivered {
    fn digest(record: &str) -> u64 {
        // SipHash with fixed keys: the same record gives the same digest in every
        // attempt of the run.
        let mut hasher = DefaultHasher::new();
        record.hash(&mut hasher);
        hasher.finish()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Counts the bytes read since the last record ended, so one record cannot grow past
/// the cap however long it is.
struct Capped<R> {
    inner: R,
    since_record: Rc<Cell<u64>>,
    total: Rc<Cell<u64>>,
    cap: u64,
    over: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since_record.get() > self.cap {
            self.over.set(true);
            return Err(std::io::Error::other("record over the cap"));
        }
        let n = self.inner.read(buf)?;
        self.since_record.set(self.since_record.get() + n as u64);
        self.total.set(self.total.get() + n as u64);
        Ok(n)
    }
}

/// Builds chunks from the records as the parser meets them.
struct Builder<'t> {
    taker: &'t mut dyn ChunkTaker,
    delivered: &'t mut Delivered,
    chunk_bytes: usize,
    current: Option<Chunk>,
    /// Records of the page met so far.
    position: usize,
    /// Digests of the records in `current`, added to `delivered` when it is handed on.
    pending: Vec<u64>,
    since_record: Rc<Cell<u64>>,
    failure: Option<ReadError>,
}

impl Builder<'_> {
    fn push(&mut self, record: &str) -> Result<(), ReadError> {
        self.since_record.set(0);
        let position = self.position;
        self.position += 1;
        let digest = Delivered::digest(record);
        if let Some(&before) = self.delivered.0.get(position) {
            return match before == digest {
                true => Ok(()),
                false => Err(ReadError::Changed { at: position }),
            };
        }
        let full = self.current.as_ref().is_some_and(|c| {
            !c.records.is_empty() && c.text.len() + record.len() > self.chunk_bytes
        });
        if full {
            self.flush(None)?;
        }
        let mut chunk = match self.current.take() {
            Some(chunk) => chunk,
            None => self.open(position),
        };
        let start = chunk.text.len();
        chunk.text.push_str(record);
        chunk.records.push(start..chunk.text.len());
        self.current = Some(chunk);
        self.pending.push(digest);
        Ok(())
    }

    fn open(&mut self, first: usize) -> Chunk {
        let mut buffer = self.taker.buffer();
        buffer.clear();
        Chunk {
            // An empty buffer is valid UTF-8.
            text: String::from_utf8(buffer).unwrap_or_default(),
            records: Vec::new(),
            first,
            end: None,
        }
    }

    /// Hands on the chunk being built (an empty one when it ends the page).
    fn flush(&mut self, end: Option<PageEnd>) -> Result<(), ReadError> {
        let mut chunk = match self.current.take() {
            Some(chunk) => chunk,
            None if end.is_some() => self.open(self.position),
            None => return Ok(()),
        };
        chunk.end = end;
        self.delivered.0.append(&mut self.pending);
        match self.taker.take(chunk) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(ReadError::Stopped),
        }
    }

    fn abandon(&mut self) {
        self.pending.clear();
        if let Some(chunk) = self.current.take() {
            self.taker.discard(chunk.into_buffer());
        }
    }
}

/// Reads a page from `body`, handing its records to `taker` in chunks as they come;
/// records already in `delivered` (an earlier attempt's) are checked and skipped, and
/// those handed on now are added to it. One record may not exceed the taker's cap.
pub fn read_page(
    body: &mut dyn Read,
    delivered: &mut Delivered,
    taker: &mut dyn ChunkTaker,
) -> Result<PageRead, ReadError> {
    let record_cap = taker.record_cap();
    let since_record = Rc::new(Cell::new(0));
    let total = Rc::new(Cell::new(0));
    let over = Rc::new(Cell::new(false));
    let reader = std::io::BufReader::with_capacity(
        READ_AHEAD,
        Capped {
            inner: body,
            since_record: since_record.clone(),
            total: total.clone(),
            // What is read ahead is counted before the parser reaches it.
            cap: record_cap.saturating_add(READ_AHEAD as u64),
            over: over.clone(),
        },
    );
    let chunk_bytes = taker.chunk_bytes().max(1);
    let mut builder = Builder {
        taker,
        delivered,
        chunk_bytes,
        current: None,
        position: 0,
        pending: Vec::new(),
        since_record,
        failure: None,
    };
    let mut parser = serde_json::Deserializer::from_reader(reader);
    let parsed = Envelope {
        builder: &mut builder,
    }
    .deserialize(&mut parser)
    .and_then(|next_link| parser.end().map(|()| next_link));
    let next_link = match parsed {
        Ok(next_link) => next_link,
        Err(e) => {
            builder.abandon();
            if let Some(failure) = builder.failure.take() {
                return Err(failure);
            }
            return Err(match e.classify() {
                _ if over.get() => ReadError::TooLarge(record_cap),
                serde_json::error::Category::Io => ReadError::Io(e.to_string()),
                _ => ReadError::Malformed(e.to_string()),
            });
        }
    };
    builder.flush(Some(PageEnd {
        more: next_link.is_some(),
    }))?;
    Ok(PageRead {
        records: builder.position,
        next_link,
        bytes: total.get(),
    })
}

/// The page object: `value` read record by record, `@odata.nextLink` kept, the rest
/// skipped.
struct Envelope<'b, 't> {
    builder: &'b mut Builder<'t>,
}

impl<'de> DeserializeSeed<'de> for Envelope<'_, '_> {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Envelope<'_, '_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Graph collection page (an object with a value array)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut next_link = None;
        let mut seen_value = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "value" if seen_value => return Err(de::Error::duplicate_field("value")),
                "value" => {
                    seen_value = true;
                    map.next_value_seed(Records {
                        builder: &mut *self.builder,
                    })?;
                }
                "@odata.nextLink" => next_link = map.next_value::<Option<String>>()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match seen_value {
            true => Ok(next_link),
            false => Err(de::Error::missing_field("value")),
        }
    }
}

/// The `value` array.
struct Records<'b, 't> {
    builder: &'b mut Builder<'t>,
}

impl<'de> DeserializeSeed<'de> for Records<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Records<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(record) = seq.next_element::<Box<RawValue>>()? {
            if let Err(failure) = self.builder.push(record.get()) {
                let message = failure.to_string();
                self.builder.failure = Some(failure);
                return Err(de::Error::custom(message));
            }
        }
        Ok(())
    }
}

/// Decides whether a frame's next link may be followed: the bearer token must only go
/// to the configured Graph origin, a link seen before would page forever, and so would
/// a Graph that keeps handing out fresh links: a frame gets at most `max_pages` pages.
pub struct NextLinkGuard {
    origin: url::Origin,
    /// Every URL of the frame so far, the first included, as parsed (normalised).
    seen: HashSet<String>,
    max_pages: u64,
}

impl NextLinkGuard {
    pub fn new(graph_url: &url::Url, first_url: &str, max_pages: u64) -> Self {
        let mut seen = HashSet::new();
        seen.insert(normalise(first_url));
        NextLinkGuard {
            origin: graph_url.origin(),
            seen,
            max_pages,
        }
    }

    pub fn check(&mut self, link: &str) -> Result<(), String> {
        let url = url::Url::parse(link).map_err(|_| "not an absolute URL".to_string())?;
        if url.origin() != self.origin {
            return Err(format!(
                "it leaves the configured Graph host {}",
                self.origin.ascii_serialization()
            ));
        }
        if !self.seen.insert(url.to_string()) {
            return Err("it was already followed in this frame".into());
        }
        if self.seen.len() as u64 > self.max_pages {
            return Err(format!(
                "it would be page {} of the frame, more than the {} its length can need \
                 (Graph keeps sending nextLinks)",
                self.seen.len(),
                self.max_pages
            ));
        }
        Ok(())
    }
}

fn normalise(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_string(), |u| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects chunks; stops after `stop_after` chunks when set.
    #[derive(Default)]
    struct Collect {
        chunk_bytes: usize,
        record_cap: u64,
        chunks: Vec<(usize, Vec<String>, Option<PageEnd>)>,
        stop_after: Option<usize>,
        buffers: usize,
        discarded: usize,
    }

    impl ChunkTaker for Collect {
        fn chunk_bytes(&self) -> usize {
            self.chunk_bytes
        }
        fn record_cap(&self) -> u64 {
            match self.record_cap {
                0 => 1 << 20,
                cap => cap,
            }
        }
        fn buffer(&mut self) -> Vec<u8> {
            self.buffers += 1;
            Vec::new()
        }
        fn discard(&mut self, _: Vec<u8>) {
            self.discarded += 1;
        }
        fn take(&mut self, chunk: Chunk) -> ControlFlow<()> {
            let records = chunk.records().map(str::to_string).collect();
            self.chunks.push((chunk.first, records, chunk.end));
            match self.stop_after {
                Some(n) if self.chunks.len() >= n => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }

    fn read(body: &str, taker: &mut Collect) -> Result<PageRead, ReadError> {
        read_page(&mut body.as_bytes(), &mut Delivered::default(), taker)
    }

    #[test]
    fn records_keep_their_exact_bytes() {
        let body = r#"{"@odata.context":"x","value":[ {"a":"\u00e9","n":1.50} ,{"b":[1, 2]}],"@odata.nextLink":"https://g/v1.0/x?$skiptoken=a\u0026b"}"#;
        let mut taker = Collect {
            chunk_bytes: 1 << 20,
            ..Collect::default()
        };
        let page = read(body, &mut taker).unwrap();
        assert_eq!(
            taker.chunks,
            [(
                0,
                vec![
                    r#"{"a":"\u00e9","n":1.50}"#.to_string(),
                    r#"{"b":[1, 2]}"#.into()
                ],
                Some(PageEnd { more: true })
            )]
        );
        assert_eq!(
            page.next_link.as_deref(),
            Some("https://g/v1.0/x?$skiptoken=a&b")
        );
        assert_eq!((page.records, page.bytes), (2, body.len() as u64));
    }

    #[test]
    fn chunks_hold_at_most_their_bytes_and_a_larger_record_goes_alone() {
        let body = r#"{"@odata.nextLink":"https://g/n","value":[{"a":1},{"b":2},{"c":"long record"},{"d":4}]}"#;
        let mut taker = Collect {
            chunk_bytes: 14,
            ..Collect::default()
        };
        let page = read(body, &mut taker).unwrap();
        let firsts: Vec<(usize, usize)> =
            taker.chunks.iter().map(|(f, r, _)| (*f, r.len())).collect();
        assert_eq!(firsts, [(0, 2), (2, 1), (3, 1)]);
        assert_eq!(taker.chunks[2].2, Some(PageEnd { more: true }));
        assert!(taker.chunks[..2].iter().all(|(_, _, end)| end.is_none()));
        assert_eq!(page.next_link.as_deref(), Some("https://g/n"));
    }

    #[test]
    fn an_empty_page_is_one_empty_chunk_and_other_shapes_are_errors() {
        let mut taker = Collect::default();
        let page = read(r#"{"value":[]}"#, &mut taker).unwrap();
        assert_eq!((page.records, page.next_link), (0, None));
        assert_eq!(taker.chunks, [(0, vec![], Some(PageEnd { more: false }))]);
        for bad in [
            r#"{"error":{}}"#,
            r#"{"value":[{"a":1}"#,
            r#"{"value":[{"a":1}]} x"#,
            r#"{"value":[],"value":[]}"#,
            r#"{"value":[{"a":tru}]}"#,
            "<html>",
            "",
        ] {
            let err = read(bad, &mut Collect::default()).unwrap_err();
            assert!(matches!(err, ReadError::Malformed(_)), "{bad}: {err:?}");
        }
        let err = read_page(
            &mut &b"{\"value\":[\"\xff\"]}"[..],
            &mut Delivered::default(),
            &mut Collect::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ReadError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn a_record_over_the_cap_fails_without_growing_past_it() {
        let big = format!(r#"{{"value":[{{"a":"{}"}}]}}"#, "x".repeat(1 << 20));
        let err = read_page(
            &mut big.as_bytes(),
            &mut Delivered::default(),
            &mut Collect {
                record_cap: 1024,
                ..Collect::default()
            },
        )
        .unwrap_err();
        assert_eq!(err, ReadError::TooLarge(1024));
    }

    #[test]
    fn a_retry_skips_what_was_handed_on_and_notices_a_changed_page() {
        let body = r#"{"value":[{"a":1},{"b":2},{"c":3}]}"#;
        let mut delivered = Delivered::default();
        // The first attempt breaks off after its first chunk.
        let cut = &body[..body.find(r#"{"c""#).unwrap()];
        let mut first = Collect {
            chunk_bytes: 8,
            ..Collect::default()
        };
        let err = read_page(&mut cut.as_bytes(), &mut delivered, &mut first);
        assert!(matches!(err, Err(ReadError::Malformed(_))), "{err:?}");
        assert_eq!(first.chunks.len(), 1, "the second chunk was not complete");
        assert_eq!((delivered.len(), first.discarded), (1, 1));
        // The retry hands on only what is new.
        let mut retry = Collect {
            chunk_bytes: 8,
            ..Collect::default()
        };
        let page = read_page(&mut body.as_bytes(), &mut delivered, &mut retry).unwrap();
        assert_eq!(page.records, 3);
        let handed: Vec<(usize, Vec<String>)> = retry
            .chunks
            .iter()
            .map(|(f, r, _)| (*f, r.clone()))
            .collect();
        assert_eq!(
            handed,
            [
                (1, vec![r#"{"b":2}"#.to_string()]),
                (2, vec![r#"{"c":3}"#.to_string()])
            ]
        );
        // A page that changed in between: not delivered again.
        let mut changed = Delivered::default();
        read_page(&mut cut.as_bytes(), &mut changed, &mut Collect::default()).ok();
        assert_eq!(changed.len(), 1);
        let other = r#"{"value":[{"A":1},{"b":2},{"c":3}]}"#;
        let err = read_page(&mut other.as_bytes(), &mut changed, &mut Collect::default());
        assert_eq!(err.unwrap_err(), ReadError::Changed { at: 0 });
    }

    #[test]
    fn a_taker_may_stop_the_page() {
        let mut taker = Collect {
            chunk_bytes: 1,
            stop_after: Some(1),
            ..Collect::default()
        };
        let err = read(r#"{"value":[{"a":1},{"b":2}]}"#, &mut taker).unwrap_err();
        assert_eq!(err, ReadError::Stopped);
    }

    #[test]
    fn next_links_must_stay_on_the_graph_origin() {
        let graph = url::Url::parse("https://graph.microsoft.com").unwrap();
        let first = "https://graph.microsoft.com/v1.0/a?$top=1";
        let mut guard = NextLinkGuard::new(&graph, first, 100);
        assert!(
            guard.check(first).is_err(),
            "the first page is not fetched twice"
        );
        assert!(
            guard
                .check("https://graph.microsoft.com/v1.0/a?$skiptoken=1")
                .is_ok()
        );
        assert!(
            guard
                .check("https://graph.microsoft.com/v1.0/a?$skiptoken=1")
                .is_err()
        );
        assert!(
            guard
                .check("http://graph.microsoft.com/v1.0/a?$skiptoken=2")
                .is_err()
        );
        assert!(
            guard
                .check("https://graph.microsoft.com:444/v1.0/a")
                .is_err()
        );
        assert!(guard.check("https://evil.example/v1.0/a").is_err());
        assert!(guard.check("/v1.0/relative").is_err());
    }

    #[test]
    fn a_frame_has_at_most_max_pages() {
        let graph = url::Url::parse("https://g").unwrap();
        let mut guard = NextLinkGuard::new(&graph, "https://g/a", 3);
        assert!(guard.check("https://g/a?s=2").is_ok());
        assert!(guard.check("https://g/a?s=3").is_ok());
        let err = guard.check("https://g/a?s=4").unwrap_err();
        assert!(err.contains("page 4"), "{err}");
    }
}
