//! RESP encoding of the commands the Redis sink sends per page, either into a reusable
//! buffer (a page of 1000 sign-ins is 2 to 20 MB, and building it through redis-rs's
//! `Cmd` costs two extra copies and two allocations of that size per page) or, to one
//! server, straight onto the connection in pieces ([`Pieces`]): Redis runs a command
//! once all of it has arrived, so the page is never copied whole, and a connection
//! lost halfway through a command leaves that command unwritten (of a pipeline, the
//! commands before it ran, as when it is sent whole).

/// The fields of a stream entry beside `record`, for consumers that route without
/// parsing it (docs/consumers.md): `tenant` (as configured; empty for the
/// credential's own), `source`, `id` (Graph's record id), `format` (the shape of
/// `record`).
#[derive(Debug, Clone)]
pub struct EntryFields {
    pub tenant: String,
    pub source: &'static str,
    pub format: &'static str,
}

/// Where an encoded command goes.
pub trait Out {
    fn put(&mut self, bytes: &[u8]);
    /// About `bytes` more are coming.
    fn expect(&mut self, _bytes: usize) {}
}

impl Out for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn expect(&mut self, bytes: usize) {
        self.reserve(bytes);
    }
}

/// The most a piece holds before it is sent: what the sink copies of a page.
pub const PIECE_BYTES: usize = 1 << 20;

/// A command (or a pipeline of them) sent to one server as it is encoded, a piece at a
/// time through `buffer`; a record larger than a piece is sent from where it lies.
pub struct Pieces<'a> {
    buffer: &'a mut Vec<u8>,
    connection: &'a mut redis::Connection,
    failed: Option<redis::RedisError>,
}

impl<'a> Pieces<'a> {
    pub fn new(buffer: &'a mut Vec<u8>, connection: &'a mut redis::Connection) -> Self {
        buffer.clear();
        Pieces {
            buffer,
            connection,
            failed: None,
        }
    }

    /// Sends `bytes` unless an earlier send failed (the first error is kept).
    fn send(
        connection: &mut redis::Connection,
        failed: &mut Option<redis::RedisError>,
        bytes: &[u8],
    ) {
        if failed.is_none()
            && let Err(e) = connection.send_packed_command(bytes)
        {
            *failed = Some(e);
        }
    }

    fn flush(&mut self) {
        if !self.buffer.is_empty() {
            Self::send(self.connection, &mut self.failed, self.buffer);
            self.buffer.clear();
        }
    }

    /// Sends what is left and reads `replies` replies (one per command sent).
    pub fn finish(mut self, replies: usize) -> redis::RedisResult<Vec<redis::Value>> {
        self.flush();
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        (0..replies)
            .map(|_| self.connection.recv_response())
            .collect()
    }
}

impl Out for Pieces<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if self.buffer.len() + bytes.len() > PIECE_BYTES {
            self.flush();
        }
        if bytes.len() >= PIECE_BYTES {
            Self::send(self.connection, &mut self.failed, bytes);
        } else {
            self.buffer.extend_from_slice(bytes);
        }
    }
}

/// `*n\r\n`
fn array(out: &mut dyn Out, len: usize) {
    out.put(format!("*{len}\r\n").as_bytes());
}

/// `$len\r\nbytes\r\n`
fn bulk(out: &mut dyn Out, bytes: &[u8]) {
    out.put(format!("${}\r\n", bytes.len()).as_bytes());
    out.put(bytes);
    out.put(b"\r\n");
}

fn expect(out: &mut dyn Out, key: &str, records: &[&str], per_record: usize) {
    let payload: usize = records.iter().map(|r| r.len() + 16).sum();
    out.expect(payload + records.len() * per_record + key.len() + 32);
}

/// `RPUSH key r1 r2 …` as one command.
pub fn rpush(out: &mut dyn Out, key: &str, records: &[&str]) {
    expect(out, key, records, 0);
    array(out, records.len() + 2);
    bulk(out, b"RPUSH");
    bulk(out, key.as_bytes());
    for record in records {
        bulk(out, record.as_bytes());
    }
}

