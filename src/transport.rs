//! The HTTP boundary: the one trait through which Graph and the identity platform are
//! reached, and its ureq implementation.

use std::io::Read;
use std::time::Duration;

/// A URL fit for logs: the opaque `$skiptoken` value is elided.
pub fn display_url(url: &str) -> String {
    match url
        .find("$skiptoken=")
        .or_else(|| url.find("%24skiptoken="))
    {
        Some(at) => {
            let value_start = url[at..].find('=').map_or(url.len(), |i| at + i + 1);
            let value_end = url[value_start..]
                .find('&')
                .map_or(url.len(), |i| value_start + i);
            format!("{}…{}", &url[..value_start], &url[value_end..])
        }
        None => url.to_string(),
    }
}

/// What we keep of an HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub retry_after: Option<String>,
    pub request_id: Option<String>,
    /// The server's clock (`Date`), an HTTP-date.
    pub date: Option<String>,
    pub body: Vec<u8>,
}

/// A request that got no usable response.
#[derive(Debug, Clone)]
pub enum TransportError {
    /// Connect, DNS, TLS, reset or timeout: worth another try.
    Network(String),
    /// The body was larger than the cap: the answer will not get smaller on a retry.
    TooLarge(u64),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Network(message) => f.write_str(message),
            TransportError::TooLarge(limit) => {
                write!(f, "response body larger than {limit} bytes")
            }
        }
    }
}

pub trait HttpTransport: Send + Sync {
    /// A GET whose body is read into `buffer` (cleared first), so pages can reuse one;
    /// it takes `timeout` at most (less when the transport's own timeout is shorter).
    fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        buffer: Vec<u8>,
        timeout: Duration,
    ) -> Result<HttpResponse, TransportError>;
    fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<HttpResponse, TransportError>;
    /// A POST of `body` with `headers` (metrics to a Pushgateway).
    fn post_body(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse, TransportError>;

    /// Aborts requests in flight, so a stop does not wait out a slow response.
    fn abort(&self) {}
}

pub struct TransportOptions {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per host: one per stream, so pages reuse them.
    pub idle_per_host: usize,
    /// Largest response body accepted, after decompression.
    pub body_limit: u64,
}

pub struct UreqTransport {
    agent: ureq::Agent,
    timeout: Duration,
    body_limit: u64,
}

impl UreqTransport {
    pub fn new(options: &TransportOptions) -> Self {
        let agent = ureq::Agent::config_builder()
            // Statuses are ours to interpret: a 429's Retry-After must stay readable.
            .http_status_as_error(false)
            // A redirect could carry the request to a host we did not configure.
            .max_redirects(0)
            .timeout_global(Some(options.timeout))
            .timeout_connect(Some(options.connect_timeout))
            .max_idle_connections_per_host(options.idle_per_host.max(1))
            .max_idle_connections(options.idle_per_host.max(1) * 2)
            .user_agent(concat!("msgx-once/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        UreqTransport {
            agent,
            timeout: options.timeout,
            body_limit: options.body_limit,
        }
    }

    fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        mut body: Vec<u8>,
    ) -> Result<HttpResponse, TransportError> {
        let mut response = result.map_err(network)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header("retry-after");
        let request_id = header("request-id");
        let date = header("date");
        let status = response.status().as_u16();
        body.clear();
        response
            .body_mut()
            .with_config()
            .limit(self.body_limit)
            .reader()
            .read_to_end(&mut body)
            .map_err(|e| {
                let inner = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>());
                match inner {
                    Some(ureq::Error::BodyExceedsLimit(limit)) => TransportError::TooLarge(*limit),
                    _ => TransportError::Network(e.to_string()),
                }
            })?;
        Ok(HttpResponse {
            status,
            retry_after,
            request_id,
            date,
            body,
        })
    }
}

fn network(error: ureq::Error) -> TransportError {
    TransportError::Network(error.to_string())
}

impl HttpTransport for UreqTransport {
    fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        buffer: Vec<u8>,
        timeout: Duration,
    ) -> Result<HttpResponse, TransportError> {
        let mut request = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(timeout.min(self.timeout)))
            .build();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.finish(request.call(), buffer)
    }

    fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<HttpResponse, TransportError> {
        let request = self.agent.post(url).header("Accept", "application/json");
        self.finish(request.send_form(form.iter().copied()), Vec::new())
    }

    fn post_body(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse, TransportError> {
        let mut request = self.agent.post(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.finish(request.send(body), Vec::new())
    }

    fn abort(&self) {
        // Closes every pooled connection, including those other threads are reading.
        self.agent.clone().shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skiptokens_are_elided_from_displayed_urls() {
        assert_eq!(
            display_url("https://g/v1.0/s?$filter=x&$top=5&$skiptoken=abc123"),
            "https://g/v1.0/s?$filter=x&$top=5&$skiptoken=…"
        );
        assert_eq!(
            display_url("https://g/s?%24skiptoken=abc&$top=1"),
            "https://g/s?%24skiptoken=…&$top=1"
        );
    }
}
