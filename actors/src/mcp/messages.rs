//! What the MCP layer answers with, how an MCP request can fail, and the message the
//! server actors handle ([`CallTool`]; plus [`Terminate`](crate::supervisor::Terminate) and
//! [`Inject`](crate::supervisor::Inject) from their supervisor). Senders: sessions
//! (`CallMcpTool`) and capsules (`mcp_call`).

use std::time::Duration;

use actix::Message;
pub use astrid_protocol::payload::mcp::{
    McpReloadReport, McpServerInfo, McpServerState, McpToolInfo, McpToolResult,
};

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
