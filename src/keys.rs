//! The Redis keys msgx-once keeps beside a queue: `…:msgx:state`, `…:msgx:lock`,
//! `…:msgx:seen` (and `…:msgx:check` of `--check`). A script touches the queue and its
//! seen-set at once, and Redis Cluster refuses that unless both hash to one slot, so
//! every derived key carries a hash tag that puts it in the queue's slot, whatever the
//! queue's name — following Redis's own rule: the text between the first `{` and the
//! first `}` after it is hashed when it is not empty, else the whole key.
//!
//! - A queue key with a tag (`{entra}:signins`, `audit{x}`): `<queue_key>:msgx:<purpose>`
//!   shares it.
//! - A queue key without one and without `}` (`ms_graph_exporter`, `a{b`):
//!   `{<queue_key>}:msgx:<purpose>`, the whole queue key as the tag.
//! - A queue key without a tag but with a `}` (`k}`, `k{}`) cannot be a tag itself: the
//!   tag is `<queue_key without braces>~<n>`, the first `n` that hashes to the queue's
//!   slot.

/// Redis Cluster's number of slots.
const SLOTS: u16 = 16_384;

/// The name of the key of `purpose` (`state`, `lock`, `seen`, `check`) beside
/// `queue_key`, in the queue's Cluster slot.
pub fn derived(queue_key: &str, purpose: &str) -> String {
    if hash_tag(queue_key).is_some() {
        return format!("{queue_key}:msgx:{purpose}");
    }
    if !queue_key.contains('}') {
        return format!("{{{queue_key}}}:msgx:{purpose}");
    }
    format!("{{{}}}:msgx:{purpose}", same_slot_tag(queue_key))
}

/// Names earlier versions kept the key of `purpose` under, newest first, none equal to
/// [`derived`]'s: `{<queue_key>}:msgx:…` (the hash tag before Redis's rule was
/// followed for queue keys with braces) and `<queue_key>:msgx:…` (before any hash
/// tag). Read when present and merged into the current names, once.
///
/// When every deployment has run a version that moves them (0.1 and later), this and
/// the move in the state store can go.
pub fn earlier(queue_key: &str, purpose: &str) -> Vec<String> {
    let current = derived(queue_key, purpose);
    let mut names: Vec<String> = Vec::new();
    for name in [
        format!("{{{queue_key}}}:msgx:{purpose}"),
        format!("{queue_key}:msgx:{purpose}"),
    ] {
        if name != current && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Every key a queue key brings with it: the queue, its derived keys and their
/// earlier names (two sources must share none of them).
pub fn all(queue_key: &str) -> Vec<String> {
    let mut keys = vec![queue_key.to_string()];
    for purpose in ["state", "lock", "seen"] {
        keys.push(derived(queue_key, purpose));
        keys.extend(earlier(queue_key, purpose));
    }
    keys
}

/// Redis's hash tag of `key`: what lies between the first `{` and the first `}` after
/// it, when that is not empty.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = &key[open + 1..];
    let close = rest.find('}')?;
    Some(&rest[..close]).filter(|tag| !tag.is_empty())
}

/// The Cluster slot of `key`, as Redis computes it.
pub fn slot(key: &str) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    crc16(hashed.as_bytes()) % SLOTS
}

/// A tag without braces that hashes to `key`'s slot: `key` without its braces, then
/// `~` and the first number that lands there (16,384 slots: a few thousand tries).
fn same_slot_tag(key: &str) -> String {
    let wanted = slot(key);
    let base: String = key.chars().filter(|c| !matches!(c, '{' | '}')).collect();
    (0u32..)
        .map(|n| format!("{base}~{n}"))
        .find(|tag| crc16(tag.as_bytes()) % SLOTS == wanted)
        .unwrap_or(base)
}

/// CRC-16/XMODEM (polynomial 0x1021, initial 0), Redis Cluster's key hash.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // Redis's own examples (cluster spec): "123456789" has CRC 0x31C3.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot("foo{{bar}}zap"), crc16(b"{bar") % SLOTS);
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
    }

    #[test]
    fn every_derived_key_shares_its_queues_slot() {
        for queue in [
            "ms_graph_exporter",
            "{entra}:signins",
            "audit{x}",
            "k}",
            "k{}",
            "{}k",
            "a{b",
            "x{y}z{w}",
            "}{",
            "{",
            "}",
            "ü{}é",
        ] {
            for purpose in ["state", "lock", "seen", "check"] {
                let key = derived(queue, purpose);
                assert_eq!(slot(&key), slot(queue), "{queue} → {key}");
                assert!(key.ends_with(&format!(":msgx:{purpose}")), "{key}");
            }
        }
        assert_eq!(
            derived("ms_graph_exporter", "state"),
            "{ms_graph_exporter}:msgx:state"
        );
        assert_eq!(
            derived("{entra}:signins", "seen"),
            "{entra}:signins:msgx:seen"
        );
    }

    #[test]
    fn earlier_names_are_the_ones_versions_before_used() {
        assert_eq!(earlier("m", "state"), ["m:msgx:state"]);
        assert_eq!(
            earlier("{entra}:signins", "state"),
            ["{{entra}:signins}:msgx:state"]
        );
        assert_eq!(earlier("k}", "seen"), ["{k}}:msgx:seen", "k}:msgx:seen"]);
    }
}
