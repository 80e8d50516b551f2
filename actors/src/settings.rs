//! What the strictly parsed TOML files (capsule manifests, `mcp.toml`) share: reading TOML
//! into a typed value with the failing field named, durations, and restart policies. Pure
//! functions; each file's parser names its own file in its errors.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::supervisor::{RestartPolicy, RestartType};

/// Longest `restart.period`.
pub const MAX_RESTART_PERIOD: Duration = Duration::from_hours(24);
/// Longest `restart.backoff` and `restart.backoff_max`.
pub const MAX_BACKOFF: Duration = Duration::from_hours(1);

/// A field that is unknown, missing, or has a bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as a path (`limits.fuel`, `server[1].name`; `.` for the whole file).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Why TOML text did not give the value wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TomlError {
    /// Not valid TOML; what the parser says, with the line.
    Syntax(String),
    /// Valid TOML with a field unknown, missing or of the wrong type.
    Field(FieldError),
}

/// Parses `text` into `T`, naming the field that does not fit.
///
/// # Errors
///
/// See [`TomlError`].
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, TomlError> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| TomlError::Syntax(one_line(&e.to_string())))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = match e.path().to_string() {
            path if path.is_empty() => ".".to_owned(),
            path => path,
        };
        // A missing field is reported at its table, with the field in the message.
        TomlError::Field(FieldError::new(
            field,
            one_line(&e.into_inner().to_string()),
        ))
    })
}

/// The last line of a parser message (its summary), without the source excerpt.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [first, .., last] => format!("{last} ({first})"),
    }
}

/// A duration written like `500ms` or `2s`.
///
/// # Errors
///
/// When `text` is not a duration.
pub fn duration(field: &str, text: &str) -> Result<Duration, FieldError> {
    humantime::parse_duration(text).map_err(|e| {
        FieldError::new(
            field,
            format!("`{text}` is not a duration such as `500ms` or `2s`: {e}"),
        )
    })
}

/// A duration no longer than `max`.
///
/// # Errors
///
/// When `text` is not a duration or is longer than `max`.
pub fn bounded(field: &str, text: &str, max: Duration) -> Result<Duration, FieldError> {
    let d = duration(field, text)?;
    if d > max {
        return Err(FieldError::new(
            field,
            format!("{text} is longer than {}", humantime::format_duration(max)),
        ));
    }
    Ok(d)
}

/// A duration within `range`.
///
/// # Errors
///
/// When `text` is not a duration or is outside `range`.
pub fn within(
    field: &str,
    text: &str,
    range: (Duration, Duration),
) -> Result<Duration, FieldError> {
    let d = duration(field, text)?;
    let (low, high) = range;
    if !(low..=high).contains(&d) {
        return Err(FieldError::new(
            field,
            format!(
                "{} is outside {}..={}",
                humantime::format_duration(d),
                humantime::format_duration(low),
                humantime::format_duration(high)
            ),
        ));
    }
    Ok(d)
}

/// A `[restart]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    policy: Option<String>,
    intensity: Option<u32>,
    period: Option<String>,
    backoff: Option<String>,
    backoff_max: Option<String>,
}

/// How a supervisor treats a child's exits: its restart type and its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// `permanent`, `transient` or `temporary`.
    pub kind: RestartType,
    /// Restart budget and backoff.
    pub policy: RestartPolicy,
}

impl Default for Restart {
    /// Transient (restarted only after a crash), with the supervisor's default budget (3
    /// restarts in 5 s, backoff 50 ms doubling to 5 s): a capsule's default.
    fn default() -> Self {
        Self {
            kind: RestartType::Transient,
            policy: RestartPolicy::default(),
        }
    }
}

impl RawRestart {
    /// Checks the table (at `table`, such as `restart` or `server[0].restart`), starting from
    /// `kind` and the supervisor's default budget.
    ///
    /// # Errors
    ///
    /// The first bad field.
    pub fn check(&self, table: &str, kind: RestartType) -> Result<Restart, FieldError> {
        let field = |name: &str| format!("{table}.{name}");
        let mut restart = Restart {
            kind,
            policy: RestartPolicy::default(),
        };
        if let Some(policy) = &self.policy {
            restart.kind = match policy.as_str() {
                "permanent" => RestartType::Permanent,
                "transient" => RestartType::Transient,
                "temporary" => RestartType::Temporary,
                other => {
                    return Err(FieldError::new(
                        field("policy"),
                        format!("`{other}` is not one of permanent, transient, temporary"),
                    ));
                }
            };
        }
        let policy = &mut restart.policy;
        if let Some(intensity) = self.intensity {
            if intensity > 1000 {
                return Err(FieldError::new(
                    field("intensity"),
                    format!("{intensity} is over 1000"),
                ));
            }
            policy.intensity = intensity;
        }
        if let Some(period) = &self.period {
            policy.period = bounded(&field("period"), period, MAX_RESTART_PERIOD)?;
            if policy.period.is_zero() {
                return Err(FieldError::new(field("period"), "must be longer than zero"));
            }
        }
        if let Some(backoff) = &self.backoff {
            policy.backoff_base = bounded(&field("backoff"), backoff, MAX_BACKOFF)?;
            // Only a maximum written in the file can conflict with it.
            policy.backoff_max = policy.backoff_max.max(policy.backoff_base);
        }
        if let Some(max) = &self.backoff_max {
            policy.backoff_max = bounded(&field("backoff_max"), max, MAX_BACKOFF)?;
        }
        if policy.backoff_max < policy.backoff_base {
            return Err(FieldError::new(
                field("backoff_max"),
                format!("must not be shorter than {table}.backoff"),
            ));
        }
        Ok(restart)
    }
}
