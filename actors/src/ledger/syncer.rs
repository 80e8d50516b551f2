//! The syncer thread: writes everything staged to the journal with one `write` and one
//! `fdatasync`, then publishes the batches (into the overlay, where reads see them) and
//! answers them; a failed write fails every batch not yet durable. It sleeps while nothing is
//! staged (staging wakes it), and wakes the checkpointer only when the journal takes its
//! first change since the last checkpoint.

use std::sync::{Arc, PoisonError};
use std::time::Instant;

use super::checkpointer::CHECKPOINT_BYTES;
use super::state::{Inner, Shared};
use super::{CommitResult, Committed, KvChange, LedgerError, OnCommit};

impl Shared {
    /// The syncer thread: writes everything staged with one `write` and one `fdatasync`,
    /// then publishes the batches and answers them.
    pub(super) fn run_syncer(&self) {
        let mut inner = self.lock();
        loop {
            while inner.frames.is_empty() {
                if inner.threads.closing {
                    return;
                }
                inner.threads.asleep.syncer = true;
                inner = self
                    .staged
                    .wait(inner)
                    .unwrap_or_else(PoisonError::into_inner);
                #[cfg(test)]
                {
                    inner.threads.wakes[0] += 1;
                }
            }
            inner.threads.asleep.syncer = false;
            let mut frames = inner.frames.take();
            let count = inner.staged.len();
            drop(inner);
            let started = Instant::now();
            let mut journal = self.lock_journal();
            let written = journal.append(&mut frames);
            self.metrics
                .synced(count, started.elapsed(), written.is_ok());
            let grown = journal.active_len() >= CHECKPOINT_BYTES;
            inner = self.lock();
            let answers = publish(&mut inner, count, written);
            drop(journal);
            if grown && !inner.threads.wanted {
                inner.threads.wanted = true;
                self.wake.notify_all();
            } else if inner.journaled && inner.threads.asleep.checkpointer {
                // The journal took its first change since the last checkpoint: the
                // checkpointer starts counting down to the next one.
                inner.threads.asleep.checkpointer = false;
                self.wake.notify_all();
            }
            drop(inner);
            for (done, result) in answers {
                done(result);
            }
            inner = self.lock();
        }
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
