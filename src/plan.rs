//! Which seconds a run exports: a `--since/--until` backfill, the original's lagged
//! window (stateless or first run), or — with `state auto` — a [`Plan`] from the
//! stored progress: the first reads owed and due (catching up at most `max_catchup`),
//! and the second reads owed and due. Also bounds "now" by Microsoft's clock.

use std::time::SystemTime;

use time::OffsetDateTime;

use crate::config::{Config, ConfigError, Origin};
use crate::lane::Lane;
use crate::state::{DeepRead, Progress};
pub use crate::window::Pass;
use crate::window::{self, Frame, Window};

/// The window this invocation exports: a backfill when `since` is set, otherwise the
/// original's lagged window.
pub fn plan(config: &Config, now: OffsetDateTime) -> Result<Window, ConfigError> {
    let Some(since) = config.since else {
        let lagged = Window::lagged(
            now,
            config.options.timelag,
            config.lagged_frames(),
            config.options.stream_frame,
        );
        // Several tenants share the fetchers: the same seconds, cut into each lane's
        // share of them (a first run of a fleet costs a request or two per tenant,
        // not one per stream).
        return Ok(
            match (&config.options.tenants, lagged.start(), lagged.end()) {
                (Some(_), Some(start), Some(end)) => Window {
                    frames: Window::cut(
                        Frame { start, end },
                        config.frames_per_lane(),
                        config.options.stream_frame,
                    ),
                },
                _ => lagged,
            },
        );
    };
    // Graph has nothing after now − timelag yet: a later --until stops there.
    let lagged_end = window::lagged_until(now, config.options.timelag);
    let until = config
        .until
        .map_or(lagged_end, |until| until.min(lagged_end));
    if since >= until {
        return Err(ConfigError::new(
            "since",
            Origin::Cli,
            format!(
                "not before what Graph can have yet ({}: now minus timelag)",
                window::utc_second(lagged_end)
            ),
            "a time before now minus timelag",
        ));
    }
    // Cut by streams, not by the clock: within a frame requests follow the records.
    let frames = Frame::between(since, until)
        .map(|range| Window::cut(range, config.backfill_frames(), config.options.stream_frame))
        .unwrap_or_default();
    Ok(Window { frames })
}

/// A WARN when the backfill's `--until` lies past what Graph can have at `now` (its
/// clock minus `timelag`): the backfill stops there, and the rest is named for later.
pub fn warn_if_until_ahead(config: &Config, now: OffsetDateTime) {
    let lagged_end = window::lagged_until(now, config.options.timelag);
    let Some(until) = config.until.filter(|until| *until > lagged_end) else {
        return;
    };
    let (end, until) = (window::utc_second(lagged_end), window::utc_second(until));
    log::warn!(
        "--until {until} is after what Graph can have yet ({end}: Microsoft's clock minus \
         timelag): this backfill stops there; export the rest later with --since {end} \
         --until {until}"
    );
}

/// How far the host clock may be from Microsoft's before a run says so.
const MAX_SKEW: time::Duration = time::Duration::minutes(1);

/// `now`, never ahead of `server_now` (the identity platform's `Date`), so a host
/// clock that jumped forward cannot move the watermark past what Graph can have. A
/// skew over a minute either way is logged.
pub fn bound_by_server(now: OffsetDateTime, server_now: Option<SystemTime>) -> OffsetDateTime {
    let Some(date) = server_now.map(OffsetDateTime::from) else {
        return now;
    };
    let skew = now - date;
    if skew.abs() > MAX_SKEW {
        let (seconds, way) = match skew.is_positive() {
            true => (skew.whole_seconds(), "ahead of"),
            false => (-skew.whole_seconds(), "behind"),
        };
        log::warn!(
            "the host clock ({}) is {seconds} s {way} Microsoft's (Date of the token endpoint, {}): \
             the window ends by the earlier of the two; fix the host's time sync",
            window::utc_second(now),
            window::utc_second(date)
        );
    }
    // `Date` has whole seconds: Microsoft's clock may be up to a second later.
    match date.checked_add(time::Duration::SECOND) {
        Some(server) => window::truncate(now.min(server)),
        None => now,
    }
}

