//! The VFS's tests, all in one place: the blocking operations (`ops.rs`, which reaches the
//! module's private items) and the actor driven through its messages (`actor.rs`), over the
//! same scratch directory: a workspace `ws/` next to `outside/secret`, which no test may
//! ever change.

mod actor;
mod ops;

use std::fs;
use std::path::Path;

use super::{VfsActor, VfsLimits};

/// A temporary directory holding an empty workspace `ws/` next to a directory `outside/`
/// holding `secret` (content `secret`).
fn scratch() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("ws")).unwrap();
    fs::create_dir(tmp.path().join("outside")).unwrap();
    fs::write(tmp.path().join("outside/secret"), b"secret").unwrap();
    tmp
}

/// Sorted names in a directory, read with `std::fs`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn actor_is_send() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<VfsActor>();
}

#[test]
fn default_limits_are_16_mib() {
    let limits = VfsLimits::default();
    assert_eq!(limits.max_read, 16 * 1024 * 1024);
    assert_eq!(limits.max_write, 16 * 1024 * 1024);
}
