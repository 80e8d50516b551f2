//! Messages handled by [`CapsulesActor`](super::CapsulesActor) and the listings it returns.
//!
//! Senders: the session router (for `ListCapsules`, `ReloadCapsules`, `GetCommands`,
//! `GetCapsuleMetadata` and status) and the kernel at boot.

use std::time::Duration;

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

/// Errors answered by the capsule registry, or met routing a command to a capsule.
#[derive(Debug, thiserror::Error)]
pub enum CapsuleError {
    /// No capsule has that name.
    #[error("no capsule named `{0}`")]
    NotFound(String),
    /// No loaded capsule offers that command.
    #[error("no capsule offers the command `{0}`; `astrid commands` lists them")]
    UnknownCommand(String),
    /// The command belongs to the interactive `astrid` session, not to a capsule.
    #[error("`/{0}` is a command of the interactive `astrid` session, not of a capsule")]
    BuiltinCommand(String),
    /// The capsule exhausted its restart budget; it stays down until a reload.
    #[error("capsule `{capsule}` has failed ({reason}); fix it and run `astrid capsules reload`")]
    Failed {
        /// Capsule name.
        capsule: String,
        /// Its last failure.
        reason: String,
    },
    /// The capsule crashed and waits out its backoff before its restart.
    #[error("capsule `{0}` is restarting after a crash; retry shortly")]
    Restarting(String),
    /// The capsule crashed while handling the request.
    #[error("capsule `{capsule}` crashed: {reason}")]
    Crashed {
        /// Capsule name.
        capsule: String,
        /// What happened.
        reason: String,
    },
    /// The capsule did not answer within its call deadline (it is restarted).
    #[error("capsule `{capsule}` did not answer within {} ms", timeout.as_millis())]
    Deadline {
        /// Capsule name.
        capsule: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The capsule answered with an error of its own.
    #[error("{capsule}: {message}")]
    Guest {
        /// Capsule name.
        capsule: String,
        /// Its message.
        message: String,
    },
    /// The request is larger than the capsule's whole memory; it was not handed over.
    #[error(
        "the input ({len} bytes) is larger than capsule `{capsule}`'s memory ({ceiling} bytes)"
    )]
    InputTooLarge {
        /// Capsule name.
        capsule: String,
        /// Bytes of input.
        len: usize,
        /// The capsule's memory ceiling (`limits.memory_pages` × 64 KiB).
        ceiling: usize,
    },
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
