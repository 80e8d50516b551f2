//! Shared helpers for the socket-level tests: a real `astrid-daemon` process in a temporary
//! home, waited on by polling its ready file with a deadline, and killed when dropped; plus
//! raw-frame helpers for tests that speak the protocol byte by byte.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::missing_panics_doc
)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use astrid::client::{Client, ClientError};
use astrid::paths::{HomeLayout, SessionFiles};
use astrid::protocol::{AuditEntry, ErrorCode, Request, TreeNode};
use serde::Serialize;
use tempfile::TempDir;

/// Generous deadline for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The example `echo` capsule's module: the smallest valid capsule.
#[allow(dead_code, reason = "not every test binary writes capsules")]
pub const ECHO_WAT: &str = include_str!("../../../examples/capsules/echo/echo.wat");

/// The daemon binary under test.
pub fn daemon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_astrid-daemon")
}

/// The CLI binary under test.
pub fn cli_bin() -> &'static str {
    env!("CARGO_BIN_EXE_astrid")
}

/// A short temporary directory (socket paths must fit in 107 bytes).
pub fn short_tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("ad")
        .tempdir_in("/tmp")
        .unwrap()
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A daemon process in its own temporary home and workspace.
pub struct TestDaemon {
    pub home: TempDir,
    pub workspace: TempDir,
    pub layout: HomeLayout,
    pub files: SessionFiles,
    pub child: Child,
}

impl TestDaemon {
    /// Starts a persistent daemon with extra `args` and waits until it is ready.
    pub fn start(args: &[&str]) -> Self {
        let d = Self::spawn(short_tempdir(), args);
        d.wait_ready();
        d
    }

    /// Starts a persistent daemon whose home holds copies of the example capsules
    /// `examples` (paths under `examples/capsules/`, e.g. `echo` or `faults/trap`), and waits
    /// until it is ready.
    pub fn start_with_capsules(examples: &[&str], args: &[&str]) -> Self {
        Self::start_prepared(args, |home, _| {
            for example in examples {
                copy_capsule(&example_capsule(example), &home.join("capsules"));
            }
        })
    }

    /// Starts a persistent daemon after `prepare(home, workspace)` has written what it
    /// needs into the (still empty) home and workspace, and waits until it is ready.
    pub fn start_prepared(args: &[&str], prepare: impl FnOnce(&Path, &Path)) -> Self {
        let home = short_tempdir();
        let workspace = short_tempdir();
        prepare(home.path(), workspace.path());
        let d = Self::spawn_in(home, workspace, args);
        d.wait_ready();
        d
    }

    /// Starts a daemon in an existing home without waiting.
    pub fn spawn(home: TempDir, args: &[&str]) -> Self {
        Self::spawn_in(home, short_tempdir(), args)
    }

    /// Starts a daemon in an existing home and workspace without waiting.
    pub fn spawn_in(home: TempDir, workspace: TempDir, args: &[&str]) -> Self {
        Self::spawn_env(home, workspace, args, &[])
    }

    /// Waits for the ready file; panics with the daemon's stderr if it exits first.
    pub fn wait_ready(&self) {
        let ready = self.files.ready();
        let end = Instant::now() + DEADLINE;
        while !ready.exists() {
            assert!(Instant::now() < end, "daemon not ready within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.files.token()).unwrap()
    }

    pub fn socket(&self) -> PathBuf {
        self.files.socket()
    }

    /// A connected, authenticated client (needs a Tokio runtime).
    pub async fn client(&self) -> Client {
        Client::connect(&self.files, "test").await.unwrap()
    }

    /// A raw connection that has completed the handshake.
    pub fn raw(&self) -> Raw {
        let mut raw = Raw::connect(&self.socket());
        let welcome = raw.hello(&self.token(), 1);
        assert_eq!(
            get(&welcome, "ok"),
            &rmpv::Value::Boolean(true),
            "{welcome}"
        );
        raw
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the daemon wrote to stderr (after it exited).
    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Session files still on disk (the lock included).
    pub fn leftover_files(&self) -> Vec<String> {
        files_in(&self.layout.sessions())
    }

    /// Runs the CLI against this daemon's home, for its workspace.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all = vec!["--workspace", self.workspace.path().to_str().unwrap()];
        all.extend_from_slice(args);
        cli_in(self.home.path(), &all)
    }
}

impl TestDaemon {
    /// Like [`TestDaemon::start_prepared`], with `env` added to the daemon's environment
    /// (on top of the test's own).
    pub fn start_prepared_env(
        args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path, &Path),
    ) -> Self {
        let home = short_tempdir();
        let workspace = short_tempdir();
        prepare(home.path(), workspace.path());
        let d = Self::spawn_env(home, workspace, args, env);
        d.wait_ready();
        d
    }

    /// Like [`TestDaemon::spawn_in`], with `env` added to the daemon's environment.
    pub fn spawn_env(
        home: TempDir,
        workspace: TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let layout = HomeLayout::new(home.path());
        let files = layout.session(uuid::Uuid::nil());
        let child = Command::new(daemon_bin())
            .arg("--home")
            .arg(home.path())
            .arg("--workspace")
            .arg(workspace.path())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self {
            home,
            workspace,
            layout,
            files,
            child,
        }
    }

    /// Sends SIGTERM (a clean shutdown) unless the daemon has exited, and waits for it to
    /// exit; `None` when it is still running after `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.child.try_wait().unwrap() {
            return Some(status);
        }
        self.signal(rustix::process::Signal::TERM);
        self.wait_exit(timeout)
    }
}

