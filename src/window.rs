//! Time windows: which seconds a run exports, cut into frames (one Graph query each).
//!
//! All bounds are whole UTC seconds and both ends of a frame are inclusive, exactly as
//! in the original, whose filter reads `ge {start}.0000000Z and le {end}.9999999Z`;
//! how each source writes a frame into its `$filter` is in [`crate::sources`].

use std::fmt;

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Duration, OffsetDateTime};

const SECOND: Duration = Duration::SECOND;
const WHOLE_SECOND: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

/// Seconds `start..=end`, both whole UTC seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

impl Frame {
    /// The flags that export exactly this range again: `[--since S --until E]`.
    pub fn as_backfill(&self) -> String {
        format!(
            "[--since {} --until {}]",
            utc_second(self.start),
            utc_second(self.end_exclusive())
        )
    }

    /// The seconds from `start` to `end`, both included (`[start, end_exclusive)`
    /// given as such); None when empty.
    pub fn between(start: OffsetDateTime, end_exclusive: OffsetDateTime) -> Option<Frame> {
        (start < end_exclusive).then(|| Frame {
            start,
            end: end_exclusive - SECOND,
        })
    }

    /// How many seconds it covers.
    pub fn seconds(&self) -> u64 {
        ((self.end - self.start).whole_seconds() + 1).max(0) as u64
    }

    /// The second after its last.
    pub fn end_exclusive(&self) -> OffsetDateTime {
        self.end + SECOND
    }
}

impl fmt::Display for Frame {
    /// `[start - end]`, in a form `--since start --until end+1s` can re-export.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}Z - {}Z]",
            whole_second(self.start),
            whole_second(self.end)
        )
    }
}

/// `ranges` sorted, with overlapping and adjacent ones joined.
pub fn merge(mut ranges: Vec<Frame>) -> Vec<Frame> {
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Frame> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end + SECOND => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// The parts of `range` outside every one of `holes`.
pub fn subtract(range: Frame, holes: &[Frame]) -> Vec<Frame> {
    let mut parts = vec![range];
    for hole in holes {
        parts = parts
            .into_iter()
            .flat_map(|part| {
                let before = Frame::between(part.start, hole.start.min(part.end_exclusive()));
                let after =
                    Frame::between(hole.end_exclusive().max(part.start), part.end_exclusive());
                [before, after].into_iter().flatten()
            })
            .collect();
    }
    parts
}

/// Which read of its seconds a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pass {
    /// When the seconds become due (`now − timelag`), or catching up on them.
    First,
    /// When they are the first `rescan` depth past due, for records Graph published
    /// late.
    Second,
    /// At a deeper `rescan` depth (its index among the deeper ones), with the budget
    /// the first two reads leave.
    Deeper(u8),
}

impl Pass {
    /// A read at a deeper `rescan` depth.
    pub fn is_deep(self) -> bool {
        matches!(self, Pass::Deeper(_))
    }
}

/// The seconds a run covers, in frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub frames: Vec<Frame>,
}

impl Window {
    /// The original's lagged window: `streams` frames of `stream_frame` seconds ending
    /// `timelag + 1` seconds before `now` (truncated to the second); frame 0 is the newest.
    pub fn lagged(now: OffsetDateTime, timelag: u64, streams: usize, stream_frame: u64) -> Self {
        let now = truncate(now);
        let frame_end = now - Duration::seconds(timelag as i64) - SECOND;
        let step = Duration::seconds(stream_frame as i64);
        let frames = (0..streams as i32)
            .map(|i| Frame {
                start: frame_end + SECOND - step * (i + 1),
                end: frame_end - step * i,
            })
            .collect();
        Window { frames }
    }

    /// A backfill of `[since, until)`, oldest frame first, each `stream_frame` seconds
    /// (the last one shorter when the span does not divide evenly).
    pub fn backfill(since: OffsetDateTime, until: OffsetDateTime, stream_frame: u64) -> Self {
        let step = Duration::seconds(stream_frame as i64);
        let last = until - SECOND;
        let mut frames = Vec::new();
        let mut start = since;
        while start <= last {
            let end = (start + step - SECOND).min(last);
            frames.push(Frame { start, end });
            start = end + SECOND;
        }
        Window { frames }
    }

