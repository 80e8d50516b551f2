//! Actor-level tests of the workspace VFS, driven through its messages against real
//! temporary directories: every operation changes the real disk (writes are atomic and
//! leave no temporary file), every bad path is refused with the right error, symbolic links
//! that lead out of the workspace (including a directory swapped for one after a write)
//! are refused as escapes without touching their target, and links that stay inside work.
//! Also: the actor runs on its own arbiter and obeys the supervision messages.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use actix::{Actor, Addr, Arbiter, MailboxError};

use super::{names, scratch};
use crate::supervisor::{Fault, Inject, Terminate};
use crate::vfs::path::{ABSOLUTE, EMPTY, MAX_PATH_LEN, NUL, PARENT, ROOT, TOO_LONG};
use crate::vfs::{
    DirEntry, EntryKind, FileStat, List, Mkdir, Read, ReadResult, Remove, Stat, VfsActor, VfsError,
    VfsLimits, Write,
};

/// A workspace `ws/` next to a directory `outside/` holding `secret` (content `secret`).
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    vfs: Addr<VfsActor>,
}

fn fixture_with(limits: VfsLimits) -> Fixture {
    let tmp = scratch();
    let root = tmp.path().join("ws");
    let outside = tmp.path().join("outside");
    let vfs = VfsActor::new(&root, limits).unwrap().start();
    Fixture {
        _tmp: tmp,
        root,
        outside,
        vfs,
    }
}

fn fixture() -> Fixture {
    fixture_with(VfsLimits::default())
}

impl Fixture {
    async fn read(&self, path: &str) -> Result<ReadResult, VfsError> {
        self.read_at(path, 0, None).await
    }

