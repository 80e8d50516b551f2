//! Actor-level tests of the audit log (no socket), over a ledger on real redb and journal
//! files in temporary directories: consecutive sequence numbers and a hash chain that
//! verifies, a new actor (after a daemon restart with a new session, or after a panic under
//! a supervisor) continuing the chain, `Tail`, detection of an entry altered directly in the
//! database file (by `verify_db`, `VerifyChain` and the shared `AuditHealth`), and a failed
//! commit (a full disk, injected through a failing journal) that fails its records and
//! leaves the chain intact.

use std::sync::Arc;

use crate::common::{DbFile, Disk, SESSION, close, eventually};
use actix::{Actor, Addr, MailboxError};
use astrid_actors::audit::chain::{Entry, GENESIS, Verification, hash_of};
use astrid_actors::audit::{
    AuditActor, AuditError, AuditHealth, Record, Tail, VerifyChain, verify_db,
};
use astrid_actors::ledger::Ledger;
use astrid_actors::supervisor::{
    ChildRef, ChildSpec, ChildState, Fault, GetChild, GetTree, Inject, RestartPolicy, RestartType,
    ShutdownTree, SupervisorActor, Terminate,
};
use futures_util::future::join_all;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// The audit table, as the actor stores it.
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

struct Fixture {
    file: DbFile,
    ledger: Arc<Ledger>,
    disk: Disk,
    health: Arc<AuditHealth>,
    audit: Addr<AuditActor>,
}

impl Fixture {
    fn new() -> Self {
        let file = DbFile::new();
        let (ledger, disk) = file.open_ledger(SESSION);
        let health = Arc::new(AuditHealth::new(ledger.read(verify_db).unwrap()));
        let audit = start(&ledger, &health);
        Self {
            file,
            ledger,
            disk,
            health,
            audit,
        }
    }

    /// Stops the actor (which checkpoints the ledger), then closes the ledger as a daemon
    /// shutdown does; returns the files and the shared health.
    async fn shut_down(self) -> (DbFile, Arc<AuditHealth>) {
        self.audit.send(Terminate).await.unwrap();
        close(self.ledger).await;
        (self.file, self.health)
    }

    async fn record(&self, n: usize) -> Result<u64, AuditError> {
        self.audit.send(record(n)).await.unwrap()
    }

    async fn tail(&self, n: usize) -> Vec<Entry> {
        self.audit
            .send(Tail { n, from: None })
            .await
            .unwrap()
            .unwrap()
    }

    async fn verify(&self) -> Verification {
        self.audit.send(VerifyChain).await.unwrap().unwrap()
    }
}

fn start(ledger: &Arc<Ledger>, health: &Arc<AuditHealth>) -> Addr<AuditActor> {
    AuditActor::new(Arc::clone(ledger), Arc::clone(health)).start()
}

/// The `n`-th test record: every field tells which it is.
fn record(n: usize) -> Record {
    Record::new(
        format!("client:{n}"),
        "KvPut",
        format!("key-{n}"),
        if n.is_multiple_of(2) { "ok" } else { "denied" },
    )
}

/// Checks that `entries` are consecutive from `first_seq`, each linked to the one before
/// (the first to `prev`), and each carrying the hash of its content.
#[track_caller]
fn assert_chain(entries: &[Entry], first_seq: u64, prev: &str) {
    let mut prev = prev.to_owned();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            e.seq,
            first_seq + i as u64,
            "consecutive seqs: {entries:#?}"
        );
        assert_eq!(e.prev_hash, prev, "entry {} links to the one before", e.seq);
        assert_eq!(e.hash, hash_of(e), "entry {} carries its own hash", e.seq);
        prev.clone_from(&e.hash);
    }
}

/// Rewrites entry `seq` in the database, changing only its outcome (the hash is kept).
fn tamper(db: &Database, seq: u64, outcome: &str) {
    let tx = db.begin_write().unwrap();
    {
        let mut table = tx.open_table(ENTRIES).unwrap();
        let mut entry: Entry = {
            let stored = table.get(seq).unwrap().unwrap();
            rmp_serde::from_slice(stored.value()).unwrap()
        };
        outcome.clone_into(&mut entry.outcome);
        let bytes = rmp_serde::to_vec_named(&entry).unwrap();
        table.insert(seq, bytes.as_slice()).unwrap();
    }
    tx.commit().unwrap();
}

fn stored_seqs(db: &Database) -> Vec<u64> {
    let tx = db.begin_read().unwrap();
    let table = tx.open_table(ENTRIES).unwrap();
    table
        .iter()
        .unwrap()
        .map(|item| item.unwrap().0.value())
        .collect()
}

