//! A Graph record as a shape reads and edits it: its top-level members in Graph's
//! order, each kept as Graph wrote it until a shape reads or changes it. A sign-in of
//! 12 KB is mostly Conditional Access policies no shape looks into: parsing only the
//! members a shape needs, and writing the others back as they were, makes shaping
//! cost a fraction of a full JSON tree.

use std::fmt;

use serde::Deserializer;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// One member's value: as written, or as a shape changed it.
enum Member<'a> {
    Raw(&'a RawValue),
    Changed(Value),
}

pub struct Record<'a> {
    members: Vec<(String, Member<'a>)>,
}

impl<'a> Record<'a> {
    /// `text`'s members; Err: it is not a JSON object.
    pub fn parse(text: &'a str) -> Result<Self, String> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let members = deserializer
            .deserialize_map(Members)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => "not a JSON object".to_string(),
                _ => format!("not JSON: {e}"),
            })?;
        deserializer.end().map_err(|e| format!("not JSON: {e}"))?;
        Ok(Record { members })
    }

    fn find(&self, name: &str) -> Option<&Member<'a>> {
        self.members.iter().find(|(n, _)| n == name).map(|(_, m)| m)
    }

    /// The member `name`, parsed.
    pub fn get(&self, name: &str) -> Option<Value> {
        match self.find(name)? {
            Member::Raw(raw) => serde_json::from_str(raw.get()).ok(),
            Member::Changed(value) => Some(value.clone()),
        }
    }

    /// The value at `path`: a member, then members of objects within it.
    fn at(&self, path: &[&str]) -> Option<Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.get(first)?;
        for name in rest {
            value = value.get_mut(*name)?.take();
        }
        Some(value)
    }

    /// The non-empty string at `path`.
    pub fn text(&self, path: &[&str]) -> Option<String> {
        match self.at(path)? {
            Value::String(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// The integer at `path`.
    pub fn integer(&self, path: &[&str]) -> Option<i64> {
        self.at(path)?.as_i64()
    }

    pub fn remove(&mut self, name: &str) {
        self.members.retain(|(n, _)| n != name);
    }

    /// Changes the member `name` (if there is one) with `change`.
    pub fn edit(&mut self, name: &str, change: impl FnOnce(&mut Value)) {
        if let Some(mut value) = self.get(name) {
            change(&mut value);
            if let Some((_, member)) = self.members.iter_mut().find(|(n, _)| n == name) {
                *member = Member::Changed(value);
            }
        }
    }

    /// Renames the member `from` to `to`, in place.
    pub fn rename(&mut self, from: &str, to: &str) {
        if let Some((name, _)) = self.members.iter_mut().find(|(n, _)| n == from) {
            *name = to.to_string();
        }
    }

    /// Keeps only the members `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.members.retain(|(n, _)| keep(n));
    }

    /// Changes every member whose written text `suspect` says may need it with
    /// `change`, which may drop it (None).
    pub fn edit_all(
        &mut self,
        suspect: impl Fn(&str) -> bool,
        change: impl Fn(Value) -> Option<Value>,
    ) {
        let members = std::mem::take(&mut self.members);
        self.members = members
            .into_iter()
            .filter_map(|(name, member)| {
                let value = match member {
                    Member::Raw(raw) if !suspect(raw.get()) => return Some((name, member)),
                    Member::Raw(raw) => serde_json::from_str(raw.get()).ok()?,
                    Member::Changed(value) => value,
                };
                change(value).map(|v| (name, Member::Changed(v)))
            })
            .collect();
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Writes the record as a JSON object: unchanged members as Graph wrote them.
    pub fn write(&self, out: &mut String) {
        out.push('{');
        for (i, (name, member)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json(out, &Value::String(name.clone()));
            out.push(':');
            match member {
                Member::Raw(raw) => out.push_str(raw.get()),
                Member::Changed(value) => push_json(out, value),
            }
        }
        out.push('}');
    }
}

/// Appends `value` as JSON.
pub fn push_json(out: &mut String, value: &Value) {
    // Writing a Value into a String cannot fail.
    out.push_str(&value.to_string());
}

/// Writes an object of `members` (those with a value) followed by `last` members
/// written by the caller: `{"a":1,"b":"x","properties":` + … + `}`.
pub struct Object<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> Object<'o> {
    pub fn start(out: &'o mut String) -> Self {
        out.push('{');
        Object { out, first: true }
    }

    fn name(&mut self, name: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        push_json(self.out, &Value::String(name.into()));
        self.out.push(':');
    }

    /// A member, when it has a value.
    pub fn member(&mut self, name: &str, value: Option<Value>) {
        if let Some(value) = value {
            self.name(name);
            push_json(self.out, &value);
        }
    }

    /// A member whose value `record` writes.
    pub fn record(&mut self, name: &str, record: &Record) {
        self.name(name);
        record.write(self.out);
    }

    pub fn end(self) {
        self.out.push('}');
    }
}

/// Reads an object's members without parsing their values.
struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(String, Member<'de>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(64));
        while let Some((name, value)) = map.next_entry::<String, &'de RawValue>()? {
            members.push((name, Member::Raw(value)));
        }
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_members_are_written_back_as_graph_wrote_them() {
        let text = r#"{"id":"a", "big": [1, 2,  {"x":null}],"status":{"errorCode":0,"failureReason":"Other."}}"#;
        let mut record = Record::parse(text).unwrap();
        assert_eq!(record.integer(&["status", "errorCode"]), Some(0));
        record.edit("status", |s| {
            s.as_object_mut().unwrap().remove("failureReason");
        });
        record.rename("id", "Id");
        let mut out = String::new();
        record.write(&mut out);
        assert_eq!(
            out,
            r#"{"Id":"a","big":[1, 2,  {"x":null}],"status":{"errorCode":0}}"#
        );
        assert!(Record::parse("[1]").is_err());
        assert!(Record::parse("{\"a\":1} x").is_err());
        assert!(Record::parse("{\"a\":").is_err());
    }
}
