//! What the MCP layer answers with, how an MCP request can fail, and the message the
//! server actors handle ([`CallTool`]; plus [`Terminate`](crate::supervisor::Terminate) and
//! [`Inject`](crate::supervisor::Inject) from their supervisor). Senders: sessions
//! (`CallMcpTool`) and capsules (`mcp_call`).

use std::time::Duration;

use actix::Message;
use serde::{Deserialize, Serialize};

/// Where a configured MCP server stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpServerState {
    /// Its process is starting, or the `initialize` handshake is under way.
    Starting,
    /// Initialized and serving tool calls.
    Running,
    /// It exited or stopped answering; a restart is scheduled.
    Restarting,
    /// Not running, and not coming back by itself.
    Stopped,
    /// Gave up after exhausting its restart budget.
    Failed,
    /// Its configuration entry is not valid (see `error`); it was not started.
    Invalid,
    /// Configured by a workspace that is not trusted (`error` says how to trust it); it was
    /// not started.
    Untrusted,
}

/// One MCP server, as `ListMcpServers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpServerInfo {
    /// Its configured name.
    pub name: String,
    /// Where it stands.
    pub state: McpServerState,
    /// Restarts so far.
    pub restarts: u32,
    /// Tools it offers now (0 unless running).
    pub tools: usize,
    /// Its process id, while it runs.
    pub pid: Option<u32>,
    /// The configured command and arguments.
    pub command: Vec<String>,
    /// The file it was configured in.
    pub source: String,
    /// What the server says it is (`serverInfo` name and version), once initialized.
    pub server_info: Option<String>,
    /// Why it is invalid, or its last failure.
    pub error: Option<String>,
}

/// What `ReloadMcp` changed: servers of the `mcp.toml` files, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpReloadReport {
    /// New entries, started.
    pub added: Vec<String>,
    /// Entries no longer there, stopped.
    pub removed: Vec<String>,
    /// Entries whose configuration changed, restarted.
    pub changed: Vec<String>,
    /// Entries left as they were, and their servers running on.
    pub unchanged: Vec<String>,
    /// The listing after the reload (as `ListMcpServers`).
    pub servers: Vec<McpServerInfo>,
}

/// One tool, as `ListMcpTools` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpToolInfo {
    /// The server that offers it.
    pub server: String,
    /// The tool's name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    pub input_schema: rmpv::Value,
}

/// The result of `CallMcpTool`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpToolResult {
    /// The server.
    pub server: String,
    /// The tool.
    pub tool: String,
    /// The content blocks, as the server sent them (`{"type": "text", "text": ...}`, ...).
    pub content: Vec<rmpv::Value>,
    /// Structured content, when the tool returns any.
    pub structured: Option<rmpv::Value>,
    /// The tool reports that it failed (`isError`); `content` says why.
    pub is_error: bool,
}

/// Why an MCP request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    /// No server of that name is configured.
    #[error("no MCP server named `{0}` is configured")]
    UnknownServer(String),
    /// Its configuration entry is not valid, or comes from a workspace that is not trusted.
    #[error("MCP server `{server}` cannot run: {reason}")]
    Invalid {
        /// The server.
        server: String,
        /// Why.
        reason: String,
    },
    /// Past its restart budget; it stays down.
    #[error("MCP server `{server}` has failed and stays down: {reason}")]
    Failed {
        /// The server.
        server: String,
        /// Its last failure.
        reason: String,
    },
    /// Starting or waiting out its backoff; retrying may succeed.
    #[error("MCP server `{0}` is not ready (starting or restarting); try again")]
    NotReady(String),
    /// The call did not complete within the server's deadline.
    #[error("MCP server `{server}` did not answer `{tool}` within {} ms", timeout.as_millis())]
    Deadline {
        /// The server.
        server: String,
        /// The tool.
        tool: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The server went away during the call (it exited, or was restarted).
    #[error("MCP server `{server}` went away during the call: {reason}")]
    Gone {
        /// The server.
        server: String,
        /// What happened.
        reason: String,
    },
    /// The server answered with a JSON-RPC error (an unknown tool, bad arguments, ...).
    #[error("MCP server `{server}` refused the call: {message}")]
    Remote {
        /// The server.
        server: String,
        /// Its error message.
        message: String,
    },
    /// The arguments are not a map.
    #[error("tool arguments must be a map of names to values: {0}")]
    BadArguments(String),
    /// The capsule calling has no `mcp:call:<server>/<tool>` capability.
    #[error("`{subject}` may not call `{server}/{tool}` (no mcp:call capability)")]
    Denied {
        /// The caller.
        subject: String,
        /// The server.
        server: String,
        /// The tool.
        tool: String,
    },
}

/// Calls a tool of the server (`tools/call`), under its deadline.
#[derive(Debug, Message)]
#[rtype(result = "Result<McpToolResult, McpError>")]
pub struct CallTool {
    /// The tool.
    pub tool: String,
    /// Its arguments (a JSON object).
    pub arguments: serde_json::Map<String, serde_json::Value>,
}
