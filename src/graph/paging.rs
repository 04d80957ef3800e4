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

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::ops::{ControlFlow, Range};

use serde::de::IgnoredAny;
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
    /// No record of its last record's second follows in the frame: the records of a
    /// second that may go on in the next chunk or page are held back for it, unless
    /// the whole chunk is that one second (or its time is unreadable).
    pub complete: bool,
}

/// How a page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageEnd {
    /// An `@odata.nextLink` follows.
    pub more: bool,
}

impl Chunk {
    pub fn records(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
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
    /// The second of a record's time field, if readable: the records of a second are
    /// kept together at the end of a chunk, so what was written always ends with a
    /// whole second. None: no holding back.
    fn second(&self, _record: &str) -> Option<i64> {
        None
    }
}

/// The records at the end of a page held back for the next page of the frame (they
/// are of a second that may go on there).
#[derive(Debug, Default)]
pub struct Carry(Vec<String>);

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
    /// A 64-bit digest of a record's bytes: a multiply-rotate hash over 8-byte words
    /// (FxHash's step), several times faster than SipHash over 12 KB records. The
    /// records are Graph's answers to the same request, not chosen to collide.
    fn digest(record: &str) -> u64 {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let step = |hash: u64, word: u64| (hash.rotate_left(5) ^ word).wrapping_mul(K);
        let bytes = record.as_bytes();
        let mut words = bytes.chunks_exact(8);
        let mut hash = step(0, bytes.len() as u64);
        for word in &mut words {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(word);
            hash = step(hash, u64::from_le_bytes(eight));
        }
        let mut last = [0u8; 8];
        last[..words.remainder().len()].copy_from_slice(words.remainder());
        step(hash, u64::from_le_bytes(last))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
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
    /// Digests of the page's records in `current`, added to `delivered` when it is
    /// handed on.
    pending: Vec<u64>,
    /// Records of the previous page held back for this one: the first `carried` of
    /// `current` are those (not of this page, so without digests).
    carry: &'t mut Carry,
    carried: usize,
}

impl Builder<'_> {
    fn push(&mut self, record: &str) -> Result<(), ReadError> {
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
        append(&mut chunk, record);
        self.current = Some(chunk);
        self.pending.push(digest);
        Ok(())
    }

    /// Opens the page's first chunk with what the previous page held back, if any.
    fn take_carry(&mut self) {
        if self.carry.0.is_empty() {
            return;
        }
        let mut chunk = self.open(0);
        for record in self.carry.0.drain(..) {
            append(&mut chunk, &record);
        }
        self.carried = chunk.records.len();
        self.current = Some(chunk);
    }

    /// Where the records of the last one's second begin in `chunk` (None: its time
    /// is unreadable).
    fn last_second_from(&self, chunk: &Chunk) -> Option<usize> {
        let mut records = chunk.records().rev();
        let last = self.taker.second(records.next()?)?;
        let same = records
            .take_while(|r| self.taker.second(r) == Some(last))
            .count();
        Some(chunk.records.len() - 1 - same)
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
            complete: false,
        }
    }

    /// Hands on the chunk being built (an empty one when it ends the page). When the
    /// frame goes on — the chunk is full, or the page has a next one — the records of
    /// its last second are held back for the next chunk (or page): what is written
    /// then ends with a whole second.
    fn flush(&mut self, end: Option<PageEnd>) -> Result<(), ReadError> {
        let mut chunk = match self.current.take() {
            Some(chunk) => chunk,
            None if end.is_some() => self.open(self.position),
            None => return Ok(()),
        };
        // Where the records held back begin (the chunk's length: none), and whether
        // what is written ends with a whole second. A full chunk of one second is
        // written whole (a chunk must not grow past its size); at a page's end all of
        // it waits for the next page.
        let all = chunk.records.len();
        let (hold, complete) = match end {
            // The frame's end: nothing follows.
            Some(PageEnd { more: false }) => (all, true),
            _ => match (end, self.last_second_from(&chunk)) {
                (_, None) | (None, Some(0)) => (all, false),
                (_, Some(from)) => (from, true),
            },
        };
        chunk.complete = complete;
        let held: Vec<String> = match hold < all {
            true => {
                let held = chunk.records().skip(hold).map(str::to_string).collect();
                let cut = chunk.records[hold].start;
                chunk.text.truncate(cut);
                chunk.records.truncate(hold);
                held
            }
            false => Vec::new(),
        };
        chunk.end = end;
        // The digests of the page's records handed on now (not those the previous page
        // held back, at the front); those held back now stay pending (or, at the
        // page's end, are read again with the next page).
        let mine = chunk
            .records
            .len()
            .saturating_sub(std::mem::take(&mut self.carried));
        self.delivered
            .0
            .extend(self.pending.drain(..mine.min(self.pending.len())));
        match end {
            None => {
                if !held.is_empty() {
                    let mut next = self.open(chunk.first + mine);
                    for record in &held {
                        append(&mut next, record);
                    }
                    self.current = Some(next);
                }
            }
            Some(_) => {
                self.pending.clear();
                self.carry.0 = held;
            }
        }
        match self.taker.take(chunk) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(ReadError::Stopped),
        }
    }

    /// The page broke off: what the previous page held back goes back to be held
    /// for the next attempt.
    fn abandon(&mut self) {
        self.pending.clear();
        if let Some(chunk) = self.current.take() {
            if self.carried > 0 {
                self.carry.0 = chunk
                    .records()
                    .take(self.carried)
                    .map(str::to_string)
                    .collect();
                self.carried = 0;
            }
            self.taker.discard(chunk.into_buffer());
        }
    }
}

