//! Graph collection pages: the records as their exact original JSON text, and the
//! `@odata.nextLink` to the next page, followed only where it is safe to send a token.

use std::collections::HashSet;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

/// One page of a Graph collection. Records are byte ranges of the body, so they are
/// passed on exactly as Graph sent them, without copying or re-serializing.
#[derive(Debug)]
pub struct Page {
    body: String,
    records: Vec<Range<usize>>,
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    value: Vec<&'a RawValue>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

impl Page {
    /// Parses a response body; anything but a collection page with a `value` array is
    /// an error (a truncated body, an HTML error page, a JSON object of another shape).
    pub fn parse(body: Vec<u8>) -> Result<Page, String> {
        let body = String::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
        let envelope: Envelope = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let base = body.as_ptr() as usize;
        let records = envelope
            .value
            .iter()
            .map(|raw| {
                let start = raw.get().as_ptr() as usize - base;
                start..start + raw.get().len()
            })
            .collect();
        let next_link = envelope.next_link;
        Ok(Page {
            body,
            records,
            next_link,
        })
    }

    pub fn records(&self) -> impl ExactSizeIterator<Item = &str> {
        self.records.iter().map(|r| &self.body[r.clone()])
    }

    /// How many records the page holds.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    pub fn next_link(&self) -> Option<&str> {
        self.next_link.as_deref()
    }

    /// The body's buffer, for the next page to reuse.
    pub fn into_body(self) -> Vec<u8> {
        self.body.into_bytes()
    }

    /// Bytes of the page as received (after decompression).
    pub fn body_len(&self) -> usize {
        self.body.len()
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

    #[test]
    fn records_keep_their_exact_bytes() {
        let body = r#"{"@odata.context":"x","value":[ {"a":"\u00e9","n":1.50} ,{"b":[1, 2]}],"@odata.nextLink":"https://g/v1.0/x?$skiptoken=a\u0026b"}"#;
        let page = Page::parse(body.as_bytes().to_vec()).unwrap();
        let records: Vec<&str> = page.records().collect();
        assert_eq!(records, [r#"{"a":"\u00e9","n":1.50}"#, r#"{"b":[1, 2]}"#]);
        assert_eq!(page.next_link(), Some("https://g/v1.0/x?$skiptoken=a&b"));
    }

    #[test]
    fn empty_pages_are_valid_and_other_shapes_are_not() {
        assert_eq!(
            Page::parse(br#"{"value":[]}"#.to_vec())
                .unwrap()
                .record_count(),
            0
        );
        for bad in [
            &br#"{"error":{}}"#[..],
            br#"{"value":[{"a":1}"#,
            b"<html>",
            b"\xff",
        ] {
            assert!(Page::parse(bad.to_vec()).is_err());
        }
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
