//! Actor-level tests of the key-value store (no socket), over a ledger on real redb and
//! journal files in temporary directories: get / put / delete / list across namespaces and
//! their isolation, key and value limits, group commit (many concurrent writers share few
//! batches), durability of every acknowledged write (reopening the ledger, and a copy of its
//! files taken while the actor still runs), audit entries written with puts and deletes in
//! the same batch (sharing one chain with the audit actor), a full disk (injected through a
//! failing journal) failing a whole batch without writing any of it, `Terminate` committing
//! pending writes, and a restart after a panic under a supervisor with the data intact.

use std::sync::Arc;

use crate::common::{DbFile, Disk, SESSION, close, eventually};
use actix::{Actor, Addr, Arbiter, MailboxError};
use astrid_actors::audit::chain::Entry;
use astrid_actors::audit::{AuditActor, AuditHealth, Record, Tail, VerifyChain, verify_db};
use astrid_actors::ledger::Ledger;
use astrid_actors::store::{
    CLIENT_NAMESPACE, Delete, Get, GetStoreStats, List, Listing, Namespaces, Put, Quota,
    StoreActor, StoreError, StoreLimits, StoreStats,
};
use astrid_actors::supervisor::{
    ChildRef, ChildSpec, ChildState, Fault, GetChild, GetTree, InjectFault, RestartPolicy,
    RestartType, ShutdownTree, SupervisorActor, Terminate,
};
use futures_util::future::join_all;
use redb::Database;

const CAPSULE_X: &str = "capsule:x";

/// Small limits so the edges are cheap to reach.
const LIMITS: StoreLimits = StoreLimits {
    max_key: 8,
    max_value: 16,
    quota: Quota::DEFAULT,
};

/// A store over a fresh ledger with the client namespace and `capsule:x` registered.
struct Fixture {
    file: DbFile,
    ledger: Arc<Ledger>,
    disk: Disk,
    namespaces: Arc<Namespaces>,
    store: Addr<StoreActor>,
}

impl Fixture {
    async fn new(limits: StoreLimits) -> Self {
        let file = DbFile::new();
        let (ledger, disk) = file.open_ledger(SESSION);
        let namespaces = Arc::new(Namespaces::default());
        namespaces.register(Namespaces::of_capsule("x"));
        let store = StoreActor::new(Arc::clone(&ledger), Arc::clone(&namespaces), limits).start();
        // `started()` (which raises the mailbox capacity) has run once the first answer is in.
        store.send(GetStoreStats).await.unwrap();
        Self {
            file,
            ledger,
            disk,
            namespaces,
            store,
        }
    }

    async fn put(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store.send(put_msg(ns, key, value)).await.unwrap()
    }

    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store
            .send(Get {
                namespace: ns.into(),
                key: key.into(),
            })
            .await
            .unwrap()
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<bool, StoreError> {
        self.store
            .send(Delete {
                namespace: ns.into(),
                key: key.into(),
                audit: None,
            })
            .await
            .unwrap()
    }

    async fn list(&self, ns: &str, prefix: &str, limit: usize) -> Result<Listing, StoreError> {
        self.store
            .send(List {
                namespace: ns.into(),
                prefix: prefix.into(),
                limit,
            })
            .await
            .unwrap()
    }

    async fn stats(&self) -> StoreStats {
        self.store.send(GetStoreStats).await.unwrap()
    }

    /// Stops the actor, waits until it has released the ledger, and closes it (without a
    /// checkpoint: what is only in the journal stays there); returns the files so they can
    /// be reopened.
    async fn shut_down(self) -> DbFile {
        self.store.send(Terminate).await.unwrap();
        close(self.ledger).await;
        self.file
    }

    /// Like [`Fixture::shut_down`], for a store that has already stopped.
    async fn shut_down_stopped(self) -> DbFile {
        close(self.ledger).await;
        self.file
    }
}

fn put_msg(ns: &str, key: &str, value: &[u8]) -> Put {
    Put {
        namespace: ns.into(),
        key: key.into(),
        value: value.to_vec(),
        audit: None,
    }
}

