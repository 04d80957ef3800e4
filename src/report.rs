//! What a run did, as the summary and the metrics tell it: per source its window,
//! frames, the budget it spent, where its progress stands and what is left unread;
//! for the run its exit code.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::error::{Error, GraphError};
use crate::exit;
use crate::graph::BudgetSpent;
use crate::outcome::{FrameFailure, FrameOutcome, LateAges};
use crate::sources::SourceSpec;
use crate::window::{self, Frame, Pass, Window};

/// What one source's export did.
pub struct SourceReport {
    pub source: &'static SourceSpec,
    /// Its tenant, when the run exports several.
    pub tenant: Option<String>,
    /// Where its records went.
    pub queue_key: String,
    pub window: Window,
    pub frames: Vec<FrameOutcome>,
    /// Where the next run starts, when this run keeps state.
    pub watermark: Option<OffsetDateTime>,
    /// The oldest second still to be read the first time after this run (owed, or the
    /// watermark), when this run keeps state.
    pub oldest_unread: Option<OffsetDateTime>,
    /// The watermark could not be saved, or the state was lost.
    pub state_error: Option<Error>,
    /// Graph's budget this source spent.
    pub spent: BudgetSpent,
    /// Its requests by HTTP status (`error`: no answer).
    pub requests_by_code: BTreeMap<String, u64>,
    /// After this run, how far each read again (by `rescan` depth) is behind, in
    /// seconds, when this run keeps state.
    pub behind: Vec<(u64, u64)>,
}

pub struct RunReport {
    /// One per tenant × source exported, in the order of `tenants` and `sources`.
    pub sources: Vec<SourceReport>,
    /// Tenants the identity platform refused a first token (each said at ERROR).
    pub refused_tenants: Vec<String>,
    /// Tenant × sources another run holds the lock of (left to it).
    pub locked: Vec<String>,
    /// Tenant × sources whose state could not be read (not exported).
    pub unread_state: Vec<String>,
    pub elapsed: Duration,
    /// The exit code a SIGTERM/SIGINT asked for.
    pub interrupted: Option<u8>,
}

/// Unread ranges named one by one in the summary; more are counted.
const RANGES_SHOWN: usize = 8;

impl SourceReport {
    /// What the summary calls it (its tenant's name first, with several tenants).
    pub fn label(&self) -> String {
        crate::sources::label(self.tenant.as_deref(), self.source)
    }

    pub fn failed(&self) -> impl Iterator<Item = &FrameOutcome> {
        self.frames.iter().filter(|f| f.failed())
    }

    /// Every frame read and written and the progress saved: this lane's own outcome.
    pub fn succeeded(&self) -> bool {
        self.failed().next().is_none() && self.state_error.is_none()
    }

    /// Records a read after the first delivered: Graph published them late.
    pub fn late(&self) -> u64 {
        self.frames.iter().map(FrameOutcome::late).sum()
    }

    /// The ages of the late records when found.
    pub fn late_ages(&self) -> LateAges {
        let mut ages = LateAges::default();
        for frame in &self.frames {
            ages.merge(&frame.late_ages);
        }
        ages
    }

    /// The summary's figures of this source: window, frames, records, budget,
    /// watermark and what is left unread.
    fn figures(&self, elapsed: Duration) -> Vec<(&'static str, String)> {
        let mut fields = totals(&self.frames, &self.spent, elapsed);
        fields.insert(0, ("window", self.window.to_string()));
        if let Some(watermark) = self.watermark {
            fields.push(("watermark", window::utc_second(watermark)));
        }
        // With deeper reads, where each read again stands (`600:0,7200:340`).
        if self.behind.len() > 1 {
            let behind: Vec<String> = self
                .behind
                .iter()
                .map(|(depth, seconds)| format!("{depth}:{seconds}"))
                .collect();
            fields.push(("rescan_behind", behind.join(",")));
        }
        let unread = self.unread();
        if !unread.is_empty() {
            let mut shown: Vec<String> = unread
                .iter()
                .take(RANGES_SHOWN)
                .map(Frame::as_backfill)
                .collect();
            if unread.len() > RANGES_SHOWN {
                shown.push(format!("and {} more", unread.len() - RANGES_SHOWN));
            }
            if self.watermark.is_some() {
                shown.push("(owed: the next run reads them)".into());
            }
            fields.push(("unread", shown.join(" ")));
        }
        fields
    }

