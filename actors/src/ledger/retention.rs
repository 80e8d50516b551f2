//! Retention of the audit log, by age and by size: the oldest entries are removed and an
//! anchor entry takes their place, so that the chain still verifies from it.
//!
//! The anchor (see [`chain::PRUNED`](super::chain::PRUNED)) is stored under the sequence
//! number of the last entry removed and carries that entry's `prev_hash` and hash: the next
//! entry links to it unchanged, and `AuditVerify` checks everything after it. Removing more
//! later replaces the anchor with one covering the whole range.
//!
//! Size is the entries' footprint: their encoded bytes and key, counted twice over for their
//! share of the B-tree that holds them and the pages freed by pruning that redb reuses only
//! later (measured with `loadgen --suite soak`: a log held at a footprint of 64 MiB counted
//! one and a half times its bytes kept `ledger.redb` at 68 MiB, so 1.7 times is what it
//! takes; twice leaves room). The running
//! total is kept in the `audit_meta` table by every write of the audit table (the ledger's
//! checkpoints, a reader's catch-up, a replay), so no prune has to scan the log to know it;
//! a database from before retention gets it counted once.
//!
//! redb grows its file by doubling it (pages freed by pruning are reused, the file never
//! shrinks), so a log whose footprint reached half the limit could take a file twice that
//! size. The footprint is therefore kept under half the limit: when it passes that, entries
//! are removed until it is at nine tenths of it (so a log at its bound is not pruned at every
//! checkpoint), and `ledger.redb` with the journal stays under the limit.
//!
//! Pruning runs with every durable checkpoint (so a log only grows past its bounds while
//! the daemon is idle, when nothing is written), at boot, and on `AuditPrune`. A replay never
//! brings back what was pruned: it skips entries at or below the anchor.

use std::time::Duration;

use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};

use super::AUDIT;
use super::chain::{Entry, PRUNED, PrunedRange, anchor_range};

/// The audit log's footprint in bytes, under the key [`BYTES`].
pub(crate) const AUDIT_META: TableDefinition<&str, u64> = TableDefinition::new("audit_meta");
const BYTES: &str = "bytes";

/// How long and how large the audit log may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Entries older than this are removed (`None`: kept whatever their age).
    pub max_age: Option<Duration>,
    /// The log's file is kept under this many bytes (its footprint under half of it).
    pub max_size: u64,
}

impl Retention {
    /// By default: 90 days.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_hours(90 * 24);
    /// By default: 256 MiB.
    pub const DEFAULT_MAX_SIZE: u64 = 256 * 1024 * 1024;
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Some(Self::DEFAULT_MAX_AGE),
            max_size: Self::DEFAULT_MAX_SIZE,
        }
    }
}

/// What one prune did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Entries removed now.
    pub removed: u64,
    /// Everything removed so far (the anchor's range).
    pub range: Option<PrunedRange>,
    /// Entries left, the anchor included.
    pub kept: u64,
    /// `age`, `size`, `age and size`, or `nothing`.
    pub reason: &'static str,
}

/// The bytes an entry of `len` encoded bytes is counted for.
pub(super) fn footprint(len: usize) -> u64 {
    (len as u64 + 8) * 2
}

/// Adds `added` and takes `taken` from the counted footprint; the writer called
/// [`counted`] before it changed the audit table.
pub(super) fn account(tx: &WriteTransaction, added: u64, taken: u64) -> Result<(), redb::Error> {
    if added == 0 && taken == 0 {
        return Ok(());
    }
    let total = counted(tx)?;
    let mut meta = tx.open_table(AUDIT_META)?;
    meta.insert(BYTES, (total + added).saturating_sub(taken))?;
    Ok(())
}

/// The footprint counted so far; a log from before retention is counted now (and kept),
/// so writers call this before they change the audit table.
pub(super) fn counted(tx: &WriteTransaction) -> Result<u64, redb::Error> {
    {
        let meta = tx.open_table(AUDIT_META)?;
        if let Some(bytes) = meta.get(BYTES)? {
            return Ok(bytes.value());
        }
    }
    let mut total = 0;
    {
        let audit = tx.open_table(AUDIT)?;
        for item in audit.iter()? {
            let (_, value) = item?;
            total += footprint(value.value().len());
        }
    }
    tx.open_table(AUDIT_META)?.insert(BYTES, total)?;
    Ok(total)
}

