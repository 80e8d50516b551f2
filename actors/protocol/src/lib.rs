//! The Astrid daemon's wire contract, and an async client for it.
//!
//! A frontend (the `astrid` CLI, a bot, a web bridge) needs only this crate to talk to the
//! daemon: it holds the framing, the handshake, every request and reply payload, the error
//! codes, where a session's socket and token live, and [`client::Client`]. The daemon's
//! kernel (`astrid-actors`) uses these same types at its edge, so the two cannot drift
//! apart; nothing here depends on the kernel (no actix, wasmer, redb or rmcp).
//!
//! Every frame is a MessagePack map (see [`codec`]); enums are externally tagged, so a unit
//! variant is a bare string (`"Ping"`) and a variant with fields a one-entry map
//! (`{"Shutdown": {"reason": "..."}}`).
//!
//! # Layout
//!
//! - [`codec`]: the length-prefixed framing; [`raw`]: walking and copying MessagePack
//!   without decoding it ([`RawValue`]); `decode`: reading a request frame once.
//! - [`envelope`]: handshake, request, reply, error and event frames.
//! - [`request`]: every request, and each one's facts (name, audit, target, route).
//! - [`reply`] and [`payload`]: what replies and events carry.
//! - [`error`]: the stable error codes and the `{code, message}` body.
//! - [`layout`]: the home's folders and a session's files (socket, token, ready, ...).
//! - [`client`]: connect, handshake, pipelined requests, events (Tokio).

pub mod client;
pub mod codec;
mod decode;
pub mod envelope;
pub mod error;
pub mod layout;
pub mod payload;
#[cfg(test)]
mod props;
pub mod raw;
pub mod reply;
pub mod request;
#[cfg(test)]
mod tests;
mod value;

pub use self::codec::{EncodeError, FrameCodec, FrameError, encode_frame};
pub use self::decode::decode_request;
pub use self::envelope::{
    DEFAULT_MAX_FRAME_LEN, ErrorFrame, Event, EventFrame, FrameHead, Hello, PROTOCOL_VERSION,
    ReplyFrame, RequestFrame, TypedReply, Welcome, decode_map, to_payload,
};
pub use self::error::{ErrorBody, ErrorCode, ProtocolError};
pub use self::payload::approvals::{
    APPROVAL_ANSWERED, APPROVAL_REQUESTED, ApprovalAnswer, ApprovalSettled, PendingApproval,
};
pub use self::payload::audit::{Entry as AuditEntry, PruneReport, PrunedRange, Verification};
pub use self::payload::bus::{BusStats, Published, RawEvent, SubscriberStats};
pub use self::payload::caps::{Grant, GrantSource};
pub use self::payload::capsule_settings::{CapsuleSetting, SettingChanged, SettingValue};
pub use self::payload::capsules::{
    CapsuleInfo, CapsuleMetadata, CapsuleOrigin, CapsuleState, CommandInfo, HookInfo, ReloadReport,
};
pub use self::payload::config::{AuditLevel, ConfigReport, PolicyRule, Setting};
pub use self::payload::crash::{
    CallEnd, CallEntry, CrashBundle, CrashKind, CrashLimits, CrashModule, CrashSummary,
    CrashesRemoved, Divergence, HostCall, HostGiven, RecordedCall, ReplayReport,
};
pub use self::payload::fault::{BadFault, Fault, ImportEffect, ImportFault, McpEffect, StorageOp};
pub use self::payload::install::{InstallPlan, InstallReport};
pub use self::payload::mcp::{
    McpReloadReport, McpServerInfo, McpServerState, McpToolInfo, McpToolResult,
};
pub use self::payload::session::SessionInfo;
pub use self::payload::store::{Listing, StoreStats};
pub use self::payload::tree::{ChildState, Failure, NodeKind, RestartType, TreeNode};
pub use self::payload::trust::{TrustInfo, TrustState};
pub use self::payload::vfs::{DirEntry, EntryKind, FileStat, ReadResult};
pub use self::reply::{
    CommandOutput, FaultInjected, KvValue, Removed, ShutdownAck, Status, Subscribed, TrustReport,
    Unsubscribed, Written,
};
pub use self::request::{Effect, MAX_ARGS, Request, Routes};
pub use self::value::RawValue;
