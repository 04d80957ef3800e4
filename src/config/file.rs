//! Reading the YAML config file of the original: a flat mapping of option names.
//!
//! A key with an empty value (`tenant:` or `tenant: ""`, as in the original's shipped
//! `app_config.yaml`) counts as not set, so such a file still lets the command line or
//! the environment supply the credentials.

use std::path::Path;

use serde_yaml::Value;

use super::{ConfigError, Origin, spec};

/// A file's values by option name, and what is wrong with single keys.
pub type FileValues = (Vec<(&'static str, String)>, Vec<ConfigError>);

/// The file's values; what is wrong with single keys (unknown, not allowed in a file,
/// of the wrong shape) comes back beside them, so it hides no other problem. A file
/// that cannot be read or is no YAML mapping is an error by itself.
pub fn read(path: &Path) -> Result<FileValues, ConfigError> {
    let source = Origin::File(path.to_path_buf());
    let text = crate::files::read_text(path, crate::files::CONFIG_CAP).map_err(|e| {
        ConfigError::new(
            "app_config",
            source.clone(),
            format!("cannot read: {e}"),
            "a readable YAML file (a regular file, a symlink to one is fine)",
        )
    })?;
    let document: Value = serde_yaml::from_str(&text).map_err(|e| {
        ConfigError::new(
            "app_config",
            source.clone(),
            format!("not valid YAML: {e}"),
            "a YAML mapping of option names to values",
        )
    })?;
    let mapping = match document {
        Value::Null => return Ok((Vec::new(), Vec::new())),
        Value::Mapping(mapping) => mapping,
        _ => {
            return Err(ConfigError::new(
                "app_config",
                source,
                "the document is not a mapping".into(),
                "a YAML mapping of option names to values",
            ));
        }
    };
    let mut values = Vec::new();
    let mut errors = Vec::new();
    // A file of a million unknown keys is reported by its first few problems and a
    // count, not a million lines each with the list of options.
    let mut unreported = 0usize;
    let mut report = |errors: &mut Vec<ConfigError>, problem: &dyn Fn() -> ConfigError| match errors
        .len()
        < MAX_REPORTED
    {
        true => errors.push(problem()),
        false => unreported += 1,
    };
    for (key, value) in mapping {
        let name = key.as_str().unwrap_or_default();
        let spec = match spec::find(name) {
            Some(spec) if spec.kind.in_file => spec,
            Some(spec) => {
                report(&mut errors, &|| {
                    ConfigError::new(
                        spec.name,
                        source.clone(),
                        "not allowed in a config file".into(),
                        "this option on the command line or in the environment",
                    )
                });
                continue;
            }
            None => {
                report(&mut errors, &|| {
                    let hint = match spec::nearest(name) {
                        Some(meant) => format!(" (did you mean {meant}?)"),
                        None => String::new(),
                    };
                    ConfigError::new(
                        "app_config",
                        source.clone(),
                        format!("unknown option {:?}{hint}", yaml_key(&key)),
                        &file_options(),
                    )
                });
                continue;
            }
        };
        let text = match (&value, spec.kind.structured) {
            (Value::Sequence(items), true) => joined(spec.name, items.iter(), &source),
            (Value::Mapping(pairs), true) => pairs
                .iter()
                .map(|(k, v)| {
                    let key = scalar(spec.name, k, &source)?.unwrap_or_default();
                    let value = scalar(spec.name, v, &source)?.unwrap_or_default();
                    Ok(format!("{key}={value}"))
                })
                .collect::<Result<Vec<String>, ConfigError>>()
                .map(|pairs| Some(pairs.join(","))),
            _ => scalar(spec.name, &value, &source),
        };
        match text {
            Ok(Some(text)) => values.push((spec.name, text)),
            Ok(None) => {}
            Err(e) => report(&mut errors, &|| e.clone()),
        }
    }
    if unreported > 0 {
        errors.push(ConfigError::new(
            "app_config",
            source,
            format!("{unreported} more problems in this file, not listed"),
            "a YAML mapping of option names to values",
        ));
    }
    Ok((values, errors))
}

/// Problems of one config file listed one by one; the rest are counted.
const MAX_REPORTED: usize = 10;

/// A YAML list as the command line's comma-separated form.
fn joined<'a>(
    name: &str,
    items: impl Iterator<Item = &'a Value>,
    source: &Origin,
) -> Result<Option<String>, ConfigError> {
    let items: Result<Vec<String>, ConfigError> = items
        .map(|item| Ok(scalar(name, item, source)?.unwrap_or_default()))
        .collect();
    Ok(Some(items?.join(",")))
}

fn scalar(name: &str, value: &Value, source: &Origin) -> Result<Option<String>, ConfigError> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(ConfigError::new(
                name,
                source.clone(),
                "expected one value, found a list or mapping".into(),
                &format!(
                    "one value, as in `{name}: <value>` (lists only where the option takes several)"
                ),
            ));
        }
    };
    Ok(Some(text))
}

fn yaml_key(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn file_options() -> String {
    let names: Vec<&str> = spec::OPTIONS
        .iter()
        .filter(|s| s.kind.in_file)
        .map(|s| s.name)
        .collect();
    names.join(", ")
}
