//! Typed parsers for option values. Each returns what it accepts on failure, so the
//! caller can say which option, from which source, and what would have been valid.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Backend, Output, PushTarget, QueueType, StateMode};
pub use crate::auth::AssertionAlg;
use crate::format::{FORMATS, RecordFormat};
use crate::logging::LogFormat;
use crate::redis_client::{RedisTarget, SentinelTarget};
use crate::secret::Secret;
use crate::sources::{self, Bucket, SourceSpec};

pub fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("true or false (also yes/no, on/off, 1/0)".into()),
    }
}

pub fn integer(value: &str, min: u64, max: u64) -> Result<u64, String> {
    let accepted = || format!("a whole number from {min} to {max}");
    let number: u64 = value.trim().parse().map_err(|_| accepted())?;
    if (min..=max).contains(&number) {
        Ok(number)
    } else {
        Err(accepted())
    }
}

/// An option with a default always has a value: `reader` reads it.
pub fn given<T>(
    reader: impl Fn(&str) -> Result<T, String>,
) -> impl Fn(Option<&str>) -> Result<T, String> {
    move |value| reader(value.unwrap_or_default())
}

/// An option without a default: None when not given anywhere.
pub fn optional<T>(
    reader: impl Fn(&str) -> Result<T, String>,
) -> impl Fn(Option<&str>) -> Result<Option<T>, String> {
    move |value| value.map(&reader).transpose()
}

pub fn non_empty(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err("a non-empty string".to_string())
    } else {
        Ok(value.to_string())
    }
}

pub fn path(value: &str) -> Result<PathBuf, String> {
    non_empty(value).map(PathBuf::from)
}

pub fn output(value: &str) -> Result<Output, String> {
    non_empty(value).map(|p| match p.as_str() {
        "-" => Output::Stdout,
        _ => Output::Path(PathBuf::from(p)),
    })
}

pub fn backend(value: &str) -> Result<Backend, String> {
    let names: Vec<(&str, Backend)> = crate::sink::BACKENDS
        .iter()
        .map(|b| (b.name, b.backend))
        .collect();
    named(value, &names)
}

pub fn queue_type(value: &str) -> Result<QueueType, String> {
    named(
        value,
        &[
            ("list", QueueType::List),
            ("channel", QueueType::Channel),
            ("stream", QueueType::Stream),
        ],
    )
}

pub fn record_format(value: &str) -> Result<RecordFormat, String> {
    let table: Vec<(&str, RecordFormat)> = FORMATS.iter().map(|f| (f.name, f.format)).collect();
    named(value, &table)
}

pub fn state_mode(value: &str) -> Result<StateMode, String> {
    named(value, &[("auto", StateMode::Auto), ("off", StateMode::Off)])
}

/// `shard`: `i/K`, or `K` alone (the index from `JOB_COMPLETION_INDEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardOption {
    pub index: Option<u32>,
    pub count: u32,
}

pub fn shard(value: &str) -> Result<ShardOption, String> {
    let accepted = || {
        format!(
            "i/K (shard i of K, 0 <= i < K <= {}) or K alone (i from JOB_COMPLETION_INDEX, \
             as a Kubernetes Indexed Job sets it)",
            crate::shard::MAX_SHARDS
        )
    };
    let number = |v: &str| -> Result<u32, String> {
        match v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() {
            true => v.parse().map_err(|_| accepted()),
            false => Err(accepted()),
        }
    };
    let (index, count) = match value.split_once('/') {
        Some((index, count)) => (Some(number(index)?), number(count)?),
        None => (None, number(value)?),
    };
    if !(1..=crate::shard::MAX_SHARDS).contains(&count) || index.is_some_and(|i| i >= count) {
        return Err(accepted());
    }
    Ok(ShardOption { index, count })
}

pub fn assertion_alg(value: &str) -> Result<AssertionAlg, String> {
    named(
        value,
        &[
            ("ps256", AssertionAlg::Ps256),
            ("rs256", AssertionAlg::Rs256),
        ],
    )
}

/// A Microsoft cloud: its identity platform and Graph hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Global,
    UsGov,
    UsGovDod,
    China,
}

impl Cloud {
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::UsGov => "usgov",
            Cloud::UsGovDod => "usgov_dod",
            Cloud::China => "china",
        }
    }

    /// (login host, Graph host), from Microsoft's national-cloud tables.
    pub fn hosts(self) -> (&'static str, &'static str) {
        match self {
            Cloud::Global => (
                "https://login.microsoftonline.com",
                "https://graph.microsoft.com",
            ),
            Cloud::UsGov => (
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us",
            ),
            Cloud::UsGovDod => (
                "https://login.microsoftonline.us",
                "https://dod-graph.microsoft.us",
            ),
            Cloud::China => (
                "https://login.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
            ),
        }
    }
}

