//! What capsules may do to the workspace, stricter than what clients may: no symbolic link
//! is followed at all (each component is opened relative to its parent's descriptor with
//! `O_NOFOLLOW`, so a directory swapped for a link at any moment is refused too), and the
//! paths reserved to the daemon ([`Reserved`](super::path::Reserved)) are refused whatever the capsule's grants.

use std::ffi::OsStr;
use std::io;

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, Mode, OFlags};

use super::messages::{ReadResult, VfsError};
use super::ops::{NEW_DIR_MODE, SYNC_OP, Workspace, map_io, parse, shown, too_large};
use super::path::{self, VfsPath};

impl Workspace {
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
}

/// Opens the directory `name` in `dir`, refusing a link (`O_NOFOLLOW`).
fn open_dir_nofollow(dir: &Dir, name: &str) -> io::Result<Dir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    Ok(Dir::from_std_file(std::fs::File::from(fd)))
}
