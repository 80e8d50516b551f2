//! Everything the kernel is told from outside: the home layout and session file names,
//! limits, and the configuration of one boot. Nothing here reads the environment; the daemon
//! binary resolves paths and flags and fills these in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::capsules::CapsuleOrigin;
use crate::protocol::DEFAULT_MAX_FRAME_LEN;
use crate::store::StoreLimits;
use crate::supervisor::RestartPolicy;
use crate::vfs::VfsLimits;

/// The directories under an Astrid home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeLayout {
    root: PathBuf,
}

impl HomeLayout {
    /// The layout rooted at `root` (`~/.astrid` or `$ASTRID_HOME`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The home itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Sockets, tokens, ready, lock and pid files.
    pub fn sessions(&self) -> PathBuf {
        self.root.join("sessions")
    }

    /// Daily log files.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Databases and caches.
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Capsules installed for every workspace.
    pub fn capsules(&self) -> PathBuf {
        self.root.join("capsules")
    }

    /// Every directory the daemon creates (mode `0700`).
    pub fn dirs(&self) -> [PathBuf; 5] {
        [
            self.root.clone(),
            self.sessions(),
            self.logs(),
            self.state(),
            self.capsules(),
        ]
    }

    /// The files of one session.
    pub fn session(&self, id: Uuid) -> SessionFiles {
        SessionFiles::new(self.sessions(), id)
    }
}

/// Capsule folders of a workspace.
pub fn workspace_capsules(workspace: &Path) -> PathBuf {
    workspace.join(".astrid").join("capsules")
}

/// The files of one session: `<dir>/<name>.{sock,token,ready,lock,pid}`, where `<name>` is
/// `system` for the nil UUID and the UUID otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFiles {
    dir: PathBuf,
    name: String,
}

impl SessionFiles {
    /// The files of session `id` in `dir`.
    pub fn new(dir: impl Into<PathBuf>, id: Uuid) -> Self {
        Self {
            dir: dir.into(),
            name: session_name(id),
        }
    }

    /// `system` or the UUID.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn file(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.name))
    }

    /// The Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.file("sock")
    }

    /// The token file (`0600`).
    pub fn token(&self) -> PathBuf {
        self.file("token")
    }

    /// The readiness sentinel, written last at boot.
    pub fn ready(&self) -> PathBuf {
        self.file("ready")
    }

    /// The single-instance lock.
    pub fn lock(&self) -> PathBuf {
        self.file("lock")
    }

    /// The pid file: pid, then the executable path.
    pub fn pid(&self) -> PathBuf {
        self.file("pid")
    }

    /// The record of the MCP servers' process groups (see [`crate::mcp::groups`]).
    pub fn mcp_groups(&self) -> PathBuf {
        self.file("mcp")
    }
}

/// `system` for the nil UUID, otherwise the hyphenated UUID.
pub fn session_name(id: Uuid) -> String {
    if id.is_nil() {
        "system".to_owned()
    } else {
        id.hyphenated().to_string()
    }
}

/// Largest file read or written through the API: a frame minus room for its envelope.
const FILE_LIMIT: u64 = (DEFAULT_MAX_FRAME_LEN - 64 * 1024) as u64;

/// Limits on connections and calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted, in bytes after the length prefix.
    pub max_frame_len: usize,
    /// Time a client has to complete the handshake.
    pub handshake_timeout: Duration,
    /// Deadline of a request sent to an actor.
    pub call_timeout: Duration,
    /// Time a client may leave a large backlog of replies unread before it is dropped.
    pub write_timeout: Duration,
    /// Time sessions get to finish in-flight requests at shutdown.
    pub drain_timeout: Duration,
    /// Requests in flight per connection.
    pub max_in_flight: usize,
    /// Events queued per subscriber before new ones are dropped.
    pub event_queue: usize,
    /// Bytes of events queued per subscriber before new ones are dropped (an event larger
    /// than this still goes into an empty queue).
    pub event_queue_bytes: usize,
    /// Open connections, authenticated or not; one more is refused at once.
    pub max_connections: usize,
    /// Connections still waiting for their handshake; one more is refused at once.
    pub max_unauthenticated: usize,
    /// Refused connections and handshakes are audited and logged one by one only while
    /// they are rare: within this window of the last one recorded, they are counted, and
    /// the count is recorded when the window ends.
    pub refusal_window: Duration,
    /// How long a capsule's thread with nothing to do waits before it retires with the
    /// capsule's instance ([`IDLE_LINGER`](crate::capsule::IDLE_LINGER) by default).
    pub capsule_linger: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(3),
            max_in_flight: 1024,
            event_queue: 1024,
            event_queue_bytes: crate::bus::DEFAULT_QUEUE_BYTES,
            max_connections: 1024,
            max_unauthenticated: 64,
            refusal_window: Duration::from_secs(10),
            capsule_linger: crate::capsule::IDLE_LINGER,
        }
    }
}