    /// `range` cut into at most `streams` frames of equal length, none shorter than
    /// `stream_frame` (the last may be): each frame costs at least one request of
    /// Graph's budget, and within a frame requests follow the records, so a range of N
    /// records costs at most `ceil(N / page_size) + streams` requests however long it is.
    pub fn cut(range: Frame, streams: usize, stream_frame: u64) -> Vec<Frame> {
        let seconds = range.seconds();
        let count = seconds
            .div_ceil(stream_frame.max(1))
            .clamp(1, streams.max(1) as u64);
        let step = Duration::seconds(seconds.div_ceil(count) as i64);
        Window::backfill(range.start, range.end + SECOND, step.whole_seconds() as u64).frames
    }

    /// The first second of the window.
    pub fn start(&self) -> Option<OffsetDateTime> {
        self.frames.iter().map(|f| f.start).min()
    }

    /// The last second of the window.
    pub fn end(&self) -> Option<OffsetDateTime> {
        self.frames.iter().map(|f| f.end).max()
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.start(), self.end()) {
            (Some(start), Some(end)) => Frame { start, end }.fmt(f),
            _ => f.write_str("[empty]"),
        }
    }
}

/// The exclusive end of the lagged window for `now`: where a backfill without
/// `--until` stops.
pub fn lagged_until(now: OffsetDateTime, timelag: u64) -> OffsetDateTime {
    truncate(now) - Duration::seconds(timelag as i64)
}

/// The Unix second of a Graph createdDateTime such as `2026-11-29T14:36:23.2348296Z`.
pub fn parse_created(text: &str) -> Option<i64> {
    let whole = text.get(..19)?;
    let t = time::PrimitiveDateTime::parse(whole, WHOLE_SECOND).ok()?;
    let rest = &text[19..];
    let utc = rest.ends_with('Z') || rest.ends_with("+00:00");
    utc.then(|| t.assume_utc().unix_timestamp())
}

pub fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// `2026-11-29T14:00:00Z`.
pub fn utc_second(t: OffsetDateTime) -> String {
    format!("{}Z", whole_second(t))
}

