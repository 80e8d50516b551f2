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
//! Capsules get stricter operations ([`Workspace::capsule_read`],
//! [`Workspace::capsule_write`]): no symbolic link is followed at all, each component being
//! opened relative to its parent's descriptor with `O_NOFOLLOW` (so a directory swapped for
//! a link at any moment is refused too), and [`Reserved`] paths are refused.
//!
//! Durability: a write syncs the file, renames it over the target, then syncs the
//! directory; every directory created (by `Mkdir` or for a write's parents) and every
//! removal is made durable by syncing the parent directory. A failed directory sync fails
//! the operation, although its effect may already be visible.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use cap_std::fs::{
    Dir, Metadata, OpenOptions, OpenOptionsExt as _, Permissions, PermissionsExt as _,
};

use rustix::fs::{AtFlags, Mode, OFlags};

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
const NEW_DIR_MODE: u32 = 0o755;

/// What the error of a failed directory sync says was being done.
const SYNC_OP: &str = "make durable (sync the directory of)";

/// Makes the entries of a directory durable (`fsync` on it). A plain function so that
/// tests can put one that fails in its place.
pub(super) type SyncDir = fn(&Dir) -> io::Result<()>;

/// cap-std holds directories open with `O_PATH`, on which `fsync` fails: the directory is
/// opened again for reading, through the descriptor.
fn fsync_dir(dir: &Dir) -> io::Result<()> {
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
fn map_io(op: &'static str, path: &str, error: io::Error) -> VfsError {
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
fn shown(raw: &str) -> String {
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
fn parse(raw: &str, root_ok: bool) -> Result<VfsPath, VfsError> {
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

fn too_large(len: u64, max: u64) -> Result<(), VfsError> {
    if len > max {
        Err(VfsError::TooLarge { len, max })
    } else {
        Ok(())
    }
}

/// A random name for the temporary file of a write to `name`: `.<name>.<16 hex>.tmp`.
fn temp_name(name: &OsStr) -> io::Result<OsString> {
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
    root: Dir,
    limits: VfsLimits,
    reserved: Reserved,
    sync_dir: SyncDir,
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
    fn read_open(
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
    fn write_resolved(&self, raw: &str, real: &Path, data: &[u8]) -> Result<(), VfsError> {
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
    fn write_in(&self, raw: &str, dir: &Dir, name: &OsStr, data: &[u8]) -> Result<(), VfsError> {
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

    /// Reads the whole file at `raw` for a capsule (see [`CapsuleRead`](super::CapsuleRead)).
    pub(super) fn capsule_read(&self, raw: &str) -> Result<ReadResult, VfsError> {
        const OP: &str = "read";
        let path = self.capsule_path(raw)?;
        let (dir, name) = self.walk_nofollow(raw, &path, false)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = rustix::fs::openat(&dir, name, flags, Mode::empty())
            .map_err(|e| self.refusal(OP, raw, &path, &dir, name, e.into()))?;
        let file = cap_std::fs::File::from_std(std::fs::File::from(file));
        self.read_open(raw, file, 0, None)
    }

    /// Replaces the file at `raw` for a capsule, creating its parents (see
    /// [`CapsuleWrite`](super::CapsuleWrite)).
    pub(super) fn capsule_write(&self, raw: &str, data: &[u8]) -> Result<u64, VfsError> {
        const OP: &str = "write";
        let path = self.capsule_path(raw)?;
        let len = data.len() as u64;
        too_large(len, self.limits.max_write)?;
        let (dir, name) = self.walk_nofollow(raw, &path, true)?;
        match dir.symlink_metadata(name) {
            Ok(existing) if existing.is_symlink() => {
                return Err(VfsError::Symlink {
                    path: raw.to_owned(),
                    link: path.as_str().to_owned(),
                });
            }
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(map_io(OP, raw, e)),
            _ => {}
        }
        // A link put in its place meanwhile is replaced by the file, not followed.
        self.write_in(raw, &dir, OsStr::new(name), data)?;
        Ok(len)
    }

    /// `raw` parsed for a capsule: not the root, not reserved.
    fn capsule_path(&self, raw: &str) -> Result<VfsPath, VfsError> {
        let path = parse(raw, false)?;
        if self.reserved.covers(&path) {
            return Err(VfsError::Reserved {
                path: raw.to_owned(),
            });
        }
        Ok(path)
    }

    /// Opens the directory holding `path`'s last component without following any link:
    /// each component is opened with `O_NOFOLLOW` relative to the one before. With
    /// `create`, missing directories are made (each synced in its parent).
    fn walk_nofollow<'p>(
        &self,
        raw: &str,
        path: &'p VfsPath,
        create: bool,
    ) -> Result<(Dir, &'p str), VfsError> {
        const OP: &str = "open the directories of";
        let Some((parent, name)) = path.split_last() else {
            return Err(VfsError::InvalidPath {
                path: shown(raw),
                reason: path::ROOT,
            });
        };
        let mut dir = self.root.try_clone().map_err(|e| map_io(OP, raw, e))?;
        let mut walked = String::new();
        for component in parent.components() {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(component);
            let mut opened = open_dir_nofollow(&dir, component);
            if create && matches!(&opened, Err(e) if e.kind() == io::ErrorKind::NotFound) {
                match rustix::fs::mkdirat(&dir, component, Mode::from_raw_mode(NEW_DIR_MODE)) {
                    Ok(()) => (self.sync_dir)(&dir).map_err(|e| map_io(SYNC_OP, raw, e))?,
                    Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(map_io(OP, raw, e.into())),
                }
                opened = open_dir_nofollow(&dir, component);
            }
            dir = match opened {
                Ok(next) => next,
                Err(e) => {
                    let at = VfsPath::parse(&walked).unwrap_or_else(|_| VfsPath::root());
                    return Err(self.refusal(OP, raw, &at, &dir, component, e));
                }
            };
        }
        Ok((dir, name))
    }

    /// The error for a component `name` of `dir` that could not be opened: a
    /// [`VfsError::Symlink`] naming `at` (the path up to it) if it is a link.
    #[allow(
        clippy::unused_self,
        reason = "kept with the other steps of a capsule's walk"
    )]
    fn refusal(
        &self,
        op: &'static str,
        raw: &str,
        at: &VfsPath,
        dir: &Dir,
        name: &str,
        error: io::Error,
    ) -> VfsError {
        let is_link = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink());
        if is_link {
            VfsError::Symlink {
                path: raw.to_owned(),
                link: at.as_str().to_owned(),
            }
        } else {
            map_io(op, raw, error)
        }
    }

    /// Resolves the symbolic links along `path` (all of them, the last one included) to the
    /// real path relative to the root, for a write: the last component need not exist.
    ///
    /// This decides *where* the write goes; confinement does not depend on it, since the
    /// result is opened through cap-std again (a link swapped in meanwhile is still
    /// refused). A link that is absolute or climbs above the root is an escape.
    fn resolve(&self, path: &VfsPath) -> io::Result<PathBuf> {
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

/// Opens the directory `name` in `dir`, refusing a link (`O_NOFOLLOW`).
fn open_dir_nofollow(dir: &Dir, name: &str) -> io::Result<Dir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    Ok(Dir::from_std_file(std::fs::File::from(fd)))
}

/// Writes `data` to a new temporary file in `dir`, syncs it, and renames it over `name`.
/// The temporary file is removed on any failure. `mode` is the replaced file's mode, kept.
/// The caller syncs `dir` to make the rename durable.
fn replace(dir: &Dir, name: &OsStr, data: &[u8], mode: Option<u32>) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use super::*;

    fn setup() -> (tempfile::TempDir, Workspace) {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("ws")).unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        fs::write(tmp.path().join("outside/secret"), b"secret").unwrap();
        let ws = Workspace::open(&tmp.path().join("ws"), VfsLimits::default()).unwrap();
        (tmp, ws)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn escape_error_is_recognised_and_permission_error_is_not() {
        let (tmp, ws) = setup();
        symlink(tmp.path().join("outside"), tmp.path().join("ws/out")).unwrap();
        let err = ws.root.open("out/secret").unwrap_err();
        assert!(is_escape(&err), "{err:?}");
        let err = ws.root.metadata("out/secret").unwrap_err();
        assert!(is_escape(&err), "{err:?}");
        let denied = io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error());
        assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied);
        assert!(!is_escape(&denied));
        assert!(!is_escape(&io::Error::new(
            io::ErrorKind::PermissionDenied,
            "something else"
        )));
        assert!(!is_escape(&io::ErrorKind::NotFound.into()));
    }

    #[test]
    fn open_names_a_missing_root() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = Workspace::open(&missing, VfsLimits::default()).unwrap_err();
        assert!(
            matches!(&err, VfsError::Io { path, .. } if *path == missing.display().to_string())
        );
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn read_whole_and_slices() {
        let (tmp, ws) = setup();
        fs::write(tmp.path().join("ws/f"), b"hello world").unwrap();
        let all = ws.read("f", 0, None).unwrap();
        assert_eq!(all.data, b"hello world");
        assert_eq!(all.size, 11);
        assert_eq!(ws.read("./f", 6, Some(3)).unwrap().data, b"wor");
        assert_eq!(ws.read("f", 6, Some(100)).unwrap().data, b"world");
        let past = ws.read("f", 50, None).unwrap();
        assert!(past.data.is_empty());
        assert_eq!(past.size, 11);
        assert!(ws.read("f", 0, Some(0)).unwrap().data.is_empty());
    }

    #[test]
    fn read_limit_applies_to_the_returned_slice() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("f"), vec![7u8; 100]).unwrap();
        let ws = Workspace::open(
            tmp.path(),
            VfsLimits {
                max_read: 10,
                max_write: 10,
            },
        )
        .unwrap();
        assert!(matches!(
            ws.read("f", 0, None),
            Err(VfsError::TooLarge { len: 100, max: 10 })
        ));
        assert!(matches!(
            ws.read("f", 0, Some(11)),
            Err(VfsError::TooLarge { len: 11, max: 10 })
        ));
        assert_eq!(ws.read("f", 0, Some(10)).unwrap().data.len(), 10);
        assert_eq!(ws.read("f", 95, None).unwrap().data.len(), 5);
        // Asking for more than the limit is fine when the file has less left.
        assert_eq!(ws.read("f", 95, Some(1000)).unwrap().data.len(), 5);
    }

    #[test]
    fn read_refuses_directories_fifos_and_missing_files() {
        let (tmp, ws) = setup();
        fs::create_dir(tmp.path().join("ws/d")).unwrap();
        assert!(matches!(
            ws.read("d", 0, None),
            Err(VfsError::Io { source, .. }) if source.kind() == io::ErrorKind::IsADirectory
        ));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tmp.path().join("ws/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(matches!(
            ws.read("fifo", 0, None),
            Err(VfsError::Io { source, .. }) if source.kind() == io::ErrorKind::InvalidInput
        ));
        assert!(
            matches!(ws.read("nope", 0, None), Err(VfsError::NotFound { path }) if path == "nope")
        );
        assert!(matches!(
            ws.read(".", 0, None),
            Err(VfsError::InvalidPath {
                reason: path::ROOT,
                ..
            })
        ));
    }

    #[test]
    fn write_creates_replaces_and_leaves_no_temp_file() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        assert_eq!(ws.write("f", b"one", false).unwrap(), 3);
        assert_eq!(fs::read(root.join("f")).unwrap(), b"one");
        assert_eq!(ws.write("f", b"second", false).unwrap(), 6);
        assert_eq!(fs::read(root.join("f")).unwrap(), b"second");
        assert_eq!(ws.write("f", b"", false).unwrap(), 0);
        assert_eq!(fs::read(root.join("f")).unwrap(), b"");
        assert_eq!(names(&root), ["f"]);
    }

    #[test]
    fn a_failed_replace_removes_its_temporary_file() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        fs::create_dir_all(root.join("d/inner")).unwrap();
        // Renaming a file over a non-empty directory fails after the data is written.
        let err = replace(&ws.root, OsStr::new("d"), b"data", None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::IsADirectory);
        assert_eq!(names(&root), ["d"]);
        assert_eq!(names(&root.join("d")), ["inner"]);
    }

    #[test]
    fn write_keeps_the_mode_of_the_file_it_replaces() {
        let (tmp, ws) = setup();
        let script = tmp.path().join("ws/run.sh");
        fs::write(&script, b"old").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o750)).unwrap();
        ws.write("run.sh", b"#!/bin/sh\n", false).unwrap();
        assert_eq!(
            fs::metadata(&script).unwrap().permissions().mode() & 0o777,
            0o750
        );
    }

    #[test]
    fn write_into_missing_directories_needs_create_dirs() {
        let (tmp, ws) = setup();
        assert!(matches!(
            ws.write("a/b/f", b"x", false),
            Err(VfsError::NotFound { .. })
        ));
        ws.write("a/b/f", b"x", true).unwrap();
        assert_eq!(fs::read(tmp.path().join("ws/a/b/f")).unwrap(), b"x");
        // create_dirs on existing parents is harmless.
        ws.write("a/b/g", b"y", true).unwrap();
        assert_eq!(names(&tmp.path().join("ws/a/b")), ["f", "g"]);
        // A file in the way of the parents.
        assert!(matches!(
            ws.write("a/b/f/g", b"z", true),
            Err(VfsError::Io { op: "write", source, .. })
                if source.kind() == io::ErrorKind::NotADirectory
        ));
    }

    #[test]
    fn write_refuses_directories_the_root_and_oversized_data() {
        let (tmp, ws) = setup();
        fs::create_dir(tmp.path().join("ws/d")).unwrap();
        assert!(matches!(
            ws.write("d", b"x", false),
            Err(VfsError::Io { op: "write", source, .. }) if source.kind() == io::ErrorKind::IsADirectory
        ));
        assert!(matches!(
            ws.write(".", b"x", false),
            Err(VfsError::InvalidPath {
                reason: path::ROOT,
                ..
            })
        ));
        let small = Workspace::open(
            &tmp.path().join("ws"),
            VfsLimits {
                max_read: 4,
                max_write: 4,
            },
        )
        .unwrap();
        assert!(matches!(
            small.write("big", b"12345", true),
            Err(VfsError::TooLarge { len: 5, max: 4 })
        ));
        small.write("ok", b"1234", false).unwrap();
        assert!(!tmp.path().join("ws/big").exists());
    }

    #[test]
    fn write_through_a_file_symlink_inside_replaces_the_target() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        fs::create_dir(root.join("docs")).unwrap();
        fs::write(root.join("README"), b"old").unwrap();
        symlink("../README", root.join("docs/README")).unwrap();
        ws.write("docs/README", b"new", false).unwrap();
        assert_eq!(fs::read(root.join("README")).unwrap(), b"new");
        assert!(
            fs::symlink_metadata(root.join("docs/README"))
                .unwrap()
                .is_symlink()
        );
        // A dangling link inside creates its target.
        symlink("later", root.join("soon")).unwrap();
        ws.write("soon", b"made", false).unwrap();
        assert_eq!(fs::read(root.join("later")).unwrap(), b"made");
    }

    #[test]
    fn write_through_symlinks_out_is_an_escape() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        symlink(tmp.path().join("outside/secret"), root.join("abs")).unwrap();
        symlink("../outside/secret", root.join("rel")).unwrap();
        symlink("../outside/new", root.join("dangling")).unwrap();
        symlink(tmp.path().join("outside"), root.join("outdir")).unwrap();
        for p in ["abs", "rel", "dangling", "outdir/secret", "outdir/new"] {
            assert!(
                matches!(ws.write(p, b"pwned", false), Err(VfsError::Escape { ref path }) if path == p),
                "{p}"
            );
        }
        assert!(matches!(
            ws.write("outdir/sub/f", b"pwned", true),
            Err(VfsError::Escape { .. })
        ));
        assert_eq!(
            fs::read(tmp.path().join("outside/secret")).unwrap(),
            b"secret"
        );
        assert_eq!(names(&tmp.path().join("outside")), ["secret"]);
    }

    #[test]
    fn a_directory_swapped_after_resolution_is_still_refused() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        fs::create_dir(root.join("sub")).unwrap();
        let real = ws.resolve(&VfsPath::parse("sub/secret").unwrap()).unwrap();
        assert_eq!(real, Path::new("sub/secret"));
        // Swapped between the check and the use.
        fs::remove_dir(root.join("sub")).unwrap();
        symlink(tmp.path().join("outside"), root.join("sub")).unwrap();
        assert!(matches!(
            ws.write_resolved("sub/secret", &real, b"pwned"),
            Err(VfsError::Escape { .. })
        ));
        assert_eq!(
            fs::read(tmp.path().join("outside/secret")).unwrap(),
            b"secret"
        );
        assert_eq!(names(&tmp.path().join("outside")), ["secret"]);
    }

    #[test]
    fn resolve_follows_links_and_detects_loops() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        fs::create_dir_all(root.join("a/b")).unwrap();
        symlink("a/b", root.join("ab")).unwrap();
        symlink("../x", root.join("a/b/up")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let resolve = |p: &str| ws.resolve(&VfsPath::parse(p).unwrap());
        assert_eq!(resolve("ab/up").unwrap(), Path::new("a/x"));
        assert_eq!(resolve("ab/new").unwrap(), Path::new("a/b/new"));
        let err = resolve("loop1").unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error())
        );
        symlink("..", root.join("parent")).unwrap();
        assert!(is_escape(&resolve("parent/x").unwrap_err()));
        symlink("/etc", root.join("etc")).unwrap();
        assert!(is_escape(&resolve("etc/passwd").unwrap_err()));
        assert_eq!(
            resolve("missing/f").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn list_is_sorted_and_reports_kinds() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        fs::write(root.join("b.txt"), b"12345").unwrap();
        fs::create_dir(root.join("a")).unwrap();
        symlink("b.txt", root.join("c")).unwrap();
        let list = ws.list(".").unwrap();
        let got: Vec<(&str, EntryKind)> = list.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        assert_eq!(
            got,
            [
                ("a", EntryKind::Dir),
                ("b.txt", EntryKind::File),
                ("c", EntryKind::Symlink)
            ]
        );
        assert_eq!(list[1].size, 5);
        assert!(ws.list("a").unwrap().is_empty());
        assert!(matches!(ws.list("nope"), Err(VfsError::NotFound { .. })));
        assert!(matches!(
            ws.list("b.txt"),
            Err(VfsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotADirectory
        ));
    }

    #[test]
    fn stat_follows_links_inside() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        fs::write(root.join("f"), b"abc").unwrap();
        symlink("f", root.join("l")).unwrap();
        let st = ws.stat("f").unwrap();
        assert_eq!(st.kind, EntryKind::File);
        assert_eq!(st.size, 3);
        assert!(st.modified_ms.unwrap() > 1_600_000_000_000);
        assert_eq!(ws.stat("l").unwrap().kind, EntryKind::File);
        assert_eq!(ws.stat(".").unwrap().kind, EntryKind::Dir);
        assert!(matches!(ws.stat("nope"), Err(VfsError::NotFound { .. })));
    }

    #[test]
    fn remove_files_links_and_directories() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        fs::write(root.join("f"), b"x").unwrap();
        fs::create_dir_all(root.join("d/e")).unwrap();
        fs::write(root.join("d/e/g"), b"x").unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        symlink("f", root.join("l")).unwrap();
        ws.remove("l", false).unwrap();
        assert!(root.join("f").exists(), "the link's target stays");
        ws.remove("f", false).unwrap();
        ws.remove("empty", false).unwrap();
        assert!(matches!(
            ws.remove("d", false),
            Err(VfsError::Io { source, .. }) if source.kind() == io::ErrorKind::DirectoryNotEmpty
        ));
        ws.remove("d", true).unwrap();
        assert!(names(&root).is_empty());
        assert!(matches!(
            ws.remove("f", false),
            Err(VfsError::NotFound { .. })
        ));
        assert!(matches!(
            ws.remove(".", true),
            Err(VfsError::InvalidPath {
                reason: path::ROOT,
                ..
            })
        ));
    }

    #[test]
    fn recursive_remove_does_not_follow_links_out() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        fs::create_dir(root.join("d")).unwrap();
        symlink(tmp.path().join("outside"), root.join("d/out")).unwrap();
        ws.remove("d", true).unwrap();
        assert!(!root.join("d").exists());
        assert_eq!(names(&tmp.path().join("outside")), ["secret"]);
    }

    #[test]
    fn mkdir_with_and_without_parents() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        ws.mkdir("a", false).unwrap();
        assert!(root.join("a").is_dir());
        assert!(matches!(
            ws.mkdir("a", false),
            Err(VfsError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists
        ));
        ws.mkdir("a", true).unwrap();
        assert!(matches!(
            ws.mkdir("x/y", false),
            Err(VfsError::NotFound { .. })
        ));
        ws.mkdir("x/y/z", true).unwrap();
        assert!(root.join("x/y/z").is_dir());
        ws.mkdir(".", true).unwrap();
        fs::write(root.join("file"), b"x").unwrap();
        assert!(matches!(
            ws.mkdir("file", true),
            Err(VfsError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists
        ));
        symlink("x", root.join("xlink")).unwrap();
        ws.mkdir("xlink", true).unwrap();
        symlink(tmp.path().join("outside"), root.join("out")).unwrap();
        assert!(matches!(
            ws.mkdir("out", true),
            Err(VfsError::Escape { .. })
        ));
        assert!(matches!(
            ws.mkdir("out/new", true),
            Err(VfsError::Escape { .. })
        ));
        assert!(matches!(
            ws.mkdir(".", false),
            Err(VfsError::InvalidPath {
                reason: path::ROOT,
                ..
            })
        ));
    }

    #[test]
    fn invalid_paths_are_reported_with_the_rule() {
        let (_tmp, ws) = setup();
        let long = "a".repeat(MAX_PATH_LEN + 1);
        for (raw, reason) in [
            ("", path::EMPTY),
            ("/etc/passwd", path::ABSOLUTE),
            ("../x", path::PARENT),
            ("a/../../x", path::PARENT),
            ("a\0b", path::NUL),
            (long.as_str(), path::TOO_LONG),
        ] {
            let err = ws.read(raw, 0, None).unwrap_err();
            match err {
                VfsError::InvalidPath { path, reason: got } => {
                    assert_eq!(got, reason);
                    assert!(path.len() < 100, "the path is shortened: {path}");
                }
                other => panic!("{raw:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn temp_names_are_hidden_random_and_bounded() {
        let a = temp_name(OsStr::new("f.txt")).unwrap();
        let b = temp_name(OsStr::new("f.txt")).unwrap();
        assert_ne!(a, b);
        let text = a.to_str().unwrap();
        assert!(
            text.starts_with(".f.txt.") && Path::new(text).extension() == Some(OsStr::new("tmp")),
            "{text}"
        );
        assert_eq!(text.len(), ".f.txt.".len() + 16 + ".tmp".len());
        let long = "n".repeat(255);
        assert!(temp_name(OsStr::new(&long)).unwrap().len() <= 255);
    }

    /// A workspace holding `public/notes.txt`, `secret.txt`, and links to them and out.
    fn links() -> (tempfile::TempDir, Workspace) {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        fs::create_dir(root.join("public")).unwrap();
        fs::write(root.join("public/notes.txt"), b"notes").unwrap();
        fs::write(root.join("secret.txt"), b"top secret").unwrap();
        symlink("../secret.txt", root.join("public/link")).unwrap();
        symlink("public", root.join("pub")).unwrap();
        symlink(tmp.path().join("outside"), root.join("public/out")).unwrap();
        (tmp, ws)
    }

    fn link_of(result: Result<impl std::fmt::Debug, VfsError>) -> String {
        match result {
            Err(VfsError::Symlink { link, .. }) => link,
            other => panic!("expected a symlink refusal, got {other:?}"),
        }
    }

    #[test]
    fn capsules_read_no_symbolic_link_anywhere() {
        let (_tmp, ws) = links();
        assert_eq!(ws.capsule_read("public/notes.txt").unwrap().data, b"notes");
        assert_eq!(
            ws.capsule_read(".//public/./notes.txt").unwrap().data,
            b"notes"
        );
        assert_eq!(link_of(ws.capsule_read("public/link")), "public/link");
        assert_eq!(link_of(ws.capsule_read("./public//link")), "public/link");
        assert_eq!(link_of(ws.capsule_read("pub/notes.txt")), "pub");
        assert_eq!(link_of(ws.capsule_read("public/out/secret")), "public/out");
        // Clients still follow links inside the workspace.
        assert_eq!(ws.read("public/link", 0, None).unwrap().data, b"top secret");
        assert!(matches!(
            ws.capsule_read("public/nope"),
            Err(VfsError::NotFound { .. })
        ));
        assert!(matches!(
            ws.capsule_read("nope/x"),
            Err(VfsError::NotFound { .. })
        ));
        assert!(matches!(
            ws.capsule_read("public"),
            Err(VfsError::Io { source, .. }) if source.kind() == io::ErrorKind::IsADirectory
        ));
    }

    #[test]
    fn capsules_write_through_no_symbolic_link_and_replace_none() {
        let (tmp, ws) = links();
        let root = tmp.path().join("ws");
        assert_eq!(
            link_of(ws.capsule_write("public/link", b"pwned")),
            "public/link"
        );
        assert_eq!(link_of(ws.capsule_write("pub/new.txt", b"pwned")), "pub");
        assert_eq!(
            link_of(ws.capsule_write("public/out/new", b"pwned")),
            "public/out"
        );
        assert_eq!(
            link_of(ws.capsule_write("public/out/a/b", b"pwned")),
            "public/out"
        );
        assert_eq!(fs::read(root.join("secret.txt")).unwrap(), b"top secret");
        assert!(
            fs::symlink_metadata(root.join("public/link"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(names(&root.join("public")), ["link", "notes.txt", "out"]);
        assert_eq!(names(&tmp.path().join("outside")), ["secret"]);
        // Plain paths work, parents created.
        assert_eq!(ws.capsule_write("public/a/b/c.txt", b"made").unwrap(), 4);
        assert_eq!(fs::read(root.join("public/a/b/c.txt")).unwrap(), b"made");
        ws.capsule_write("public/notes.txt", b"new").unwrap();
        assert_eq!(fs::read(root.join("public/notes.txt")).unwrap(), b"new");
        assert_eq!(names(&root.join("public/a/b")), ["c.txt"]);
    }

    #[test]
    fn capsules_may_not_touch_reserved_paths() {
        let (tmp, mut ws) = setup();
        let root = tmp.path().join("ws");
        fs::create_dir_all(root.join(".astrid/capsules")).unwrap();
        fs::write(root.join(".astrid/mcp.toml"), b"[[server]]").unwrap();
        fs::create_dir_all(root.join("home/state")).unwrap();
        fs::write(root.join("home/state/token"), b"t").unwrap();
        for raw in [
            ".astrid/mcp.toml",
            "./.astrid//mcp.toml",
            ".ASTRID/mcp.toml",
            ".astrid",
        ] {
            assert!(
                matches!(ws.capsule_read(raw), Err(VfsError::Reserved { .. })),
                "{raw}"
            );
            assert!(
                matches!(ws.capsule_write(raw, b"x"), Err(VfsError::Reserved { .. })),
                "{raw}"
            );
        }
        assert!(matches!(
            ws.capsule_write(".astrid/capsules/evil/Capsule.toml", b"x"),
            Err(VfsError::Reserved { .. })
        ));
        assert_eq!(ws.capsule_read("home/state/token").unwrap().data, b"t");
        ws.reserve(Reserved::with_home(&root, &root.join("home")));
        assert!(matches!(
            ws.capsule_read("home/state/token"),
            Err(VfsError::Reserved { .. })
        ));
        assert!(matches!(
            ws.capsule_write("home/x", b"x"),
            Err(VfsError::Reserved { .. })
        ));
        assert_eq!(names(&root.join(".astrid")), ["capsules", "mcp.toml"]);
        assert_eq!(names(&root.join("home")), ["state"]);
        // Clients keep their access.
        assert_eq!(
            ws.read(".astrid/mcp.toml", 0, None).unwrap().data,
            b"[[server]]"
        );
    }

    #[test]
    fn a_directory_swapped_for_a_link_at_any_moment_is_never_followed() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        let outside = tmp.path().join("outside");
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/secret"), b"inside").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, root, outside) = (stop.clone(), root.clone(), outside.clone());
            std::thread::spawn(move || {
                let (sub, real) = (root.join("sub"), root.join("real"));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // `sub` is a directory, then a link out, then a directory again.
                    let _ = fs::rename(&sub, &real);
                    let _ = symlink(&outside, &sub);
                    let _ = fs::remove_file(&sub);
                    let _ = fs::rename(&real, &sub);
                }
            })
        };
        for _ in 0..2000 {
            if let Ok(read) = ws.capsule_read("sub/secret") {
                assert_eq!(read.data, b"inside");
            }
            let _ = ws.capsule_write("sub/planted", b"pwned");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        assert_eq!(names(&outside), ["secret"]);
        assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");
    }

    fn failing_sync(_: &Dir) -> io::Result<()> {
        Err(io::Error::other("injected sync failure"))
    }

    fn sync_failed<T>(result: &Result<T, VfsError>) -> bool {
        matches!(result, Err(VfsError::Io { op, source, .. })
            if *op == SYNC_OP && source.to_string() == "injected sync failure")
    }

    #[test]
    fn a_failed_directory_sync_fails_the_operation() {
        let (tmp, ws) = setup();
        let root = tmp.path().join("ws");
        let ws = ws.with_sync(failing_sync);
        // The rename happened (the content is there), but it is not known to be durable.
        assert!(sync_failed(&ws.write("f", b"data", false)));
        assert_eq!(fs::read(root.join("f")).unwrap(), b"data");
        assert_eq!(names(&root), ["f"], "no temporary file left");
        assert!(sync_failed(&ws.capsule_write("g", b"data")));
        // Each directory made syncs its parent; the first failure stops the rest.
        assert!(sync_failed(&ws.write("a/b/f", b"x", true)));
        assert!(root.join("a").is_dir() && !root.join("a/b").exists());
        assert!(sync_failed(&ws.capsule_write("c/d/f", b"x")));
        assert!(sync_failed(&ws.mkdir("m", false)));
        assert!(sync_failed(&ws.mkdir("n/o", true)));
        assert!(sync_failed(&ws.remove("f", false)));
        assert!(!root.join("f").exists());
        assert!(sync_failed(&ws.remove("a", true)));
        // Nothing to sync when nothing changes.
        fs::create_dir(root.join("p")).unwrap();
        ws.mkdir("p", true).unwrap();
        assert_eq!(ws.read("g", 0, None).unwrap().data, b"data");
    }

    #[test]
    fn directories_are_synced_after_every_change() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SYNCS: AtomicUsize = AtomicUsize::new(0);
        fn counting(dir: &Dir) -> io::Result<()> {
            SYNCS.fetch_add(1, Ordering::SeqCst);
            fsync_dir(dir)
        }
        let (_tmp, ws) = setup();
        let ws = ws.with_sync(counting);
        let expect = |n: usize, what: &str| {
            assert_eq!(SYNCS.swap(0, Ordering::SeqCst), n, "{what}");
        };
        ws.write("f", b"x", false).unwrap();
        expect(1, "a write: its directory");
        ws.write("a/b/f", b"x", true).unwrap();
        expect(3, "two directories made, then the write");
        ws.capsule_write("c/d/f", b"x").unwrap();
        expect(3, "the same for a capsule");
        ws.capsule_write("c/d/f", b"y").unwrap();
        expect(1, "parents already there");
        ws.mkdir("m", false).unwrap();
        expect(1, "mkdir");
        ws.mkdir("m/n/o", true).unwrap();
        expect(2, "mkdir with parents");
        ws.remove("m", true).unwrap();
        expect(1, "remove");
    }
}
