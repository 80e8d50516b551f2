//! A real `astrid-daemon` process in a temporary home and workspace, described with
//! [`TestDaemon::builder`] (flags, example capsules, an `mcp.toml`, environment, anything
//! else written before it starts, or an existing home), waited on by polling its ready file,
//! and killed when dropped; [`Graceful`] shuts it down cleanly instead.

use std::io::Read;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use astrid::client::Client;
use astrid::paths::{HomeLayout, SessionFiles};
use tempfile::TempDir;

use super::poll::{DEADLINE, poll, wait_until};
use super::raw::{Raw, get};
use super::{cli_in, copy_capsule, daemon_bin, example_capsule, files_in, short_tempdir};

/// A daemon process in its own temporary home and workspace.
#[derive(Debug)]
pub(crate) struct TestDaemon {
    pub(crate) home: TempDir,
    pub(crate) workspace: TempDir,
    pub(crate) layout: HomeLayout,
    pub(crate) files: SessionFiles,
    pub(crate) child: Child,
}

/// Something written into the (home, workspace) before the daemon starts.
type Prepare<'a> = Box<dyn FnOnce(&Path, &Path) + 'a>;

/// How a [`TestDaemon`] is started: see [`TestDaemon::builder`].
#[must_use]
pub(crate) struct Builder<'a> {
    home: Option<TempDir>,
    workspace: Option<TempDir>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    open_files: Option<u64>,
    stderr: Option<std::fs::File>,
    prepare: Vec<Prepare<'a>>,
}

impl TestDaemon {
    /// A persistent daemon in a fresh home and workspace, with no flags; see [`Builder`].
    pub(crate) fn builder<'a>() -> Builder<'a> {
        Builder {
            home: None,
            workspace: None,
            args: Vec::new(),
            env: Vec::new(),
            open_files: None,
            stderr: None,
            prepare: Vec::new(),
        }
    }
}

impl<'a> Builder<'a> {
    /// Runs in `home` (say, one a previous daemon left) instead of a fresh one.
    pub(crate) fn home(mut self, home: TempDir) -> Self {
        self.home = Some(home);
        self
    }

    /// Serves `workspace` instead of a fresh one.
    pub(crate) fn workspace(mut self, workspace: TempDir) -> Self {
        self.workspace = Some(workspace);
        self
    }

    /// Adds command-line flags.
    pub(crate) fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|&a| a.to_owned()));
        self
    }

    /// Accepts `InjectFault` (`--allow-fault-injection`).
    pub(crate) fn fault_injection(self) -> Self {
        self.args(&["--allow-fault-injection"])
    }

    /// Copies the example capsules `examples` (paths under `examples/capsules/`, e.g.
    /// `echo` or `faults/trap`) into the home.
    pub(crate) fn capsules(self, examples: &[&str]) -> Self {
        let examples: Vec<PathBuf> = examples.iter().map(|e| example_capsule(e)).collect();
        self.prepare(move |home, _| {
            for example in &examples {
                copy_capsule(example, &home.join("capsules"));
            }
        })
    }

    /// Writes `config` as the home's `mcp.toml`.
    pub(crate) fn mcp(self, config: impl Into<String>) -> Self {
        let config = config.into();
        self.prepare(move |home, _| std::fs::write(home.join("mcp.toml"), config).unwrap())
    }

    /// Writes `config` as the workspace's `.astrid/mcp.toml`.
    pub(crate) fn workspace_mcp(self, config: impl Into<String>) -> Self {
        let config = config.into();
        self.prepare(move |_, workspace| {
            let dir = workspace.join(".astrid");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("mcp.toml"), config).unwrap();
        })
    }

    /// Adds `env` to the daemon's environment (on top of the test's own).
    pub(crate) fn envs(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())));
        self
    }

    /// Sends the daemon's stderr to `file` instead of a pipe ([`TestDaemon::stderr`] is then
    /// empty).
    pub(crate) fn stderr_to(mut self, file: std::fs::File) -> Self {
        self.stderr = Some(file);
        self
    }

    /// Starts the daemon with a soft open-file limit of `limit` (through `sh -c 'ulimit -Sn'`:
    /// this process's own limits stay as they are).
    pub(crate) fn soft_open_file_limit(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }

    /// Has `prepare(home, workspace)` write whatever else the daemon needs before it starts
    /// (after the capsules and `mcp.toml` asked for earlier); it may borrow from the test.
    pub(crate) fn prepare(mut self, prepare: impl FnOnce(&Path, &Path) + 'a) -> Self {
        self.prepare.push(Box::new(prepare));
        self
    }

    /// Starts the daemon and waits until it is ready.
    pub(crate) fn start(self) -> TestDaemon {
        let d = self.spawn();
        d.wait_ready();
        d
    }

    /// Starts the daemon without waiting (see [`TestDaemon::wait_ready`]).
    pub(crate) fn spawn(self) -> TestDaemon {
        let home = self.home.unwrap_or_else(short_tempdir);
        let workspace = self.workspace.unwrap_or_else(short_tempdir);
        for prepare in self.prepare {
            prepare(home.path(), workspace.path());
        }
        let layout = HomeLayout::new(home.path());
        let files = layout.session(uuid::Uuid::nil());
        let mut command = match self.open_files {
            None => Command::new(daemon_bin()),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -Sn {limit} && exec \"$0\" \"$@\""))
                    .arg(daemon_bin());
                sh
            }
        };
        let child = command
            .arg("--home")
            .arg(home.path())
            .arg("--workspace")
            .arg(workspace.path())
            .args(&self.args)
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.stderr.map_or_else(Stdio::piped, Stdio::from))
            .spawn()
            .unwrap();
        TestDaemon {
            home,
            workspace,
            layout,
            files,
            child,
        }
    }
}

