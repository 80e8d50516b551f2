//! The VFS operations on a cap-std [`Dir`] rooted at the workspace: read, atomic write,
//! list, stat, remove, mkdir. Blocking; no actor state. [`VfsActor`](super::VfsActor) runs
//! one [`Workspace`] on its own thread.
//!
//! Confinement: every path is first checked lexically ([`VfsPath`]) and then opened through
//! cap-std, which resolves it beneath the root (`openat2(RESOLVE_BENEATH)` on Linux, a
//! manual component walk elsewhere) and refuses any resolution that would leave it,
//! including through symbolic links or a directory swapped for one after the check. That
//! refusal is reported as [`VfsError::Escape`] (see [`is_escape`]).
//!
//! Capsules get stricter operations, in `capsule_ops.rs`: no symbolic link is followed
//! and the paths reserved to the daemon are refused.
//!
//! Durability: a write syncs the file, renames it over the target, then syncs the
//! directory; every directory created (by `Mkdir` or for a write's parents) and every
//! removal is made durable by syncing the parent directory. A failed directory sync fails
//! the operation, although its effect may already be visible.
//!
//! The tests live in `tests/ops.rs` beside this module, which is why a few private helpers
//! are visible to the `vfs` module.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use cap_std::fs::{
    Dir, Metadata, OpenOptions, OpenOptionsExt as _, Permissions, PermissionsExt as _,
};

use rustix::fs::{Mode, OFlags};

use super::messages::{DirEntry, EntryKind, FileStat, ReadResult, VfsError};
use super::path::{self, MAX_PATH_LEN, Reserved, VfsPath};

/// The message cap-std puts in the error it returns when a path would leave its root
/// (`cap_primitives::fs::errors::escape_attempt`, kind `PermissionDenied`, no OS code).
const CAP_STD_ESCAPE_MESSAGE: &str = "a path led outside of the filesystem";

/// Symbolic links followed while resolving one write target (Linux allows 40).
const MAX_SYMLINK_HOPS: usize = 40;

/// Mode of a newly created file (the process umask still applies).
const NEW_FILE_MODE: u32 = 0o644;

/// Mode of a directory a capsule's write creates (the process umask still applies).
pub(super) const NEW_DIR_MODE: u32 = 0o755;

/// What the error of a failed directory sync says was being done.
pub(super) const SYNC_OP: &str = "make durable (sync the directory of)";

/// Makes the entries of a directory durable (`fsync` on it). A plain function so that
/// tests can put one that fails in its place.
pub(super) type SyncDir = fn(&Dir) -> io::Result<()>;

/// cap-std holds directories open with `O_PATH`, on which `fsync` fails: the directory is
/// opened again for reading, through the descriptor.
pub(super) fn fsync_dir(dir: &Dir) -> io::Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let readable = rustix::fs::openat(dir, ".", flags, Mode::empty())?;
    rustix::fs::fsync(&readable).map_err(io::Error::from)
}

/// Whether `error` is cap-std's refusal to leave the root.
///
/// cap-std reports an escape as an `io::Error` it builds itself: kind `PermissionDenied`,
/// no OS error code, message [`CAP_STD_ESCAPE_MESSAGE`] (on Linux it turns the kernel's
/// `EXDEV` from `openat2(RESOLVE_BENEATH)` into that error). A real permission error from
/// the operating system always carries its OS code (`EACCES`/`EPERM`), so the two cannot
/// be confused. If a future cap-std changed the message, escapes would show up as
/// [`VfsError::Io`] with a permission error: still refused, only worse worded (a unit test
/// pins the message).
pub(super) fn is_escape(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied
        && error.raw_os_error().is_none()
        && error
            .get_ref()
            .is_some_and(|inner| inner.to_string() == CAP_STD_ESCAPE_MESSAGE)
}

/// Turns an I/O error on `path` into the VFS error a client should see.
pub(super) fn map_io(op: &'static str, path: &str, error: io::Error) -> VfsError {
    if is_escape(&error) {
        VfsError::Escape {
            path: path.to_owned(),
        }
    } else if error.kind() == io::ErrorKind::NotFound {
        VfsError::NotFound {
            path: path.to_owned(),
        }
    } else {
        VfsError::Io {
            op,
            path: path.to_owned(),
            source: error,
        }
    }
}

/// Shortens a path for an error message (very long paths are rejected as too long).
pub(super) fn shown(raw: &str) -> String {
    const KEEP: usize = 64;
    if raw.len() <= MAX_PATH_LEN {
        return raw.to_owned();
    }
    let mut end = KEEP;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &raw[..end], raw.len())
}

