//! Time windows: which seconds a run exports, cut into frames (one Graph query each).
//!
//! All bounds are whole UTC seconds and both ends of a frame are inclusive, exactly as
//! in the original, whose filter reads `ge {start}.0000000Z and le {end}.9999999Z`
//! (Graph documents only eq/ge/le on signIns' createdDateTime, so never `lt`).

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
    /// The `$filter` that selects exactly this frame's sign-ins.
    pub fn filter(&self) -> String {
        format!(
            "createdDateTime ge {}.0000000Z and createdDateTime le {}.9999999Z",
            whole_second(self.start),
            whole_second(self.end)
        )
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

/// How far a stateful run reaches back and forward from its watermark.
#[derive(Debug, Clone, Copy)]
pub struct ResumeLimits {
    pub rescan: u64,
    pub max_catchup: u64,
    pub stream_frame: u64,
    pub streams: usize,
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

    /// A stateful run's window: from `rescan` seconds before the `watermark` (never
    /// before `origin`, the first run's start) to the end of the lagged window, but at
    /// most `max_catchup` seconds past the watermark. Oldest frame first.
    ///
    /// The rescan is cut into at most `streams` frames (never shorter than
    /// `stream_frame`): every frame costs at least one request of Graph's budget, and
    /// the rescanned seconds were exported before, so they need no fine cut.
    pub fn resume(
        watermark: OffsetDateTime,
        origin: OffsetDateTime,
        lagged_end: OffsetDateTime,
        limits: ResumeLimits,
    ) -> Self {
        let rescan_start = (watermark - Duration::seconds(limits.rescan as i64)).max(origin);
        let catchup_end = watermark + Duration::seconds(limits.max_catchup as i64);
        let end = lagged_end.min(catchup_end).max(watermark);
        let rescan_frame = limits
            .stream_frame
            .max(limits.rescan.div_ceil(limits.streams.max(1) as u64));
        let mut window = Window::backfill(rescan_start, watermark, rescan_frame);
        window
            .frames
            .extend(Window::backfill(watermark, end, limits.stream_frame).frames);
        window
    }

    /// Where the next run starts: past the last frame of the oldest-first run of
    /// complete frames, never behind `watermark`. `complete(i)` says whether frame `i`
    /// was fetched and written whole.
    pub fn advance(
        &self,
        watermark: OffsetDateTime,
        complete: impl Fn(usize) -> bool,
    ) -> OffsetDateTime {
        let mut order: Vec<usize> = (0..self.frames.len()).collect();
        order.sort_by_key(|&i| self.frames[i].start);
        let mut next = watermark;
        for i in order {
            if !complete(i) {
                break;
            }
            next = next.max(self.frames[i].end + SECOND);
        }
        next
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

fn whole_second(t: OffsetDateTime) -> String {
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
    fn filter_uses_only_ge_and_le_with_seven_digits() {
        let frame = Frame {
            start: datetime!(2019-08-07 22:01:44 UTC),
            end: datetime!(2019-08-07 22:01:53 UTC),
        };
        assert_eq!(
            frame.filter(),
            "createdDateTime ge 2019-08-07T22:01:44.0000000Z and \
             createdDateTime le 2019-08-07T22:01:53.9999999Z"
        );
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
    fn resume_rescans_back_to_origin_and_caps_the_catch_up() {
        let at = |s: &str| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        let limits = ResumeLimits {
            rescan: 600,
            max_catchup: 3600,
            stream_frame: 60,
            streams: 2,
        };
        // Second run, a minute after the first: the rescan stops at the origin.
        let w = Window::resume(
            at("2026-11-29T10:01:00Z"),
            at("2026-11-29T10:00:00Z"),
            at("2026-11-29T10:02:00Z"),
            limits,
        );
        assert_eq!(
            w.to_string(),
            "[2026-11-29T10:00:00Z - 2026-11-29T10:01:59Z]"
        );
        assert_eq!(w.frames.len(), 2);
        // A day behind: ten minutes of rescan, then one hour of catch-up.
        let w = Window::resume(
            at("2026-11-28T10:00:00Z"),
            at("2026-11-01T00:00:00Z"),
            at("2026-11-29T10:00:00Z"),
            limits,
        );
        assert_eq!(
            w.to_string(),
            "[2026-11-28T09:50:00Z - 2026-11-28T10:59:59Z]"
        );
        // Nothing new yet: only the rescan, in two 5-minute frames (one per stream).
        let w = Window::resume(
            at("2026-11-29T10:02:00Z"),
            at("2026-11-29T09:00:00Z"),
            at("2026-11-29T10:01:30Z"),
            limits,
        );
        assert_eq!(
            w.to_string(),
            "[2026-11-29T09:52:00Z - 2026-11-29T10:01:59Z]"
        );
        let spans: Vec<String> = w.frames.iter().map(Frame::to_string).collect();
        assert_eq!(
            spans,
            [
                "[2026-11-29T09:52:00Z - 2026-11-29T09:56:59Z]",
                "[2026-11-29T09:57:00Z - 2026-11-29T10:01:59Z]"
            ]
        );
    }

    #[test]
    fn the_watermark_stops_before_the_first_incomplete_frame() {
        let w = Window::lagged(datetime!(2026-11-29 10:05:00 UTC), 60, 3, 60);
        // Newest first: frame 2 is the oldest (10:01), frame 0 the newest (10:03).
        let mark = datetime!(2026-11-29 10:01:00 UTC);
        assert_eq!(
            w.advance(mark, |_| true),
            datetime!(2026-11-29 10:04:00 UTC)
        );
        assert_eq!(
            w.advance(mark, |i| i != 1),
            datetime!(2026-11-29 10:02:00 UTC)
        );
        assert_eq!(w.advance(mark, |i| i != 2), mark);
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
