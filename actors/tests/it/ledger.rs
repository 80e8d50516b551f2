//! Tests of the ledger itself (no actors), against real redb and journal files in temporary
//! directories: commits visible to `get` and `read` and surviving a reopen (journal replay),
//! deletes reporting whether they removed anything (seeing earlier changes of their own
//! batch and of earlier batches), a crash image taken before any checkpoint reopening with
//! every acknowledged commit and an intact audit chain, a journal write failure (a full
//! disk) failing its commit without a trace or a gap in the chain, a database failure at a
//! checkpoint recovered from the journal, many concurrent committers, a torn journal tail
//! ignored at replay, and a checkpoint leaving everything in the database file and the
//! journal empty.

use std::collections::BTreeMap;
use std::sync::{Arc, mpsc};

use crate::common::{DEADLINE, DbFile, SESSION, poll};
use astrid_actors::audit::chain::{Entry, GENESIS, Verification};
use astrid_actors::audit::{Record, verify_db};
use astrid_actors::ledger::{Committed, KvChange, Ledger, LedgerError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// The key-value table, as the ledger stores it.
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// The audit table, as the ledger stores it.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// The physical key of `key` in the client namespace.
fn key(key: &str) -> Vec<u8> {
    [b"client\0", key.as_bytes()].concat()
}

fn put(k: &str, value: &str) -> KvChange {
    KvChange::Put {
        key: key(k),
        value: value.as_bytes().to_vec(),
    }
}

fn delete(k: &str) -> KvChange {
    KvChange::Delete { key: key(k) }
}

/// The `n`-th test record: its target tells which it is.
fn record(n: usize) -> Record {
    Record::new("kernel", "test", format!("r{n}"), "ok")
}

/// The durable value of `k`, as a string.
fn get(ledger: &Ledger, k: &str) -> Option<String> {
    ledger
        .get(&key(k))
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// Every key-value pair of the client namespace in `db`.
fn pairs(db: &Database) -> Result<BTreeMap<String, String>, redb::Error> {
    let tx = db.begin_read()?;
    let table = tx.open_table(KV)?;
    let mut pairs = BTreeMap::new();
    for item in table.iter()? {
        let (k, v) = item?;
        let k = k.value().strip_prefix(b"client\0").unwrap();
        pairs.insert(
            String::from_utf8(k.to_vec()).unwrap(),
            String::from_utf8(v.value().to_vec()).unwrap(),
        );
    }
    Ok(pairs)
}

/// Every audit entry in `db`, in order.
fn entries(db: &Database) -> Result<Vec<Entry>, redb::Error> {
    let tx = db.begin_read()?;
    let table = tx.open_table(AUDIT)?;
    let mut entries = Vec::new();
    for item in table.iter()? {
        let (seq, bytes) = item?;
        let entry: Entry = rmp_serde::from_slice(bytes.value()).unwrap();
        assert_eq!(entry.seq, seq.value());
        entries.push(entry);
    }
    Ok(entries)
}

fn seqs(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

/// Checks that the whole chain verifies and holds exactly `n` entries; returns the
/// verification.
#[track_caller]
fn assert_chain_of(ledger: &Ledger, n: u64) -> Verification {
    let v = ledger.read(verify_db).unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, n, "{v:?}");
    assert_eq!(
        seqs(&ledger.read(entries).unwrap()),
        (1..=n).collect::<Vec<_>>(),
        "consecutive seqs"
    );
    v
}

fn pairs_of(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The journal file of `file` that new frames go to: the one with the highest generation.
fn active_journal(file: &DbFile) -> std::path::PathBuf {
    [0, 1]
        .into_iter()
        .map(|n| file.journal_path(n))
        .filter_map(|path| {
            let bytes = std::fs::read(&path).ok()?;
            let head = bytes.get(..16)?;
            (head[..8] == b"ASTRIDJ1"[..]).then(|| {
                let generation = u64::from_le_bytes(head[8..].try_into().unwrap());
                (generation, path)
            })
        })
        .max()
        .map(|(_, path)| path)
        .expect("a journal file with a header")
}

/// Where the frames of a journal file end: after its 16-byte header, each frame is a
/// 4-byte length, an 8-byte attempt, an 8-byte check and the payload; the file is zeros
/// after the last one (or frames of earlier writes that fail their checks).
fn end_of_frames(bytes: &[u8]) -> usize {
    let mut at = 16;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if len == 0 || at + 20 + len > bytes.len() {
            break;
        }
        at += 20 + len;
    }
    at
}

/// Whether the journal of `file` holds nothing to replay: a fresh database under a copy of
/// it stays empty.
fn journal_replays_nothing(file: &DbFile) -> bool {
    let fresh = DbFile::new();
    for n in [0, 1] {
        std::fs::copy(file.journal_path(n), fresh.journal_path(n)).unwrap();
    }
    let (ledger, _disk) = fresh.open_ledger(SESSION);
    ledger.read(pairs).unwrap().is_empty() && ledger.read(entries).unwrap().is_empty()
}

#[track_caller]
fn assert_journal_empty(file: &DbFile) {
    assert!(
        journal_replays_nothing(file),
        "the journal replays something"
    );
}

// ---------------------------------------------------------------------------------------
// Commits, reads and replay
// ---------------------------------------------------------------------------------------

#[test]
fn commits_are_visible_and_survive_reopening_deletes_included() {
    let file = DbFile::new();
    let (ledger, _disk) = file.open_ledger(SESSION);
    assert_eq!(get(&ledger, "a"), None);
    assert_chain_of(&ledger, 0);

    let first = ledger
        .commit(
            vec![put("a", "1"), put("b", "2"), put("c", "3")],
            &[record(1)],
        )
        .unwrap();
    assert_eq!(
        first,
        Committed {
            removed: vec![false; 3],
            seqs: vec![1],
        }
    );
    assert_eq!(get(&ledger, "a").as_deref(), Some("1"));

    // Deletes see the earlier batch (`a`), their own batch (`a` again, `x` put then
    // removed) and keys that never existed (`nothing`).
    let second = ledger
        .commit(
            vec![
                delete("a"),
                delete("a"),
                delete("nothing"),
                put("x", "9"),
                delete("x"),
                put("b", "22"),
            ],
            &[record(2), record(3)],
        )
        .unwrap();
    assert_eq!(second.removed, [true, false, false, false, true, false]);
    assert_eq!(second.seqs, [2, 3]);

    // A batch staged while the one before is not yet durable sees it too.
    let (tx, rx) = mpsc::channel();
    for changes in [vec![put("y", "1")], vec![delete("y"), delete("c")]] {
        let tx = tx.clone();
        ledger.commit_then(
            changes,
            &[],
            Box::new(move |result| tx.send(result).unwrap()),
        );
    }
    let staged: Vec<Committed> = (0..2)
        .map(|_| rx.recv_timeout(DEADLINE).unwrap().unwrap())
        .collect();
    assert_eq!(staged[0].removed, [false]);
    assert_eq!(staged[1].removed, [true, true]);
    assert!(staged.iter().all(|c| c.seqs.is_empty()));

    let expected = pairs_of(&[("b", "22")]);
    let check = |ledger: &Ledger| {
        for (k, v) in [("a", None), ("b", Some("22")), ("c", None), ("x", None)] {
            assert_eq!(get(ledger, k).as_deref(), v, "{k}");
        }
        assert_eq!(ledger.read(pairs).unwrap(), expected);
        let log = ledger.read(entries).unwrap();
        let targets: Vec<&str> = log.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["r1", "r2", "r3"]);
        assert_chain_of(ledger, 3)
    };
    let before = check(&ledger);

    // Dropped without a checkpoint and reopened: the journal is replayed.
    drop(ledger);
    let (ledger, _disk) = file.open_ledger("session-2");
    assert_eq!(check(&ledger), before);
    let after = ledger
        .commit(vec![delete("b"), delete("a")], &[record(4)])
        .unwrap();
    assert_eq!(
        after.removed,
        [true, false],
        "deletes see the reopened data"
    );
    assert_eq!(after.seqs, [4], "the chain continues after the reopen");
    let log = ledger.read(entries).unwrap();
    assert_eq!(log[3].prev_hash, log[2].hash);
    assert_eq!(
        (log[2].session.as_str(), log[3].session.as_str()),
        (SESSION, "session-2")
    );
    assert!(ledger.read(pairs).unwrap().is_empty());
    assert_chain_of(&ledger, 4);
}

#[test]
fn a_checkpoint_leaves_everything_in_the_database_file_and_empties_the_journal() {
    let file = DbFile::new();
    let (ledger, _disk) = file.open_ledger(SESSION);
    for n in 0..5 {
        ledger
            .commit(vec![put(&format!("k{n}"), "v")], &[record(n)])
            .unwrap();
    }
    ledger.commit(vec![delete("k0")], &[]).unwrap();
    ledger.checkpoint().unwrap();
    let v = assert_chain_of(&ledger, 5);
    drop(ledger);
    assert_journal_empty(&file);

    // The database file alone holds everything.
    let db = file.reopen();
    assert_eq!(
        pairs(&db).unwrap(),
        pairs_of(&[("k1", "v"), ("k2", "v"), ("k3", "v"), ("k4", "v")])
    );
    assert_eq!(verify_db(&db).unwrap(), v);
}

#[test]
fn the_checkpointer_empties_the_journal_by_itself_even_after_a_reader_applied_the_changes() {
    let file = DbFile::new();
    let (ledger, _disk) = file.open_ledger(SESSION);
    ledger.commit(vec![put("a", "1")], &[record(0)]).unwrap();
    // A full read writes the pending changes into the database, not durably: the journal
    // must still be checkpointed.
    assert_eq!(ledger.read(pairs).unwrap(), pairs_of(&[("a", "1")]));
    let emptied = poll(DEADLINE, || {
        journal_replays_nothing(&file).then_some(()).ok_or(())
    });
    assert_eq!(emptied, Ok(()), "the journal was never emptied");
    drop(ledger);
    let db = file.reopen();
    assert_eq!(pairs(&db).unwrap(), pairs_of(&[("a", "1")]));
    assert_eq!(verify_db(&db).unwrap().entries, 1);
}

// ---------------------------------------------------------------------------------------
// Crashes
// ---------------------------------------------------------------------------------------

#[test]
fn a_crash_image_before_any_checkpoint_holds_every_acknowledged_commit() {
    let file = DbFile::new();
    let (ledger, _disk) = file.open_ledger(SESSION);
    for n in 0..20 {
        let mut changes = vec![put(&format!("k{n:02}"), &format!("v{n}"))];
        if n % 4 == 3 {
            changes.push(delete(&format!("k{:02}", n - 1)));
        }
        ledger.commit(changes, &[record(n)]).unwrap();
    }
    let image = file.crash_image();
    let expected = ledger.read(pairs).unwrap();
    assert_eq!(expected.len(), 15);
    let log = ledger.read(entries).unwrap();

    let (reopened, _disk) = image.open_ledger(SESSION);
    assert_eq!(reopened.read(pairs).unwrap(), expected);
    assert_eq!(get(&reopened, "k19").as_deref(), Some("v19"));
    assert_eq!(get(&reopened, "k18"), None);
    assert_eq!(reopened.read(entries).unwrap(), log);
    let v = assert_chain_of(&reopened, 20);
    assert_eq!(v.head, log[19].hash);
    assert_eq!(log[0].prev_hash, GENESIS);

    // The reopened copy goes on as the original would.
    let next = reopened
        .commit(vec![put("k20", "v20")], &[record(20)])
        .unwrap();
    assert_eq!(next.seqs, [21]);
    assert_chain_of(&reopened, 21);
}

#[test]
fn a_torn_journal_tail_is_ignored_and_the_commits_before_it_are_kept() {
    let file = DbFile::new();
    let (ledger, _disk) = file.open_ledger(SESSION);
    for n in 0..5 {
        ledger
            .commit(vec![put(&format!("k{n}"), "v")], &[record(n)])
            .unwrap();
    }
    let image = file.crash_image();
    drop(ledger);

    // Right after the last complete frame, the start of one whose write the crash
    // interrupted: a head announcing 64 bytes, then only 20 of them; and garbage at the end
    // of the file.
    let active = active_journal(&image);
    let mut bytes = std::fs::read(&active).unwrap();
    let end = end_of_frames(&bytes);
    let mut torn = 64u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[0xab; 16]);
    torn.extend_from_slice(&[0xcd; 20]);
    if bytes.len() < end + torn.len() {
        bytes.resize(end + torn.len(), 0);
    }
    bytes[end..end + torn.len()].copy_from_slice(&torn);
    bytes.extend_from_slice(&[0xff; 40]);
    std::fs::write(&active, &bytes).unwrap();

    let (reopened, _disk) = image.open_ledger(SESSION);
    let expected = pairs_of(&[
        ("k0", "v"),
        ("k1", "v"),
        ("k2", "v"),
        ("k3", "v"),
        ("k4", "v"),
    ]);
    assert_eq!(reopened.read(pairs).unwrap(), expected);
    assert_chain_of(&reopened, 5);

    // The garbage is gone for good: commits after it are replayed after the next crash.
    let next = reopened.commit(vec![put("k5", "v")], &[record(5)]).unwrap();
    assert_eq!(next.seqs, [6]);
    let again = image.crash_image();
    drop(reopened);
    let (reopened, _disk) = again.open_ledger(SESSION);
    assert_eq!(get(&reopened, "k5").as_deref(), Some("v"));
    assert_eq!(reopened.read(pairs).unwrap().len(), 6);
    assert_chain_of(&reopened, 6);
}

