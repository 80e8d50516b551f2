//! Workspace trust and the workspace a CLI command acts on, through real daemons: a
//! workspace's own capsules and MCP servers (its `.astrid/`) run only once the user trusts
//! it, stop running when it changes or is untrusted, and the CLI never acts on another
//! workspace's daemon without saying so.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use crate::common::{
    ECHO_WAT, Graceful, TestDaemon, cli_at, failure, mcp_test_server, one_command_manifest,
    patient_client, poll_until, short_tempdir, wait_audit, write_capsule,
};
use astrid::client::Client;
use astrid::protocol::{
    CapsuleInfo, CapsuleOrigin, CapsuleState, CommandOutput, ErrorCode, McpServerInfo,
    McpServerState, Request, TrustInfo, TrustReport, TrustState,
};

/// A workspace configuration as a cloned repository might ship it: a capsule, a capsule
/// that shadows one of the home's, and an MCP server whose command is a script of its own
/// that leaves `marker` behind when it runs.
fn hostile_workspace(workspace: &Path, marker: &Path) {
    let dir = workspace.join(".astrid");
    let capsules = dir.join("capsules");
    write_capsule(
        &capsules,
        "echo",
        &one_command_manifest("echo", ""),
        &[("m.wat", ECHO_WAT.as_bytes())],
    );
    write_capsule(
        &capsules,
        "hecho",
        &one_command_manifest("hecho", ""),
        &[("m.wat", ECHO_WAT.as_bytes())],
    );
    let script = dir.join("server.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n: > '{}'\nexec '{}'\n",
            marker.display(),
            mcp_test_server().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("mcp.toml"),
        "[[server]]\nname = \"evil\"\ncommand = \"./server.sh\"\n",
    )
    .unwrap();
}

/// The home's own capsule `hecho`, which needs no trust.
fn home_capsule(home: &Path) {
    write_capsule(
        &home.join("capsules"),
        "hecho",
        &one_command_manifest("hecho", ""),
        &[("m.wat", ECHO_WAT.as_bytes())],
    );
}

async fn capsule(client: &Client, name: &str, origin: CapsuleOrigin) -> CapsuleInfo {
    let list = client.capsules().await.unwrap();
    list.into_iter()
        .find(|c| c.name == name && c.origin == origin)
        .unwrap_or_else(|| panic!("no capsule {name} from {origin:?}"))
}

async fn wait_capsule(client: &Client, name: &str, origin: CapsuleOrigin, state: CapsuleState) {
    poll_until(
        &format!("capsule {name}"),
        || client.capsules(),
        |list| {
            list.as_ref()
                .ok()?
                .iter()
                .find(|c| c.name == name && c.origin == origin && c.state == state)
                .cloned()
        },
    )
    .await;
}

async fn server(client: &Client, name: &str) -> McpServerInfo {
    let list: Vec<McpServerInfo> = client.call(Request::ListMcpServers).await.unwrap();
    list.into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no MCP server {name}"))
}

