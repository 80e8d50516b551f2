//! MCP servers and tools as clients see them: listings, tool results, what a reload changed.

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
