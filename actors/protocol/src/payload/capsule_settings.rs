//! A capsule's settings as `ListSettings` shows them and `SetSetting`/`UnsetSetting` change
//! them, and the wrapper that keeps a setting's value out of debug output and logs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A setting's value on its way to the daemon. It travels as a plain string, but its
/// `Debug` never shows it: requests are logged with `Debug`, and a secret must never reach
/// a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SettingValue(pub String);

impl fmt::Debug for SettingValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SettingValue(<{} bytes>)", self.0.len())
    }
}

/// One setting a capsule's manifest declares (`[[config]]`), and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsuleSetting {
    /// The setting's name (`config_get`'s key).
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// A secret: its value is never shown back, logged or audited.
    pub secret: bool,
    /// Whether it has a default: without one, a call that reads it while it is unset fails.
    pub required: bool,
    /// The manifest's default, if any (secrets have none).
    pub default: Option<String>,
    /// Whether the user has set a value.
    pub set: bool,
    /// The value set by the user; always `None` for a secret.
    pub value: Option<String>,
}

/// Result of `SetSetting` and `UnsetSetting`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingChanged {
    /// The capsule.
    pub capsule: String,
    /// The setting.
    pub name: String,
    /// Whether a value is set now.
    pub set: bool,
    /// Whether anything changed (an unset of an unset setting changes nothing).
    pub changed: bool,
}
