//! Everything a client can ask, and each request's facts in one place.
//!
//! The `requests!` macro takes every variant once, with its wire name (the variant's), whether
//! it is audited and whether it changes state ([`Effect`]), what its audit entry names
//! ([`Request::target`]) and the method of [`Routes`] that serves it. From that one list it
//! makes the [`Request`] enum, its facts, and [`Request::route`]: the exhaustive `match` that
//! hands each request's fields to its [`Routes`] method. A server implements [`Routes`]; a
//! request added here without a route there does not compile:
//!
//! ```compile_fail,E0046
//! // Serves `Ping` only: every other request lacks its method.
//! struct PingOnly;
//! impl astrid_protocol::Routes for PingOnly {
//!     type Output = ();
//!     fn ping(self) {}
//! }
//! ```

use serde::{Deserialize, Serialize};

use crate::{ApprovalAnswer, Fault, RawValue, SettingValue};
#[allow(unused_imports, reason = "named by the variants' docs")]
use crate::{
    ApprovalSettled, AuditEntry, CapsuleInfo, CapsuleMetadata, CapsuleSetting, CommandInfo,
    CommandOutput, ConfigReport, CrashBundle, CrashSummary, CrashesRemoved, DirEntry,
    FaultInjected, FileStat, Grant, InstallPlan, InstallReport, KvValue, Listing, McpReloadReport,
    McpServerInfo, McpToolInfo, McpToolResult, PendingApproval, PruneReport, Published, ReadResult,
    ReloadReport, Removed, ReplayReport, SettingChanged, ShutdownAck, Status, Subscribed, TreeNode,
    TrustInfo, TrustReport, Unsubscribed, Verification, Written,
};

/// What a request does to the daemon, for its audit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Not recorded itself: `Ping`, and `InvokeCommand` (whose capsule's host calls are).
    Unaudited,
    /// Changes no state: recorded without waiting.
    Reads,
    /// Changes state: answered only once its audit entry is durable.
    Mutates,
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