fn append(chunk: &mut Chunk, record: &str) {
    let start = chunk.text.len();
    chunk.text.push_str(record);
    chunk.records.push(start..chunk.text.len());
}

/// The body as it arrives: what has been read and not yet consumed.
struct Body<'r> {
    reader: &'r mut dyn Read,
    buffer: Vec<u8>,
    /// Where the next byte to parse is.
    at: usize,
    /// Bytes read so far.
    total: u64,
}

/// JSON's whitespace.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

impl Body<'_> {
    /// Reads more, keeping the bytes from `keep` on (moved to the front): how far they
    /// moved, and whether anything was read (false: the end of the body).
    fn more(&mut self, keep: usize) -> Result<(usize, bool), ReadError> {
        let keep = keep.min(self.buffer.len());
        self.buffer.drain(..keep);
        self.at -= keep;
        // At least as much again as is kept: a value longer than a read is read in
        // doubling steps, so parsing it again from its start after each costs little.
        let len = self.buffer.len();
        self.buffer.resize(len + READ_AHEAD.max(len), 0);
        let read = loop {
            match self.reader.read(&mut self.buffer[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buffer.truncate(len);
                    return Err(ReadError::Io(e.to_string()));
                }
            }
        };
        self.buffer.truncate(len + read);
        self.total += read as u64;
        Ok((keep, read > 0))
    }

    /// The next byte that is not whitespace (not consumed), or None at the end.
    fn peek(&mut self) -> Result<Option<u8>, ReadError> {
        loop {
            while let Some(&byte) = self.buffer.get(self.at) {
                if !is_space(byte) {
                    return Ok(Some(byte));
                }
                self.at += 1;
            }
            if !self.more(self.at)?.1 {
                return Ok(None);
            }
        }
    }

    /// Consumes `byte`, the next one that is not whitespace.
    fn expect(&mut self, byte: u8, what: &str) -> Result<(), ReadError> {
        match self.peek()? {
            Some(found) if found == byte => {
                self.at += 1;
                Ok(())
            }
            Some(found) => Err(malformed(format!(
                "expected {what}, found {:?}",
                char::from(found)
            ))),
            None => Err(malformed(format!("expected {what}, found the end"))),
        }
    }

    /// Consumes one JSON value and gives its bytes' range in the buffer (valid until
    /// the next read). Its extent is found by [`value_len`]; its syntax is checked by
    /// the caller. More than `cap` bytes: [`ReadError::TooLarge`].
    fn value(&mut self, cap: u64) -> Result<Range<usize>, ReadError> {
        let Some(first) = self.peek()? else {
            return Err(malformed("expected a value, found the end".into()));
        };
        let mut start = self.at;
        let end = loop {
            if let Some(len) = value_len(&self.buffer[start..]) {
                break start + len;
            }
            if (self.buffer.len() - start) as u64 > cap {
                return Err(ReadError::TooLarge(cap));
            }
            // Read on (in doubling steps: scanning again from the start costs little).
            let (moved, more) = self.more(start)?;
            start -= moved;
            match (more, first) {
                (true, _) => {}
                (false, b'{' | b'[' | b'"') => {
                    return Err(malformed("the body ends inside a value".into()));
                }
                // A number or literal ends with the body.
                (false, _) => break self.buffer.len(),
            }
        };
        if (end - start) as u64 > cap {
            return Err(ReadError::TooLarge(cap));
        }
        self.at = end;
        Ok(start..end)
    }

    /// Consumes one record and gives its bytes' range, its syntax checked: an object or
    /// array is parsed by serde_json straight from the buffer (read again from its
    /// start when it was cut off by the end of what has arrived), anything else is
    /// found by [`Body::value`] and checked.
    fn record(&mut self, cap: u64) -> Result<Range<usize>, ReadError> {
        if !matches!(self.peek()?, Some(b'{' | b'[')) {
            let record = self.value(cap)?;
            check::<&RawValue>(self.text(record.clone())?)?;
            return Ok(record);
        }
        let mut start = self.at;
        loop {
            let mut stream = serde_json::Deserializer::from_slice(&self.buffer[start..])
                .into_iter::<&RawValue>();
            match stream.next() {
                Some(Ok(_)) => {
                    let end = start + stream.byte_offset();
                    if (end - start) as u64 > cap {
                        return Err(ReadError::TooLarge(cap));
                    }
                    self.at = end;
                    return Ok(start..end);
                }
                // An error where the bytes so far end (`-`, `1e`, a cut escape) is
                // the record being cut off by the end of what has arrived; one before
                // the record's end is a malformed record.
                Some(Err(e)) if !e.is_eof() && value_len(&self.buffer[start..]).is_some() => {
                    return Err(malformed(e.to_string()));
                }
                _ => {
                    if (self.buffer.len() - start) as u64 > cap {
                        return Err(ReadError::TooLarge(cap));
                    }
                    let (moved, more) = self.more(start)?;
                    start -= moved;
                    if !more {
                        return Err(malformed("the body ends inside a record".into()));
                    }
                }
            }
        }
    }

    fn text(&self, range: Range<usize>) -> Result<&str, ReadError> {
        std::str::from_utf8(&self.buffer[range]).map_err(|e| malformed(format!("not UTF-8: {e}")))
    }
}

