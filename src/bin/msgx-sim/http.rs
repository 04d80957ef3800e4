//! A minimal HTTP/1.1 server on std's `TcpListener`: one thread per connection,
//! keep-alive, `Content-Length` bodies. Hand-written rather than a library so the
//! simulator can misbehave on purpose — close a connection without answering, or cut a
//! body short — which a well-behaved server library does not let a handler do.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;

/// Header block and body limits: requests to the simulator are small.
const MAX_HEADER_BYTES: usize = 64 << 10;
const MAX_BODY_BYTES: usize = 1 << 20;

pub struct Request {
    pub method: String,
    pub target: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Shared, so a cached page is sent without a copy.
    pub body: Arc<Vec<u8>>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Self::shared(status, content_type, Arc::new(body))
    }

    pub fn shared(status: u16, content_type: &str, body: Arc<Vec<u8>>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What the handler wants done with a request.
pub enum Reply {
    Full(Response),
    /// Close the connection without sending anything.
    Reset,
    /// Send the head and the first half of the body, then close.
    CutShort(Response),
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// Accepts connections for ever, each on its own thread.
pub fn serve(listener: TcpListener, handler: Handler) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let handler = handler.clone();
        std::thread::spawn(move || {
            let _ = connection(stream, &handler);
        });
    }
}

fn connection(stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader)? {
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match handler(&request) {
            Reply::Full(response) => write_response(&mut writer, &response, None)?,
            Reply::Reset => return writer.shutdown(Shutdown::Both),
            Reply::CutShort(response) => {
                write_response(&mut writer, &response, Some(response.body.len() / 2))?;
                return writer.shutdown(Shutdown::Both);
            }
        }
        if close {
            break;
        }
    }
    Ok(())
}

/// The next request on the connection, or `None` once the client has closed it.
fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let read = reader
            .by_ref()
            .take((MAX_HEADER_BYTES - before) as u64)
            .read_until(b'\n', &mut head)?;
        if read == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(invalid("truncated request head"))
            };
        }
        if head == b"\r\n" {
            head.clear(); // a stray empty line between requests
        } else if head.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8(head).map_err(|_| invalid("request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (request_line.next(), request_line.next()) else {
        return Err(invalid("bad request line"));
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
    };
    let length: usize = request
        .header("content-length")
        .map(|v| v.parse().map_err(|_| invalid("bad Content-Length")))
        .transpose()?
        .unwrap_or(0);
    if length > MAX_BODY_BYTES {
        return Err(invalid("request body too large"));
    }
    request.body.resize(length, 0);
    reader.read_exact(&mut request.body)?;
    Ok(Some(request))
}

fn write_response(
    writer: &mut TcpStream,
    response: &Response,
    cut_at: Option<usize>,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
        response.status,
        reason(response.status),
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())?;
    let body = &response.body[..cut_at.unwrap_or(response.body.len())];
    writer.write_all(body)?;
    writer.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}
