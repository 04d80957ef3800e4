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
    /// A GET whose body is read whole (an identity endpoint's answer); it takes
    /// `timeout` at most (less when the transport's own timeout is shorter).
    fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<HttpResponse, TransportError>;
    /// A GET whose body, when the status is 200, is handed to `on_body` to read as it
    /// arrives (the response's `body` is then empty); any other status's body is read
    /// into `body`, up to [`ERROR_BODY_CAP`].
    fn get_streaming(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
        on_body: &mut dyn FnMut(&mut dyn Read),
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

/// The most of an error answer's body that is read: its JSON error, not a page.
pub const ERROR_BODY_CAP: u64 = 64 * 1024;

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

    /// A GET of `url` with `headers`, taking `timeout` at most.
    fn get_request(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let mut request = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(timeout.min(self.timeout)))
            .build();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    }

    /// Status and headers of an answer, its body not read yet.
    fn head(response: &ureq::http::Response<ureq::Body>) -> HttpResponse {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        HttpResponse {
            status: response.status().as_u16(),
            retry_after: header("retry-after"),
            request_id: header("request-id"),
            date: header("date"),
            body: Vec::new(),
        }
    }

    /// The answer, its body read whole (up to the body limit).
    fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<HttpResponse, TransportError> {
        let mut response = result.map_err(network)?;
        let mut head = Self::head(&response);
        read_body(&mut response, self.body_limit, &mut head.body)?;
        Ok(head)
    }
}

/// Reads `response`'s body into `body`, up to `limit` bytes.
fn read_body(
    response: &mut ureq::http::Response<ureq::Body>,
    limit: u64,
    body: &mut Vec<u8>,
) -> Result<(), TransportError> {
    response
        .body_mut()
        .with_config()
        .limit(limit)
        .reader()
        .read_to_end(body)
        .map_err(|e| {
            let inner = e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>());
            match inner {
                Some(ureq::Error::BodyExceedsLimit(limit)) => TransportError::TooLarge(*limit),
                _ => TransportError::Network(e.to_string()),
            }
        })?;
    Ok(())
}

fn network(error: ureq::Error) -> TransportError {
    TransportError::Network(error.to_string())
}

impl HttpTransport for UreqTransport {
    fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<HttpResponse, TransportError> {
        self.finish(self.get_request(url, headers, timeout).call())
    }

    fn get_streaming(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
        on_body: &mut dyn FnMut(&mut dyn Read),
    ) -> Result<HttpResponse, TransportError> {
        let mut response = self
            .get_request(url, headers, timeout)
            .call()
            .map_err(network)?;
        let mut head = Self::head(&response);
        if head.status == 200 {
            // The page's own reader bounds what one record may take.
            let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
            on_body(&mut body);
        } else {
            read_body(&mut response, ERROR_BODY_CAP, &mut head.body).or_else(|e| match e {
                TransportError::TooLarge(_) => Ok(()),
                e => Err(e),
            })?;
        }
        Ok(head)
    }

    fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<HttpResponse, TransportError> {
        let request = self.agent.post(url).header("Accept", "application/json");
        self.finish(request.send_form(form.iter().copied()))
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
        self.finish(request.send(body))
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