/// How long the JSON value at the start of `bytes` is, if it ends within them: an
/// object or array to its closing bracket, a string to its closing quote (found by
/// brackets and strings alone, not parsed), anything else (a number, a literal) to the
/// next delimiter.
fn value_len(bytes: &[u8]) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &byte) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ if depth == 0 && (is_space(byte) || matches!(byte, b',' | b']' | b'}')) => {
                return Some(i);
            }
            _ => {}
        }
    }
    None
}

fn malformed(message: String) -> ReadError {
    ReadError::Malformed(message)
}

/// `text` is one JSON value of type `T`.
fn check<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, ReadError> {
    serde_json::from_str(text).map_err(|e| malformed(e.to_string()))
}

/// Reads a page from `body`, handing its records to `taker` in chunks as they come;
/// records already in `delivered` (an earlier attempt's) are checked and skipped, and
/// those handed on now are added to it. `carry` holds what the previous page held
/// back (written first) and, after, what this one holds back for the next. One record
/// may not exceed the taker's cap.
///
/// The page is read as a Graph collection page must be: one object whose `value` is
/// an array; `@odata.nextLink` is kept, other members skipped. Each record and member
/// is checked by serde_json as it ends, so a page whose JSON is wrong anywhere fails;
/// its records are passed on with their exact bytes.
pub fn read_page(
    body: &mut dyn Read,
    delivered: &mut Delivered,
    carry: &mut Carry,
    taker: &mut dyn ChunkTaker,
) -> Result<PageRead, ReadError> {
    let record_cap = taker.record_cap();
    let chunk_bytes = taker.chunk_bytes().max(1);
    let mut builder = Builder {
        taker,
        delivered,
        chunk_bytes,
        current: None,
        position: 0,
        pending: Vec::new(),
        carry,
        carried: 0,
    };
    builder.take_carry();
    let mut body = Body {
        reader: body,
        buffer: Vec::with_capacity(READ_AHEAD),
        at: 0,
        total: 0,
    };
    let next_link = match read_envelope(&mut body, &mut builder, record_cap) {
        Ok(next_link) => next_link,
        Err(e) => {
            builder.abandon();
            return Err(e);
        }
    };
    builder.flush(Some(PageEnd {
        more: next_link.is_some(),
    }))?;
    Ok(PageRead {
        records: builder.position,
        next_link,
        bytes: body.total,
    })
}

