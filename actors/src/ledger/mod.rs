//! The ledger: the one durable write path of the key-value store and the audit log.
//!
//! Both live in one redb database (tables `kv` and `audit`) behind a write-ahead journal
//! (`journal.rs`). Committing a batch (key-value changes and the audit entries that go with
//! them) stages it in memory and returns at once; a syncer thread writes everything staged
//! to the journal with one `write` and one `fdatasync`, then makes the batches visible and
//! answers them. A put and its audit entry are therefore durable together, in one small
//! sequential write shared by every batch staged meanwhile, and the actors that commit never
//! wait for the disk. Durable batches go to an in-memory overlay of pending changes, which
//! reads consult before the database; readers never see a change before it is durable.
//!
//! A checkpointer thread moves the overlay into the database in one durable redb
//! transaction (every 16 MiB of journal, or every second while anything is pending), so one
//! transaction serves thousands of writes and a key written many times is written once. It
//! retires the active journal file first and empties it only once that transaction is
//! durable. Whenever the database is opened (at boot, or after a failure discarded it), the
//! journal is replayed into it; replay is idempotent (puts, deletes, entries by sequence
//! number), so nothing acknowledged is lost to a crash at any moment.
//!
//! If a journal write fails, every batch not yet durable fails (nothing of them is visible
//! or replayed) and the audit chain continues from the last durable entry.
//!
//! Locks: `journal` (the files) is taken before `inner` (everything else) whenever both are
//! held; committing takes `inner` only.

pub mod journal;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use self::journal::{Frames, Journal, JournalFile, Op};
use crate::audit::chain::{Entry, GENESIS};
use crate::audit::{Record, seal_record};
use crate::bus::unix_millis;
use crate::db::Db;

/// Physical key (namespace, NUL, key) → value.
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// Sequence number → audit entry (MessagePack, fields by name).
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Journal bytes that make the checkpointer run at once.
const CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;
/// How often the checkpointer runs while anything is pending.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Creates the tables if the database is new.
///
/// # Errors
///
/// When the database cannot be written.
pub fn prepare(db: &Database) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    tx.open_table(KV)?;
    tx.open_table(AUDIT)?;
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

/// Where the next audit entry goes.
#[derive(Debug, Clone)]
struct Head {
    next_seq: u64,
    last_hash: String,
}

/// Changes durable in the journal but not yet in the database.
#[derive(Debug, Default)]
struct Pending {
    /// Physical key → new value, or `None` for a removal.
    kv: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Sequence number and encoded entry.
    audit: Vec<(u64, Vec<u8>)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.kv.is_empty() && self.audit.is_empty()
    }

    /// What this overlay says about `key`: `Some(&None)` if it removes it.
    fn get(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.kv.get(key)
    }
}

/// A batch staged, not yet durable.
struct Staged {
    /// The chain head before its entries (to roll back to if its write fails).
    head_before: Head,
    changes: Vec<KvChange>,
    entries: Vec<(u64, Vec<u8>)>,
    removed: Vec<bool>,
    done: OnCommit,
}

struct Inner {
    head: Head,
    /// Frames of the staged batches not yet handed to the syncer.
    frames: Frames,
    /// Every batch not yet durable, oldest first: those in the syncer's current write, then
    /// those whose frames wait in `frames`.
    staged: VecDeque<Staged>,
    /// Durable changes not yet handed to the database.
    pending: Pending,
    /// Changes the checkpointer is writing to the database right now.
    applying: Option<Arc<Pending>>,
    /// The database was discarded after a failure and lacks journaled commits: replay before
    /// using it.
    stale: bool,
    /// The journal holds frames the database does not hold durably (a checkpoint is due even
    /// when nothing is pending, e.g. after a reader applied the pending changes).
    journaled: bool,
    threads: Threads,
}

/// What the ledger tells its threads, and they tell it.
#[derive(Debug, Default)]
struct Threads {
    /// A checkpoint is wanted now (the journal grew past [`CHECKPOINT_BYTES`]).
    wanted: bool,
    /// The ledger is being dropped: the threads stop (the syncer once nothing is staged).
    closing: bool,
    /// The syncer is waiting for frames (so staging must wake it).
    syncer_idle: bool,
}