pub fn cloud(value: &str) -> Result<Cloud, String> {
    named(
        value,
        &[
            ("global", Cloud::Global),
            ("usgov", Cloud::UsGov),
            ("usgov_dod", Cloud::UsGovDod),
            ("china", Cloud::China),
        ],
    )
}

/// A backfill bound as given: a time, or an age resolved against the run's "now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    At(OffsetDateTime),
    /// `-24h`: this long before now (whole seconds).
    Ago(time::Duration),
}

impl Moment {
    pub fn resolve(self, now: OffsetDateTime) -> OffsetDateTime {
        match self {
            Moment::At(t) => t,
            Moment::Ago(age) => crate::window::truncate(now) - age,
        }
    }
}

/// A backfill bound: an RFC 3339 time on a whole second, a date (midnight UTC), or an
/// age before now: `-90m`, `-24h`, `-2d`, `-3600s`.
pub fn moment(value: &str) -> Result<Moment, String> {
    let accepted = "an RFC 3339 time on a whole second (2026-11-29T13:00:00Z), a date \
                    (2026-11-29, midnight UTC) or an age (-90m, -24h, -2d)";
    let value = value.trim();
    if let Some(age) = value.strip_prefix('-') {
        // The unit is the last character, whatever its width in bytes: outside text
        // may hold any character.
        let Some(unit) = age.chars().last() else {
            return Err(accepted.into());
        };
        let number = &age[..age.len() - unit.len_utf8()];
        let seconds = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(accepted.into()),
        };
        let number: i64 = number.parse().map_err(|_| accepted.to_string())?;
        return match number.checked_mul(seconds) {
            Some(s) if number > 0 && s <= 365 * 86_400 => {
                Ok(Moment::Ago(time::Duration::seconds(s)))
            }
            _ => Err(accepted.into()),
        };
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(value, date_format) {
        return Ok(Moment::At(date.midnight().assume_utc()));
    }
    timestamp(value)
        .map(Moment::At)
        .map_err(|_| accepted.into())
}

/// `rescan`: the depths at which each second is read again, in seconds, comma-separated
/// (`600`, `600,7200`), sorted and each once; `0` for none.
pub fn rescan(value: &str) -> Result<Vec<u64>, String> {
    let accepted = || {
        "seconds from 1 to 604800, comma-separated and each once (600 or 600,7200; YAML: a \
         list), at most 4, or 0 for no second read"
            .to_string()
    };
    if value.trim() == "0" {
        return Ok(Vec::new());
    }
    let mut depths = Vec::new();
    for part in value.split(',') {
        let depth = integer(part, 1, 7 * 86_400).map_err(|_| accepted())?;
        if depths.contains(&depth) {
            return Err(accepted());
        }
        depths.push(depth);
    }
    if depths.len() > 4 {
        return Err(accepted());
    }
    depths.sort_unstable();
    Ok(depths)
}

/// `N/SECONDS` (N requests per SECONDS) or `0` for no limit.
pub fn rate_limit(value: &str) -> Result<Option<(u32, Duration)>, String> {
    window_limit(value).map(|limit| limit.map(|(n, s)| (n, Duration::from_secs(s))))
}

fn window_limit(value: &str) -> Result<Option<(u32, u64)>, String> {
    let accepted = || {
        "N/SECONDS with N and SECONDS from 1 to 100000 (e.g. 5/10), or 0 for no limit".to_string()
    };
    let value = value.trim();
    if value == "0" {
        return Ok(None);
    }
    let (requests, seconds) = value.split_once('/').ok_or_else(accepted)?;
    let requests = integer(requests, 1, 100_000).map_err(|_| accepted())?;
    let seconds = integer(seconds, 1, 100_000).map_err(|_| accepted())?;
    Ok(Some((requests as u32, seconds)))
}

