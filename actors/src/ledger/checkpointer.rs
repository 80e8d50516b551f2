//! Checkpoints: the overlay moved into the database in one durable redb transaction, after
//! which the journal files that held it are emptied. The checkpointer thread does it in the
//! background (the active journal file retired first, no lock held while redb writes);
//! [`Ledger::checkpoint`](super::Ledger::checkpoint) does it in the foreground, at shutdown.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use redb::Database;

use super::LedgerError;
use super::overlay::{Pending, apply};
use super::state::Shared;

/// Journal bytes that make the checkpointer run at once.
pub(super) const CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;
/// How often the checkpointer runs while anything is pending.
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

    /// The checkpointer thread: waits until a checkpoint is wanted or a second passed with
    /// anything pending, then checkpoints in the background.
    pub(super) fn run_checkpointer(&self) {
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

/// A durable commit of nothing, which makes every earlier transaction durable.
fn durable_commit(db: &Database) -> Result<(), redb::Error> {
    db.begin_write()?.commit()?;
    Ok(())
}
