//! Synthetic sign-ins, deterministic from (seed, rate): each whole second of Unix time
//! has its own number of records and their contents, so any window can be rendered on
//! its own and a test can ask for exactly the records a window must contain.

use std::fmt::Write;

use crate::hostile::Damage;

/// 100-nanosecond ticks since the Unix epoch: Graph's 7-digit precision.
pub type Ticks = i64;
pub const TICKS_PER_SECOND: i64 = 10_000_000;

/// One record's version: its creation (version 0) or an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The second and index the record was created at.
    pub created: i64,
    pub index: u64,
    pub version: u64,
    /// When this version was made: the time field's value.
    pub ticks: Ticks,
    /// When the record was created (its first version's `ticks`), kept so that it is
    /// not worked out again from the second's offsets for every record.
    pub created_ticks: Ticks,
}

/// The synthetic records of one seed and rate, the same on every run.
#[derive(Clone, Copy)]
pub struct Generator {
    pub seed: u64,
    pub rate: f64,
    /// Late arrivals (`--late P:S`, repeatable): each tier's share of records becomes
    /// visible only its many seconds after its createdDateTime.
    pub late: &'static [(f64, i64)],
    /// Changed records (`--changed P:S`): this share of sign-ins gains an MFA result
    /// this many seconds after its creation (same id, new content).
    pub changed: Option<(f64, i64)>,
    /// `--damage`: every 25th record broken this way.
    pub damage: Option<Damage>,
    /// `--hostile`: attacker-typed text in failed sign-ins.
    pub hostile: bool,
    /// `--ca-policies`: the tenant's enabled Conditional Access policies, each listed
    /// in every sign-in (the record size).
    pub ca_policies: u32,
    /// `--no-workload-premium`: the tenant has no Workload ID Premium licence, so
    /// service principals' risk levels and details read `hidden`.
    pub hidden_risk: bool,
}

/// splitmix64: a tiny, well-mixed hash of (seed, second, index, field).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Generator {
    pub fn hash(&self, second: i64, index: u64, field: u64) -> u64 {
        mix(mix(mix(self.seed ^ second as u64).wrapping_add(index)).wrapping_add(field))
    }

    pub fn unit(&self, second: i64, index: u64, field: u64) -> f64 {
        (self.hash(second, index, field) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// How many sign-ins second `second` has: floor(2·rate·u + v) has mean `rate`.
    pub fn count(&self, second: i64) -> u64 {
        let u = self.unit(second, u64::MAX, 1);
        let v = self.unit(second, u64::MAX, 2);
        (2.0 * self.rate * u + v).floor() as u64
    }

    /// When the `index`-th sign-in of `second`, created at `ticks`, shows up in Graph.
    pub fn visible_at(&self, second: i64, index: u64, ticks: Ticks) -> Ticks {
        let u = self.unit(second, index, 40);
        let mut below = 0.0;
        for (share, delay) in self.late {
            below += share;
            if u < below {
                return ticks + delay * TICKS_PER_SECOND;
            }
        }
        ticks
    }

    /// When the `index`-th sign-in of `second`, created at `ticks`, gains its MFA
    /// result, if it is one that changes.
    pub fn changes_at(&self, second: i64, index: u64, ticks: Ticks) -> Option<Ticks> {
        let (share, delay) = self.changed?;
        (self.unit(second, index, 41) < share).then_some(ticks + delay * TICKS_PER_SECOND)
    }

    /// The sorted sub-second offsets (ticks) of the sign-ins of `second`.
    pub fn offsets(&self, second: i64) -> Vec<i64> {
        let mut offsets: Vec<i64> = (0..self.count(second))
            .map(|i| (self.hash(second, i, 3) % TICKS_PER_SECOND as u64) as i64)
            .collect();
        offsets.sort_unstable();
        offsets
    }
}

/// A record's top-level properties, written unless `$select` leaves them out.
pub struct Record<'a> {
    pub out: String,
    pub select: Option<&'a [String]>,
}

