//! What a workspace's configuration is, as content: every file under `<workspace>/.astrid/`
//! by its path and BLAKE3 hash, and how two such snapshots differ. Plain file reading; no
//! actor state.
//!
//! The walk never follows a symbolic link (a link is recorded by its target's text), never
//! opens anything but a regular file (a FIFO would block the reader), skips the home when it
//! lies inside `.astrid/` (its files change all the time and are trusted anyway), and stops
//! at [`MAX_FILES`] entries or [`MAX_BYTES`] of content: a configuration larger than that is
//! not something a person reviews before trusting it.
//!
//! The MCP servers' commands that the configuration names by a path leading out of
//! `.astrid/` into the rest of the workspace (`command = "../tools/server.sh"`) are part of
//! the snapshot too, keyed by that path from `.astrid/`: a repository that changes such a
//! script changes what trusting it ran.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Most entries (files, links, folders) a trusted configuration may hold.
pub const MAX_FILES: usize = 4096;
/// Most bytes of file content a trusted configuration may hold (256 MiB).
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Deepest folder nesting walked.
pub const MAX_DEPTH: usize = 16;

/// The configuration folder of a workspace.
pub fn config_dir(workspace: &Path) -> PathBuf {
    workspace.join(".astrid")
}

/// Every entry of a configuration folder: the path relative to it (`/`-separated) and a
/// hash of what it is (`file:<blake3>`, `link:<blake3 of the target>`, `dir`).
pub type Snapshot = BTreeMap<String, String>;

