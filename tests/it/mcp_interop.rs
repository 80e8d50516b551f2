//! Interoperability with an MCP server the daemon's authors did not write: the reference
//! server `@modelcontextprotocol/server-everything`, run with `npx -y` (fetched from the npm
//! registry on first use; `.ci/run` warms the cache). The handshake (`running`, its
//! `serverInfo`), the tool list (`echo` and its input schema), a call of `echo` through the
//! socket and the CLI, and the server's process gone after a shutdown. Skipped, saying so,
//! when `npx` is not on `PATH`.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::{Graceful, TestDaemon, assert_gone, find_in_path, patient_client, poll_async};
use astrid::client::Client;
use astrid::protocol::{
    McpServerInfo, McpServerState, McpToolInfo, McpToolResult, Request, to_payload,
};
use serde_json::{Value, json};

/// How long the server may take to start: a cold `npx -y` downloads the package first.
const STARTUP: Duration = Duration::from_mins(2);

/// Variables `npx` may need from the daemon's environment (those that are not set are
/// simply not passed on).
const NPM_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "npm_config_cache",
    "npm_config_registry",
    "npm_config_userconfig",
    "NPM_CONFIG_CACHE",
    "NPM_CONFIG_REGISTRY",
    "NPM_CONFIG_USERCONFIG",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

async fn server(client: &Client) -> McpServerInfo {
    let list: Vec<McpServerInfo> = client.call(Request::ListMcpServers).await.unwrap();
    list.into_iter().find(|s| s.name == "everything").unwrap()
}

/// The tail of the daemon's log, where the server's stderr goes: what to look at when the
/// server does not start.
fn log_tail(d: &TestDaemon) -> String {
    let logs = d.home.path().join("logs");
    let mut text = String::new();
    for name in common::files_in(&logs) {
        text.push_str(&std::fs::read_to_string(logs.join(name)).unwrap_or_default());
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits (up to [`STARTUP`]) until the server runs; panics with the daemon's log if it
/// fails or takes longer.
async fn wait_running(client: &Client, d: &TestDaemon) -> McpServerInfo {
    let running = poll_async(STARTUP, async || {
        let info = server(client).await;
        if info.state == McpServerState::Running {
            return Ok(info);
        }
        assert!(
            matches!(
                info.state,
                McpServerState::Starting | McpServerState::Restarting
            ),
            "the server did not start: {info:#?}\ndaemon log:\n{}",
            log_tail(d)
        );
        Err(info)
    })
    .await;
    running.unwrap_or_else(|info| {
        panic!(
            "not running within {STARTUP:?}: {info:#?}\ndaemon log:\n{}",
            log_tail(d)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_everything_starts_lists_its_tools_and_echoes() {
    if find_in_path("npx").is_none() {
        eprintln!("skipped: `npx` is not on PATH (install Node.js to run this test)");
        return;
    }
    let inherit: Vec<String> = NPM_ENV.iter().map(|v| format!("\"{v}\"")).collect();
    let config = format!(
        "[[server]]\nname = \"everything\"\ncommand = \"npx\"\n\
         args = [\"-y\", \"@modelcontextprotocol/server-everything\"]\n\
         inherit_env = [{}]\ncall_timeout = \"30s\"\n",
        inherit.join(", ")
    );
    let mut d = Graceful(TestDaemon::builder().mcp(&config).start());
    let client = patient_client(&d).await;

    // The handshake, however long the download takes.
    let started = Instant::now();
    let info = wait_running(&client, &d).await;
    eprintln!(
        "server-everything running after {:?}: {:?}",
        started.elapsed(),
        info.server_info
    );
    assert!(
        info.server_info
            .as_deref()
            .is_some_and(|i| i.contains("everything")),
        "{info:?}"
    );
    assert!(info.tools > 0, "{info:?}");
    let pid = info.pid.unwrap();

    // Its tools: `echo` takes a string `message`.
    let tools: Vec<McpToolInfo> = client
        .call(Request::ListMcpTools {
            server: Some("everything".into()),
        })
        .await
        .unwrap();
    assert_eq!(tools.len(), info.tools, "{tools:?}");
    let echo = tools
        .iter()
        .find(|t| t.name == "echo")
        .unwrap_or_else(|| panic!("no echo tool in {tools:#?}"));
    let schema = serde_json::to_value(&echo.input_schema).unwrap();
    assert_eq!(
        schema["properties"]["message"]["type"], "string",
        "{schema}"
    );
    assert_eq!(schema["required"], json!(["message"]), "{schema}");

    // A call through the socket, then the CLI.
    let result: McpToolResult = client
        .call(Request::CallMcpTool {
            server: "everything".into(),
            tool: "echo".into(),
            arguments: to_payload(&json!({"message": "hi"})).unwrap(),
        })
        .await
        .unwrap();
    assert!(!result.is_error, "{result:?}");
    let content = serde_json::to_value(&result.content).unwrap();
    assert_eq!(content[0]["type"], "text", "{content}");
    assert!(
        content[0]["text"].as_str().unwrap().contains("hi"),
        "{content}"
    );
    let out = d.cli(&[
        "--json",
        "mcp",
        "call",
        "everything",
        "echo",
        r#"{"message": "hello from the cli"}"#,
    ]);
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        printed["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("hello from the cli"),
        "{printed}"
    );
    // Nothing restarted it meanwhile (a very slow first download may have cost restarts
    // before it ran: the handshake has 30 s).
    assert_eq!(server(&client).await.restarts, info.restarts);

    // A shutdown takes the server (npx and the node process it started: its process
    // group) with it.
    let group = common::group_members(pid);
    assert!(group.contains(&pid), "{group:?}");
    drop(client);
    let status = d
        .terminate(common::DEADLINE)
        .expect("the daemon exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_gone("server-everything after the shutdown", &group);
}