/// Called once, on the first shutdown request, with its reason (the daemon arms a
/// force-exit watchdog here).
pub type ShutdownHook = Arc<dyn Fn(&str) + Send + Sync>;

/// One boot of the kernel.
pub struct KernelConfig {
    /// Daemon version, reported to clients.
    pub version: String,
    /// The home (`~/.astrid`): the user's own, trusted configuration.
    pub home: HomeLayout,
    /// Session UUID (nil = `system`).
    pub session_id: Uuid,
    /// Where the session's files go.
    pub files: SessionFiles,
    /// Workspace root (the VFS root).
    pub workspace: PathBuf,
    /// Where the databases live (`<home>/state`).
    pub state_dir: PathBuf,
    /// Key and value limits of the key-value store.
    pub store_limits: StoreLimits,
    /// Read and write limits of the VFS.
    pub vfs_limits: VfsLimits,
    /// Capsule roots in precedence order (later overrides earlier).
    pub capsule_roots: Vec<(CapsuleOrigin, PathBuf)>,
    /// MCP server configuration files in precedence order (later overrides earlier by
    /// server name): `<home>/mcp.toml`, then `<workspace>/.astrid/mcp.toml`.
    pub mcp_files: Vec<PathBuf>,
    /// The soft open-file limit MCP servers start with: the one the process started with,
    /// when it raised its own; `None` leaves them the daemon's.
    pub mcp_open_file_limit: Option<u64>,
    /// Exit after the last client leaves.
    pub ephemeral: bool,
    /// How long an ephemeral daemon waits without clients.
    pub idle_grace: Duration,
    /// Accept `InjectFault`.
    pub allow_fault_injection: bool,
    /// The root supervisor's restart budget.
    pub restart_policy: RestartPolicy,
    /// Connection and call limits.
    pub limits: Limits,
    /// Topic patterns clients may publish to.
    pub client_publish: Vec<String>,
    /// See [`ShutdownHook`].
    pub on_shutdown: Option<ShutdownHook>,
}

impl std::fmt::Debug for KernelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelConfig")
            .field("session_id", &self.session_id)
            .field("files", &self.files)
            .field("workspace", &self.workspace)
            .field("ephemeral", &self.ephemeral)
            .field("idle_grace", &self.idle_grace)
            .field("restart_policy", &self.restart_policy)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl KernelConfig {
    /// Defaults for session `session_id` of the home `home`, serving `workspace`:
    /// persistent, capsules from the home then the workspace, clients publish to `user.>`.
    pub fn new(home: &HomeLayout, session_id: Uuid, workspace: PathBuf) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            home: home.clone(),
            session_id,
            files: home.session(session_id),
            state_dir: home.state(),
            store_limits: StoreLimits::default(),
            // File content travels in one frame, with its envelope.
            vfs_limits: VfsLimits {
                max_read: FILE_LIMIT,
                max_write: FILE_LIMIT,
            },
            capsule_roots: vec![
                (CapsuleOrigin::Home, home.capsules()),
                (CapsuleOrigin::Workspace, workspace_capsules(&workspace)),
            ],
            mcp_files: vec![
                home.root().join(crate::mcp::config::FILE),
                workspace.join(".astrid").join(crate::mcp::config::FILE),
            ],
            mcp_open_file_limit: None,
            workspace,
            ephemeral: false,
            idle_grace: Duration::from_secs(5),
            allow_fault_injection: false,
            restart_policy: RestartPolicy::default(),
            limits: Limits::default(),
            client_publish: vec!["user.>".to_owned()],
            on_shutdown: None,
        }
    }
}

/// Facts about the running daemon that every session may report.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    /// Process id.
    pub pid: u32,
    /// Daemon version.
    pub version: String,
    /// Session UUID.
    pub session_id: Uuid,
    /// `system` or the UUID.
    pub session_name: String,
    /// Workspace root.
    pub workspace: PathBuf,
    /// Socket path.
    pub socket: PathBuf,
    /// Whether it exits when idle.
    pub ephemeral: bool,
    /// Idle grace (ephemeral mode).
    pub idle_grace: Duration,
    /// Whether `InjectFault` is accepted.
    pub fault_injection: bool,
    /// Boot time.
    pub started_at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_files_are_named_after_the_session() {
        let home = HomeLayout::new("/h");
        let system = home.session(Uuid::nil());
        assert_eq!(system.socket(), PathBuf::from("/h/sessions/system.sock"));
        assert_eq!(system.token(), PathBuf::from("/h/sessions/system.token"));
        let id = Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        assert_eq!(
            home.session(id).ready(),
            PathBuf::from("/h/sessions/67e55044-10b1-426f-9247-bb680e5fe0c8.ready")
        );
    }
}