/// A stateful run's frames, oldest first, and where its reads leave the progress.
#[derive(Debug, Clone)]
pub struct Plan {
    pub window: Window,
    /// The pass of each frame of `window`.
    pub passes: Vec<Pass>,
    /// The watermark once every first-pass frame is read or owed.
    first_end: OffsetDateTime,
    /// Seconds before this need no second read after the run (read twice, or read
    /// first when they were already `rescan` past due).
    second_end: OffsetDateTime,
    /// The same for each deeper read: (depth, frontier after the run).
    deeper_ends: Vec<(u64, OffsetDateTime)>,
    /// Seconds this run reads for the first time that no run read before: its new data.
    new_seconds: u64,
}

/// Most owed ranges kept: beyond it the nearest are joined (a few seconds read again,
/// none lost), so the state stays small whatever fails.
const MAX_OWED: usize = 64;

impl Plan {
    /// A first run: the original's lagged window, all first reads.
    pub fn first_run(config: &Config, now: OffsetDateTime, window: Window) -> Self {
        let lagged_end = window::lagged_until(now, config.options.timelag);
        let first_end = window
            .end()
            .map_or(lagged_end, |end| end + time::Duration::SECOND);
        let new_seconds = window.frames.iter().map(Frame::seconds).sum();
        Plan {
            passes: vec![Pass::First; window.frames.len()],
            window,
            first_end,
            second_end: second_end(lagged_end, config.rescan(), first_end),
            deeper_ends: config
                .deeper_rescans()
                .iter()
                .map(|&depth| (depth, second_end(lagged_end, depth, first_end)))
                .collect(),
            new_seconds,
        }
    }

    /// Seconds this run reads for the first time that no run read before.
    pub fn new_seconds(&self) -> u64 {
        self.new_seconds
    }

    /// A later run: the first reads owed and those now due (at most `max_catchup`
    /// past the watermark), and the second reads owed and now due, each range cut into
    /// at most `streams` frames.
    pub fn resume(
        config: &Config,
        source: &Lane,
        now: OffsetDateTime,
        progress: &Progress,
    ) -> Self {
        let lagged_end = window::lagged_until(now, config.options.timelag);
        let progress = within_retention(progress, now);
        let watermark = progress.watermark;
        // Checked: a watermark from a damaged state may sit near the end of time.
        let catchup_end = watermark
            .checked_add(time::Duration::seconds(config.options.max_catchup as i64))
            .unwrap_or(lagged_end);
        let first_end = lagged_end.min(catchup_end).max(watermark);
        let behind = (lagged_end - watermark).whole_seconds();
        if behind > config.options.max_catchup as i64 {
            log::warn!(
                "{behind} s behind (watermark {watermark}): this run catches up {} s, oldest first",
                config.options.max_catchup
            );
        }
        let mut first = progress.owed_first.clone();
        first.extend(Frame::between(watermark, first_end));
        let mut second = progress.owed_second.clone();
        if config.rescan() > 0 {
            let due = (lagged_end - seconds(config.rescan())).min(watermark);
            second.extend(Frame::between(progress.rescanned, due));
        }
        // Seconds still owed their first read get it now, not a second one.
        let second: Vec<Frame> = window::merge(second)
            .into_iter()
            .flat_map(|range| window::subtract(range, &progress.owed_first))
            .collect();
        let mut frames: Vec<(Frame, Pass)> = Vec::new();
        // What this run reads again, for the deeper reads: a second it reads at an age
        // past a depth needs no read at that depth (after an outage, say).
        let mut read_again = second.clone();
        for (ranges, pass) in [(window::merge(first), Pass::First), (second, Pass::Second)] {
            for range in ranges {
                let cut = Window::cut(range, source.frames_per_range, config.options.stream_frame);
                frames.extend(cut.into_iter().map(|frame| (frame, pass)));
            }
        }
        let mut deeper_ends = Vec::new();
        for (k, &depth) in config.deeper_rescans().iter().enumerate() {
            let older = lagged_end - seconds(depth);
            let covered: Vec<Frame> = read_again
                .iter()
                .filter_map(|r| Frame::between(r.start, r.end_exclusive().min(older)))
                .collect();
            let (ranges, end) =
                deeper_reads(&progress, depth, lagged_end, &covered, source.spec.name);
            read_again.extend(ranges.iter().copied());
            // Requests follow the records: one frame a range is enough for a read
            // that only collects what came late.
            frames.extend(
                ranges
                    .into_iter()
                    .map(|range| (range, Pass::Deeper(k as u8))),
            );
            // Seconds this run reads first past the depth need no read at it.
            deeper_ends.push((depth, end.max(second_end(lagged_end, depth, first_end))));
        }
        frames.sort_by_key(|(frame, _)| frame.start);
        Plan {
            window: Window {
                frames: frames.iter().map(|(frame, _)| *frame).collect(),
            },
            passes: frames.iter().map(|(_, pass)| *pass).collect(),
            first_end,
            second_end: second_end(lagged_end, config.rescan(), first_end).max(progress.rescanned),
            deeper_ends,
            new_seconds: (first_end - watermark).whole_seconds().max(0) as u64,
        }
    }