/// `EVALSHA sha 2 queue seen a1 … an` followed by `id second record` for each
/// record: the deduplicating write of one page as one command (redis-rs's script
/// invocation copies every record twice more, into allocations that each writer
/// thread's arena then keeps).
pub fn evalsha(
    out: &mut dyn Out,
    sha: &str,
    keys: [&str; 2],
    args: &[&str],
    records: &[(&str, i64, &str)],
) {
    let payload: usize = records
        .iter()
        .map(|(id, _, r)| id.len() + r.len() + 64)
        .sum();
    out.expect(payload + sha.len() + keys.iter().map(|k| k.len()).sum::<usize>() + 128);
    array(out, 3 + keys.len() + args.len() + 3 * records.len());
    bulk(out, b"EVALSHA");
    bulk(out, sha.as_bytes());
    bulk(out, keys.len().to_string().as_bytes());
    for key in keys {
        bulk(out, key.as_bytes());
    }
    for arg in args {
        bulk(out, arg.as_bytes());
    }
    for (id, second, record) in records {
        bulk(out, id.as_bytes());
        bulk(out, second.to_string().as_bytes());
        bulk(out, record.as_bytes());
    }
}

/// `PUBLISH key r` for each record, as one pipeline.
pub fn publish_each(out: &mut dyn Out, key: &str, records: &[&str]) {
    expect(out, key, records, key.len() + 32);
    for record in records {
        array(out, 3);
        bulk(out, b"PUBLISH");
        bulk(out, key.as_bytes());
        bulk(out, record.as_bytes());
    }
}

/// `XADD key [MAXLEN ~ n] * record r tenant t source s id i format f` for each record
/// and its Graph id, as one pipeline.
pub fn xadd_each<'a>(
    out: &mut dyn Out,
    key: &str,
    maxlen: Option<u64>,
    fields: &EntryFields,
    entries: impl Iterator<Item = (&'a &'a str, &'a str)>,
) {
    let maxlen = maxlen.map(|n| n.to_string());
    for (record, id) in entries {
        out.expect(record.len() + id.len() + key.len() + 128);
        array(out, if maxlen.is_some() { 16 } else { 13 });
        bulk(out, b"XADD");
        bulk(out, key.as_bytes());
        if let Some(n) = &maxlen {
            bulk(out, b"MAXLEN");
            bulk(out, b"~");
            bulk(out, n.as_bytes());
        }
        bulk(out, b"*");
        bulk(out, b"record");
        bulk(out, record.as_bytes());
        for (name, value) in [
            ("tenant", fields.tenant.as_str()),
            ("source", fields.source),
            ("id", id),
            ("format", fields.format),
        ] {
            bulk(out, name.as_bytes());
            bulk(out, value.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_valid_resp() {
        let mut out = Vec::new();
        rpush(&mut out, "k", &["{\"a\":1}", "é"]);
        assert_eq!(
            out,
            b"*4\r\n$5\r\nRPUSH\r\n$1\r\nk\r\n$7\r\n{\"a\":1}\r\n$2\r\n\xc3\xa9\r\n"
        );
        out.clear();
        publish_each(&mut out, "ch", &["x"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$1\r\nx\r\n");
        out.clear();
        evalsha(&mut out, "ab", ["q", "s"], &["list"], &[("i", 7, "{}")]);
        assert_eq!(
            out,
            b"*9\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$1\r\nq\r\n$1\r\ns\r\n$4\r\nlist\r\n$1\r\ni\r\n$1\r\n7\r\n$2\r\n{}\r\n"
        );
        out.clear();
        let fields = EntryFields {
            tenant: "t".into(),
            source: "signins",
            format: "graph",
        };
        let records = ["{}"];
        xadd_each(&mut out, "s", None, &fields, records.iter().zip(["i"]));
        assert_eq!(
            out,
            b"*13\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$6\r\nrecord\r\n$2\r\n{}\r\n\
              $6\r\ntenant\r\n$1\r\nt\r\n$6\r\nsource\r\n$7\r\nsignins\r\n$2\r\nid\r\n$1\r\ni\r\n\
              $6\r\nformat\r\n$5\r\ngraph\r\n"
        );
    }
}
