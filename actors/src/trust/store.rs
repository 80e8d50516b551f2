//! The record of trusted workspaces: `<home>/trust.toml` (`0600`), one entry per workspace
//! with its canonical path, when it was trusted, and the snapshot of its `.astrid/` taken
//! then. Written only under an exclusive lock (`<home>/trust.lock`), temp-then-rename, so
//! daemons of several sessions never lose each other's changes and readers never see half a
//! file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::write_private;

/// The record's file name, in the home.
pub const FILE: &str = "trust.toml";
/// The lock taken while the record is rewritten, in the home.
const LOCK: &str = "trust.lock";

/// One trusted workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRecord {
    /// Its canonical path.
    pub path: String,
    /// When it was trusted (Unix milliseconds).
    pub trusted_ms: u64,
    /// Its `.astrid/` as it was then (see `snapshot.rs`).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    #[serde(default)]
    workspace: Vec<TrustRecord>,
}

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, locking or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The file is not what this daemon writes; nothing is trusted until it is fixed.
    #[error("{} is damaged ({reason}); fix or remove it, then trust the workspaces again", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
}

/// The record file of one home.
#[derive(Debug, Clone)]
pub struct TrustStore {
    file: PathBuf,
    lock: PathBuf,
}

impl TrustStore {
    /// The record of the home at `home`.
    pub fn new(home: &Path) -> Self {
        Self {
            file: home.join(FILE),
            lock: home.join(LOCK),
        }
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Every trusted workspace.
    ///
    /// # Errors
    ///
    /// An unreadable or damaged file (a missing one is empty).
    pub fn load(&self) -> Result<Vec<TrustRecord>, StoreError> {
        let text = match std::fs::read_to_string(&self.file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.file.clone(),
                    source,
                });
            }
        };
        toml::from_str::<RecordFile>(&text)
            .map(|f| f.workspace)
            .map_err(|e| StoreError::Damaged {
                path: self.file.clone(),
                reason: e.message().to_owned(),
            })
    }

    /// The record of `path` (canonical), if trusted.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    pub fn get(&self, path: &str) -> Result<Option<TrustRecord>, StoreError> {
        Ok(self.load()?.into_iter().find(|r| r.path == path))
    }

    /// Records `path` as trusted with `files`, replacing an earlier record of it.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load), and a failed write.
    pub fn put(&self, record: TrustRecord) -> Result<(), StoreError> {
        self.update(|all| {
            all.retain(|r| r.path != record.path);
            all.push(record);
        })
        .map(drop)
    }

    /// Forgets `path`; whether it was trusted.
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put).
    pub fn remove(&self, path: &str) -> Result<bool, StoreError> {
        self.update(|all| {
            let before = all.len();
            all.retain(|r| r.path != path);
            all.len() != before
        })
    }

    /// Rewrites the record under the lock with what `change` makes of it.
    fn update<T>(&self, change: impl FnOnce(&mut Vec<TrustRecord>) -> T) -> Result<T, StoreError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        let lock: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock)
            .map_err(io(&self.lock))?;
        lock.lock().map_err(io(&self.lock))?;
        let mut all = self.load()?;
        let out = change(&mut all);
        all.sort_by(|a, b| a.path.cmp(&b.path));
        let text = toml::to_string(&RecordFile { workspace: all }).map_err(|e| StoreError::Io {
            path: self.file.clone(),
            source: io::Error::other(e),
        })?;
        let header = "# Workspaces trusted to run their capsules and MCP servers.\n\
                      # Written by astrid-daemon: use `astrid trust` and `astrid untrust`.\n\n";
        write_private(&self.file, format!("{header}{text}").as_bytes()).map_err(io(&self.file))?;
        drop(lock);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn record(path: &str) -> TrustRecord {
        TrustRecord {
            path: path.into(),
            trusted_ms: 7,
            files: [("mcp.toml".to_owned(), "file:ab".to_owned())].into(),
        }
    }

    #[test]
    fn records_round_trip_privately_and_replace_each_other() {
        let home = tempfile::tempdir().unwrap();
        let store = TrustStore::new(home.path());
        assert!(store.load().unwrap().is_empty());
        store.put(record("/b")).unwrap();
        store.put(record("/a")).unwrap();
        store
            .put(TrustRecord {
                trusted_ms: 9,
                ..record("/b")
            })
            .unwrap();
        let all = store.load().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].trusted_ms, 9);
        assert_eq!(store.get("/a").unwrap(), Some(record("/a")));
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(store.remove("/a").unwrap());
        assert!(!store.remove("/a").unwrap());
        assert_eq!(store.get("/a").unwrap(), None);
    }

    #[test]
    fn a_damaged_file_trusts_nothing_and_is_not_overwritten() {
        let home = tempfile::tempdir().unwrap();
        let store = TrustStore::new(home.path());
        std::fs::write(store.path(), "[[workspace]]\npath = 3\n").unwrap();
        assert!(matches!(store.load(), Err(StoreError::Damaged { .. })));
        assert!(store.put(record("/a")).is_err());
        assert_eq!(
            std::fs::read_to_string(store.path()).unwrap(),
            "[[workspace]]\npath = 3\n"
        );
    }
}
