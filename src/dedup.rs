//! Deduplication's vocabulary (`state auto`): each record's key ([`record_keys`]),
//! read once per page by the pipeline and the takeover; the seen-set of the log and
//! file backends' state ([`SeenSet`]); the seen-set's floor mark in Redis
//! ([`FLOOR_MARK`]). Below both the sinks that deduplicate and the state stores that
//! keep what was delivered.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::sources::SourceSpec;

/// What deduplication needs of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    /// The record's id; for a mutable source, its id and last-update time, so every
    /// update is a record of its own.
    pub id: String,
    /// The second of the source's time field (createdDateTime for sign-ins), Unix
    /// seconds: where the record sits in the windows.
    pub second: i64,
    /// With `signin_updates`, `id` is `{record id}#{content digest}` and this the
    /// length of the record id: a new version of a record is told from a new record.
    pub versioned: Option<usize>,
}

impl RecordKey {
    /// The record's own id, when the key is of one version of it.
    pub fn record_id(&self) -> Option<&str> {
        self.versioned.and_then(|n| self.id.get(..n))
    }

    /// Graph's id of the record: the key without a version's `#digest` or an
    /// update's `@time` (no Graph id holds either; dedup.lua cuts it the same way).
    pub fn graph_id(&self) -> &str {
        self.id.split(['#', '@']).next().unwrap_or(&self.id)
    }
}

/// A record whose id or time cannot be read: it is still delivered, keyed by its
/// exact bytes instead of its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    /// Its place in the page, from 0.
    pub offset: usize,
    pub reason: String,
}

/// Each record's key, read without copying the record. A record without a usable id
/// or time gets a key of its own — `raw:` and a 128-bit hash of its exact bytes, at
/// `fallback_second` (its frame's last second: Graph returned it for that frame) — so
/// one bad record is delivered once and never stops the others.
///
/// `versioned` (`signin_updates`): each key is of the record's content too, so that a
/// record Microsoft changed is a new key while an unchanged one keeps its key.
pub fn record_keys(
    records: &[&str],
    source: &SourceSpec,
    fallback_second: i64,
    versioned: bool,
) -> (Vec<RecordKey>, Vec<KeyProblem>) {
    let mut problems = Vec::new();
    let keys = records
        .iter()
        .enumerate()
        .map(|(offset, record)| match read_key(record, source) {
            Ok(key) if versioned => match content_digest(record) {
                Some(digest) => RecordKey {
                    versioned: Some(key.id.len()),
                    id: format!("{}#{digest:016x}", key.id),
                    second: key.second,
                },
                None => key,
            },
            Ok(key) => key,
            Err((reason, second)) => {
                problems.push(KeyProblem { offset, reason });
                RecordKey {
                    id: format!("raw:{:032x}", fnv1a_128(record.as_bytes())),
                    second: second.unwrap_or(fallback_second),
                    versioned: None,
                }
            }
        })
        .collect();
    (keys, problems)
}

/// A 64-bit digest of a record's content: its JSON with every object's members in
/// name order, so that the same content reads the same whatever order or spacing
/// Graph serialises it with. None if the record is not JSON (its key is its bytes).
fn content_digest(record: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(record).ok()?;
    let mut hash = Fnv64::default();
    hash_canonical(&value, &mut hash);
    Some(hash.0)
}

fn hash_canonical(value: &serde_json::Value, hash: &mut Fnv64) {
    use serde_json::Value;
    match value {
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            hash.write(b"{");
            for (name, member) in sorted {
                hash.write(serde_json::to_string(name).unwrap_or_default().as_bytes());
                hash.write(b":");
                hash_canonical(member, hash);
                hash.write(b",");
            }
            hash.write(b"}");
        }
        Value::Array(items) => {
            hash.write(b"[");
            for item in items {
                hash_canonical(item, hash);
                hash.write(b",");
            }
            hash.write(b"]");
        }
        scalar => hash.write(scalar.to_string().as_bytes()),
    }
}

/// FNV-1a, 64 bits, fed in pieces: stable across runs and Rust versions (the digest
/// is stored).
struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf29ce484222325)
    }
}

impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x100000001b3);
        }
    }
}

