//! What the ledger's threads share: the chain head, the staged batches, the overlay, what the
//! threads tell each other, and the two locks over them (`journal` before `inner` whenever
//! both are held).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::faults::StorageFaults;
use super::journal::{Frames, Journal};
use super::overlay::Pending;
use super::retention::Retention;
use super::{KvChange, OnCommit};
use crate::db::Db;
use crate::metrics::LedgerMetrics;

/// Where the next audit entry goes.
#[derive(Debug, Clone)]
pub(super) struct Head {
    pub(super) next_seq: u64,
    pub(super) last_hash: String,
}

/// A batch staged, not yet durable.
pub(super) struct Staged {
    /// The chain head before its entries (to roll back to if its write fails).
    pub(super) head_before: Head,
    pub(super) changes: Vec<KvChange>,
    pub(super) entries: Vec<(u64, Vec<u8>)>,
    pub(super) removed: Vec<bool>,
    pub(super) done: OnCommit,
}

pub(super) struct Inner {
    pub(super) head: Head,
    /// Frames of the staged batches not yet handed to the syncer.
    pub(super) frames: Frames,
    /// Every batch not yet durable, oldest first: those in the syncer's current write, then
    /// those whose frames wait in `frames`.
    pub(super) staged: VecDeque<Staged>,
    /// Durable changes not yet handed to the database.
    pub(super) pending: Pending,
    /// Changes the checkpointer is writing to the database right now.
    pub(super) applying: Option<Arc<Pending>>,
    /// The database was discarded after a failure and lacks journaled commits: replay before
    /// using it.
    pub(super) stale: bool,
    /// The journal holds frames the database does not hold durably (a checkpoint is due even
    /// when nothing is pending, e.g. after a reader applied the pending changes).
    pub(super) journaled: bool,
    pub(super) threads: Threads,
}

/// What the ledger tells its threads, and they tell it.
#[derive(Debug, Default)]
pub(super) struct Threads {
    /// A checkpoint is wanted now (the journal grew past
    /// [`CHECKPOINT_BYTES`](super::checkpointer::CHECKPOINT_BYTES)).
    pub(super) wanted: bool,
    /// The ledger is being dropped: the threads stop (the syncer once nothing is staged).
    pub(super) closing: bool,
    /// Which threads wait without a timeout.
    pub(super) asleep: Asleep,
    /// Passes of the syncer's wait and of the checkpointer's loop (tests check that an
    /// idle ledger adds none).
    #[cfg(test)]
    pub(super) wakes: [u64; 2],
}

/// Which threads wait without a timeout, so that whoever gives them work must wake them.
#[derive(Debug, Default)]
pub(super) struct Asleep {
    /// The syncer waits for frames (so staging wakes it).
    pub(super) syncer: bool,
    /// The checkpointer waits, the journal holding nothing the database lacks (so the
    /// syncer wakes it when it publishes a write).
    pub(super) checkpointer: bool,
}

/// What the ledger's threads share.
pub(super) struct Shared {
    pub(super) db: Arc<Db>,
    pub(super) session: String,
    /// What the audit log keeps.
    pub(super) retention: Retention,
    journal: Mutex<Journal>,
    inner: Mutex<Inner>,
    /// Wakes the syncer.
    pub(super) staged: Condvar,
    /// Wakes the checkpointer.
    pub(super) wake: Condvar,
    /// Signalled when `applying` is emptied.
    pub(super) settled: Condvar,
    /// Injected storage faults.
    pub(super) faults: Arc<StorageFaults>,
    /// The syncer's counters (journal syncs, batches per sync).
    pub(super) metrics: Arc<LedgerMetrics>,
}

impl Shared {
    /// The state of a ledger over `db` and `journal` (replayed and emptied), whose chain
    /// continues from `head`.
    pub(super) fn new(
        db: Arc<Db>,
        session: String,
        retention: Retention,
        journal: Journal,
        head: Head,
        faults: Arc<StorageFaults>,
    ) -> Self {
        Self {
            db,
            session,
            retention,
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
            faults,
            metrics: Arc::default(),
        }
    }

    /// The retention and the session anchors are sealed for, as checkpoints apply them.
    pub(super) fn retention(&self) -> (&Retention, &str) {
        (&self.retention, &self.session)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn lock_journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Both locks, once the checkpointer is not writing to the database, and with the
    /// database caught up with the journal if it had been discarded.
    pub(super) fn ready(&self) -> (MutexGuard<'_, Journal>, MutexGuard<'_, Inner>) {
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

    /// Tells the threads to stop (the syncer once it has written what is staged).
    pub(super) fn close(&self) {
        self.lock().threads.closing = true;
        self.staged.notify_all();
        self.wake.notify_all();
    }
}
