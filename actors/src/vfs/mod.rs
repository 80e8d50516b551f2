//! The workspace file system: one actor that reads and changes files under the workspace
//! directory, and nowhere else.
//!
//! Writes land in the real workspace, atomically (temporary file in the same directory,
//! fsync, rename over the target). There is no overlay whose changes could be silently
//! discarded. Paths are relative to the root: checked lexically by [`path::VfsPath`], then
//! opened through a cap-std [`Dir`](cap_std::fs::Dir), which refuses any resolution that
//! leaves the root, through symbolic links included, even when a directory is swapped for
//! a link after the check. Such a refusal is answered as [`VfsError::Escape`].
//!
//! Capsules are held tighter ([`CapsuleRead`], [`CapsuleWrite`]): they follow no symbolic
//! link at all, and may not touch the daemon's configuration inside the workspace
//! ([`path::Reserved`]: `.astrid/`, and the home when it lies inside the workspace).
//!
//! File I/O blocks, so the kernel runs this actor on its own arbiter (thread).
//!
//! Handles: [`Read`], [`Write`], [`List`], [`Stat`], [`Remove`], [`Mkdir`] (sent by
//! sessions for clients and by kernel components), [`CapsuleRead`] and [`CapsuleWrite`]
//! (capsules' host imports), and the supervision messages [`Terminate`] and [`Inject`].

mod capsule_ops;
mod messages;
mod ops;
pub mod path;

use std::path::Path;

use actix::{Actor, ActorContext, Context, Handler};

pub use self::messages::{
    CapsuleRead, CapsuleWrite, DirEntry, EntryKind, FileStat, List, Mkdir, Read, ReadResult,
    Remove, Stat, VfsError, Write,
};
pub use self::ops::VfsLimits;
use self::ops::Workspace;
use crate::supervisor::{Inject, Terminate, apply_fault};

/// The VFS actor. It holds only the opened root and the limits, so a restart loses nothing.
#[derive(Debug)]
pub struct VfsActor {
    workspace: Workspace,
}

impl VfsActor {
    /// Opens `root` (the workspace directory) as the VFS root.
    ///
    /// # Errors
    ///
    /// [`VfsError::Io`] naming `root` when it cannot be opened as a directory.
    pub fn new(root: &Path, limits: VfsLimits) -> Result<Self, VfsError> {
        Ok(Self {
            workspace: Workspace::open(root, limits)?,
        })
    }

    /// Also refuses capsules the daemon's home `home` where it meets the workspace `root`
    /// (see [`path::Reserved::with_home`]); both are compared canonical.
    #[must_use]
    pub fn reserving_home(mut self, root: &Path, home: &Path) -> Self {
        let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
        self.workspace.reserve(path::Reserved::with_home(
            &canonical(root),
            &canonical(home),
        ));
        self
    }
}

impl Actor for VfsActor {
    type Context = Context<Self>;
}

impl Handler<Read> for VfsActor {
    type Result = Result<ReadResult, VfsError>;

    fn handle(&mut self, msg: Read, _: &mut Context<Self>) -> Self::Result {
        let result = self.workspace.read(&msg.path, msg.offset, msg.len);
        trace("read", &msg.path, result.as_ref().err());
        result
    }
}

impl Handler<Write> for VfsActor {
    type Result = Result<u64, VfsError>;

    fn handle(&mut self, msg: Write, _: &mut Context<Self>) -> Self::Result {
        let result = self.workspace.write(&msg.path, &msg.data, msg.create_dirs);
        trace("write", &msg.path, result.as_ref().err());
        result
    }
}

impl Handler<CapsuleRead> for VfsActor {
    type Result = Result<ReadResult, VfsError>;

    fn handle(&mut self, msg: CapsuleRead, _: &mut Context<Self>) -> Self::Result {
        let result = self.workspace.capsule_read(&msg.path);
        trace("capsule read", &msg.path, result.as_ref().err());
        result
    }
}

impl Handler<CapsuleWrite> for VfsActor {
    type Result = Result<u64, VfsError>;

    fn handle(&mut self, msg: CapsuleWrite, _: &mut Context<Self>) -> Self::Result {
        let result = self.workspace.capsule_write(&msg.path, &msg.data);
        trace("capsule write", &msg.path, result.as_ref().err());
        result
    }
}

impl Handler<List> for VfsActor {
    type Result = Result<Vec<DirEntry>, VfsError>;

    fn handle(&mut self, msg: List, _: &mut Context<Self>) -> Self::Result {
        let result = self.workspace.list(&msg.path);
        trace("list", &msg.path, result.as_ref().err());
        result
    }
}

impl Handler<Stat> for VfsActor {
    type Result = Result<FileStat, VfsError>;

    fn handle(&mut self, msg: Stat, _: &mut Context<Self>) -> Self::Result {
        let result = self.workspace.stat(&msg.path);
        trace("stat", &msg.path, result.as_ref().err());
        result
    }
}

impl Handler<Remove> for VfsActor {
    type Result = Result<(), VfsError>;

    fn handle(&mut self, msg: Remove, _: &mut Context<Self>) -> Self::Result {
        let result = self.workspace.remove(&msg.path, msg.recursive);
        trace("remove", &msg.path, result.as_ref().err());
        result
    }
}

impl Handler<Mkdir> for VfsActor {
    type Result = Result<(), VfsError>;

    fn handle(&mut self, msg: Mkdir, _: &mut Context<Self>) -> Self::Result {
        let result = self.workspace.mkdir(&msg.path, msg.parents);
        trace("mkdir", &msg.path, result.as_ref().err());
        result
    }
}

impl Handler<Terminate> for VfsActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Inject> for VfsActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply_fault(&msg.0, ctx);
    }
}

/// Logs one operation: escapes at warn level (something in the workspace points out of
/// it, or a client tried), the rest at debug (a capsule's refusals are logged, within a
/// budget, by the capability store).
fn trace(op: &str, path: &str, error: Option<&VfsError>) {
    match error {
        None => tracing::debug!(op, path, "vfs"),
        Some(e @ VfsError::Escape { .. }) => tracing::warn!(op, path, error = %e, "vfs refused"),
        Some(e) => tracing::debug!(op, path, error = %e, "vfs failed"),
    }
}

#[cfg(test)]
mod tests;
