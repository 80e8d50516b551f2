//! Capsules as clients see them: listings, metadata, commands, and what a rescan changed.

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
    /// Found on disk, but it cannot be loaded: its manifest is not valid, or its module does
    /// not compile or instantiate (see `error`).
    Invalid,
    /// Found in a workspace that is not trusted: nothing of it runs until the user trusts
    /// the workspace (`error` says how, or what changed since it was trusted).
    Untrusted,
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
    /// Settings it declares (`[[config]]`), each with whether it is set; values are not
    /// shown here (`ListSettings` shows those that are not secret).
    #[serde(default)]
    pub settings: Vec<crate::CapsuleSetting>,
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
    /// Capsules that had failed (exhausted their restart budget) and were started again.
    #[serde(default)]
    pub restarted: Vec<String>,
    /// The listing after the rescan.
    pub capsules: Vec<CapsuleInfo>,
}