/// A [`TestDaemon`] shut down cleanly (SIGTERM, waiting for it to exit) when dropped, so
/// that whatever it started (MCP servers and their children) is cleaned up even when a
/// test fails half-way; the [`TestDaemon`]'s own drop then kills it if it is still there.
pub struct Graceful(pub TestDaemon);

impl std::ops::Deref for Graceful {
    type Target = TestDaemon;

    fn deref(&self) -> &TestDaemon {
        &self.0
    }
}

impl std::ops::DerefMut for Graceful {
    fn deref_mut(&mut self) -> &mut TestDaemon {
        &mut self.0
    }
}

impl Drop for Graceful {
    fn drop(&mut self) {
        if self.0.child.try_wait().ok().flatten().is_none() {
            // Nothing here may panic: this may run while a failed test unwinds.
            if let Some(pid) = rustix::process::Pid::from_raw(self.0.pid()) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let end = Instant::now() + DEADLINE;
            while matches!(self.0.child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The folder of an example capsule: `examples/capsules/<rel>`.
pub fn example_capsule(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/capsules")
        .join(rel)
}

/// Copies the files of capsule folder `src` (not its subfolders: sources and build files
/// are not needed to run it) into `root/<folder name>`; returns the copy.
pub fn copy_capsule(src: &Path, root: &Path) -> PathBuf {
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
#[allow(dead_code, reason = "not every test binary writes capsules")]
pub fn write_capsule(
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
#[allow(dead_code, reason = "not every test binary writes capsules")]
pub fn one_command_manifest(name: &str, extra: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\n\n[module]\nfile = \"m.wat\"\n\n\
         [[command]]\nname = \"{name}\"\n\n{extra}"
    )
}

/// Names in a directory, sorted (empty when it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
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
pub fn cli_in(home: &Path, args: &[&str]) -> Output {
    cli_at(home, Path::new("."), args)
}

/// Runs the CLI with `--home home` in the directory `cwd`, with a deadline.
pub fn cli_at(home: &Path, cwd: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(cli_bin())
        .current_dir(cwd)
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= end {
            let _ = child.kill();
            panic!("astrid {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

/// A blocking connection speaking raw frames, with a read timeout so nothing hangs.
pub struct Raw {
    pub stream: UnixStream,
}

impl Raw {
    pub fn connect(socket: &Path) -> Self {
        let stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Self { stream }
    }

    /// Sends one frame with `body` as is.
    pub fn send_bytes(&mut self, body: &[u8]) {
        let len = u32::try_from(body.len()).unwrap();
        self.stream.write_all(&len.to_be_bytes()).unwrap();
        self.stream.write_all(body).unwrap();
    }

    /// Sends `value` as a MessagePack frame (structs as maps).
    pub fn send<T: Serialize>(&mut self, value: &T) {
        self.send_bytes(&rmp_serde::to_vec_named(value).unwrap());
    }

    /// Reads one frame; `None` on a clean close.
    pub fn recv(&mut self) -> Option<rmpv::Value> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read failed: {e}"),
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).unwrap();
        Some(rmpv::decode::read_value(&mut body.as_slice()).unwrap())
    }

    /// Whether the daemon closed the connection (after any frames still to read).
    pub fn closed(&mut self) -> bool {
        while let Some(_frame) = self.recv() {}
        true
    }

    /// Sends a handshake and returns the reply.
    pub fn hello(&mut self, token: &str, protocol: u64) -> rmpv::Value {
        #[derive(Serialize)]
        struct Hello<'a> {
            token: &'a str,
            protocol: u64,
            client: &'a str,
        }
        self.send(&Hello {
            token,
            protocol,
            client: "raw-test",
        });
        self.recv().expect("handshake reply")
    }

    /// Sends `{"id": id, "request": request}`.
    pub fn request<R: Serialize>(&mut self, id: u64, request: R) {
        #[derive(Serialize)]
        struct Frame<R> {
            id: u64,
            request: R,
        }
        self.send(&Frame { id, request });
    }
}

/// `value[key]` for a MessagePack map, `Nil` when absent.
pub fn get<'a>(value: &'a rmpv::Value, key: &str) -> &'a rmpv::Value {
    static NIL: rmpv::Value = rmpv::Value::Nil;
    value
        .as_map()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v)
        })
        .unwrap_or(&NIL)
}

