//! Everything the kernel is told from outside: the home layout and session file names,
//! limits, and the configuration of one boot. Nothing here reads the environment; the daemon
//! binary resolves paths and flags and fills these in.

use std::path::PathBuf;

use std::time::Duration;

use uuid::Uuid;

use crate::audit::AuditPolicy;
use crate::capsules::CapsuleOrigin;
use crate::ledger::retention::Retention;
use crate::protocol::{DEFAULT_MAX_FRAME_LEN, Setting};
use crate::runtime::{Hosting, Limits, ShutdownHook};
use crate::store::StoreLimits;
use crate::supervisor::RestartPolicy;
use crate::vfs::VfsLimits;

pub use astrid_protocol::layout::{HomeLayout, SessionFiles, session_name, workspace_capsules};

/// Bytes of page cache redb keeps for each database by default (redb's own default is 1
/// GiB, far more than a per-user daemon should hold).
pub const DEFAULT_DB_CACHE: usize = 8 * 1024 * 1024;

/// Largest file read or written through the API: a frame minus room for its envelope.
const FILE_LIMIT: u64 = (DEFAULT_MAX_FRAME_LEN - 64 * 1024) as u64;

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
    /// How the process is run (a service manager, the journal).
    pub hosting: Hosting,
    /// The root supervisor's restart budget.
    pub restart_policy: RestartPolicy,
    /// Connection and call limits.
    pub limits: Limits,
    /// Topic patterns clients may publish to.
    pub client_publish: Vec<String>,
    /// Which requests the audit log records.
    pub audit_policy: AuditPolicy,
    /// How long and how large the audit log may grow.
    pub audit_retention: Retention,
    /// Bytes of page cache for each redb database.
    pub db_cache: usize,
    /// The configuration file the daemon's edge read (it may not exist), for `GetConfig`.
    pub config_file: PathBuf,
    /// Every setting with its value and where it came from, as the daemon's edge resolved
    /// them, for `GetConfig`.
    pub settings: Vec<Setting>,
    /// See [`ShutdownHook`].
    pub on_shutdown: Option<ShutdownHook>,
    /// A listening socket the service manager bound on the session's path (socket
    /// activation), used instead of binding one.
    pub activated_socket: Option<std::os::unix::net::UnixListener>,
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
            hosting: Hosting::default(),
            restart_policy: RestartPolicy::default(),
            limits: Limits::default(),
            client_publish: vec!["user.>".to_owned()],
            audit_policy: AuditPolicy::default(),
            audit_retention: Retention::default(),
            db_cache: DEFAULT_DB_CACHE,
            config_file: home.root().join("config.toml"),
            settings: Vec::new(),
            on_shutdown: None,
            activated_socket: None,
        }
    }
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
