//! A stdio MCP server for testing the daemon's MCP client, built on `rmcp`.
//!
//! The daemon's integration tests and the load generator start it as an MCP server to exercise
//! the handshake, tool listing and calls, and the ways a server misbehaves: a tool that fails, a
//! tool that takes long (deadlines), a tool that kills the server, a server that stops answering,
//! restarts after a kill, process-group clean-up, environment isolation,
//! `notifications/tools/list_changed`, and results at and past the bounds of the daemon's
//! reader.
//!
//! Tools (arguments are JSON objects):
//!
//! | tool | arguments | result |
//! |---|---|---|
//! | `echo` | `{text: string}` | text `text` |
//! | `add` | `{a: number, b: number}` | text of the sum (`"5"`), structured content `{"sum": 5}` |
//! | `fail` | `{message?: string}` | `isError: true`, text `message` (default "this tool always fails") |
//! | `slow` | `{millis: integer}` | sleeps that long without blocking, then text `"slept <millis> ms"` |
//! | `freeze` | `{millis: integer}` | blocks the whole server (no request is answered) that long, then text `"thawed"` |
//! | `crash` | `{code?: integer}` | the process exits at once with `code` (default 3), no answer |
//! | `env` | `{name: string}` | text: the variable's value, or `"(unset)"` |
//! | `pid` | `{}` | text `{"pid": <pid>, "pgid": <process group id>}` |
//! | `spawn_sleeper` | `{}` | starts `sleep 1000` as a child, text `{"pid": <its pid>}` |
//! | `add_tool` | `{name: string}` | adds tool `name`, announces it, text `"added <name>"` |
//! | `big` | `{bytes: integer}` | text of `bytes` times `x` |
//! | `many` | `{items: integer}` | text `"<items> zeros"`, structured content `{"zeros": [0, 0, ...]}` with `items` zeros |
//! | `flood_stdout` | `{}` | writes `x` to stdout without end (one endless line), no answer |
//!
//! `add_tool` sends `notifications/tools/list_changed` before its answer; from then on
//! `tools/list` includes the new tool, which takes `{}` and returns text `"dynamic <name>"`.
//! Adding a name that exists already is a tool error (`isError: true`).
//!
//! The server speaks newline-delimited JSON-RPC on stdin and stdout, logs only to stderr and
//! takes no arguments. When stdin closes it exits with code 0; calls still running get up to
//! 5 seconds to answer first (`rmcp` drains them).
//!
//! ```sh
//! cargo run --example mcp-test-server
//! ```

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rmcp::handler::server::router::tool::{ToolRoute, ToolRouter};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, JsonObject, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::schemars::JsonSchema;
use rmcp::{Peer, RoleServer, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;

/// The server: its tools, the fixed ones and those `add_tool` added.
#[derive(Clone)]
struct TestServer {
    /// Copied on write: a call works on the router as it was when the call began, and
    /// `add_tool` swaps in a new one.
    tools: Arc<RwLock<Arc<ToolRouter<Self>>>>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct EchoArgs {
    /// The text to return.
    text: String,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct AddArgs {
    /// The first addend.
    a: f64,
    /// The second addend.
    b: f64,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct FailArgs {
    /// The error message to return (default "this tool always fails").
    message: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct MillisArgs {
    /// How long, in milliseconds.
    millis: u64,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct CrashArgs {
    /// The exit code (default 3).
    code: Option<i32>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct EnvArgs {
    /// The name of the environment variable.
    name: String,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct BigArgs {
    /// The length of the text, in bytes.
    bytes: usize,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct ManyArgs {
    /// How many zeros.
    items: usize,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct AddToolArgs {
    /// The name of the tool to add.
    name: String,
}

impl TestServer {
    fn new() -> Self {
        Self {
            tools: Arc::new(RwLock::new(Arc::new(Self::tool_router()))),
        }
    }

    /// The tools as they are now.
    fn tools(&self) -> Arc<ToolRouter<Self>> {
        Arc::clone(&self.tools.read().expect("the tool lock is never poisoned"))
    }
}

#[tool_router]
impl TestServer {
    /// Returns `text`.
    #[tool]
    fn echo(Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    /// Adds `a` and `b`.
    #[tool]
    fn add(Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> CallToolResult {
        let sum = a + b;
        if !sum.is_finite() {
            return CallToolResult::error(vec![ContentBlock::text("the sum is not finite")]);
        }
        let text = sum.to_string();
        // From the text, so that 2 + 3 is 5 rather than 5.0.
        let number: serde_json::Value =
            serde_json::from_str(&text).expect("a finite f64 prints as a JSON number");
        let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
        result.structured_content = Some(json!({ "sum": number }));
        result
    }

    /// Always fails, with `message`.
    #[tool]
    fn fail(Parameters(FailArgs { message }): Parameters<FailArgs>) -> CallToolResult {
        let message = message.unwrap_or_else(|| "this tool always fails".to_owned());
        CallToolResult::error(vec![ContentBlock::text(message)])
    }

    /// Sleeps `millis` milliseconds without blocking other requests.
    #[tool]
    async fn slow(Parameters(MillisArgs { millis }): Parameters<MillisArgs>) -> String {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        format!("slept {millis} ms")
    }

    /// Blocks the whole server for `millis` milliseconds: nothing is answered meanwhile.
    #[tool]
    fn freeze(Parameters(MillisArgs { millis }): Parameters<MillisArgs>) -> String {
        // The runtime has one thread, and this blocks it.
        std::thread::sleep(Duration::from_millis(millis));
        "thawed".to_owned()
    }

    /// Exits the process at once with `code`, without answering.
    #[tool]
    fn crash(Parameters(CrashArgs { code }): Parameters<CrashArgs>) -> String {
        std::process::exit(code.unwrap_or(3))
    }

    /// Returns the value of the environment variable `name`, or "(unset)".
    #[tool]
    fn env(Parameters(EnvArgs { name }): Parameters<EnvArgs>) -> String {
        std::env::var_os(name).map_or_else(
            || "(unset)".to_owned(),
            |value| value.to_string_lossy().into_owned(),
        )
    }

    /// Returns the server's process id and process group id.
    #[tool]
    fn pid() -> String {
        json!({
            "pid": rustix::process::getpid().as_raw_nonzero(),
            "pgid": rustix::process::getpgrp().as_raw_nonzero(),
        })
        .to_string()
    }

    /// Starts `sleep 1000` in the server's process group and returns its process id.
    #[tool]
    fn spawn_sleeper() -> Result<String, rmcp::ErrorData> {
        let mut child = Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                rmcp::ErrorData::internal_error(format!("cannot start sleep: {e}"), None)
            })?;
        let pid = child.id();
        // Reaped if it dies before the server does, so it does not linger as a zombie.
        std::thread::spawn(move || child.wait());
        Ok(json!({ "pid": pid }).to_string())
    }

    /// Returns a text of `bytes` times `x`.
    #[tool]
    fn big(Parameters(BigArgs { bytes }): Parameters<BigArgs>) -> String {
        "x".repeat(bytes)
    }

    /// Returns `items` zeros as structured content.
    #[tool]
    fn many(Parameters(ManyArgs { items }): Parameters<ManyArgs>) -> CallToolResult {
        let mut result =
            CallToolResult::success(vec![ContentBlock::text(format!("{items} zeros"))]);
        result.structured_content = Some(json!({ "zeros": vec![0; items] }));
        result
    }

    /// Writes `x` to stdout without end (one endless line) and never answers.
    #[tool]
    async fn flood_stdout() -> String {
        // From a thread of its own; the process exits once stdout is closed.
        std::thread::spawn(|| {
            let chunk = vec![b'x'; 64 * 1024];
            let mut stdout = std::io::stdout();
            while stdout.write_all(&chunk).is_ok() {}
            std::process::exit(0)
        });
        std::future::pending().await
    }

    /// Adds a tool called `name` and tells the client that the tool list changed.
    #[tool]
    async fn add_tool(
        &self,
        peer: Peer<RoleServer>,
        Parameters(AddToolArgs { name }): Parameters<AddToolArgs>,
    ) -> CallToolResult {
        {
            let mut tools = self.tools.write().expect("the tool lock is never poisoned");
            if tools.has_route(&name) {
                return CallToolResult::error(vec![ContentBlock::text(format!(
                    "a tool called {name} exists already"
                ))]);
            }
            let mut router = ToolRouter::clone(&tools);
            router.add_route(dynamic_tool(name.clone()));
            *tools = Arc::new(router);
        }
        if let Err(e) = peer.notify_tool_list_changed().await {
            eprintln!("mcp-test-server: cannot send tools/list_changed: {e}");
        }
        CallToolResult::success(vec![ContentBlock::text(format!("added {name}"))])
    }
}

/// A tool added by `add_tool`: it takes no arguments and returns "dynamic <name>".
fn dynamic_tool(name: String) -> ToolRoute<TestServer> {
    let text = format!("dynamic {name}");
    let schema: JsonObject = json!({ "type": "object" })
        .as_object()
        .cloned()
        .expect("a JSON object");
    let tool = Tool::new(name, "A tool added by add_tool.", schema);
    ToolRoute::new_dyn(tool, move |_context| {
        let result = CallToolResult::success(vec![ContentBlock::text(text.clone())]);
        Box::pin(std::future::ready(Ok(result.into())))
    })
}

#[tool_handler(router = self.tools())]
impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        ServerConfig::new(capabilities).with_server_info(Implementation::new(
            "astrid-mcp-test-server",
            env!("CARGO_PKG_VERSION"),
        ))
    }
}

// One thread, so that `freeze` stops the whole server.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    eprintln!(
        "mcp-test-server: pid {} serving on stdio",
        std::process::id()
    );
    let server = match TestServer::new().serve(rmcp::transport::stdio()).await {
        Ok(server) => server,
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => {
            eprintln!("mcp-test-server: stdin closed before initialization");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let reason = server.waiting().await?;
    eprintln!("mcp-test-server: stopped ({reason:?})");
    Ok(())
}
