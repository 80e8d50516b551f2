//! Where a daemon's files are: the folders of an Astrid home, and one session's socket, token,
//! ready, lock and pid files. The daemon creates them and clients find them here, so both
//! agree; resolving the home itself (`--home`, `$ASTRID_HOME`, `~/.astrid`) is the binaries'
//! job.

use std::path::{Path, PathBuf};

use uuid::Uuid;

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

    /// The values of capsules' settings (`astrid settings`), one file per capsule.
    pub fn settings(&self) -> PathBuf {
        self.root.join("settings")
    }

    /// Capsules' crash bundles (`astrid crashes`), and copies of the crashed modules.
    pub fn crashes(&self) -> PathBuf {
        self.root.join("crashes")
    }

    /// Every directory the daemon creates (mode `0700`).
    pub fn dirs(&self) -> [PathBuf; 7] {
        [
            self.root.clone(),
            self.sessions(),
            self.logs(),
            self.state(),
            self.capsules(),
            self.settings(),
            self.crashes(),
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

    /// The record of the MCP servers' process groups, swept by the next daemon of the session.
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
