//! One daemon per session: an exclusive `flock` on `<session>.lock`, held for the process
//! lifetime, and a pid file naming the process and its executable so `astrid stop` can check
//! it signals the right process.
//!
//! The lock dies with the process, so a crash never wedges it. It is unlinked at exit while
//! still held; acquiring checks that the locked file is still the one at the path, so a
//! process that opened the file just before it was unlinked cannot take a stale lock.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use astrid_actors::files::{remove_if_exists, write_private};

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another astrid-daemon holds {0}")]
    Held(PathBuf),
    /// The lock file could not be opened or locked.
    #[error("cannot lock {path}")]
    Io {
        /// Lock file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// The held single-instance lock.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock at `path` without waiting.
    ///
    /// # Errors
    ///
    /// [`LockError::Held`] when another process has it.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(io_err)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(LockError::Held(path.to_owned())),
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
            let ours = file.metadata().map_err(io_err)?;
            match fs::metadata(path) {
                Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {
                    return Ok(Self {
                        file,
                        path: path.to_owned(),
                    });
                }
                // The previous holder unlinked it after we opened it: try the new file.
                _ => {}
            }
        }
    }

    /// Whether some process holds the lock at `path` right now.
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
    }

    /// Removes the lock file, then releases the lock.
    pub fn release(self) {
        if let Err(e) = remove_if_exists(&self.path) {
            tracing::warn!(path = %self.path.display(), "cannot remove the lock file: {e}");
        }
        drop(self.file);
    }
}

/// What a pid file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidFile {
    /// Process id.
    pub pid: u32,
    /// Canonical path of its executable.
    pub exe: PathBuf,
}

impl PidFile {
    /// This process.
    ///
    /// # Errors
    ///
    /// When the executable path cannot be read.
    pub fn current() -> io::Result<Self> {
        Ok(Self {
            pid: std::process::id(),
            exe: std::env::current_exe()?.canonicalize()?,
        })
    }

    /// Writes `<pid>\n<exe>\n` atomically with mode `0600`.
    ///
    /// # Errors
    ///
    /// Any I/O error.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        write_private(
            path,
            format!("{}\n{}\n", self.pid, self.exe.display()).as_bytes(),
        )
    }

    /// Reads a pid file.
    ///
    /// # Errors
    ///
    /// When it is missing or malformed.
    pub fn read(path: &Path) -> io::Result<Self> {
        let text = fs::read_to_string(path)?;
        let mut lines = text.lines();
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed pid file {}", path.display()),
            )
        };
        let pid = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(bad)?;
        let exe = lines.next().map(PathBuf::from).ok_or_else(bad)?;
        Ok(Self { pid, exe })
    }

    /// Whether the process is alive (not a zombie) and runs the recorded executable: only
    /// then may it be signalled.
    pub fn is_running(&self) -> bool {
        // After an upgrade the running image's path reads "<path> (deleted)".
        self.is_alive()
            && fs::read_link(self.proc().join("exe")).is_ok_and(|exe| {
                let exe = exe.to_string_lossy();
                let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
                Path::new(exe) == self.exe
            })
    }

    /// Whether a process with this pid exists and has not yet exited (zombies have exited:
    /// their files, locks included, are closed). This is what to wait on after a signal: an
    /// exiting process loses its `exe` link before it closes its files.
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = fs::read_to_string(self.proc().join("stat")) else {
            return false;
        };
        // The state follows the parenthesised command name, which may contain spaces.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    }

    fn proc(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}", self.pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.lock");
        let lock = InstanceLock::acquire(&path).unwrap();
        assert!(InstanceLock::is_held(&path));
        assert!(matches!(
            InstanceLock::acquire(&path),
            Err(LockError::Held(_))
        ));
        lock.release();
        assert!(!path.exists());
        assert!(!InstanceLock::is_held(&path));
        InstanceLock::acquire(&path).unwrap().release();
    }

    #[test]
    fn pid_files_round_trip_and_name_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.pid");
        let me = PidFile::current().unwrap();
        me.write(&path).unwrap();
        let back = PidFile::read(&path).unwrap();
        assert_eq!(back, me);
        assert!(back.is_running());
        let other = PidFile {
            exe: PathBuf::from("/bin/true"),
            ..back
        };
        assert!(!other.is_running());
        fs::write(&path, "nope").unwrap();
        assert!(PidFile::read(&path).is_err());
    }
}