/// Parses `raw`, refusing the root unless `root_ok`.
pub(super) fn parse(raw: &str, root_ok: bool) -> Result<VfsPath, VfsError> {
    let invalid = |reason| VfsError::InvalidPath {
        path: shown(raw),
        reason,
    };
    let parsed = VfsPath::parse(raw).map_err(invalid)?;
    if parsed.is_root() && !root_ok {
        return Err(invalid(path::ROOT));
    }
    Ok(parsed)
}

fn kind_of(metadata: &Metadata) -> EntryKind {
    let file_type = metadata.file_type();
    if file_type.is_file() {
        EntryKind::File
    } else if file_type.is_dir() {
        EntryKind::Dir
    } else if file_type.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    }
}

fn io_kind(op: &'static str, path: &str, kind: io::ErrorKind) -> VfsError {
    VfsError::Io {
        op,
        path: path.to_owned(),
        source: kind.into(),
    }
}

pub(super) fn too_large(len: u64, max: u64) -> Result<(), VfsError> {
    if len > max {
        Err(VfsError::TooLarge { len, max })
    } else {
        Ok(())
    }
}

/// A random name for the temporary file of a write to `name`: `.<name>.<16 hex>.tmp`.
pub(super) fn temp_name(name: &OsStr) -> io::Result<OsString> {
    /// Keeps the temporary name under the usual 255-byte limit.
    const KEEP: usize = 200;
    let random = getrandom::u64().map_err(io::Error::other)?;
    let bytes = name.as_bytes();
    let mut tmp = OsString::from(".");
    tmp.push(OsStr::from_bytes(&bytes[..bytes.len().min(KEEP)]));
    tmp.push(format!(".{random:016x}.tmp"));
    Ok(tmp)
}

/// Size limits of the VFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfsLimits {
    /// Most bytes one [`Read`](super::Read) may return.
    pub max_read: u64,
    /// Most bytes one [`Write`](super::Write) may write.
    pub max_write: u64,
}

impl Default for VfsLimits {
    /// 16 MiB each.
    fn default() -> Self {
        Self {
            max_read: 16 << 20,
            max_write: 16 << 20,
        }
    }
}

/// The workspace directory, opened once, the limits applied to it, and the paths capsules
/// may not touch.
#[derive(Debug)]
pub(super) struct Workspace {
    pub(super) root: Dir,
    pub(super) limits: VfsLimits,
    pub(super) reserved: Reserved,
    pub(super) sync_dir: SyncDir,
}

impl Workspace {
    /// Opens `root` (with ambient authority: it is the one path the VFS is given).
    pub(super) fn open(root: &Path, limits: VfsLimits) -> Result<Self, VfsError> {
        let dir = Dir::open_ambient_dir(root, cap_std::ambient_authority()).map_err(|source| {
            VfsError::Io {
                op: "open the workspace root",
                path: root.display().to_string(),
                source,
            }
        })?;
        Ok(Self {
            root: dir,
            limits,
            reserved: Reserved::default(),
            sync_dir: fsync_dir,
        })
    }

    /// Refuses capsules `reserved` (instead of the workspace's `.astrid` alone).
    pub(super) fn reserve(&mut self, reserved: Reserved) {
        self.reserved = reserved;
    }

    /// Syncs directories with `sync_dir` (tests make it fail).
    #[cfg(test)]
    pub(super) fn with_sync(mut self, sync_dir: SyncDir) -> Self {
        self.sync_dir = sync_dir;
        self
    }

    /// Syncs the directory at `rel` (the root when empty), as seen through the root.
    fn sync_at(&self, rel: &Path) -> io::Result<()> {
        if rel.as_os_str().is_empty() || rel == Path::new(".") {
            (self.sync_dir)(&self.root)
        } else {
            (self.sync_dir)(&self.root.open_dir(rel)?)
        }
    }

    /// Creates the directory `path` and its missing parents (links inside the workspace are
    /// followed, as everywhere for clients), syncing the parent of each one created. An
    /// existing entry in the way is left for the caller to judge.
    fn create_dirs(&self, op: &'static str, raw: &str, path: &VfsPath) -> Result<(), VfsError> {
        let mut prefix = PathBuf::new();
        for component in path.components() {
            let parent = prefix.clone();
            prefix.push(component);
            match self.root.create_dir(&prefix) {
                Ok(()) => self.sync_at(&parent).map_err(|e| map_io(SYNC_OP, raw, e))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(map_io(op, raw, e)),
            }
        }
        Ok(())
    }

    /// Syncs the directory holding `path`'s last component (after a change to it).
    fn sync_parent(&self, raw: &str, path: &VfsPath) -> Result<(), VfsError> {
        let parent = path.split_last().map_or_else(VfsPath::root, |(p, _)| p);
        self.sync_at(parent.as_path())
            .map_err(|e| map_io(SYNC_OP, raw, e))
    }

