//! The ledger: the one durable write path of the key-value store and the audit log.
//!
//! Both live in one redb database (tables `kv` and `audit`) behind a write-ahead journal
//! (`journal.rs`). Committing a batch (key-value changes and the audit entries that go with
//! them) stages it in memory and returns at once (`staging.rs`); a syncer thread
//! (`syncer.rs`) writes everything staged to the journal with one `write` and one
//! `fdatasync`, then makes the batches visible and answers them. A put and its audit entry
//! are therefore durable together, in one small sequential write shared by every batch staged
//! meanwhile, and the actors that commit never wait for the disk. Durable batches go to an
//! in-memory overlay of pending changes (`overlay.rs`), which reads consult before the
//! database; readers never see a change before it is durable.
//!
//! A checkpointer thread (`checkpointer.rs`) moves the overlay into the database in one
//! durable redb transaction (every 16 MiB of journal, or a second after the journal took
//! its first change since the last checkpoint, and then every second while it holds
//! changes), so one transaction serves thousands of writes and a key written many times is
//! written once. It retires the active journal file first and empties it only once that
//! transaction is durable. Whenever the database is opened (at boot, or after a failure
//! discarded it), the journal is replayed into it (`replay.rs`); replay is idempotent (puts,
//! deletes, entries by sequence number), so nothing acknowledged is lost to a crash at any
//! moment.
//!
//! Neither thread wakes while the ledger is idle: the syncer waits until a batch is staged,
//! the checkpointer until the journal takes a change (the syncer wakes it then).
//!
//! The audit hash chain (`chain.rs`: entries, sealing, verification) lives here too, since
//! the ledger seals the entries it stages; the audit actor builds on it, never the reverse.
//!
//! If a journal write fails, every batch not yet durable fails (nothing of them is visible
//! or replayed) and the audit chain continues from the last durable entry.
//!
//! Locks: `journal` (the files) is taken before `inner` (everything else) whenever both are
//! held; committing takes `inner` only (`state.rs`).

pub mod chain;
mod checkpointer;
pub mod faults;
pub mod journal;
mod overlay;
mod replay;
pub mod retention;
mod staging;
mod state;
mod syncer;

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, TableDefinition};

use self::chain::Record;
use self::faults::{Faulty, StorageFaults};
use self::journal::{Journal, JournalFile};
use self::retention::{Pruned, Retention};
use self::state::Shared;
use crate::db::Db;

/// Physical key (namespace, NUL, key) → value.
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// Sequence number → audit entry (MessagePack, fields by name).
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Creates the tables if the database is new.
///
/// # Errors
///
/// When the database cannot be written.
pub fn prepare(db: &Database) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    tx.open_table(KV)?;
    tx.open_table(AUDIT)?;
    tx.open_table(retention::AUDIT_META)?;
    tx.commit()?;
    Ok(())
}