/// The anchor's sequence number, if the log starts with one.
pub(super) fn anchor_seq(
    audit: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Option<u64>, redb::Error> {
    Ok(audit.first()?.and_then(|(key, value)| {
        let entry = rmp_serde::from_slice::<Entry>(value.value()).ok()?;
        anchor_range(&entry).map(|_| key.value())
    }))
}

/// Applies `retention` in `tx`, at `now_ms`, sealing an anchor for daemon session `session`
/// if anything is removed.
///
/// # Errors
///
/// When the database fails.
pub(super) fn prune(
    tx: &WriteTransaction,
    retention: &Retention,
    now_ms: u64,
    session: &str,
) -> Result<Pruned, redb::Error> {
    let total = counted(tx)?;
    let mut audit = tx.open_table(AUDIT)?;
    let cutoff = retention
        .max_age
        .map(|age| now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
    let budget = retention.max_size / 2;
    let goal = if total > budget {
        budget / 10 * 9
    } else {
        total
    };

    // Walk from the oldest entry, past the anchor, while entries are too old or the log too
    // large; the last one walked over becomes the new anchor.
    let mut old_range = None;
    let mut left = total;
    let mut last: Option<(u64, Entry)> = None;
    let (mut by_age, mut by_size) = (false, false);
    let mut removed = 0u64;
    for item in audit.iter()? {
        let (key, value) = item?;
        let (key, bytes) = (key.value(), value.value());
        let entry = rmp_serde::from_slice::<Entry>(bytes).ok();
        if last.is_none()
            && old_range.is_none()
            && let Some(range) = entry.as_ref().and_then(anchor_range)
        {
            // The anchor is replaced if anything goes.
            old_range = Some(range);
            left = left.saturating_sub(footprint(bytes.len()));
            last = entry.map(|e| (key, e));
            continue;
        }
        let old = cutoff.is_some_and(|cutoff| entry.as_ref().is_some_and(|e| e.time_ms < cutoff));
        let large = left > goal;
        if !old && !large {
            break;
        }
        by_age |= old;
        by_size |= large && !old;
        left = left.saturating_sub(footprint(bytes.len()));
        removed += 1;
        // An entry that cannot be read cannot anchor; its raw bytes' hash links nothing, so
        // verification will report the break it already was.
        let entry = entry.unwrap_or_else(|| Entry {
            seq: key,
            time_ms: now_ms,
            session: String::new(),
            actor: String::new(),
            action: String::new(),
            target: String::new(),
            outcome: String::new(),
            prev_hash: String::new(),
            hash: blake3::hash(bytes).to_hex().to_string(),
        });
        last = Some((key, entry));
    }
    let kept_before = audit.len()?;
    let Some((last_key, last_entry)) = last.filter(|_| removed > 0) else {
        return Ok(Pruned {
            removed: 0,
            range: old_range,
            kept: kept_before,
            reason: "nothing",
        });
    };
    let first = old_range.map_or_else(
        || audit.first().ok().flatten().map_or(1, |(k, _)| k.value()),
        |r| r.first,
    );
    remove_through(&mut audit, last_key)?;
    let range = PrunedRange {
        first,
        last: last_key,
    };
    let reason = match (by_age, by_size) {
        (true, true) => "age and size",
        (true, false) => "age",
        _ => "size",
    };
    let encoded = rmp_serde::to_vec_named(&anchor(range, reason, last_entry, now_ms, session))
        .unwrap_or_default();
    audit.insert(last_key, encoded.as_slice())?;
    let kept = audit.len()?;
    drop(audit);
    let mut meta = tx.open_table(AUDIT_META)?;
    meta.insert(BYTES, left + footprint(encoded.len()))?;
    tracing::info!(removed, kept, reason, "audit entries removed by retention");
    Ok(Pruned {
        removed,
        range: Some(range),
        kept,
        reason,
    })
}

/// The anchor standing for `range`, in place of `last`, its last entry.
fn anchor(range: PrunedRange, reason: &str, last: Entry, now_ms: u64, session: &str) -> Entry {
    Entry {
        seq: range.last,
        time_ms: now_ms,
        session: session.to_owned(),
        actor: "kernel".to_owned(),
        action: PRUNED.to_owned(),
        target: format!("{}..={}", range.first, range.last),
        outcome: format!(
            "{} entries removed by retention ({reason}); the chain continues from this anchor",
            range.count()
        ),
        prev_hash: last.prev_hash,
        hash: last.hash,
    }
}

/// Removes every entry up to `last` (included).
fn remove_through(audit: &mut Table<'_, u64, &[u8]>, last: u64) -> Result<(), redb::Error> {
    audit.retain_in(..=last, |_, _| false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase};

    use super::*;
    use crate::ledger::chain::{GENESIS, Record, hash_of, seal_record, verify};

    /// A ledger database holding `n` entries, entry `seq` written at `time(seq)`.
    fn log(n: u64, time: impl Fn(u64) -> u64) -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("ledger.redb")).unwrap();
        crate::ledger::prepare(&db).unwrap();
        let tx = db.begin_write().unwrap();
        counted(&tx).unwrap();
        let mut added = 0;
        {
            let mut audit = tx.open_table(AUDIT).unwrap();
            let mut prev = GENESIS.to_owned();
            for seq in 1..=n {
                let record = Record::new("client:1", "KvPut", format!("key-{seq}"), "ok");
                let (bytes, hash) = seal_record(seq, time(seq), "system", &record, &prev);
                added += footprint(bytes.len());
                audit.insert(seq, bytes.as_slice()).unwrap();
                prev = hash;
            }
        }
        account(&tx, added, 0).unwrap();
        tx.commit().unwrap();
        (dir, db)
    }

    fn stored(db: &Database) -> Vec<(u64, Result<Entry, String>)> {
        let tx = db.begin_read().unwrap();
        let audit = tx.open_table(AUDIT).unwrap();
        audit
            .iter()
            .unwrap()
            .map(|item| {
                let (k, v) = item.unwrap();
                let entry = rmp_serde::from_slice::<Entry>(v.value()).map_err(|e| e.to_string());
                (k.value(), entry)
            })
            .collect()
    }

    fn anchor_of(db: &Database) -> Entry {
        stored(db)[0].1.clone().unwrap()
    }

    fn footprint_of(db: &Database) -> u64 {
        let tx = db.begin_read().unwrap();
        let meta = tx.open_table(AUDIT_META).unwrap();
        meta.get(BYTES).unwrap().unwrap().value()
    }

    fn prune_now(db: &Database, retention: Retention, now_ms: u64) -> Pruned {
        let tx = db.begin_write().unwrap();
        let pruned = prune(&tx, &retention, now_ms, "system").unwrap();
        tx.commit().unwrap();
        pruned
    }

    fn rewrite(db: &Database, seq: u64, change: impl FnOnce(&mut Entry)) {
        let tx = db.begin_write().unwrap();
        {
            let mut audit = tx.open_table(AUDIT).unwrap();
            let mut entry: Entry =
                rmp_serde::from_slice(audit.get(seq).unwrap().unwrap().value()).unwrap();
            change(&mut entry);
            let bytes = rmp_serde::to_vec_named(&entry).unwrap();
            audit.insert(seq, bytes.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }

    const SIZE_ONLY: Retention = Retention {
        max_age: None,
        max_size: u64::MAX,
    };

    #[test]
    fn a_log_within_its_retention_is_left_alone() {
        let (_dir, db) = log(50, |_| 1_000);
        let pruned = prune_now(&db, Retention::default(), 2_000);
        assert_eq!(
            (pruned.removed, pruned.kept, pruned.reason),
            (0, 50, "nothing")
        );
        assert!(verify(stored(&db)).ok);
    }

    #[test]
    fn by_size_the_oldest_go_and_the_chain_verifies_from_the_anchor() {
        let (_dir, db) = log(1000, |_| 1_000);
        let before = stored(&db);
        let total = footprint_of(&db);
        let retention = Retention {
            max_size: total,
            ..SIZE_ONLY
        };
        let pruned = prune_now(&db, retention, 2_000);
        assert_eq!(pruned.reason, "size");
        let range = pruned.range.unwrap();
        assert_eq!((range.first, range.last), (1, pruned.removed));
        let anchor_footprint = footprint(rmp_serde::to_vec_named(&anchor_of(&db)).unwrap().len());
        let goal = retention.max_size / 2 / 10 * 9;
        assert!(
            footprint_of(&db) <= goal + anchor_footprint,
            "{} over {goal}",
            footprint_of(&db),
        );
        let after = stored(&db);
        assert_eq!(after.len() as u64, pruned.kept);
        let anchor = after[0].1.as_ref().unwrap();
        let last_removed = before[usize::try_from(range.last).unwrap() - 1]
            .1
            .as_ref()
            .unwrap();
        assert_eq!((anchor.seq, &anchor.hash), (range.last, &last_removed.hash));
        assert_eq!(anchor_range(anchor), Some(range));
        let v = verify(after);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.pruned, Some(range));
        assert_eq!(v.head, before.last().unwrap().1.as_ref().unwrap().hash);
    }

    #[test]
    fn by_age_exactly_the_old_entries_go_and_a_second_prune_extends_the_anchor() {
        let (_dir, db) = log(100, |seq| seq * 1_000);
        let day = Retention {
            max_age: Some(Duration::from_secs(50)),
            ..SIZE_ONLY
        };
        // At 100 s, entries written before 50 s (1..=49) are too old.
        let pruned = prune_now(&db, day, 100_000);
        assert_eq!((pruned.removed, pruned.reason), (49, "age"));
        assert_eq!(pruned.range, Some(PrunedRange { first: 1, last: 49 }));
        let pruned = prune_now(&db, day, 120_000);
        assert_eq!(pruned.removed, 20);
        assert_eq!(pruned.range, Some(PrunedRange { first: 1, last: 69 }));
        assert_eq!(pruned.kept, 1 + 31);
        let v = verify(stored(&db));
        assert!(v.ok, "{v:?}");
        assert_eq!(v.pruned, Some(PrunedRange { first: 1, last: 69 }));
    }

    #[test]
    fn tampering_after_a_prune_is_still_detected() {
        let (_dir, db) = log(100, |seq| seq * 1_000);
        let day = Retention {
            max_age: Some(Duration::from_secs(50)),
            ..SIZE_ONLY
        };
        prune_now(&db, day, 100_000);
        // An entry after the anchor, altered.
        rewrite(&db, 60, |e| e.outcome = "forged".into());
        let v = verify(stored(&db));
        assert_eq!((v.ok, v.first_bad), (false, Some(60)));
        rewrite(&db, 60, |e| e.outcome = "ok".into());
        assert!(verify(stored(&db)).ok);
        // The anchor's hash, changed: the next entry no longer links to it.
        rewrite(&db, 49, |e| e.hash = hash_of(e));
        let v = verify(stored(&db));
        assert_eq!((v.ok, v.first_bad), (false, Some(50)), "{v:?}");
    }

    #[test]
    fn an_anchor_that_does_not_start_the_log_is_no_anchor() {
        let (_dir, db) = log(10, |_| 1_000);
        // A forged anchor in the middle: entry 5 claims to stand for 1..=5.
        rewrite(&db, 5, |e| {
            e.actor = "kernel".into();
            e.action = PRUNED.into();
            e.target = "1..=5".into();
        });
        let v = verify(stored(&db));
        assert_eq!((v.ok, v.first_bad, v.pruned), (false, Some(5), None));
    }

    #[test]
    fn the_footprint_is_counted_once_for_a_log_from_before_retention() {
        let (_dir, db) = log(20, |_| 1_000);
        let counted_by_writes = footprint_of(&db);
        let tx = db.begin_write().unwrap();
        tx.open_table(AUDIT_META).unwrap().remove(BYTES).unwrap();
        tx.commit().unwrap();
        let tx = db.begin_write().unwrap();
        assert_eq!(counted(&tx).unwrap(), counted_by_writes);
        tx.commit().unwrap();
        assert_eq!(footprint_of(&db), counted_by_writes);
    }
}
