//! The wire protocol, as a contract: handshake, request and reply envelopes, events, and the
//! request variants. Both the daemon's sessions and the client library use these types, so
//! they cannot drift apart. Payloads that actors produce (status, tree, capsule listings) are
//! defined beside those actors and re-exported here.
//!
//! Every frame is a MessagePack map (see [`codec`]); enums are externally tagged, so a unit
//! variant is a bare string (`"Ping"`) and a variant with fields a one-entry map
//! (`{"Shutdown": {"reason": "..."}}`).

pub mod codec;
mod decode;
pub mod error;
#[cfg(test)]
mod props;
pub mod raw;
mod value;

use std::io::Cursor;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use self::codec::{EncodeError, FrameCodec, FrameError, encode_frame};
pub use self::decode::decode_request;
pub use self::error::{ErrorBody, ErrorCode, ProtocolError};
pub use self::value::RawValue;
pub use crate::audit::chain::{Entry as AuditEntry, Verification};
pub use crate::bus::{BusStats, Published, SubscriberStats};
pub use crate::caps::{Grant, GrantSource};
pub use crate::capsules::{
    CapsuleInfo, CapsuleMetadata, CapsuleOrigin, CapsuleState, CommandInfo, ReloadReport,
};
pub use crate::listener::SessionInfo;
pub use crate::mcp::{McpReloadReport, McpServerInfo, McpServerState, McpToolInfo, McpToolResult};
pub use crate::store::{Listing, StoreStats};
pub use crate::supervisor::{ChildState, Fault, NodeKind, RestartType, TreeNode};
pub use crate::trust::{TrustInfo, TrustState};
pub use crate::vfs::{DirEntry, EntryKind, FileStat, ReadResult};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default frame limit (bytes of MessagePack after the prefix), in both directions.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// First frame from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Contents of the session's token file.
    pub token: String,
    /// Protocol version the client speaks.
    pub protocol: u64,
    /// Free-form client name, shown in status and the supervision tree.
    pub client: String,
}

/// The daemon's answer to [`Hello`]. On failure only `ok` and `error` are present and the
/// daemon closes the connection after sending it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Whether the handshake succeeded.
    pub ok: bool,
    /// Protocol version the daemon speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// Daemon name and version, e.g. `astrid-daemon 0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<String>,
    /// Session name: `system` for the nil UUID, otherwise the UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// This connection's number, as events name it in `source` (`client:<n>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    /// The workspace the daemon serves (canonical), so that a client can tell it is talking
    /// to the daemon of the workspace it means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Why the handshake failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Welcome {
    /// A refusal carrying `error`.
    pub fn refused(error: ErrorBody) -> Self {
        Self {
            ok: false,
            protocol: None,
            daemon: None,
            session: None,
            connection: None,
            workspace: None,
            error: Some(error),
        }
    }
}

/// A request frame: `{"id": uint, "request": Request}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Client-chosen id, echoed in the reply. Ids need not be unique or ordered, but a
    /// client that reuses one cannot tell the replies apart.
    pub id: u64,
    /// What is asked.
    pub request: Request,
}

/// Most arguments an `InvokeCommand` may carry: each costs the daemon a string of its own
/// (24 bytes and an allocation, however short it is on the wire).
pub const MAX_ARGS: usize = 4096;

/// `InvokeCommand`'s arguments, refused past [`MAX_ARGS`] before any is decoded.
fn bounded_args<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Args;
    impl<'de> serde::de::Visitor<'de> for Args {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "at most {MAX_ARGS} strings")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let announced = seq.size_hint().unwrap_or(0);
            if announced > MAX_ARGS {
                return Err(serde::de::Error::invalid_length(announced, &self));
            }
            let mut args = Vec::with_capacity(announced);
            while let Some(arg) = seq.next_element()? {
                if args.len() == MAX_ARGS {
                    return Err(serde::de::Error::invalid_length(MAX_ARGS + 1, &self));
                }
                args.push(arg);
            }
            Ok(args)
        }
    }
    d.deserialize_seq(Args)
}

