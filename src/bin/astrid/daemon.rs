//! Finding, starting and stopping the daemon of a session.
//!
//! Starting: the `astrid-daemon` binary next to this executable (else on `PATH`, else this
//! executable as `astrid daemon`) runs detached in its own process group, with its stderr in `<home>/logs/daemon-boot.log`;
//! the CLI waits for the ready file and a successful handshake, and kills the child (and
//! shows the log) if boot fails. Stopping: a `Shutdown` request (or SIGTERM), a wait until the
//! process is gone, then SIGTERM and SIGKILL past the deadline, always after checking the pid
//! file names a live `astrid-daemon`.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use astrid::client::{Client, ClientError};
use astrid::instance::{InstanceLock, PidFile};
use astrid::paths::{HomeLayout, SessionFiles, prepare_home};
use astrid::protocol::{ErrorCode, Request, ShutdownAck};
use rustix::process::{Pid, Signal, kill_process};

use crate::CliError;
use crate::args::Global;

/// Name the CLI gives itself in handshakes.
pub(crate) const CLIENT_NAME: &str = "astrid-cli";
/// Longest wait for a spawned daemon to become ready.
const BOOT_DEADLINE: Duration = Duration::from_secs(10);
/// How often readiness and process exit are checked.
const POLL: Duration = Duration::from_millis(20);
/// Exit status of `astrid-daemon` when another daemon holds the session.
const ALREADY_RUNNING: i32 = astrid::daemon::EXIT_ALREADY_RUNNING as i32;

/// How a started daemon lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Exits after its last client.
    Ephemeral,
    /// Exits after its last client, and accepts `InjectFault` (for `astrid chaos`).
    EphemeralFaults,
    /// Stays until stopped.
    Persistent {
        /// Pass `--allow-fault-injection`.
        faults: bool,
    },
}

/// Where the session's files are, from the global options.
pub(crate) struct Target {
    pub(crate) home: HomeLayout,
    pub(crate) files: SessionFiles,
    session: uuid::Uuid,
    workspace: Option<PathBuf>,
    idle_grace: Duration,
}

impl Target {
    pub(crate) fn new(global: &Global) -> Result<Self, CliError> {
        let env_home = std::env::var_os("ASTRID_HOME").map(PathBuf::from);
        let home = astrid::paths::resolve_home(global.home.as_deref(), env_home.as_deref())?;
        Ok(Self {
            files: home.session(global.session),
            home,
            session: global.session,
            workspace: global.workspace.clone(),
            idle_grace: global.idle_grace,
        })
    }

    fn boot_log(&self) -> PathBuf {
        self.home.logs().join("daemon-boot.log")
    }

    /// Connects to the running daemon, or starts one in `mode` and connects to it.
    /// Returns the client and whether this call started the daemon.
    /// A daemon that serves another workspace is refused (see [`serves`]).
    pub(crate) async fn connect_or_start(&self, mode: Mode) -> Result<(Client, bool), CliError> {
        let (client, started) = self.connect_or_spawn(mode).await?;
        self.check_workspace(&client)?;
        Ok((client, started))
    }