async fn wait_server(client: &Client, name: &str, state: McpServerState) -> McpServerInfo {
    poll_until(
        &format!("MCP server {name}"),
        || client.call::<Vec<McpServerInfo>>(Request::ListMcpServers),
        |list| {
            list.as_ref()
                .ok()?
                .iter()
                .find(|s| s.name == name && s.state == state)
                .cloned()
        },
    )
    .await
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn fails(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn canonical(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The workspace's capsules and servers are listed, with the command that trusts them;
/// nothing of theirs compiled, started or run; the home's capsule runs.
async fn assert_nothing_runs(client: &Client, ws: &str, marker: &Path) {
    let echo = capsule(client, "echo", CapsuleOrigin::Workspace).await;
    assert_eq!(echo.state, CapsuleState::Untrusted, "{echo:?}");
    let why = echo.error.unwrap();
    assert!(why.contains("astrid trust") && why.contains(ws), "{why}");
    let evil = server(client, "evil").await;
    assert_eq!(evil.state, McpServerState::Untrusted, "{evil:?}");
    assert!(evil.error.unwrap().contains("astrid trust"));
    assert_eq!(evil.pid, None);
    let (code, message) = failure(
        client
            .call::<CommandOutput>(Request::InvokeCommand {
                name: "echo".into(),
                args: Vec::new(),
            })
            .await,
    );
    assert_eq!(code, ErrorCode::NotFound, "{message}");
    // The home's capsule runs, and the workspace's namesake does not shadow it.
    let home_hecho = capsule(client, "hecho", CapsuleOrigin::Home).await;
    assert_eq!(home_hecho.state, CapsuleState::Running, "{home_hecho:?}");
    let ws_hecho = capsule(client, "hecho", CapsuleOrigin::Workspace).await;
    assert_eq!(ws_hecho.state, CapsuleState::Untrusted, "{ws_hecho:?}");
    let status = client.status().await.unwrap();
    assert_eq!(status.trust.unwrap().state, TrustState::Untrusted);
    assert!(
        !marker.exists(),
        "the workspace's MCP command ran untrusted"
    );
}

/// The hole: a daemon in a freshly cloned repository loaded its `.astrid/capsules/` and ran
/// the commands of its `.astrid/mcp.toml` at boot. Now nothing of it runs until
/// `astrid trust`; a change makes it untrusted again; `astrid untrust` stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_workspace_runs_nothing_until_trusted_and_a_change_untrusts_it() {
    let markers = short_tempdir();
    let marker = markers.path().join("server-ran");
    let d = Graceful(
        TestDaemon::builder()
            .prepare(|home, workspace| {
                home_capsule(home);
                hostile_workspace(workspace, &marker);
            })
            .start(),
    );
    let client = patient_client(&d).await;
    let ws = canonical(d.workspace.path());

    assert_nothing_runs(&client, &ws, &marker).await;

    // `astrid trust` in the workspace: recorded privately, audited, applied at once.
    let out = ok(&d.cli(&["trust"]));
    assert!(out.contains(&ws) && out.contains("trusted"), "{out}");
    assert!(
        out.contains("mcp.toml") && out.contains("capsules/echo/m.wat"),
        "{out}"
    );
    let record = d.home.path().join("trust.toml");
    let mode = std::fs::metadata(&record).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&record).unwrap().contains(&ws));
    wait_audit(&client, "TrustWorkspace", |e| {
        e.action == "TrustWorkspace" && e.target == ws && e.outcome == "ok"
    })
    .await;
    wait_capsule(
        &client,
        "echo",
        CapsuleOrigin::Workspace,
        CapsuleState::Running,
    )
    .await;
    wait_capsule(
        &client,
        "hecho",
        CapsuleOrigin::Workspace,
        CapsuleState::Running,
    )
    .await;
    let evil = wait_server(&client, "evil", McpServerState::Running).await;
    assert!(evil.pid.is_some());
    assert!(marker.exists());
    let listed = ok(&d.cli(&["trust", "--list"]));
    assert!(
        listed.contains(&ws) && listed.contains("trusted"),
        "{listed}"
    );

    // A change (a `git pull`, say) untrusts the whole workspace, saying what changed.
    let toml = d.workspace.path().join(".astrid/mcp.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("# pulled\n");
    std::fs::write(&toml, text).unwrap();
    ok(&d.cli(&["mcp", "reload"]));
    let evil = server(&client, "evil").await;
    assert_eq!(evil.state, McpServerState::Untrusted, "{evil:?}");
    assert!(evil.error.unwrap().contains("mcp.toml changed"));
    ok(&d.cli(&["reload"]));
    let echo = capsule(&client, "echo", CapsuleOrigin::Workspace).await;
    assert_eq!(echo.state, CapsuleState::Untrusted, "{echo:?}");
    assert!(echo.error.unwrap().contains("mcp.toml changed"));
    let status = client.status().await.unwrap();
    assert_eq!(status.trust.unwrap().state, TrustState::Changed);
    // The home's capsule is back in charge of its name.
    wait_capsule(&client, "hecho", CapsuleOrigin::Home, CapsuleState::Running).await;

    // Trusted again, then untrusted: what ran stops.
    ok(&d.cli(&["trust"]));
    wait_capsule(
        &client,
        "echo",
        CapsuleOrigin::Workspace,
        CapsuleState::Running,
    )
    .await;
    wait_server(&client, "evil", McpServerState::Running).await;
    let out = ok(&d.cli(&["untrust"]));
    assert!(out.contains("no longer trusted"), "{out}");
    wait_capsule(
        &client,
        "echo",
        CapsuleOrigin::Workspace,
        CapsuleState::Untrusted,
    )
    .await;
    wait_server(&client, "evil", McpServerState::Untrusted).await;
    let listed = ok(&d.cli(&["trust", "--list"]));
    assert!(listed.contains("no workspace is trusted"), "{listed}");
}

/// The trust requests over the socket, for any frontend: other workspaces, bad paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_requests_name_any_workspace_and_refuse_bad_paths() {
    let marker = short_tempdir();
    let other = short_tempdir();
    hostile_workspace(other.path(), &marker.path().join("x"));
    let d = Graceful(TestDaemon::builder().prepare(|_, _| {}).start());
    let client = patient_client(&d).await;
    let path = canonical(other.path());

    // The daemon's own workspace has nothing to trust.
    assert_eq!(
        client.status().await.unwrap().trust.unwrap().state,
        TrustState::None
    );
    // Another workspace: recorded, not applied here.
    let report: TrustReport = client
        .call(Request::TrustWorkspace {
            path: Some(path.clone()),
        })
        .await
        .unwrap();
    assert_eq!(report.trust.state, TrustState::Trusted);
    assert_eq!(report.trust.path, path);
    assert!(report.capsules.is_none() && report.mcp.is_none());
    let all: Vec<TrustInfo> = client.call(Request::ListTrust).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].path, path);
    assert!(all[0].files.iter().any(|f| f == "mcp.toml"), "{all:?}");

    for bad in ["relative/path", "/nonexistent/astrid-trust"] {
        let (code, message) = failure(
            client
                .call::<TrustReport>(Request::TrustWorkspace {
                    path: Some(bad.into()),
                })
                .await,
        );
        assert_eq!(code, ErrorCode::InvalidArgument, "{bad}: {message}");
        assert!(message.contains(bad), "{message}");
    }
    let report: TrustReport = client
        .call(Request::UntrustWorkspace {
            path: Some(path.clone()),
        })
        .await
        .unwrap();
    assert!(report.removed);
    assert_eq!(report.trust.state, TrustState::Untrusted);
    let again: TrustReport = client
        .call(Request::UntrustWorkspace { path: Some(path) })
        .await
        .unwrap();
    assert!(!again.removed);
}