/// `$select`: a comma-separated list of sign-in property names. `id` and
/// `createdDateTime` are always added: deduplication and the windows need them.
pub fn select(value: &str) -> Result<Vec<String>, String> {
    let accepted = || {
        "a comma-separated list of sign-in property names (letters, digits, _), e.g. userPrincipalName,ipAddress,status".to_string()
    };
    let mut names = vec!["id".to_string(), "createdDateTime".to_string()];
    for name in value.split(',').map(str::trim) {
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(accepted());
        }
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// `sources`: comma-separated source names, each at most once.
pub fn sources(value: &str) -> Result<Vec<&'static SourceSpec>, String> {
    let accepted = || format!("a comma-separated list of {}", sources::names());
    let mut chosen: Vec<&'static SourceSpec> = Vec::new();
    for name in value.split(',').map(str::trim) {
        let source = sources::named(name).ok_or_else(|| match nearest_source(name) {
            Some(meant) => format!("{} ({name}: did you mean {meant}?)", accepted()),
            None => accepted(),
        })?;
        if chosen.contains(&source) {
            return Err(format!("{} (each once; {name} is repeated)", accepted()));
        }
        chosen.push(source);
    }
    Ok(chosen)
}

/// The source `typed` most likely meant: the one it contains or is contained in, or
/// the one a letter or two away.
fn nearest_source(typed: &str) -> Option<&'static str> {
    if typed.len() < 3 {
        return None;
    }
    let typed = typed.to_ascii_lowercase();
    let names = sources::SOURCES.iter().map(|s| s.name);
    let close = |name: &str| super::spec::distance(&typed, name) <= 2;
    names.clone().find(|name| close(name)).or_else(|| {
        names
            .filter(|name| name.contains(typed.as_str()) || typed.contains(name))
            .max_by_key(|name| name.len())
    })
}

/// `NAME=VALUE,NAME=VALUE`: a map given on the command line or in the environment
/// (a config file may also give a YAML mapping, which is read into this form).
pub fn pairs(value: &str) -> Option<Vec<(&str, &str)>> {
    // No pairs at all is the empty map; an empty element (`,`, `a=b,`) is a typo.
    if value.trim().is_empty() {
        return Some(Vec::new());
    }
    value
        .split(',')
        .map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim(), value.trim()))
        })
        .collect()
}

/// `queue_keys`: `SOURCE=KEY,…`, every source named at most once and every key
/// non-empty.
pub fn queue_keys(value: &str) -> Result<BTreeMap<&'static str, String>, String> {
    let accepted = || {
        format!(
            "SOURCE=KEY pairs, comma-separated (YAML: a mapping), SOURCE one of {}",
            sources::names()
        )
    };
    let mut keys = BTreeMap::new();
    for (name, key) in pairs(value).ok_or_else(accepted)? {
        let source = sources::named(name).ok_or_else(accepted)?;
        if key.is_empty() || keys.insert(source.name, key.to_string()).is_some() {
            return Err(accepted());
        }
    }
    Ok(keys)
}

/// `rate_limits`: `BUCKET=N/SECONDS,…` for the buckets other than reports (whose limit
/// is `rate_limit`).
pub fn rate_limits(value: &str) -> Result<BTreeMap<Bucket, Option<(u32, Duration)>>, String> {
    let accepted = || {
        "BUCKET=N/SECONDS pairs (or BUCKET=0 for no limit), comma-separated (YAML: a mapping), \
         BUCKET identity_protection or security (reports is set by rate_limit)"
            .to_string()
    };
    let mut limits = BTreeMap::new();
    for (name, limit) in pairs(value).ok_or_else(accepted)? {
        let bucket = Bucket::named(name)
            .filter(|b| *b != Bucket::Reports)
            .ok_or_else(accepted)?;
        let limit = rate_limit(limit).map_err(|_| accepted())?;
        if limits.insert(bucket, limit).is_some() {
            return Err(accepted());
        }
    }
    Ok(limits)
}

/// The value of `table` that `value` names (case-insensitive): each name maps to its
/// own value, so a new name without a row is refused rather than read as another.
pub fn named<T: Copy>(value: &str, table: &[(&str, T)]) -> Result<T, String> {
    let names: Vec<&str> = table.iter().map(|(name, _)| *name).collect();
    let chosen = choice(value, &names)?;
    table
        .iter()
        .find(|(name, _)| *name == chosen)
        .map(|(_, value)| *value)
        .ok_or_else(|| format!("one of {}", names.join(", ")))
}

pub fn choice<'a>(value: &str, choices: &[&'a str]) -> Result<&'a str, String> {
    let wanted = value.trim().to_ascii_lowercase();
    choices
        .iter()
        .copied()
        .find(|c| *c == wanted)
        .ok_or_else(|| format!("one of {}", choices.join(", ")))
}