// ---------------------------------------------------------------------------------------
// Storage failures
// ---------------------------------------------------------------------------------------

#[test]
fn a_failed_journal_write_fails_the_commit_without_a_trace() {
    let file = DbFile::new();
    let (ledger, disk) = file.open_ledger(SESSION);
    ledger.commit(vec![put("a", "1")], &[record(1)]).unwrap();

    disk.fill();
    let failed = ledger
        .commit(vec![put("lost", "x"), delete("a")], &[record(2), record(3)])
        .unwrap_err();
    let LedgerError::Journal { op, source } = &*failed else {
        panic!("expected a journal failure, got {failed:?}")
    };
    assert_eq!(*op, "write");
    assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{source}");
    // Batches staged together while the disk is full fail together.
    let (tx, rx) = mpsc::channel();
    for n in 0..5 {
        let tx = tx.clone();
        ledger.commit_then(
            vec![put(&format!("lost{n}"), "x")],
            &[record(10 + n)],
            Box::new(move |result| tx.send(result).unwrap()),
        );
    }
    for _ in 0..5 {
        assert!(rx.recv_timeout(DEADLINE).unwrap().is_err());
    }
    disk.free();

    assert_eq!(get(&ledger, "lost"), None);
    assert_eq!(
        get(&ledger, "a").as_deref(),
        Some("1"),
        "the delete was not applied"
    );
    assert_eq!(ledger.read(pairs).unwrap(), pairs_of(&[("a", "1")]));
    assert_chain_of(&ledger, 1);

    // Once the disk has space, commits go on, and the chain has no gap.
    let next = ledger
        .commit(vec![put("b", "2"), delete("a")], &[record(4)])
        .unwrap();
    assert_eq!(next.removed, [false, true]);
    assert_eq!(next.seqs, [2], "the failed entries left no gap");
    let log = ledger.read(entries).unwrap();
    assert_eq!(log[1].target, "r4");
    assert_eq!(log[1].prev_hash, log[0].hash);
    assert_chain_of(&ledger, 2);

    // Nor is anything of the failed commits replayed after a restart.
    drop(ledger);
    let (ledger, _disk) = file.open_ledger(SESSION);
    assert_eq!(ledger.read(pairs).unwrap(), pairs_of(&[("b", "2")]));
    assert_chain_of(&ledger, 2);
}