/// The page object, its records handed to `builder`; its `@odata.nextLink`.
fn read_envelope(
    body: &mut Body,
    builder: &mut Builder,
    record_cap: u64,
) -> Result<Option<String>, ReadError> {
    // Keys and members other than records are small.
    const MEMBER_CAP: u64 = 1 << 20;
    body.expect(
        b'{',
        "a Graph collection page (an object with a value array)",
    )?;
    let (mut next_link, mut seen_value) = (None, false);
    if body.peek()? == Some(b'}') {
        body.at += 1;
    } else {
        loop {
            let key = body.value(MEMBER_CAP)?;
            let key: String = check(body.text(key)?)?;
            body.expect(b':', "':' after a member's name")?;
            match key.as_str() {
                "value" if seen_value => return Err(malformed("duplicate field `value`".into())),
                "value" => {
                    seen_value = true;
                    read_records(body, builder, record_cap)?;
                }
                "@odata.nextLink" => {
                    let link = body.value(MEMBER_CAP)?;
                    next_link = check(body.text(link)?)?;
                }
                _ => {
                    let other = body.value(MEMBER_CAP)?;
                    check::<IgnoredAny>(body.text(other)?)?;
                }
            }
            match body.peek()? {
                Some(b',') => body.at += 1,
                Some(b'}') => {
                    body.at += 1;
                    break;
                }
                _ => return Err(malformed("expected ',' or '}' after a member".into())),
            }
        }
    }
    if body.peek()?.is_some() {
        return Err(malformed("trailing characters after the page".into()));
    }
    match seen_value {
        true => Ok(next_link),
        false => Err(malformed("missing field `value`".into())),
    }
}