    /// The progress after this run: the frontiers moved to where the plan reaches, and
    /// what is `unfinished` of each frame (nothing: read whole) owed to a later run.
    pub fn after<'a>(
        &self,
        progress: &Progress,
        unfinished: impl Fn(usize) -> &'a [Frame],
    ) -> Progress {
        let owed = |pass: Pass| {
            let ranges: Vec<Frame> = (0..self.window.frames.len())
                .filter(|&i| self.passes[i] == pass)
                .flat_map(|i| unfinished(i).iter().copied())
                .collect();
            cap(window::merge(ranges))
        };
        let deeper = self
            .deeper_ends
            .iter()
            .enumerate()
            .map(|(k, &(depth, end))| {
                let before = progress.deeper.iter().find(|d| d.depth == depth);
                // Seconds before the origin were never read: no depth reads them.
                let frontier = before.map_or(end, |d| end.max(d.frontier));
                DeepRead {
                    depth,
                    frontier: frontier.max(progress.origin),
                    owed: owed(Pass::Deeper(k as u8)),
                }
            })
            .collect();
        Progress {
            watermark: self.first_end.max(progress.watermark),
            origin: progress.origin,
            rescanned: self.second_end.max(progress.rescanned),
            owed_first: owed(Pass::First),
            owed_second: owed(Pass::Second),
            deeper,
        }
    }
}

fn seconds(n: u64) -> time::Duration {
    time::Duration::seconds(n as i64)
}

/// What the read at `depth` must still read of `source` (owed, and newly due, less what
/// this run reads `covered` at an age past it), and where its frontier stands once that
/// is read. A depth added to a running deployment starts with the seconds now due at
/// it; seconds more than its own length behind are dropped for it, with a WARN naming
/// them.
fn deeper_reads(
    progress: &Progress,
    depth: u64,
    lagged_end: OffsetDateTime,
    covered: &[Frame],
    source: &str,
) -> (Vec<Frame>, OffsetDateTime) {
    let due = (lagged_end - seconds(depth)).min(progress.watermark);
    let known = progress.deeper.iter().find(|d| d.depth == depth);
    let frontier = known.map_or(due.max(progress.origin), |d| d.frontier);
    let mut ranges = known.map(|d| d.owed.clone()).unwrap_or_default();
    ranges.extend(Frame::between(frontier, due));
    // Seconds still owed their first read get it now, not a deeper one; seconds a
    // shallower read reads now past this depth need it no more.
    let mut holes = progress.owed_first.clone();
    holes.extend(covered.iter().copied());
    let holes = window::merge(holes);
    let ranges: Vec<Frame> = window::merge(ranges)
        .into_iter()
        .flat_map(|range| window::subtract(range, &holes))
        .collect();
    let limit = lagged_end - seconds(2 * depth);
    let dropped: Vec<Frame> = ranges
        .iter()
        .filter_map(|r| Frame::between(r.start, r.end_exclusive().min(limit)))
        .collect();
    if !dropped.is_empty() {
        let shown: Vec<String> = dropped.iter().take(8).map(Frame::as_backfill).collect();
        log::warn!(
            "{source}: the read at rescan depth {depth} s fell more than {depth} s behind: \
             {} s get no read at that depth — {}{}; Graph's budget does not leave \
             room for it: lower that depth, export fewer sources, or backfill those ranges",
            dropped.iter().map(Frame::seconds).sum::<u64>(),
            shown.join(" "),
            if dropped.len() > 8 { " …" } else { "" }
        );
    }
    let kept = ranges
        .iter()
        .filter_map(|r| Frame::between(r.start.max(limit), r.end_exclusive()))
        .collect();
    (kept, due.max(frontier))
}