/// Everything a client can ask. The README's "Protocol" section documents each variant and
/// its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check, answered by the connection's session. Result: `"pong"`.
    Ping,
    /// Daemon status. Result: [`Status`].
    GetStatus,
    /// Graceful shutdown. The reply is sent before the daemon stops. Result: [`ShutdownAck`].
    Shutdown {
        /// Recorded in the log and in the `astrid.kernel.shutdown` event.
        reason: String,
    },
    /// Capsules and their state. Result: list of [`CapsuleInfo`].
    ListCapsules,
    /// Rescan capsule folders. Result: [`ReloadReport`].
    ReloadCapsules,
    /// Slash commands offered by the built-in capsule and loaded capsules. Result: list of
    /// [`CommandInfo`].
    GetCommands,
    /// Runs a capsule's slash command and returns its output. Not audited itself (what the
    /// capsule does through host calls is). Result: [`CommandOutput`].
    InvokeCommand {
        /// Command name, without the slash.
        name: String,
        /// Its arguments, at most [`MAX_ARGS`].
        #[serde(default, deserialize_with = "bounded_args")]
        args: Vec<String>,
    },
    /// Manifest-level metadata of one capsule, or all when `name` is absent or nil.
    /// Result: list of [`CapsuleMetadata`].
    GetCapsuleMetadata {
        /// Capsule name.
        #[serde(default)]
        name: Option<String>,
    },
    /// The live supervision tree. Result: [`TreeNode`] (the root).
    GetSupervisionTree,
    /// Receive events whose topic matches `pattern` on this connection. Result: [`Subscribed`].
    Subscribe {
        /// Dot-separated pattern; `*` matches one segment, a final `>` one or more.
        pattern: String,
    },
    /// Stop receiving events for `pattern`. Result: [`Unsubscribed`].
    Unsubscribe {
        /// A pattern previously passed to `Subscribe`.
        pattern: String,
    },
    /// Publish an event. Clients may publish only to the allowlist (`user.>` by default).
    /// Result: [`Published`].
    Publish {
        /// Concrete topic (no wildcards).
        topic: String,
        /// Any MessagePack value, nested at most [`raw::MAX_DEPTH`] deep; nil when absent.
        /// The daemon keeps it as the client's bytes.
        #[serde(default)]
        payload: RawValue,
    },
    /// Make an actor in the tree fail on purpose. Needs `--allow-fault-injection`.
    /// Result: [`FaultInjected`].
    InjectFault {
        /// Actor name as shown in the supervision tree (`bus`, `store`, `listener`, ...).
        target: String,
        /// What to do to it.
        fault: Fault,
    },
    /// Read a key of the client namespace. Result: [`KvValue`].
    KvGet {
        /// Key.
        key: String,
    },
    /// Write a key of the client namespace; answered once durable. Result: [`Written`].
    KvPut {
        /// Key.
        key: String,
        /// Value (MessagePack bin).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Delete a key of the client namespace; answered once durable. Result: [`Removed`].
    KvDelete {
        /// Key.
        key: String,
    },
    /// List keys of the client namespace by prefix. Result: [`Listing`].
    KvList {
        /// Prefix (empty for all).
        #[serde(default)]
        prefix: String,
        /// At most this many keys (default 1000).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Grant a capability to a capsule; persisted. Result: [`Grant`].
    GrantCapability {
        /// Capsule name.
        subject: String,
        /// Resource, e.g. `vfs:read:src/**`.
        resource: String,
    },
    /// Revoke a runtime grant. Result: [`Removed`].
    RevokeCapability {
        /// Capsule name.
        subject: String,
        /// Resource, exactly as granted.
        resource: String,
    },
    /// List grants, of one capsule or all. Result: list of [`Grant`].
    ListCapabilities {
        /// Capsule name.
        #[serde(default)]
        subject: Option<String>,
    },
    /// Audit entries, oldest first: the last `n`, or `n` from sequence number `from` on
    /// (to page through the whole log). Result: list of [`AuditEntry`].
    AuditTail {
        /// How many (default 20, at most 1000).
        #[serde(default)]
        n: Option<usize>,
        /// First sequence number wanted.
        #[serde(default)]
        from: Option<u64>,
    },
    /// Verify the audit chain. Result: [`Verification`].
    AuditVerify,
    /// Read a workspace file. Result: [`ReadResult`].
    VfsRead {
        /// Path relative to the workspace.
        path: String,
        /// Byte offset to start at.
        #[serde(default)]
        offset: u64,
        /// At most this many bytes (default: to the end, within the read limit).
        #[serde(default)]
        len: Option<u64>,
    },
    /// Write a workspace file atomically. Result: [`Written`].
    VfsWrite {
        /// Path relative to the workspace.
        path: String,
        /// Content (MessagePack bin).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Create missing parent directories.
        #[serde(default)]
        create_dirs: bool,
    },
    /// List a workspace directory. Result: list of [`DirEntry`].
    VfsList {
        /// Path relative to the workspace (`.` for the root).
        path: String,
    },
    /// Describe a workspace path. Result: [`FileStat`].
    VfsStat {
        /// Path relative to the workspace.
        path: String,
    },
    /// Remove a workspace file or directory. Result: [`Removed`].
    VfsRemove {
        /// Path relative to the workspace.
        path: String,
        /// Remove a directory with its content.
        #[serde(default)]
        recursive: bool,
    },
    /// Create a workspace directory. Result: [`Written`] (0 bytes).
    VfsMkdir {
        /// Path relative to the workspace.
        path: String,
        /// Create missing parents too.
        #[serde(default)]
        parents: bool,
    },
    /// The configured MCP servers and their state. Result: list of [`McpServerInfo`].
    ListMcpServers,
    /// Reads the `mcp.toml` files again: unchanged servers run on, changed ones restart,
    /// removed ones stop, new ones start. Result: [`McpReloadReport`].
    ReloadMcp,
    /// The tools of one MCP server, or of all when `server` is absent or nil. Result: list
    /// of [`McpToolInfo`].
    ListMcpTools {
        /// The server.
        #[serde(default)]
        server: Option<String>,
    },
    /// Calls a tool of an MCP server, under the server's deadline. Audited, durably (a tool
    /// may change anything). Result: [`McpToolResult`].
    CallMcpTool {
        /// The server.
        server: String,
        /// The tool.
        tool: String,
        /// Its arguments: a map (nil for none).
        #[serde(default)]
        arguments: RawValue,
    },
    /// Trusts a workspace with its `.astrid/` as it is now, so that its capsules and MCP
    /// servers may run; when it is the daemon's own, they start at once. Result:
    /// [`TrustReport`].
    TrustWorkspace {
        /// The workspace, an absolute path (default: the daemon's).
        #[serde(default)]
        path: Option<String>,
    },
    /// Forgets a workspace's trust; when it is the daemon's own, its capsules and MCP
    /// servers stop at once. Result: [`TrustReport`].
    UntrustWorkspace {
        /// The workspace, an absolute path (default: the daemon's).
        #[serde(default)]
        path: Option<String>,
    },
    /// Every trusted workspace, each checked against its `.astrid/` now. Result: list of
    /// [`TrustInfo`].
    ListTrust,
}

impl Request {
    /// Every variant name, as it appears on the wire.
    pub const NAMES: &'static [&'static str] = &[
        "Ping",
        "GetStatus",
        "Shutdown",
        "ListCapsules",
        "ReloadCapsules",
        "GetCommands",
        "InvokeCommand",
        "GetCapsuleMetadata",
        "GetSupervisionTree",
        "Subscribe",
        "Unsubscribe",
        "Publish",
        "InjectFault",
        "KvGet",
        "KvPut",
        "KvDelete",
        "KvList",
        "GrantCapability",
        "RevokeCapability",
        "ListCapabilities",
        "AuditTail",
        "AuditVerify",
        "VfsRead",
        "VfsWrite",
        "VfsList",
        "VfsStat",
        "VfsRemove",
        "VfsMkdir",
        "ListMcpServers",
        "ReloadMcp",
        "ListMcpTools",
        "CallMcpTool",
        "TrustWorkspace",
        "UntrustWorkspace",
        "ListTrust",
    ];

    /// This request's variant name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ping => "Ping",
            Self::GetStatus => "GetStatus",
            Self::Shutdown { .. } => "Shutdown",
            Self::ListCapsules => "ListCapsules",
            Self::ReloadCapsules => "ReloadCapsules",
            Self::GetCommands => "GetCommands",
            Self::InvokeCommand { .. } => "InvokeCommand",
            Self::GetCapsuleMetadata { .. } => "GetCapsuleMetadata",
            Self::GetSupervisionTree => "GetSupervisionTree",
            Self::Subscribe { .. } => "Subscribe",
            Self::Unsubscribe { .. } => "Unsubscribe",
            Self::Publish { .. } => "Publish",
            Self::InjectFault { .. } => "InjectFault",
            Self::KvGet { .. } => "KvGet",
            Self::KvPut { .. } => "KvPut",
            Self::KvDelete { .. } => "KvDelete",
            Self::KvList { .. } => "KvList",
            Self::GrantCapability { .. } => "GrantCapability",
            Self::RevokeCapability { .. } => "RevokeCapability",
            Self::ListCapabilities { .. } => "ListCapabilities",
            Self::AuditTail { .. } => "AuditTail",
            Self::AuditVerify => "AuditVerify",
            Self::VfsRead { .. } => "VfsRead",
            Self::VfsWrite { .. } => "VfsWrite",
            Self::VfsList { .. } => "VfsList",
            Self::VfsStat { .. } => "VfsStat",
            Self::VfsRemove { .. } => "VfsRemove",
            Self::VfsMkdir { .. } => "VfsMkdir",
            Self::ListMcpServers => "ListMcpServers",
            Self::ReloadMcp => "ReloadMcp",
            Self::ListMcpTools { .. } => "ListMcpTools",
            Self::CallMcpTool { .. } => "CallMcpTool",
            Self::TrustWorkspace { .. } => "TrustWorkspace",
            Self::UntrustWorkspace { .. } => "UntrustWorkspace",
            Self::ListTrust => "ListTrust",
        }
    }

    /// Whether the request changes state. Such a request is answered only once its audit
    /// entry is durable; the others are audited without waiting.
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Self::Shutdown { .. }
                | Self::ReloadCapsules
                | Self::ReloadMcp
                | Self::InjectFault { .. }
                | Self::KvPut { .. }
                | Self::KvDelete { .. }
                | Self::GrantCapability { .. }
                | Self::RevokeCapability { .. }
                | Self::VfsWrite { .. }
                | Self::VfsRemove { .. }
                | Self::VfsMkdir { .. }
                | Self::CallMcpTool { .. }
                | Self::TrustWorkspace { .. }
                | Self::UntrustWorkspace { .. }
        )
    }

    /// What the request is about, for its audit entry: a key, a path, a topic, a capability.
    pub fn target(&self) -> String {
        match self {
            Self::Shutdown { reason } => reason.clone(),
            Self::GetCapsuleMetadata { name } => name.clone().unwrap_or_default(),
            Self::InvokeCommand { name, .. } => name.clone(),
            Self::Subscribe { pattern } | Self::Unsubscribe { pattern } => pattern.clone(),
            Self::Publish { topic, .. } => topic.clone(),
            Self::InjectFault { target, fault } => format!("{target}: {fault}"),
            Self::KvGet { key } | Self::KvPut { key, .. } | Self::KvDelete { key } => key.clone(),
            Self::KvList { prefix, .. } => prefix.clone(),
            Self::GrantCapability { subject, resource }
            | Self::RevokeCapability { subject, resource } => format!("{subject}:{resource}"),
            Self::ListCapabilities { subject } => subject.clone().unwrap_or_default(),
            Self::VfsRead { path, .. }
            | Self::VfsWrite { path, .. }
            | Self::VfsList { path }
            | Self::VfsStat { path }
            | Self::VfsRemove { path, .. }
            | Self::VfsMkdir { path, .. } => path.clone(),
            Self::ListMcpTools { server } => server.clone().unwrap_or_default(),
            Self::CallMcpTool { server, tool, .. } => format!("{server}/{tool}"),
            Self::TrustWorkspace { path } | Self::UntrustWorkspace { path } => {
                path.clone().unwrap_or_default()
            }
            _ => String::new(),
        }
    }
}