/// `2026-11-29T14:00:00`, without zone.
pub fn whole_second(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(WHOLE_SECOND)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn spans(window: &Window) -> Vec<String> {
        window.frames.iter().map(|f| f.to_string()).collect()
    }

    // The original's docstring example (`...-07T22:02:53.123`, timelag 60, 3 streams of
    // 10 s → 22:01:44-22:01:53, ...) assumes `t_now` "rounded up to a second", but its
    // code truncates (`replace(microsecond=0)`), and that is what it ran. We follow the
    // code: at 22:02:53.123 every slice is one second earlier than the docstring says;
    // at 22:02:54 (the rounded-up instant) the docstring's slices come out exactly.
    #[test]
    fn reproduces_the_originals_worked_example() {
        let example = [
            "[2019-08-07T22:01:44Z - 2019-08-07T22:01:53Z]",
            "[2019-08-07T22:01:34Z - 2019-08-07T22:01:43Z]",
            "[2019-08-07T22:01:24Z - 2019-08-07T22:01:33Z]",
        ];
        let rounded_up = Window::lagged(datetime!(2019-08-07 22:02:54 UTC), 60, 3, 10);
        assert_eq!(spans(&rounded_up), example);
        let truncated = Window::lagged(datetime!(2019-08-07 22:02:53.123 UTC), 60, 3, 10);
        assert_eq!(
            spans(&truncated),
            [
                "[2019-08-07T22:01:43Z - 2019-08-07T22:01:52Z]",
                "[2019-08-07T22:01:33Z - 2019-08-07T22:01:42Z]",
                "[2019-08-07T22:01:23Z - 2019-08-07T22:01:32Z]",
            ]
        );
    }

    #[test]
    fn default_options_cover_one_minute_ending_timelag_before_now() {
        let window = Window::lagged(datetime!(2026-11-29 14:00:00.999 UTC), 120, 2, 30);
        assert_eq!(window.start(), Some(datetime!(2026-11-29 13:57:00 UTC)));
        assert_eq!(window.end(), Some(datetime!(2026-11-29 13:57:59 UTC)));
        assert_eq!(
            lagged_until(datetime!(2026-11-29 14:00:00.999 UTC), 120),
            datetime!(2026-11-29 13:58:00 UTC)
        );
    }

    #[test]
    fn consecutive_minutes_tile_without_gap_or_overlap() {
        let first = Window::lagged(datetime!(2026-11-29 14:00:00 UTC), 120, 2, 30);
        let second = Window::lagged(datetime!(2026-11-29 14:01:00 UTC), 120, 2, 30);
        assert_eq!(second.start().unwrap(), first.end().unwrap() + SECOND);
    }

    #[test]
    fn backfill_is_half_open_and_cut_into_frames() {
        let window = Window::backfill(
            datetime!(2026-11-29 10:00:00 UTC),
            datetime!(2026-11-29 10:01:10 UTC),
            30,
        );
        assert_eq!(
            spans(&window),
            [
                "[2026-11-29T10:00:00Z - 2026-11-29T10:00:29Z]",
                "[2026-11-29T10:00:30Z - 2026-11-29T10:00:59Z]",
                "[2026-11-29T10:01:00Z - 2026-11-29T10:01:09Z]",
            ]
        );
        let one = Window::backfill(
            datetime!(2026-11-29 10:00:00 UTC),
            datetime!(2026-11-29 10:00:01 UTC),
            30,
        );
        assert_eq!(
            spans(&one),
            ["[2026-11-29T10:00:00Z - 2026-11-29T10:00:00Z]"]
        );
    }

    #[test]
    fn ranges_are_cut_into_at_most_streams_frames() {
        let at = |s: &str| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        let day = Frame::between(at("2026-11-28T00:00:00Z"), at("2026-11-29T00:00:00Z")).unwrap();
        let frames = Window::cut(day, 2, 30);
        assert_eq!(
            frames.iter().map(Frame::to_string).collect::<Vec<_>>(),
            [
                "[2026-11-28T00:00:00Z - 2026-11-28T11:59:59Z]",
                "[2026-11-28T12:00:00Z - 2026-11-28T23:59:59Z]"
            ]
        );
        let minute =
            Frame::between(at("2026-11-28T00:00:00Z"), at("2026-11-28T00:01:00Z")).unwrap();
        assert_eq!(
            Window::cut(minute, 4, 30).len(),
            2,
            "no frame under stream_frame"
        );
        let odd = Frame::between(at("2026-11-28T00:00:00Z"), at("2026-11-28T00:00:07Z")).unwrap();
        let frames = Window::cut(odd, 2, 1);
        assert_eq!(
            frames.iter().map(Frame::seconds).collect::<Vec<_>>(),
            [4, 3]
        );
    }

    #[test]
    fn ranges_merge_and_subtract() {
        let t = datetime!(2026-01-01 0:00 UTC);
        let r = |a: i64, b: i64| Frame {
            start: t + Duration::seconds(a),
            end: t + Duration::seconds(b),
        };
        assert_eq!(
            merge(vec![r(5, 9), r(0, 3), r(4, 4), r(20, 30), r(25, 26)]),
            [r(0, 9), r(20, 30)]
        );
        assert_eq!(
            subtract(r(0, 30), &[r(5, 9), r(20, 40)]),
            [r(0, 4), r(10, 19)]
        );
        assert_eq!(subtract(r(0, 3), &[r(0, 3)]), []);
        assert_eq!(r(0, 0).seconds(), 1);
    }

    #[test]
    fn created_times_are_read_to_the_second_and_only_in_utc() {
        assert_eq!(
            parse_created("2026-11-29T14:36:23.2348296Z"),
            Some(1_795_962_983)
        );
        assert_eq!(parse_created("2026-11-29T14:36:23Z"), Some(1_795_962_983));
        assert_eq!(
            parse_created("2026-11-29T14:36:23+00:00"),
            Some(1_795_962_983)
        );
        assert_eq!(parse_created("2026-11-29T14:36:23+01:00"), None);
        assert_eq!(parse_created("yesterday"), None);
        assert_eq!(parse_created("2026-11-29T14:36"), None);
    }
}