/// Where the second pass stands once the first pass reached `first_end`: seconds more
/// than `rescan` past due need no second read.
fn second_end(
    lagged_end: OffsetDateTime,
    rescan: u64,
    first_end: OffsetDateTime,
) -> OffsetDateTime {
    if rescan == 0 {
        return first_end;
    }
    (lagged_end - time::Duration::seconds(rescan as i64)).min(first_end)
}

/// `progress` without what Graph no longer keeps (30 days), with a WARN if that cut
/// anything: it is gone.
fn within_retention(progress: &Progress, now: OffsetDateTime) -> Progress {
    let deeper_kept = |oldest: OffsetDateTime, keep: &dyn Fn(&[Frame]) -> Vec<Frame>| {
        progress
            .deeper
            .iter()
            .map(|d| DeepRead {
                depth: d.depth,
                frontier: d.frontier.max(oldest),
                owed: keep(&d.owed),
            })
            .collect::<Vec<_>>()
    };
    let oldest = window::truncate(now - crate::sources::RETENTION);
    if progress.floor() < oldest {
        log::warn!(
            "state reaches back to {} — older than Graph's 30-day retention: sign-ins before {oldest} are gone",
            progress.floor()
        );
    }
    let keep = |ranges: &[Frame]| -> Vec<Frame> {
        ranges
            .iter()
            .filter_map(|r| Frame::between(r.start.max(oldest), r.end_exclusive()))
            .collect()
    };
    Progress {
        watermark: progress.watermark.max(oldest),
        origin: progress.origin.max(oldest),
        rescanned: progress.rescanned.max(oldest),
        owed_first: keep(&progress.owed_first),
        owed_second: keep(&progress.owed_second),
        deeper: deeper_kept(oldest, &keep),
    }
}

