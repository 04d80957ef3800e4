//! RESP encoding of the commands the Redis sink sends per page, into reusable
//! buffers: a page of 1000 sign-ins is ~1.5 MB, and building it through redis-rs's
//! `Cmd` costs two extra copies and two allocations of that size per page.

/// `*n\r\n`
fn array(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    out.extend_from_slice(len.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `$len\r\nbytes\r\n`
fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn reserve(out: &mut Vec<u8>, key: &str, records: &[&str], per_record: usize) {
    let payload: usize = records.iter().map(|r| r.len() + 16).sum();
    out.reserve(payload + records.len() * per_record + key.len() + 32);
}

/// `RPUSH key r1 r2 …` as one command.
pub fn rpush(out: &mut Vec<u8>, key: &str, records: &[&str]) {
    out.clear();
    reserve(out, key, records, 0);
    array(out, records.len() + 2);
    bulk(out, b"RPUSH");
    bulk(out, key.as_bytes());
    for record in records {
        bulk(out, record.as_bytes());
    }
}

/// `PUBLISH key r` for each record, as one pipeline.
pub fn publish_each(out: &mut Vec<u8>, key: &str, records: &[&str]) {
    out.clear();
    reserve(out, key, records, key.len() + 32);
    for record in records {
        array(out, 3);
        bulk(out, b"PUBLISH");
        bulk(out, key.as_bytes());
        bulk(out, record.as_bytes());
    }
}

/// `XADD key [MAXLEN ~ n] * record r` for each record, as one pipeline.
pub fn xadd_each(out: &mut Vec<u8>, key: &str, maxlen: Option<u64>, records: &[&str]) {
    out.clear();
    reserve(out, key, records, key.len() + 64);
    let maxlen = maxlen.map(|n| n.to_string());
    for record in records {
        array(out, if maxlen.is_some() { 8 } else { 5 });
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
        publish_each(&mut out, "ch", &["x"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$1\r\nx\r\n");
    }
}
