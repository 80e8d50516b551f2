//! Workspace trust, in the manner of `direnv allow`: a workspace's `.astrid/` (capsules and
//! `mcp.toml`) is code the user did not necessarily write, so nothing of it is compiled,
//! started or run until the user trusts the workspace (`astrid trust`). Trusting records
//! the workspace's canonical path and a snapshot of its `.astrid/` (every file by content
//! hash, `snapshot.rs`) in the home (`store.rs`); a workspace whose `.astrid/` differs from
//! its snapshot is untrusted again, with a message saying what changed. The home's own
//! capsules and `mcp.toml` are the user's and need no trust; nor does a workspace whose
//! `.astrid/` is the home itself.
//!
//! Plain, blocking code (it reads and hashes files): the capsule registry and the MCP
//! launcher ask for a [`TrustInfo`] at every scan, and sessions run the trust requests on the
//! blocking pool.

pub mod snapshot;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use self::snapshot::{Snapshot, SnapshotError, config_dir, describe_changes, snapshot};
use self::store::{StoreError, TrustRecord, TrustStore};
pub use astrid_protocol::payload::trust::{TrustInfo, TrustState};

/// Why a trust request failed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The path is not an existing folder.
    #[error("cannot trust `{}`: {source}", path.display())]
    Path {
        /// As given.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: std::io::Error,
    },
    /// The workspace's configuration cannot be read whole.
    #[error("cannot trust `{}`: {source}", path.display())]
    Snapshot {
        /// The workspace.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: SnapshotError,
    },
    /// The record in the home cannot be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The trust of one daemon's workspace, and the trust requests for any workspace.
#[derive(Debug)]
pub struct WorkspaceTrust {
    store: TrustStore,
    /// The home, canonical (when it exists).
    home: PathBuf,
    /// The daemon's workspace (canonical).
    workspace: PathBuf,
    /// The verdict of the latest check of the workspace.
    last: Mutex<Option<TrustInfo>>,
}

impl WorkspaceTrust {
    /// The trust of `workspace` (canonical), recorded in the home at `home`.
    pub fn new(home: &Path, workspace: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            store: TrustStore::new(home),
            home: std::fs::canonicalize(home).unwrap_or_else(|_| home.to_owned()),
            workspace,
            last: Mutex::new(None),
        })
    }

    /// The daemon's workspace.
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// Checks the daemon's workspace now (reading and hashing its `.astrid/`), remembers
    /// the verdict for [`last`](Self::last), and logs a workspace that is not trusted.
    pub fn check(&self) -> TrustInfo {
        let info = self.info(&self.workspace);
        if !info.allows() {
            tracing::warn!(
                workspace = %self.workspace.display(),
                "{}",
                info.message.as_deref().unwrap_or("not trusted")
            );
        }
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(info.clone());
        info
    }

    /// The verdict of the latest [`check`](Self::check), checking now if there was none.
    pub fn last(&self) -> TrustInfo {
        let last = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        last.unwrap_or_else(|| self.check())
    }

    /// Trusts `path` (default: the daemon's workspace) with its `.astrid/` as it is now.
    ///
    /// # Errors
    ///
    /// See [`TrustError`].
    pub fn trust(&self, path: Option<&Path>) -> Result<TrustInfo, TrustError> {
        let path = self.canonical(path)?;
        let dir = config_dir(&path);
        if self.is_home(&dir) {
            return Ok(self.info(&path));
        }
        let files = snapshot(&dir, Some(&self.home)).map_err(|source| TrustError::Snapshot {
            path: path.clone(),
            source,
        })?;
        let record = TrustRecord {
            path: text(&path),
            trusted_ms: now_ms(),
            files,
        };
        self.store.put(record)?;
        tracing::info!(workspace = %path.display(), "workspace trusted");
        Ok(self.info(&path))
    }

    /// Forgets the trust of `path` (default: the daemon's workspace): where it stands now,
    /// and whether it was trusted. A path that no longer exists is forgotten by the name it
    /// was trusted under.
    ///
    /// # Errors
    ///
    /// The record cannot be read or written.
    pub fn untrust(&self, path: Option<&Path>) -> Result<(TrustInfo, bool), TrustError> {
        let path = match self.canonical(path) {
            Ok(path) | Err(TrustError::Path { path, .. }) => path,
            Err(e) => return Err(e),
        };
        let removed = self.store.remove(&text(&path))?;
        if removed {
            tracing::info!(workspace = %path.display(), "workspace no longer trusted");
        }
        Ok((self.info(&path), removed))
    }

    /// Every trusted workspace, each checked now.
    ///
    /// # Errors
    ///
    /// The record cannot be read.
    pub fn list(&self) -> Result<Vec<TrustInfo>, TrustError> {
        Ok(self
            .store
            .load()?
            .into_iter()
            .map(|r| self.info(Path::new(&r.path)))
            .collect())
    }

    /// Whether `path` names the daemon's workspace.
    pub fn is_own(&self, path: Option<&Path>) -> bool {
        match path {
            None => true,
            Some(p) => std::fs::canonicalize(p).is_ok_and(|p| p == self.workspace),
        }
    }

    fn canonical(&self, path: Option<&Path>) -> Result<PathBuf, TrustError> {
        let Some(path) = path else {
            return Ok(self.workspace.clone());
        };
        let fail = |source| TrustError::Path {
            path: path.to_owned(),
            source,
        };
        if !path.is_absolute() {
            return Err(fail(std::io::Error::other(
                "give an absolute path (the daemon's working directory is not yours)",
            )));
        }
        let canonical = std::fs::canonicalize(path).map_err(fail)?;
        if !canonical.is_dir() {
            return Err(fail(std::io::Error::other("not a folder")));
        }
        Ok(canonical)
    }

    /// Whether `dir` (a workspace's `.astrid/`) is the home.
    fn is_home(&self, dir: &Path) -> bool {
        std::fs::canonicalize(dir).is_ok_and(|d| d == self.home)
    }

    /// Where `path` (canonical) stands now.
    fn info(&self, path: &Path) -> TrustInfo {
        let shown = text(path);
        let dir = config_dir(path);
        let mut info = TrustInfo {
            path: shown.clone(),
            state: TrustState::Untrusted,
            trusted_ms: None,
            files: Vec::new(),
            message: None,
        };
        if self.is_home(&dir) {
            info.state = TrustState::Home;
            info.message = Some("its `.astrid` is the home: the user's own configuration".into());
            return info;
        }
        let record = match self.store.get(&shown) {
            Ok(record) => record,
            Err(e) => {
                info.message = Some(format!("workspace `{shown}` is not trusted: {e}"));
                return info;
            }
        };
        if let Some(r) = &record {
            info.trusted_ms = Some(r.trusted_ms);
            info.files = listed(&r.files);
        }
        let now = match snapshot(&dir, Some(&self.home)) {
            Ok(now) => now,
            Err(e) => {
                info.message = Some(format!(
                    "workspace `{shown}` is not trusted: its configuration cannot be checked ({e})"
                ));
                return info;
            }
        };
        match record {
            None if listed(&now).is_empty() => info.state = TrustState::None,
            None => {
                info.message = Some(format!(
                    "workspace `{shown}` is not trusted: review its `.astrid/`, then run \
                     `astrid trust` there (or `astrid trust {shown}`) to let its capsules and \
                     MCP servers run"
                ));
            }
            Some(r) => match describe_changes(&r.files, &now) {
                None => info.state = TrustState::Trusted,
                Some(changes) => {
                    info.state = TrustState::Changed;
                    info.message = Some(format!(
                        "workspace `{shown}` changed since it was trusted ({changes}): review \
                         its `.astrid/`, then run `astrid trust {shown}` again"
                    ));
                }
            },
        }
        info
    }
}

