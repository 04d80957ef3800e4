//! A string that must never be printed: client secrets, bearer tokens, passwords.
//!
//! `Secret` has no `Display`, and its `Debug` prints a placeholder, so a secret can only
//! reach output through an explicit `expose()` at the one place that sends it on the wire.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Replaces every occurrence of the secret in `text`, for messages built from what a
    /// server sent back (a server may echo what it was given).
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert_eq!(format!("{:?}", Some(secret)), "Some(Secret([redacted]))");
    }

    #[test]
    fn scrub_removes_echoed_values() {
        let secret = Secret::new("s3cr3t-value");
        assert_eq!(
            secret.scrub("bad secret s3cr3t-value given"),
            "bad secret [redacted] given"
        );
    }
}