    /// Says how much the deadline left unread, how far behind that is, and what to
    /// change, when it ended the run.
    pub(crate) fn warn_if_cut_short(
        &self,
        deadline: Duration,
        lagged_end: OffsetDateTime,
        name_sources: bool,
    ) {
        let cut = self.failed().any(|f| {
            matches!(
                f.failure,
                Some(FrameFailure::Fetch(GraphError::Deadline { .. }))
            )
        });
        let paused = self.failed().find_map(|f| match &f.failure {
            Some(FrameFailure::Fetch(GraphError::Paused { key, left, by, .. })) => {
                Some((key, left, by))
            }
            _ => None,
        });
        let unread = self.unread();
        let Some(oldest) = unread.first() else {
            return;
        };
        let seconds: u64 = unread.iter().map(Frame::seconds).sum();
        let deadline = deadline.as_secs();
        let what = if name_sources || !self.source.is_sign_ins() {
            format!("{} records", self.label())
        } else {
            "sign-ins".to_string()
        };
        if let Some((key, left, by)) = paused {
            let next = match self.watermark {
                Some(_) => "the next run reads them first",
                None => "export the unread ranges of the summary again once it lifts",
            };
            log::warn!(
                "the request budget shared with other processes is paused for {:.0} s more \
                 ({key}, set by {by}), past this run's deadline ({deadline} s): {seconds} s of \
                 {what} unread; {next}; if no 429 of yours set it, delete {key}",
                left.as_secs_f64()
            );
            return;
        }
        if !cut {
            return;
        }
        if self.watermark.is_some() {
            log::warn!(
                "the deadline ({deadline} s) ended this run with {seconds} s of {what} unread, \
                 the oldest at {} ({} s behind): the next run reads them first; if runs keep \
                 ending this way, raise deadline, lower rescan or max_catchup, or run less often",
                window::utc_second(oldest.start),
                (lagged_end - oldest.start).whole_seconds()
            );
        } else {
            log::warn!(
                "the deadline ({deadline} s) ended this run with {seconds} s of {what} unread: \
                 export the unread ranges of the summary again, without --deadline"
            );
        }
    }

    /// What the failed frames of the first two reads left unread, as few contiguous
    /// ranges as can be (a deeper read's unfinished seconds were read twice already:
    /// they are owed at its depth, and counted in `rescan_behind`).
    pub fn unread(&self) -> Vec<Frame> {
        window::merge(
            self.frames
                .iter()
                .filter(|f| !matches!(f.pass, Pass::Deeper(_)))
                .flat_map(|f| f.unfinished.iter().copied())
                .collect(),
        )
    }
}

/// The share of what the deepest read reads that, found new there, says records are
/// still arriving that late (and so, probably, later).
const STILL_ARRIVING: f64 = 0.01;

/// The depth a WARN suggests adding when records still arrive at the deepest read:
/// Microsoft's documented tail (two hours for risky and MFA sign-ins), or twice the
/// deepest one past it.
fn deeper_suggestion(deepest: u64) -> u64 {
    match deepest {
        ..7200 => 7200,
        _ => (2 * deepest).min(7 * 86_400),
    }
}

impl RunReport {
    pub fn failed(&self) -> impl Iterator<Item = &FrameOutcome> {
        self.sources.iter().flat_map(SourceReport::failed)
    }

    /// One WARN when the deepest read of `depths` (the `rescan` list) found more than
    /// [`STILL_ARRIVING`] of what it read new: records are still arriving at that
    /// depth, so some probably arrive after it and are never read. Names the setting.
    pub fn warn_if_still_arriving(&self, depths: &[u64], name_sources: bool) {
        let Some(&deepest) = depths.last() else {
            return;
        };
        let pass = match depths.len() {
            1 => Pass::Second,
            n => Pass::Deeper((n - 2) as u8),
        };
        let mut found = Vec::new();
        for source in &self.sources {
            let at_depth = source.frames.iter().filter(|f| f.pass == pass);
            let (read, late) = at_depth.fold((0, 0), |(read, late), f| {
                (read + f.records, late + f.late())
            });
            if late > 0 && late as f64 > STILL_ARRIVING * read as f64 {
                let what = match name_sources {
                    true => format!("{} ", source.label()),
                    false => String::new(),
                };
                found.push(format!(
                    "{what}{late} of {read} ({:.1} %)",
                    100.0 * late as f64 / read as f64
                ));
            }
        }
        if found.is_empty() {
            return;
        }
        let mut longer: Vec<String> = depths.iter().map(u64::to_string).collect();
        let advice = match depths.len() {
            4 => format!("raise the deepest rescan depth (now {deepest} s)"),
            _ => {
                longer.push(deeper_suggestion(deepest).to_string());
                format!("read deeper: rescan {} (GRAPH_RESCAN)", longer.join(","))
            }
        };
        log::warn!(
            "records are still arriving at the deepest read (rescan depth {deepest} s): it \
             found {} of what it read new, so some probably arrive after it and are never \
             exported; {advice}",
            found.join(", ")
        );
    }

