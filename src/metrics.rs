//! Metrics of a run, in Prometheus's text exposition format: written at the end of
//! every run — also failed and interrupted ones — to `metrics_file` (the
//! node_exporter textfile collector: a temporary file in the same directory, then a
//! rename) and/or pushed to a Pushgateway at `metrics_push_url` (job `msgx_once`, one
//! group per source and queue key).
//!
//! `msgx_last_success_timestamp_seconds` moves only when the run exits 0; otherwise
//! the previous file's value is kept, 0 until a run succeeds (and a push leaves it
//! out, so the Pushgateway keeps its own). The `_total` counters of the file
//! accumulate over runs: the previous
//! file's values are read back and this run's added; pushed, they are the run's own.
//! The format is the few lines of text it takes (no client library: a run is one
//! process that prints once).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Config, PushTarget};
use crate::exit;
use crate::files;
use crate::outcome::{LATE_BUCKETS, LateAges};
use crate::report::RunReport;
use crate::transport::{HttpTransport, TransportOptions, UreqTransport};

/// One source's figures.
pub struct SourceFigures {
    pub source: &'static str,
    /// Its tenant, when the run exports several (a `tenant` label).
    pub tenant: Option<String>,
    pub queue_key: String,
    pub watermark_lag_seconds: Option<i64>,
    /// Age of the oldest second not read yet: the start of the first owed range, or
    /// the watermark.
    pub oldest_unread_age_seconds: Option<i64>,
    pub records_read: u64,
    pub records_delivered: u64,
    /// Published to a channel nobody listened on.
    pub records_unheard: u64,
    /// Delivered by a read after the first: Graph published them late.
    pub records_late: u64,
    /// Their ages when found.
    pub late_ages: LateAges,
    /// Delivered again as Microsoft changed them (`signin_updates`).
    pub records_updated: u64,
    /// Per `rescan` depth, how far its read is behind (seconds), after the last run
    /// that saved the state.
    pub rescan_behind: Vec<(u64, u64)>,
    pub frames_failed: u64,
    /// Every frame of the lane was read and written, its state saved: the lane's own
    /// success, whatever the other lanes' (a refused tenant fails only its own).
    pub succeeded: bool,
    pub requests_by_code: BTreeMap<String, u64>,
    pub throttled_seconds: f64,
}

/// What a run's metrics are made of.
pub struct RunFigures {
    pub exit_code: u8,
    pub duration: Duration,
    /// Empty when the run ended before exporting (config, token, Redis, lock).
    pub sources: Vec<SourceFigures>,
}

impl RunFigures {
    /// The figures of a run that exported at `now` (its clock: the watermark's lag is
    /// measured from it).
    pub fn of(report: &RunReport, exit_code: u8, now: time::OffsetDateTime) -> Self {
        let sources = report
            .sources
            .iter()
            .map(|s| SourceFigures {
                source: s.source.name,
                tenant: s.tenant.clone(),
                queue_key: s.queue_key.clone(),
                watermark_lag_seconds: s.watermark.map(|w| (now - w).whole_seconds()),
                oldest_unread_age_seconds: s.oldest_unread.map(|t| (now - t).whole_seconds()),
                records_read: s.frames.iter().map(|f| f.records).sum(),
                records_delivered: s.frames.iter().map(|f| f.delivered).sum(),
                records_unheard: s.frames.iter().map(|f| f.unheard).sum(),
                records_late: s.late(),
                late_ages: s.late_ages(),
                records_updated: s.frames.iter().map(|f| f.updated).sum(),
                rescan_behind: s.behind.clone(),
                frames_failed: s.failed().count() as u64,
                succeeded: s.succeeded(),
                requests_by_code: s.requests_by_code.clone(),
                throttled_seconds: s.spent.waited.as_secs_f64(),
            })
            .collect();
        RunFigures {
            exit_code,
            duration: report.elapsed,
            sources,
        }
    }
}

