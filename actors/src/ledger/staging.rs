//! Staging: a committed batch is encoded as one journal frame, its audit records sealed onto
//! the chain head, and queued for the syncer, without waiting for the disk. Also what a
//! batch's deletes remove, seen through the batches staged before it.

use std::collections::{HashMap, VecDeque};

use super::chain::{Record, seal_record};
use super::journal::Op;
use super::overlay::stored;
use super::state::{Inner, Shared, Staged};
use super::{KvChange, LedgerError, OnCommit};
use crate::clock::unix_millis;

impl Shared {
    /// Stages a batch (see [`Ledger::commit_then`](super::Ledger::commit_then)); gives
    /// `done` back with the error if the batch cannot even be staged.
    pub(super) fn stage(
        &self,
        changes: Vec<KvChange>,
        records: &[Record],
        done: OnCommit,
    ) -> Result<(), Box<(LedgerError, OnCommit)>> {
        let mut inner = self.lock();
        if inner.stale {
            drop(inner);
            inner = self.ready().1;
        }
        let inner = &mut *inner;
        let fail = |e: LedgerError, done| Box::new((e, done));
        let removed = match self.removals(inner, &changes) {
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
            let (bytes, hash) = seal_record(seq, time_ms, &self.session, record, &head.last_hash);
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
        if inner.threads.asleep.syncer {
            self.staged.notify_one();
        }
        Ok(())
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