/// At most [`MAX_OWED`] ranges: the two nearest are joined until it fits.
fn cap(mut ranges: Vec<Frame>) -> Vec<Frame> {
    while ranges.len() > MAX_OWED {
        let nearest = (1..ranges.len())
            .min_by_key(|&i| ranges[i].start - ranges[i - 1].end)
            .unwrap_or(1);
        ranges[nearest - 1].end = ranges[nearest].end;
        ranges.remove(nearest);
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_config;
    use std::time::Duration;
    use time::macros::datetime;

    #[test]
    fn microsofts_clock_bounds_now_and_a_broken_date_is_harmless() {
        let now = datetime!(2026-11-30 12:00:00 UTC);
        let ahead =
            SystemTime::UNIX_EPOCH + Duration::from_secs(now.unix_timestamp() as u64 - 3600);
        assert_eq!(
            bound_by_server(now, Some(ahead)),
            now - time::Duration::seconds(3599)
        );
        let end_of_time = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
        assert_eq!(bound_by_server(now, Some(end_of_time)), now);
        assert_eq!(bound_by_server(now, None), now);
    }

    #[test]
    fn a_steady_minute_reads_the_new_minute_and_the_one_rescan_old() {
        let now = datetime!(2026-11-30 12:00:00 UTC);
        let at = |s: i64| now - time::Duration::seconds(s);
        // Last run a minute ago: due up to now − 180 s; second reads up to 780 s ago.
        let progress = Progress {
            watermark: at(180),
            origin: at(3600),
            rescanned: at(780),
            owed_first: Vec::new(),
            owed_second: Vec::new(),
            deeper: Vec::new(),
        };
        let config = test_config(&[]);
        let plan = Plan::resume(&config, &config.sources[0], now, &progress);
        let spans: Vec<(String, Pass)> = plan
            .window
            .frames
            .iter()
            .map(Frame::to_string)
            .zip(plan.passes.iter().copied())
            .collect();
        assert_eq!(
            spans,
            [
                (
                    "[2026-11-30T11:47:00Z - 2026-11-30T11:47:29Z]".into(),
                    Pass::Second
                ),
                (
                    "[2026-11-30T11:47:30Z - 2026-11-30T11:47:59Z]".into(),
                    Pass::Second
                ),
                (
                    "[2026-11-30T11:57:00Z - 2026-11-30T11:57:29Z]".into(),
                    Pass::First
                ),
                (
                    "[2026-11-30T11:57:30Z - 2026-11-30T11:57:59Z]".into(),
                    Pass::First
                ),
            ]
        );
        // The second frame of each pass fails having written down to 11:57:40.
        let failed = [Frame {
            start: at(150),
            end: at(140),
        }];
        let next = plan.after(&progress, |i| match i {
            3 => &failed,
            _ => &[],
        });
        assert_eq!(next.watermark, at(120));
        assert_eq!(next.rescanned, at(720));
        assert_eq!(
            next.owed_first,
            [Frame {
                start: at(150),
                end: at(140)
            }]
        );
        assert!(next.owed_second.is_empty());
    }

    #[test]
    fn after_an_outage_the_late_second_reads_serve_the_deeper_depths_too() {
        let now = datetime!(2026-11-30 12:00:00 UTC);
        let at = |s: i64| now - time::Duration::seconds(s);
        // Runs stopped 25 minutes ago (watermark 11:33), every read then up to date.
        let progress = Progress {
            watermark: at(1620),
            origin: at(7200),
            rescanned: at(2220),
            owed_first: Vec::new(),
            owed_second: Vec::new(),
            deeper: vec![DeepRead {
                depth: 1200,
                frontier: at(2820),
                owed: Vec::new(),
            }],
        };
        let config = test_config(&["--rescan", "600,1200"]);
        let plan = Plan::resume(&config, &config.sources[0], now, &progress);
        // The read at 1,200 s is due for 11:13–11:33. The second reads of 11:23–11:33
        // come now, past 1,200 s: they serve it. Of the rest, 11:13–11:18 is more than
        // 1,200 s behind it (dropped, with a WARN); 11:18–11:23 is read.
        let deep: Vec<Frame> = plan
            .window
            .frames
            .iter()
            .zip(&plan.passes)
            .filter(|(_, pass)| pass.is_deep())
            .map(|(frame, _)| *frame)
            .collect();
        assert_eq!(
            deep,
            [Frame {
                start: at(2520),
                end: at(2220) - time::Duration::SECOND,
            }]
        );
        // The first reads of 11:33–11:38 come past 1,200 s too: the frontier is 11:38.
        let next = plan.after(&progress, |_| &[]);
        assert_eq!(next.deeper[0].frontier, at(1320));
        assert!(next.deeper[0].owed.is_empty());
    }

    #[test]
    fn a_watermark_at_the_end_of_time_plans_without_overflow() {
        let now = datetime!(2026-11-30 12:00:00 UTC);
        let end = datetime!(9999-12-31 23:59:59 UTC);
        let progress = Progress::starting_at(end);
        let config = test_config(&[]);
        assert!(
            Plan::resume(&config, &config.sources[0], now, &progress)
                .window
                .frames
                .is_empty()
        );
    }
}