/// Result of `GetStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultInjected {
    /// The actor that received the fault.
    pub target: String,
    /// The fault.
    pub fault: Fault,
}

/// A reply frame as the daemon writes it.
#[derive(Debug, Serialize)]
pub struct ReplyFrame<'a, T: Serialize> {
    /// Echo of the request id.
    pub id: u64,
    /// The result.
    pub result: &'a T,
}

/// An error frame. `id` is absent when the frame it answers had no readable id.
#[derive(Debug, Serialize)]
pub struct ErrorFrame<'a> {
    /// Echo of the request id, when one could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// What went wrong.
    pub error: &'a ErrorBody,
}

/// An event frame: `{"event": Event}`; it has no `id`. The daemon writes it with
/// [`raw::encode_event_frame`], which copies the payload's bytes; serializing this writes the
/// same bytes, item by item.
#[derive(Debug, Serialize)]
pub struct EventFrame<'a> {
    /// The event.
    pub event: &'a crate::bus::Event,
}

/// An event as a client reads it: the bus's [`Event`](crate::bus::Event), with the payload
/// decoded into a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Concrete topic.
    pub topic: String,
    /// Any MessagePack value.
    pub payload: rmpv::Value,
    /// Bus-wide sequence number, increasing by one per published event.
    pub seq: u64,
    /// Who published it: `kernel`, `supervisor`, `client:<n>`, ...
    pub source: String,
    /// Publication time, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// What a client needs to route a frame from the daemon: a reply (with `id`), an event, or a
