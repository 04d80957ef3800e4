//! The slice of OData the sign-ins endpoint speaks: `$filter` on createdDateTime with
//! ge/le/eq, newest-first paging with an opaque `$skiptoken`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::generator::{Generator, TICKS_PER_SECOND, Ticks};

/// Inclusive tick bounds of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub lo: Ticks,
    pub hi: Ticks,
}

/// Parses `createdDateTime ge T and createdDateTime le T` (any order, eq too, optional
/// parentheses). Graph documents only eq/ge/le for this field; anything else is refused
/// the way Graph refuses it.
pub fn parse_filter(filter: &str, default: Bounds) -> Result<Bounds, String> {
    let cleaned = filter.replace(['(', ')'], " ");
    let tokens: Vec<&str> = cleaned.split_whitespace().collect();
    let mut bounds = default;
    for (i, clause) in tokens.split(|t| t.eq_ignore_ascii_case("and")).enumerate() {
        let [field, op, value] = clause else {
            return Err(format!("Invalid filter clause {}", i + 1));
        };
        if !field.eq_ignore_ascii_case("createdDateTime") {
            return Err(format!(
                "Invalid filter clause: unsupported property '{field}'"
            ));
        }
        let ticks = parse_ticks(value)?;
        match op.to_ascii_lowercase().as_str() {
            "ge" => bounds.lo = bounds.lo.max(ticks),
            "le" => bounds.hi = bounds.hi.min(ticks),
            "eq" => {
                bounds.lo = bounds.lo.max(ticks);
                bounds.hi = bounds.hi.min(ticks);
            }
            other => {
                return Err(format!(
                    "Invalid filter clause: operator '{other}' is not supported on createdDateTime"
                ));
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
}

/// One page of up to `top` records in `bounds` that are visible at `now`, newest
/// first, starting at `cursor`; returns the records and where the next page starts
/// (None when done).
pub fn page(generator: &Generator, query: &PageQuery) -> (Vec<String>, Option<Cursor>) {
    let PageQuery {
        bounds,
        cursor,
        top,
        now,
        select,
    } = *query;
    let mut records = Vec::with_capacity(top.min(1000));
    let lo_second = bounds.lo.div_euclid(TICKS_PER_SECOND);
    let start = cursor.unwrap_or(Cursor {
        second: bounds.hi.div_euclid(TICKS_PER_SECOND),
        below: u64::MAX,
    });
    let mut second = start.second;
    while second >= lo_second {
        let offsets = generator.offsets(second);
        let mut index = if second == start.second {
            start.below.min(offsets.len() as u64)
        } else {
            offsets.len() as u64
        };
        while index > 0 {
            index -= 1;
            let ticks = second * TICKS_PER_SECOND + offsets[index as usize];
            if ticks > bounds.hi {
                continue;
            }
            if ticks < bounds.lo {
                return (records, None);
            }
            if generator.visible_at(second, index, ticks) > now {
                continue;
            }
            records.push(generator.render(second, index, ticks, select));
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

/// Every record in `bounds` (visible by `visible_by`, if given), oldest first: the
/// oracle tests compare exports against.
pub fn all(generator: &Generator, bounds: Bounds, visible_by: Option<Ticks>) -> Vec<String> {
    let mut records = Vec::new();
    let (lo, hi) = (
        bounds.lo.div_euclid(TICKS_PER_SECOND),
        bounds.hi.div_euclid(TICKS_PER_SECOND),
    );
    for second in lo..=hi {
        for (index, offset) in generator.offsets(second).into_iter().enumerate() {
            let ticks = second * TICKS_PER_SECOND + offset;
            let visible =
                visible_by.is_none_or(|by| generator.visible_at(second, index as u64, ticks) <= by);
            if (bounds.lo..=bounds.hi).contains(&ticks) && visible {
                records.push(generator.render(second, index as u64, ticks, None));
            }
        }
    }
    records
}