/// The `error.code` of a reply or handshake refusal.
pub fn error_code(value: &rmpv::Value) -> Option<&str> {
    get(get(value, "error"), "code").as_str()
}

/// Calls `fetch` every 10 ms until `pick` finds what is wanted in its answer, for at most
/// [`DEADLINE`]; then panics saying that `what` never reached the state wanted, with the
/// last answer.
#[allow(dead_code, reason = "not every test binary polls")]
pub async fn poll_until<T: std::fmt::Debug, R, F: Future<Output = T>>(
    what: &str,
    mut fetch: impl FnMut() -> F,
    pick: impl Fn(&T) -> Option<R>,
) -> R {
    let end = Instant::now() + DEADLINE;
    loop {
        let answer = fetch().await;
        if let Some(found) = pick(&answer) {
            return found;
        }
        assert!(
            Instant::now() < end,
            "{what} never reached the state wanted: {answer:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the supervision tree until the node `name` exists and `cond` holds for it (a tree
/// request that fails meanwhile, say while the listener restarts, is retried).
#[allow(dead_code, reason = "not every test binary watches the tree")]
pub async fn wait_node(client: &Client, name: &str, cond: impl Fn(&TreeNode) -> bool) -> TreeNode {
    let pick = |tree: &Result<TreeNode, ClientError>| {
        let node = tree.as_ref().ok()?.find(name)?;
        cond(node).then(|| node.clone())
    };
    poll_until(&format!("`{name}`"), || client.tree(), pick).await
}

/// The error code and message of a call that must fail.
#[allow(dead_code, reason = "not every test binary expects errors")]
#[track_caller]
pub fn failure<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Remote(body)) => (body.code, body.message),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// A client of `d` whose every call fails instead of hanging past [`DEADLINE`].
#[allow(dead_code, reason = "not every test binary needs it")]
pub async fn patient_client(d: &TestDaemon) -> Client {
    let mut client = d.client().await;
    client.set_call_timeout(Some(DEADLINE));
    client
}

/// The example MCP server `examples/mcp-test-server.rs`, built beside this test's
/// executable (`target/<profile>/deps/<test>` → `target/<profile>/examples/`). Panics,
/// saying how to build it, when it is missing.
#[allow(dead_code, reason = "not every test binary runs MCP servers")]
pub fn mcp_test_server() -> PathBuf {
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
#[allow(dead_code, reason = "not every test binary watches processes")]
pub fn process_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The process group of live process `pid`.
#[allow(dead_code, reason = "not every test binary watches processes")]
pub fn process_group(pid: u32) -> Option<u32> {
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
#[allow(dead_code, reason = "not every test binary watches processes")]
#[track_caller]
pub fn assert_gone(what: &str, pids: &[u32]) {
    let gone = wait_until(DEADLINE, || pids.iter().all(|&p| !process_alive(p)));
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| process_alive(p)).collect();
    assert!(gone, "{what}: still alive after {DEADLINE:?}: {alive:?}");
}

/// Where `program` is found in this process's `PATH`, if anywhere.
#[allow(dead_code, reason = "not every test binary looks programs up")]
pub fn find_in_path(program: &str) -> Option<PathBuf> {
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
#[allow(dead_code, reason = "not every test binary watches processes")]
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| process_alive(pid) && process_group(pid) == Some(pgid))
        .collect()
}

/// The last `n` audit entries, oldest first.
#[allow(dead_code, reason = "not every test binary reads the audit log")]
pub async fn audit_tail(client: &Client, n: usize) -> Vec<AuditEntry> {
    client
        .call(Request::AuditTail {
            n: Some(n),
            from: None,
        })
        .await
        .unwrap()
}

/// Polls the audit log until an entry matches `cond`.
#[allow(dead_code, reason = "not every test binary reads the audit log")]
pub async fn wait_audit(
    client: &Client,
    what: &str,
    cond: impl Fn(&AuditEntry) -> bool,
) -> AuditEntry {
    let end = Instant::now() + DEADLINE;
    loop {
        let tail = audit_tail(client, 200).await;
        if let Some(entry) = tail.iter().find(|e| cond(e)) {
            return entry.clone();
        }
        assert!(
            Instant::now() < end,
            "no audit entry for {what} in {tail:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
