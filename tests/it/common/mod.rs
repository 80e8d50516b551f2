//! Helpers shared by every module of the daemon's integration tests: the daemon and CLI
//! binaries, temporary homes and capsule folders, clients that fail instead of hanging,
//! processes and process groups, the audit log; with [`TestDaemon`] (a real daemon process,
//! in `daemon.rs`), raw frames (`raw.rs`) and polling with a deadline (`poll.rs`).

#![allow(clippy::missing_panics_doc)]

mod daemon;
mod poll;
mod raw;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use astrid::client::{Client, ClientError};
use astrid::protocol::{
    AuditEntry, ChildState, CommandOutput, ErrorCode, Event, Fault, FaultInjected, Request,
    TreeNode,
};
use tempfile::TempDir;

pub(crate) use self::daemon::{Graceful, TestDaemon};
pub(crate) use self::poll::{DEADLINE, poll, poll_async, poll_async_every, poll_until, wait_until};
pub(crate) use self::raw::{Raw, error_code, get};

/// The example `echo` capsule's module: the smallest valid capsule.
pub(crate) const ECHO_WAT: &str = include_str!("../../../examples/capsules/echo/echo.wat");

/// The daemon binary under test.
pub(crate) fn daemon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_astrid-daemon")
}

/// The CLI binary under test.
pub(crate) fn cli_bin() -> &'static str {
    env!("CARGO_BIN_EXE_astrid")
}

/// A short temporary directory (socket paths must fit in 107 bytes).
pub(crate) fn short_tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("ad")
        .tempdir_in("/tmp")
        .unwrap()
}

/// The folder of an example capsule: `examples/capsules/<rel>`.
pub(crate) fn example_capsule(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/capsules")
        .join(rel)
}

/// Copies the files of capsule folder `src` (not its subfolders: sources and build files
/// are not needed to run it) into `root/<folder name>`; returns the copy.
pub(crate) fn copy_capsule(src: &Path, root: &Path) -> PathBuf {
    let dir = root.join(src.file_name().unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    dir
}

/// Writes a capsule folder `root/<folder>` with `manifest` as its `Capsule.toml` and the
/// given files (name, content).
pub(crate) fn write_capsule(
    root: &Path,
    folder: &str,
    manifest: &str,
    files: &[(&str, &[u8])],
) -> PathBuf {
    let dir = root.join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Capsule.toml"), manifest).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    dir
}

/// The manifest of capsule `name`, module `m.wat`, with one command named like it, and
/// `extra` (more tables) appended.
pub(crate) fn one_command_manifest(name: &str, extra: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\n\n[module]\nfile = \"m.wat\"\n\n\
         [[command]]\nname = \"{name}\"\n\n{extra}"
    )
}

/// Names in a directory, sorted (empty when it does not exist).
pub(crate) fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Runs the CLI with `--home home`, with a deadline.
pub(crate) fn cli_in(home: &Path, args: &[&str]) -> Output {
    cli_at(home, Path::new("."), args)
}

/// Runs the CLI with `--home home` in the directory `cwd`, with a deadline.
pub(crate) fn cli_at(home: &Path, cwd: &Path, args: &[&str]) -> Output {
    cli_fed(home, cwd, args, None)
}

/// A finished command's standard output, then its standard error, as text (for assertions
/// and their messages).
pub(crate) fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the CLI with `--home home` in the directory `cwd`, writing `input` (if any) to its
/// standard input (a pipe, not a terminal), with a deadline.
pub(crate) fn cli_fed(home: &Path, cwd: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    cli_with(home, cwd, args, &[], input)
}

/// [`cli_fed`] with environment variables `env` added.
pub(crate) fn cli_with(
    home: &Path,
    cwd: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
    input: Option<&[u8]>,
) -> Output {
    let mut child = Command::new(cli_bin())
        .current_dir(cwd)
        .arg("--home")
        .arg(home)
        .args(args)
        .envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        std::io::Write::write_all(&mut stdin, input).unwrap();
    }
    wait_output(child, DEADLINE)
}

/// Waits for `child` to exit and collects its output, reading it while it runs (more than a
/// pipe holds would block it otherwise); kills it and panics after `timeout`.
pub(crate) fn wait_output(child: std::process::Child, timeout: std::time::Duration) -> Output {
    let pid = rustix::process::Pid::from_child(&child);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    if let Ok(output) = finished.recv_timeout(timeout) {
        return output.unwrap();
    }
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    panic!("process {pid:?} did not finish within {timeout:?}");
}

/// Polls the supervision tree until the node `name` exists and `cond` holds for it (a tree
/// request that fails meanwhile, say while the listener restarts, is retried).
pub(crate) async fn wait_node(
    client: &Client,
    name: &str,
    cond: impl Fn(&TreeNode) -> bool,
) -> TreeNode {
    let pick = |tree: &Result<TreeNode, ClientError>| {
        let node = tree.as_ref().ok()?.find(name)?;
        cond(node).then(|| node.clone())
    };
    poll_until(&format!("`{name}`"), || client.tree(), pick).await
}

/// Polls the supervision tree until node `name` has restarted `n` times in all and runs
/// again.
pub(crate) async fn wait_restarted(client: &Client, name: &str, n: u32) -> TreeNode {
    wait_node(client, name, |node| {
        node.restarts == n && node.state == ChildState::Running
    })
    .await
}

/// Injects `fault` into `target` (the daemon must allow fault injection).
pub(crate) async fn try_inject(
    client: &Client,
    target: &str,
    fault: Fault,
) -> Result<FaultInjected, ClientError> {
    client
        .call(Request::InjectFault {
            target: target.into(),
            fault,
        })
        .await
}