/// Declares [`Request`] from one list of variants, each as
/// `Variant { fields } => route_method, effect[, target: expression];`, where `effect` is
/// `unaudited`, `reads` or `mutates` and the target expression sees the fields by reference.
macro_rules! requests {
    (
        $(
            $(#[$vmeta:meta])*
            $variant:ident $({
                $(
                    $(#[$fmeta:meta])*
                    $field:ident : $fty:ty
                ),* $(,)?
            })? => $route:ident, $effect:ident $(, target: $target:expr)?;
        )*
    ) => {
        /// Everything a client can ask. The README's "Protocol" section documents each variant
        /// and its result.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum Request {
            $(
                $(#[$vmeta])*
                $variant $({ $( $(#[$fmeta])* $field: $fty ),* })?,
            )*
        }

        impl Request {
            /// Every variant name, as it appears on the wire.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($variant)),*];

            /// The [`Effect`] of every variant, in the order of [`NAMES`](Self::NAMES).
            pub const EFFECTS: &'static [Effect] = &[$(requests!(@effect $effect)),*];

            /// This request's position in [`NAMES`](Self::NAMES): a number per kind, for
            /// tables indexed by kind (the daemon's request metrics).
            pub fn index(&self) -> usize {
                #[allow(non_camel_case_types, clippy::enum_variant_names, reason = "one variant per request, named as it")]
                enum Index { $($variant),* }
                match self {
                    $(Self::$variant { .. } => Index::$variant as usize,)*
                }
            }

            /// This request's variant name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => stringify!($variant),)*
                }
            }

            /// Whether it is audited, and whether it changes state.
            pub fn effect(&self) -> Effect {
                match self {
                    $(Self::$variant { .. } => requests!(@effect $effect),)*
                }
            }

            /// Whether the request changes state. Such a request is answered only once its
            /// audit entry is durable; the others are audited without waiting.
            pub fn mutates(&self) -> bool {
                self.effect() == Effect::Mutates
            }

            /// What the request is about, for its audit entry: a key, a path, a topic, a
            /// capability (empty when it is about nothing in particular).
            #[allow(unused_variables, reason = "each variant's target uses some fields")]
            pub fn target(&self) -> String {
                match self {
                    $(Self::$variant { $($($field),*)? } => requests!(@target $($target)?),)*
                }
            }

            /// Hands the request's fields to the method of `to` that serves it.
            pub fn route<R: Routes>(self, to: R) -> R::Output {
                match self {
                    $(Self::$variant { $($($field),*)? } => to.$route($($($field),*)?),)*
                }
            }
        }

        /// What serves requests: one method per [`Request`] variant, taking its fields, as
        /// [`Request::route`] calls it.
        pub trait Routes {
            /// What serving a request gives.
            type Output;
            $(
                #[doc = concat!("Serves `", stringify!($variant), "`.")]
                fn $route(self $($(, $field: $fty)*)?) -> Self::Output;
            )*
        }
    };
    (@effect unaudited) => { Effect::Unaudited };
    (@effect reads) => { Effect::Reads };
    (@effect mutates) => { Effect::Mutates };
    (@target) => { String::new() };
    (@target $target:expr) => { $target };
}

requests! {
    /// Liveness check, answered by the connection's session. Result: `"pong"`.
    Ping => ping, unaudited;
    /// Daemon status. Result: [`Status`].
    GetStatus => get_status, reads;
    /// The daemon's metrics, as OpenMetrics text ending in `# EOF` (see the README's
    /// "Metrics"). Only reads: like `GetStatus`, not recorded unless the audit policy says
    /// so. Result: a string.
    GetMetrics => get_metrics, reads;
    /// The daemon's effective settings, each with where it came from, and its audit
    /// policy. Result: [`ConfigReport`].
    GetConfig => get_config, reads;
    /// Graceful shutdown. The reply is sent before the daemon stops. Result: [`ShutdownAck`].
    Shutdown {
        /// Recorded in the log and in the `astrid.kernel.shutdown` event.
        reason: String,
    } => shutdown, mutates, target: reason.clone();
    /// Capsules and their state. Result: list of [`CapsuleInfo`].
    ListCapsules => list_capsules, reads;
    /// Rescan capsule folders. Result: [`ReloadReport`].
    ReloadCapsules => reload_capsules, mutates;
    /// Slash commands offered by the built-in capsule and loaded capsules. Result: list of
    /// [`CommandInfo`].
    GetCommands => get_commands, reads;
    /// Runs a capsule's slash command and returns its output. Not audited itself (what the
    /// capsule does through host calls is). Result: [`CommandOutput`].
    InvokeCommand {
        /// Command name, without the slash.
        name: String,
        /// Its arguments, at most [`MAX_ARGS`].
        #[serde(default, deserialize_with = "bounded_args")]
        args: Vec<String>,
    } => invoke_command, unaudited, target: name.clone();
    /// Manifest-level metadata of one capsule, or all when `name` is absent or nil.
    /// Result: list of [`CapsuleMetadata`].
    GetCapsuleMetadata {
        /// Capsule name.
        #[serde(default)]
        name: Option<String>,
    } => get_capsule_metadata, reads, target: name.clone().unwrap_or_default();
    /// The live supervision tree. Result: [`TreeNode`] (the root).
    GetSupervisionTree => get_supervision_tree, reads;
    /// Receive events whose topic matches `pattern` on this connection. Result: [`Subscribed`].
    Subscribe {
        /// Dot-separated pattern; `*` matches one segment, a final `>` one or more.
        pattern: String,
    } => subscribe, reads, target: pattern.clone();
    /// Stop receiving events for `pattern`. Result: [`Unsubscribed`].
    Unsubscribe {
        /// A pattern previously passed to `Subscribe`.
        pattern: String,
    } => unsubscribe, reads, target: pattern.clone();
    /// Publish an event. Clients may publish only to the allowlist (`user.>` by default).
    /// Result: [`Published`].
    Publish {
        /// Concrete topic (no wildcards).
        topic: String,
        /// Any MessagePack value, nested at most [`MAX_DEPTH`](crate::raw::MAX_DEPTH) deep; nil
        /// when absent. The daemon keeps it as the client's bytes.
        #[serde(default)]
        payload: RawValue,
    } => publish, reads, target: topic.clone();
    /// Make an actor in the tree fail on purpose. Needs `--allow-fault-injection`.
    /// Result: [`FaultInjected`].
    InjectFault {
        /// Actor name as shown in the supervision tree (`bus`, `store`, `listener`, ...).
        target: String,
        /// What to do to it.
        fault: Fault,
    } => inject_fault, mutates, target: format!("{target}: {fault}");
    /// Read a key of the client namespace. Result: [`KvValue`].
    KvGet {
        /// Key.
        key: String,
    } => kv_get, reads, target: key.clone();
    /// Write a key of the client namespace; answered once durable. Result: [`Written`].
    KvPut {
        /// Key.
        key: String,
        /// Value (MessagePack bin).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    } => kv_put, mutates, target: key.clone();
    /// Delete a key of the client namespace; answered once durable. Result: [`Removed`].
    KvDelete {
        /// Key.
        key: String,
    } => kv_delete, mutates, target: key.clone();
    /// List keys of the client namespace by prefix. Result: [`Listing`].
    KvList {
        /// Prefix (empty for all).
        #[serde(default)]
        prefix: String,
        /// At most this many keys (default 1000).
        #[serde(default)]
        limit: Option<usize>,
    } => kv_list, reads, target: prefix.clone();
    /// Grant a capability to a capsule; persisted. Result: [`Grant`].
    GrantCapability {
        /// Capsule name.
        subject: String,
        /// Resource, e.g. `vfs:read:src/**`.
        resource: String,
    } => grant_capability, mutates, target: format!("{subject}:{resource}");
    /// Revoke a runtime grant. Result: [`Removed`].
    RevokeCapability {
        /// Capsule name.
        subject: String,
        /// Resource, exactly as granted.
        resource: String,
    } => revoke_capability, mutates, target: format!("{subject}:{resource}");
    /// List grants, of one capsule or all. Result: list of [`Grant`].
    ListCapabilities {
        /// Capsule name.
        #[serde(default)]
        subject: Option<String>,
    } => list_capabilities, reads, target: subject.clone().unwrap_or_default();
    /// Audit entries, oldest first: the last `n`, or `n` from sequence number `from` on
    /// (to page through the whole log). Result: list of [`AuditEntry`].
    AuditTail {
        /// How many (default 20, at most 1000).
        #[serde(default)]
        n: Option<usize>,
        /// First sequence number wanted.
        #[serde(default)]
        from: Option<u64>,
    } => audit_tail, reads;
    /// Verify the audit chain. Result: [`Verification`].
    AuditVerify => audit_verify, reads;
    /// Apply the audit log's retention now (by age and by size), leaving an anchor entry in
    /// place of what is removed. Result: [`PruneReport`].
    AuditPrune => audit_prune, mutates;
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
    } => vfs_read, reads, target: path.clone();
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
    } => vfs_write, mutates, target: path.clone();
    /// List a workspace directory. Result: list of [`DirEntry`].
    VfsList {
        /// Path relative to the workspace (`.` for the root).
        path: String,
    } => vfs_list, reads, target: path.clone();
    /// Describe a workspace path. Result: [`FileStat`].
    VfsStat {
        /// Path relative to the workspace.
        path: String,
    } => vfs_stat, reads, target: path.clone();
    /// Remove a workspace file or directory. Result: [`Removed`].
    VfsRemove {
        /// Path relative to the workspace.
        path: String,
        /// Remove a directory with its content.
        #[serde(default)]
        recursive: bool,
    } => vfs_remove, mutates, target: path.clone();
    /// Create a workspace directory. Result: [`Written`] (0 bytes).
    VfsMkdir {
        /// Path relative to the workspace.
        path: String,
        /// Create missing parents too.
        #[serde(default)]
        parents: bool,
    } => vfs_mkdir, mutates, target: path.clone();
    /// The configured MCP servers and their state. Result: list of [`McpServerInfo`].
    ListMcpServers => list_mcp_servers, reads;
    /// Reads the `mcp.toml` files again: unchanged servers run on, changed ones restart,
    /// removed ones stop, new ones start. Result: [`McpReloadReport`].
    ReloadMcp => reload_mcp, mutates;
    /// The tools of one MCP server, or of all when `server` is absent or nil. Result: list
    /// of [`McpToolInfo`].
    ListMcpTools {
        /// The server.
        #[serde(default)]
        server: Option<String>,
    } => list_mcp_tools, reads, target: server.clone().unwrap_or_default();
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
    } => call_mcp_tool, mutates, target: format!("{server}/{tool}");
    /// Trusts a workspace with its `.astrid/` as it is now, so that its capsules and MCP
    /// servers may run; when it is the daemon's own, they start at once. Result:
    /// [`TrustReport`].
    TrustWorkspace {
        /// The workspace, an absolute path (default: the daemon's).
        #[serde(default)]
        path: Option<String>,
    } => trust_workspace, mutates, target: path.clone().unwrap_or_default();
    /// Forgets a workspace's trust; when it is the daemon's own, its capsules and MCP
    /// servers stop at once. Result: [`TrustReport`].
    UntrustWorkspace {
        /// The workspace, an absolute path (default: the daemon's).
        #[serde(default)]
        path: Option<String>,
    } => untrust_workspace, mutates, target: path.clone().unwrap_or_default();
    /// Every trusted workspace, each checked against its `.astrid/` now. Result: list of
    /// [`TrustInfo`].
    ListTrust => list_trust, reads;
    /// The settings a capsule's manifest declares, and which are set (a secret's value is
    /// never shown). Result: list of [`CapsuleSetting`].
    ListSettings {
        /// The capsule.
        capsule: String,
    } => list_settings, reads, target: capsule.clone();
    /// Sets one of a capsule's settings; answered once the value is durable in the home.
    /// The audit entry names the setting, never its value. Result: [`SettingChanged`].
    SetSetting {
        /// The capsule.
        capsule: String,
        /// A setting its manifest declares.
        name: String,
        /// The value (at most 64 KiB of UTF-8).
        value: SettingValue,
    } => set_setting, mutates, target: format!("{capsule}/{name}");
    /// Removes the value of one of a capsule's settings (its default, if any, applies
    /// again). Result: [`SettingChanged`].
    UnsetSetting {
        /// The capsule.
        capsule: String,
        /// A setting its manifest declares.
        name: String,
    } => unset_setting, mutates, target: format!("{capsule}/{name}");
    /// Checks a capsule folder for installation into the home (its manifest and module are
    /// validated and compiled) and shows what it would bring. Result: [`InstallPlan`].
    InspectCapsule {
        /// The folder, an absolute path.
        path: String,
    } => inspect_capsule, reads, target: path.clone();
    /// Copies a capsule folder into `<home>/capsules/<name>` (replacing the capsule of that
    /// name), records its content, and reloads the capsules. Refused unless the folder still
    /// has `digest` (from `InspectCapsule`). Result: [`InstallReport`].
    InstallCapsule {
        /// The folder, an absolute path.
        path: String,
        /// `InspectCapsule`'s digest of it.
        digest: String,
    } => install_capsule, mutates, target: path.clone();
    /// Removes an installed capsule from the home and reloads the capsules. Result:
    /// [`Removed`].
    UninstallCapsule {
        /// Capsule name.
        name: String,
    } => uninstall_capsule, mutates, target: name.clone();
    /// The uses of `ask:` grants waiting for an answer, oldest first. Result: list of
    /// [`PendingApproval`].
    ListApprovals => list_approvals, reads;
    /// Answers a waiting use of an `ask:` grant. Result: [`ApprovalSettled`].
    AnswerApproval {
        /// Its number (`ListApprovals`, or the `approval.requested` event).
        id: u64,
        /// `once`, `always` or `deny`.
        answer: ApprovalAnswer,
    } => answer_approval, mutates, target: format!("{id}: {answer}");
    /// The crash bundles kept in `<home>/crashes/`, oldest first. Result: list of
    /// [`CrashSummary`].
    ListCrashes => list_crashes, reads;
    /// One crash bundle, with the calls of the crashed incarnation. Result: [`CrashBundle`].
    GetCrash {
        /// Its id.
        id: String,
    } => get_crash, reads, target: id.clone();
    /// Removes a crash bundle, or every one when `id` is absent or nil. Result:
    /// [`CrashesRemoved`].
    RemoveCrash {
        /// Its id.
        #[serde(default)]
        id: Option<String>,
    } => remove_crash, mutates, target: id.clone().unwrap_or_default();
    /// Replays a crash: the recorded calls against the crashed module in a fresh sandbox
    /// whose host imports answer from the recording (no service is touched). Result:
    /// [`ReplayReport`].
    ReplayCrash {
        /// Its id.
        id: String,
    } => replay_crash, reads, target: id.clone();
}