    async fn read_at(
        &self,
        path: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<ReadResult, VfsError> {
        self.vfs
            .send(Read {
                path: path.into(),
                offset,
                len,
            })
            .await
            .unwrap()
    }

    async fn write(&self, path: &str, data: &[u8], create_dirs: bool) -> Result<u64, VfsError> {
        self.vfs
            .send(Write {
                path: path.into(),
                data: data.to_vec(),
                create_dirs,
            })
            .await
            .unwrap()
    }

    async fn list(&self, path: &str) -> Result<Vec<DirEntry>, VfsError> {
        self.vfs.send(List { path: path.into() }).await.unwrap()
    }

    async fn stat(&self, path: &str) -> Result<FileStat, VfsError> {
        self.vfs.send(Stat { path: path.into() }).await.unwrap()
    }

    async fn remove(&self, path: &str, recursive: bool) -> Result<(), VfsError> {
        self.vfs
            .send(Remove {
                path: path.into(),
                recursive,
            })
            .await
            .unwrap()
    }

    async fn mkdir(&self, path: &str, parents: bool) -> Result<(), VfsError> {
        self.vfs
            .send(Mkdir {
                path: path.into(),
                parents,
            })
            .await
            .unwrap()
    }

    /// The outside directory still holds exactly `secret`, unchanged.
    fn assert_outside_untouched(&self) {
        assert_eq!(names(&self.outside), ["secret"]);
        assert_eq!(fs::read(self.outside.join("secret")).unwrap(), b"secret");
    }
}

#[track_caller]
fn assert_escape<T: std::fmt::Debug>(result: Result<T, VfsError>, expected: &str) {
    match result {
        Err(VfsError::Escape { path }) => assert_eq!(path, expected),
        other => panic!("{expected}: expected an escape, got {other:?}"),
    }
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, VfsError>, reason: &str) {
    match result {
        Err(VfsError::InvalidPath { reason: got, .. }) => assert_eq!(got, reason),
        other => panic!("expected invalid path ({reason}), got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, VfsError>, expected: &str) {
    match result {
        Err(VfsError::NotFound { path }) => assert_eq!(path, expected),
        other => panic!("{expected}: expected not found, got {other:?}"),
    }
}

#[track_caller]
fn assert_io_kind<T: std::fmt::Debug>(result: Result<T, VfsError>, kind: std::io::ErrorKind) {
    match result {
        Err(VfsError::Io { source, .. }) => assert_eq!(source.kind(), kind),
        other => panic!("expected an I/O error of kind {kind:?}, got {other:?}"),
    }
}

#[actix_rt::test]
async fn every_operation_works_on_the_real_disk() {
    let f = fixture();
    f.mkdir("src", false).await.unwrap();
    assert!(f.root.join("src").is_dir());
    f.mkdir("deep/er/still", true).await.unwrap();
    assert!(f.root.join("deep/er/still").is_dir());

    assert_eq!(
        f.write("src/main.rs", b"fn main() {}", false)
            .await
            .unwrap(),
        12
    );
    assert_eq!(
        fs::read(f.root.join("src/main.rs")).unwrap(),
        b"fn main() {}"
    );
    assert_eq!(f.write("./new//dir/f.txt", b"abc", true).await.unwrap(), 3);
    assert_eq!(fs::read(f.root.join("new/dir/f.txt")).unwrap(), b"abc");

    let read = f.read("src/main.rs").await.unwrap();
    assert_eq!(read.data, b"fn main() {}");
    assert_eq!(read.size, 12);
    let part = f.read_at("src/main.rs", 3, Some(4)).await.unwrap();
    assert_eq!(part.data, b"main");
    assert_eq!(part.size, 12);

    let list = f.list(".").await.unwrap();
    let listed: Vec<(&str, EntryKind)> = list.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        listed,
        [
            ("deep", EntryKind::Dir),
            ("new", EntryKind::Dir),
            ("src", EntryKind::Dir)
        ]
    );
    assert_eq!(
        f.list("src").await.unwrap(),
        [DirEntry {
            name: "main.rs".into(),
            kind: EntryKind::File,
            size: 12
        }]
    );

    let stat = f.stat("src/main.rs").await.unwrap();
    assert_eq!(stat.kind, EntryKind::File);
    assert_eq!(stat.size, 12);
    assert!(stat.modified_ms.is_some());
    assert_eq!(f.stat(".").await.unwrap().kind, EntryKind::Dir);

    f.remove("src/main.rs", false).await.unwrap();
    assert!(!f.root.join("src/main.rs").exists());
    f.remove("src", false).await.unwrap();
    f.remove("deep", true).await.unwrap();
    f.remove("new", true).await.unwrap();
    assert!(names(&f.root).is_empty(), "no temporary file left anywhere");
}

#[actix_rt::test]
async fn a_write_replaces_the_old_content_atomically() {
    let f = fixture();
    let path = f.root.join("notes.md");
    fs::write(&path, b"old content, longer than the new one").unwrap();
    // A reader that opened the file before the write keeps seeing the old file whole:
    // the write replaced it by rename, it did not truncate and rewrite it in place.
    let mut before = fs::File::open(&path).unwrap();
    f.write("notes.md", b"new", false).await.unwrap();
    let mut old = String::new();
    before.read_to_string(&mut old).unwrap();
    assert_eq!(old, "old content, longer than the new one");
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(names(&f.root), ["notes.md"], "no temporary file left");
    f.write("notes.md", b"newer", false).await.unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"newer");
    assert_eq!(names(&f.root), ["notes.md"]);
}

#[actix_rt::test]
async fn bad_paths_are_refused_by_every_operation() {
    let f = fixture();
    fs::write(f.root.join("x"), b"keep").unwrap();
    let long = "a/".repeat(MAX_PATH_LEN / 2 + 1);
    let cases = [
        ("", EMPTY),
        ("/etc/passwd", ABSOLUTE),
        ("/", ABSOLUTE),
        ("..", PARENT),
        ("../outside/secret", PARENT),
        ("a/../../x", PARENT),
        ("a/../x", PARENT),
        ("a\0b", NUL),
        (long.as_str(), TOO_LONG),
    ];
    for (path, reason) in cases {
        assert_invalid(f.read(path).await, reason);
        assert_invalid(f.write(path, b"x", true).await, reason);
        assert_invalid(f.list(path).await, reason);
        assert_invalid(f.stat(path).await, reason);
        assert_invalid(f.remove(path, true).await, reason);
        assert_invalid(f.mkdir(path, true).await, reason);
    }
    // The root is fine for list, stat and `mkdir -p`, not for the rest.
    assert_invalid(f.read(".").await, ROOT);
    assert_invalid(f.write(".", b"x", false).await, ROOT);
    assert_invalid(f.remove("./", true).await, ROOT);
    assert_invalid(f.mkdir(".", false).await, ROOT);
    f.mkdir(".", true).await.unwrap();
    assert_eq!(names(&f.root), ["x"]);
    assert_eq!(fs::read(f.root.join("x")).unwrap(), b"keep");
    f.assert_outside_untouched();
}

#[actix_rt::test]
async fn a_file_symlink_pointing_outside_is_an_escape() {
    let f = fixture();
    symlink(f.outside.join("secret"), f.root.join("abs")).unwrap();
    symlink("../outside/secret", f.root.join("rel")).unwrap();
    for link in ["abs", "rel"] {
        assert_escape(f.read(link).await, link);
        assert_escape(f.write(link, b"pwned", false).await, link);
        assert_escape(f.write(link, b"pwned", true).await, link);
        assert_escape(f.stat(link).await, link);
        assert_escape(f.list(link).await, link);
        // Paths through the link go nowhere either.
        let through = format!("{link}/x");
        assert!(f.read(&through).await.is_err());
        assert!(f.remove(&through, true).await.is_err());
    }
    // A dangling link out would create a file outside: refused too.
    symlink("../outside/planted", f.root.join("dangling")).unwrap();
    assert_escape(f.write("dangling", b"pwned", false).await, "dangling");
    f.assert_outside_untouched();

    // Listing shows the links as links, and removing one removes the link only.
    let kinds: Vec<EntryKind> = f.list(".").await.unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EntryKind::Symlink; 3]);
    f.remove("abs", false).await.unwrap();
    f.remove("rel", true).await.unwrap();
    assert_eq!(names(&f.root), ["dangling"]);
    f.assert_outside_untouched();
}

