//! Binding the session socket safely: a `sun_path` length check, removal of a symlink in
//! its place, a probe of an existing socket (a live one means another daemon, a refused one
//! is stale and removed), then bind and `chmod 0600`. The caller holds the session lock, so
//! nothing races between the probe and the bind.
//!
//! Or adopting one a service manager bound (socket activation): it must be a listening
//! stream socket on the session's path; it is made `0600`, and its file is the service
//! manager's, never removed here.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Longest socket path Linux accepts (`sun_path` is 108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The path does not fit `sun_path`.
    #[error(
        "socket path {path} is {len} bytes, more than the {max} a Unix socket allows; use a shorter home directory"
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Something answers on the socket already.
    #[error("another daemon is already running on {0}")]
    AlreadyRunning(PathBuf),
    /// A non-socket file is in the way.
    #[error("{0} exists and is not a socket; move it away")]
    NotASocket(PathBuf),
    /// Probing the existing socket failed in a way that does not prove it stale.
    #[error("cannot tell whether {path} is in use")]
    Probe {
        /// The path.
        path: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// Removing a stale socket or symlink failed.
    #[error("cannot remove stale {path}")]
    Remove {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A socket passed by the service manager is not the session's listening socket.
    #[error(
        "the socket passed by the service manager {found}; this session's socket is {path} (set `ListenStream={path}` in the socket unit)"
    )]
    Adopt {
        /// The session's socket path.
        path: PathBuf,
        /// What the passed socket is instead.
        found: String,
    },
    /// `bind` or `chmod` failed.
    #[error("cannot bind {path}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A bound, listening socket and the identity of the file it created.
#[derive(Debug)]
pub struct BoundSocket {
    /// The listening socket (blocking mode; the listener actor converts its own copy).
    pub listener: UnixListener,
    /// Where it is bound.
    pub path: PathBuf,
    dev: u64,
    ino: u64,
    /// Whether this process created the file (not so for an adopted socket).
    owned: bool,
}

impl BoundSocket {
    /// Removes the socket file if this process created it and it is still that file. An
    /// adopted socket's file stays: the service manager listens on it for the next start.
    pub fn remove_file(&self) {
        if !self.owned {
            return;
        }
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), "cannot remove socket: {e}");
                }
            }
            Ok(_) => {
                tracing::warn!(path = %self.path.display(), "socket file was replaced; leaving it");
            }
            Err(_) => {}
        }
    }
}

/// Binds `path` after clearing a stale socket.
///
/// # Errors
///
/// See [`SocketError`]: a live socket, a non-socket file in the way, a path too long, or an
/// I/O error.
pub fn bind(path: &Path) -> Result<BoundSocket, SocketError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(SocketError::PathTooLong {
            path: path.to_owned(),
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    clear_stale(path)?;
    let listener = UnixListener::bind(path).map_err(|source| SocketError::Bind {
        path: path.to_owned(),
        source,
    })?;
    private(listener, path, true)
}

/// Adopts `listener`, a socket the service manager bound and passed (socket activation), as
/// the session socket at `path`: it must be a listening stream socket bound to exactly
/// `path`. It is made `0600` (the listener checks each peer's uid as well).
///
/// # Errors
///
/// [`SocketError::Adopt`] when it is another kind of socket or bound elsewhere, and
/// [`SocketError::Bind`] when its file cannot be read or its mode set.
pub fn adopt(listener: UnixListener, path: &Path) -> Result<BoundSocket, SocketError> {
    use rustix::net::{SocketType, sockopt};
    let refuse = |found: String| SocketError::Adopt {
        path: path.to_owned(),
        found,
    };
    let kind = sockopt::socket_type(&listener).map_err(|e| refuse(format!("is unusable ({e})")))?;
    if kind != SocketType::STREAM {
        return Err(refuse("is not a stream socket".to_owned()));
    }
    if !sockopt::socket_acceptconn(&listener).unwrap_or(false) {
        return Err(refuse("is not listening".to_owned()));
    }
    let bound = listener
        .local_addr()
        .map_err(|e| refuse(format!("has no address ({e})")))?;
    match bound.as_pathname() {
        Some(found) if found == path => {}
        Some(found) => return Err(refuse(format!("is bound to {}", found.display()))),
        None => return Err(refuse("is not bound to a path".to_owned())),
    }
    private(listener, path, false)
}

/// Makes the socket file at `path` `0600` and notes which file it is.
fn private(listener: UnixListener, path: &Path, owned: bool) -> Result<BoundSocket, SocketError> {
    let bind_err = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    let meta = fs::symlink_metadata(path).map_err(bind_err)?;
    Ok(BoundSocket {
        listener,
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        owned,
    })
}

fn clear_stale(path: &Path) -> Result<(), SocketError> {
    let remove = |source| SocketError::Remove {
        path: path.to_owned(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Probe {
                path: path.to_owned(),
                source,
            });
        }
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        tracing::warn!(path = %path.display(), "removing a symlink where the socket belongs");
        return fs::remove_file(path).map_err(remove);
    }
    if !kind.is_socket() {
        return Err(SocketError::NotASocket(path.to_owned()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError::AlreadyRunning(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale socket");
            fs::remove_file(path).map_err(remove)
        }
        Err(source) => Err(SocketError::Probe {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_0600_and_removes_only_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let bound = bind(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        bound.remove_file();
        assert!(!path.exists());
    }

    #[test]
    fn an_adopted_socket_must_be_the_session_socket_and_its_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let elsewhere = UnixListener::bind(dir.path().join("other.sock")).unwrap();
        let err = adopt(elsewhere, &path).unwrap_err().to_string();
        assert!(
            err.contains("other.sock") && err.contains("ListenStream="),
            "{err}"
        );
        let adopted = adopt(UnixListener::bind(&path).unwrap(), &path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        adopted.remove_file();
        assert!(path.exists(), "the service manager's file is left in place");
    }

    #[test]
    fn a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let bound = bind(&path).unwrap();
        assert!(UnixStream::connect(&bound.path).is_ok());
    }

    #[test]
    fn a_live_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = UnixListener::bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(SocketError::AlreadyRunning(_))));
        drop(live);
    }

    #[test]
    fn a_symlink_is_removed_and_its_target_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "keep").unwrap();
        let path = dir.path().join("s.sock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        bind(&path).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn regular_files_and_long_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        fs::write(&path, "x").unwrap();
        assert!(matches!(bind(&path), Err(SocketError::NotASocket(_))));
        let long = dir.path().join("x".repeat(120));
        assert!(matches!(bind(&long), Err(SocketError::PathTooLong { .. })));
    }

    #[test]
    fn a_replaced_socket_file_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let bound = bind(&path).unwrap();
        fs::remove_file(&path).unwrap();
        fs::write(&path, "someone else's").unwrap();
        bound.remove_file();
        assert!(path.exists());
    }
}
