//! Messages handled by [`CapsulesActor`](super::CapsulesActor) and the listings it returns.
//!
//! Senders: the session router (for `ListCapsules`, `ReloadCapsules`, `GetCommands`,
//! `GetCapsuleMetadata`, the settings requests, and status) and the kernel at boot.

pub use crate::capsule::CapsuleError;
use crate::protocol::{CapsuleSetting, InstallPlan, InstallReport, Removed, SettingChanged};
use actix::Message;
pub use astrid_protocol::payload::capsules::{
    CapsuleInfo, CapsuleMetadata, CapsuleOrigin, CapsuleState, CommandInfo, HookInfo, ReloadReport,
};

/// Lists every capsule.
#[derive(Debug, Message)]
#[rtype(result = "Vec<CapsuleInfo>")]
pub struct ListCapsules;

/// Rescans the capsule folders.
#[derive(Debug, Message)]
#[rtype(result = "ReloadReport")]
pub struct ReloadCapsules;

/// Lists the slash commands of running capsules.
#[derive(Debug, Message)]
#[rtype(result = "Vec<CommandInfo>")]
pub struct GetCommands;

/// Manifest metadata of one capsule, or of all when `name` is `None`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<CapsuleMetadata>, CapsuleError>")]
pub struct GetCapsuleMetadata {
    /// Capsule name.
    pub name: Option<String>,
}

/// The settings capsule `capsule`'s manifest declares, and which are set.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<CapsuleSetting>, CapsuleError>")]
pub struct ListSettings {
    /// Capsule name.
    pub capsule: String,
}

/// Sets (or, with `value` `None`, unsets) one of a capsule's settings, durably.
#[derive(Message)]
#[rtype(result = "Result<SettingChanged, CapsuleError>")]
pub struct SetSetting {
    /// Capsule name.
    pub capsule: String,
    /// The setting.
    pub name: String,
    /// The new value; `None` unsets it.
    pub value: Option<String>,
}

impl std::fmt::Debug for SetSetting {
    // The value may be a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSetting")
            .field("capsule", &self.capsule)
            .field("name", &self.name)
            .field("set", &self.value.is_some())
            .finish_non_exhaustive()
    }
}

/// Checks a capsule folder for installation.
#[derive(Debug, Message)]
#[rtype(result = "Result<InstallPlan, CapsuleError>")]
pub struct InspectCapsule {
    /// The folder, an absolute path.
    pub path: String,
}

/// Installs a capsule folder into the home, then reloads.
#[derive(Debug, Message)]
#[rtype(result = "Result<InstallReport, CapsuleError>")]
pub struct InstallCapsule {
    /// The folder, an absolute path.
    pub path: String,
    /// The digest `InspectCapsule` gave.
    pub digest: String,
}

/// Removes an installed capsule from the home, then reloads.
#[derive(Debug, Message)]
#[rtype(result = "Result<Removed, CapsuleError>")]
pub struct UninstallCapsule {
    /// Capsule name.
    pub name: String,
}