    pub fn exit_code(&self) -> u8 {
        let frames = || self.sources.iter().flat_map(|s| &s.frames);
        if let Some(code) = self.interrupted {
            code
        } else if frames().any(FrameOutcome::auth_refused) || !self.refused_tenants.is_empty() {
            exit::AUTH
        } else if self.failed().next().is_some()
            || self.sources.iter().any(|s| s.state_error.is_some())
            || !self.unread_state.is_empty()
        {
            exit::INCOMPLETE
        } else {
            exit::OK
        }
    }

    /// The run's last log lines: with one source the original's one `summary:` line;
    /// with several, one `summary of {source}:` line each, then the `summary:` line
    /// with the run's totals. Each line also comes as fields (for JSON logs).
    pub fn summary(&self) -> Vec<Summary> {
        if let [only] = self.sources.as_slice()
            && !self.several_tenants()
        {
            let ok = self.exit_code() == exit::OK;
            return vec![Summary::new("summary:", only.figures(self.elapsed), ok)];
        }
        let mut lines: Vec<Summary> = self
            .sources
            .iter()
            .map(|s| {
                let mut summary = Summary::new(
                    &format!("summary of {}:", s.label()),
                    s.figures(self.elapsed),
                    s.succeeded(),
                );
                summary
                    .fields
                    .insert(0, ("source", s.source.name.to_string()));
                if let Some(tenant) = &s.tenant {
                    summary.fields.insert(0, ("tenant", tenant.clone()));
                }
                summary
            })
            .collect();
        let frames: Vec<FrameOutcome> = self
            .sources
            .iter()
            .flat_map(|s| s.frames.iter().cloned())
            .collect();
        let spent: BudgetSpent = self.sources.iter().map(|s| s.spent).sum();
        let mut fields = totals(&frames, &spent, self.elapsed);
        // With several tenants, `sources` counts the streams and `lanes` the tenant ×
        // source pairs exported.
        let mut names: Vec<&str> = self.sources.iter().map(|s| s.source.name).collect();
        names.sort_unstable();
        names.dedup();
        fields.insert(0, ("sources", names.len().to_string()));
        if self.several_tenants() {
            fields.insert(1, ("lanes", self.sources.len().to_string()));
            let mut tenants: Vec<&str> = self
                .sources
                .iter()
                .filter_map(|s| s.tenant.as_deref())
                .chain(self.refused_tenants.iter().map(String::as_str))
                .collect();
            tenants.sort_unstable();
            tenants.dedup();
            fields.insert(0, ("tenants", tenants.len().to_string()));
        }
        let incomplete: Vec<String> = self
            .sources
            .iter()
            .filter(|s| s.failed().next().is_some() || s.state_error.is_some())
            .map(|s| s.label())
            .chain(self.unread_state.iter().cloned())
            .map(|label| label.replace(' ', "/"))
            .collect();
        if !incomplete.is_empty() {
            fields.push(("incomplete", incomplete.join(",")));
        }
        let failed = self.failed_tenants();
        if !failed.is_empty() {
            fields.push(("failed_tenants", failed.join(",")));
        }
        if !self.locked.is_empty() {
            let locked: Vec<String> = self.locked.iter().map(|l| l.replace(' ', "/")).collect();
            fields.push(("locked", locked.join(",")));
        }
        lines.push(Summary::new(
            "summary:",
            fields,
            self.exit_code() == exit::OK,
        ));
        lines
    }
}

impl RunReport {
    /// The run exported `tenants` (a lane of it has a tenant, or a tenant was refused).
    fn several_tenants(&self) -> bool {
        self.sources.iter().any(|s| s.tenant.is_some()) || !self.refused_tenants.is_empty()
    }