    /// The mode of the session's daemon, if one runs (for this command's workspace): how
    /// `astrid restart` starts it again. One a service manager runs is refused: restarting
    /// it here would leave a daemon the service manager does not know of.
    pub(crate) async fn running_mode(&self) -> Result<Option<Mode>, CliError> {
        let client = match Client::connect(&self.files, CLIENT_NAME).await {
            Ok(client) => client,
            Err(ClientError::NotRunning { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.check_workspace(&client)?;
        let status = client.status().await?;
        if status.service_manager {
            return Err(CliError::ServiceManaged(status.pid));
        }
        Ok(Some(match (status.ephemeral, status.fault_injection) {
            (true, false) => Mode::Ephemeral,
            (true, true) => Mode::EphemeralFaults,
            (false, faults) => Mode::Persistent { faults },
        }))
    }

    /// The session this command is for.
    pub(crate) fn session(&self) -> uuid::Uuid {
        self.session
    }

    /// The workspace this command is for: `-w`, else the current directory (canonical).
    pub(crate) fn workspace(&self) -> Result<PathBuf, CliError> {
        let given = match &self.workspace {
            Some(path) => path.clone(),
            None => std::env::current_dir()?,
        };
        std::fs::canonicalize(&given).map_err(|source| CliError::Workspace {
            path: given,
            source,
        })
    }

    /// Refuses a daemon that serves another workspace than this command's.
    fn check_workspace(&self, client: &Client) -> Result<(), CliError> {
        // A daemon too old to say which workspace it serves is taken at its word.
        let Some(served) = client.welcome().workspace.as_deref().map(PathBuf::from) else {
            return Ok(());
        };
        let wanted = self.workspace()?;
        if serves(&served, &wanted, self.workspace.is_some()) {
            return Ok(());
        }
        Err(CliError::OtherWorkspace {
            session: self.files.name().to_owned(),
            served,
            wanted,
        })
    }

    async fn connect_or_spawn(&self, mode: Mode) -> Result<(Client, bool), CliError> {
        let booting = || InstanceLock::is_held(&self.files.lock());
        match Client::connect(&self.files, CLIENT_NAME).await {
            Ok(client) => return Ok((client, false)),
            Err(ClientError::NotRunning { .. }) => {}
            // The socket accepted, but there is no token yet: a daemon is booting, or a
            // service manager holds the socket and starts one for this very connection
            // (socket activation).
            Err(ClientError::Token { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok((self.wait_ready(None).await?, false));
            }
            // Bound its socket but not yet written its token: it is booting.
            Err(e) if retryable(&e) && booting() => {}
            Err(e) => return Err(e.into()),
        }
        if booting() {
            // Another daemon is booting; wait for it instead of racing it.
            return Ok((self.wait_ready(None).await?, false));
        }
        let child = self.spawn(mode)?;
        Ok((self.wait_ready(Some(child)).await?, true))
    }

    fn spawn(&self, mode: Mode) -> Result<Child, CliError> {
        prepare_home(&self.home)?;
        let _ = astrid_actors::files::remove_if_exists(&self.files.ready());
        let (binary, prefix) = daemon_command()?;
        let log = self.boot_log();
        let stderr = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&log)
            .map_err(|source| CliError::Spawn {
                binary: binary.clone(),
                source,
            })?;
        let mut command = Command::new(&binary);
        command
            .args(prefix)
            .arg("--home")
            .arg(self.home.root())
            .arg("--session")
            .arg(self.session.to_string());
        if let Some(workspace) = &self.workspace {
            command.arg("--workspace").arg(workspace);
        }
        match mode {
            Mode::Ephemeral | Mode::EphemeralFaults => {
                command
                    .arg("--ephemeral")
                    .arg("--idle-grace")
                    .arg(humantime::format_duration(self.idle_grace).to_string());
                if mode == Mode::EphemeralFaults {
                    command.arg("--allow-fault-injection");
                }
            }
            Mode::Persistent { faults: true } => {
                command.arg("--allow-fault-injection");
            }
            Mode::Persistent { faults: false } => {}
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group: Ctrl-C in this terminal must not reach the daemon.
            .process_group(0);
        command
            .spawn()
            .map_err(|source| CliError::Spawn { binary, source })
    }

    /// Waits for the ready file and a successful connection. With a child, a failed boot is
    /// reported at once and the child is killed on timeout.
    async fn wait_ready(&self, mut child: Option<Child>) -> Result<Client, CliError> {
        let deadline = Instant::now() + BOOT_DEADLINE;
        loop {
            if let Some(c) = child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                if status.code() == Some(ALREADY_RUNNING) {
                    // Lost a start race: the winner is booting.
                    child = None;
                } else {
                    return Err(CliError::BootFailed {
                        status: status.to_string(),
                        log: self.boot_log(),
                        tail: tail(&self.boot_log()),
                    });
                }
            }
            if self.files.ready().exists() {
                match Client::connect(&self.files, CLIENT_NAME).await {
                    Ok(client) => {
                        if let Some(c) = child {
                            // Reap it when it exits so it never lingers as a zombie of ours.
                            std::thread::spawn(move || {
                                let mut c = c;
                                let _ = c.wait();
                            });
                        }
                        return Ok(client);
                    }
                    Err(e) if retryable(&e) => {}
                    Err(e) => {
                        kill(child);
                        return Err(e.into());
                    }
                }
            }
            if Instant::now() >= deadline {
                kill(child);
                return Err(CliError::BootTimeout {
                    after: BOOT_DEADLINE,
                    log: self.boot_log(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the daemon; returns what happened.
    pub(crate) async fn stop(&self, timeout: Duration) -> Result<Stopped, CliError> {
        let pid = PidFile::read(&self.files.pid())
            .ok()
            .filter(PidFile::is_running);
        let Some(pid) = pid else {
            if !InstanceLock::is_held(&self.files.lock()) {
                self.remove_leftovers().await;
                return Ok(Stopped::NotRunning);
            }
            return Err(CliError::NoPidFile(self.files.pid()));
        };
        // A stopped or wedged daemon may accept the connection and never answer: the whole
        // exchange gets the same deadline as the exit.
        let ask = async {
            let client = Client::connect(&self.files, CLIENT_NAME).await?;
            client
                .call::<ShutdownAck>(Request::Shutdown {
                    reason: "astrid stop".into(),
                })
                .await
        };
        let asked = matches!(tokio::time::timeout(timeout, ask).await, Ok(Ok(_)));
        if !asked {
            signal(&pid, Signal::TERM);
        }
        if wait_exit(&pid, timeout).await {
            return Ok(Stopped::Graceful(pid.pid));
        }
        if asked {
            signal(&pid, Signal::TERM);
            if wait_exit(&pid, Duration::from_secs(3)).await {
                self.remove_leftovers().await;
                return Ok(Stopped::Terminated(pid.pid));
            }
        }
        signal(&pid, Signal::KILL);
        if wait_exit(&pid, Duration::from_secs(3)).await {
            self.remove_leftovers().await;
            Ok(Stopped::Killed(pid.pid))
        } else {
            Err(CliError::StopFailed(pid.pid))
        }
    }

    /// Removes session files a dead daemon left behind, never while the lock is held. The
    /// lock is released only when the last thread of the killed process is gone, which may
    /// be a moment after its main thread shows as exited.
    async fn remove_leftovers(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while InstanceLock::is_held(&self.files.lock()) {
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        let files = &self.files;
        for path in [
            files.ready(),
            files.socket(),
            files.token(),
            files.pid(),
            files.lock(),
        ] {
            let _ = astrid_actors::files::remove_if_exists(&path);
        }
    }
}

/// Whether a daemon serving `served` serves a command meant for `wanted` (both canonical):
/// the same folder, or, unless the command named its workspace with `-w`, a folder inside
/// it that is not a workspace of its own (no `.astrid` in it or between).
pub(crate) fn serves(served: &Path, wanted: &Path, explicit: bool) -> bool {
    if served == wanted {
        return true;
    }
    if explicit || !wanted.starts_with(served) {
        return false;
    }
    wanted
        .ancestors()
        .take_while(|dir| *dir != served)
        .all(|dir| !dir.join(".astrid").exists())
}

/// How `stop` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    NotRunning,
    Graceful(u32),
    Terminated(u32),
    Killed(u32),
}

/// Errors that mean "not ready yet" while a daemon boots: no socket, or no token yet, or
/// the previous daemon's token read just before the new one replaced it.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::NotRunning { .. } | ClientError::Token { .. } => true,
        ClientError::Refused(body) => body.code == ErrorCode::Unauthorized,
        _ => false,
    }
}

fn signal(pid: &PidFile, signal: Signal) {
    // Only a process that still is the recorded daemon gets the signal (pids are reused).
    if !pid.is_running() {
        return;
    }
    if let Some(p) = i32::try_from(pid.pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(p, signal);
    }
}

async fn wait_exit(pid: &PidFile, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid.is_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

fn kill(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `astrid-daemon` next to this executable, else on `PATH`, else this executable run as
/// `astrid daemon`. Returns the program and the arguments that select the daemon.
pub(crate) fn daemon_command() -> Result<(PathBuf, &'static [&'static str]), CliError> {
    const NAME: &str = "astrid-daemon";
    let me = std::env::current_exe()?;
    let beside = me
        .parent()
        .map(|dir| dir.join(NAME))
        .filter(|p| p.is_file());
    let on_path = || {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(NAME))
                .find(|p| p.is_file())
        })
    };
    Ok(match beside.or_else(on_path) {
        Some(binary) => (binary, &[]),
        None => (me, &["daemon"]),
    })
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
