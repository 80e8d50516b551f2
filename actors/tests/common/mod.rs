//! Helpers shared by the storage actor tests (`store`, `audit`, `caps`): redb database files
//! in temporary directories, opened over a backend whose writes can be made to fail at will
//! (a full disk), reopened afresh as after a restart, and a poll-with-deadline helper.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use astrid_actors::db::Db;
use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};

/// Upper bound for any single wait; reached only when something is broken.
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);

/// Fills and frees the simulated disk under a database opened with [`DbFile::open`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Disk {
    full: Arc<AtomicBool>,
}

impl Disk {
    /// From now on every write, resize and sync of the database fails with `StorageFull`.
    pub(crate) fn fill(&self) {
        self.full.store(true, Ordering::SeqCst);
    }

    /// From now on the database's I/O succeeds again.
    pub(crate) fn free(&self) {
        self.full.store(false, Ordering::SeqCst);
    }

    fn check(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: no space left on device",
            ))
        } else {
            Ok(())
        }
    }
}

/// A file backend whose `write`, `set_len` and `sync_data` fail while its [`Disk`] is full.
/// Reads and locks always go through.
#[derive(Debug)]
struct FlakyBackend {
    inner: FileBackend,
    disk: Disk,
}

impl StorageBackend for FlakyBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.check()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.disk.check()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// How a database is made ready for its actor (`store::prepare`, `audit::prepare`, ...).
pub(crate) type Prepare = fn(&Database) -> Result<(), redb::Error>;

/// A database file in its own temporary directory (removed on drop).
#[derive(Debug)]
pub(crate) struct DbFile {
    _dir: tempfile::TempDir,
    /// The file.
    pub(crate) path: PathBuf,
}

impl DbFile {
    /// A fresh, not yet created, database file.
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.redb");
        Self { _dir: dir, path }
    }

    /// Creates (or opens) the database over a backend that fails while the returned disk is
    /// full, and prepares it with `prepare` (the disk starts with space). Reopening it (after
    /// a failed write) goes through the same flaky backend.
    pub(crate) fn open(&self, prepare: Prepare) -> (Arc<Db>, Disk) {
        let disk = Disk::default();
        let (path, flaky) = (self.path.clone(), disk.clone());
        let db = Db::open("test", move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            let backend = FlakyBackend {
                inner: FileBackend::new(file)?,
                disk: flaky.clone(),
            };
            let db = Database::builder().create_with_backend(backend)?;
            prepare(&db)?;
            Ok(db)
        })
        .unwrap();
        (db, disk)
    }

    /// Opens the file as the kernel does (a plain file backend), prepared with `prepare`.
    pub(crate) fn open_plain(&self, prepare: Prepare) -> Arc<Db> {
        let path = self.path.clone();
        Db::open("test", move || {
            let db = Database::create(&path)?;
            prepare(&db)?;
            Ok(db)
        })
        .unwrap()
    }

    /// Opens the file afresh in a plain `Database`, as the kernel does after a restart. The
    /// previous `Database` on it must be closed (see [`close`]).
    pub(crate) fn reopen(&self) -> Database {
        Database::open(&self.path).unwrap()
    }

    /// A copy of the file as it is on disk right now, while its `Database` is still open:
    /// what a restart would find after the process was killed at this moment.
    pub(crate) fn crash_image(&self) -> Self {
        let copy = Self::new();
        std::fs::copy(&self.path, &copy.path).unwrap();
        copy
    }
}

/// Waits until every actor holding `db` has been dropped, then closes it.
pub(crate) async fn close(db: Arc<Db>) {
    let deadline = Instant::now() + DEADLINE;
    let mut db = db;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => {
                drop(db);
                return;
            }
            Err(shared) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for the actors to release the database"
                );
                db = shared;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Polls `probe` until it yields a value.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