/// Why a configuration could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// More entries or bytes than a configuration may hold, or nested too deep.
    #[error("{0}")]
    TooLarge(String),
    /// A name that is not UTF-8, or something that is neither a file, a folder nor a link.
    #[error("{path}: {reason}")]
    Unsupported {
        /// The entry, relative to `.astrid/`.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// What was being read.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Reads the snapshot of `dir` (a workspace's `.astrid/`); `skip` is a folder left out (the
/// home, when it lies inside). A missing `dir` is an empty snapshot.
///
/// # Errors
///
/// See [`SnapshotError`].
pub fn snapshot(dir: &Path, skip: Option<&Path>) -> Result<Snapshot, SnapshotError> {
    let mut walk = Walk {
        skip,
        found: Snapshot::new(),
        bytes: 0,
    };
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => walk.dir(dir, "", 0)?,
        Ok(_) => {
            return Err(SnapshotError::Unsupported {
                path: ".".into(),
                reason: "`.astrid` is not a folder",
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SnapshotError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    }
    walk.commands(dir)?;
    Ok(walk.found)
}

/// The commands the configuration files in `dir` name by a path: `[[server]] command` of
/// `mcp.toml` and `[[mcp_server]] command` of each `capsules/*/Capsule.toml`, each resolved
/// from its file's folder. Files that do not parse name nothing (the daemon refuses them
/// too).
fn named_commands(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![(dir.join("mcp.toml"), "server")];
    if let Ok(entries) = fs::read_dir(dir.join("capsules")) {
        for entry in entries.filter_map(Result::ok) {
            files.push((entry.path().join("Capsule.toml"), "mcp_server"));
        }
    }
    let mut commands = Vec::new();
    for (file, table) in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let Ok(doc) = toml::from_str::<toml::Table>(&text) else {
            continue;
        };
        let Some(entries) = doc.get(table).and_then(toml::Value::as_array) else {
            continue;
        };
        let folder = file.parent().unwrap_or(dir);
        for entry in entries {
            if let Some(command) = entry.get("command").and_then(toml::Value::as_str)
                && command.contains('/')
            {
                commands.push(folder.join(command));
            }
        }
    }
    commands
}

struct Walk<'a> {
    skip: Option<&'a Path>,
    found: Snapshot,
    bytes: u64,
}

impl Walk<'_> {
    /// Adds the commands the configuration names that lie in the workspace outside `dir`.
    fn commands(&mut self, dir: &Path) -> Result<(), SnapshotError> {
        let (Ok(config), Some(workspace)) = (fs::canonicalize(dir), dir.parent()) else {
            return Ok(());
        };
        let Ok(workspace) = fs::canonicalize(workspace) else {
            return Ok(());
        };
        for command in named_commands(dir) {
            let Ok(real) = fs::canonicalize(&command) else {
                // Not there (yet): were it to appear, the snapshot would change.
                continue;
            };
            let Ok(inside) = real.strip_prefix(&workspace) else {
                continue;
            };
            if real.starts_with(&config) || !real.is_file() {
                continue;
            }
            let Some(inside) = inside.to_str() else {
                continue;
            };
            let key = format!("../{inside}");
            if !self.found.contains_key(&key) {
                let hash = self.file(&real)?;
                self.found.insert(key, format!("file:{hash}"));
            }
        }
        Ok(())
    }

    fn dir(&mut self, dir: &Path, prefix: &str, depth: usize) -> Result<(), SnapshotError> {
        if depth > MAX_DEPTH {
            return Err(SnapshotError::TooLarge(format!(
                "{prefix}: folders nest deeper than {MAX_DEPTH}"
            )));
        }
        if self.skip.is_some_and(|skip| same_dir(dir, skip)) {
            return Ok(());
        }
        let io = |source| SnapshotError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut entries = fs::read_dir(dir)
            .map_err(io)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(SnapshotError::Unsupported {
                    path: format!("{prefix}{}", name.to_string_lossy()),
                    reason: "the name is not UTF-8",
                });
            };
            let rel = format!("{prefix}{name}");
            if self.found.len() >= MAX_FILES {
                return Err(SnapshotError::TooLarge(format!(
                    "more than {MAX_FILES} files and folders"
                )));
            }
            let path = entry.path();
            let kind = entry.file_type().map_err(|source| SnapshotError::Io {
                path: path.clone(),
                source,
            })?;
            if kind.is_dir() {
                self.found.insert(rel.clone(), "dir".into());
                self.dir(&path, &format!("{rel}/"), depth + 1)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).map_err(|source| SnapshotError::Io {
                    path: path.clone(),
                    source,
                })?;
                let hash = blake3::hash(target.as_os_str().as_encoded_bytes());
                self.found.insert(rel, format!("link:{hash}"));
            } else if kind.is_file() {
                let hash = self.file(&path)?;
                self.found.insert(rel, format!("file:{hash}"));
            } else {
                let reason = if kind.is_fifo() {
                    "a FIFO has no place in a configuration"
                } else {
                    "neither a file, a folder nor a symbolic link"
                };
                return Err(SnapshotError::Unsupported { path: rel, reason });
            }
        }
        Ok(())
    }

    /// Hashes a regular file, opened without following links or blocking, and counted
    /// against [`MAX_BYTES`].
    fn file(&mut self, path: &Path) -> Result<blake3::Hash, SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: path.to_owned(),
            source,
        };
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        let file: File = OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits().cast_signed())
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(io::Error::other("it was replaced while being read")));
        }
        self.bytes += meta.len();
        if self.bytes > MAX_BYTES {
            return Err(SnapshotError::TooLarge(format!(
                "more than {} MiB of files",
                MAX_BYTES / (1024 * 1024)
            )));
        }
        let mut hasher = blake3::Hasher::new();
        // At most what `metadata` said: a file growing meanwhile cannot make the walk read
        // without end.
        let mut limited = io::Read::take(file, meta.len());
        hasher.update_reader(&mut limited).map_err(io)?;
        Ok(hasher.finalize())
    }
}

