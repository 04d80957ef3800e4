//! Identifiers: random `client-request-id` GUIDs for Graph requests, and telling a GUID.
//!
//! These correlate log lines with Microsoft's; they need to be unique, not secret, so
//! std's per-process random hasher keys are enough and no RNG crate is pulled in.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// 64 random bits (not for secrets).
pub fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    hasher.write_u64(nanos);
    hasher.finish()
}

/// Whether `text` is a GUID in its usual form (8-4-4-4-12 hex digits).
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A random (version 4 layout) GUID such as `0f8fad5b-d9cb-469f-a165-70867728950e`.
pub fn guid() -> String {
    let high = random_u64();
    let low = random_u64();
    let time_hi = ((high & 0x0fff) | 0x4000) as u16;
    let clock = (((low >> 48) & 0x3fff) | 0x8000) as u16;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (high >> 32) as u32,
        ((high >> 16) & 0xffff) as u16,
        time_hi,
        clock,
        low & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn guids_are_well_formed_and_distinct() {
        let a = super::guid();
        let b = super::guid();
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
        assert!(super::is_guid(&a));
    }

    #[test]
    fn only_the_8_4_4_4_12_hex_form_is_a_guid() {
        assert!(super::is_guid("4A06F77B-6bdb-4f5b-b1c4-2b1a5d2e1a2b"));
        for text in [
            "contoso.onmicrosoft.com",
            "4a06f77b6bdb4f5bb1c42b1a5d2e1a2b",
            "4a06f77b-6bdb-4f5b-b1c4-2b1a5d2e1a2",
            "4a06f77b-6bdb-4f5b-b1c4-2b1a5d2e1a2g",
            "{4a06f77b-6bdb-4f5b-b1c4-2b1a5d2e1a2b}",
            "",
        ] {
            assert!(!super::is_guid(text), "{text}");
        }
    }
}
