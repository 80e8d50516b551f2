//! MCP servers: `ListMcpServers`, `ReloadMcp`, `ListMcpTools`, `CallMcpTool`.

use std::future::Future;
use std::time::Duration;

use super::{Dispatch, blocking};
use crate::error::KernelError;
use crate::mcp::{self, CallTool, McpError, McpToolResult};
use crate::protocol::RawValue;
use crate::session::SessionDeps;

/// `ListMcpServers`.
pub(super) fn servers(d: Dispatch<'_>) {
    let servers = d.session.deps.mcp.table.list();
    d.run(async move { Ok(servers) });
}

/// `ReloadMcp`: off the session's thread, since checking the workspace's trust reads and
/// hashes files.
pub(super) fn reload(d: Dispatch<'_>) {
    let launcher = d.session.deps.mcp.clone();
    let reload = blocking("reloaded the MCP configuration", move || {
        Ok(launcher.reload())
    });
    d.run(reload);
}

/// `ListMcpTools`.
pub(super) fn tools(d: Dispatch<'_>, server: Option<&str>) {
    let tools = d
        .session
        .deps
        .mcp
        .table
        .tools(server)
        .map_err(KernelError::from);
    d.run(async move { tools });
}

/// `CallMcpTool`.
pub(super) fn call_tool(d: Dispatch<'_>, server: &str, tool: String, arguments: RawValue) {
    let call = call_mcp_tool(&d.session.deps, server, tool, arguments);
    d.run(call);
}

/// `CallMcpTool`: to the server's actor, under the server's deadline (plus a margin for
/// the hops).
fn call_mcp_tool(
    deps: &SessionDeps,
    server: &str,
    tool: String,
    arguments: RawValue,
) -> impl Future<Output = Result<McpToolResult, KernelError>> + 'static {
    let prepared = (|| {
        let arguments = match arguments {
            value if value.is_nil() => serde_json::Map::new(),
            value => match mcp::msgpack_to_json(&value) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(other) => return Err(McpError::BadArguments(format!("got {other}"))),
                Err(e) => return Err(McpError::BadArguments(e)),
            },
        };
        let route = deps.mcp.table.route(server)?;
        Ok((route, CallTool { tool, arguments }))
    })();
    async move {
        let (route, call) = prepared?;
        let margin = Duration::from_millis(500);
        Ok(route.actor.call(call, route.timeout + margin).await??)
    }
}