impl TestDaemon {
    /// Waits for the ready file; panics if it does not appear within [`DEADLINE`].
    pub(crate) fn wait_ready(&self) {
        let ready = self.files.ready();
        assert!(
            wait_until(DEADLINE, || ready.exists()),
            "daemon not ready within {DEADLINE:?}"
        );
    }

    pub(crate) fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub(crate) fn token(&self) -> String {
        std::fs::read_to_string(self.files.token()).unwrap()
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.files.socket()
    }

    /// A connected, authenticated client (needs a Tokio runtime).
    pub(crate) async fn client(&self) -> Client {
        Client::connect(&self.files, "test").await.unwrap()
    }

    /// A raw connection that has completed the handshake.
    pub(crate) fn raw(&self) -> Raw {
        let mut raw = Raw::connect(&self.socket());
        let welcome = raw.hello(&self.token(), 1);
        assert_eq!(
            get(&welcome, "ok"),
            &rmpv::Value::Boolean(true),
            "{welcome}"
        );
        raw
    }

    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits for the process to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll(timeout, || self.child.try_wait().unwrap().ok_or(())).ok()
    }

    /// Kills the daemon with SIGKILL and returns a new one started on the same home (with
    /// `args`), once it is ready: its own pid is in the ready file, not the dead one's.
    pub(crate) fn kill_and_restart(mut self, args: &[&str]) -> TestDaemon {
        self.signal(rustix::process::Signal::KILL);
        let status = self
            .wait_exit(DEADLINE)
            .expect("the daemon dies after SIGKILL");
        assert_eq!(status.signal(), Some(9), "{status}");
        // It had no chance to clean up: its socket and session files are still there.
        assert!(self.socket().exists(), "{:?}", self.leftover_files());
        assert!(self.files.ready().exists() && self.files.token().exists());
        let home = std::mem::replace(&mut self.home, short_tempdir());
        drop(self);
        let mut next = TestDaemon::builder().home(home).args(args).spawn();
        let mine = format!("pid={}\n", next.child.id());
        let ready = next.files.ready();
        let booted = poll(DEADLINE, || {
            if std::fs::read_to_string(&ready).is_ok_and(|text| text.starts_with(&mine)) {
                return Ok(None);
            }
            next.child.try_wait().unwrap().map(Some).ok_or(())
        });
        match booted {
            Ok(None) => next,
            Ok(Some(status)) => panic!(
                "the daemon did not boot after a crash ({status}): {}",
                next.stderr()
            ),
            Err(()) => panic!("daemon not ready within {DEADLINE:?}"),
        }
    }

    /// Sends SIGTERM (a clean shutdown) unless the daemon has exited, and waits for it to
    /// exit; `None` when it is still running after `timeout`.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.child.try_wait().unwrap() {
            return Some(status);
        }
        self.signal(rustix::process::Signal::TERM);
        self.wait_exit(timeout)
    }

    /// Everything the daemon wrote to stderr (after it exited).
    pub(crate) fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    /// Every line of the daemon's log files so far.
    pub(crate) fn log_text(&self) -> String {
        let logs = self.layout.logs();
        let mut text = String::new();
        for name in files_in(&logs) {
            text.push_str(&std::fs::read_to_string(logs.join(name)).unwrap_or_default());
        }
        text
    }

    /// Session files still on disk (the lock included).
    pub(crate) fn leftover_files(&self) -> Vec<String> {
        files_in(&self.layout.sessions())
    }

    /// Runs the CLI against this daemon's home, for its workspace.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        let mut all = vec!["--workspace", self.workspace.path().to_str().unwrap()];
        all.extend_from_slice(args);
        cli_in(self.home.path(), &all)
    }

    /// [`Self::cli`] with `input` on its standard input.
    pub(crate) fn cli_fed(&self, args: &[&str], input: &[u8]) -> Output {
        let mut all = vec!["--workspace", self.workspace.path().to_str().unwrap()];
        all.extend_from_slice(args);
        super::cli_fed(self.home.path(), Path::new("."), &all, Some(input))
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

/// A [`TestDaemon`] shut down cleanly (SIGTERM, waiting for it to exit) when dropped, so
/// that whatever it started (MCP servers and their children) is cleaned up even when a
/// test fails half-way; the [`TestDaemon`]'s own drop then kills it if it is still there.
#[derive(Debug)]
pub(crate) struct Graceful(pub(crate) TestDaemon);

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
            let _ = poll(DEADLINE, || match self.0.child.try_wait() {
                Ok(None) => Err(()),
                _ => Ok(()),
            });
        }
    }
}