/// The physical key of `key` in namespace `ns`.
fn physical(ns: &str, key: &str) -> Vec<u8> {
    [ns.as_bytes(), b"\0", key.as_bytes()].concat()
}

/// Reads `key` of namespace `ns` straight from a ledger, without any actor.
fn stored(ledger: &Ledger, ns: &str, key: &str) -> Option<Vec<u8>> {
    ledger.get(&physical(ns, key)).unwrap()
}

/// Reads `key` of namespace `ns` straight from a database file, without any actor.
fn stored_in_file(db: &Database, ns: &str, key: &str) -> Option<Vec<u8>> {
    use redb::{ReadableDatabase, TableDefinition};
    const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
    let tx = db.begin_read().unwrap();
    let table = tx.open_table(KV).unwrap();
    table
        .get(physical(ns, key).as_slice())
        .unwrap()
        .map(|v| v.value().to_vec())
}

fn keys(listing: &Listing) -> Vec<&str> {
    listing.keys.iter().map(String::as_str).collect()
}

#[track_caller]
fn assert_invalid_key<T: std::fmt::Debug>(result: &Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::InvalidKey { .. })),
        "expected InvalidKey, got {result:?}"
    );
}

#[track_caller]
fn assert_storage_failure<T: std::fmt::Debug>(result: &Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::Storage { .. })),
        "expected a storage failure, got {result:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Operations and namespaces
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn put_get_delete_round_trip_in_the_client_and_a_capsule_namespace() {
    let f = Fixture::new(LIMITS).await;
    for ns in [CLIENT_NAMESPACE, CAPSULE_X] {
        assert_eq!(f.get(ns, "k").await.unwrap(), None);
        f.put(ns, "k", ns.as_bytes()).await.unwrap();
        assert_eq!(
            f.get(ns, "k").await.unwrap().as_deref(),
            Some(ns.as_bytes())
        );
        f.put(ns, "k", b"again").await.unwrap();
        assert_eq!(
            f.get(ns, "k").await.unwrap().as_deref(),
            Some(&b"again"[..])
        );
        f.put(ns, "empty", b"").await.unwrap();
        assert_eq!(f.get(ns, "empty").await.unwrap(), Some(Vec::new()));
    }
    assert!(f.delete(CLIENT_NAMESPACE, "k").await.unwrap(), "it existed");
    assert!(
        !f.delete(CLIENT_NAMESPACE, "k").await.unwrap(),
        "now it does not"
    );
    assert_eq!(f.get(CLIENT_NAMESPACE, "k").await.unwrap(), None);
    assert_eq!(
        f.get(CAPSULE_X, "k").await.unwrap().as_deref(),
        Some(&b"again"[..]),
        "a delete in one namespace leaves the same key of another alone"
    );
    let stats = f.stats().await;
    assert_eq!(stats.writes, 8, "six puts and two deletes: {stats:?}");
}

