//! Checkpoints: the overlay moved into the database in one durable redb transaction, after
//! which the journal files that held it are emptied. The checkpointer thread does it in the
//! background (the active journal file retired first, no lock held while redb writes);
//! [`Ledger::checkpoint`](super::Ledger::checkpoint) does it in the foreground, at shutdown.
//! The thread sleeps without a timeout while the journal holds nothing the database lacks.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use redb::Database;

use astrid_protocol::StorageOp;

use super::LedgerError;
use super::faults::StorageFaults;
use super::overlay::{Pending, apply};
use super::state::Shared;

/// Journal bytes that make the checkpointer run at once.
pub(super) const CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;
/// How long after the journal takes its first change the checkpointer runs, and then how
/// often while the journal holds changes.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

impl Shared {
    /// Makes everything durable in the database itself and empties the journal (see
    /// [`Ledger::checkpoint`](super::Ledger::checkpoint)).
    pub(super) fn checkpoint_now(&self) -> Result<(), LedgerError> {
        let (mut journal, mut inner) = self.ready();
        // Batches still staged are written by the syncer, which needs the journal: wait for
        // it to finish them first.
        while !inner.staged.is_empty() {
            drop(inner);
            drop(journal);
            std::thread::yield_now();
            (journal, inner) = self.ready();
        }
        if journal.is_empty() {
            return Ok(());
        }
        let db = self.applied(&mut inner)?;
        if let Err(e) = durable_commit(&db) {
            drop(db);
            self.lose_database(&mut inner);
            return Err(e.into());
        }
        journal.reset().map_err(LedgerError::journal("reset"))?;
        inner.journaled = false;
        Ok(())
    }

    /// The checkpointer thread: checkpoints in the background when one is wanted (the
    /// journal grew past [`CHECKPOINT_BYTES`]), and [`CHECKPOINT_EVERY`] after the journal
    /// took its first change since the last checkpoint; it then waits again as long as the
    /// journal holds changes. While it holds none the thread sleeps without a timeout, until
    /// the syncer publishes a write (or the ledger closes), so an idle ledger never wakes it.
    pub(super) fn run_checkpointer(&self) {
        let mut inner = self.lock();
        // When the next checkpoint is due, while the journal holds changes.
        let mut due: Option<Instant> = None;
        loop {
            #[cfg(test)]
            {
                inner.threads.wakes[1] += 1;
            }
            if inner.threads.closing {
                return;
            }
            let holds = inner.journaled || !inner.pending.is_empty();
            let now = Instant::now();
            if inner.threads.wanted || (holds && due.is_some_and(|due| due <= now)) {
                inner.threads.wanted = false;
                drop(inner);
                self.checkpoint_in_background();
                inner = self.lock();
                due = None;
                continue;
            }
            if holds {
                let until = *due.get_or_insert(now + CHECKPOINT_EVERY);
                let (next, _) = self
                    .wake
                    .wait_timeout(inner, until.saturating_duration_since(now))
                    .unwrap_or_else(PoisonError::into_inner);
                inner = next;
            } else {
                due = None;
                inner.threads.asleep.checkpointer = true;
                inner = self
                    .wake
                    .wait(inner)
                    .unwrap_or_else(PoisonError::into_inner);
                inner.threads.asleep.checkpointer = false;
            }
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
                if let Err(e) = self.apply_checkpoint(&db, &inner.pending) {
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
        let written = self.apply_checkpoint(&db, &applying);
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

impl Shared {
    /// Writes `pending` to the database as a checkpoint (see [`apply`]), unless a storage
    /// fault makes it fail.
    fn apply_checkpoint(&self, db: &Database, pending: &Pending) -> Result<(), redb::Error> {
        if self.faults.take(StorageOp::Checkpoint) {
            tracing::warn!("injected fault: a checkpoint fails");
            return Err(redb::Error::Io(StorageFaults::error(StorageOp::Checkpoint)));
        }
        apply(db, pending, Some(self.retention()))
    }
}

/// A durable commit of nothing, which makes every earlier transaction durable.
fn durable_commit(db: &Database) -> Result<(), redb::Error> {
    db.begin_write()?.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::CHECKPOINT_EVERY;
    use crate::db::Db;
    use crate::ledger::chain::Record;
    use crate::ledger::journal::JournalFile;
    use crate::ledger::{self, KvChange, Ledger};

    fn open(dir: &Path) -> Ledger {
        let path = dir.join("ledger.redb");
        let db = Db::open("ledger", move || {
            let db = redb::Database::create(&path)?;
            ledger::prepare(&db)?;
            Ok(db)
        })
        .unwrap();
        let journal = [0, 1].map(|n| -> Box<dyn JournalFile> {
            Box::new(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(dir.join(format!("journal.{n}")))
                    .unwrap(),
            )
        });
        Ledger::open(db, journal, "test").unwrap()
    }

    /// The wake-ups of the syncer and the checkpointer so far, once both sleep without a
    /// timeout (nothing staged, the journal checkpointed).
    fn asleep(ledger: &Ledger) -> [u64; 2] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let inner = ledger.shared.lock();
            let threads = &inner.threads;
            if threads.asleep.syncer && threads.asleep.checkpointer && !inner.journaled {
                return threads.wakes;
            }
            drop(inner);
            assert!(
                Instant::now() < deadline,
                "the ledger's threads never slept"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn an_idle_ledger_never_wakes_its_threads_and_a_write_is_still_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = open(dir.path());
        let before = asleep(&ledger);
        let put = vec![KvChange::Put {
            key: b"client\0a".to_vec(),
            value: b"1".to_vec(),
        }];
        let committed = ledger.commit(put, &[Record::new("test", "put", "a", "ok")]);
        assert_eq!(committed.unwrap().seqs, [1]);
        // The write woke both threads; the checkpointer emptied the journal by itself and
        // sleeps again.
        let after_write = asleep(&ledger);
        assert!(after_write[0] > before[0] && after_write[1] > before[1]);
        // Idle for three checkpoint periods: not one wake-up (this sleep is the window
        // observed, not a wait for something to happen).
        std::thread::sleep(CHECKPOINT_EVERY * 3);
        assert_eq!(asleep(&ledger), after_write);
        assert_eq!(ledger.get(b"client\0a").unwrap(), Some(b"1".to_vec()));
    }
}