#[actix_rt::test]
async fn a_directory_symlink_pointing_outside_is_an_escape() {
    let f = fixture();
    symlink(&f.outside, f.root.join("out")).unwrap();
    symlink("../outside", f.root.join("rel")).unwrap();
    for link in ["out", "rel"] {
        let secret = format!("{link}/secret");
        let planted = format!("{link}/planted");
        assert_escape(f.read(&secret).await, &secret);
        assert_escape(f.write(&secret, b"pwned", false).await, &secret);
        assert_escape(f.write(&planted, b"pwned", false).await, &planted);
        assert_escape(f.write(&planted, b"pwned", true).await, &planted);
        let nested = format!("{link}/sub/planted");
        assert_escape(f.write(&nested, b"pwned", true).await, &nested);
        assert_escape(f.list(link).await, link);
        assert_escape(f.list(&format!("{link}/")).await, &format!("{link}/"));
        assert_escape(f.stat(link).await, link);
        assert_escape(f.stat(&secret).await, &secret);
        assert_escape(f.remove(&secret, false).await, &secret);
        assert_escape(f.remove(&secret, true).await, &secret);
        assert_escape(f.mkdir(link, true).await, link);
        let made = format!("{link}/made");
        assert_escape(f.mkdir(&made, false).await, &made);
        assert_escape(f.mkdir(&made, true).await, &made);
    }
    f.assert_outside_untouched();

    // A recursive remove of a directory holding such a link removes the link, not what
    // it points to.
    fs::create_dir(f.root.join("d")).unwrap();
    symlink(&f.outside, f.root.join("d/out")).unwrap();
    f.remove("d", true).await.unwrap();
    assert!(!f.root.join("d").exists());
    f.assert_outside_untouched();
}

#[actix_rt::test]
async fn a_directory_swapped_for_a_symlink_after_a_write_is_an_escape() {
    let f = fixture();
    f.write("sub/secret", b"inside", true).await.unwrap();
    assert_eq!(f.read("sub/secret").await.unwrap().data, b"inside");
    // Someone replaces the directory with a link to the outside directory.
    fs::rename(f.root.join("sub"), f.root.join("moved")).unwrap();
    symlink(&f.outside, f.root.join("sub")).unwrap();
    assert_escape(f.write("sub/secret", b"pwned", false).await, "sub/secret");
    assert_escape(f.write("sub/secret", b"pwned", true).await, "sub/secret");
    assert_escape(f.read("sub/secret").await, "sub/secret");
    assert_escape(f.list("sub").await, "sub");
    assert_escape(f.stat("sub/secret").await, "sub/secret");
    assert_escape(f.remove("sub/secret", false).await, "sub/secret");
    f.assert_outside_untouched();
    assert_eq!(fs::read(f.root.join("moved/secret")).unwrap(), b"inside");
}