/// The `value` array, each record checked and handed to `builder`.
fn read_records(body: &mut Body, builder: &mut Builder, record_cap: u64) -> Result<(), ReadError> {
    body.expect(b'[', "an array of records")?;
    if body.peek()? == Some(b']') {
        body.at += 1;
        return Ok(());
    }
    loop {
        let record = body.record(record_cap)?;
        builder.push(body.text(record)?)?;
        match body.peek()? {
            Some(b',') => body.at += 1,
            Some(b']') => {
                body.at += 1;
                return Ok(());
            }
            _ => return Err(malformed("expected ',' or ']' after a record".into())),
        }
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
        read_page(
            &mut body.as_bytes(),
            &mut Delivered::default(),
            &mut Carry::default(),
            taker,
        )
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
            &mut Carry::default(),
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
            &mut Carry::default(),
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
        let err = read_page(
            &mut cut.as_bytes(),
            &mut delivered,
            &mut Carry::default(),
            &mut first,
        );
        assert!(matches!(err, Err(ReadError::Malformed(_))), "{err:?}");
        assert_eq!(first.chunks.len(), 1, "the second chunk was not complete");
        assert_eq!((delivered.len(), first.discarded), (1, 1));
        // The retry hands on only what is new.
        let mut retry = Collect {
            chunk_bytes: 8,
            ..Collect::default()
        };
        let page = read_page(
            &mut body.as_bytes(),
            &mut delivered,
            &mut Carry::default(),
            &mut retry,
        )
        .unwrap();
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
        read_page(
            &mut cut.as_bytes(),
            &mut changed,
            &mut Carry::default(),
            &mut Collect::default(),
        )
        .ok();
        assert_eq!(changed.len(), 1);
        let other = r#"{"value":[{"A":1},{"b":2},{"c":3}]}"#;
        let err = read_page(
            &mut other.as_bytes(),
            &mut changed,
            &mut Carry::default(),
            &mut Collect::default(),
        );
        assert_eq!(err.unwrap_err(), ReadError::Changed { at: 0 });
    }

    /// A body that arrives a byte at a time: every value spans reads.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn a_body_split_anywhere_reads_the_same() {
        let body = r#" { "@odata.context" : "x\"]}" , "value" : [ {"a":"\\\"}{[","b":[-1.5e-3,{"c":null}]} , "s" , 12.5e3 , [true,"\u00e9"] ] , "n" : { "d" : [ ] } , "@odata.nextLink" : "https://g/n?\u0024skiptoken=a" } "#;
        let mut whole = Collect::default();
        let mut trickled = Collect::default();
        let read = read_page(
            &mut Trickle(body.as_bytes()),
            &mut Delivered::default(),
            &mut Carry::default(),
            &mut trickled,
        )
        .unwrap();
        assert_eq!(read, super::tests::read(body, &mut whole).unwrap());
        assert_eq!(trickled.chunks, whole.chunks);
        let records: Vec<String> = whole
            .chunks
            .iter()
            .flat_map(|(_, r, _)| r.clone())
            .collect();
        assert_eq!(
            records,
            [
                r#"{"a":"\\\"}{[","b":[-1.5e-3,{"c":null}]}"#,
                r#""s""#,
                "12.5e3",
                r#"[true,"\u00e9"]"#
            ]
        );
        assert_eq!(read.next_link.as_deref(), Some("https://g/n?$skiptoken=a"));
        for bad in [
            r#"{"value":[{"a":1}],}"#,
            r#"{"value":[1,]}"#,
            r#"{"value":[{"a":1]}]}"#,
            r#"{"value":{}}"#,
            r#"{"value":[],"n":tru}"#,
            r#"{"value":[] "n":1}"#,
            r#"[{"value":[]}]"#,
            r#"{"value":["a]}"#,
            r#"{"value":[{"a":-}]}"#,
            r#"{"value":[{"a":1e}]}"#,
            r#"{"value":[{"a":"\x"}]}"#,
        ] {
            let err = read_page(
                &mut Trickle(bad.as_bytes()),
                &mut Delivered::default(),
                &mut Carry::default(),
                &mut Collect::default(),
            )
            .unwrap_err();
            assert!(matches!(err, ReadError::Malformed(_)), "{bad}: {err:?}");
        }
    }

    /// Collects chunks, reading a record's second from its `t`.
    struct Timed(Collect);

    impl ChunkTaker for Timed {
        fn chunk_bytes(&self) -> usize {
            self.0.chunk_bytes()
        }
        fn record_cap(&self) -> u64 {
            self.0.record_cap()
        }
        fn buffer(&mut self) -> Vec<u8> {
            self.0.buffer()
        }
        fn discard(&mut self, buffer: Vec<u8>) {
            self.0.discard(buffer)
        }
        fn take(&mut self, chunk: Chunk) -> ControlFlow<()> {
            let complete = chunk.complete;
            let flow = self.0.take(chunk);
            self.0.chunks.last_mut().unwrap().0 = usize::from(complete);
            flow
        }
        fn second(&self, record: &str) -> Option<i64> {
            serde_json::from_str::<serde_json::Value>(record).ok()?["t"].as_i64()
        }
    }

    #[test]
    fn a_seconds_records_stay_together_across_chunks_and_pages() {
        let mut carry = Carry::default();
        let mut taker = Timed(Collect {
            chunk_bytes: 22,
            ..Collect::default()
        });
        // Newest first; `{"t":9}` is 7 bytes: three fit a chunk of 22.
        let first = r#"{"value":[{"t":9},{"t":8},{"t":8},{"t":7},{"t":6},{"t":6},{"t":6},{"t":6}],"@odata.nextLink":"https://g/2"}"#;
        read_page(
            &mut first.as_bytes(),
            &mut Delivered::default(),
            &mut carry,
            &mut taker,
        )
        .unwrap();
        let seconds = |chunks: &[(usize, Vec<String>, Option<PageEnd>)]| -> Vec<(usize, String)> {
            chunks
                .iter()
                .map(|(complete, records, _)| (*complete, records.join("")))
                .collect()
        };
        assert_eq!(
            seconds(&taker.0.chunks),
            [
                // Full at the third record: its second (8) goes on, so it waits.
                (1, r#"{"t":9}"#.to_string()),
                (1, r#"{"t":8}{"t":8}"#.into()),
                (1, r#"{"t":7}"#.into()),
                // Three of one second fill a chunk: written, not whole.
                (0, r#"{"t":6}{"t":6}{"t":6}"#.into()),
                // The page ends on second 6, which the next page may go on with: all
                // of it waits (the page's last chunk is empty).
                (1, String::new()),
            ]
        );
        assert_eq!(carry.0, [r#"{"t":6}"#]);
        // The next page begins with what was held back.
        taker.0.chunks.clear();
        let second = r#"{"value":[{"t":6},{"t":5}]}"#;
        read_page(
            &mut second.as_bytes(),
            &mut Delivered::default(),
            &mut carry,
            &mut taker,
        )
        .unwrap();
        assert_eq!(
            seconds(&taker.0.chunks),
            [(1, r#"{"t":6}{"t":6}{"t":5}"#.to_string())]
        );
        assert!(carry.0.is_empty());
        // A page that breaks off before its first chunk keeps what was held back.
        let mut carry = Carry(vec![r#"{"t":4}"#.into()]);
        let cut = r#"{"value":[{"t":4},{"t"#;
        let err = read_page(
            &mut cut.as_bytes(),
            &mut Delivered::default(),
            &mut carry,
            &mut taker,
        );
        assert!(err.is_err());
        assert_eq!(carry.0, [r#"{"t":4}"#]);
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
