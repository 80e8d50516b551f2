//! Messages handled by [`VfsActor`](super::VfsActor), the results it answers, and its errors.
//!
//! Senders: sessions (for clients, which receive the results as MessagePack) and kernel
//! components that read or change the workspace. Every path is relative to the workspace
//! root (see [`VfsPath`](super::path::VfsPath) for the rules).

use std::io;

use actix::Message;
pub use astrid_protocol::payload::vfs::{DirEntry, EntryKind, FileStat, ReadResult};

/// Reads part or all of a file (following symbolic links that stay inside the workspace).
#[derive(Debug, Message)]
#[rtype(result = "Result<ReadResult, VfsError>")]
pub struct Read {
    /// File path.
    pub path: String,
    /// First byte to read; past the end gives empty data.
    pub offset: u64,
    /// Most bytes to read; `None` reads to the end of the file.
    pub len: Option<u64>,
}

/// Replaces (or creates) a file atomically: readers see the old or the new content, never a
/// mix, and a failed write leaves the old content. Answers the number of bytes written.
///
/// A final symbolic link is followed (the link's target is replaced, the link stays) as
/// long as it stays inside the workspace.
#[derive(Message)]
#[rtype(result = "Result<u64, VfsError>")]
pub struct Write {
    /// File path.
    pub path: String,
    /// The whole new content.
    pub data: Vec<u8>,
    /// Create missing parent directories.
    pub create_dirs: bool,
}

impl std::fmt::Debug for Write {
    /// Shows the data's length, not the bytes (they can be megabytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write")
            .field("path", &self.path)
            .field("data_len", &self.data.len())
            .field("create_dirs", &self.create_dirs)
            .finish()
    }
}

/// Reads a whole file for a capsule: no symbolic link is followed anywhere in the path
/// ([`VfsError::Symlink`]), and reserved paths are refused ([`VfsError::Reserved`]).
#[derive(Debug, Message)]
#[rtype(result = "Result<ReadResult, VfsError>")]
pub struct CapsuleRead {
    /// File path.
    pub path: String,
}

/// Replaces (or creates) a file atomically for a capsule, creating missing parent
/// directories; as [`CapsuleRead`], no symbolic link is followed (a final link is not
/// replaced either) and reserved paths are refused. Answers the number of bytes written.
#[derive(Message)]
#[rtype(result = "Result<u64, VfsError>")]
pub struct CapsuleWrite {
    /// File path.
    pub path: String,
    /// The whole new content.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for CapsuleWrite {
    /// Shows the data's length, not the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapsuleWrite")
            .field("path", &self.path)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Lists a directory, sorted by name. `.` lists the root.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<DirEntry>, VfsError>")]
pub struct List {
    /// Directory path.
    pub path: String,
}

/// Describes a file or directory, following symbolic links that stay inside the workspace.
/// `.` describes the root.
#[derive(Debug, Message)]
#[rtype(result = "Result<FileStat, VfsError>")]
pub struct Stat {
    /// Path.
    pub path: String,
}

/// Removes a file, a symbolic link (not its target), or a directory.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), VfsError>")]
pub struct Remove {
    /// Path (not the root).
    pub path: String,
    /// Remove a non-empty directory with everything in it (symbolic links inside are
    /// removed, never followed).
    pub recursive: bool,
}

/// Creates a directory.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), VfsError>")]
pub struct Mkdir {
    /// Path. `.` is accepted with `parents` (and does nothing).
    pub path: String,
    /// Create missing parents too, and accept a directory that already exists.
    pub parents: bool,
}

/// Errors answered by the VFS.
#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    /// The path is not acceptable as written.
    #[error("invalid path {path:?}: it {reason}")]
    InvalidPath {
        /// The path as given (shortened when it is very long).
        path: String,
        /// Which rule it breaks (one of the constants in [`super::path`]).
        reason: &'static str,
    },
    /// Following the path would leave the workspace (through a symbolic link).
    #[error(
        "`{path}` leads outside the workspace through a symbolic link; \
         only paths that stay inside the workspace can be used"
    )]
    Escape {
        /// The path as given.
        path: String,
    },
    /// A capsule's path goes through a symbolic link (capsules never follow links).
    #[error(
        "`{path}` goes through the symbolic link `{link}`; capsules may not follow symbolic \
         links"
    )]
    Symlink {
        /// The path as given.
        path: String,
        /// The part of it, from the root, that is a link.
        link: String,
    },
    /// A capsule's path is reserved to the daemon (see [`Reserved`](super::path::Reserved)).
    #[error(
        "`{path}` is reserved to the daemon's configuration; capsules may neither read nor \
         write it"
    )]
    Reserved {
        /// The path as given.
        path: String,
    },
    /// Nothing exists at the path (or at one of its parent directories).
    #[error(
        "`{path}` does not exist in the workspace; check the spelling, list its directory, \
         or create it first"
    )]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// The data is over the configured limit.
    #[error("{len} bytes is over the limit of {max} bytes; read or write in smaller parts")]
    TooLarge {
        /// Size asked for.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The operating system refused or failed the operation.
    #[error("cannot {op} `{path}`: {}", io_hint(source))]
    Io {
        /// What was being done: `read`, `write`, `list`, ...
        op: &'static str,
        /// The path as given.
        path: String,
        /// The error from the system.
        #[source]
        source: io::Error,
    },
}