#[actix_rt::test]
async fn symlinks_that_stay_inside_work() {
    let f = fixture();
    fs::create_dir_all(f.root.join("real/dir")).unwrap();
    fs::write(f.root.join("real/dir/file"), b"one").unwrap();
    symlink("real/dir", f.root.join("dirlink")).unwrap();
    symlink("../real/dir/file", f.root.join("real/filelink")).unwrap();

    assert_eq!(f.read("dirlink/file").await.unwrap().data, b"one");
    assert_eq!(f.read("real/filelink").await.unwrap().data, b"one");
    assert_eq!(f.stat("dirlink").await.unwrap().kind, EntryKind::Dir);
    assert_eq!(f.stat("real/filelink").await.unwrap().kind, EntryKind::File);
    assert_eq!(f.list("dirlink").await.unwrap()[0].name, "file");

    // Writing through a directory link writes inside the real directory.
    f.write("dirlink/new", b"two", false).await.unwrap();
    assert_eq!(fs::read(f.root.join("real/dir/new")).unwrap(), b"two");
    // Writing through a file link replaces the target; the link stays a link.
    f.write("real/filelink", b"three", false).await.unwrap();
    assert_eq!(fs::read(f.root.join("real/dir/file")).unwrap(), b"three");
    assert!(
        fs::symlink_metadata(f.root.join("real/filelink"))
            .unwrap()
            .is_symlink()
    );
    f.mkdir("dirlink/made", false).await.unwrap();
    assert!(f.root.join("real/dir/made").is_dir());
    f.remove("dirlink/new", false).await.unwrap();
    assert!(!f.root.join("real/dir/new").exists());
    assert_eq!(names(&f.root.join("real/dir")), ["file", "made"]);
}

#[actix_rt::test]
async fn sizes_over_the_limits_are_refused_before_any_io() {
    let f = fixture_with(VfsLimits {
        max_read: 8,
        max_write: 8,
    });
    fs::write(f.root.join("big"), [1u8; 20]).unwrap();
    match f.read("big").await {
        Err(VfsError::TooLarge { len: 20, max: 8 }) => {}
        other => panic!("{other:?}"),
    }
    match f.read_at("big", 2, Some(9)).await {
        Err(VfsError::TooLarge { len: 9, max: 8 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(f.read_at("big", 12, None).await.unwrap().data, [1u8; 8]);
    match f.write("new/f", &[0; 9], true).await {
        Err(VfsError::TooLarge { len: 9, max: 8 }) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        !f.root.join("new").exists(),
        "refused before creating anything"
    );
    assert_eq!(f.write("new/f", &[0; 8], true).await.unwrap(), 8);
}

#[actix_rt::test]
async fn missing_paths_are_not_found() {
    let f = fixture();
    assert_not_found(f.read("nope").await, "nope");
    assert_not_found(f.stat("nope").await, "nope");
    assert_not_found(f.list("nope").await, "nope");
    assert_not_found(f.remove("nope", true).await, "nope");
    assert_not_found(f.write("no/dir/f", b"x", false).await, "no/dir/f");
    assert_not_found(f.mkdir("no/dir", false).await, "no/dir");
    let err = f.read("nope").await.unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[actix_rt::test]
async fn writing_onto_a_directory_is_refused() {
    let f = fixture();
    fs::create_dir_all(f.root.join("d/inner")).unwrap();
    assert_io_kind(
        f.write("d", b"x", false).await,
        std::io::ErrorKind::IsADirectory,
    );
    assert_io_kind(
        f.write("d/inner/", b"x", true).await,
        std::io::ErrorKind::IsADirectory,
    );
    symlink("d", f.root.join("dlink")).unwrap();
    assert_io_kind(
        f.write("dlink", b"x", false).await,
        std::io::ErrorKind::IsADirectory,
    );
    assert!(f.root.join("d/inner").is_dir());
    assert_eq!(names(&f.root.join("d")), ["inner"]);
    assert_io_kind(f.read("d").await, std::io::ErrorKind::IsADirectory);
    let err = f.write("d", b"x", false).await.unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
}

#[actix_rt::test]
async fn runs_on_its_own_arbiter_and_obeys_supervision() {
    let tmp = tempfile::tempdir().unwrap();
    let actor = VfsActor::new(tmp.path(), VfsLimits::default()).unwrap();
    let arbiter = Arbiter::new();
    let vfs = VfsActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
    vfs.send(Write {
        path: "f".into(),
        data: b"x".to_vec(),
        create_dirs: false,
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(fs::read(tmp.path().join("f")).unwrap(), b"x");
    vfs.send(Terminate).await.unwrap();
    let after = vfs.send(Stat { path: "f".into() }).await;
    assert!(matches!(after, Err(MailboxError::Closed)), "{after:?}");

    let vfs = VfsActor::new(tmp.path(), VfsLimits::default())
        .unwrap()
        .start();
    vfs.send(Inject(Fault::Stop)).await.unwrap();
    let after = vfs.send(Stat { path: "f".into() }).await;
    assert!(matches!(after, Err(MailboxError::Closed)), "{after:?}");
    arbiter.stop();
}

#[test]
fn new_names_a_root_it_cannot_open() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, b"").unwrap();
    for root in [tmp.path().join("missing"), file] {
        let err = VfsActor::new(&root, VfsLimits::default()).unwrap_err();
        assert!(
            err.to_string().contains(&root.display().to_string()),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
