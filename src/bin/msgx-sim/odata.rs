//! The slice of OData the simulated resources speak: `$filter` on the resource's time
//! field with exactly its documented operators (and, on beta sign-ins, the
//! `signInEventTypes` clause), newest-first paging with an opaque `$skiptoken`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::generator::{TICKS_PER_SECOND, Ticks};
use crate::resources::{Resource, Stream};

/// Inclusive tick bounds of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub lo: Ticks,
    pub hi: Ticks,
}

/// The `signInEventTypes/any(t: t eq '…')` clause of a beta sign-ins filter, and the
/// filter without it.
pub fn event_type(filter: &str) -> (Option<String>, String) {
    const START: &str = "signInEventTypes/any(t: t eq '";
    let Some(at) = filter.find(START) else {
        return (None, filter.to_string());
    };
    let rest = &filter[at + START.len()..];
    let Some(end) = rest.find("')") else {
        return (None, filter.to_string());
    };
    let kind = rest[..end].to_string();
    let remaining = format!("{}{}", &filter[..at], &rest[end + 2..]);
    // Drop the `and` that joined the clause.
    let remaining = remaining.trim();
    let remaining = remaining.strip_prefix("and ").unwrap_or(remaining);
    let remaining = remaining.strip_suffix(" and").unwrap_or(remaining);
    (Some(kind), remaining.trim().to_string())
}

/// Parses `FIELD op T and FIELD op T` on `resource`'s time field (any order, optional
/// parentheses) with the operators Graph documents for it; anything else is refused
/// the way Graph refuses it. `gt`/`lt` are exclusive by one tick.
/// The oracle (`strict` false) takes every comparison operator.
pub fn parse_filter(
    filter: &str,
    default: Bounds,
    resource: &Resource,
    strict: bool,
) -> Result<Bounds, String> {
    let cleaned = filter.replace(['(', ')'], " ");
    let tokens: Vec<&str> = cleaned.split_whitespace().collect();
    let mut bounds = default;
    if tokens.is_empty() {
        return Ok(bounds);
    }
    let field_name = resource.time_field;
    for (i, clause) in tokens.split(|t| t.eq_ignore_ascii_case("and")).enumerate() {
        let [field, op, value] = clause else {
            return Err(format!("Invalid filter clause {}", i + 1));
        };
        if !field.eq_ignore_ascii_case(field_name) {
            return Err(format!(
                "Invalid filter clause: unsupported property '{field}' on type '{}'",
                resource.type_name
            ));
        }
        let op = op.to_ascii_lowercase();
        let known = ["eq", "ge", "gt", "le", "lt"].contains(&op.as_str());
        if !known || (strict && !resource.operators.contains(&op.as_str())) {
            return Err(format!(
                "Invalid filter clause: operator '{op}' is not supported on {field_name}"
            ));
        }
        let ticks = parse_ticks(value)?;
        match op.as_str() {
            "ge" => bounds.lo = bounds.lo.max(ticks),
            "gt" => bounds.lo = bounds.lo.max(ticks + 1),
            "le" => bounds.hi = bounds.hi.min(ticks),
            "lt" => bounds.hi = bounds.hi.min(ticks - 1),
            _ => {
                bounds.lo = bounds.lo.max(ticks);
                bounds.hi = bounds.hi.min(ticks);
            }
        }
    }
    Ok(bounds)
}

pub fn parse_ticks(value: &str) -> Result<Ticks, String> {
    let t = OffsetDateTime::parse(value, &Rfc3339)
        .map_err(|_| format!("Invalid filter clause: '{value}' is not a DateTimeOffset"))?;
    Ok((t.unix_timestamp_nanos() / 100) as Ticks)
}

/// Where the next page starts: records of `second` below index `below`, then older.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub second: i64,
    pub below: u64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{:x}x{:x}", self.second, self.below)
    }

    pub fn decode(token: &str) -> Option<Cursor> {
        let (second, below) = token.split_once('x')?;
        Some(Cursor {
            second: i64::from_str_radix(second, 16).ok()?,
            below: u64::from_str_radix(below, 16).ok()?,
        })
    }
}

/// What one page request asks for.
pub struct PageQuery<'a> {
    pub bounds: Bounds,
    pub cursor: Option<Cursor>,
    pub top: usize,
    /// Records not yet visible at `now` (late arrivals) are left out.
    pub now: Ticks,
    pub select: Option<&'a [String]>,
    /// Page oldest first (`--oldest-first`): Graph documents no order for some
    /// resources, and a client must not depend on newest first.
    pub oldest_first: bool,
}