/// The key of one record, or why there is none (with its second if that much could be
/// read).
fn read_key(record: &str, source: &SourceSpec) -> Result<RecordKey, (String, Option<i64>)> {
    let field = source.time_field;
    let fields = read_fields(record, field)
        .map_err(|e| (format!("not a JSON object with id and {field}: {e}"), None))?;
    let second = match &fields.time {
        None => Err(format!("no {field}")),
        Some(text) => crate::window::parse_created(text)
            .ok_or_else(|| format!("{field} {text:?} is not a UTC timestamp")),
    };
    let id = match fields.id {
        Some(serde_json::Value::String(id)) if !id.is_empty() => Ok(id),
        None => Err("no id".to_string()),
        Some(other) => Err(format!("id {other} is not a non-empty string")),
    };
    match (id, second) {
        (Ok(id), Ok(second)) if source.mutable => Ok(RecordKey {
            id: format!("{id}@{}", fields.time.unwrap_or_default()),
            second,
            versioned: None,
        }),
        (Ok(id), Ok(second)) => Ok(RecordKey {
            id,
            second,
            versioned: None,
        }),
        (Err(reason), second) => Err((reason, second.ok())),
        (Ok(_), Err(reason)) => Err((reason, None)),
    }
}

/// The second of a record's `time_field`, if it has a readable one.
pub fn record_second(record: &str, time_field: &str) -> Option<i64> {
    let fields = read_fields(record, time_field).ok()?;
    crate::window::parse_created(fields.time.as_deref()?)
}

/// The two fields a key is made of; every other field is skipped unread.
struct KeyFields<'a> {
    id: Option<serde_json::Value>,
    time: Option<Cow<'a, str>>,
}

fn read_fields<'a>(record: &'a str, time_field: &str) -> serde_json::Result<KeyFields<'a>> {
    let mut de = serde_json::Deserializer::from_str(record);
    let fields = KeyFieldsSeed { time_field }.deserialize(&mut de)?;
    de.end()?;
    Ok(fields)
}

/// Reads [`KeyFields`] of an object whose time field is named at run time.
struct KeyFieldsSeed<'f> {
    time_field: &'f str,
}

impl<'de> DeserializeSeed<'de> for KeyFieldsSeed<'_> {
    type Value = KeyFields<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeyFieldsSeed<'_> {
    type Value = KeyFields<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an object with id and {}", self.time_field)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = KeyFields {
            id: None,
            time: None,
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "id" {
                fields.id = Some(map.next_value()?);
            } else if key == self.time_field {
                // A null time counts as none.
                let time: Option<Cow<'de, str>> = map.next_value()?;
                fields.time = time;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(fields)
    }
}

/// FNV-1a, 128 bits: stable across runs and Rust versions (the key is stored), and wide
/// enough that two different records never share one in practice.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u128::from(*byte)).wrapping_mul(PRIME)
    })
}

/// Ids delivered so far, with their second.
#[derive(Default)]
pub struct SeenSet(Mutex<HashMap<String, i64>>);

impl SeenSet {
    /// Replaces the set with `ids` (loaded from the state file).
    pub fn replace(&self, ids: HashMap<String, i64>) {
        *self.lock() = ids;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the keys as seen (a version's record id too); for each, whether it was
    /// new, and whether it was a new version of a record seen before. Returns also the
    /// ids it added, to forget if the write fails.
    pub(crate) fn admit(&self, keys: &[RecordKey]) -> (Vec<(bool, bool)>, Vec<String>) {
        let mut seen = self.lock();
        let mut added = Vec::new();
        let admitted = keys
            .iter()
            .map(|k| {
                if seen.contains_key(&k.id) {
                    return (false, false);
                }
                seen.insert(k.id.clone(), k.second);
                added.push(k.id.clone());
                let Some(record_id) = k.record_id() else {
                    return (true, false);
                };
                let update = seen.contains_key(record_id);
                if !update {
                    seen.insert(record_id.to_string(), k.second);
                    added.push(record_id.to_string());
                }
                (true, update)
            })
            .collect();
        (admitted, added)
    }

    pub(crate) fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let mut seen = self.lock();
        for id in ids {
            seen.remove(id);
        }
    }

    /// The ids created at or after `floor` (older ones cannot be read again).
    pub fn snapshot(&self, floor: i64) -> HashMap<String, i64> {
        let seen = self.lock();
        seen.iter()
            .filter(|(_, created)| **created >= floor)
            .map(|(id, created)| (id.clone(), *created))
            .collect()
    }
}

/// The seen-set member whose score is the floor of the last write: every id delivered
/// at or after it is in the set. A space, which no Graph id holds, keeps it apart.
pub const FLOOR_MARK: &str = "msgx floor";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources;