#[actix_rt::test]
async fn an_unregistered_namespace_is_refused_until_it_is_registered() {
    let f = Fixture::new(LIMITS).await;
    let unknown = |r: Result<_, StoreError>| match r {
        Err(StoreError::UnknownNamespace(ns)) => ns,
        other => panic!("expected UnknownNamespace, got {other:?}"),
    };
    assert_eq!(
        unknown(f.get("capsule:y", "k").await.map(drop)),
        "capsule:y"
    );
    assert_eq!(unknown(f.put("capsule:y", "k", b"v").await), "capsule:y");
    assert_eq!(
        unknown(f.delete("capsule:y", "k").await.map(drop)),
        "capsule:y"
    );
    assert_eq!(
        unknown(f.list("capsule:y", "", 10).await.map(drop)),
        "capsule:y"
    );
    assert_eq!(unknown(f.get("y", "k").await.map(drop)), "y");
    assert_eq!(unknown(f.get("", "k").await.map(drop)), "");
    assert_eq!(f.stats().await.writes, 0, "nothing was written");

    f.namespaces.register(Namespaces::of_capsule("y"));
    f.put("capsule:y", "k", b"v").await.unwrap();
    assert_eq!(
        f.get("capsule:y", "k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

#[actix_rt::test]
async fn keys_must_be_non_empty_short_and_free_of_nul() {
    let f = Fixture::new(LIMITS).await;
    let longest = "k".repeat(LIMITS.max_key);
    let too_long = "k".repeat(LIMITS.max_key + 1);
    f.put(CLIENT_NAMESPACE, &longest, b"v").await.unwrap();
    assert_eq!(
        f.get(CLIENT_NAMESPACE, &longest).await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    for bad in ["", too_long.as_str(), "a\0b", "\0"] {
        assert_invalid_key(&f.put(CLIENT_NAMESPACE, bad, b"v").await);
        assert_invalid_key(&f.get(CLIENT_NAMESPACE, bad).await);
        assert_invalid_key(&f.delete(CLIENT_NAMESPACE, bad).await);
    }
    assert_invalid_key(&f.list(CLIENT_NAMESPACE, "a\0", 10).await);
    // Multi-byte keys are measured in bytes: four 2-byte characters fit, five do not.
    f.put(CLIENT_NAMESPACE, "éééé", b"v").await.unwrap();
    assert_invalid_key(&f.put(CLIENT_NAMESPACE, "ééééé", b"v").await);
    assert_eq!(
        keys(&f.list(CLIENT_NAMESPACE, "", 10).await.unwrap()),
        [longest.as_str(), "éééé"],
        "only the valid keys were written"
    );
}

#[actix_rt::test]
async fn values_over_the_limit_are_refused_and_not_written() {
    let f = Fixture::new(LIMITS).await;
    let at_limit = vec![7u8; LIMITS.max_value];
    f.put(CLIENT_NAMESPACE, "fits", &at_limit).await.unwrap();
    assert_eq!(
        f.get(CLIENT_NAMESPACE, "fits").await.unwrap(),
        Some(at_limit)
    );
    let over = vec![7u8; LIMITS.max_value + 1];
    match f.put(CLIENT_NAMESPACE, "big", &over).await {
        Err(StoreError::ValueTooLarge { len, max }) => {
            assert_eq!((len, max), (LIMITS.max_value + 1, LIMITS.max_value));
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(f.get(CLIENT_NAMESPACE, "big").await.unwrap(), None);
    // An oversized value never replaces an existing one.
    match f.put(CLIENT_NAMESPACE, "fits", &over).await {
        Err(StoreError::ValueTooLarge { .. }) => {}
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(
        f.get(CLIENT_NAMESPACE, "fits")
            .await
            .unwrap()
            .map(|v| v.len()),
        Some(LIMITS.max_value)
    );
    assert_eq!(f.stats().await.writes, 1);
}

#[actix_rt::test]
async fn list_filters_by_prefix_in_byte_order_and_reports_truncation() {
    let f = Fixture::new(LIMITS).await;
    for key in ["b/2", "a", "b/1", "b/10", "b", "c/1", "ba"] {
        f.put(CLIENT_NAMESPACE, key, b"v").await.unwrap();
    }
    let all = f.list(CLIENT_NAMESPACE, "", 100).await.unwrap();
    assert_eq!(keys(&all), ["a", "b", "b/1", "b/10", "b/2", "ba", "c/1"]);
    assert!(!all.truncated);

    let b = f.list(CLIENT_NAMESPACE, "b/", 100).await.unwrap();
    assert_eq!(keys(&b), ["b/1", "b/10", "b/2"]);
    assert!(!b.truncated);

    let exactly = f.list(CLIENT_NAMESPACE, "b/", 3).await.unwrap();
    assert_eq!(keys(&exactly), ["b/1", "b/10", "b/2"]);
    assert!(
        !exactly.truncated,
        "exactly `limit` matches is not truncated"
    );

    let cut = f.list(CLIENT_NAMESPACE, "b/", 2).await.unwrap();
    assert_eq!(keys(&cut), ["b/1", "b/10"]);
    assert!(cut.truncated);

    let none = f.list(CLIENT_NAMESPACE, "b/", 0).await.unwrap();
    assert!(none.keys.is_empty());
    assert!(none.truncated, "matches exist beyond a limit of 0");

    let missing = f.list(CLIENT_NAMESPACE, "zz", 10).await.unwrap();
    assert_eq!(
        missing,
        Listing {
            keys: Vec::new(),
            truncated: false
        }
    );
    let whole = f.list(CLIENT_NAMESPACE, "b/10", 10).await.unwrap();
    assert_eq!(keys(&whole), ["b/10"], "a prefix equal to a whole key");
}

#[actix_rt::test]
async fn keys_of_one_namespace_never_show_in_another() {
    let f = Fixture::new(StoreLimits::default()).await;
    // `capsule:x` and `capsule:xy` share a prefix; the separator keeps them apart.
    f.namespaces.register(Namespaces::of_capsule("xy"));
    for (ns, key) in [
        (CLIENT_NAMESPACE, "shared"),
        (CLIENT_NAMESPACE, "client-1"),
        (CAPSULE_X, "shared"),
        (CAPSULE_X, "x-1"),
        ("capsule:xy", "shared"),
        ("capsule:xy", "xy-1"),
        ("capsule:xy", "y"),
    ] {
        f.put(ns, key, format!("{ns}/{key}").as_bytes())
            .await
            .unwrap();
    }
    let listing = |ns: &'static str| {
        let f = &f;
        async move { f.list(ns, "", 100).await.unwrap() }
    };
    assert_eq!(
        keys(&listing(CLIENT_NAMESPACE).await),
        ["client-1", "shared"]
    );
    assert_eq!(keys(&listing(CAPSULE_X).await), ["shared", "x-1"]);
    assert_eq!(keys(&listing("capsule:xy").await), ["shared", "xy-1", "y"]);
    // A prefix cannot reach into a neighbouring namespace either.
    assert!(f.list(CAPSULE_X, "y", 100).await.unwrap().keys.is_empty());
    for ns in [CLIENT_NAMESPACE, CAPSULE_X, "capsule:xy"] {
        assert_eq!(
            f.get(ns, "shared").await.unwrap(),
            Some(format!("{ns}/shared").into_bytes()),
            "each namespace reads its own value"
        );
    }
    assert_eq!(f.get(CAPSULE_X, "client-1").await.unwrap(), None);
    assert_eq!(f.get(CLIENT_NAMESPACE, "x-1").await.unwrap(), None);
    assert!(!f.delete(CLIENT_NAMESPACE, "xy-1").await.unwrap());
    assert_eq!(
        keys(&listing("capsule:xy").await),
        ["shared", "xy-1", "y"],
        "a delete elsewhere removed nothing here"
    );
}

// ---------------------------------------------------------------------------------------
// Group commit and durability
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn concurrent_puts_are_all_acknowledged_and_share_commits() {
    const WRITERS: usize = 200;
    let f = Fixture::new(StoreLimits::default()).await;
    let answers = join_all((0..WRITERS).map(|i| {
        f.store.send(put_msg(
            CLIENT_NAMESPACE,
            &format!("k{i:03}"),
            &i.to_le_bytes(),
        ))
    }))
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        answer
            .unwrap()
            .unwrap_or_else(|e| panic!("put {i} failed: {e}"));
    }
    let stats = f.stats().await;
    assert_eq!(stats.writes, WRITERS as u64, "{stats:?}");
    assert!(
        stats.commits < stats.writes,
        "writes share commits: {stats:?}"
    );
    assert!(stats.largest_batch > 1, "{stats:?}");
    let listing = f.list(CLIENT_NAMESPACE, "k", WRITERS + 1).await.unwrap();
    assert_eq!(listing.keys.len(), WRITERS);
    for i in [0, 99, WRITERS - 1] {
        assert_eq!(
            f.get(CLIENT_NAMESPACE, &format!("k{i:03}")).await.unwrap(),
            Some(i.to_le_bytes().to_vec())
        );
    }
}

#[actix_rt::test]
async fn acknowledged_puts_survive_reopening_the_file() {
    let f = Fixture::new(StoreLimits::default()).await;
    let answers = join_all((0..50).map(|i| {
        f.store.send(put_msg(
            CAPSULE_X,
            &format!("k{i}"),
            format!("v{i}").as_bytes(),
        ))
    }))
    .await;
    assert!(answers.into_iter().all(|a| a.unwrap().is_ok()));
    f.put(CLIENT_NAMESPACE, "last", b"one").await.unwrap();
    assert!(f.delete(CAPSULE_X, "k0").await.unwrap());

    // The files as a crash right now would leave them, with the actor still running.
    let image = f.file.crash_image();
    let (crashed, _) = image.open_ledger(SESSION);
    let file = f.shut_down().await;
    // Closed without a checkpoint: what the database file lacks comes back from the journal.
    let reopened = file.open_ledger_plain(SESSION);
    for ledger in [&crashed, &reopened] {
        for i in 1..50 {
            assert_eq!(
                stored(ledger, CAPSULE_X, &format!("k{i}")),
                Some(format!("v{i}").into_bytes())
            );
        }
        assert_eq!(
            stored(ledger, CAPSULE_X, "k0"),
            None,
            "the delete is durable too"
        );
        assert_eq!(
            stored(ledger, CLIENT_NAMESPACE, "last").as_deref(),
            Some(&b"one"[..])
        );
    }
    drop(crashed);

    // A new store over the reopened ledger serves the same data.
    let namespaces = Arc::new(Namespaces::default());
    namespaces.register(Namespaces::of_capsule("x"));
    let store = StoreActor::new(reopened, namespaces, StoreLimits::default()).start();
    let last = store
        .send(Get {
            namespace: CLIENT_NAMESPACE.into(),
            key: "last".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.as_deref(), Some(&b"one"[..]));
    let listing = store
        .send(List {
            namespace: CAPSULE_X.into(),
            prefix: "k".into(),
            limit: 100,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(listing.keys.len(), 49);
}

#[actix_rt::test]
async fn quotas_hold_under_concurrent_writes_and_a_failed_batch_gives_its_room_back() {
    let limits = StoreLimits {
        quota: Quota {
            max_keys: 5,
            max_bytes: 1000,
        },
        ..StoreLimits::default()
    };
    let f = Fixture::new(limits).await;
    // Twenty writers of distinct keys at once: five fit, in whatever batches they land.
    let answers = join_all((0..20).map(|i| {
        f.store
            .send(put_msg(CLIENT_NAMESPACE, &format!("k{i}"), b"v"))
    }))
    .await;
    let (ok, refused): (Vec<_>, Vec<_>) = answers
        .into_iter()
        .map(Result::unwrap)
        .partition(Result::is_ok);
    assert_eq!(ok.len(), 5);
    assert!(
        refused
            .iter()
            .all(|r| matches!(r, Err(StoreError::QuotaExceeded { what: "keys", .. })))
    );
    assert_eq!(
        f.list(CLIENT_NAMESPACE, "", 100).await.unwrap().keys.len(),
        5,
        "nothing refused was written"
    );
    // The same key written many times at once is one key.
    let answers =
        join_all((0..20).map(|_| f.store.send(put_msg(CLIENT_NAMESPACE, "k0", b"w")))).await;
    assert!(answers.into_iter().all(|a| a.unwrap().is_ok()));
    // Capsule `x` has a quota of its own.
    f.put(CAPSULE_X, "k", b"v").await.unwrap();

    // Writes of a batch that fails give their room back.
    for key in ["k1", "k2"] {
        assert!(f.delete(CLIENT_NAMESPACE, key).await.unwrap());
    }
    f.disk.fill();
    assert_storage_failure(&f.put(CLIENT_NAMESPACE, "lost1", b"x").await);
    assert_storage_failure(&f.put(CLIENT_NAMESPACE, "lost2", b"x").await);
    f.disk.free();
    f.put(CLIENT_NAMESPACE, "n1", b"x").await.unwrap();
    f.put(CLIENT_NAMESPACE, "n2", b"x").await.unwrap();
    let full = f.put(CLIENT_NAMESPACE, "n3", b"x").await;
    assert!(
        matches!(full, Err(StoreError::QuotaExceeded { .. })),
        "{full:?}"
    );
}

#[actix_rt::test]
async fn a_full_disk_fails_the_whole_batch_and_writes_none_of_it() {
    let f = Fixture::new(StoreLimits::default()).await;
    f.put(CLIENT_NAMESPACE, "before", b"1").await.unwrap();

    f.disk.fill();
    let answers = join_all((0..10).map(|i| {
        f.store
            .send(put_msg(CLIENT_NAMESPACE, &format!("lost{i}"), b"x"))
    }))
    .await;
    for answer in answers {
        let answer = answer.unwrap();
        assert_storage_failure(&answer);
        let message = answer.unwrap_err().to_string();
        assert!(message.contains("nothing was written"), "{message}");
    }
    let overwrite = f.put(CLIENT_NAMESPACE, "before", b"2").await;
    assert_storage_failure(&overwrite);
    assert_storage_failure(&f.delete(CLIENT_NAMESPACE, "before").await);
    f.disk.free();

    for i in 0..10 {
        assert_eq!(
            f.get(CLIENT_NAMESPACE, &format!("lost{i}")).await.unwrap(),
            None
        );
    }
    assert_eq!(
        keys(&f.list(CLIENT_NAMESPACE, "", 100).await.unwrap()),
        ["before"]
    );
    assert_eq!(
        f.get(CLIENT_NAMESPACE, "before").await.unwrap().as_deref(),
        Some(&b"1"[..]),
        "the write before the failure is untouched"
    );

    // Nor after a restart (which replays the journal).
    let file = f.shut_down().await;
    let ledger = file.open_ledger_plain(SESSION);
    assert_eq!(
        stored(&ledger, CLIENT_NAMESPACE, "before").as_deref(),
        Some(&b"1"[..])
    );
    for i in 0..10 {
        assert_eq!(stored(&ledger, CLIENT_NAMESPACE, &format!("lost{i}")), None);
    }
}

/// Once the disk has space again, the same store accepts writes again: a transient full
/// disk must not leave the key-value store failing until the daemon restarts.
#[actix_rt::test]
async fn the_store_accepts_writes_again_once_the_disk_has_space() {
    let f = Fixture::new(StoreLimits::default()).await;
    f.put(CLIENT_NAMESPACE, "before", b"1").await.unwrap();
    f.disk.fill();
    assert_storage_failure(&f.put(CLIENT_NAMESPACE, "lost", b"x").await);
    f.disk.free();

    let after = f.put(CLIENT_NAMESPACE, "after", b"3").await;
    assert!(
        after.is_ok(),
        "a put after the disk was freed must succeed, got {after:?} (source: {:?})",
        after
            .as_ref()
            .err()
            .and_then(|e| std::error::Error::source(e).map(ToString::to_string))
    );
    assert_eq!(
        f.get(CLIENT_NAMESPACE, "after").await.unwrap().as_deref(),
        Some(&b"3"[..])
    );
    let file = f.shut_down().await;
    let ledger = file.open_ledger_plain(SESSION);
    assert_eq!(
        stored(&ledger, CLIENT_NAMESPACE, "before").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        stored(&ledger, CLIENT_NAMESPACE, "after").as_deref(),
        Some(&b"3"[..])
    );
    assert_eq!(stored(&ledger, CLIENT_NAMESPACE, "lost"), None);
}

#[actix_rt::test]
async fn terminate_commits_and_answers_the_pending_writes() {
    let f = Fixture::new(StoreLimits::default()).await;
    // All of these are in the mailbox before the actor runs again: the writes are accepted
    // first, and `Terminate` arrives before the flush they scheduled.
    let pending: Vec<_> = (0..20)
        .map(|i| {
            f.store
                .send(put_msg(CLIENT_NAMESPACE, &format!("k{i:02}"), b"v"))
        })
        .collect();
    let delete = f.store.send(Delete {
        namespace: CLIENT_NAMESPACE.into(),
        key: "k00".into(),
        audit: None,
    });
    f.store.do_send(Terminate);
    for answer in join_all(pending).await {
        answer.unwrap().unwrap();
    }
    assert!(
        delete.await.unwrap().unwrap(),
        "k00 existed when it was deleted"
    );

    let after = f.store.send(GetStoreStats).await;
    assert!(
        matches!(after, Err(MailboxError::Closed)),
        "the store stopped: {after:?}"
    );
    // A checkpoint puts them in the database file itself.
    f.ledger.checkpoint().unwrap();
    let file = f.shut_down_stopped().await;
    let db = file.reopen();
    for i in 1..20 {
        assert_eq!(
            stored_in_file(&db, CLIENT_NAMESPACE, &format!("k{i:02}")).as_deref(),
            Some(&b"v"[..])
        );
    }
    assert_eq!(stored_in_file(&db, CLIENT_NAMESPACE, "k00"), None);
}

// ---------------------------------------------------------------------------------------
// Audit entries written with the data
// ---------------------------------------------------------------------------------------

/// The audit entry of a client's `action` on `key`.
fn kv_record(action: &str, key: &str) -> Record {
    Record::new("client:1", action, key, "ok")
}

/// A put of `key` carrying its audit entry.
fn audited_put(key: &str) -> Put {
    Put {
        audit: Some(kv_record("KvPut", key)),
        ..put_msg(CLIENT_NAMESPACE, key, b"v")
    }
}

async fn tail(audit: &Addr<AuditActor>) -> Vec<Entry> {
    audit
        .send(Tail { n: 100, from: None })
        .await
        .unwrap()
        .unwrap()
}

fn actions(entries: &[Entry]) -> Vec<(u64, &str, &str)> {
    entries
        .iter()
        .map(|e| (e.seq, e.action.as_str(), e.target.as_str()))
        .collect()
}

#[actix_rt::test]
async fn writes_carry_their_audit_entries_into_the_chain_of_the_audit_log() {
    let f = Fixture::new(LIMITS).await;
    let health = Arc::new(AuditHealth::new(f.ledger.read(verify_db).unwrap()));
    let audit = AuditActor::new(Arc::clone(&f.ledger), health).start();

    f.store.send(audited_put("a")).await.unwrap().unwrap();
    let boot = audit
        .send(Record::new("kernel", "boot", "daemon", "ok"))
        .await;
    assert_eq!(
        boot.unwrap().unwrap(),
        2,
        "the audit actor continues the chain"
    );
    let existed = f
        .store
        .send(Delete {
            namespace: CLIENT_NAMESPACE.into(),
            key: "a".into(),
            audit: Some(kv_record("KvDelete", "a")),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(existed);
    // One batch of writes, some with an entry and some without: the entries keep the order
    // of the writes.
    let answers = join_all((0..6).map(|i| {
        let key = format!("b{i}");
        f.store.send(if i % 2 == 0 {
            audited_put(&key)
        } else {
            put_msg(CLIENT_NAMESPACE, &key, b"v")
        })
    }))
    .await;
    assert!(answers.into_iter().all(|a| a.unwrap().is_ok()));

    let expected = [
        (1, "KvPut", "a"),
        (2, "boot", "daemon"),
        (3, "KvDelete", "a"),
        (4, "KvPut", "b0"),
        (5, "KvPut", "b2"),
        (6, "KvPut", "b4"),
    ];
    let entries = tail(&audit).await;
    assert_eq!(actions(&entries), expected);
    assert!(entries.iter().all(|e| e.session == SESSION));
    assert!(entries.windows(2).all(|w| w[1].prev_hash == w[0].hash));
    let v = audit.send(VerifyChain).await.unwrap().unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, 6);
    assert_eq!(f.ledger.read(verify_db).unwrap(), v);

    // A write and its entry are durable together: a crash image holds both.
    let image = f.file.crash_image();
    let (crashed, _) = image.open_ledger(SESSION);
    assert_eq!(
        stored(&crashed, CLIENT_NAMESPACE, "b4").as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(stored(&crashed, CLIENT_NAMESPACE, "a"), None);
    assert_eq!(crashed.read(verify_db).unwrap(), v);
    drop(crashed);

    // A refused write and a failed one leave no entry, and no gap in the chain.
    let refused = f
        .store
        .send(Put {
            audit: Some(kv_record("KvPut", "too-long-key")),
            ..put_msg(CLIENT_NAMESPACE, "too-long-key", b"v")
        })
        .await
        .unwrap();
    assert_invalid_key(&refused);
    f.disk.fill();
    assert_storage_failure(&f.store.send(audited_put("lost")).await.unwrap());
    f.disk.free();
    f.store.send(audited_put("c")).await.unwrap().unwrap();
    let entries = tail(&audit).await;
    assert_eq!(
        actions(&entries[5..]),
        [(6, "KvPut", "b4"), (7, "KvPut", "c")]
    );
    assert_eq!(entries[6].prev_hash, entries[5].hash);
    let v = audit.send(VerifyChain).await.unwrap().unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.entries, 7);
    assert_eq!(f.get(CLIENT_NAMESPACE, "lost").await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------
// Supervision
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_panicked_store_on_its_own_arbiter_is_restarted_over_the_same_data() {
    let file = DbFile::new();
    let (ledger, _disk) = file.open_ledger(SESSION);
    let namespaces = Arc::new(Namespaces::default());
    let arbiter = Arbiter::new();
    let slot = ChildRef::<StoreActor>::new("store");
    let factory_ledger = Arc::clone(&ledger);
    let spec = ChildSpec::worker_on(
        "store",
        RestartType::Permanent,
        slot.clone(),
        arbiter.handle(),
        move || {
            Ok(StoreActor::new(
                Arc::clone(&factory_ledger),
                Arc::clone(&namespaces),
                StoreLimits::default(),
            ))
        },
    );
    let sup = SupervisorActor::new("root", RestartPolicy::default(), vec![spec]).start();
    sup.send(GetTree).await.unwrap();

    let first = slot.get().unwrap();
    first
        .send(put_msg(CLIENT_NAMESPACE, "kept", b"safe"))
        .await
        .unwrap()
        .unwrap();
    sup.send(InjectFault {
        target: "store".into(),
        fault: Fault::Panic,
        dry_run: false,
    })
    .await
    .unwrap()
    .unwrap();

    let summary = eventually("the store to be restarted", || {
        let sup = sup.clone();
        async move {
            let child = sup
                .send(GetChild {
                    name: "store".into(),
                })
                .await
                .unwrap()
                .unwrap();
            (child.restarts == 1 && child.state == ChildState::Running).then_some(child)
        }
    })
    .await;
    let failure = summary.last_failure.unwrap();
    assert!(failure.contains("panicked"), "{failure}");
    eventually("the panicked incarnation to be gone", || {
        let first = first.clone();
        async move { (!first.connected()).then_some(()) }
    })
    .await;

    let second = slot.get().unwrap();
    assert!(second != first, "the slot points at the new incarnation");
    let kept = second
        .send(Get {
            namespace: CLIENT_NAMESPACE.into(),
            key: "kept".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.as_deref(),
        Some(&b"safe"[..]),
        "data written before the panic"
    );
    second
        .send(put_msg(CLIENT_NAMESPACE, "new", b"ok"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored(&ledger, CLIENT_NAMESPACE, "new").as_deref(),
        Some(&b"ok"[..])
    );
    assert_eq!(
        second.send(GetStoreStats).await.unwrap().writes,
        1,
        "the new incarnation starts with fresh counters"
    );

    sup.do_send(ShutdownTree {
        reason: "test over".into(),
    });
    eventually("the store to stop", || {
        let second = second.clone();
        async move { (!second.connected()).then_some(()) }
    })
    .await;
    arbiter.stop();
}