/// The files and links of a snapshot (folders left out).
fn listed(files: &Snapshot) -> Vec<String> {
    files
        .iter()
        .filter(|(_, kind)| *kind != "dir")
        .map(|(path, _)| path.clone())
        .collect()
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Setup {
        _tmp: tempfile::TempDir,
        home: PathBuf,
        ws: PathBuf,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let (home, ws) = (root.join("home"), root.join("ws"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(ws.join(".astrid/capsules/x")).unwrap();
        std::fs::write(ws.join(".astrid/mcp.toml"), "[[server]]").unwrap();
        Setup {
            _tmp: tmp,
            home,
            ws,
        }
    }

    #[test]
    fn a_workspace_is_untrusted_until_trusted_and_again_once_changed() {
        let s = setup();
        let trust = WorkspaceTrust::new(&s.home, s.ws.clone());
        let first = trust.check();
        assert_eq!(first.state, TrustState::Untrusted);
        assert!(first.message.unwrap().contains("astrid trust"));
        let trusted = trust.trust(None).unwrap();
        assert_eq!(trusted.state, TrustState::Trusted);
        assert_eq!(trusted.files, ["mcp.toml"]);
        assert_eq!(trust.check().state, TrustState::Trusted);
        std::fs::write(s.ws.join(".astrid/capsules/x/Capsule.toml"), "new").unwrap();
        let changed = trust.check();
        assert_eq!(changed.state, TrustState::Changed);
        let message = changed.message.unwrap();
        assert!(
            message.contains("capsules/x/Capsule.toml added"),
            "{message}"
        );
        assert_eq!(trust.last().state, TrustState::Changed);
        trust.trust(Some(&s.ws)).unwrap();
        assert_eq!(trust.check().state, TrustState::Trusted);
        assert_eq!(trust.list().unwrap().len(), 1);
        let (after, removed) = trust.untrust(None).unwrap();
        assert!(removed);
        assert_eq!(after.path, s.ws.display().to_string());
        assert_eq!(after.state, TrustState::Untrusted);
        assert_eq!(trust.check().state, TrustState::Untrusted);
    }

    #[test]
    fn the_home_and_empty_workspaces_need_no_trust() {
        let s = setup();
        let trust = WorkspaceTrust::new(&s.ws.join(".astrid"), s.ws.clone());
        assert_eq!(trust.check().state, TrustState::Home);
        let empty = s.home.join("empty");
        std::fs::create_dir_all(empty.join(".astrid/capsules")).unwrap();
        let trust = WorkspaceTrust::new(&s.home, empty);
        assert_eq!(trust.check().state, TrustState::None);
        assert!(trust.check().allows());
    }

    #[test]
    fn bad_paths_are_refused() {
        let s = setup();
        let trust = WorkspaceTrust::new(&s.home, s.ws.clone());
        for bad in ["relative", "/nonexistent/astrid-x"] {
            assert!(matches!(
                trust.trust(Some(Path::new(bad))),
                Err(TrustError::Path { .. })
            ));
        }
        assert!(trust.is_own(Some(&s.ws)));
        assert!(!trust.is_own(Some(&s.home)));
        // A path that is gone is still forgotten by its name.
        let (gone, removed) = trust
            .untrust(Some(Path::new("/nonexistent/astrid-x")))
            .unwrap();
        assert_eq!(
            (gone.path.as_str(), removed),
            ("/nonexistent/astrid-x", false)
        );
    }
}
