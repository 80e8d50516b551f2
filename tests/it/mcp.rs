//! MCP servers end to end: real daemons whose `mcp.toml` runs the example server
//! `examples/mcp-test-server.rs` (built by `cargo build --examples`), driven through the
//! socket and the CLI. The handshake and listings (and the `mcp` subtree), tool calls with
//! their results and errors (audited), a tool that fails, a capsule calling a tool through
//! `mcp_call` with and without its grant, a capsule's own `[[mcp_server]]` (across
//! supervisor restarts, reloads and unloading), `ReloadMcp` (only what changed restarts),
//! a call past its deadline (no restart while the
//! server still answers `ping`), a server that crashes, is killed from outside, hangs, or
//! whose actor gets an injected fault (each restarted as a fresh process, then serving
//! again), a restart budget exhausted (`failed`, the rest unaffected), process groups
//! (nothing a server started outlives its incarnation, nor the daemon stopped by
//! `Shutdown`, `astrid stop` or SIGTERM; the servers themselves not even SIGKILL), a server that never answers `initialize`, the
//! servers' environment (exactly what is configured), bad entries (`invalid`, naming the
//! file and the field), commands that do not exist or are found through `PATH`, workspace
//! entries overriding home ones, and `notifications/tools/list_changed`.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::{
    DEADLINE, Graceful, TestDaemon, assert_gone, copy_capsule, example_capsule, failure,
    find_in_path, mcp_test_server, patient_client, poll_async, process_alive, process_group,
    short_tempdir, wait_audit, wait_node, write_capsule,
};
use astrid::client::{Client, ClientError};
use astrid::protocol::{
    ChildState, CommandOutput, ErrorCode, Fault, FaultInjected, McpReloadReport, McpServerInfo,
    McpServerState, McpToolInfo, McpToolResult, NodeKind, ReloadReport, Request, ShutdownAck,
    TrustReport, to_payload,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The tools of the test server, sorted.
const TOOLS: [&str; 13] = [
    "add",
    "add_tool",
    "big",
    "crash",
    "echo",
    "env",
    "fail",
    "flood_stdout",
    "freeze",
    "many",
    "pid",
    "slow",
    "spawn_sleeper",
];

/// How long a `ping` may take before the daemon declares a server hung (the actor's
/// `PING_TIMEOUT`).
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A `[[server]]` entry running the test server, with `extra` lines of TOML after its
/// name and command (a `[server.restart]` table goes last).
fn test_server(name: &str, extra: &str) -> String {
    format!(
        "[[server]]\nname = \"{name}\"\ncommand = \"{}\"\n{extra}\n",
        mcp_test_server().display()
    )
}

/// Trusts the daemon's workspace, so that its own `mcp.toml` runs (see `trust.rs`).
async fn trust_workspace(client: &Client) {
    let _: TrustReport = client
        .call(Request::TrustWorkspace { path: None })
        .await
        .unwrap();
}

/// A `[[server]]` entry that runs `sleep 1000`: it starts, and never answers `initialize`.
fn mute_server(name: &str) -> String {
    let sleep = find_in_path("sleep").expect("`sleep` is on PATH");
    format!(
        "[[server]]\nname = \"{name}\"\ncommand = \"{}\"\nargs = [\"1000\"]\n",
        sleep.display()
    )
}

/// A persistent daemon whose home holds `mcp.toml` with `config`, stopped cleanly (with
/// its servers) when dropped.
fn start(config: &str) -> Graceful {
    Graceful(TestDaemon::builder().mcp(config).start())
}

fn home_config(d: &TestDaemon) -> String {
    d.home.path().join("mcp.toml").display().to_string()
}

async fn servers(client: &Client) -> Vec<McpServerInfo> {
    client.call(Request::ListMcpServers).await.unwrap()
}

async fn server(client: &Client, name: &str) -> McpServerInfo {
    let list = servers(client).await;
    list.iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no server `{name}` in {list:#?}"))
        .clone()
}

/// Polls `ListMcpServers` until server `name` is listed and `cond` holds for it.
async fn wait_server(
    client: &Client,
    name: &str,
    cond: impl Fn(&McpServerInfo) -> bool,
) -> McpServerInfo {
    let pick = |list: &Vec<McpServerInfo>| list.iter().find(|s| s.name == name && cond(s)).cloned();
    common::poll_until(&format!("server `{name}`"), || servers(client), pick).await
}

/// Waits until server `name` runs (handshake done).
async fn running(client: &Client, name: &str) -> McpServerInfo {
    wait_server(client, name, |s| s.state == McpServerState::Running).await
}

/// Waits until server `name` has been restarted `n` times in all and runs again, as a
/// process other than `old_pid`.
async fn restarted(client: &Client, name: &str, n: u32, old_pid: u32) -> McpServerInfo {
    let info = wait_server(client, name, |s| {
        s.restarts == n && s.state == McpServerState::Running
    })
    .await;
    assert_ne!(info.pid, Some(old_pid), "{info:?}");
    info
}

async fn tools(client: &Client, server: Option<&str>) -> Result<Vec<McpToolInfo>, ClientError> {
    client
        .call(Request::ListMcpTools {
            server: server.map(str::to_owned),
        })
        .await
}

fn names(tools: &[McpToolInfo]) -> Vec<&str> {
    let mut v: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    v.sort_unstable();
    v
}

/// Calls `server/tool` with `arguments` as given on the wire.
async fn call_raw(
    client: &Client,
    server: &str,
    tool: &str,
    arguments: rmpv::Value,
) -> Result<McpToolResult, ClientError> {
    client
        .call(Request::CallMcpTool {
            server: server.into(),
            tool: tool.into(),
            arguments: astrid::protocol::RawValue::from_value(&arguments).unwrap(),
        })
        .await
}

/// Calls `server/tool` with JSON `arguments`.
async fn call(
    client: &Client,
    server: &str,
    tool: &str,
    arguments: Value,
) -> Result<McpToolResult, ClientError> {
    call_raw(
        client,
        server,
        tool,
        to_payload(&arguments).unwrap().to_value(),
    )
    .await
}

/// The text of a result's only content block.
fn text(result: &McpToolResult) -> String {
    let content = serde_json::to_value(&result.content).unwrap();
    assert_eq!(content.as_array().map(Vec::len), Some(1), "{result:?}");
    assert_eq!(content[0]["type"], "text", "{result:?}");
    content[0]["text"].as_str().unwrap().to_owned()
}

/// Calls a tool that must succeed and returns its text.
async fn ok_text(client: &Client, server: &str, tool: &str, arguments: Value) -> String {
    let result = call(client, server, tool, arguments)
        .await
        .unwrap_or_else(|e| panic!("{server}/{tool} failed: {e}"));
    assert!(!result.is_error, "{result:?}");
    text(&result)
}

async fn echo(client: &Client, server: &str, what: &str) -> String {
    ok_text(client, server, "echo", json!({ "text": what })).await
}

/// The server's own idea of its process id and process group (the `pid` tool).
async fn pid_and_group(client: &Client, server: &str) -> (u32, u32) {
    let answer: Value =
        serde_json::from_str(&ok_text(client, server, "pid", json!({})).await).unwrap();
    let get = |key: &str| u32::try_from(answer[key].as_u64().unwrap()).unwrap();
    (get("pid"), get("pgid"))
}

/// Starts `sleep 1000` inside the server's process group; its process id.
async fn spawn_sleeper(client: &Client, server: &str) -> u32 {
    let answer: Value =
        serde_json::from_str(&ok_text(client, server, "spawn_sleeper", json!({})).await).unwrap();
    let pid = u32::try_from(answer["pid"].as_u64().unwrap()).unwrap();
    assert!(process_alive(pid), "sleeper {pid} is not running");
    pid
}

/// Runs `work` while a 30 s call of `slow` to `server` is in flight (the server has it
/// before `work` starts); both outcomes.
async fn with_a_call_in_flight<T>(
    client: &Client,
    server: &str,
    work: impl Future<Output = T>,
) -> (Result<McpToolResult, ClientError>, T) {
    let slow = call(client, server, "slow", json!({"millis": 30_000}));
    tokio::pin!(slow);
    // Requests on one connection reach the server in order: once it answers the echo
    // written after the call, it has the call.
    tokio::select! {
        biased;
        answer = &mut slow => panic!("the slow call ended first: {answer:?}"),
        _ = echo(client, server, "after the slow call") => {}
    }
    tokio::join!(slow, work)
}

fn kill9(pid: u32) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The CLI's output, which must have succeeded.
#[track_caller]
fn cli_ok(d: &TestDaemon, args: &[&str]) -> String {
    let out = d.cli(args);
    assert!(out.status.success(), "astrid {args:?}: {out:?}");
    stdout(&out)
}

/// The CLI's stderr, which must have failed with status 1.
#[track_caller]
fn cli_fails(d: &TestDaemon, args: &[&str]) -> String {
    let out = d.cli(args);
    assert_eq!(out.status.code(), Some(1), "astrid {args:?}: {out:?}");
    stderr(&out)
}

// ---------------------------------------------------------------------------------------
// Handshake and listings
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_start_and_their_tools_are_listed_through_the_socket_and_the_cli() {
    let d = start(&(test_server("alpha", "") + &test_server("beta", "")));
    let client = patient_client(&d).await;

    for name in ["alpha", "beta"] {
        let info = running(&client, name).await;
        assert_eq!(info.restarts, 0, "{info:?}");
        assert_eq!(info.tools, TOOLS.len(), "{info:?}");
        assert!(
            info.server_info
                .as_deref()
                .is_some_and(|i| i.starts_with("astrid-mcp-test-server ")),
            "{info:?}"
        );
        assert_eq!(
            info.command,
            [mcp_test_server().display().to_string()],
            "{info:?}"
        );
        assert_eq!(info.source, home_config(&d), "{info:?}");
        assert!(info.error.is_none(), "{info:?}");
        // The listed pid is the server, leading a process group of its own.
        let pid = info.pid.unwrap();
        assert!(process_alive(pid), "{info:?}");
        assert_eq!(pid_and_group(&client, name).await, (pid, pid));
    }
    assert_eq!(
        servers(&client)
            .await
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["alpha", "beta"]
    );

    // In the supervision tree: a nested supervisor `mcp` with one child per server.
    let tree = client.tree().await.unwrap();
    let mcp = tree.find("mcp").unwrap();
    assert_eq!(mcp.kind, NodeKind::Supervisor, "{mcp:#?}");
    let children: Vec<&str> = mcp.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(children, ["mcp:alpha", "mcp:beta"], "{mcp:#?}");
    for child in &mcp.children {
        assert_eq!(child.state, ChildState::Running, "{child:?}");
        assert_eq!(child.restarts, 0, "{child:?}");
    }

    // The tools of one server, with their descriptions and input schemas.
    let alpha = tools(&client, Some("alpha")).await.unwrap();
    assert_eq!(names(&alpha), TOOLS);
    assert!(alpha.iter().all(|t| t.server == "alpha"), "{alpha:?}");
    let echo_tool = alpha.iter().find(|t| t.name == "echo").unwrap();
    assert_eq!(echo_tool.description.as_deref(), Some("Returns `text`."));
    let schema = serde_json::to_value(&echo_tool.input_schema).unwrap();
    assert_eq!(schema["type"], "object", "{schema}");
    assert_eq!(schema["properties"]["text"]["type"], "string", "{schema}");
    assert_eq!(schema["required"], json!(["text"]), "{schema}");
    // Of every server (`server` nil).
    let all = tools(&client, None).await.unwrap();
    assert_eq!(all.len(), 2 * TOOLS.len(), "{all:?}");
    for name in ["alpha", "beta"] {
        let theirs: Vec<McpToolInfo> = all.iter().filter(|t| t.server == name).cloned().collect();
        assert_eq!(names(&theirs), TOOLS);
    }
    let (code, message) = failure(tools(&client, Some("gamma")).await);
    assert_eq!(code, ErrorCode::NotFound, "{message}");
    assert!(message.contains("`gamma`"), "{message}");

    // The CLI: a table, and JSON equal to what the socket says.
    let table = cli_ok(&d, &["mcp", "ls"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME"), "{table}");
    for (line, name) in lines[1..].iter().zip(["alpha", "beta"]) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let tools = TOOLS.len().to_string();
        assert_eq!(&cols[..4], [name, "running", "0", &tools], "{table}");
        assert!(line.contains("astrid-mcp-test-server"), "{table}");
    }
    let listed: Vec<McpServerInfo> =
        serde_json::from_str(&cli_ok(&d, &["--json", "mcp", "ls"])).unwrap();
    assert_eq!(listed, servers(&client).await);
    let printed = cli_ok(&d, &["mcp", "tools", "alpha"]);
    assert_eq!(printed.lines().count(), TOOLS.len(), "{printed}");
    assert!(
        printed.lines().any(|l| l == "alpha/echo  Returns `text`."),
        "{printed}"
    );
    assert_eq!(
        cli_ok(&d, &["mcp", "tools"]).lines().count(),
        2 * TOOLS.len()
    );
    let listed: Vec<McpToolInfo> =
        serde_json::from_str(&cli_ok(&d, &["--json", "mcp", "tools", "beta"])).unwrap();
    assert_eq!(listed, tools(&client, Some("beta")).await.unwrap());
    let err = cli_fails(&d, &["mcp", "tools", "gamma"]);
    assert!(err.contains("not_found"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_called_and_bad_calls_get_the_right_errors() {
    let d = start(&test_server("t", ""));
    let client = patient_client(&d).await;
    running(&client, "t").await;

    // echo: one text block, no structured content.
    let result = call(&client, "t", "echo", json!({"text": "hello"}))
        .await
        .unwrap();
    assert_eq!(result.server, "t");
    assert_eq!(result.tool, "echo");
    assert!(!result.is_error);
    assert_eq!(
        serde_json::to_value(&result.content).unwrap(),
        json!([{"type": "text", "text": "hello"}])
    );
    assert!(result.structured.is_none(), "{result:?}");

    // add: the sum as text and as structured content.
    let result = call(&client, "t", "add", json!({"a": 2, "b": 3}))
        .await
        .unwrap();
    assert_eq!(text(&result), "5");
    assert_eq!(
        serde_json::to_value(result.structured.as_ref().unwrap()).unwrap(),
        json!({"sum": 5})
    );
    let result = call(&client, "t", "add", json!({"a": 0.5, "b": -2.25}))
        .await
        .unwrap();
    assert_eq!(text(&result), "-1.75");
    assert_eq!(
        serde_json::to_value(result.structured.as_ref().unwrap()).unwrap(),
        json!({"sum": -1.75})
    );

    // Nil arguments are no arguments.
    let result = call_raw(&client, "t", "pid", rmpv::Value::Nil)
        .await
        .unwrap();
    assert!(text(&result).contains("\"pgid\""), "{result:?}");
    // ... which a tool that needs some refuses: the server answers with a tool error.
    let result = call_raw(&client, "t", "echo", rmpv::Value::Nil)
        .await
        .unwrap();
    assert!(result.is_error, "{result:?}");
    assert!(text(&result).contains("missing field `text`"), "{result:?}");

    // Arguments that are not a map never reach the server.
    for bad in [
        rmpv::Value::Array(vec![1.into(), 2.into()]),
        rmpv::Value::from("text"),
        rmpv::Value::from(7),
        rmpv::Value::Map(vec![(1.into(), 2.into())]),
    ] {
        let (code, message) = failure(call_raw(&client, "t", "echo", bad.clone()).await);
        assert_eq!(code, ErrorCode::InvalidArgument, "{bad}: {message}");
        assert!(message.contains("map"), "{bad}: {message}");
    }

    // An unknown tool is the server's JSON-RPC error; an unknown server is not found.
    let (code, message) = failure(call(&client, "t", "nope", json!({})).await);
    assert_eq!(code, ErrorCode::McpError, "{message}");
    assert!(message.contains("`t`"), "{message}");
    let (code, message) = failure(call(&client, "zz", "echo", json!({"text": "x"})).await);
    assert_eq!(code, ErrorCode::NotFound, "{message}");
    assert!(message.contains("`zz`"), "{message}");

    // Calls run side by side: four slow calls take about as long as one.
    let started = Instant::now();
    let slow = |ms: u64| call(&client, "t", "slow", json!({ "millis": ms }));
    let results = tokio::join!(slow(400), slow(400), slow(400), slow(400));
    for result in <[_; 4]>::from(results) {
        assert_eq!(text(&result.unwrap()), "slept 400 ms");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // None of this was a crash.
    let info = server(&client, "t").await;
    assert_eq!(
        (info.state, info.restarts),
        (McpServerState::Running, 0),
        "{info:?}"
    );

    // Calls are audited, with their outcome.
    wait_audit(&client, "the echo call", |e| {
        e.action == "CallMcpTool" && e.target == "t/echo" && e.outcome == "ok"
    })
    .await;
    wait_audit(&client, "the call of an unknown tool", |e| {
        e.action == "CallMcpTool" && e.target == "t/nope" && e.outcome.contains("mcp_error")
    })
    .await;

    the_cli_calls_tools(&d);
}

/// `astrid mcp call` against server `t`: text content as is, `--json` for the whole result,
/// errors with status 1.
fn the_cli_calls_tools(d: &TestDaemon) {
    assert_eq!(
        cli_ok(d, &["mcp", "call", "t", "echo", r#"{"text": "hi there"}"#]),
        "hi there\n"
    );
    assert_eq!(
        cli_ok(d, &["mcp", "call", "t", "add", r#"{"a": 2, "b": 3}"#]),
        "5\n"
    );
    let printed: Value = serde_json::from_str(&cli_ok(
        d,
        &["--json", "mcp", "call", "t", "add", r#"{"a": 2, "b": 3}"#],
    ))
    .unwrap();
    assert_eq!(
        printed,
        json!({"server": "t", "tool": "add", "content": [{"type": "text", "text": "5"}],
               "structured": {"sum": 5}, "is_error": false})
    );
    // No JSON: no arguments.
    assert!(cli_ok(d, &["mcp", "call", "t", "pid"]).contains("pgid"));
    let err = cli_fails(d, &["mcp", "call", "t", "nope"]);
    assert!(err.contains("mcp_error"), "{err}");
    let err = cli_fails(d, &["mcp", "call", "zz", "echo"]);
    assert!(err.contains("not_found"), "{err}");
    // The CLI refuses arguments that are not a JSON object itself.
    let err = cli_fails(d, &["mcp", "call", "t", "echo", "[1]"]);
    assert!(err.contains("JSON object"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_fields_may_be_left_out_on_the_wire() {
    let d = start(&test_server("t", ""));
    running(&patient_client(&d).await, "t").await;
    let mut raw = d.raw();
    let map = |entries: Vec<(&str, rmpv::Value)>| {
        rmpv::Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    };

    // `ListMcpTools` without `server`: every server's tools.
    raw.request(1, map(vec![("ListMcpTools", map(vec![]))]));
    let reply = raw.recv().unwrap();
    assert_eq!(common::get(&reply, "id"), &rmpv::Value::from(1), "{reply}");
    let listed = common::get(&reply, "result").as_array().unwrap();
    assert_eq!(listed.len(), TOOLS.len(), "{reply}");
    // `CallMcpTool` without `arguments`: none.
    raw.request(
        2,
        map(vec![(
            "CallMcpTool",
            map(vec![("server", "t".into()), ("tool", "pid".into())]),
        )]),
    );
    let reply = raw.recv().unwrap();
    let result = common::get(&reply, "result");
    assert_eq!(
        common::get(result, "is_error"),
        &rmpv::Value::from(false),
        "{reply}"
    );
    // Without `tool`: a bad request.
    raw.request(
        3,
        map(vec![("CallMcpTool", map(vec![("server", "t".into())]))]),
    );
    let reply = raw.recv().unwrap();
    assert_eq!(common::error_code(&reply), Some("bad_request"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tool_is_an_error_result_not_a_crash() {
    let d = start(&test_server("t", ""));
    let client = patient_client(&d).await;
    let before = running(&client, "t").await;

    let result = call(&client, "t", "fail", json!({"message": "boom"}))
        .await
        .unwrap();
    assert!(result.is_error, "{result:?}");
    assert_eq!(text(&result), "boom");
    let result = call_raw(&client, "t", "fail", rmpv::Value::Nil)
        .await
        .unwrap();
    assert!(result.is_error, "{result:?}");
    assert_eq!(text(&result), "this tool always fails");

    // The CLI prints the message and exits 1.
    let out = d.cli(&["mcp", "call", "t", "fail", r#"{"message": "boom"}"#]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stdout(&out), "boom\n");
    assert!(stderr(&out).contains("reported an error"), "{out:?}");
    let out = d.cli(&["--json", "mcp", "call", "t", "fail"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["is_error"], true, "{printed}");

    // The server is untouched.
    let after = server(&client, "t").await;
    assert_eq!((after.restarts, after.pid), (0, before.pid), "{after:?}");
    assert_eq!(echo(&client, "t", "still here").await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capsule_calls_a_tool_through_mcp_call_with_its_grant_only() {
    let d = Graceful(
        TestDaemon::builder()
            .mcp(test_server("test", ""))
            .prepare(|home, _| {
                let capsules = home.join("capsules");
                copy_capsule(&example_capsule("mcp-echo"), &capsules);
                // The same capsule, granted another tool than the one it calls.
                let copy = copy_capsule(&example_capsule("mcp-echo"), &home.join("copy"));
                let other = capsules.join("mcp-nogrant");
                std::fs::rename(copy, &other).unwrap();
                let manifest = other.join("Capsule.toml");
                let text = std::fs::read_to_string(&manifest)
                    .unwrap()
                    .replace("name = \"mcp-echo\"", "name = \"mcp-nogrant\"")
                    .replace("mcp:call:test/echo", "mcp:call:test/add");
                std::fs::write(&manifest, text).unwrap();
            })
            .start(),
    );
    let client = patient_client(&d).await;
    running(&client, "test").await;
    let invoke = |name: &str| {
        client.call::<CommandOutput>(Request::InvokeCommand {
            name: name.into(),
            args: Vec::new(),
        })
    };

    // With the grant: the tool's result, as `CallMcpTool` gives it.
    let out = invoke("mcp-echo").await.unwrap();
    assert_eq!(
        serde_json::to_value(&out.output).unwrap(),
        json!({"server": "test", "tool": "echo", "is_error": false, "structured": null,
               "content": [{"type": "text", "text": "from a capsule"}]})
    );
    wait_audit(&client, "the capsule's mcp_call", |e| {
        e.actor == "capsule:mcp-echo"
            && e.action == "mcp_call"
            && e.target == "test/echo"
            && e.outcome == "ok"
    })
    .await;
    // Without it: refused (-1), and the denial is audited.
    let (code, message) = failure(invoke("mcp-nogrant").await);
    assert_eq!(code, ErrorCode::CapsuleError, "{message}");
    assert!(message.contains("mcp_call failed: -1"), "{message}");
    wait_audit(&client, "the mcp_call denial", |e| {
        e.actor == "capsule:mcp-nogrant" && e.action == "deny" && e.target == "mcp:call:test/echo"
    })
    .await;

    // No server `test` configured: -2.
    let bare = Graceful(TestDaemon::builder().capsules(&["mcp-echo"]).start());
    let other = patient_client(&bare).await;
    let (code, message) = failure(
        other
            .call::<CommandOutput>(Request::InvokeCommand {
                name: "mcp-echo".into(),
                args: Vec::new(),
            })
            .await,
    );
    assert_eq!(code, ErrorCode::CapsuleError, "{message}");
    assert!(message.contains("mcp_call failed: -2"), "{message}");
}

/// What `ListMcpServers` says of capsules' refused declarations, in name order.
async fn refusal(client: &Client) -> Vec<McpServerInfo> {
    let mut refused: Vec<McpServerInfo> = servers(client)
        .await
        .into_iter()
        .filter(|s| s.state == McpServerState::Invalid)
        .collect();
    refused.sort_by(|a, b| b.name.cmp(&a.name));
    refused
}

/// A capsule's `[[mcp_server]]` entries: started when it loads (a name `mcp.toml` or an
/// earlier capsule already has is refused and listed), started again with it by a new
/// `capsules` supervisor, kept by a new `mcp` supervisor, restarted under its name when its
/// manifest changes, and stopped when it is unloaded, which hands the name to the capsule
/// refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capsules_servers_live_and_restart_with_it_and_survive_an_mcp_restart() {
    let program = mcp_test_server().display().to_string();
    let declared = format!(
        "\n[[mcp_server]]\nname = \"cap\"\ncommand = \"{program}\"\n\
         \n[[mcp_server]]\nname = \"test\"\ncommand = \"{program}\"\n"
    );
    let mut manifest = None;
    let d = Graceful(
        TestDaemon::builder()
            .fault_injection()
            .mcp(test_server("test", ""))
            .prepare(|home, _| {
                let dir = copy_capsule(&example_capsule("echo"), &home.join("capsules"));
                let path = dir.join("Capsule.toml");
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::write(&path, text.clone() + &declared).unwrap();
                manifest = Some(path);
                // A capsule loaded after it (names load in order) that wants `cap` too.
                let rival = text.replace("name = \"echo\"", "name = \"rival\"")
                    + &format!("\n[[mcp_server]]\nname = \"cap\"\ncommand = \"{program}\"\n");
                write_capsule(&home.join("capsules"), "rival", &rival, &[]);
                std::fs::copy(dir.join("echo.wat"), home.join("capsules/rival/echo.wat")).unwrap();
            })
            .start(),
    );
    let manifest = manifest.unwrap();
    let client = patient_client(&d).await;

    let info = running(&client, "cap").await;
    assert_eq!(info.source, manifest.display().to_string(), "{info:?}");
    assert_eq!(
        echo(&client, "cap", "from the capsule's server").await,
        "from the capsule's server"
    );
    let rival = d.home.path().join("capsules/rival/Capsule.toml");
    let check_refusal = async |when: &str| {
        let refused = refusal(&client).await;
        assert_eq!(refused.len(), 2, "{when}: {refused:#?}");
        for (info, source, by) in [
            (&refused[0], &manifest, home_config(&d)),
            (&refused[1], &rival, "capsule `echo`".into()),
        ] {
            assert_eq!(info.source, source.display().to_string(), "{when}");
            let error = info.error.as_deref().unwrap_or_default();
            assert!(
                error.contains(&format!("already configured by {by}")),
                "{when}: {error}"
            );
        }
        assert_eq!(
            server(&client, "test").await.source,
            home_config(&d),
            "{when}"
        );
        assert_eq!(
            server(&client, "cap").await.source,
            manifest.display().to_string()
        );
    };
    check_refusal("at boot").await;
    let mut pid = info.pid.unwrap();

    // A new `mcp` supervisor starts the capsule's server again, beside the file's; a new
    // `capsules` supervisor loads the capsule afresh, and its server with it; a changed
    // manifest restarts the capsule, and its server under the same name.
    for step in ["mcp", "capsules", "reload"] {
        if step == "reload" {
            let text = std::fs::read_to_string(&manifest).unwrap() + "# changed\n";
            std::fs::write(&manifest, text).unwrap();
            let report: ReloadReport = client.call(Request::ReloadCapsules).await.unwrap();
            assert_eq!(report.changed, ["echo"], "{report:?}");
        } else {
            let _: FaultInjected = client
                .call(Request::InjectFault {
                    target: step.into(),
                    fault: Fault::Panic,
                })
                .await
                .unwrap();
        }
        let info = wait_server(&client, "cap", |s| {
            s.state == McpServerState::Running && s.pid != Some(pid)
        })
        .await;
        assert_gone(&format!("the capsule's server before {step}"), &[pid]);
        assert_eq!(echo(&client, "cap", step).await, step);
        check_refusal(step).await;
        pid = info.pid.unwrap();
    }

    // Unloaded: its server stops, and the capsule refused `cap` gets it; the file's server
    // is untouched.
    std::fs::remove_dir_all(manifest.parent().unwrap()).unwrap();
    let report: ReloadReport = client.call(Request::ReloadCapsules).await.unwrap();
    assert_eq!(report.removed, ["echo"], "{report:?}");
    assert_gone("the unloaded capsule's server", &[pid]);
    let info = wait_server(&client, "cap", |s| s.state == McpServerState::Running).await;
    assert_eq!(info.source, rival.display().to_string());
    assert_eq!(echo(&client, "cap", "handed over").await, "handed over");
    let names: Vec<String> = servers(&client).await.into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["cap", "test"]);
    assert_eq!(echo(&client, "test", "still here").await, "still here");
}

/// `ReloadMcp` (`astrid mcp reload`) reads `mcp.toml` again and applies only what changed:
/// an unchanged server runs on as the same process, a changed one restarts, removed ones
/// stop, a new one starts, a bad entry is listed `invalid`, and a capsule's server refused
/// a name the file gave up starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_mcp_toml_applies_only_what_changed() {
    let program = mcp_test_server().display().to_string();
    let mut manifest = None;
    let d = Graceful(
        TestDaemon::builder()
            .prepare(|home, _| {
                let servers = ["keep", "change", "drop", "cap"].map(|n| test_server(n, ""));
                std::fs::write(home.join("mcp.toml"), servers.concat()).unwrap();
                let dir = copy_capsule(&example_capsule("echo"), &home.join("capsules"));
                let path = dir.join("Capsule.toml");
                let text = std::fs::read_to_string(&path).unwrap()
                    + &format!("\n[[mcp_server]]\nname = \"cap\"\ncommand = \"{program}\"\n");
                std::fs::write(&path, text).unwrap();
                manifest = Some(path.display().to_string());
            })
            .start(),
    );
    let manifest = manifest.unwrap();
    let client = patient_client(&d).await;
    let mut pids = Vec::new();
    for name in ["keep", "change", "drop", "cap"] {
        pids.push(running(&client, name).await.pid.unwrap());
    }
    assert_eq!(server(&client, "cap").await.source, home_config(&d));

    let config = test_server("keep", "")
        + &test_server("change", "call_timeout = \"5s\"")
        + &test_server("new", "")
        + "[[server]]\nname = \"bad\"\n";
    std::fs::write(d.home.path().join("mcp.toml"), config).unwrap();
    let report: McpReloadReport = client.call(Request::ReloadMcp).await.unwrap();
    assert_eq!(report.added, ["new"], "{report:#?}");
    assert_eq!(report.removed, ["cap", "drop"], "{report:#?}");
    assert_eq!(report.changed, ["change"], "{report:#?}");
    assert_eq!(report.unchanged, ["keep"], "{report:#?}");
    let bad = report.servers.iter().find(|s| s.name == "bad").unwrap();
    assert_eq!(bad.state, McpServerState::Invalid, "{bad:?}");
    assert!(bad.error.as_deref().unwrap().contains("command"), "{bad:?}");

    assert_gone("the changed and removed servers", &pids[1..]);
    assert_eq!(running(&client, "keep").await.pid, Some(pids[0]));
    let changed = running(&client, "change").await;
    assert_eq!(
        changed.restarts, 0,
        "a new server, not a restart: {changed:?}"
    );
    for name in ["keep", "change", "new"] {
        assert_eq!(echo(&client, name, name).await, name);
    }
    // The file gave `cap` up: the capsule's server, refused it at boot, has it now.
    let cap = wait_server(&client, "cap", |s| {
        s.source == manifest && s.state == McpServerState::Running
    })
    .await;
    assert!(!pids.contains(&cap.pid.unwrap()));
    assert_eq!(echo(&client, "cap", "the capsule's").await, "the capsule's");

    // Nothing changed since: nothing restarts. The CLI prints the changes, then the list.
    let out = cli_ok(&d, &["mcp", "reload"]);
    assert!(
        out.starts_with("added: -\nremoved: -\nchanged: -\nunchanged: change, keep, new\n"),
        "{out}"
    );
    assert!(out.contains("invalid"), "{out}");
    assert_eq!(running(&client, "keep").await.pid, Some(pids[0]));
    assert_eq!(running(&client, "cap").await.pid, cap.pid);
}

// ---------------------------------------------------------------------------------------
// Deadlines, crashes, kills and hangs
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tool_times_out_and_the_server_that_still_answers_is_kept() {
    let d = start(&test_server("t", "call_timeout = \"1s\""));
    let client = patient_client(&d).await;
    let before = running(&client, "t").await;

    // Through the CLI, then the socket.
    let err = cli_fails(&d, &["mcp", "call", "t", "slow", r#"{"millis": 4000}"#]);
    assert!(err.contains("timeout"), "{err}");
    let started = Instant::now();
    let (code, message) = failure(call(&client, "t", "slow", json!({"millis": 4000})).await);
    let took = started.elapsed();
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    assert!(
        message.contains("`slow`") && message.contains("1000 ms"),
        "{message}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );

    // The overrun makes the daemon ping the server, which answers: it is kept. Calls keep
    // working all through the window in which an unanswered ping would have restarted it.
    let window = started + Duration::from_secs(1) + PING_TIMEOUT + Duration::from_millis(500);
    let mut calls = 0;
    while Instant::now() < window {
        assert_eq!(echo(&client, "t", "alive").await, "alive");
        let info = server(&client, "t").await;
        assert_eq!(
            (info.state, info.restarts, info.pid),
            (McpServerState::Running, 0, before.pid),
            "{info:?}"
        );
        calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(calls >= 5, "{calls}");
    let node = wait_node(&client, "mcp:t", |_| true).await;
    assert_eq!(node.restarts, 0, "{node:?}");
    assert!(node.last_failure.is_none(), "{node:?}");
    // A call within the deadline still completes.
    assert_eq!(
        ok_text(&client, "t", "slow", json!({"millis": 50})).await,
        "slept 50 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_tool_gets_unavailable_and_the_server_is_restarted() {
    let d = start(&test_server("t", ""));
    let client = patient_client(&d).await;
    let first = running(&client, "t").await;
    let first_pid = first.pid.unwrap();

    // The crashing call, and another in flight, are both answered at once.
    let started = Instant::now();
    let crash = call(&client, "t", "crash", json!({"code": 7}));
    let (slow, crashed) = with_a_call_in_flight(&client, "t", crash).await;
    for answer in [slow, crashed] {
        let (code, message) = failure(answer);
        assert_eq!(code, ErrorCode::Unavailable, "{message}");
        assert!(message.contains("went away"), "{message}");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "answered after {took:?}");

    let second = restarted(&client, "t", 1, first_pid).await;
    assert_eq!(second.tools, TOOLS.len(), "{second:?}");
    assert!(
        second.error.is_some(),
        "the last failure is shown: {second:?}"
    );
    assert_eq!(echo(&client, "t", "back").await, "back");
    assert_gone("the crashed server", &[first_pid]);
    let node = wait_node(&client, "mcp:t", |n| {
        n.restarts == 1 && n.state == ChildState::Running
    })
    .await;
    assert!(node.last_failure.is_some(), "{node:?}");

    // Through the CLI: the same, and it comes back again.
    let err = cli_fails(&d, &["mcp", "call", "t", "crash"]);
    assert!(err.contains("unavailable"), "{err}");
    restarted(&client, "t", 2, second.pid.unwrap()).await;
    assert_eq!(
        cli_ok(&d, &["mcp", "call", "t", "echo", r#"{"text": "again"}"#]),
        "again\n"
    );
    // Only this server's actor restarted; the `mcp` supervisor did not.
    let tree = client.tree().await.unwrap();
    assert_eq!(tree.find("mcp").unwrap().state, ChildState::Running);
    let root_child = tree.children.iter().find(|c| c.name == "mcp").unwrap();
    assert!(root_child.last_failure.is_none(), "{root_child:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_from_outside_is_restarted() {
    let d = start(&test_server("t", ""));
    let client = patient_client(&d).await;
    let pid = running(&client, "t").await.pid.unwrap();

    kill9(pid);
    let info = restarted(&client, "t", 1, pid).await;
    assert!(info.error.is_some(), "{info:?}");
    assert_eq!(echo(&client, "t", "after kill").await, "after kill");

    // Twice, through the CLI this time.
    kill9(info.pid.unwrap());
    restarted(&client, "t", 2, info.pid.unwrap()).await;
    assert_eq!(
        cli_ok(&d, &["mcp", "call", "t", "echo", r#"{"text": "again"}"#]),
        "again\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_is_restarted_once_its_ping_goes_unanswered() {
    let d = start(&test_server("t", "call_timeout = \"1s\""));
    let client = patient_client(&d).await;
    let first_pid = running(&client, "t").await.pid.unwrap();

    // `freeze` blocks the whole server far longer than the deadline plus the ping's.
    let started = Instant::now();
    let (code, message) = failure(call(&client, "t", "freeze", json!({"millis": 20_000})).await);
    assert_eq!(code, ErrorCode::Timeout, "{message}");

    let info = restarted(&client, "t", 1, first_pid).await;
    let took = started.elapsed();
    // Not before the deadline had passed and then the ping had its time to be answered.
    assert!(
        took >= Duration::from_secs(1) + PING_TIMEOUT,
        "restarted after only {took:?}"
    );
    let error = info.error.clone().unwrap_or_default();
    assert!(error.contains("ping"), "{info:?}");
    assert_eq!(echo(&client, "t", "thawed out").await, "thawed out");
    // The frozen process was not left behind.
    assert_gone("the hung server", &[first_pid]);

    // The CLI sees it running again.
    let table = cli_ok(&d, &["mcp", "ls"]);
    let cols: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&cols[..3], ["t", "running", "1"], "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_past_its_restart_budget_fails_and_everything_else_carries_on() {
    let mut d = start(
        &(test_server(
            "fragile",
            "[server.restart]\nintensity = 1\nperiod = \"30s\"\nbackoff = \"10ms\"",
        ) + &test_server("steady", "")),
    );
    let client = patient_client(&d).await;
    let steady = running(&client, "steady").await;
    let first = running(&client, "fragile").await.pid.unwrap();

    // One crash is within the budget.
    let (code, _) = failure(call(&client, "fragile", "crash", json!({})).await);
    assert_eq!(code, ErrorCode::Unavailable);
    let second = restarted(&client, "fragile", 1, first).await.pid.unwrap();
    // The second is one too many.
    let (code, _) = failure(call(&client, "fragile", "crash", json!({})).await);
    assert_eq!(code, ErrorCode::Unavailable);
    let info = wait_server(&client, "fragile", |s| s.state == McpServerState::Failed).await;
    assert_eq!(info.restarts, 1, "{info:?}");
    assert_eq!((info.pid, info.tools), (None, 0), "{info:?}");
    assert!(info.error.is_some(), "{info:?}");
    let node = wait_node(&client, "mcp:fragile", |n| n.state == ChildState::Failed).await;
    assert!(node.last_failure.is_some(), "{node:?}");
    assert_gone("the failed server's processes", &[first, second]);

    // Calls are refused at once.
    let started = Instant::now();
    let (code, message) = failure(call(&client, "fragile", "echo", json!({"text": "x"})).await);
    assert_eq!(code, ErrorCode::McpFailed, "{message}");
    assert!(message.contains("`fragile`"), "{message}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(tools(&client, Some("fragile")).await.unwrap().is_empty());
    let err = cli_fails(&d, &["mcp", "call", "fragile", "echo", r#"{"text": "x"}"#]);
    assert!(err.contains("mcp_failed"), "{err}");
    let table = cli_ok(&d, &["mcp", "ls"]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["fragile", "failed"])),
        "{table}"
    );

    // The other server, the daemon and the kernel are fine.
    assert_eq!(echo(&client, "steady", "fine").await, "fine");
    let now = server(&client, "steady").await;
    assert_eq!((now.restarts, now.pid), (0, steady.pid), "{now:?}");
    client.ping().await.unwrap();
    let tree = client.tree().await.unwrap();
    assert_eq!(tree.find("mcp").unwrap().state, ChildState::Running);
    for kernel in [
        "bus",
        "store",
        "capabilities",
        "vfs",
        "listener",
        "mcp:steady",
    ] {
        assert_eq!(
            tree.find(kernel).unwrap().restarts,
            0,
            "{kernel}: {tree:#?}"
        );
    }
    let root_child = tree.children.iter().find(|c| c.name == "mcp").unwrap();
    assert!(root_child.last_failure.is_none(), "{root_child:#?}");

    // SIGTERM: a clean exit that takes the remaining server with it.
    let status = d.terminate(DEADLINE).expect("the daemon exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_gone("the steady server after SIGTERM", &[steady.pid.unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_injected_into_a_server_actor_restarts_it_with_a_fresh_process() {
    let d = Graceful(
        TestDaemon::builder()
            .fault_injection()
            .mcp(test_server("t", ""))
            .start(),
    );
    let client = patient_client(&d).await;
    let mut pid = running(&client, "t").await.pid.unwrap();

    for (n, fault, why) in [(1, Fault::Panic, "panicked"), (2, Fault::Stop, "stopped")] {
        let sleeper = spawn_sleeper(&client, "t").await;
        let inject = client.call::<FaultInjected>(Request::InjectFault {
            target: "mcp:t".into(),
            fault: fault.clone(),
        });
        let (slow, injected) = with_a_call_in_flight(&client, "t", inject).await;
        assert_eq!(injected.unwrap().target, "mcp:t");
        // The call in flight is answered, whatever ended the actor.
        let (code, message) = failure(slow);
        assert_eq!(code, ErrorCode::Unavailable, "{fault:?}: {message}");
        assert!(
            message.contains("went away during the call: its actor stopped"),
            "{fault:?}: {message}"
        );
        // However the actor ends, its server's whole process group goes with it.
        let info = restarted(&client, "t", n, pid).await;
        assert!(
            info.error.as_deref().is_some_and(|e| e.contains(why)),
            "{fault:?}: {info:?}"
        );
        assert_gone(
            &format!("the old incarnation after {fault:?}"),
            &[pid, sleeper],
        );
        assert_eq!(echo(&client, "t", "fresh").await, "fresh");
        pid = info.pid.unwrap();
    }
    // `trap` is for capsules only.
    let (code, message) = failure(
        client
            .call::<FaultInjected>(Request::InjectFault {
                target: "mcp:t".into(),
                fault: Fault::Trap,
            })
            .await,
    );
    assert_eq!(code, ErrorCode::InvalidArgument, "{message}");
    assert_eq!(server(&client, "t").await.restarts, 2);
}

// ---------------------------------------------------------------------------------------
// Process groups
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_server_started_outlives_its_incarnation_or_the_daemon() {
    let mut d = start(&test_server("t", ""));
    let client = patient_client(&d).await;
    let first = running(&client, "t").await.pid.unwrap();

    // The server leads its own process group; the sleeper it starts is in it.
    assert_eq!(pid_and_group(&client, "t").await, (first, first));
    assert_ne!(process_group(first), process_group(std::process::id()));
    let sleeper = spawn_sleeper(&client, "t").await;
    assert_eq!(process_group(sleeper), Some(first));

    // A crash: the old incarnation's whole group goes, the sleeper included.
    let (code, _) = failure(call(&client, "t", "crash", json!({})).await);
    assert_eq!(code, ErrorCode::Unavailable);
    let second = restarted(&client, "t", 1, first).await.pid.unwrap();
    assert_gone("the crashed incarnation", &[first, sleeper]);

    // A shutdown: the running incarnation and its sleeper go with the daemon.
    let sleeper = spawn_sleeper(&client, "t").await;
    assert_eq!(process_group(sleeper), Some(second));
    let ack: ShutdownAck = client
        .call(Request::Shutdown {
            reason: "mcp test".into(),
        })
        .await
        .unwrap();
    assert!(ack.shutting_down);
    let status = d
        .wait_exit(DEADLINE)
        .expect("the daemon exits after Shutdown");
    assert!(status.success(), "{status:?}");
    assert_gone(
        "the server and its sleeper after Shutdown",
        &[second, sleeper],
    );
    assert!(d.leftover_files().is_empty(), "{:?}", d.leftover_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_initialize_is_starting_and_goes_with_the_daemon() {
    // `sleep` starts and never says a word: the handshake is pending.
    let mut d = start(&(test_server("t", "") + &mute_server("mute")));
    let client = patient_client(&d).await;
    running(&client, "t").await;
    let mute = wait_server(&client, "mute", |s| s.pid.is_some()).await;
    assert_eq!(mute.state, McpServerState::Starting, "{mute:?}");
    assert_eq!((mute.tools, mute.restarts), (0, 0), "{mute:?}");
    assert!(mute.server_info.is_none(), "{mute:?}");
    let mute_pid = mute.pid.unwrap();
    assert!(process_alive(mute_pid));

    // Calls are turned away (retry later); listing its tools gives none.
    let (code, message) = failure(call(&client, "mute", "echo", json!({})).await);
    assert_eq!(code, ErrorCode::Unavailable, "{message}");
    assert!(message.contains("not ready"), "{message}");
    assert!(tools(&client, Some("mute")).await.unwrap().is_empty());
    // The other server is not held up by it.
    assert_eq!(echo(&client, "t", "meanwhile").await, "meanwhile");
    let sleeper = spawn_sleeper(&client, "t").await;
    let t_pid = server(&client, "t").await.pid.unwrap();

    // `astrid stop`: everything goes, the pending server included.
    let started = Instant::now();
    let out = cli_ok(&d, &["stop"]);
    assert!(out.contains("stopped"), "{out}");
    let status = d.wait_exit(DEADLINE).expect("the daemon exits after stop");
    assert!(status.success(), "{status:?}");
    eprintln!("stopped in {:?}", started.elapsed());
    assert_gone(
        "every server process after astrid stop",
        &[mute_pid, t_pid, sleeper],
    );
}

/// A forced exit (a second SIGTERM or SIGINT, or the shutdown watchdog) kills the MCP
/// servers' process groups too: servers not yet stopped, and whatever they started, do not
/// outlive the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_exit_still_takes_every_server_process_group_with_it() {
    // A slow call in flight holds the shutdown: sessions drain before the servers stop, so
    // the second signal arrives while `a`, its sleeper and `z-mute` (which never finishes
    // its handshake) are still up.
    let mut d = start(&(test_server("a", "call_timeout = \"60s\"") + &mute_server("z-mute")));
    let client = patient_client(&d).await;
    let (a, mute) = a_and_mute(&client).await;
    let sleeper = spawn_sleeper(&client, "a").await;
    drop(client);
    // The slow call, then a `Ping` on the same connection: the session handles frames in
    // order, so once the pong is back the call is in flight.
    let mut raw = d.raw();
    raw.request(
        1,
        Request::CallMcpTool {
            server: "a".into(),
            tool: "slow".into(),
            arguments: to_payload(&json!({"millis": 30_000})).unwrap(),
        },
    );
    raw.request(2, Request::Ping);
    let pong = raw.recv().expect("the pong");
    assert_eq!(common::get(&pong, "id").as_u64(), Some(2), "{pong}");

    d.signal(rustix::process::Signal::TERM);
    // The ready file goes first at a shutdown: it is under way.
    let ready = d.files.ready();
    assert!(common::wait_until(DEADLINE, || !ready.exists()));
    d.signal(rustix::process::Signal::TERM);
    let status = d
        .wait_exit(DEADLINE)
        .expect("a second SIGTERM exits at once");
    assert_eq!(status.code(), Some(130), "{status:?}");
    drop(raw);
    reap(
        "a forced exit",
        &[
            ("server `a`", a),
            ("its sleeper", sleeper),
            ("`z-mute`", mute),
        ],
    );
}

/// The process ids of servers `a` (running) and `z-mute` (started, never ready).
async fn a_and_mute(client: &Client) -> (u32, u32) {
    let a = running(client, "a").await.pid.unwrap();
    let mute = wait_server(client, "z-mute", |s| s.pid.is_some()).await;
    (a, mute.pid.unwrap())
}

/// Asserts that the processes are gone after `what`; kills any left first, so that a
/// failing test leaves nothing behind.
fn reap(what: &str, processes: &[(&str, u32)]) {
    common::wait_until(DEADLINE, || {
        processes.iter().all(|&(_, p)| !process_alive(p))
    });
    let survivors: Vec<&(&str, u32)> = processes
        .iter()
        .filter(|(_, p)| process_alive(*p))
        .collect();
    for (_, pid) in &survivors {
        kill9(*pid);
    }
    assert!(
        survivors.is_empty(),
        "still running after {what}: {survivors:?}"
    );
}

/// A daemon killed by SIGKILL runs no clean-up, yet its servers go with it (the kernel
/// kills each when the daemon dies), even one that never reads its input. What a server
/// started survives that, and the session's next daemon kills it before its own servers
/// start: the record of the servers' process groups says where to look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_takes_its_servers_with_it_and_the_next_one_what_they_started() {
    let mut d = start(&(test_server("a", "") + &mute_server("z-mute")));
    let client = patient_client(&d).await;
    let (a, mute) = a_and_mute(&client).await;
    let sleeper = spawn_sleeper(&client, "a").await;
    let mark = ok_text(&client, "a", "env", json!({ "name": "ASTRID_MCP_MARK" })).await;
    drop(client);
    let record = d.files.mcp_groups();
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        format!("mark {mark}\n{}\n{}\n", a.min(mute), a.max(mute)),
    );
    d.signal(rustix::process::Signal::KILL);
    d.wait_exit(DEADLINE).expect("SIGKILL ends the daemon");
    reap("SIGKILL", &[("server `a`", a), ("`z-mute`", mute)]);
    // Nothing signals the sleeper: it is left for the next daemon to find.
    assert!(
        process_alive(sleeper),
        "the sleeper {sleeper} died with its server"
    );

    let home = std::mem::replace(&mut d.home, short_tempdir());
    let workspace = std::mem::replace(&mut d.workspace, short_tempdir());
    drop(d);
    let next = Graceful(
        TestDaemon::builder()
            .home(home)
            .workspace(workspace)
            .spawn(),
    );
    next.wait_ready();
    reap("the next daemon's boot", &[("the sleeper", sleeper)]);
    // Its own servers run under a mark of their own, recorded afresh.
    let client = patient_client(&next).await;
    let (a2, mute2) = a_and_mute(&client).await;
    assert_ne!(a2, a);
    let mark2 = ok_text(&client, "a", "env", json!({ "name": "ASTRID_MCP_MARK" })).await;
    assert_ne!(mark2, mark);
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.starts_with(&format!("mark {mark2}\n")), "{text}");
    drop(client);
    // A clean exit kills the groups and leaves no record.
    let mut next = next;
    next.terminate(DEADLINE).expect("SIGTERM ends the daemon");
    reap("a clean exit", &[("server `a`", a2), ("`z-mute`", mute2)]);
    assert!(!record.exists(), "{:?}", next.leftover_files());
}

// ---------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_see_exactly_the_environment_they_are_given() {
    let config = test_server("plain", "env = { GREETING = \"hello\", EMPTY = \"\" }")
        + &test_server(
            "inheriting",
            "env = { GREETING = \"hi\" }\n\
             inherit_env = [\"ASTRID_MCP_TEST_SECRET\", \"ASTRID_MCP_TEST_NEVER_SET\"]",
        );
    let d = Graceful(
        TestDaemon::builder()
            .envs(&[("ASTRID_MCP_TEST_SECRET", "daemon-only")])
            .mcp(&config)
            .start(),
    );
    let client = patient_client(&d).await;
    running(&client, "plain").await;
    running(&client, "inheriting").await;
    let env = |server: &'static str, name: &'static str| {
        ok_text(&client, server, "env", json!({ "name": name }))
    };

    // Configured variables are there; the daemon's are not, not even PATH. The one
    // variable added is the daemon's mark, the same for all its servers.
    assert_eq!(env("plain", "GREETING").await, "hello");
    let mark = env("plain", "ASTRID_MCP_MARK").await;
    assert!(
        mark.len() == 32 && mark.bytes().all(|b| b.is_ascii_hexdigit()),
        "{mark}"
    );
    assert_eq!(env("inheriting", "ASTRID_MCP_MARK").await, mark);
    assert_eq!(env("plain", "EMPTY").await, "");
    assert_eq!(env("plain", "ASTRID_MCP_TEST_SECRET").await, "(unset)");
    for name in ["PATH", "HOME", "ASTRID_HOME"] {
        if std::env::var_os(name).is_some() {
            assert_eq!(env("plain", name).await, "(unset)", "{name}");
        }
    }
    // inherit_env passes on what the daemon has (and nothing when it has nothing).
    assert_eq!(env("inheriting", "GREETING").await, "hi");
    assert_eq!(
        env("inheriting", "ASTRID_MCP_TEST_SECRET").await,
        "daemon-only"
    );
    assert_eq!(
        env("inheriting", "ASTRID_MCP_TEST_NEVER_SET").await,
        "(unset)"
    );
    if std::env::var_os("PATH").is_some() {
        assert_eq!(env("inheriting", "PATH").await, "(unset)");
    }

    // Through the CLI.
    assert_eq!(
        cli_ok(
            &d,
            &["mcp", "call", "plain", "env", r#"{"name": "GREETING"}"#]
        ),
        "hello\n"
    );
    assert_eq!(
        cli_ok(
            &d,
            &[
                "mcp",
                "call",
                "plain",
                "env",
                r#"{"name": "ASTRID_MCP_TEST_SECRET"}"#
            ]
        ),
        "(unset)\n"
    );
}

/// A daemon whose `PATH` starts with a folder holding the test server as
/// `astrid-test-mcp-server`, running `config` (the folder is returned to be kept alive).
fn start_with_server_on_path(config: &str) -> (Graceful, tempfile::TempDir) {
    let bin = short_tempdir();
    std::os::unix::fs::symlink(mcp_test_server(), bin.path().join("astrid-test-mcp-server"))
        .unwrap();
    let mut path = bin.path().as_os_str().to_owned();
    if let Some(rest) = std::env::var_os("PATH") {
        path.push(":");
        path.push(rest);
    }
    let d = Graceful(
        TestDaemon::builder()
            .envs(&[("PATH", path.to_str().unwrap())])
            .mcp(config)
            .start(),
    );
    (d, bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_name_is_found_through_an_inherited_path() {
    let (d, _bin) = start_with_server_on_path(
        "[[server]]\nname = \"named\"\ncommand = \"astrid-test-mcp-server\"\n\
         inherit_env = [\"PATH\"]\n",
    );
    let client = patient_client(&d).await;
    let info = running(&client, "named").await;
    assert_eq!(info.command, ["astrid-test-mcp-server"], "{info:?}");
    assert_eq!(echo(&client, "named", "found").await, "found");
}

/// A bare command name is looked up in the daemon's `PATH`, although the server's own
/// environment has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_name_is_looked_up_in_the_daemons_path() {
    let (d, _bin) = start_with_server_on_path(
        "[[server]]\nname = \"named\"\ncommand = \"astrid-test-mcp-server\"\n",
    );
    let client = patient_client(&d).await;
    let info = wait_server(&client, "named", |s| {
        matches!(s.state, McpServerState::Running | McpServerState::Failed)
    })
    .await;
    assert_eq!(info.state, McpServerState::Running, "{info:?}");
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_are_invalid_missing_commands_fail_and_the_workspace_overrides() {
    let home_toml = test_server("good", "")
        + &test_server("bad", "call_timeout = \"forever\"")
        + "[[server]]\nname = \"typo\"\ncomand = \"x\"\n"
        + "[[server]]\nname = \"missing\"\ncommand = \"astrid-no-such-mcp-server\"\n"
        + "[[server]]\nname = \"over\"\ncommand = \"/nonexistent/home-version\"\n";
    let d = Graceful(
        TestDaemon::builder()
            .mcp(&home_toml)
            .workspace_mcp(test_server("over", ""))
            .start(),
    );
    let client = patient_client(&d).await;
    trust_workspace(&client).await;
    let home_file = home_config(&d);
    let workspace_file = d
        .workspace
        .path()
        .join(".astrid/mcp.toml")
        .display()
        .to_string();

    // The valid server in the same file starts.
    let good = running(&client, "good").await;
    assert_eq!(good.source, home_file);
    assert_eq!(echo(&client, "good", "ok").await, "ok");

    // Invalid entries: listed with an error naming the file and the field, never started.
    let bad = server(&client, "bad").await;
    assert_eq!(bad.state, McpServerState::Invalid, "{bad:?}");
    assert_eq!(bad.source, home_file, "{bad:?}");
    assert_eq!((bad.pid, bad.tools, bad.restarts), (None, 0, 0), "{bad:?}");
    let error = bad.error.clone().unwrap();
    assert!(
        error.contains(&home_file)
            && error.contains("server[1].call_timeout")
            && error.contains("forever"),
        "{error}"
    );
    let typo = server(&client, "typo").await;
    assert_eq!(typo.state, McpServerState::Invalid, "{typo:?}");
    let error = typo.error.clone().unwrap();
    assert!(
        error.contains(&home_file) && error.contains("server[2]") && error.contains("comand"),
        "{error}"
    );
    for name in ["bad", "typo"] {
        let (code, message) = failure(call(&client, name, "echo", json!({"text": "x"})).await);
        assert_eq!(code, ErrorCode::McpFailed, "{name}: {message}");
        assert!(message.contains(&home_file), "{name}: {message}");
        let (code, _) = failure(tools(&client, Some(name)).await);
        assert_eq!(code, ErrorCode::McpFailed, "{name}");
    }
    let message = failure(call(&client, "bad", "echo", json!({})).await).1;
    assert!(message.contains("call_timeout"), "{message}");

    // A command that does not exist: every start fails, until the budget (3 restarts in
    // 5 s by default) is spent.
    let missing = wait_server(&client, "missing", |s| s.state == McpServerState::Failed).await;
    assert_eq!(missing.restarts, 3, "{missing:?}");
    let error = missing.error.clone().unwrap();
    assert!(
        error.contains("cannot start") && error.contains("astrid-no-such-mcp-server"),
        "{error}"
    );
    let (code, message) = failure(call(&client, "missing", "echo", json!({})).await);
    assert_eq!(code, ErrorCode::McpFailed, "{message}");

    // The workspace's `over` replaced the home's (whose command does not exist).
    let over = running(&client, "over").await;
    assert_eq!(over.source, workspace_file, "{over:?}");
    assert_eq!(
        over.command,
        [mcp_test_server().display().to_string()],
        "{over:?}"
    );
    assert_eq!(over.restarts, 0, "{over:?}");
    assert_eq!(
        echo(&client, "over", "from the workspace").await,
        "from the workspace"
    );
    assert_eq!(
        servers(&client)
            .await
            .iter()
            .filter(|s| s.name == "over")
            .count(),
        1
    );

    // The CLI shows each state, and the daemon is fine.
    let table = cli_ok(&d, &["mcp", "ls"]);
    for (name, state) in [
        ("good", "running"),
        ("over", "running"),
        ("missing", "failed"),
        ("bad", "invalid"),
        ("typo", "invalid"),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([name, state])),
            "{name} {state}: {table}"
        );
    }
    assert!(table.contains("server[1].call_timeout"), "{table}");
    let err = cli_fails(&d, &["mcp", "call", "bad", "echo"]);
    assert!(err.contains("mcp_failed"), "{err}");
    client.ping().await.unwrap();
}

/// A workspace entry replaces the home's of the same name even when the home's is invalid:
/// only the workspace server is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_entry_replaces_an_invalid_home_entry_of_the_same_name() {
    let d = Graceful(
        TestDaemon::builder()
            .mcp(test_server("over", "call_timeout = \"forever\""))
            .workspace_mcp(test_server("over", ""))
            .start(),
    );
    let client = patient_client(&d).await;
    trust_workspace(&client).await;
    running(&client, "over").await;
    let list = servers(&client).await;
    assert_eq!(list.len(), 1, "{list:#?}");
}

// ---------------------------------------------------------------------------------------
// Tool list changes
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tool_list_is_followed() {
    let d = start(&test_server("t", ""));
    let client = patient_client(&d).await;
    let first = running(&client, "t").await.pid.unwrap();

    assert_eq!(
        ok_text(&client, "t", "add_tool", json!({"name": "extra"})).await,
        "added extra"
    );
    // The notification makes the daemon list the tools again.
    let listed = poll_async(DEADLINE, async || {
        let now = tools(&client, Some("t")).await.unwrap();
        if now.iter().any(|t| t.name == "extra") {
            Ok(now)
        } else {
            Err(now)
        }
    })
    .await;
    let now = listed.unwrap_or_else(|now| panic!("`extra` never appeared: {now:?}"));
    assert_eq!(now.len(), TOOLS.len() + 1, "{now:?}");
    let extra = now.iter().find(|t| t.name == "extra").unwrap();
    assert_eq!(
        extra.description.as_deref(),
        Some("A tool added by add_tool.")
    );
    assert_eq!(server(&client, "t").await.tools, TOOLS.len() + 1);
    assert!(
        tools(&client, None)
            .await
            .unwrap()
            .iter()
            .any(|t| t.server == "t" && t.name == "extra")
    );
    assert_eq!(
        text(
            &call_raw(&client, "t", "extra", rmpv::Value::Nil)
                .await
                .unwrap()
        ),
        "dynamic extra"
    );
    // Adding it again is the tool's error.
    let again = call(&client, "t", "add_tool", json!({"name": "extra"}))
        .await
        .unwrap();
    assert!(again.is_error, "{again:?}");

    // The CLI.
    assert!(
        cli_ok(&d, &["mcp", "tools", "t"])
            .lines()
            .any(|l| l.starts_with("t/extra ")),
    );
    assert_eq!(
        cli_ok(&d, &["mcp", "call", "t", "extra"]),
        "dynamic extra\n"
    );

    // A new incarnation starts from the server's own list again.
    let (code, _) = failure(call(&client, "t", "crash", json!({})).await);
    assert_eq!(code, ErrorCode::Unavailable);
    let info = restarted(&client, "t", 1, first).await;
    assert_eq!(info.tools, TOOLS.len(), "{info:?}");
    assert_eq!(names(&tools(&client, Some("t")).await.unwrap()), TOOLS);
    let (code, _) = failure(call(&client, "t", "extra", json!({})).await);
    assert_eq!(code, ErrorCode::McpError);
}
