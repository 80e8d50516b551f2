//! Tests of the blocking operations ([`Workspace`]) on real temporary directories: reads
//! and slices, atomic writes that leave no temporary file and keep the mode they replace,
//! symbolic links followed inside and refused as escapes out (also for a directory swapped
//! after resolution), capsules' stricter reads and writes (no link followed anywhere,
//! reserved paths, a directory swapped for a link in a loop), and a directory sync made to
//! fail through the seam.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::Path;

use cap_std::fs::Dir;

use super::{names, scratch};
use crate::vfs::messages::{EntryKind, VfsError};
use crate::vfs::ops::{SYNC_OP, VfsLimits, Workspace, fsync_dir, is_escape, replace, temp_name};
use crate::vfs::path::{self, MAX_PATH_LEN, Reserved, VfsPath};

/// A [`scratch`] directory and the [`Workspace`] over its `ws/`.
fn setup() -> (tempfile::TempDir, Workspace) {
    let tmp = scratch();
    let ws = Workspace::open(&tmp.path().join("ws"), VfsLimits::default()).unwrap();
    (tmp, ws)
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
    assert!(matches!(&err, VfsError::Io { path, .. } if *path == missing.display().to_string()));
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
    assert!(matches!(ws.read("nope", 0, None), Err(VfsError::NotFound { path }) if path == "nope"));
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
