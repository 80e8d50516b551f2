//! Workspace-file replies: a read's bytes, directory entries, a path's description.

use serde::{Deserialize, Serialize};

/// Answer to `VfsRead`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReadResult {
    /// The bytes read.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Size of the whole file, in bytes.
    pub size: u64,
}

/// One entry of a `VfsList` answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DirEntry {
    /// The entry's name (a non-UTF-8 name is shown with replacement characters).
    pub name: String,
    /// What the entry itself is (a symbolic link is reported as one, not followed).
    pub kind: EntryKind,
    /// Size in bytes of the entry itself.
    pub size: u64,
}

/// What a path names.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (socket, FIFO, device).
    Other,
}

/// Answer to `VfsStat`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FileStat {
    /// What the path names (after following symbolic links).
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, milliseconds since the Unix epoch, when the system knows it.
    pub modified_ms: Option<u64>,
}