#[test]
fn a_database_failure_at_a_checkpoint_is_recovered_from_the_journal() {
    let file = DbFile::new();
    let (ledger, disk) = file.open_ledger(SESSION);
    for n in 0..10 {
        ledger
            .commit(vec![put(&format!("k{n}"), "v")], &[record(n)])
            .unwrap();
    }
    // Normally the first attempt fails; a background checkpoint that emptied the journal
    // just before leaves nothing to write, so commit again and retry.
    let mut written = 10;
    let failure = loop {
        ledger
            .commit(vec![put(&format!("k{written}"), "v")], &[record(written)])
            .unwrap();
        written += 1;
        disk.fill();
        let checkpoint = ledger.checkpoint();
        disk.free();
        match checkpoint {
            Err(e) => break e,
            Ok(()) => assert!(written < 20, "a checkpoint on a full disk kept succeeding"),
        }
    };
    assert!(
        matches!(failure, LedgerError::Database(_)),
        "expected a database failure, got {failure:?}"
    );

    // The database was discarded; the next read reopens it and replays the journal.
    for n in 0..written {
        assert_eq!(get(&ledger, &format!("k{n}")).as_deref(), Some("v"), "k{n}");
    }
    assert_eq!(ledger.read(pairs).unwrap().len(), written);
    let v = assert_chain_of(&ledger, written as u64);
    let next = ledger
        .commit(vec![put("after", "1")], &[record(99)])
        .unwrap();
    assert_eq!(next.seqs, [written as u64 + 1]);

    ledger.checkpoint().unwrap();
    drop(ledger);
    assert_journal_empty(&file);
    let db = file.reopen();
    assert_eq!(pairs(&db).unwrap().len(), written + 1);
    let all = verify_db(&db).unwrap();
    assert!(all.ok, "{all:?}");
    assert_eq!(all.entries, written as u64 + 1);
    assert_eq!(entries(&db).unwrap()[written - 1].hash, v.head);
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

#[test]
fn concurrent_commits_are_all_answered_with_distinct_consecutive_seqs() {
    const THREADS: usize = 8;
    const EACH: usize = 50;
    let file = DbFile::new();
    let (ledger, _disk) = file.open_ledger(SESSION);
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (ledger, tx) = (Arc::clone(&ledger), tx.clone());
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let tx = tx.clone();
                    ledger.commit_then(
                        vec![put(&format!("t{t}-{i}"), &format!("{i}"))],
                        &[Record::new(
                            format!("thread:{t}"),
                            "test",
                            format!("{i}"),
                            "ok",
                        )],
                        Box::new(move |result| tx.send((t, i, result)).unwrap()),
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    drop(tx);

    let mut by_seq = BTreeMap::new();
    let mut seqs_of_thread = [[0; EACH]; THREADS];
    for _ in 0..THREADS * EACH {
        let (t, i, result) = rx.recv_timeout(DEADLINE).unwrap();
        let committed = result.unwrap_or_else(|e| panic!("commit {t}/{i} failed: {e}"));
        assert_eq!(committed.removed, [false]);
        let [seq] = committed.seqs[..] else {
            panic!("one seq per commit: {committed:?}")
        };
        seqs_of_thread[t][i] = seq;
        assert!(
            by_seq.insert(seq, (t, i)).is_none(),
            "seq {seq} given twice"
        );
    }
    for seqs in &seqs_of_thread {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "the commits of one thread are in order: {seqs:?}"
        );
    }
    let total = (THREADS * EACH) as u64;
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let log = ledger.read(entries).unwrap();
    for entry in &log {
        let (t, i) = by_seq[&entry.seq];
        assert_eq!(
            (entry.actor.as_str(), entry.target.as_str()),
            (format!("thread:{t}").as_str(), format!("{i}").as_str())
        );
    }
    assert_chain_of(&ledger, total);
    assert_eq!(ledger.read(pairs).unwrap().len(), THREADS * EACH);
    assert_eq!(get(&ledger, "t7-49").as_deref(), Some("49"));
}
