//! Replay: the journal applied to the database whenever it is opened (at boot, or after a
//! failure discarded it), idempotently (puts, deletes, entries by sequence number), and the
//! chain head found where the stored entries end. Also the database's lost/stale state that
//! makes the next reader or writer recover first.

use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::chain::{Entry, GENESIS};
use super::journal::{self, Journal, Op};
use super::overlay::Pending;
use super::retention::{account, anchor_seq, counted, footprint};
use super::state::{Head, Inner, Shared};
use super::{AUDIT, KV, LedgerError};

impl Shared {
    /// Reopens the database and replays the journal into it.
    pub(super) fn recover(
        &self,
        journal: &mut Journal,
        inner: &mut Inner,
    ) -> Result<(), LedgerError> {
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

    /// Discards the database after a failure: it lacks journaled commits until recovered.
    pub(super) fn lose_database(&self, inner: &mut Inner) {
        self.db.discard();
        inner.stale = true;
    }

    /// The open database; an error while it is stale (callers recover first).
    pub(super) fn current(&self, inner: &mut Inner) -> Result<Arc<Database>, LedgerError> {
        if inner.stale {
            return Err(LedgerError::journal("replay")(std::io::Error::other(
                "the database is being recovered from the journal",
            )));
        }
        Ok(self.db.handle()?)
    }
}

/// Applies journaled frames (their payloads, oldest first) in one durable transaction;
/// returns how many operations it applied. Entries at or below the anchor retention left
/// were pruned after they were journaled: they stay out.
pub(super) fn replay(db: &Database, payloads: &[Vec<u8>]) -> Result<usize, redb::Error> {
    let tx = db.begin_write()?;
    counted(&tx)?;
    let mut applied = 0;
    let (mut added, mut taken) = (0, 0);
    {
        let mut kv = tx.open_table(KV)?;
        let mut audit = tx.open_table(AUDIT)?;
        let pruned_through = anchor_seq(&audit)?.unwrap_or(0);
        for payload in payloads {
            for op in journal::decode(payload).unwrap_or_default() {
                match op {
                    Op::Put { key, value } => {
                        kv.insert(key, value)?;
                    }
                    Op::Delete { key } => {
                        kv.remove(key)?;
                    }
                    Op::Audit { seq, .. } if seq <= pruned_through => continue,
                    Op::Audit { seq, entry } => {
                        added += footprint(entry.len());
                        if let Some(old) = audit.insert(seq, entry)? {
                            taken += footprint(old.value().len());
                        }
                    }
                }
                applied += 1;
            }
        }
    }
    account(&tx, added, taken)?;
    tx.commit()?;
    Ok(applied)
}

/// Where the next audit entry goes, given the stored entries.
pub(super) fn load_head(db: &Database) -> Result<Head, redb::Error> {
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