/// One page of up to `top` records in `bounds` that are visible at `now`, newest
/// first, starting at `cursor`; returns the records and where the next page starts
/// (None when done).
pub fn page(stream: &Stream, query: &PageQuery) -> (Vec<String>, Option<Cursor>) {
    if query.oldest_first {
        return page_oldest_first(stream, query);
    }
    let PageQuery {
        bounds,
        cursor,
        top,
        now,
        select,
        ..
    } = *query;
    let mut records = Vec::with_capacity(top.min(1000));
    let lo_second = bounds.lo.div_euclid(TICKS_PER_SECOND);
    let start = cursor.unwrap_or(Cursor {
        second: bounds.hi.div_euclid(TICKS_PER_SECOND),
        below: u64::MAX,
    });
    let mut second = start.second;
    while second >= lo_second {
        let events = stream.events(second);
        let mut index = if second == start.second {
            start.below.min(events.len() as u64)
        } else {
            events.len() as u64
        };
        while index > 0 {
            index -= 1;
            let event = &events[index as usize];
            let ticks = event.ticks;
            if ticks > bounds.hi {
                continue;
            }
            if ticks < bounds.lo {
                return (records, None);
            }
            if stream.visible_at(event) > now || !stream.current_at(event, now) {
                continue;
            }
            records.push(stream.render(event, now, select));
            if records.len() == top {
                return (
                    records,
                    Some(Cursor {
                        second,
                        below: index,
                    }),
                );
            }
        }
        second -= 1;
    }
    (records, None)
}

/// [`page`] in the other order: records of the cursor's `second` from index `below` on,
/// then newer seconds.
fn page_oldest_first(stream: &Stream, query: &PageQuery) -> (Vec<String>, Option<Cursor>) {
    let PageQuery {
        bounds,
        cursor,
        top,
        now,
        select,
        ..
    } = *query;
    let mut records = Vec::with_capacity(top.min(1000));
    let hi_second = bounds.hi.div_euclid(TICKS_PER_SECOND);
    let start = cursor.unwrap_or(Cursor {
        second: bounds.lo.div_euclid(TICKS_PER_SECOND),
        below: 0,
    });
    let mut second = start.second;
    while second <= hi_second {
        let events = stream.events(second);
        let first = if second == start.second {
            start.below
        } else {
            0
        };
        for index in first..events.len() as u64 {
            let event = &events[index as usize];
            if event.ticks < bounds.lo {
                continue;
            }
            if event.ticks > bounds.hi {
                return (records, None);
            }
            if stream.visible_at(event) > now || !stream.current_at(event, now) {
                continue;
            }
            records.push(stream.render(event, now, select));
            if records.len() == top {
                let next = Cursor {
                    second,
                    below: index + 1,
                };
                return (records, Some(next));
            }
        }
        second += 1;
    }
    (records, None)
}

/// Every record in `bounds` (visible by `visible_by`, if given), oldest first, as Graph
/// shows it at `as_of` — of a mutable resource every version made in `bounds`: the
/// oracle tests compare exports against.
pub fn all(
    stream: &Stream,
    bounds: Bounds,
    visible_by: Option<Ticks>,
    as_of: Ticks,
) -> Vec<String> {
    let mut records = Vec::new();
    let (lo, hi) = (
        bounds.lo.div_euclid(TICKS_PER_SECOND),
        bounds.hi.div_euclid(TICKS_PER_SECOND),
    );
    for second in lo..=hi {
        for event in stream.events(second) {
            let visible = visible_by.is_none_or(|by| stream.visible_at(&event) <= by);
            if (bounds.lo..=bounds.hi).contains(&event.ticks) && visible {
                records.push(stream.render(&event, as_of, None));
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_source;

    const ALL: Bounds = Bounds {
        lo: 0,
        hi: i64::MAX,
    };

    #[test]
    fn each_resource_takes_exactly_its_documented_operators() {
        let provisioning = by_source("provisioning").unwrap();
        let exclusive = "activityDateTime gt 2026-11-30T11:59:59.9999999Z and \
                         activityDateTime lt 2026-11-30T12:00:30.0000000Z";
        let bounds = parse_filter(exclusive, ALL, provisioning, true).unwrap();
        assert_eq!(bounds.lo, parse_ticks("2026-11-30T12:00:00Z").unwrap());
        assert_eq!(
            bounds.hi,
            parse_ticks("2026-11-30T12:00:29.9999999Z").unwrap()
        );
        let inclusive = "activityDateTime ge 2026-11-30T12:00:00Z";
        assert!(
            parse_filter(inclusive, ALL, provisioning, true)
                .unwrap_err()
                .contains("operator 'ge' is not supported")
        );
        // The oracle takes any comparison.
        assert!(parse_filter(inclusive, ALL, provisioning, false).is_ok());
        let signins = by_source("signins").unwrap();
        let wrong_field = "activityDateTime ge 2026-11-30T12:00:00Z";
        assert!(parse_filter(wrong_field, ALL, signins, true).is_err());
        assert!(
            parse_filter(
                "createdDateTime gt 2026-11-30T12:00:00Z",
                ALL,
                signins,
                true
            )
            .is_err()
        );
    }

    #[test]
    fn the_beta_event_type_clause_is_taken_apart() {
        let (kind, rest) = event_type(
            "signInEventTypes/any(t: t eq 'servicePrincipal') and createdDateTime ge 2026-11-30T12:00:00Z",
        );
        assert_eq!(kind.as_deref(), Some("servicePrincipal"));
        assert_eq!(rest, "createdDateTime ge 2026-11-30T12:00:00Z");
        assert_eq!(event_type("createdDateTime ge X").0, None);
    }
}