/// An RFC 3339 timestamp on a whole second: frames are cut on whole seconds, so a
/// fraction could not be honoured exactly.
pub fn timestamp(value: &str) -> Result<OffsetDateTime, String> {
    let accepted = "an RFC 3339 timestamp on a whole second, e.g. 2026-11-29T13:00:00Z";
    let parsed = OffsetDateTime::parse(value.trim(), &Rfc3339).map_err(|_| accepted.to_string())?;
    if parsed.nanosecond() != 0 {
        return Err(accepted.into());
    }
    Ok(parsed.to_offset(time::UtcOffset::UTC))
}

/// An http(s) origin such as `https://graph.microsoft.com`; returned without a trailing
/// slash so paths can be appended.
pub fn origin(value: &str) -> Result<url::Url, String> {
    let accepted = "an http:// or https:// URL of a host, e.g. https://graph.microsoft.com";
    let url = url::Url::parse(value.trim()).map_err(|_| accepted.to_string())?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && (url.path() == "/" || url.path().is_empty());
    if plain { Ok(url) } else { Err(accepted.into()) }
}

/// `redis_cluster`: `host:port` seed nodes, comma-separated.
pub fn nodes(value: &str) -> Result<Vec<String>, String> {
    let accepted = || "host:port seed nodes, comma-separated (YAML: a list)".to_string();
    value
        .split(',')
        .map(str::trim)
        .map(|node| {
            let (host, port) = node.rsplit_once(':').ok_or_else(accepted)?;
            port.parse::<u16>().map_err(|_| accepted())?;
            (!host.is_empty())
                .then(|| node.to_string())
                .ok_or_else(accepted)
        })
        .collect()
}

/// A Pushgateway's base URL (http or https, perhaps with a path prefix). A
/// `user:password@` in it is taken out of the URL and sent as basic auth, as
/// Pushgateway's `--web.config.file` expects; both are percent-decoded first.
pub fn push_url(value: &str) -> Result<PushTarget, String> {
    let accepted = "an http:// or https:// URL of a Pushgateway, e.g. http://pushgateway:9091 \
                    (http://user:password@pushgateway:9091 behind basic auth)";
    let mut url = url::Url::parse(value.trim()).map_err(|_| accepted.to_string())?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.query().is_none()
        && url.fragment().is_none();
    if !plain {
        return Err(accepted.into());
    }
    let decode = |part: &str| {
        url::form_urlencoded::parse(format!("v={}", part.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let user = decode(url.username());
    let password = url.password().map(decode);
    let authorization = (!user.is_empty() || password.is_some()).then(|| {
        let pair = format!("{user}:{}", password.unwrap_or_default());
        Secret::new(format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair)
        ))
    });
    let stripped = url.set_username("").is_ok() && url.set_password(None).is_ok();
    if !stripped {
        return Err(accepted.into());
    }
    Ok(PushTarget { url, authorization })
}

/// A tenant as Graph takes it in the token URL: a GUID or a domain name.
pub fn tenant(value: &str) -> Result<String, String> {
    // It names a path segment of the token URL and, through `{tenant}`, files and
    // keys: `.`, `..` or an empty label must never get that far.
    let label = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let labels: Vec<&str> = value.split('.').collect();
    let domain = labels.len() >= 2 && labels.iter().all(|l| label(l));
    if crate::ids::is_guid(value) || domain {
        Ok(value.to_string())
    } else {
        Err(TENANT_ACCEPTED.into())
    }
}

/// What `tenant` accepts.
const TENANT_ACCEPTED: &str = "a tenant GUID or domain name (letters, digits and '-' in labels joined by single dots, \
     at least one dot, e.g. contoso.onmicrosoft.com)";

/// `tenants`: tenant GUIDs or domain names, comma-separated, each once.
pub fn tenants(value: &str) -> Result<Vec<String>, String> {
    let accepted = || format!("{TENANT_ACCEPTED}, comma-separated and each once (YAML: a list)");
    let mut chosen: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim) {
        let name = tenant(name).map_err(|_| accepted())?;
        if chosen.iter().any(|t| t.eq_ignore_ascii_case(&name)) {
            return Err(format!("{} ({name} is repeated)", accepted()));
        }
        chosen.push(name);
    }
    Ok(chosen)
}

pub fn log_format(value: &str) -> Result<LogFormat, String> {
    named(
        value,
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    )
}

pub fn log_level(value: &str) -> Result<log::LevelFilter, String> {
    let name = choice(value, &["error", "warn", "info", "debug", "trace"])?;
    name.parse()
        .map_err(|_| "error, warn, info, debug or trace".into())
}