#[track_caller]
fn assert_storage_failure(result: &Result<u64, AuditError>) {
    assert!(
        matches!(result, Err(AuditError::Storage { .. })),
        "expected a storage failure, got {result:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The chain
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn records_get_consecutive_seqs_and_a_chain_that_verifies() {
    let f = Fixture::new();
    assert!(f.health.get().ok);
    assert_eq!(f.health.get().entries, 0);
    assert_eq!(f.record(0).await.unwrap(), 1);
    assert_eq!(f.record(1).await.unwrap(), 2);
    // Concurrent writers share commits but still get consecutive seqs, in arrival order.
    let seqs: Vec<u64> = join_all((2..50).map(|n| f.audit.send(record(n))))
        .await
        .into_iter()
        .map(|answer| answer.unwrap().unwrap())
        .collect();
    assert_eq!(seqs, (3..=50).collect::<Vec<u64>>());

    let entries = f.tail(100).await;
    assert_eq!(entries.len(), 50);
    assert_chain(&entries, 1, GENESIS);
    for (n, e) in entries.iter().enumerate() {
        let r = record(n);
        assert_eq!(e.session, SESSION);
        assert_eq!(
            (&e.actor, &e.action, &e.target, &e.outcome),
            (&r.actor, &r.action, &r.target, &r.outcome)
        );
        assert!(e.time_ms > 0);
    }
    assert!(
        entries.windows(2).all(|w| w[0].time_ms <= w[1].time_ms),
        "times never go backwards"
    );

    let v = f.verify().await;
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, 50);
    assert_eq!(v.first_bad, None);
    assert_eq!(v.head, entries[49].hash);
    assert_eq!(f.health.get(), v, "VerifyChain updates the shared health");
    assert_eq!(f.ledger.read(verify_db).unwrap(), v);
}

#[actix_rt::test]
async fn a_new_actor_after_a_restart_continues_the_chain() {
    let f = Fixture::new();
    for n in 0..3 {
        f.record(n).await.unwrap();
    }
    let audit = f.audit.clone();
    let (file, health) = f.shut_down().await;
    let gone = audit.send(Tail { n: 10, from: None }).await;
    assert!(matches!(gone, Err(MailboxError::Closed)), "{gone:?}");

    // As after a daemon restart: a new session over the same files.
    let (ledger, _disk) = file.open_ledger("session-2");
    let second = start(&ledger, &health);
    let seqs = join_all((3..6).map(|n| second.send(record(n))))
        .await
        .into_iter()
        .map(|a| a.unwrap().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(seqs, [4, 5, 6], "the sequence continues without a gap");

    let entries = second
        .send(Tail { n: 10, from: None })
        .await
        .unwrap()
        .unwrap();
    assert_chain(&entries, 1, GENESIS);
    assert_eq!(
        entries[3].prev_hash, entries[2].hash,
        "the restart links on"
    );
    let sessions: Vec<&str> = entries.iter().map(|e| e.session.as_str()).collect();
    assert_eq!(
        sessions,
        [
            "session-1",
            "session-1",
            "session-1",
            "session-2",
            "session-2",
            "session-2"
        ]
    );
    let v = second.send(VerifyChain).await.unwrap().unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, 6);

    // And from the database file alone, after both are gone (`Terminate` checkpoints).
    second.send(Terminate).await.unwrap();
    close(ledger).await;
    let db = file.reopen();
    let v = verify_db(&db).unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!((v.entries, v.head), (6, entries[5].hash.clone()));
}

#[actix_rt::test]
async fn a_restarted_audit_actor_continues_the_chain() {
    let file = DbFile::new();
    let (ledger, _disk) = file.open_ledger(SESSION);
    let health = Arc::new(AuditHealth::new(ledger.read(verify_db).unwrap()));
    let slot = ChildRef::<AuditActor>::new("audit");
    let (factory_ledger, factory_health) = (Arc::clone(&ledger), Arc::clone(&health));
    let spec = ChildSpec::worker("audit", RestartType::Permanent, slot.clone(), move || {
        Ok(AuditActor::new(
            Arc::clone(&factory_ledger),
            Arc::clone(&factory_health),
        ))
    });
    let sup = SupervisorActor::new("root", RestartPolicy::default(), vec![spec]).start();
    sup.send(GetTree).await.unwrap();

    let first = slot.get().unwrap();
    for n in 0..3 {
        first.send(record(n)).await.unwrap().unwrap();
    }
    let crashed = first.send(Inject(Fault::Panic)).await;
    assert!(matches!(crashed, Err(MailboxError::Closed)), "{crashed:?}");
    eventually("the audit actor to be restarted", || {
        let sup = sup.clone();
        async move {
            let child = sup
                .send(GetChild {
                    name: "audit".into(),
                })
                .await
                .unwrap()
                .unwrap();
            (child.restarts == 1 && child.state == ChildState::Running).then_some(())
        }
    })
    .await;

    let second = slot.get().unwrap();
    assert_eq!(second.send(record(3)).await.unwrap().unwrap(), 4);
    let entries = second
        .send(Tail { n: 10, from: None })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entries.len(), 4);
    assert_chain(&entries, 1, GENESIS);
    assert!(second.send(VerifyChain).await.unwrap().unwrap().ok);
    sup.send(ShutdownTree {
        reason: "test over".into(),
    })
    .await
    .unwrap();
}