/// Each tenant × source's own success time.
const LANE_SUCCESS: &str = "msgx_lane_last_success_timestamp_seconds";

/// A metric family: name, type, help, samples (as written without the value, value).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, f64)>,
    /// What becomes of a series the previous file had and this run did not write.
    carried: Carried,
}

/// How a series of the previous file lives on: a series never disappears from the
/// file, whatever a run saw (a run that asked nothing, or got only errors).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Carried {
    /// A counter: the previous value, plus this run's.
    Summed,
    /// What the state says (lag, backlog): the previous value until a run knows better.
    Kept,
    /// The run's own figure: 0 when the run did not export that source.
    Zeroed,
    /// Not carried (run-wide gauges, always written).
    Never,
}

fn family(name: &'static str, kind: &'static str, help: &'static str, carried: Carried) -> Family {
    Family {
        name,
        kind,
        help,
        samples: Vec::new(),
        carried,
    }
}

impl Family {
    fn push(&mut self, labels: &[(&'static str, String)], value: f64) {
        self.samples.push((sample_key(self.name, labels), value));
    }

    /// A histogram's series: cumulative `_bucket`s by `le`, then `_sum` and `_count`.
    fn push_histogram(&mut self, labels: &[(&'static str, String)], ages: &LateAges) {
        let mut cumulative = 0;
        let bounds = LATE_BUCKETS
            .iter()
            .map(u64::to_string)
            .chain(["+Inf".into()]);
        for (le, count) in bounds.zip(ages.buckets) {
            cumulative += count;
            let mut with_le = labels.to_vec();
            with_le.push(("le", le));
            let key = sample_key(&format!("{}_bucket", self.name), &with_le);
            self.samples.push((key, cumulative as f64));
        }
        let sum = sample_key(&format!("{}_sum", self.name), labels);
        self.samples.push((sum, ages.sum));
        let count = sample_key(&format!("{}_count", self.name), labels);
        self.samples.push((count, ages.count as f64));
    }

    /// Adds what the previous file had of this family: counters summed, other series
    /// as [`Carried`] says. A counter below zero cannot be one a run wrote: it is not
    /// carried, and its key joins `dropped`.
    fn carry(&mut self, previous: &BTreeMap<String, f64>, dropped: &mut Vec<String>) {
        if self.carried == Carried::Never {
            return;
        }
        let series = |rest: &str| rest.is_empty() || rest.starts_with('{');
        let ours = |key: &str| {
            key.strip_prefix(self.name).is_some_and(|rest| {
                series(rest)
                    || (self.kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| rest.strip_prefix(suffix).is_some_and(series)))
            })
        };
        let summed = self.carried == Carried::Summed;
        let mut usable = |key: &String, value: f64| {
            let ok = !summed || value >= 0.0;
            if !ok {
                dropped.push(key.clone());
            }
            ok
        };
        for (key, value) in &mut self.samples {
            if let Some(before) = previous.get(key).copied().filter(|_| summed)
                && usable(key, before)
            {
                *value += before;
            }
        }
        let written: Vec<String> = self.samples.iter().map(|(k, _)| k.clone()).collect();
        for (key, value) in previous.iter().filter(|(k, _)| ours(k)) {
            if written.contains(key) || (summed && !usable(key, *value)) {
                continue;
            }
            let value = match self.carried {
                Carried::Zeroed => 0.0,
                _ => *value,
            };
            self.samples.push((key.clone(), value));
        }
    }
}

/// One metric family: its name, type, help, what becomes of a series a run did not
/// write, and where its samples come from.
struct Series {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    carried: Carried,
    samples: Samples,
}

/// Where a family's samples come from.
enum Samples {
    /// One unlabelled sample of the run (None: none), given the previous file's and now.
    Run(fn(&RunFigures, &BTreeMap<String, f64>, f64) -> Option<f64>),
    /// One sample per lane (None: none for that lane), given now.
    Lane(fn(&SourceFigures, f64) -> Option<f64>),
    /// Samples per lane with a label of their own: (its name, value, sample).
    LaneBy(&'static str, fn(&SourceFigures) -> Vec<(String, f64)>),
    /// A lane's late-record ages, when it read at a rescan depth.
    LateAges,
}

/// Every family the metrics hold, in the order they are written.
const SERIES: &[Series] = &[
    Series {
        name: "msgx_last_success_timestamp_seconds",
        kind: "gauge",
        help: "Unix time of the last run that exited 0.",
        carried: Carried::Never,
        samples: Samples::Run(|figures, previous, now| match figures.exit_code {
            exit::OK => Some(now.floor()),
            _ => previous.get("msgx_last_success_timestamp_seconds").copied(),
        }),
    },
    Series {
        name: "msgx_exit_code",
        kind: "gauge",
        help: "Exit code of the last run.",
        carried: Carried::Never,
        samples: Samples::Run(|figures, _, _| Some(f64::from(figures.exit_code))),
    },
    Series {
        name: "msgx_run_duration_seconds",
        kind: "gauge",
        help: "Wall time of the last run.",
        carried: Carried::Never,
        samples: Samples::Run(|figures, _, _| Some(figures.duration.as_secs_f64())),
    },
    Series {
        name: "msgx_watermark_lag_seconds",
        kind: "gauge",
        help: "Seconds from the source's watermark to now, after the last run that read it.",
        carried: Carried::Kept,
        samples: Samples::Lane(|s, _| s.watermark_lag_seconds.map(|v| v as f64)),
    },
    Series {
        name: "msgx_oldest_unread_age_seconds",
        kind: "gauge",
        help: "Age of the oldest second not read yet (owed by a failed frame, or after the \
               watermark), after the last run that read the state.",
        carried: Carried::Kept,
        samples: Samples::Lane(|s, _| s.oldest_unread_age_seconds.map(|v| v as f64)),
    },
    Series {
        name: "msgx_records_read",
        kind: "gauge",
        help: "Records the last run read from Graph.",
        carried: Carried::Zeroed,
        samples: Samples::Lane(|s, _| Some(s.records_read as f64)),
    },
    Series {
        name: "msgx_records_delivered",
        kind: "gauge",
        help: "Records the last run delivered (not delivered before).",
        carried: Carried::Zeroed,
        samples: Samples::Lane(|s, _| Some(s.records_delivered as f64)),
    },
    Series {
        name: "msgx_records_unheard",
        kind: "gauge",
        help: "Records the last run published to a channel nobody listened on.",
        carried: Carried::Zeroed,
        samples: Samples::Lane(|s, _| Some(s.records_unheard as f64)),
    },
    Series {
        name: "msgx_records_late",
        kind: "gauge",
        help: "Records the last run delivered that a read after the first found: published late.",
        carried: Carried::Zeroed,
        samples: Samples::Lane(|s, _| Some(s.records_late as f64)),
    },
    Series {
        name: "msgx_records_updated",
        kind: "gauge",
        help: "Records the last run delivered again because Microsoft changed them (signin_updates).",
        carried: Carried::Zeroed,
        samples: Samples::Lane(|s, _| Some(s.records_updated as f64)),
    },
    Series {
        name: "msgx_late_record_age_seconds",
        kind: "histogram",
        help: "Age (from the record's time) of each late record when a read after the first found it.",
        carried: Carried::Summed,
        samples: Samples::LateAges,
    },
    Series {
        name: "msgx_rescan_behind_seconds",
        kind: "gauge",
        help: "How far the read at each rescan depth is behind (0: up to date), after the last run \
               that saved the state.",
        carried: Carried::Kept,
        samples: Samples::LaneBy("depth", |s| {
            s.rescan_behind
                .iter()
                .map(|(depth, seconds)| (depth.to_string(), *seconds as f64))
                .collect()
        }),
    },
    Series {
        name: "msgx_frames_failed",
        kind: "gauge",
        help: "Frames the last run left incomplete.",
        carried: Carried::Zeroed,
        samples: Samples::Lane(|s, _| Some(s.frames_failed as f64)),
    },
    Series {
        name: LANE_SUCCESS,
        kind: "gauge",
        help: "Unix time of the last run that exported this tenant × source whole (0: none yet).",
        carried: Carried::Kept,
        samples: Samples::Lane(|s, now| s.succeeded.then_some(now.floor())),
    },
    Series {
        name: "msgx_graph_requests_total",
        kind: "counter",
        help: "Graph requests by HTTP status (error: no answer).",
        carried: Carried::Summed,
        samples: Samples::LaneBy("code", |s| {
            s.requests_by_code
                .iter()
                .map(|(code, count)| (code.clone(), *count as f64))
                .collect()
        }),
    },
    Series {
        name: "msgx_graph_throttled_seconds_total",
        kind: "counter",
        help: "Seconds requests waited for a turn or a 429's pause.",
        carried: Carried::Summed,
        samples: Samples::Lane(|s, _| Some(s.throttled_seconds)),
    },
];

/// The families of [`SERIES`] with this run's samples, and what the previous file
/// (`previous`) carries over.
fn families(
    figures: &RunFigures,
    previous: &BTreeMap<String, f64>,
    sources: &[&SourceFigures],
    dropped: &mut Vec<String>,
) -> Vec<Family> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let lanes: Vec<(&SourceFigures, Vec<(&'static str, String)>)> = sources
        .iter()
        .map(|s| (*s, lane_labels(s.tenant.as_deref(), s.source, &s.queue_key)))
        .collect();
    let mut all: Vec<Family> = SERIES
        .iter()
        .map(|series| {
            let mut family = family(series.name, series.kind, series.help, series.carried);
            match &series.samples {
                Samples::Run(value) => {
                    if let Some(value) = value(figures, previous, now) {
                        family.push(&[], value);
                    }
                }
                Samples::Lane(value) => {
                    for (lane, labels) in &lanes {
                        if let Some(value) = value(lane, now) {
                            family.push(labels, value);
                        }
                    }
                }
                Samples::LaneBy(label, values) => {
                    for (lane, labels) in &lanes {
                        for (by, value) in values(lane) {
                            let mut with = labels.clone();
                            with.push((label, by));
                            family.push(&with, value);
                        }
                    }
                }
                Samples::LateAges => {
                    for (lane, labels) in &lanes {
                        if !lane.rescan_behind.is_empty() {
                            family.push_histogram(labels, &lane.late_ages);
                        }
                    }
                }
            }
            family
        })
        .collect();
    for family in &mut all {
        family.carry(previous, dropped);
    }
    all
}

/// The labels of a tenant × source's series (`tenant` only when the run exports
/// several).
fn lane_labels(tenant: Option<&str>, source: &str, queue_key: &str) -> Vec<(&'static str, String)> {
    let lane = [("source", source), ("queue_key", queue_key)];
    tenant
        .map(|tenant| ("tenant", tenant))
        .into_iter()
        .chain(lane)
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

/// `name{label="value",…}`, as written in the file: the labels in [`LABEL_ORDER`].
fn sample_key(name: &str, labels: &[(&'static str, String)]) -> String {
    let labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), escape_label(v)))
        .collect();
    key_of(name, labels)
}

/// The order labels are written in, whatever order they were given or read in, so
/// that a series is one key: the lane's labels, then the series' own; others after,
/// by name.
const LABEL_ORDER: [&str; 6] = ["tenant", "source", "queue_key", "code", "depth", "le"];

/// `name{…}` of labels whose values are escaped already, in [`LABEL_ORDER`].
fn key_of(name: &str, mut labels: Vec<(String, String)>) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let rank = |k: &str| {
        LABEL_ORDER
            .iter()
            .position(|l| *l == k)
            .unwrap_or(LABEL_ORDER.len())
    };
    labels.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// A label value as the exposition format writes it: `\`, `"` and line feeds escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render(families: &[Family]) -> String {
    let mut text = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(text, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(text, "# TYPE {} {}", f.name, f.kind);
        for (key, value) in &f.samples {
            let _ = writeln!(text, "{key} {value}");
        }
    }
    text
}

/// The lanes the configuration names, as their labels say them: (tenant, source,
/// queue key). Only their series are carried on.
pub type LaneLabels = (Option<String>, &'static str, String);

/// The samples of a file written before, by their key ([`key_of`]: the labels in one
/// order, so a series is found however the file orders them; a sample's timestamp is
/// dropped); only the series of `lanes` and the run-wide ones. A file that is not one
/// msgx-once wrote (a line that is not a `msgx_` sample, HELP or TYPE, a value that is
/// not a finite number) is not carried at all: why, in the error.
fn read_previous(path: &Path, lanes: &[LaneLabels]) -> Result<BTreeMap<String, f64>, String> {
    let text = match files::read_text(path, files::STATE_CAP) {
        Ok(text) => text,
        Err(files::FileError::NotFound) => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("the previous file {e}")),
    };
    let mut previous = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with("# HELP msgx_") || line.starts_with("# TYPE msgx_") {
            continue;
        }
        let Some((name, labels, value)) = parse_sample(line) else {
            return Err(format!(
                "line {} of the previous file is not a sample msgx-once writes",
                number + 1
            ));
        };
        let label = |name: &str| labels.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let kept = match label("source") {
            None => true,
            Some(source) => lanes.iter().any(|(tenant, s, queue_key)| {
                *s == source.as_str()
                    && label("queue_key").map(|q| unescape(q)).as_deref() == Some(queue_key)
                    && label("tenant").map(|t| unescape(t)) == *tenant
            }),
        };
        if kept {
            previous.entry(key_of(name, labels)).or_insert(value);
        }
    }
    Ok(previous)
}

/// Label names and values (escaped as in the file).
type Labels = Vec<(String, String)>;

/// `name{label="value",…} value [timestamp]` → (name, labels with their values as
/// escaped in the file, value); None unless the name is msgx's and the value a finite
/// number.
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    if !name.starts_with("msgx_") {
        return None;
    }
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest.split_once("=\"")?;
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            // The value runs to the first `"` not escaped.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end?;
            labels.push((label.to_string(), after[..end].to_string()));
            rest = &after[end + 1..];
        }
    }
    let mut fields = rest.split_ascii_whitespace();
    let value: f64 = fields
        .next()?
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())?;
    // A timestamp (milliseconds) may follow; nothing else.
    match (fields.next(), fields.next()) {
        (None, _) => {}
        (Some(stamp), None) if stamp.parse::<i64>().is_ok() => {}
        _ => return None,
    }
    Some((name, labels, value))
}