impl Record<'_> {
    fn wanted(&self, name: &str) -> bool {
        self.select
            .is_none_or(|names| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
    }

    pub fn text(&mut self, name: &str, value: &str) {
        if self.wanted(name) {
            field(&mut self.out, name, value);
        }
    }

    pub fn raw(&mut self, name: &str, json: &str) {
        if self.wanted(name) {
            raw(&mut self.out, name, json);
        }
    }
}

/// A JSON string literal with every non-ASCII character escaped as `\uXXXX`: Graph's
/// text as a byte-exact exporter must pass it on (a re-serializer would unescape it).
pub fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn field(out: &mut String, name: &str, value: &str) {
    raw(out, name, &json_string(value));
}

pub fn raw(out: &mut String, name: &str, value: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    let _ = write!(out, "\"{name}\":{value}");
}

pub fn close(out: &mut String) {
    out.push('}');
}

/// A `location` object (a sign-in's has `altitude`); coordinates keep trailing digits a
/// re-serializer would drop, so byte-exact delivery is observable.
pub fn location(place: (&str, &str, &str, f64, f64), altitude: bool) -> String {
    let mut out = String::from("{");
    field(&mut out, "city", place.0);
    field(&mut out, "state", place.1);
    field(&mut out, "countryOrRegion", place.2);
    let altitude = if altitude { r#""altitude":null,"# } else { "" };
    raw(
        &mut out,
        "geoCoordinates",
        &format!(
            r#"{{{altitude}"latitude":{:.15},"longitude":{:.15}}}"#,
            place.3, place.4
        ),
    );
    close(&mut out);
    out
}

/// A public-looking IPv4 address drawn from `bits`.
pub fn public_ip(bits: u64) -> String {
    format!(
        "{}.{}.{}.{}",
        20 + bits % 200,
        (bits >> 8) % 256,
        (bits >> 16) % 256,
        1 + (bits >> 24) % 254
    )
}

pub fn guid(a: u64, b: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// `2026-11-29T13:57:00.1234567Z`
pub fn timestamp(ticks: Ticks) -> String {
    let second = ticks.div_euclid(TICKS_PER_SECOND);
    let fraction = ticks.rem_euclid(TICKS_PER_SECOND);
    let t = time::OffsetDateTime::from_unix_timestamp(second)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{fraction:07}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub const USERS: &[(&str, &str)] = &[
    ("adele.vance", "Adele Vance"),
    ("alex.wilber", "Alex Wilber"),
    ("zoe.muller", "Zoë Müller"),
    ("joao.silva", "João Silva"),
    ("olena.kovalenko", "Олена Коваленко"),
    ("megan.bowen", "Megan Bowen"),
    ("hiro.tanaka", "田中 博"),
    ("lee.gu", "Lee Gu"),
    ("nestor.wilke", "Nestor Wilke"),
    ("pradeep.gupta", "Pradeep Gupta"),
];

/// (city, state, countryOrRegion, latitude, longitude)
pub const PLACES: &[(&str, &str, &str, f64, f64)] = &[
    (
        "Redmond",
        "Washington",
        "US",
        47.68050003051758,
        -122.12094116210938,
    ),
    (
        "Zürich",
        "Zürich",
        "CH",
        47.37689971923828,
        8.54170036315918,
    ),
    (
        "São Paulo",
        "São Paulo",
        "BR",
        -23.55049991607666,
        -46.63330078125,
    ),
    (
        "Kyiv",
        "Kyiv City",
        "UA",
        50.45009994506836,
        30.52339935302734,
    ),
    ("Tokyo", "Tokyo", "JP", 35.68949890136719, 139.6916961669922),
    (
        "Dublin",
        "Dublin",
        "IE",
        53.34980010986328,
        -6.260300159454346,
    ),
];

/// (appId, appDisplayName)
pub const APPS: &[(&str, &str)] = &[
    ("de8bc8b5-d9f9-48b1-a8ad-b748da725064", "Graph explorer"),
    (
        "00000002-0000-0ff1-ce00-000000000000",
        "Office 365 Exchange Online",
    ),
    ("c44b4083-3bb0-49c1-b47d-974e53cbdf3c", "Azure Portal"),
    ("1fec8e78-bce4-4aaf-ab1b-5451cc387264", "Microsoft Teams"),
];