/// What the ledger's threads share.
struct Shared {
    db: Arc<Db>,
    session: String,
    journal: Mutex<Journal>,
    inner: Mutex<Inner>,
    /// Wakes the syncer.
    staged: Condvar,
    /// Wakes the checkpointer.
    wake: Condvar,
    /// Signalled when `applying` is emptied.
    settled: Condvar,
}

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
        let [first, second] = journal;
        let (mut journal, payloads) =
            Journal::open(first, second).map_err(LedgerError::journal("read"))?;
        let handle = db.handle()?;
        if !payloads.is_empty() {
            let ops = replay(&handle, &payloads)?;
            tracing::info!(ops, "journal replayed into the database");
        }
        journal.reset().map_err(LedgerError::journal("reset"))?;
        let head = load_head(&handle)?;
        drop(handle);
        let shared = Arc::new(Shared {
            db,
            session: session.into(),
            journal: Mutex::new(journal),
            inner: Mutex::new(Inner {
                head,
                frames: Frames::default(),
                staged: VecDeque::new(),
                pending: Pending::default(),
                applying: None,
                stale: false,
                journaled: false,
                threads: Threads::default(),
            }),
            staged: Condvar::new(),
            wake: Condvar::new(),
            settled: Condvar::new(),
        });
        let mut ledger = Self {
            shared,
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
        let db = {
            let inner = self.shared.lock();
            if let Some(value) = inner.overlay(key) {
                return Ok(value.clone());
            }
            if inner.stale {
                drop(inner);
                let (_journal, mut inner) = self.shared.ready();
                self.shared.current(&mut inner)?
            } else {
                self.shared.db.handle()?
            }
        };
        Ok(stored(&db, key)?)
    }

    /// Stages a batch: `changes` to the key-value table and `records` for the audit log.
    /// `done` is called once the batch is durable (and visible), or has failed; nothing of a
    /// failed batch is written.
    pub fn commit_then(&self, changes: Vec<KvChange>, records: &[Record], done: OnCommit) {
        if let Err(e) = self.stage(changes, records, done) {
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

    fn stage(
        &self,
        changes: Vec<KvChange>,
        records: &[Record],
        done: OnCommit,
    ) -> Result<(), Box<(LedgerError, OnCommit)>> {
        let shared = &*self.shared;
        let mut inner = shared.lock();
        if inner.stale {
            drop(inner);
            inner = shared.ready().1;
        }
        let inner = &mut *inner;
        let fail = |e: LedgerError, done| Box::new((e, done));
        let removed = match shared.removals(inner, &changes) {
            Ok(removed) => removed,
            Err(e) => return Err(fail(e, done)),
        };
        let time_ms = unix_millis();
        let frames = &mut inner.frames;
        frames.begin();
        for change in &changes {
            frames.push(match change {
                KvChange::Put { key, value } => Op::Put { key, value },
                KvChange::Delete { key } => Op::Delete { key },
            });
        }
        let head_before = inner.head.clone();
        let mut head = head_before.clone();
        let mut entries = Vec::with_capacity(records.len());
        for record in records {
            let seq = head.next_seq;
            let (bytes, hash) = seal_record(seq, time_ms, &shared.session, record, &head.last_hash);
            frames.push(Op::Audit { seq, entry: &bytes });
            entries.push((seq, bytes));
            head.next_seq += 1;
            head.last_hash = hash;
        }
        frames.finish();
        inner.head = head;
        inner.staged.push_back(Staged {
            head_before,
            changes,
            entries,
            removed,
            done,
        });
        if inner.threads.syncer_idle {
            shared.staged.notify_one();
        }
        Ok(())
    }

    /// Makes everything durable in the database itself and empties the journal.
    ///
    /// # Errors
    ///
    /// When the durable commit or emptying the journal fails (the journal then still holds
    /// everything).
    pub fn checkpoint(&self) -> Result<(), LedgerError> {
        let shared = &*self.shared;
        let (mut journal, mut inner) = shared.ready();
        // Batches still staged are written by the syncer, which needs the journal: wait for
        // it to finish them first.
        while !inner.staged.is_empty() {
            drop(inner);
            drop(journal);
            std::thread::yield_now();
            (journal, inner) = shared.ready();
        }
        if journal.is_empty() {
            return Ok(());
        }
        let db = shared.applied(&mut inner)?;
        if let Err(e) = durable_commit(&db) {
            drop(db);
            shared.lose_database(&mut inner);
            return Err(e.into());
        }
        journal.reset().map_err(LedgerError::journal("reset"))?;
        inner.journaled = false;
        Ok(())
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.shared.lock().threads.closing = true;
        self.shared.staged.notify_all();
        self.shared.wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Inner {
    /// What the durable changes not yet in the database say about `key` (`Some(&None)`:
    /// removed), if anything.
    fn overlay(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.pending
            .get(key)
            .or_else(|| self.applying.as_ref().and_then(|a| a.get(key)))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Both locks, once the checkpointer is not writing to the database, and with the
    /// database caught up with the journal if it had been discarded.
    fn ready(&self) -> (MutexGuard<'_, Journal>, MutexGuard<'_, Inner>) {
        let mut journal = self.lock_journal();
        let mut inner = self.lock();
        while inner.applying.is_some() {
            // The checkpointer takes `inner` alone to finish; it never waits for `journal`
            // while it holds `applying`.
            inner = self
                .settled
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if inner.stale
            && let Err(e) = self.recover(&mut journal, &mut inner)
        {
            tracing::warn!("the database cannot be caught up with the journal yet: {e}");
        }
        (journal, inner)
    }

    /// Reopens the database and replays the journal into it.
    fn recover(&self, journal: &mut Journal, inner: &mut Inner) -> Result<(), LedgerError> {
        let db = self.db.handle()?;
        let caught_up = journal
            .read()
            .map_err(LedgerError::journal("read"))
            .and_then(|payloads| Ok(replay(&db, &payloads)?))
            .and_then(|_| Ok(load_head(&db)?));
        match caught_up {
            Ok(head) => {
                // The replay was durable: everything journaled is in the database now, and
                // the head is where the durable entries end (staged batches are rebased on
                // it when they are written; see `publish`).
                if inner.staged.is_empty() {
                    inner.head = head;
                }
                inner.pending = Pending::default();
                inner.stale = false;
                match journal.reset() {
                    Ok(()) => inner.journaled = false,
                    Err(e) => tracing::warn!("cannot empty the journal after a replay: {e}"),
                }
                tracing::info!("database caught up with the journal after reopening");
                Ok(())
            }
            Err(e) => {
                drop(db);
                self.db.discard();
                Err(e)
            }
        }
    }

    fn lose_database(&self, inner: &mut Inner) {
        self.db.discard();
        inner.stale = true;
    }

    /// The open database; an error while it is stale (callers recover first).
    fn current(&self, inner: &mut Inner) -> Result<Arc<Database>, LedgerError> {
        if inner.stale {
            return Err(LedgerError::journal("replay")(std::io::Error::other(
                "the database is being recovered from the journal",
            )));
        }
        Ok(self.db.handle()?)
    }

    /// The database with every pending change written to it (callers hold `ready`).
    fn applied(&self, inner: &mut Inner) -> Result<Arc<Database>, LedgerError> {
        let db = self.current(inner)?;
        if inner.pending.is_empty() {
            return Ok(db);
        }
        match apply(&db, &inner.pending, false) {
            Ok(()) => {
                inner.pending = Pending::default();
                Ok(db)
            }
            Err(e) => {
                // The journal still holds the pending changes; the reopened database gets
                // them back from it.
                drop(db);
                self.lose_database(inner);
                Err(e.into())
            }
        }
    }

    /// For each change, whether it removes a key that exists (seeing the batch's own
    /// earlier changes, the staged batches, the pending changes, then the database).
    fn removals(&self, inner: &mut Inner, changes: &[KvChange]) -> Result<Vec<bool>, LedgerError> {
        let mut batch: HashMap<&[u8], bool> = HashMap::new();
        let mut removed = Vec::with_capacity(changes.len());
        let mut db = None;
        for change in changes {
            let key = match change {
                KvChange::Put { key, .. } => {
                    batch.insert(key, true);
                    removed.push(false);
                    continue;
                }
                KvChange::Delete { key } => key,
            };
            let exists = match batch.get(key.as_slice()) {
                Some(exists) => *exists,
                None => match staged_state(&inner.staged, key) {
                    Some(exists) => exists,
                    None => {
                        if let Some(value) = inner.overlay(key) {
                            value.is_some()
                        } else {
                            if db.is_none() {
                                db = Some(self.current(inner)?);
                            }
                            match &db {
                                Some(db) => stored(db, key)?.is_some(),
                                None => false,
                            }
                        }
                    }
                },
            };
            batch.insert(key, false);
            removed.push(exists);
        }
        Ok(removed)
    }

    /// The syncer thread: writes everything staged with one `write` and one `fdatasync`,
    /// then publishes the batches and answers them.
    fn run_syncer(&self) {
        let mut inner = self.lock();
        loop {
            while inner.frames.is_empty() {
                if inner.threads.closing {
                    return;
                }
                inner.threads.syncer_idle = true;
                inner = self
                    .staged
                    .wait(inner)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            inner.threads.syncer_idle = false;
            let mut frames = inner.frames.take();
            let count = inner.staged.len();
            drop(inner);
            let mut journal = self.lock_journal();
            let written = journal.append(&mut frames);
            let grown = journal.active_len() >= CHECKPOINT_BYTES;
            inner = self.lock();
            let answers = publish(&mut inner, count, written);
            drop(journal);
            if grown && !inner.threads.wanted {
                inner.threads.wanted = true;
                self.wake.notify_all();
            }
            drop(inner);
            for (done, result) in answers {
                done(result);
            }
            inner = self.lock();
        }
    }

    /// The checkpointer thread: waits until a checkpoint is wanted or a second passed with
    /// anything pending, then checkpoints in the background.
    fn run_checkpointer(&self) {
        let mut inner = self.lock();
        loop {
            if inner.threads.closing {
                return;
            }
            if inner.threads.wanted || inner.journaled || !inner.pending.is_empty() {
                inner.threads.wanted = false;
                drop(inner);
                self.checkpoint_in_background();
                inner = self.lock();
            }
            if inner.threads.closing {
                return;
            }
            let (next, _) = self
                .wake
                .wait_timeout(inner, CHECKPOINT_EVERY)
                .unwrap_or_else(PoisonError::into_inner);
            inner = next;
        }
    }

    /// Retires the active journal file, writes the pending changes to the database in one
    /// durable transaction without holding a lock, then empties the retired file.
    fn checkpoint_in_background(&self) {
        let mut journal = self.lock_journal();
        let mut inner = self.lock();
        if inner.stale || inner.applying.is_some() {
            return; // the next reader or writer recovers first
        }
        let db = match self.current(&mut inner) {
            Ok(db) => db,
            Err(e) => {
                tracing::warn!("checkpoint skipped: {e}");
                return;
            }
        };
        match journal.rotate() {
            Ok(true) => {}
            Ok(false) => {
                // The retired file outlived a failed checkpoint: a durable commit of
                // everything pending covers it too.
                if let Err(e) = apply(&db, &inner.pending, true) {
                    tracing::error!("checkpoint failed; the journal keeps the data: {e}");
                    drop(db);
                    self.lose_database(&mut inner);
                    return;
                }
                inner.pending = Pending::default();
                if let Err(e) = journal.clear_retired() {
                    tracing::warn!("cannot empty the retired journal file: {e}");
                }
                inner.journaled = !journal.is_empty();
                return;
            }
            Err(e) => {
                tracing::warn!("checkpoint skipped: cannot start a journal file: {e}");
                return;
            }
        }
        let applying = Arc::new(std::mem::take(&mut inner.pending));
        inner.applying = Some(Arc::clone(&applying));
        drop(inner);
        drop(journal);
        let written = apply(&db, &applying, true);
        let mut inner = self.lock();
        inner.applying = None;
        self.settled.notify_all();
        if let Err(e) = written {
            tracing::error!("checkpoint failed; the journal keeps the data: {e}");
            drop(db);
            self.lose_database(&mut inner);
            return;
        }
        drop(inner);
        let mut journal = self.lock_journal();
        if let Err(e) = journal.clear_retired() {
            tracing::warn!("cannot empty the retired journal file: {e}");
        }
        // Frames published meanwhile are in the active file; the next run takes them.
        self.lock().journaled = !journal.is_empty();
    }
}

/// Makes the first `count` staged batches visible if their write succeeded; otherwise
/// fails every staged batch and rolls the chain head back to the last durable entry.
fn publish(
    inner: &mut Inner,
    count: usize,
    written: std::io::Result<()>,
) -> Vec<(OnCommit, CommitResult)> {
    let mut answers = Vec::new();
    match written {
        Ok(()) => {
            inner.journaled = true;
            for batch in inner.staged.drain(..count).collect::<Vec<_>>() {
                for change in batch.changes {
                    match change {
                        KvChange::Put { key, value } => {
                            inner.pending.kv.insert(key, Some(value));
                        }
                        KvChange::Delete { key } => {
                            inner.pending.kv.insert(key, None);
                        }
                    }
                }
                let seqs = batch.entries.iter().map(|(seq, _)| *seq).collect();
                inner.pending.audit.extend(batch.entries);
                let committed = Committed {
                    removed: batch.removed,
                    seqs,
                };
                answers.push((batch.done, Ok(committed)));
            }
        }
        Err(e) => {
            tracing::error!(batches = inner.staged.len(), "journal write failed: {e}");
            let shared = Arc::new(LedgerError::journal("write")(e));
            if let Some(first) = inner.staged.front() {
                inner.head = first.head_before.clone();
            }
            inner.frames.clear();
            for batch in inner.staged.drain(..) {
                answers.push((batch.done, Err(Arc::clone(&shared))));
            }
        }
    }
    answers
}

/// What the staged batches say about whether `key` exists after them, if anything.
fn staged_state(staged: &VecDeque<Staged>, key: &[u8]) -> Option<bool> {
    staged.iter().rev().find_map(|batch| {
        batch.changes.iter().rev().find_map(|change| match change {
            KvChange::Put { key: k, .. } if k.as_slice() == key => Some(true),
            KvChange::Delete { key: k } if k.as_slice() == key => Some(false),
            _ => None,
        })
    })
}

/// Writes `pending` to the database in one transaction, durable if `durable` (which also
/// makes every earlier non-durable transaction durable).
fn apply(db: &Database, pending: &Pending, durable: bool) -> Result<(), redb::Error> {
    let mut tx = db.begin_write()?;
    if !durable {
        tx.set_durability(redb::Durability::None)?;
    }
    {
        let mut kv = tx.open_table(KV)?;
        for (key, value) in &pending.kv {
            match value {
                Some(value) => drop(kv.insert(key.as_slice(), value.as_slice())?),
                None => drop(kv.remove(key.as_slice())?),
            }
        }
        let mut audit = tx.open_table(AUDIT)?;
        for (seq, entry) in &pending.audit {
            audit.insert(seq, entry.as_slice())?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// A durable commit of nothing, which makes every earlier transaction durable.
fn durable_commit(db: &Database) -> Result<(), redb::Error> {
    db.begin_write()?.commit()?;
    Ok(())
}

fn stored(db: &Database, key: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
    let tx = db.begin_read()?;
    let table = tx.open_table(KV)?;
    Ok(table.get(key)?.map(|v| v.value().to_vec()))
}

/// Applies journaled frames (their payloads, oldest first) in one durable transaction;
/// returns how many operations it applied.
fn replay(db: &Database, payloads: &[Vec<u8>]) -> Result<usize, redb::Error> {
    let tx = db.begin_write()?;
    let mut applied = 0;
    {
        let mut kv = tx.open_table(KV)?;
        let mut audit = tx.open_table(AUDIT)?;
        for payload in payloads {
            for op in journal::decode(payload).unwrap_or_default() {
                match op {
                    Op::Put { key, value } => {
                        kv.insert(key, value)?;
                    }
                    Op::Delete { key } => {
                        kv.remove(key)?;
                    }
                    Op::Audit { seq, entry } => {
                        audit.insert(seq, entry)?;
                    }
                }
                applied += 1;
            }
        }
    }
    tx.commit()?;
    Ok(applied)
}

fn load_head(db: &Database) -> Result<Head, redb::Error> {
    let tx = db.begin_read()?;
    let table = tx.open_table(AUDIT)?;
    Ok(match table.last()? {
        None => Head {
            next_seq: 1,
            last_hash: GENESIS.to_owned(),
        },
        Some((key, value)) => {
            // An unreadable last entry already fails verification; new entries still need
            // something to link to, and its raw bytes' hash is the honest choice.
            let last_hash = rmp_serde::from_slice::<Entry>(value.value()).map_or_else(
                |_| blake3::hash(value.value()).to_hex().to_string(),
                |e| e.hash,
            );
            Head {
                next_seq: key.value() + 1,
                last_hash,
            }
        }
    })
}
