//! The results of requests that no single kernel service owns: status, and the small
//! acknowledgements of writes, removals, subscriptions, shutdown and fault injection.

use serde::{Deserialize, Serialize};

use crate::{
    BusStats, CapsuleInfo, Fault, McpReloadReport, ReloadReport, StoreStats, TrustInfo,
    Verification,
};

/// Result of `GetStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent yes/no facts of a wire reply, not a state machine"
)]
pub struct Status {
    /// Daemon process id.
    pub pid: u32,
    /// Daemon version.
    pub version: String,
    /// Protocol version.
    pub protocol: u32,
    /// Session name (`system` or the UUID).
    pub session: String,
    /// Session UUID.
    pub session_id: String,
    /// Workspace root.
    pub workspace: String,
    /// Socket path.
    pub socket: String,
    /// Whether the daemon exits after its last client leaves.
    pub ephemeral: bool,
    /// In ephemeral mode, how long it waits for a client before exiting.
    pub idle_grace_ms: Option<u64>,
    /// Milliseconds since boot.
    pub uptime_ms: u64,
    /// Authenticated client connections.
    pub connected_clients: usize,
    /// Every capsule, built-in ones included (empty when the capsules actor is down).
    pub capsules: Vec<CapsuleInfo>,
    /// Event-bus counters (absent when the bus is down).
    pub bus: Option<BusStats>,
    /// Key-value store counters: writes, the commits that carried them, the largest batch
    /// (absent when the store is down).
    pub store: Option<StoreStats>,
    /// Kernel actors that did not answer for this status (down or restarting).
    pub unavailable: Vec<String>,
    /// Whether `InjectFault` is accepted.
    pub fault_injection: bool,
    /// The latest audit chain verification (at boot, or the last `AuditVerify`).
    pub audit: Verification,
    /// Whether the workspace's own capsules and MCP servers may run, as of the latest scan.
    #[serde(default)]
    pub trust: Option<TrustInfo>,
    /// Whether the daemon logs to the systemd journal (its stderr) instead of the files under
    /// `<home>/logs/`.
    #[serde(default)]
    pub logs_to_journal: bool,
    /// Whether a service manager (systemd) runs the daemon and was told it is ready: it, not
    /// `astrid start`, starts it again.
    #[serde(default)]
    pub service_manager: bool,
}

/// Result of `TrustWorkspace` and `UntrustWorkspace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustReport {
    /// The workspace as it stands now.
    pub trust: TrustInfo,
    /// `UntrustWorkspace`: whether it was trusted (always false for `TrustWorkspace`).
    pub removed: bool,
    /// For the daemon's own workspace: its capsule folders scanned again under the new
    /// trust (what started and stopped).
    pub capsules: Option<ReloadReport>,
    /// Likewise, its `mcp.toml` files read again.
    pub mcp: Option<McpReloadReport>,
}

/// Result of `InvokeCommand`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// The capsule that ran it.
    pub capsule: String,
    /// The command.
    pub command: String,
    /// What the capsule answered (any MessagePack value).
    pub output: rmpv::Value,
}

/// Result of `Shutdown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownAck {
    /// Always true: the daemon is stopping.
    pub shutting_down: bool,
    /// The reason recorded (the first one, when several clients asked).
    pub reason: String,
}

/// Result of `Subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// The pattern just added.
    pub pattern: String,
    /// Every pattern this connection is now subscribed to.
    pub patterns: Vec<String>,
}

/// Result of `Unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribed {
    /// The pattern asked for.
    pub pattern: String,
    /// Whether it was subscribed.
    pub removed: bool,
    /// Patterns still subscribed.
    pub patterns: Vec<String>,
}

/// Result of `KvGet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvValue {
    /// The key.
    pub key: String,
    /// Its value (MessagePack bin), or nil when the key does not exist.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

/// Result of a write (`KvPut`, `VfsWrite`, `VfsMkdir`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The key or path written.
    pub target: String,
    /// Bytes written.
    pub bytes: u64,
}

/// Result of a removal (`KvDelete`, `RevokeCapability`, `VfsRemove`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The key, capability or path.
    pub target: String,
    /// Whether it existed.
    pub removed: bool,
}

/// Result of `InjectFault`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultInjected {
    /// The actor that received the fault.
    pub target: String,
    /// The fault.
    pub fault: Fault,
}
