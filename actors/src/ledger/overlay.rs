//! The overlay: changes durable in the journal but not yet in the database, which reads
//! consult before the database, and how they are written to it (by a reader that needs the
//! database itself, without syncing, or by the checkpointer, durably).

use std::collections::HashMap;
use std::sync::Arc;

use redb::{Database, ReadableDatabase};

use super::retention::{Retention, account, counted, footprint, prune};
use super::state::{Inner, Shared};
use super::{AUDIT, KV, LedgerError};
use crate::clock::unix_millis;

/// Changes durable in the journal but not yet in the database.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Physical key → new value, or `None` for a removal.
    pub(super) kv: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Sequence number and encoded entry.
    pub(super) audit: Vec<(u64, Vec<u8>)>,
}

impl Pending {
    pub(super) fn is_empty(&self) -> bool {
        self.kv.is_empty() && self.audit.is_empty()
    }

    /// What this overlay says about `key`: `Some(&None)` if it removes it.
    fn get(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.kv.get(key)
    }
}

impl Inner {
    /// What the durable changes not yet in the database say about `key` (`Some(&None)`:
    /// removed), if anything.
    pub(super) fn overlay(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.pending
            .get(key)
            .or_else(|| self.applying.as_ref().and_then(|a| a.get(key)))
    }
}

impl Shared {
    /// The durable value of physical key `key`: the overlay's, else the database's.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LedgerError> {
        let db = {
            let inner = self.lock();
            if let Some(value) = inner.overlay(key) {
                return Ok(value.clone());
            }
            if inner.stale {
                drop(inner);
                let (_journal, mut inner) = self.ready();
                self.current(&mut inner)?
            } else {
                self.db.handle()?
            }
        };
        Ok(stored(&db, key)?)
    }

    /// The database with every pending change written to it (callers hold `ready`).
    pub(super) fn applied(&self, inner: &mut Inner) -> Result<Arc<Database>, LedgerError> {
        let db = self.current(inner)?;
        if inner.pending.is_empty() {
            return Ok(db);
        }
        match apply(&db, &inner.pending, None) {
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
}

/// Writes `pending` to the database in one transaction. A checkpoint (`retention` given,
/// with the session anchors are sealed for) commits durably, which also makes every earlier
/// transaction durable, and applies the audit log's retention in the same transaction; a
/// reader catching up commits without syncing.
pub(super) fn apply(
    db: &Database,
    pending: &Pending,
    retention: Option<(&Retention, &str)>,
) -> Result<(), redb::Error> {
    let mut tx = db.begin_write()?;
    if retention.is_none() {
        tx.set_durability(redb::Durability::None)?;
    }
    counted(&tx)?;
    {
        let mut kv = tx.open_table(KV)?;
        for (key, value) in &pending.kv {
            match value {
                Some(value) => drop(kv.insert(key.as_slice(), value.as_slice())?),
                None => drop(kv.remove(key.as_slice())?),
            }
        }
    }
    let (mut added, mut taken) = (0, 0);
    {
        let mut audit = tx.open_table(AUDIT)?;
        for (seq, entry) in &pending.audit {
            added += footprint(entry.len());
            if let Some(old) = audit.insert(seq, entry.as_slice())? {
                taken += footprint(old.value().len());
            }
        }
    }
    account(&tx, added, taken)?;
    if let Some((retention, session)) = retention {
        prune(&tx, retention, unix_millis(), session)?;
    }
    tx.commit()?;
    Ok(())
}

/// The value the database holds under physical key `key`.
pub(super) fn stored(db: &Database, key: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
    let tx = db.begin_read()?;
    let table = tx.open_table(KV)?;
    Ok(table.get(key)?.map(|v| v.value().to_vec()))
}