/// connection-level error (neither). The `result` is skipped here and decoded later by the
/// caller that knows its type, with [`TypedReply`].
#[derive(Debug, Deserialize)]
pub struct FrameHead {
    /// Present on replies.
    #[serde(default)]
    pub id: Option<u64>,
    /// Present on event frames.
    #[serde(default)]
    pub event: Option<Event>,
    /// Present on failed replies and connection-level errors.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

/// A reply decoded with its result type known.
#[derive(Debug, Deserialize)]
pub struct TypedReply<T> {
    /// Echo of the request id.
    pub id: u64,
    /// Present on success.
    #[serde(default = "none")]
    pub result: Option<T>,
    /// Present on failure.
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

fn none<T>() -> Option<T> {
    None
}

/// Converts `value` to an event payload with structs as maps keyed by field names, the
/// shape every payload on the wire has (see [`RawValue::encode`]).
///
/// # Errors
///
/// When `value` cannot be serialized.
pub fn to_payload<T: Serialize + ?Sized>(value: &T) -> Result<RawValue, EncodeError> {
    RawValue::encode(value)
}

/// Decodes one frame body as `T`, strictly: the body must be exactly one MessagePack map
/// keyed by field names (positional encodings and trailing bytes are refused).
///
/// # Errors
///
/// A message saying what is wrong with the body.
pub fn decode_map<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if !is_named_map(body) {
        return Err("expected a MessagePack map keyed by field names".into());
    }
    let mut de = rmp_serde::Deserializer::new(Cursor::new(body));
    let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
    let used = usize::try_from(de.position()).unwrap_or(usize::MAX);
    if used != body.len() {
        return Err(format!(
            "{} bytes after the value; a frame holds one value",
            body.len() - used
        ));
    }
    Ok(value)
}

/// Whether `body` starts with a map whose first key is a string.
fn is_named_map(body: &[u8]) -> bool {
    let Some((&marker, rest)) = body.split_first() else {
        return false;
    };
    let (len, rest) = match marker {
        0x80..=0x8f => (usize::from(marker & 0x0f), rest),
        0xde if rest.len() >= 2 => (
            usize::from(u16::from_be_bytes([rest[0], rest[1]])),
            &rest[2..],
        ),
        0xdf if rest.len() >= 4 => (
            usize::try_from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]))
                .unwrap_or(usize::MAX),
            &rest[4..],
        ),
        _ => return false,
    };
    // fixstr, str8, str16, str32
    len == 0
        || rest
            .first()
            .is_some_and(|&k| matches!(k, 0xa0..=0xbf | 0xd9..=0xdb))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Request> {
        vec![
            Request::Ping,
            Request::GetStatus,
            Request::Shutdown { reason: "r".into() },
            Request::ListCapsules,
            Request::ReloadCapsules,
            Request::GetCommands,
            Request::InvokeCommand {
                name: "echo".into(),
                args: vec!["a".into()],
            },
            Request::GetCapsuleMetadata {
                name: Some("echo".into()),
            },
            Request::GetSupervisionTree,
            Request::Subscribe {
                pattern: "user.>".into(),
            },
            Request::Unsubscribe {
                pattern: "user.>".into(),
            },
            Request::Publish {
                topic: "user.prompt".into(),
                payload: RawValue::encode("hi").unwrap(),
            },
            Request::InjectFault {
                target: "bus".into(),
                fault: Fault::Hang { millis: 5 },
            },
            Request::KvGet { key: "k".into() },
            Request::KvPut {
                key: "k".into(),
                value: vec![0, 1, 255],
            },
            Request::KvDelete { key: "k".into() },
            Request::KvList {
                prefix: "p".into(),
                limit: Some(3),
            },
            Request::GrantCapability {
                subject: "echo".into(),
                resource: "kv".into(),
            },
            Request::RevokeCapability {
                subject: "echo".into(),
                resource: "kv".into(),
            },
            Request::ListCapabilities { subject: None },
            Request::AuditTail {
                n: Some(5),
                from: Some(2),
            },
            Request::AuditVerify,
            Request::VfsRead {
                path: "a".into(),
                offset: 1,
                len: Some(2),
            },
            Request::VfsWrite {
                path: "a".into(),
                data: b"x".to_vec(),
                create_dirs: true,
            },
            Request::VfsList { path: ".".into() },
            Request::VfsStat { path: "a".into() },
            Request::VfsRemove {
                path: "a".into(),
                recursive: false,
            },
            Request::VfsMkdir {
                path: "d".into(),
                parents: true,
            },
            Request::ListMcpServers,
            Request::ReloadMcp,
            Request::ListMcpTools {
                server: Some("tools".into()),
            },
            Request::CallMcpTool {
                server: "tools".into(),
                tool: "echo".into(),
                arguments: RawValue::from_value(&rmpv::Value::Map(vec![(
                    "text".into(),
                    "hi".into(),
                )]))
                .unwrap(),
            },
            Request::TrustWorkspace {
                path: Some("/w".into()),
            },
            Request::UntrustWorkspace { path: None },
            Request::ListTrust,
        ]
    }

    #[test]
    fn every_variant_round_trips_and_is_listed() {
        let all = samples();
        assert_eq!(all.len(), Request::NAMES.len());
        for (i, request) in all.into_iter().enumerate() {
            assert!(Request::NAMES.contains(&request.name()));
            let frame = RequestFrame {
                id: i as u64,
                request,
            };
            let bytes = rmp_serde::to_vec_named(&frame).unwrap();
            assert_eq!(decode_request(&bytes).unwrap(), frame);
        }
    }

    #[test]
    fn invoke_command_takes_a_bounded_number_of_args() {
        let frame = |n: usize| {
            rmp_serde::to_vec_named(&RequestFrame {
                id: 3,
                request: Request::InvokeCommand {
                    name: "echo".into(),
                    args: vec![String::new(); n],
                },
            })
            .unwrap()
        };
        assert!(decode_request(&frame(MAX_ARGS)).is_ok());
        let (id, e) = decode_request(&frame(MAX_ARGS + 1)).unwrap_err();
        assert_eq!(id, Some(3));
        assert!(
            matches!(&e, ProtocolError::BadRequest(m) if m.contains("at most 4096")),
            "{e:?}"
        );
    }

    #[test]
    fn byte_values_travel_as_messagepack_bin() {
        let bytes = rmp_serde::to_vec_named(&Request::KvPut {
            key: "k".into(),
            value: vec![1, 2, 3],
        })
        .unwrap();
        // ... "value": bin8 of length 3
        assert!(
            bytes.windows(5).any(|w| w == [0xc4, 3, 1, 2, 3]),
            "{bytes:x?}"
        );
    }

    #[test]
    fn unit_variants_are_bare_strings() {
        let bytes = rmp_serde::to_vec_named(&RequestFrame {
            id: 1,
            request: Request::Ping,
        })
        .unwrap();
        // {"id": 1, "request": "Ping"}
        let expected = [
            0x82, 0xa2, b'i', b'd', 0x01, 0xa7, b'r', b'e', b'q', b'u', b'e', b's', b't', 0xa4,
            b'P', b'i', b'n', b'g',
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn unknown_variants_are_told_apart_from_malformed_requests() {
        #[derive(Serialize)]
        struct Raw<R> {
            id: u64,
            request: R,
        }
        let unknown = rmp_serde::to_vec_named(&Raw {
            id: 7,
            request: "Frobnicate",
        })
        .unwrap();
        let (id, e) = decode_request(&unknown).unwrap_err();
        assert_eq!(id, Some(7));
        assert!(matches!(e, ProtocolError::UnknownRequest(n) if n == "Frobnicate"));

        let mut empty = std::collections::BTreeMap::new();
        empty.insert(
            "Shutdown",
            std::collections::BTreeMap::<String, String>::new(),
        );
        let missing = rmp_serde::to_vec_named(&Raw {
            id: 8,
            request: empty,
        })
        .unwrap();
        let (id, e) = decode_request(&missing).unwrap_err();
        assert_eq!(id, Some(8));
        assert!(
            matches!(e, ProtocolError::BadRequest(ref m) if m.contains("reason")),
            "{e:?}"
        );

        let (id, e) = decode_request(&rmp_serde::to_vec_named(&42u8).unwrap()).unwrap_err();
        assert_eq!(id, None);
        assert!(matches!(e, ProtocolError::BadRequest(_)));

        let no_request = rmp_serde::to_vec_named(
            &[("id", 3u8)]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
        .unwrap();
        let (id, e) = decode_request(&no_request).unwrap_err();
        assert_eq!(id, Some(3));
        assert!(matches!(e, ProtocolError::BadRequest(m) if m.contains("request")));
    }

    #[test]
    fn only_named_maps_holding_one_value_are_requests() {
        // [1, "Ping"]: a positional encoding.
        let (id, e) = decode_request(&[0x92, 0x01, 0xa4, b'P', b'i', b'n', b'g']).unwrap_err();
        assert_eq!(id, None);
        assert!(matches!(e, ProtocolError::BadRequest(_)));
        // {0: 2, 1: "Ping"}: keyed by field index.
        let (_, e) =
            decode_request(&[0x82, 0x00, 0x02, 0x01, 0xa4, b'P', b'i', b'n', b'g']).unwrap_err();
        assert!(matches!(e, ProtocolError::BadRequest(_)));
        // A valid request followed by a stray byte.
        let mut bytes = rmp_serde::to_vec_named(&RequestFrame {
            id: 9,
            request: Request::Ping,
        })
        .unwrap();
        bytes.push(0xc0);
        let (id, e) = decode_request(&bytes).unwrap_err();
        assert_eq!(id, Some(9));
        assert!(matches!(e, ProtocolError::BadRequest(m) if m.contains("after the value")));
    }

    #[test]
    fn a_readable_id_is_kept_whatever_is_wrong_with_the_request() {
        #[derive(Serialize)]
        struct Raw<R> {
            id: u64,
            request: R,
        }
        for bytes in [
            rmp_serde::to_vec_named(&Raw {
                id: 10,
                request: 17,
            })
            .unwrap(),
            rmp_serde::to_vec_named(&Raw {
                id: 10,
                request: true,
            })
            .unwrap(),
            rmp_serde::to_vec_named(&Raw {
                id: 10,
                request: ["Ping"],
            })
            .unwrap(),
        ] {
            let (id, e) = decode_request(&bytes).unwrap_err();
            assert_eq!(id, Some(10));
            assert!(matches!(e, ProtocolError::BadRequest(_)));
        }
    }

    #[test]
    fn payloads_are_maps_keyed_by_field_names() {
        #[derive(Serialize)]
        struct P<'a> {
            text: &'a str,
        }
        let value = to_payload(&P { text: "hi" }).unwrap().to_value();
        let map = value.as_map().unwrap();
        assert_eq!(map[0].0.as_str(), Some("text"));
        assert_eq!(map[0].1.as_str(), Some("hi"));
    }

    #[test]
    fn replies_decode_with_and_without_results() {
        let bytes = rmp_serde::to_vec_named(&ReplyFrame {
            id: 4,
            result: &"pong",
        })
        .unwrap();
        let head: FrameHead = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(head.id, Some(4));
        let typed: TypedReply<String> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(typed.result.as_deref(), Some("pong"));

        let body = ErrorBody {
            code: ErrorCode::NotFound,
            message: "x".into(),
        };
        let bytes = rmp_serde::to_vec_named(&ErrorFrame {
            id: None,
            error: &body,
        })
        .unwrap();
        let head: FrameHead = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!((head.id, head.error), (None, Some(body)));
    }
}
