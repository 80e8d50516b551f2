//! Messages handled by [`CapsulesActor`](super::CapsulesActor) and the listings it returns.
//!
//! Senders: the session router (for `ListCapsules`, `ReloadCapsules`, `GetCommands`,
//! `GetCapsuleMetadata` and status) and the kernel at boot.

use actix::Message;
use serde::{Deserialize, Serialize};

/// Where a capsule was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapsuleOrigin {
    /// Part of the daemon.
    Builtin,
    /// `<home>/capsules/`.
    Home,
    /// `<workspace>/.astrid/capsules/`.
    Workspace,
}

/// State of a capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapsuleState {
    /// Running and serving.
    Running,
    /// Crashed; a restart is scheduled.
    Restarting,
    /// Not running.
    Stopped,
    /// Gave up after exhausting its restart budget.
    Failed,
    /// Found on disk with a valid manifest, but not loaded: this build has no WebAssembly
    /// capsule runtime.
    NotLoaded,
    /// Found on disk, but its manifest is not valid (see `error`).
    Invalid,
}

/// One capsule, as `ListCapsules` and status show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsuleInfo {
    /// Name.
    pub name: String,
    /// Version, when known.
    pub version: Option<String>,
    /// Description, when known.
    pub description: Option<String>,
    /// State.
    pub state: CapsuleState,
    /// Where it came from.
    pub origin: CapsuleOrigin,
    /// Its folder (absent for built-ins).
    pub path: Option<String>,
    /// Restarts so far.
    pub restarts: u32,
    /// Why it is not running, when it is not.
    pub error: Option<String>,
}

/// A slash command a client can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    /// Name, without the slash.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The capsule that provides it.
    pub capsule: String,
}

/// A `[[provider]]` or `[[interceptor]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookInfo {
    /// Topic (pattern) it serves.
    pub topic: String,
    /// Lower runs first.
    #[serde(default)]
    pub priority: i32,
}

/// What `GetCapsuleMetadata` returns for one capsule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsuleMetadata {
    /// Name.
    pub name: String,
    /// Version.
    pub version: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Where it came from.
    pub origin: CapsuleOrigin,
    /// Its folder (absent for built-ins).
    pub path: Option<String>,
    /// A capsule of the same name that this one overrides.
    pub overrides: Option<String>,
    /// Slash commands it declares.
    pub commands: Vec<CommandInfo>,
    /// Providers it declares.
    pub providers: Vec<HookInfo>,
    /// Interceptors it declares.
    pub interceptors: Vec<HookInfo>,
}

/// What a rescan changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Capsules found that were not there before.
    pub added: Vec<String>,
    /// Capsules no longer found.
    pub removed: Vec<String>,
    /// Capsules whose manifest or folder changed.
    pub changed: Vec<String>,
    /// Capsules left as they were.
    pub unchanged: Vec<String>,
    /// The listing after the rescan.
    pub capsules: Vec<CapsuleInfo>,
}

/// Errors answered by the capsules actor.
#[derive(Debug, thiserror::Error)]
pub enum CapsuleError {
    /// No capsule has that name.
    #[error("no capsule named `{0}`")]
    NotFound(String),
}

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