/// `redis_url`: a Redis URL (see [`redis_url`]) or a Sentinel deployment,
/// `redis+sentinel://[:password@]host1:port1,host2:port2/master_name[/db]`.
pub fn redis_target(value: &str) -> Result<RedisTarget, String> {
    let Some(rest) = value.trim().strip_prefix("redis+sentinel://") else {
        return redis_url(value).map(RedisTarget::new);
    };
    let accepted =
        || "redis+sentinel://[:password@]host1:port1[,host2:port2…]/master_name[/db]".to_string();
    let (password, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => {
            let password = userinfo.strip_prefix(':').unwrap_or(userinfo);
            let password = url::form_urlencoded::parse(format!("p={password}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            (Some(Secret::new(password)).filter(|p| !p.is_empty()), rest)
        }
        None => (None, rest),
    };
    let mut parts = rest.split('/');
    let hosts = parts.next().unwrap_or_default();
    let master = parts
        .next()
        .filter(|m| !m.is_empty())
        .ok_or_else(accepted)?;
    let db = match parts.next() {
        None | Some("") => 0,
        Some(db) => db.parse::<u16>().map_err(|_| accepted())?.into(),
    };
    let sentinels: Vec<String> = hosts
        .split(',')
        .map(|host| {
            let (name, port) = host.rsplit_once(':').ok_or_else(accepted)?;
            port.parse::<u16>().map_err(|_| accepted())?;
            (!name.is_empty())
                .then(|| host.to_string())
                .ok_or_else(accepted)
        })
        .collect::<Result<_, _>>()?;
    if parts.next().is_some() {
        return Err(accepted());
    }
    Ok(RedisTarget::sentinel(SentinelTarget {
        sentinels,
        master: master.to_string(),
        db,
        password,
    }))
}

/// A Redis URL in redis-py's forms, normalised for the redis crate: redis-py reads the
/// database from `?db=N` (which wins) or from the path; the redis crate only from the path.
pub fn redis_url(value: &str) -> Result<url::Url, String> {
    let accepted = "redis://[:password@]host[:port][/db][?db=N] or rediss://…";
    // A password with `#`, `/` or `?` ends the URL's host part early: the URL does not
    // parse, or names another host. Said as such (the value itself is never shown).
    let unencoded = || {
        let rest = value.trim().split_once("://")?.1;
        let (userinfo, _) = rest.rsplit_once('@')?;
        userinfo.contains(['#', '/', '?']).then(|| {
            "the user or password holds '#', '/' or '?', which end a URL's host part: \
             percent-encode them (# as %23, / as %2F, ? as %3F), as in \
             redis://user:p%23ss@host:6379/0"
                .to_string()
        })
    };
    let refused = || unencoded().unwrap_or_else(|| accepted.to_string());
    let mut url = url::Url::parse(value.trim()).map_err(|_| refused())?;
    if !matches!(url.scheme(), "redis" | "rediss") || url.host_str().is_none_or(str::is_empty) {
        return Err(refused());
    }
    let db_query = url
        .query_pairs()
        .find(|(k, _)| k == "db")
        .map(|(_, v)| v.into_owned());
    let db = match db_query {
        Some(db) => db,
        None => url.path().trim_matches('/').to_string(),
    };
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(format!("{accepted} (the database must be a number)"));
    }
    let others: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "db")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    if !others.is_empty() {
        url.query_pairs_mut().extend_pairs(others);
    }
    let db = if db.is_empty() { "0".to_string() } else { db };
    url.set_path(&format!("/{db}"));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_in_every_documented_form() {
        let cases = [
            ("redis://localhost:6379?db=0", "redis://localhost:6379/0"),
            ("redis://localhost:6379?db=3", "redis://localhost:6379/3"),
            ("redis://h:1/0", "redis://h:1/0"),
            ("redis://h:1/5?db=2", "redis://h:1/2"),
            ("redis://:pa%40ss@h", "redis://:pa%40ss@h/0"),
            ("rediss://h:6380", "rediss://h:6380/0"),
        ];
        for (given, normalised) in cases {
            assert_eq!(redis_url(given).unwrap().as_str(), normalised, "{given}");
        }
        for bad in ["http://h", "redis://", "redis://h?db=x", "not a url"] {
            assert!(redis_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sentinel_urls_name_sentinels_master_and_database() {
        let target =
            redis_target("redis+sentinel://:p%40ss@10.0.0.1:26379,10.0.0.2:26379/mymaster/2")
                .unwrap();
        let sentinel = target.sentinels().unwrap();
        assert_eq!(sentinel.sentinels, ["10.0.0.1:26379", "10.0.0.2:26379"]);
        assert_eq!(sentinel.master, "mymaster");
        assert_eq!(sentinel.db, 2);
        assert_eq!(sentinel.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(
            target.location(),
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/2"
        );
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h/m",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h:1/m/x",
        ] {
            assert!(redis_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_limits() {
        assert_eq!(rate_limit("5/10"), Ok(Some((5, Duration::from_secs(10)))));
        assert_eq!(rate_limit("0"), Ok(None));
        for bad in ["5", "0/10", "5/0", "a/b", "5/10/2"] {
            assert!(rate_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integers_are_range_checked() {
        assert_eq!(integer("1000", 1, 1000), Ok(1000));
        assert_eq!(
            integer("1001", 1, 1000),
            Err("a whole number from 1 to 1000".into())
        );
        assert!(integer("-1", 0, 5).is_err());
        assert!(integer("2.5", 0, 5).is_err());
    }

    #[test]
    fn timestamps_must_be_whole_seconds() {
        assert!(timestamp("2026-11-29T13:00:00Z").is_ok());
        assert!(timestamp("2026-11-29T15:00:00+02:00").is_ok());
        assert!(timestamp("2026-11-29T13:00:00.5Z").is_err());
        assert!(timestamp("yesterday").is_err());
    }

    #[test]
    fn origins_are_plain_hosts() {
        assert!(origin("https://graph.microsoft.com").is_ok());
        assert!(origin("http://127.0.0.1:8080/").is_ok());
        assert!(origin("https://graph.microsoft.com/v1.0").is_err());
        assert!(origin("ftp://x").is_err());
        assert!(origin("https://user:pw@x").is_err());
    }

    #[test]
    fn tenants_cannot_inject_paths() {
        assert!(tenant("contoso.onmicrosoft.com").is_ok());
        assert!(tenant("../evil").is_err());
        assert!(tenant("a/b").is_err());
    }

    #[test]
    fn select_always_includes_id_and_created() {
        assert_eq!(
            super::select("ipAddress, id,status").unwrap(),
            vec![
                "id".to_string(),
                "createdDateTime".to_string(),
                "ipAddress".to_string(),
                "status".to_string()
            ]
        );
        assert!(super::select("ip address").is_err());
        assert!(super::select("a,,b").is_err());
    }

    #[test]
    fn backfill_bounds_are_times_dates_or_ages() {
        let at = |v: &str| match moment(v) {
            Ok(Moment::At(t)) => t.unix_timestamp(),
            other => panic!("{v}: {other:?}"),
        };
        assert_eq!(at("2026-11-29"), 1_795_910_400);
        assert_eq!(at("2026-11-29T00:00:00Z"), 1_795_910_400);
        assert_eq!(moment("-24h"), Ok(Moment::Ago(time::Duration::hours(24))));
        assert_eq!(moment("-90m"), Ok(Moment::Ago(time::Duration::minutes(90))));
        assert_eq!(moment("-2d"), Ok(Moment::Ago(time::Duration::days(2))));
        for bad in [
            "-0h",
            "-h",
            "-5y",
            "24h",
            "2026-13-01",
            "-400d",
            "-",
            "-5ｈ",
            "-1€",
            "-é",
            "-ｈ",
        ] {
            assert!(moment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_and_their_maps() {
        let chosen = sources("signins, directory_audits").unwrap();
        let names: Vec<&str> = chosen.iter().map(|s| s.name).collect();
        assert_eq!(names, ["signins", "directory_audits"]);
        assert!(sources("signins,signins").unwrap_err().contains("repeated"));
        assert!(sources("sign_ins").unwrap_err().contains("risk_detections"));
        let keys = queue_keys("directory_audits=entra_audit").unwrap();
        assert_eq!(keys["directory_audits"], "entra_audit");
        assert!(queue_keys("directory_audits").is_err());
        assert!(queue_keys("nope=x").is_err());
        assert!(queue_keys("provisioning=").is_err());
        let limits = super::rate_limits("identity_protection=2/1,security=0").unwrap();
        assert_eq!(
            limits[&Bucket::IdentityProtection],
            Some((2, Duration::from_secs(1)))
        );
        assert_eq!(limits[&Bucket::Security], None);
        assert!(super::rate_limits("reports=5/10").is_err());
    }
}
