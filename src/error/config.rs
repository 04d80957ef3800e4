//! What is wrong with a configuration, and where each value came from ([`Origin`]):
//! every problem names its option, its origin and what would be accepted, and all of
//! a configuration's problems are reported at once. Secrets and passwords in URLs are
//! never shown.

use std::fmt;
use std::path::PathBuf;

/// Where an option's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Not given anywhere (for "missing" errors).
    Unset,
    Default,
    /// The environment variable it was read from.
    Env(String),
    Cli,
    File(PathBuf),
}

impl Origin {
    pub(crate) fn describe(&self, option: &str) -> String {
        match self {
            Origin::Unset => "nowhere".into(),
            Origin::Default => "the default".into(),
            Origin::Env(variable) => format!("environment variable {variable}"),
            Origin::Cli => format!("command line --{option}"),
            Origin::File(path) => format!("config file {}", path.display()),
        }
    }

    /// Given by the user rather than defaulted.
    pub(crate) fn is_given(&self) -> bool {
        !matches!(self, Origin::Unset | Origin::Default)
    }

    /// Precedence, as the original's: the config file over the command line over the
    /// environment (`GRAPH_*` over the Azure SDK's names) over the defaults.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Origin::Unset | Origin::Default => 0,
            Origin::Env(variable) if !variable.starts_with("GRAPH_") => 1,
            Origin::Env(_) => 2,
            Origin::Cli => 3,
            Origin::File(_) => 4,
        }
    }
}

/// A usage or configuration error: exit code 2. It may carry further problems found
/// in the same configuration, so all are reported at once.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Boxed: errors travel in `Result`s, which should stay small.
    option: Option<Box<(String, Origin)>>,
    problem: String,
    accepted: Option<String>,
    pub(crate) more: Vec<ConfigError>,
}

impl ConfigError {
    pub fn new(option: &str, source: Origin, problem: String, accepted: &str) -> Self {
        ConfigError {
            option: Some(Box::new((option.to_string(), source))),
            problem,
            accepted: Some(accepted.to_string()),
            more: Vec::new(),
        }
    }

    /// `value` of `option` is refused; it shows as `shown` (see `spec::shown`: never a
    /// secret).
    pub fn invalid(option: &str, source: Origin, shown: String, accepted: String) -> Self {
        Self::new(option, source, format!("invalid value {shown}"), &accepted)
    }

    pub fn usage(problem: String) -> Self {
        ConfigError {
            option: None,
            problem,
            accepted: None,
            more: Vec::new(),
        }
    }

    /// All of `errors` as one (None when there are none).
    pub(crate) fn all(mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        if errors.is_empty() {
            return None;
        }
        let mut first = errors.remove(0);
        first.more.extend(errors);
        Some(first)
    }

    /// Each problem as an error of its own.
    pub(crate) fn into_each(mut self) -> Vec<ConfigError> {
        let more = std::mem::take(&mut self.more);
        let mut each = vec![self];
        each.extend(more.into_iter().flat_map(ConfigError::into_each));
        each
    }

    /// The option the (first) error is about, if it is about one.
    pub fn option(&self) -> Option<&str> {
        self.option.as_ref().map(|o| o.0.as_str())
    }

    /// Every problem, one line each.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![self.line()];
        lines.extend(self.more.iter().map(ConfigError::line));
        lines
    }

    pub(crate) fn line(&self) -> String {
        let mut line = String::new();
        if let Some((name, source)) = self.option.as_deref() {
            line.push_str(&format!("option {name}: {}", self.problem));
            if *source != Origin::Unset {
                line.push_str(&format!(" (from {})", source.describe(name)));
            }
        } else {
            line.push_str(&self.problem);
        }
        if let Some(accepted) = &self.accepted {
            line.push_str(&format!("; accepted: {accepted}"));
        }
        line
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigError {}
