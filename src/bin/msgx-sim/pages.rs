//! Rendered pages kept in memory, so that a window is rendered once and every later
//! request for the same page (a benchmark's second pass, a retry) is served as bytes.
//! Only pages that cannot change are kept: entirely in the past, without late arrivals.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};

pub type Body = Arc<Vec<u8>>;

pub struct PageCache {
    limit_bytes: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    pages: HashMap<String, Body>,
    /// Oldest first, for eviction.
    order: VecDeque<String>,
    bytes: usize,
}

impl PageCache {
    pub fn new(limit_bytes: usize) -> Self {
        PageCache {
            limit_bytes,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Body> {
        self.state().pages.get(key).cloned()
    }

    /// Keeps `body`, dropping the oldest pages beyond the limit.
    pub fn put(&self, key: String, body: Body) {
        if body.len() > self.limit_bytes {
            return;
        }
        let mut state = self.state();
        if let Some(old) = state.pages.insert(key.clone(), body.clone()) {
            state.bytes -= old.len();
        } else {
            state.order.push_back(key);
        }
        state.bytes += body.len();
        while state.bytes > self.limit_bytes {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            if let Some(evicted) = state.pages.remove(&oldest) {
                state.bytes -= evicted.len();
            }
        }
    }

    /// The cached page for `key`, or `render`ed and kept when `keep` says it is stable.
    pub fn get_or_render<E>(
        &self,
        key: &str,
        render: impl FnOnce() -> Result<(Vec<u8>, bool), E>,
    ) -> Result<Body, E> {
        if let Some(body) = self.get(key) {
            return Ok(body);
        }
        let (body, keep) = render()?;
        let body = Arc::new(body);
        if keep {
            self.put(key.to_string(), body.clone());
        }
        Ok(body)
    }
}

/// gzip at the fastest level: the simulator must not be the benchmark's bottleneck.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_pages_go_first_beyond_the_limit() {
        let cache = PageCache::new(10);
        cache.put("a".into(), Arc::new(vec![0; 4]));
        cache.put("b".into(), Arc::new(vec![0; 4]));
        cache.put("c".into(), Arc::new(vec![0; 4]));
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
    }
}