/// [`try_inject`] that must succeed.
pub(crate) async fn inject(client: &Client, target: &str, fault: Fault) -> FaultInjected {
    try_inject(client, target, fault.clone())
        .await
        .unwrap_or_else(|e| panic!("injecting {fault:?} into {target}: {e}"))
}

/// The next event on this connection, whatever its topic, within [`DEADLINE`].
pub(crate) async fn next_event(client: &mut Client) -> Event {
    tokio::time::timeout(DEADLINE, client.next_event())
        .await
        .expect("an event in time")
        .expect("connection open")
}

/// The next event on `topic`, skipping others, within [`DEADLINE`].
pub(crate) async fn next_on(client: &mut Client, topic: &str) -> Event {
    let skip = async {
        loop {
            let event = client.next_event().await.expect("connection open");
            if event.topic == topic {
                return event;
            }
        }
    };
    tokio::time::timeout(DEADLINE, skip)
        .await
        .unwrap_or_else(|_| panic!("no event on `{topic}` within {DEADLINE:?}"))
}

/// The error code and message of a call that must fail.
#[track_caller]
pub(crate) fn failure<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Remote(body)) => (body.code, body.message),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// A client of `d` whose every call fails instead of hanging past [`DEADLINE`].
pub(crate) async fn patient_client(d: &TestDaemon) -> Client {
    let mut client = d.client().await;
    client.set_call_timeout(Some(DEADLINE));
    client
}

/// The example MCP server `examples/mcp-test-server.rs`, built beside this test's
/// executable (`target/<profile>/deps/<test>` → `target/<profile>/examples/`). Panics,
/// saying how to build it, when it is missing.
pub(crate) fn mcp_test_server() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps/");
    let server = profile.join("examples/mcp-test-server");
    assert!(
        server.is_file(),
        "{} is missing: run `cargo build --examples` first (`cargo test --workspace` builds it)",
        server.display()
    );
    server
}

/// Whether process `pid` is alive: it exists and is not a zombie (a zombie has exited; its
/// entry lingers only until its parent, or init, reaps it).
pub(crate) fn process_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The process group of live process `pid`.
pub(crate) fn process_group(pid: u32) -> Option<u32> {
    proc_stat(pid).map(|(_, pgid)| pgid)
}

/// State letter and process group from `/proc/<pid>/stat` (`None` when there is no such
/// process).
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`; `comm` may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, group))
}

/// Waits until none of `pids` is alive (see [`process_alive`]); panics naming the
/// survivors after [`DEADLINE`].
#[track_caller]
pub(crate) fn assert_gone(what: &str, pids: &[u32]) {
    let gone = wait_until(DEADLINE, || pids.iter().all(|&p| !process_alive(p)));
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| process_alive(p)).collect();
    assert!(gone, "{what}: still alive after {DEADLINE:?}: {alive:?}");
}

/// Where `program` is found in this process's `PATH`, if anywhere.
pub(crate) fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The live processes of process group `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| process_alive(pid) && process_group(pid) == Some(pgid))
        .collect()
}

/// The last `n` audit entries, oldest first.
pub(crate) async fn audit_tail(client: &Client, n: usize) -> Vec<AuditEntry> {
    client
        .call(Request::AuditTail {
            n: Some(n),
            from: None,
        })
        .await
        .unwrap()
}

/// Runs the slash command `name` with `args`.
pub(crate) async fn invoke(
    client: &Client,
    name: &str,
    args: &[&str],
) -> Result<CommandOutput, ClientError> {
    client
        .call(Request::InvokeCommand {
            name: name.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        })
        .await
}

/// Polls the audit log until an entry matches `cond`.
pub(crate) async fn wait_audit(
    client: &Client,
    what: &str,
    cond: impl Fn(&AuditEntry) -> bool,
) -> AuditEntry {
    let found = poll_async(DEADLINE, async || {
        let tail = audit_tail(client, 200).await;
        tail.iter().find(|e| cond(e)).cloned().ok_or(tail)
    })
    .await;
    found.unwrap_or_else(|tail| panic!("no audit entry for {what} in {tail:#?}"))
}

pub(crate) const AUDIT_TABLE: redb::TableDefinition<u64, &[u8]> =
    redb::TableDefinition::new("audit");

/// Rewrites the `outcome` of stored entry `seq` in `ledger.redb`, keeping the other fields
/// and their names.
pub(crate) fn tamper(db: &Path, seq: u64, outcome: &str) {
    use redb::ReadableTable as _;
    let db = redb::Database::open(db).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut table = tx.open_table(AUDIT_TABLE).unwrap();
        let stored = table.get(seq).unwrap().unwrap().value().to_vec();
        let mut value = rmpv::decode::read_value(&mut stored.as_slice()).unwrap();
        let rmpv::Value::Map(fields) = &mut value else {
            panic!("entry {seq} is not a map: {value}")
        };
        let names: Vec<&str> = fields.iter().filter_map(|(k, _)| k.as_str()).collect();
        assert!(
            names.contains(&"outcome") && names.contains(&"hash"),
            "{names:?}"
        );
        for (k, v) in fields.iter_mut() {
            if k.as_str() == Some("outcome") {
                *v = rmpv::Value::from(outcome);
            }
        }
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &value).unwrap();
        assert_ne!(bytes, stored);
        table.insert(seq, bytes.as_slice()).unwrap();
    }
    tx.commit().unwrap();
}