    /// Tenants refused a token (in the order of `tenants`), then those refused a
    /// source (403: consent, permission, licence).
    pub fn failed_tenants(&self) -> Vec<String> {
        let mut failed = self.refused_tenants.clone();
        for source in &self.sources {
            if let Some(tenant) = &source.tenant
                && source.frames.iter().any(FrameOutcome::auth_refused)
                && !failed.contains(tenant)
            {
                failed.push(tenant.clone());
            }
        }
        failed
    }
}

/// One summary line: its text, and its figures as fields.
pub struct Summary {
    pub text: String,
    pub fields: Vec<(&'static str, String)>,
    /// What it summarises went well: logged at INFO, else at ERROR — a lane at the
    /// level of its own outcome, the run's totals at the run's.
    pub ok: bool,
}

impl Summary {
    /// `title` and the fields as `label value` pairs, e.g. `frames ok 2 failed 0`;
    /// `ok`: what it summarises went well.
    fn new(title: &str, fields: Vec<(&'static str, String)>, ok: bool) -> Self {
        let label = |key: &'static str| match key {
            "frames_ok" => "frames ok",
            "frames_failed" => "failed",
            other => other,
        };
        let mut text = title.to_string();
        for (key, value) in fields.iter().filter(|(key, _)| *key != "source") {
            text.push_str(&format!(" {} {value}", label(key)));
        }
        Summary { text, fields, ok }
    }
}

/// The figures every summary line has: frames, pages, records, the budget spent and
/// the run's seconds (`unkeyed` only when some records had no usable id).
fn totals(
    frames: &[FrameOutcome],
    spent: &BudgetSpent,
    elapsed: Duration,
) -> Vec<(&'static str, String)> {
    let failed = frames.iter().filter(|f| f.failed()).count();
    let deferred = frames.iter().filter(|f| f.deferred()).count();
    let sum = |figure: fn(&FrameOutcome) -> u64| frames.iter().map(figure).sum::<u64>();
    let mut fields = vec![
        ("frames_ok", (frames.len() - failed - deferred).to_string()),
        ("frames_failed", failed.to_string()),
        ("pages", sum(|f| f.pages).to_string()),
        ("records", sum(|f| f.records).to_string()),
        ("delivered", sum(|f| f.delivered).to_string()),
        ("requests", spent.requests.to_string()),
        ("throttled", spent.throttled.to_string()),
        ("retries", spent.retries.to_string()),
        ("waited", format!("{:.1}", spent.waited.as_secs_f64())),
        (
            "waited_app",
            format!("{:.1}", spent.waited_app.as_secs_f64()),
        ),
        ("seconds", format!("{:.3}", elapsed.as_secs_f64())),
    ];
    // Which budget the waiting was for: said only when the app's across tenants
    // held requests back (a run of one tenant keeps today's summary otherwise).
    if spent.waited_app < Duration::from_millis(50) {
        fields.retain(|(key, _)| *key != "waited_app");
    }
    // Late records can only be told with state: a run without it reads each second once.
    if frames.iter().any(|f| f.pass != Pass::First) {
        fields.push(("late", sum(FrameOutcome::late).to_string()));
    }
    if deferred > 0 {
        fields.push(("deferred", deferred.to_string()));
    }
    let unkeyed = sum(|f| f.unkeyed);
    if unkeyed > 0 {
        fields.push(("unkeyed", unkeyed.to_string()));
    }
    let updated = sum(|f| f.updated);
    if updated > 0 {
        fields.push(("updated", updated.to_string()));
    }
    let unheard = sum(|f| f.unheard);
    if unheard > 0 {
        fields.push(("unheard", unheard.to_string()));
    }
    fields
}

/// One ERROR per failed frame, with what it had written (a refused one's refusal was
/// said when it came).
pub(crate) fn log_failures<'a>(frames: impl Iterator<Item = &'a FrameOutcome>, name_sources: bool) {
    let mut deferred = Vec::new();
    for outcome in frames {
        if outcome.deferred() {
            deferred.push(outcome);
            continue;
        }
        // A refusal (403, a refused token) was said once, at ERROR, with what to do,
        // when it halted its lane: its frames are named in the summary's unread ranges.
        if outcome.auth_refused() {
            continue;
        }
        if let Some(failure) = &outcome.failure {
            log::error!(
                "{}frame {} incomplete ({} pages, {} records written): {failure}",
                crate::sources::log_prefix(outcome.tenant.as_deref(), outcome.source, name_sources),
                outcome.frame,
                outcome.pages,
                outcome.records
            );
        }
    }
    if let Some(first) = deferred.first() {
        log::info!(
            "{} deeper-read frames deferred (the first {}{}): the budget this run leaves to \
             deeper reads is spent; they are owed at their depth, and a later run reads them",
            deferred.len(),
            crate::sources::log_prefix(first.tenant.as_deref(), first.source, name_sources),
            first.frame
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SinkError;

    fn at(second: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(second).unwrap()
    }

    fn frame(start: i64, end: i64) -> Frame {
        Frame {
            start: at(start),
            end: at(end),
        }
    }

    fn outcome(pass: Pass, failure: Option<FrameFailure>, unfinished: Vec<Frame>) -> FrameOutcome {
        FrameOutcome {
            source: crate::sources::sign_ins(),
            tenant: None,
            frame: frame(0, 59),
            pass,
            late_ages: LateAges::default(),
            pages: 1,
            records: 10,
            delivered: 10,
            unkeyed: 0,
            unheard: 0,
            updated: 0,
            failure,
            unfinished,
        }
    }

    fn lane(frames: Vec<FrameOutcome>) -> SourceReport {
        SourceReport {
            source: crate::sources::sign_ins(),
            tenant: None,
            queue_key: "q".into(),
            window: Window {
                frames: frames.iter().map(|f| f.frame).collect(),
            },
            frames,
            watermark: None,
            oldest_unread: None,
            state_error: None,
            spent: BudgetSpent::default(),
            requests_by_code: BTreeMap::new(),
            behind: Vec::new(),
        }
    }

    fn run(sources: Vec<SourceReport>) -> RunReport {
        RunReport {
            sources,
            refused_tenants: Vec::new(),
            locked: Vec::new(),
            unread_state: Vec::new(),
            elapsed: Duration::from_secs(1),
            interrupted: None,
        }
    }

    fn write_failed() -> Option<FrameFailure> {
        Some(FrameFailure::Write(SinkError {
            target: "redis".into(),
            message: "refused".into(),
        }))
    }

    #[test]
    fn the_exit_code_says_the_worst_that_happened() {
        assert_eq!(
            run(vec![lane(vec![outcome(Pass::First, None, vec![])])]).exit_code(),
            exit::OK
        );
        // A deferred deeper read is not a failure.
        let deferred = outcome(
            Pass::Deeper(0),
            Some(FrameFailure::Deferred),
            vec![frame(0, 59)],
        );
        assert_eq!(run(vec![lane(vec![deferred])]).exit_code(), exit::OK);
        let failed = run(vec![lane(vec![outcome(
            Pass::First,
            write_failed(),
            vec![],
        )])]);
        assert_eq!(failed.exit_code(), exit::INCOMPLETE);
        let mut refused = run(vec![lane(vec![])]);
        refused.refused_tenants.push("t".into());
        assert_eq!(refused.exit_code(), exit::AUTH);
        let mut interrupted = failed;
        interrupted.interrupted = Some(130);
        assert_eq!(interrupted.exit_code(), 130);
    }

    #[test]
    fn unread_ranges_join_the_first_two_reads_and_leave_deeper_ones_to_their_depth() {
        let report = lane(vec![
            outcome(
                Pass::First,
                write_failed(),
                vec![frame(0, 9), frame(30, 39)],
            ),
            outcome(Pass::Second, write_failed(), vec![frame(10, 19)]),
            outcome(Pass::Deeper(0), write_failed(), vec![frame(20, 29)]),
        ]);
        assert_eq!(report.unread(), [frame(0, 19), frame(30, 39)]);
        assert!(!report.succeeded());
    }

    #[test]
    fn the_summary_names_what_is_unread_as_a_backfill_reads_it() {
        let report = run(vec![lane(vec![outcome(
            Pass::First,
            write_failed(),
            vec![frame(1_796_702_928, 1_796_702_987)],
        )])]);
        let summary = report.summary();
        let line = &summary[0].text;
        assert!(
            line.contains("unread [--since 2026-12-08T04:08:48Z --until 2026-12-08T04:09:48Z]"),
            "{line}"
        );
        assert!(!summary[0].ok);
    }
}
