//! Workspace files: `VfsRead`, `VfsWrite`, `VfsList`, `VfsStat`, `VfsRemove`, `VfsMkdir`.

use super::{Dispatch, call};
use crate::protocol::{Removed, Written};
use crate::vfs;

/// `VfsRead`.
pub(super) fn read(d: Dispatch<'_>, path: String, offset: u64, len: Option<u64>) {
    let ask = call(
        &d.session.deps.services.vfs,
        vfs::Read { path, offset, len },
        d.timeout(),
    );
    d.run(async move { Ok(ask.await??) });
}

/// `VfsWrite`.
pub(super) fn write(d: Dispatch<'_>, path: String, data: Vec<u8>, create_dirs: bool) {
    let write = vfs::Write {
        path: path.clone(),
        data,
        create_dirs,
    };
    let ask = call(&d.session.deps.services.vfs, write, d.timeout());
    d.run(async move {
        let bytes = ask.await??;
        Ok(Written {
            target: path,
            bytes,
        })
    });
}

/// `VfsList`.
pub(super) fn list(d: Dispatch<'_>, path: String) {
    let ask = call(
        &d.session.deps.services.vfs,
        vfs::List { path },
        d.timeout(),
    );
    d.run(async move { Ok(ask.await??) });
}

/// `VfsStat`.
pub(super) fn stat(d: Dispatch<'_>, path: String) {
    let ask = call(
        &d.session.deps.services.vfs,
        vfs::Stat { path },
        d.timeout(),
    );
    d.run(async move { Ok(ask.await??) });
}

/// `VfsRemove`.
pub(super) fn remove(d: Dispatch<'_>, path: String, recursive: bool) {
    let remove = vfs::Remove {
        path: path.clone(),
        recursive,
    };
    let ask = call(&d.session.deps.services.vfs, remove, d.timeout());
    d.run(async move {
        ask.await??;
        Ok(Removed {
            target: path,
            removed: true,
        })
    });
}

/// `VfsMkdir`.
pub(super) fn mkdir(d: Dispatch<'_>, path: String, parents: bool) {
    let mkdir = vfs::Mkdir {
        path: path.clone(),
        parents,
    };
    let ask = call(&d.session.deps.services.vfs, mkdir, d.timeout());
    d.run(async move {
        ask.await??;
        Ok(Written {
            target: path,
            bytes: 0,
        })
    });
}