    #[test]
    fn good_records_are_keyed_by_id_and_created() {
        let (keys, problems) = record_keys(
            &[r#"{"id":"a-1","createdDateTime":"2026-01-01T00:00:01.5Z","x":{"id":2}}"#],
            sources::sign_ins(),
            0,
            false,
        );
        assert_eq!(
            keys,
            [RecordKey {
                id: "a-1".into(),
                second: 1_767_225_601,
                versioned: None,
            }]
        );
        assert!(problems.is_empty());
    }

    #[test]
    fn versioned_keys_change_with_the_content_not_with_its_order() {
        let versions = [
            r#"{"id":"a-1","createdDateTime":"2026-01-01T00:00:01Z","status":{"errorCode":0}}"#,
            r#"{ "status": {"errorCode": 0}, "createdDateTime": "2026-01-01T00:00:01Z", "id": "a-1" }"#,
            r#"{"id":"a-1","createdDateTime":"2026-01-01T00:00:01Z","status":{"errorCode":0,"additionalDetails":"MFA completed in Azure AD"}}"#,
        ];
        let (keys, problems) = record_keys(&versions, sources::sign_ins(), 0, true);
        assert!(problems.is_empty());
        assert_eq!(keys[0].id, keys[1].id);
        assert_ne!(keys[0].id, keys[2].id);
        assert!(keys[2].id.starts_with("a-1#"));
        assert_eq!(keys[2].record_id(), Some("a-1"));
        // The seen-set tells the new version from a new record.
        let seen = SeenSet::default();
        assert_eq!(seen.admit(&keys[..1]).0, [(true, false)]);
        assert_eq!(seen.admit(&keys[1..]).0, [(false, false), (true, true)]);
    }

    #[test]
    fn mutable_records_are_keyed_by_id_and_last_update() {
        let risk = sources::named("risk_detections").unwrap();
        let versions = [
            r#"{"id":"r1","lastUpdatedDateTime":"2026-01-01T00:00:01.25Z","riskLevel":"low"}"#,
            r#"{"riskLevel":"high","lastUpdatedDateTime":"2026-01-01T00:15:01.5Z","id":"r1"}"#,
        ];
        let (keys, problems) = record_keys(&versions, risk, 0, false);
        assert!(problems.is_empty());
        assert_eq!(keys[0].id, "r1@2026-01-01T00:00:01.25Z");
        assert_eq!(keys[1].id, "r1@2026-01-01T00:15:01.5Z");
        assert_eq!(keys[1].second, 1_767_226_501);
        let (_, problems) = record_keys(
            &[r#"{"id":"r1","createdDateTime":"2026-01-01T00:00:01Z"}"#],
            risk,
            7,
            false,
        );
        assert_eq!(problems[0].reason, "no lastUpdatedDateTime");
    }

    #[test]
    fn bad_records_are_keyed_by_their_bytes() {
        let created = r#""createdDateTime":"2026-01-01T00:00:01Z""#;
        let bad = [
            format!("{{{created}}}"),
            format!(r#"{{"id":null,{created}}}"#),
            format!(r#"{{"id":7,{created}}}"#),
            format!(r#"{{"id":"",{created}}}"#),
            r#"{"id":"x"}"#.to_string(),
            r#"{"id":"x","createdDateTime":"yesterday"}"#.to_string(),
            r#"{"id":"x","createdDateTime":5}"#.to_string(),
            "42".to_string(),
            r#"["id"]"#.to_string(),
        ];
        let records: Vec<&str> = bad.iter().map(String::as_str).collect();
        let (keys, problems) = record_keys(&records, sources::sign_ins(), 99, false);
        let offsets: Vec<usize> = problems.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, (0..bad.len()).collect::<Vec<_>>());
        assert!(
            keys.iter()
                .all(|k| k.id.starts_with("raw:") && k.id.len() == 36)
        );
        // A readable createdDateTime is kept; otherwise the frame's last second.
        assert_eq!(keys[0].second, 1_767_225_601);
        assert_eq!(keys[4].second, 99);
        let mut ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), bad.len(), "different records, different keys");
        assert_eq!(
            record_keys(&records, sources::sign_ins(), 0, false).0[3].id,
            keys[3].id,
            "stable"
        );
        assert!(
            problems[2].reason.contains("id 7"),
            "{}",
            problems[2].reason
        );
    }
}
