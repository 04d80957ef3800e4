//! Where records go and how they are reached: the backend, the queue type, the output
//! file, the Redis URL (never shown with its password), the Pushgateway.

use std::fmt;

use super::credentials::read_secret_file;
use super::{Options, Values, parse};
use crate::error::ConfigError;
use crate::redis_client::RedisTarget;
use crate::secret::Secret;

/// A Pushgateway: its URL without credentials (safe to log) and, when the URL held
/// `user:password@`, the basic-auth header value they make.
#[derive(Clone)]
pub struct PushTarget {
    pub url: url::Url,
    pub authorization: Option<Secret>,
}

impl fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PushTarget({})", self.url)
    }
}

/// Whether runs keep a watermark, deduplicate and lock (`state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateMode {
    Auto,
    Off,
}

impl Values {
    /// What `redis_url_file` holds, when given and not overridden by `redis_url`.
    pub(super) fn redis_target(
        &self,
        options: &Options,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> Option<RedisTarget> {
        let file = options.redis_url_file.as_ref()?;
        let source = self.source("redis_url_file");
        if self.file_form_wins("redis_url", "redis_url_file", errors, warnings) != Some(true) {
            return None;
        }
        let read = read_secret_file(file).and_then(|url| {
            parse::redis_target(url.expose())
                .map_err(|accepted| format!("does not hold a Redis URL; accepted: {accepted}"))
        });
        read.map_err(|problem| {
            errors.push(ConfigError::new(
                "redis_url_file",
                source,
                problem,
                "a readable file holding the Redis URL",
            ))
        })
        .ok()
    }
}
