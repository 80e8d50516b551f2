//! MCP servers as supervised children: the `mcp` supervisor starts one [`McpServerActor`]
//! per configured server (`config.rs`), each with a restart budget of its own. An actor owns
//! its server's process (a process group of its own, spoken to over stdio with the official
//! SDK, rmcp): it performs the `initialize` handshake, lists the tools and follows
//! `notifications/tools/list_changed`, and calls tools under the server's deadline.
//!
//! A server that exits, fails its handshake, sends a message past the bounds of its stdout
//! (`stdout.rs`: 16 MiB, 262,144 values and keys), or stops answering (a call runs past its
//! deadline and a `ping` then goes unanswered too, or a periodic `ping` does) is a crash:
//! the actor notes why, answers every call in flight with that reason (`calls.rs`), and
//! stops; the supervisor starts it again under its policy (past its budget it is `failed`).
//! Whenever the actor ends, the whole process group is terminated (SIGTERM, then SIGKILL):
//! no server, and nothing a server started, outlives it. Servers start with the open-file
//! limit the daemon started with, not the one it raised for its connections.
//!
//! Handles: [`CallTool`], and the supervision messages `Terminate` and `Inject`. The
//! table of servers that sessions read is `servers.rs`.

mod actor;
mod calls;
pub mod config;
mod convert;
pub mod faults;
pub mod groups;
mod launcher;
mod messages;
mod process;
pub mod servers;
pub mod stderr;
pub mod stdout;

use std::time::Duration;

pub use self::actor::McpServerActor;
pub use self::convert::{MAX_ARGUMENT_ITEMS, json_to_msgpack, msgpack_to_json};
pub use self::launcher::{Launcher, Recipe};
pub use self::messages::{
    CallTool, McpError, McpReloadReport, McpServerInfo, McpServerState, McpToolInfo, McpToolResult,
};
pub use self::process::{find_in_path, is_executable};

/// How long a server has to start and answer `initialize`.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a quiet server is asked whether it is still there, and how long it has to
/// answer.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a `ping` may take before the server counts as hung.
pub(super) const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the process group has after SIGTERM before SIGKILL.
pub(super) const TERM_GRACE: Duration = Duration::from_millis(500);