/// Why the ledger could not commit or read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed.
    #[error("database error")]
    Database(#[from] redb::Error),
    /// The journal could not be written, synced, read or emptied.
    #[error("journal {op} failed")]
    Journal {
        /// What was being done.
        op: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A read on the blocking pool did not finish (its thread panicked, or the runtime is
    /// stopping).
    #[error("the read was interrupted")]
    Interrupted,
}

impl LedgerError {
    fn journal(op: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Journal { op, source }
    }
}

/// One key-value change of a batch (keys are physical: namespace, NUL, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvChange {
    /// Write `value` under `key`.
    Put {
        /// Physical key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Physical key.
        key: Vec<u8>,
    },
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// For each change: whether it removed a key (always false for a put).
    pub removed: Vec<bool>,
    /// For each record: its sequence number in the audit log.
    pub seqs: Vec<u64>,
}

/// The outcome of a commit, shared by the batches a failed journal write takes down.
pub type CommitResult = Result<Committed, Arc<LedgerError>>;

/// Called with the outcome of a commit, on the syncer thread.
pub type OnCommit = Box<dyn FnOnce(CommitResult) + Send>;

/// The ledger (see the module docs). Dropping it writes what is staged and stops its
/// threads; call [`Ledger::checkpoint`] first to leave the journal empty.
pub struct Ledger {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("db", &self.shared.db)
            .field("session", &self.shared.session)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// The syncer's counters: journal syncs and the batches each carried.
    pub fn metrics(&self) -> Arc<crate::metrics::LedgerMetrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// Opens the ledger over `db` (opened with [`prepare`]) and its two journal files,
    /// replaying whatever the journal holds, and starts its syncer and checkpointer threads.
    /// Audit entries are written for daemon session `session`.
    ///
    /// # Errors
    ///
    /// When the database or the journal cannot be read, the replay cannot be committed, or
    /// a thread cannot be started.
    pub fn open(
        db: Arc<Db>,
        journal: [Box<dyn JournalFile>; 2],
        session: impl Into<String>,
    ) -> Result<Self, LedgerError> {
        Self::open_with(db, journal, session, Retention::default())
    }

    /// [`Ledger::open`] with the audit log kept within `retention` (applied at every
    /// checkpoint; see [`Ledger::prune`]).
    ///
    /// # Errors
    ///
    /// As [`Ledger::open`].
    pub fn open_with(
        db: Arc<Db>,
        journal: [Box<dyn JournalFile>; 2],
        session: impl Into<String>,
        retention: Retention,
    ) -> Result<Self, LedgerError> {
        let faults = Arc::new(StorageFaults::default());
        let [first, second] =
            journal.map(|file| Box::new(Faulty::wrap(file, &faults)) as Box<dyn JournalFile>);
        let (mut journal, payloads) =
            Journal::open(first, second).map_err(LedgerError::journal("read"))?;
        let handle = db.handle()?;
        if !payloads.is_empty() {
            let ops = replay::replay(&handle, &payloads)?;
            tracing::info!(ops, "journal replayed into the database");
        }
        journal.reset().map_err(LedgerError::journal("reset"))?;
        let head = replay::load_head(&handle)?;
        drop(handle);
        let mut ledger = Self {
            shared: Arc::new(Shared::new(
                db,
                session.into(),
                retention,
                journal,
                head,
                faults,
            )),
            threads: Vec::new(),
        };
        for (name, run) in [
            ("ledger-sync", Shared::run_syncer as fn(&Shared)),
            ("ledger-checkpoint", Shared::run_checkpointer),
        ] {
            let shared = Arc::clone(&ledger.shared);
            let thread = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || run(&shared))
                .map_err(LedgerError::journal("start a thread"))?;
            ledger.threads.push(thread);
        }
        Ok(ledger)
    }

    /// The storage faults armed on it (fault injection).
    pub fn faults(&self) -> &StorageFaults {
        &self.shared.faults
    }

    /// Runs `read` on the database with every durable change in it.
    ///
    /// # Errors
    ///
    /// When the database cannot be opened or brought up to date, or `read` fails.
    pub fn read<T>(
        &self,
        read: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, LedgerError> {
        let db = {
            let (_journal, mut inner) = self.shared.ready();
            self.shared.applied(&mut inner)?
        };
        Ok(read(&db)?)
    }

    /// [`Ledger::read`] on the blocking pool, for callers on an event loop: it may wait for
    /// the disk, or for a checkpoint to finish.
    ///
    /// # Errors
    ///
    /// As [`Ledger::read`], or [`LedgerError::Interrupted`].
    pub async fn read_blocking<T, F>(self: &Arc<Self>, read: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    {
        let ledger = Arc::clone(self);
        tokio::task::spawn_blocking(move || ledger.read(read))
            .await
            .unwrap_or(Err(LedgerError::Interrupted))
    }

    /// The durable value of physical key `key`.
    ///
    /// # Errors
    ///
    /// When the database cannot be opened or read.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LedgerError> {
        self.shared.get(key)
    }

    /// Stages a batch: `changes` to the key-value table and `records` for the audit log.
    /// `done` is called once the batch is durable (and visible), or has failed; nothing of a
    /// failed batch is written.
    pub fn commit_then(&self, changes: Vec<KvChange>, records: &[Record], done: OnCommit) {
        if let Err(e) = self.shared.stage(changes, records, done) {
            let (e, done) = *e;
            done(Err(Arc::new(e)));
        }
    }

    /// Commits a batch and waits until it is durable (see [`Ledger::commit_then`]).
    ///
    /// # Errors
    ///
    /// When the journal cannot be written or the database cannot be read.
    pub fn commit(&self, changes: Vec<KvChange>, records: &[Record]) -> CommitResult {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.commit_then(
            changes,
            records,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or_else(|_| {
            Err(Arc::new(LedgerError::journal("write")(
                std::io::Error::other("the ledger stopped"),
            )))
        })
    }

    /// Makes everything durable in the database itself and empties the journal.
    ///
    /// # Errors
    ///
    /// When the durable commit or emptying the journal fails (the journal then still holds
    /// everything).
    pub fn checkpoint(&self) -> Result<(), LedgerError> {
        self.shared.checkpoint_now()
    }

    /// Applies the audit log's retention now, in one durable transaction (after every
    /// durable change is in the database).
    ///
    /// # Errors
    ///
    /// When the database cannot be brought up to date or written.
    pub fn prune(&self) -> Result<Pruned, LedgerError> {
        let (_journal, mut inner) = self.shared.ready();
        let db = self.shared.applied(&mut inner)?;
        let tx = db.begin_write().map_err(redb::Error::from)?;
        let (retention, session) = self.shared.retention();
        let pruned = retention::prune(&tx, retention, crate::clock::unix_millis(), session)?;
        tx.commit().map_err(redb::Error::from)?;
        Ok(pruned)
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.shared.close();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