/// Whether two paths name the same folder (both must exist).
fn same_dir(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// How `now` differs from `then`, for a person: `mcp.toml changed; capsules/x/Capsule.toml
/// added`, the first few differences and how many more. `None` when they are equal.
pub fn describe_changes(then: &Snapshot, now: &Snapshot) -> Option<String> {
    /// Differences named before the rest are only counted.
    const SHOWN: usize = 5;
    let mut changes = Vec::new();
    for (path, hash) in now {
        match then.get(path) {
            None => changes.push(format!("{path} added")),
            Some(old) if old != hash && hash != "dir" => changes.push(format!("{path} changed")),
            Some(_) => {}
        }
    }
    for path in then.keys().filter(|p| !now.contains_key(*p)) {
        changes.push(format!("{path} removed"));
    }
    if changes.is_empty() {
        return None;
    }
    let more = changes.len().saturating_sub(SHOWN);
    changes.truncate(SHOWN);
    let text = changes.join("; ");
    Some(if more > 0 {
        format!("{text}; and {more} more")
    } else {
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path, files: &[(&str, &str)]) {
        for (path, text) in files {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn a_snapshot_names_every_entry_and_follows_no_link() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".astrid");
        tree(
            &dir,
            &[
                ("mcp.toml", "x"),
                ("capsules/echo/Capsule.toml", "[package]"),
            ],
        );
        std::os::unix::fs::symlink("/etc/passwd", dir.join("capsules/echo/link")).unwrap();
        let snap = snapshot(&dir, None).unwrap();
        let keys: Vec<&str> = snap.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "capsules",
                "capsules/echo",
                "capsules/echo/Capsule.toml",
                "capsules/echo/link",
                "mcp.toml"
            ]
        );
        assert!(snap["capsules/echo/link"].starts_with("link:"));
        assert_eq!(
            snap["mcp.toml"],
            format!("file:{}", blake3::hash(b"x")),
            "content hash"
        );
        assert!(
            snapshot(&tmp.path().join("missing"), None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn changes_are_described_and_equal_snapshots_have_none() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".astrid");
        tree(&dir, &[("mcp.toml", "a"), ("capsules/x/Capsule.toml", "b")]);
        let then = snapshot(&dir, None).unwrap();
        assert_eq!(
            describe_changes(&then, &snapshot(&dir, None).unwrap()),
            None
        );
        tree(
            &dir,
            &[("mcp.toml", "changed"), ("capsules/y/m.wasm", "new")],
        );
        fs::remove_file(dir.join("capsules/x/Capsule.toml")).unwrap();
        let text = describe_changes(&then, &snapshot(&dir, None).unwrap()).unwrap();
        assert_eq!(
            text,
            "capsules/y added; capsules/y/m.wasm added; mcp.toml changed; \
             capsules/x/Capsule.toml removed"
        );
        let many: Snapshot = (0..9).map(|i| (format!("f{i}"), "file:x".into())).collect();
        assert!(
            describe_changes(&Snapshot::new(), &many)
                .unwrap()
                .ends_with("; and 4 more")
        );
    }

    #[test]
    fn fifos_odd_names_and_oversized_configurations_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".astrid");
        fs::create_dir_all(&dir).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(
            snapshot(&dir, None),
            Err(SnapshotError::Unsupported { path, .. }) if path == "pipe"
        ));
        fs::remove_file(dir.join("pipe")).unwrap();
        fs::write(dir.join(std::ffi::OsStr::from_bytes(b"bad\xff")), "x").unwrap();
        assert!(matches!(
            snapshot(&dir, None),
            Err(SnapshotError::Unsupported { .. })
        ));
        fs::remove_file(dir.join(std::ffi::OsStr::from_bytes(b"bad\xff"))).unwrap();
        for i in 0..=MAX_FILES {
            fs::write(dir.join(format!("{i}")), "").unwrap();
        }
        assert!(matches!(
            snapshot(&dir, None),
            Err(SnapshotError::TooLarge(_))
        ));
    }

    #[test]
    fn commands_in_the_rest_of_the_workspace_are_part_of_it() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path();
        let dir = ws.join(".astrid");
        tree(
            ws,
            &[
                (
                    ".astrid/mcp.toml",
                    "[[server]]\nname = \"a\"\ncommand = \"../tools/a.sh\"\n",
                ),
                (
                    ".astrid/capsules/c/Capsule.toml",
                    "[[mcp_server]]\nname = \"b\"\ncommand = \"../../../tools/b.sh\"\n\
                     [[mcp_server]]\nname = \"n\"\ncommand = \"node\"\n\
                     [[mcp_server]]\nname = \"s\"\ncommand = \"/bin/sh\"\n",
                ),
                ("tools/a.sh", "one"),
                ("tools/b.sh", "two"),
            ],
        );
        let then = snapshot(&dir, None).unwrap();
        // `node` is looked up in PATH and `/bin/sh` is outside: neither is the workspace's.
        let outside: Vec<&str> = then
            .keys()
            .filter(|k| k.starts_with("../"))
            .map(String::as_str)
            .collect();
        assert_eq!(outside, ["../tools/a.sh", "../tools/b.sh"]);
        fs::write(ws.join("tools/a.sh"), "changed").unwrap();
        let text = describe_changes(&then, &snapshot(&dir, None).unwrap()).unwrap();
        assert_eq!(text, "../tools/a.sh changed");
    }

    #[test]
    fn the_home_inside_the_folder_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".astrid");
        tree(
            &dir,
            &[("mcp.toml", "a"), ("home/sessions/x.token", "secret")],
        );
        let snap = snapshot(&dir, Some(&dir.join("home"))).unwrap();
        assert!(snap.contains_key("home"), "the folder itself is listed");
        assert!(!snap.keys().any(|k| k.starts_with("home/")));
    }
}
