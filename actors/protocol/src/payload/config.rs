//! The daemon's effective configuration as `GetConfig` reports it: every setting with its
//! value and where it came from, and the audit policy, request kind by request kind.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How much of a request kind the audit log keeps, after Kubernetes' audit levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditLevel {
    /// Not recorded (a denial still is).
    None,
    /// Recorded: who, what, on what, and the outcome; never the data.
    Metadata,
}

impl AuditLevel {
    /// The level's name, as written in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Metadata => "metadata",
        }
    }
}

impl fmt::Display for AuditLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "metadata" => Ok(Self::Metadata),
            other => Err(format!(
                "unknown audit level `{other}` (expected `none` or `metadata`)"
            )),
        }
    }
}

/// One setting of the running daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// Its name in `config.toml` (`section.key` for keys of a section).
    pub name: String,
    /// Its value, as `config.toml` would write it.
    pub value: String,
    /// Where the value came from: `default`, `config` (the file) or `flag`.
    pub source: String,
}

/// The audit level of one request kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    /// The request kind (`GetStatus`, `KvPut`, ...).
    pub request: String,
    /// Its level now.
    pub level: AuditLevel,
    /// `default`, or `config` when `config.toml` sets it.
    pub source: String,
    /// Why the default is what it is.
    pub why: String,
}

/// Result of `GetConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReport {
    /// The configuration file the daemon read (it may not exist).
    pub file: String,
    /// Every setting, in the order `config.toml` documents them.
    pub settings: Vec<Setting>,
    /// The audit policy, one rule per request kind, in the protocol's order.
    pub audit_policy: Vec<PolicyRule>,
}