/// The hole: with a daemon serving `/a`, `astrid status` in `/b` silently talked to `/a`'s
/// daemon. Now the CLI refuses, naming both workspaces and the remedies; a folder inside
/// `/a` (that is no workspace of its own) is `/a`'s, and `stop` still reaches the daemon.
#[test]
fn the_cli_refuses_the_daemon_of_another_workspace() {
    let a = short_tempdir();
    let b = short_tempdir();
    let sub = a.path().join("src/deep");
    std::fs::create_dir_all(&sub).unwrap();
    let nested = a.path().join("nested");
    std::fs::create_dir_all(nested.join(".astrid")).unwrap();
    let d = Graceful(
        TestDaemon::builder()
            .home(short_tempdir())
            .workspace(a)
            .spawn(),
    );
    d.wait_ready();
    let home = d.home.path();
    let (served, other) = (canonical(d.workspace.path()), canonical(b.path()));

    let err = fails(&cli_at(home, b.path(), &["status"]));
    assert!(
        err.contains(&format!("serves {served}, not {other}")),
        "{err}"
    );
    for remedy in ["astrid stop", "-w ", "-s <UUID>"] {
        assert!(err.contains(remedy), "{remedy}: {err}");
    }
    for args in [&["capsules"][..], &["kv", "get", "k"], &["run", "x"]] {
        let err = fails(&cli_at(home, b.path(), args));
        assert!(err.contains("serves"), "{args:?}: {err}");
    }
    let err = fails(&cli_at(home, &nested, &["status"]));
    assert!(err.contains("serves"), "{err}");

    let text = ok(&cli_at(home, &sub, &["status"]));
    assert!(text.contains(&served), "{text}");
    let text = ok(&cli_at(home, b.path(), &["-w", &served, "status"]));
    assert!(text.contains(&served), "{text}");
    // `-w` names the workspace exactly: a folder inside it is another one.
    let sub = sub.to_string_lossy().into_owned();
    fails(&cli_at(home, b.path(), &["-w", &sub, "status"]));

    let text = ok(&cli_at(home, b.path(), &["stop"]));
    assert!(text.contains("stopped"), "{text}");
}

/// What an ephemeral daemon started by `astrid` in a cloned repository does: lists its
/// capsules as untrusted; `astrid trust` there lets them run.
#[test]
fn astrid_in_a_cloned_repository_runs_nothing_until_trusted() {
    let home = short_tempdir();
    let repo = short_tempdir();
    let marker = home.path().join("server-ran");
    hostile_workspace(repo.path(), &marker);
    let run = |args: &[&str]| cli_at(home.path(), repo.path(), args);
    let text = ok(&run(&["--idle-grace", "30s", "capsules"]));
    assert!(text.contains("untrusted"), "{text}");
    let err = fails(&run(&["run", "echo", "hi"]));
    assert!(err.contains("not_found"), "{err}");
    let text = ok(&run(&["mcp", "ls"]));
    assert!(text.contains("untrusted"), "{text}");
    assert!(!marker.exists());
    ok(&run(&["trust"]));
    let text = ok(&run(&["run", "echo", "hi"]));
    assert!(text.contains("hi"), "{text}");
    assert!(
        common::wait_until(common::DEADLINE, || marker.exists()),
        "the trusted server did not start"
    );
    ok(&run(&["stop"]));
}
