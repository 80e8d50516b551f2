//! Helpers shared by the storage tests (`store`, `audit`, `caps`, `ledger`): redb database
//! files in temporary directories, opened over a backend whose writes can be made to fail at
//! will (a full disk); whole ledgers (the database and its two journal files, the journal
//! failing on the same full disk); crash images (the files as a restart would find them);
//! reopening afresh as after a restart; and a poll-with-deadline helper.
//!
//! Each test binary uses a different subset of these helpers.
pub(crate) mod kernel;
mod poll;

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use astrid_actors::db::Db;
use astrid_actors::ledger::journal::JournalFile;
use astrid_actors::ledger::{self, Ledger};
use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};

pub(crate) use self::poll::{DEADLINE, eventually, poll, poll_async};

/// The daemon session the ledgers of these tests write audit entries for, unless a test
/// names another.
pub(crate) const SESSION: &str = "session-1";

/// Fills and frees the simulated disk under a database opened with [`DbFile::open`] (and
/// the journal of a ledger opened with [`DbFile::open_ledger`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Disk {
    full: Arc<AtomicBool>,
}

impl Disk {
    /// From now on every write, resize and sync of the database (and of the journal) fails
    /// with `StorageFull`.
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

/// A journal file whose `write_all_at`, `sync_data` and `shrink_to` fail (before touching
/// the file) while its [`Disk`] is full. Reads and size queries always go through.
#[derive(Debug)]
struct FlakyJournal {
    file: File,
    disk: Disk,
}

impl JournalFile for FlakyJournal {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        self.file.read_all()
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.disk.check()?;
        JournalFile::write_all_at(&mut self.file, buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.disk.check()?;
        JournalFile::sync_data(&mut self.file)
    }

    fn read_prefix(&mut self, len: usize) -> io::Result<Vec<u8>> {
        self.file.read_prefix(len)
    }

    fn size(&mut self) -> io::Result<u64> {
        self.file.size()
    }

    fn shrink_to(&mut self, len: u64) -> io::Result<()> {
        self.disk.check()?;
        self.file.shrink_to(len)
    }
}

/// Opens (creating if needed) a journal file as the kernel does.
fn journal_file(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

/// How a database is made ready for its actor (`ledger::prepare`, `caps::prepare`, ...).
pub(crate) type Prepare = fn(&Database) -> Result<(), redb::Error>;

/// A database file in its own temporary directory (removed on drop), with the two journal
/// files of a ledger next to it (`test.journal.0`, `test.journal.1`, created when a ledger
/// is opened).
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

    /// Journal file `n` (0 or 1) of the ledger over this database.
    pub(crate) fn journal_path(&self, n: usize) -> PathBuf {
        self.path.with_extension(format!("journal.{n}"))
    }

    /// Opens a whole ledger over the file (see [`DbFile::open`]) and its two journal files,
    /// replaying what the journal holds, writing audit entries for `session`. The database
    /// and the journal fail while the returned disk is full (it starts with space).
    pub(crate) fn open_ledger(&self, session: &str) -> (Arc<Ledger>, Disk) {
        let (db, disk) = self.open(ledger::prepare);
        let journal = [0, 1].map(|n| -> Box<dyn JournalFile> {
            Box::new(FlakyJournal {
                file: journal_file(&self.journal_path(n)),
                disk: disk.clone(),
            })
        });
        (Arc::new(Ledger::open(db, journal, session).unwrap()), disk)
    }

    /// Opens a whole ledger over the file and its journal as the kernel does (plain files),
    /// replaying what the journal holds.
    pub(crate) fn open_ledger_plain(&self, session: &str) -> Arc<Ledger> {
        let db = self.open_plain(ledger::prepare);
        let journal = [0, 1]
            .map(|n| -> Box<dyn JournalFile> { Box::new(journal_file(&self.journal_path(n))) });
        Arc::new(Ledger::open(db, journal, session).unwrap())
    }

    /// Opens the file afresh in a plain `Database`, as the kernel does after a restart. The
    /// previous `Database` on it must be closed (see [`close`]). This sees only what is in
    /// the database file itself: for a ledger, what a checkpoint put there (reopen a ledger
    /// with [`DbFile::open_ledger`] to replay its journal too).
    pub(crate) fn reopen(&self) -> Database {
        Database::open(&self.path).unwrap()
    }

    /// A copy of the file and of its journal files as they are on disk right now, while
    /// they are still open: what a restart would find after the process was killed at this
    /// moment. Reopen it with [`DbFile::open_ledger`].
    ///
    /// The journal is copied first: whatever a checkpoint empties from it meanwhile is
    /// durable in the database before that, so the later copy of the database holds it.
    pub(crate) fn crash_image(&self) -> Self {
        let copy = Self::new();
        for n in [0, 1] {
            let journal = self.journal_path(n);
            if journal.exists() {
                std::fs::copy(&journal, copy.journal_path(n)).unwrap();
            }
        }
        std::fs::copy(&self.path, &copy.path).unwrap();
        copy
    }
}

/// Waits until every actor holding `shared` (a database or a ledger) has been dropped, then
/// drops it: a database is closed, a ledger stops its threads (releasing its database).
pub(crate) async fn close<T>(shared: Arc<T>) {
    let mut shared = Some(shared);
    let last = poll_async(DEADLINE, async || {
        let held = shared.take().expect("put back after each try");
        Arc::try_unwrap(held).map_err(|still| shared = Some(still))
    })
    .await;
    let last = last
        .unwrap_or_else(|()| panic!("timed out waiting for the actors to release the database"));
    drop(last);
}