/// A label value as read from the file, its escapes undone.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// Writes the metrics file: to a temporary file beside it, then renamed over it, so
/// the collector never reads half a file. Only a regular file is replaced (or one
/// made): a FIFO, a device or a symlink where it should be is left as it is. The
/// previous file's series are carried for `lanes`; what could not be carried is in
/// the returned notes.
pub fn write_file(
    path: &Path,
    figures: &RunFigures,
    lanes: &[LaneLabels],
) -> Result<Vec<String>, String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err("is a symlink, not a regular file: metrics not written".into());
        }
        Ok(meta) => {
            if let Some(kind) = files::kind_of(meta.file_type()) {
                return Err(format!(
                    "is {kind}, not a regular file: metrics not written"
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    let mut notes = Vec::new();
    let previous = read_previous(path, lanes).unwrap_or_else(|why| {
        notes.push(format!("{why}: replaced, nothing of it carried on"));
        BTreeMap::new()
    });
    let sources: Vec<&SourceFigures> = figures.sources.iter().collect();
    let mut dropped = Vec::new();
    let mut all = families(figures, &previous, &sources, &mut dropped);
    // A deployment that has never succeeded says so (0), so that the alert on the
    // success time fires instead of finding no series. (A push leaves it out: the
    // Pushgateway keeps its own.)
    if let Some(never) = all
        .iter_mut()
        .find(|f| f.name == "msgx_last_success_timestamp_seconds" && f.samples.is_empty())
    {
        never.push(&[], 0.0);
    }
    // So does every lane the configuration names — a tenant refused its token has no
    // figures at all — so that the per-lane alert names it.
    if let Some(lanes_family) = all.iter_mut().find(|f| f.name == LANE_SUCCESS) {
        for (tenant, source, queue_key) in lanes {
            let key = sample_key(
                LANE_SUCCESS,
                &lane_labels(tenant.as_deref(), source, queue_key),
            );
            if !lanes_family.samples.iter().any(|(k, _)| *k == key) {
                lanes_family.samples.push((key, 0.0));
            }
        }
    }
    let text = render(&all);
    if !dropped.is_empty() {
        notes.push(format!(
            "{} counters of the previous file were below zero (not what msgx-once writes): \
             counted from this run on",
            dropped.len()
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".into());
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, text).map_err(|e| e.to_string())?;
    std::fs::rename(&temporary, path)
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })
        .map_err(|e| e.to_string())?;
    Ok(notes)
}

/// Writes and pushes the metrics `config` asks for; a failure is a WARN (the export
/// itself is done; its exit code stays what it was).
pub fn publish(config: &Config, figures: &RunFigures) {
    if let Some(path) = &config.options.metrics_file {
        let lanes: Vec<LaneLabels> = config
            .sources
            .iter()
            .map(|s| (s.tenant.clone(), s.name(), s.queue_key.clone()))
            .collect();
        let notes = write_file(path, figures, &lanes).unwrap_or_else(|e| vec![e]);
        for note in notes {
            log::warn!("metrics_file {}: {note}", path.display());
        }
    }
    if let Some(target) = &config.options.metrics_push_url {
        let transport = UreqTransport::new(&TransportOptions {
            timeout: PUSH_TIMEOUT,
            connect_timeout: PUSH_TIMEOUT,
            idle_per_host: 1,
            body_limit: 1 << 20,
        });
        if let Err(e) = push(&transport, target, figures) {
            log::warn!("metrics_push_url: {e}");
        }
    }
}

/// How long a push may take: a Pushgateway is local and small.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// POSTs the metrics to a Pushgateway: one group per source and queue key (a run that
/// exported nothing pushes its run metrics to job `msgx_once` alone). POST replaces
/// only the metrics sent, so a failed run leaves the last success time as it was.
pub fn push(
    transport: &dyn HttpTransport,
    target: &PushTarget,
    figures: &RunFigures,
) -> Result<(), String> {
    // The URL holds no credentials (they are in `authorization`): safe in messages.
    let base = target.url.as_str().trim_end_matches('/');
    let mut headers = vec![("Content-Type", "text/plain; version=0.0.4")];
    if let Some(authorization) = &target.authorization {
        headers.push(("Authorization", authorization.expose()));
    }
    let mut groups: Vec<(String, Vec<&SourceFigures>)> = figures
        .sources
        .iter()
        .map(|s| {
            let group = format!(
                "{base}/metrics/job/msgx_once/source/{}/queue_key/{}",
                path_segment(s.source),
                path_segment(&s.queue_key)
            );
            (group, vec![s])
        })
        .collect();
    if groups.is_empty() {
        groups.push((format!("{base}/metrics/job/msgx_once"), Vec::new()));
    }
    for (url, sources) in groups {
        let text = render(&families(
            figures,
            &BTreeMap::new(),
            &sources,
            &mut Vec::new(),
        ));
        let response = transport
            .post_body(&url, &headers, text.as_bytes())
            .map_err(|e| format!("POST {url}: {e}"))?;
        if !(200..300).contains(&response.status) {
            return Err(format!("POST {url}: HTTP {}", response.status));
        }
    }
    Ok(())
}

/// A Pushgateway grouping value in the URL path: percent-encoded (a key may hold `/`).
fn path_segment(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(exit_code: u8) -> RunFigures {
        RunFigures {
            exit_code,
            duration: Duration::from_millis(1500),
            sources: vec![SourceFigures {
                source: "signins",
                tenant: None,
                queue_key: "q\"k".into(),
                watermark_lag_seconds: Some(120),
                oldest_unread_age_seconds: Some(120),
                records_read: 10,
                records_delivered: 9,
                records_unheard: 0,
                records_late: 1,
                late_ages: LateAges {
                    buckets: [0, 1, 0, 0, 0, 0, 0, 0],
                    sum: 420.0,
                    count: 1,
                },
                rescan_behind: vec![(600, 0), (7200, 60)],
                records_updated: 0,
                frames_failed: 0,
                succeeded: true,
                requests_by_code: BTreeMap::from([("200".to_string(), 2)]),
                throttled_seconds: 0.5,
            }],
        }
    }

    #[test]
    fn counters_accumulate_and_the_success_time_survives_failures() {
        let dir = std::env::temp_dir().join(format!("msgx-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("msgx.prom");
        let lanes = [(None, "signins", "q\"k".to_string())];
        write_file(&path, &figures(0), &lanes).unwrap();
        let first = read_previous(&path, &lanes).unwrap();
        write_file(&path, &figures(1), &lanes).unwrap();
        let second = read_previous(&path, &lanes).unwrap();
        let requests =
            "msgx_graph_requests_total{source=\"signins\",queue_key=\"q\\\"k\",code=\"200\"}";
        assert_eq!(first[requests], 2.0);
        assert_eq!(second[requests], 4.0);
        assert_eq!(
            first["msgx_last_success_timestamp_seconds"],
            second["msgx_last_success_timestamp_seconds"]
        );
        assert_eq!(second["msgx_exit_code"], 1.0);
        // The histogram is cumulative by `le`, and over runs.
        let bucket = |le: &str| {
            format!(
                "msgx_late_record_age_seconds_bucket{{source=\"signins\",queue_key=\"q\\\"k\",le=\"{le}\"}}"
            )
        };
        assert_eq!(first[&bucket("300")], 0.0);
        assert_eq!(first[&bucket("600")], 1.0);
        assert_eq!(second[&bucket("+Inf")], 2.0);
        assert_eq!(
            second["msgx_late_record_age_seconds_sum{source=\"signins\",queue_key=\"q\\\"k\"}"],
            840.0
        );
        assert_eq!(
            second["msgx_rescan_behind_seconds{source=\"signins\",queue_key=\"q\\\"k\",depth=\"7200\"}"],
            60.0
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn samples_are_read_whatever_their_label_order_and_timestamps() {
        let line = "msgx_records_read{queue_key=\"a\\\"b\",source=\"signins\"} 7 1765000000000";
        let (name, labels, value) = parse_sample(line).unwrap();
        assert_eq!(value, 7.0);
        assert_eq!(
            key_of(name, labels),
            "msgx_records_read{source=\"signins\",queue_key=\"a\\\"b\"}"
        );
        for junk in [
            "msgx_records_read NaN",
            "msgx_records_read +Inf",
            "other_metric 1",
            "msgx_records_read{source=\"x} 1",
            "msgx_records_read 1 2 3",
            "msgx_records_read{é=\"x\"} 1",
        ] {
            assert!(parse_sample(junk).is_none(), "{junk}");
        }
        assert_eq!(unescape("a\\\"b\\nc\\\\"), "a\"b\nc\\");
    }
}
