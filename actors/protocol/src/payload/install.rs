//! Installing capsules into the home: what `InspectCapsule` shows before the user confirms,
//! and what `InstallCapsule` did.

use serde::{Deserialize, Serialize};

use crate::CapsuleSetting;

/// A capsule folder checked for installation: what it is, what it may do, and how it
/// differs from the installed capsule of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallPlan {
    /// The folder (canonical).
    pub path: String,
    /// Capsule name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its description.
    pub description: Option<String>,
    /// The slash commands it offers.
    pub commands: Vec<String>,
    /// The capabilities its manifest grants it.
    pub grants: Vec<String>,
    /// The settings it declares (no values).
    pub settings: Vec<CapsuleSetting>,
    /// The version of the capsule of that name in the home, if there is one.
    pub installed_version: Option<String>,
    /// Grants it has that the installed capsule has not.
    pub added_grants: Vec<String>,
    /// Grants the installed capsule has that it has not.
    pub removed_grants: Vec<String>,
    /// A digest of every file of the folder: `InstallCapsule` installs only a folder that
    /// still has it, so what is installed is what was shown.
    pub digest: String,
}

/// Result of `InstallCapsule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallReport {
    /// Capsule name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Where it now is: `<home>/capsules/<name>`.
    pub path: String,
    /// The version it replaced, if any.
    pub replaced: Option<String>,
}