    /// Reads `len` bytes (or the rest) from `offset`.
    pub(super) fn read(
        &self,
        raw: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ReadResult, VfsError> {
        const OP: &str = "read";
        let path = parse(raw, false)?;
        // Non-blocking, so that opening a FIFO does not hang the actor; regular files are
        // not affected by the flag.
        let mut options = OpenOptions::new();
        options
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits().cast_signed());
        let file = self
            .root
            .open_with(path.as_path(), &options)
            .map_err(|e| map_io(OP, raw, e))?;
        self.read_open(raw, file, offset, len)
    }

    /// The rest of a read, once the file is open.
    pub(super) fn read_open(
        &self,
        raw: &str,
        mut file: cap_std::fs::File,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ReadResult, VfsError> {
        const OP: &str = "read";
        let metadata = file.metadata().map_err(|e| map_io(OP, raw, e))?;
        if metadata.is_dir() {
            return Err(io_kind(OP, raw, io::ErrorKind::IsADirectory));
        }
        if !metadata.is_file() {
            return Err(VfsError::Io {
                op: OP,
                path: raw.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "it is not a regular file"),
            });
        }
        let size = metadata.len();
        let available = size.saturating_sub(offset);
        let want = len.map_or(available, |n| n.min(available));
        too_large(want, self.limits.max_read)?;
        let mut data = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        if want > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| map_io(OP, raw, e))?;
            file.take(want)
                .read_to_end(&mut data)
                .map_err(|e| map_io(OP, raw, e))?;
        }
        Ok(ReadResult { data, size })
    }

    /// Replaces the file at `raw` with `data`, atomically.
    pub(super) fn write(&self, raw: &str, data: &[u8], create_dirs: bool) -> Result<u64, VfsError> {
        const OP: &str = "write";
        let path = parse(raw, false)?;
        let len = data.len() as u64;
        too_large(len, self.limits.max_write)?;
        if create_dirs && let Some((parent, _)) = path.split_last().filter(|(p, _)| !p.is_root()) {
            // Something that is not a directory in the way (a file, or a link that leads
            // elsewhere) is left for the resolution below to name.
            self.create_dirs("create the parent directories of", raw, &parent)?;
        }
        let real = self.resolve(&path).map_err(|e| map_io(OP, raw, e))?;
        self.write_resolved(raw, &real, data)?;
        Ok(len)
    }

    /// The second half of [`write`](Self::write): replaces the file at `real`, a path
    /// already resolved by [`resolve`](Self::resolve). Its directory is opened through
    /// cap-std, so a directory swapped for a link since the resolution is still refused.
    pub(super) fn write_resolved(
        &self,
        raw: &str,
        real: &Path,
        data: &[u8],
    ) -> Result<(), VfsError> {
        const OP: &str = "write";
        let Some(name) = real.file_name() else {
            // The path (through links) names the root.
            return Err(io_kind(OP, raw, io::ErrorKind::IsADirectory));
        };
        let parent = real.parent().unwrap_or(Path::new(""));
        let dir = if parent.as_os_str().is_empty() {
            self.root.try_clone()
        } else {
            self.root.open_dir(parent)
        }
        .map_err(|e| map_io(OP, raw, e))?;
        self.write_in(raw, &dir, name, data)
    }

    /// Replaces `name` in `dir` with `data`: a temporary file, synced, renamed over it, then
    /// the directory synced. An existing file's mode is kept; an existing link is replaced
    /// by the file, never followed.
    pub(super) fn write_in(
        &self,
        raw: &str,
        dir: &Dir,
        name: &OsStr,
        data: &[u8],
    ) -> Result<(), VfsError> {
        const OP: &str = "write";
        let mode = match dir.symlink_metadata(name) {
            Ok(existing) if existing.is_dir() => {
                return Err(io_kind(OP, raw, io::ErrorKind::IsADirectory));
            }
            Ok(existing) if existing.is_file() => Some(existing.permissions().mode() & 0o7777),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(map_io(OP, raw, e)),
        };
        replace(dir, name, data, mode).map_err(|e| map_io(OP, raw, e))?;
        // The new content is in place; without the sync, a crash could bring the old back.
        (self.sync_dir)(dir).map_err(|e| map_io(SYNC_OP, raw, e))
    }

    /// Resolves the symbolic links along `path` (all of them, the last one included) to the
    /// real path relative to the root, for a write: the last component need not exist.
    ///
    /// This decides *where* the write goes; confinement does not depend on it, since the
    /// result is opened through cap-std again (a link swapped in meanwhile is still
    /// refused). A link that is absolute or climbs above the root is an escape.
    pub(super) fn resolve(&self, path: &VfsPath) -> io::Result<PathBuf> {
        let escape = || {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                CAP_STD_ESCAPE_MESSAGE.to_owned(),
            )
        };
        let mut real = PathBuf::new();
        // Components still to walk, the next one last.
        let mut pending: Vec<OsString> = path.components().rev().map(OsString::from).collect();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            if component == ".." {
                if !real.pop() {
                    return Err(escape());
                }
                continue;
            }
            let candidate = real.join(&component);
            match self.root.symlink_metadata(&candidate) {
                Ok(metadata) if metadata.is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(io::Error::from_raw_os_error(
                            rustix::io::Errno::LOOP.raw_os_error(),
                        ));
                    }
                    let target = self.root.read_link_contents(&candidate)?;
                    for part in target.components().rev() {
                        match part {
                            Component::Normal(name) => pending.push(name.to_owned()),
                            Component::ParentDir => pending.push(OsString::from("..")),
                            Component::CurDir => {}
                            Component::RootDir | Component::Prefix(_) => return Err(escape()),
                        }
                    }
                }
                Ok(_) => real.push(component),
                Err(e) if e.kind() == io::ErrorKind::NotFound && pending.is_empty() => {
                    real.push(component);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(real)
    }

    /// Lists a directory, sorted by name.
    pub(super) fn list(&self, raw: &str) -> Result<Vec<DirEntry>, VfsError> {
        const OP: &str = "list";
        let path = parse(raw, true)?;
        let entries = self
            .root
            .read_dir(path.as_path())
            .map_err(|e| map_io(OP, raw, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| map_io(OP, raw, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            match entry.metadata() {
                Ok(metadata) => out.push(DirEntry {
                    name,
                    kind: kind_of(&metadata),
                    size: metadata.len(),
                }),
                // Removed between listing and looking at it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(map_io(OP, raw, e)),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Describes a path, following symbolic links.
    pub(super) fn stat(&self, raw: &str) -> Result<FileStat, VfsError> {
        let path = parse(raw, true)?;
        let metadata = self
            .root
            .metadata(path.as_path())
            .map_err(|e| map_io("stat", raw, e))?;
        let modified_ms = metadata
            .modified()
            .ok()
            .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(FileStat {
            kind: kind_of(&metadata),
            size: metadata.len(),
            modified_ms,
        })
    }

    /// Removes a file, a symbolic link (not its target), or a directory.
    pub(super) fn remove(&self, raw: &str, recursive: bool) -> Result<(), VfsError> {
        const OP: &str = "remove";
        let path = parse(raw, false)?;
        let metadata = self
            .root
            .symlink_metadata(path.as_path())
            .map_err(|e| map_io(OP, raw, e))?;
        let result = if metadata.is_dir() {
            if recursive {
                self.root.remove_dir_all(path.as_path())
            } else {
                self.root.remove_dir(path.as_path())
            }
        } else {
            self.root.remove_file(path.as_path())
        };
        result.map_err(|e| map_io(OP, raw, e))?;
        self.sync_parent(raw, &path)
    }

    /// Creates a directory (and its parents, with `parents`).
    pub(super) fn mkdir(&self, raw: &str, parents: bool) -> Result<(), VfsError> {
        const OP: &str = "create directory";
        let path = parse(raw, parents)?;
        if path.is_root() {
            return Ok(());
        }
        if !parents {
            self.root
                .create_dir(path.as_path())
                .map_err(|e| map_io(OP, raw, e))?;
            return self.sync_parent(raw, &path);
        }
        self.create_dirs(OP, raw, &path)?;
        // Something that is not a plain directory may be in the way. A link to a directory
        // inside is fine; say why anything else is not.
        match self.root.metadata(path.as_path()) {
            Ok(metadata) if metadata.is_dir() => Ok(()),
            Ok(_) => Err(io_kind(OP, raw, io::ErrorKind::AlreadyExists)),
            Err(follow) => Err(map_io(OP, raw, follow)),
        }
    }
}

/// Writes `data` to a new temporary file in `dir`, syncs it, and renames it over `name`.
/// The temporary file is removed on any failure. `mode` is the replaced file's mode, kept.
/// The caller syncs `dir` to make the rename durable.
pub(super) fn replace(dir: &Dir, name: &OsStr, data: &[u8], mode: Option<u32>) -> io::Result<()> {
    let tmp = temp_name(name)?;
    let mut options = OpenOptions::new();
    options
        .write(true)
        .create_new(true)
        .mode(mode.unwrap_or(NEW_FILE_MODE));
    let mut file = dir.open_with(&tmp, &options)?;
    let result = (|| {
        if let Some(mode) = mode {
            // Exactly the old mode, whatever the umask.
            file.set_permissions(Permissions::from_mode(mode))?;
        }
        file.write_all(data)?;
        file.sync_all()?;
        dir.rename(&tmp, dir, name)
    })();
    drop(file);
    if result.is_err() {
        let _ = dir.remove_file(&tmp);
    }
    result
}