#[actix_rt::test]
async fn tail_returns_the_last_n_entries_oldest_first() {
    let f = Fixture::new();
    assert!(f.tail(5).await.is_empty(), "an empty log has no tail");
    for n in 0..10 {
        f.record(n).await.unwrap();
    }
    let seqs = |entries: Vec<Entry>| entries.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(f.tail(3).await), [8, 9, 10]);
    assert_eq!(seqs(f.tail(1).await), [10]);
    assert!(f.tail(0).await.is_empty());
    assert_eq!(seqs(f.tail(10).await), (1..=10).collect::<Vec<_>>());
    assert_eq!(seqs(f.tail(usize::MAX).await), (1..=10).collect::<Vec<_>>());
    let last3 = f.tail(3).await;
    assert_eq!(last3[0].target, "key-7");
    assert_chain(&last3, 8, &f.tail(4).await[0].hash);
}

// ---------------------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn an_entry_altered_in_the_database_fails_verification() {
    let f = Fixture::new();
    for n in 0..5 {
        f.record(n).await.unwrap();
    }
    assert!(f.verify().await.ok);
    assert!(f.health.get().ok);

    // Altered in the file while the daemon is down (`Terminate` checkpointed the ledger, so
    // the entry is in the database file and not in the journal, which would restore it).
    let (file, health) = f.shut_down().await;
    tamper(&file.reopen(), 3, "ok (nothing to see here)");
    let (ledger, disk) = file.open_ledger(SESSION);
    let f = Fixture {
        audit: start(&ledger, &health),
        file,
        ledger,
        disk,
        health,
    };

    let direct = f.ledger.read(verify_db).unwrap();
    assert!(!direct.ok, "{direct:?}");
    assert_eq!(direct.first_bad, Some(3));
    let reason = direct.reason.clone().unwrap();
    assert!(reason.contains("entry 3"), "{reason}");
    assert!(reason.contains("altered"), "{reason}");
    assert!(f.health.get().ok, "health changes only when verified again");

    let through_actor = f.verify().await;
    assert_eq!(through_actor, direct);
    assert_eq!(f.health.get(), direct, "status now shows the broken chain");
    let tail = f.tail(5).await;
    assert_eq!(
        tail[2].outcome, "ok (nothing to see here)",
        "Tail shows what is stored"
    );

    // The log keeps going: new entries link to the last stored one, and the chain stays
    // reported broken at entry 3.
    assert_eq!(f.record(5).await.unwrap(), 6);
    let entries = f.tail(2).await;
    assert_eq!(entries[1].prev_hash, entries[0].hash);
    let again = f.verify().await;
    assert!(!again.ok);
    assert_eq!(again.first_bad, Some(3));
    assert_eq!(
        again.entries, 3,
        "verification stops at the first bad entry"
    );
}

// ---------------------------------------------------------------------------------------
// Storage failures
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_failed_commit_fails_its_records_and_leaves_the_chain_intact() {
    let f = Fixture::new();
    for n in 0..3 {
        f.record(n).await.unwrap();
    }
    let head = f.verify().await.head;

    f.disk.fill();
    let answers = join_all((3..8).map(|n| f.audit.send(record(n)))).await;
    for answer in answers {
        assert_storage_failure(&answer.unwrap());
    }
    f.disk.free();

    let entries = f.tail(100).await;
    assert_eq!(entries.len(), 3, "none of the failed records is stored");
    assert_chain(&entries, 1, GENESIS);
    let v = f.verify().await;
    assert!(v.ok, "{v:?}");
    assert_eq!((v.entries, &v.head), (3, &head));
    assert!(f.health.get().ok);

    let (file, _) = f.shut_down().await;
    let db = file.reopen();
    assert_eq!(stored_seqs(&db), [1, 2, 3]);
    let v = verify_db(&db).unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.head, head);
}

/// Once the disk has space again, records continue the chain from the last stored entry:
/// no gap in the sequence, the link intact.
#[actix_rt::test]
async fn records_after_a_failed_commit_continue_the_chain() {
    let f = Fixture::new();
    for n in 0..2 {
        f.record(n).await.unwrap();
    }
    f.disk.fill();
    assert_storage_failure(&f.record(2).await);
    f.disk.free();

    let next = f.record(3).await;
    assert!(
        matches!(next, Ok(3)),
        "the record after the disk was freed must get seq 3, got {next:?} (source: {:?})",
        next.as_ref()
            .err()
            .and_then(|e| std::error::Error::source(e).map(ToString::to_string))
    );
    assert_eq!(f.record(4).await.unwrap(), 4);
    let entries = f.tail(10).await;
    assert_eq!(entries.len(), 4);
    assert_chain(&entries, 1, GENESIS);
    assert_eq!(
        entries[2].target, "key-3",
        "the failed record left no trace"
    );
    assert!(f.verify().await.ok);
}