/// A short explanation of an I/O failure, with what to do about it where that is clear.
fn io_hint(error: &io::Error) -> String {
    use rustix::io::Errno;

    let raw = error.raw_os_error();
    if raw == Some(Errno::LOOP.raw_os_error()) {
        return "too many levels of symbolic links (is there a link loop?)".to_owned();
    }
    if raw == Some(Errno::NAMETOOLONG.raw_os_error()) {
        return "a name in the path is too long for the file system".to_owned();
    }
    match error.kind() {
        io::ErrorKind::IsADirectory => "it is a directory; give the path of a file".to_owned(),
        io::ErrorKind::NotADirectory => "it, or one of its parents, is not a directory".to_owned(),
        io::ErrorKind::DirectoryNotEmpty => {
            "the directory is not empty; remove it with `recursive` to delete its contents"
                .to_owned()
        }
        io::ErrorKind::AlreadyExists => {
            "it already exists (create directories with `parents` to accept existing ones)"
                .to_owned()
        }
        io::ErrorKind::PermissionDenied => {
            "the operating system denied access; check the file's permissions".to_owned()
        }
        io::ErrorKind::StorageFull => "the disk is full; free some space".to_owned(),
        io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only".to_owned(),
        io::ErrorKind::InvalidInput => error.to_string(),
        kind => format!("{kind} (the cause below has the details)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(op: &'static str, source: io::Error) -> String {
        VfsError::Io {
            op,
            path: "p".into(),
            source,
        }
        .to_string()
    }

    #[test]
    fn io_display_explains_common_failures() {
        assert_eq!(
            io("write", io::ErrorKind::IsADirectory.into()),
            "cannot write `p`: it is a directory; give the path of a file"
        );
        assert!(io("remove", io::ErrorKind::DirectoryNotEmpty.into()).contains("`recursive`"));
        assert!(io("create directory", io::ErrorKind::AlreadyExists.into()).contains("parents"));
        assert!(
            io(
                "read",
                io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error())
            )
            .contains("permissions")
        );
        assert!(
            io(
                "read",
                io::Error::from_raw_os_error(rustix::io::Errno::LOOP.raw_os_error())
            )
            .contains("loop")
        );
    }

    #[test]
    fn io_keeps_its_source() {
        let err = VfsError::Io {
            op: "read",
            path: "p".into(),
            source: io::Error::other("boom"),
        };
        let source = std::error::Error::source(&err).unwrap();
        assert_eq!(source.to_string(), "boom");
    }

    fn to_msgpack<T: serde::Serialize>(value: &T) -> rmpv::Value {
        let bytes = rmp_serde::to_vec_named(value).unwrap();
        rmp_serde::from_slice(&bytes).unwrap()
    }

    #[test]
    fn results_serialize_as_expected() {
        let stat = FileStat {
            kind: EntryKind::Symlink,
            size: 1,
            modified_ms: None,
        };
        let value = to_msgpack(&stat);
        let map = value.as_map().unwrap();
        assert_eq!(map[0].0.as_str(), Some("kind"));
        assert_eq!(map[0].1.as_str(), Some("symlink"));
        let read = ReadResult {
            data: vec![1, 2, 3],
            size: 3,
        };
        let value = to_msgpack(&read);
        let map = value.as_map().unwrap();
        assert_eq!(map[0].1, rmpv::Value::Binary(vec![1, 2, 3]));
        let bytes = rmp_serde::to_vec_named(&read).unwrap();
        let back: ReadResult = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, read);
    }

    #[test]
    fn write_debug_hides_the_bytes() {
        let w = Write {
            path: "f".into(),
            data: vec![0; 1000],
            create_dirs: false,
        };
        let text = format!("{w:?}");
        assert!(text.contains("data_len: 1000"), "{text}");
        assert!(text.len() < 100, "{text}");
    }
}
