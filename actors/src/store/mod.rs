//! The key-value store: one redb database, one namespace per capsule plus one for clients,
//! get / put / delete / list-by-prefix, with group commit.
//!
//! Writes are acknowledged only after the transaction that carries them is durable; writes
//! that arrive while a commit is in flight share the next transaction (see
//! `group_commit.rs`). The actor runs on its own arbiter, so fsyncs never
//! block the sessions. The database is opened once by the kernel and shared across restarts
//! of the actor, so a crash never leaves it locked; after a failed commit it is reopened (see
//! [`Db`]), so a disk that was full accepts writes again once it has space.
//!
//! Handles: [`Get`], [`Put`], [`Delete`], [`List`] (the session router, capsule host
//! functions), `Flush` (itself), and the supervision messages [`Terminate`] (commits what is
//! pending, then stops) and [`Inject`].

mod messages;

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

use actix::{
    Actor, ActorContext, AsyncContext, Context, Handler, Message, MessageResult, ResponseFuture,
};
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::db::Db;

pub use self::messages::{
    CLIENT_NAMESPACE, Delete, Get, GetStoreStats, List, Listing, Put, StoreError, StoreStats,
};
use crate::group_commit::GroupCommit;
use crate::supervisor::{Inject, Terminate, apply_fault};

/// Physical key = namespace, NUL, key.
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// Size limits of keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Longest key, in bytes.
    pub max_key: usize,
    /// Largest value, in bytes.
    pub max_value: usize,
}

impl Default for StoreLimits {
    /// Keys up to 1 KiB, values up to 1 MiB.
    fn default() -> Self {
        Self {
            max_key: 1024,
            max_value: 1024 * 1024,
        }
    }
}

/// The namespaces that exist: the client namespace, and one per registered capsule. Shared
/// with whoever registers capsules, and kept across restarts of the store actor.
#[derive(Debug)]
pub struct Namespaces(RwLock<BTreeSet<String>>);

impl Default for Namespaces {
    fn default() -> Self {
        Self(RwLock::new(BTreeSet::from([CLIENT_NAMESPACE.to_owned()])))
    }
}

impl Namespaces {
    /// The namespace of capsule `name`.
    pub fn of_capsule(name: &str) -> String {
        format!("capsule:{name}")
    }

    /// Makes `namespace` usable.
    pub fn register(&self, namespace: impl Into<String>) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(namespace.into());
    }

    /// Whether `namespace` exists.
    pub fn contains(&self, namespace: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(namespace)
    }
}

/// Creates the table if the database is new.
///
/// # Errors
///
/// When the database cannot be written.
pub fn prepare(db: &Database) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    tx.open_table(KV)?;
    tx.commit()?;
    Ok(())
}

#[derive(Debug)]
enum WriteOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

type Outcome = Result<bool, StoreError>;

/// Commits everything pending.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

/// The store actor.
#[derive(Debug)]
pub struct StoreActor {
    db: Arc<Db>,
    namespaces: Arc<Namespaces>,
    limits: StoreLimits,
    writes: GroupCommit<WriteOp, Outcome>,
    stats: StoreStats,
}

impl StoreActor {
    /// A store over `db` (opened with [`prepare`] in its opener).
    pub fn new(db: Arc<Db>, namespaces: Arc<Namespaces>, limits: StoreLimits) -> Self {
        Self {
            db,
            namespaces,
            limits,
            writes: GroupCommit::default(),
            stats: StoreStats::default(),
        }
    }

    fn key(&self, namespace: &str, key: &str) -> Result<Vec<u8>, StoreError> {
        if !self.namespaces.contains(namespace) {
            return Err(StoreError::UnknownNamespace(namespace.to_owned()));
        }
        check_key(key, self.limits.max_key)?;
        Ok(physical(namespace, key))
    }

    fn submit(&mut self, op: WriteOp, ctx: &mut Context<Self>) -> ResponseFuture<Outcome> {
        let (rx, schedule) = self.writes.submit(op);
        if schedule {
            ctx.notify(Flush);
        }
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Aborted)) })
    }

    /// Commits the pending writes in one durable transaction and answers every writer.
    fn flush(&mut self) {
        let batch = self.writes.take();
        if batch.is_empty() {
            return;
        }
        let committed = self.db.handle().and_then(|db| commit(&db, &batch));
        if committed.is_err() {
            self.db.discard();
        }
        match committed {
            Ok(results) => {
                let n = batch.len() as u64;
                self.stats.commits += 1;
                self.stats.writes += n;
                self.stats.largest_batch = self.stats.largest_batch.max(n);
                for ((_, tx), existed) in batch.into_iter().zip(results) {
                    let _ = tx.send(Ok(existed));
                }
            }
            Err(e) => {
                tracing::error!(writes = batch.len(), "key-value commit failed: {e}");
                let shared = Arc::new(e);
                for (_, tx) in batch {
                    let _ = tx.send(Err(StoreError::Storage {
                        op: "commit",
                        source: Arc::clone(&shared),
                    }));
                }
            }
        }
    }
}

fn physical(namespace: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + 1 + key.len());
    k.extend_from_slice(namespace.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn check_key(key: &str, max: usize) -> Result<(), StoreError> {
    let reason = if key.is_empty() {
        "it is empty"
    } else if key.len() > max {
        "it is longer than the limit"
    } else if key.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidKey { reason })
}

fn commit(
    db: &Database,
    batch: &[(WriteOp, tokio::sync::oneshot::Sender<Outcome>)],
) -> Result<Vec<bool>, redb::Error> {
    let tx = db.begin_write()?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut table = tx.open_table(KV)?;
        for (op, _) in batch {
            match op {
                WriteOp::Put { key, value } => {
                    table.insert(key.as_slice(), value.as_slice())?;
                    results.push(true);
                }
                WriteOp::Delete { key } => results.push(table.remove(key.as_slice())?.is_some()),
            }
        }
    }
    tx.commit()?;
    Ok(results)
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Many writers at once must queue here, not wait outside: the queue is the batch.
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<Get> for StoreActor {
    type Result = Result<Option<Vec<u8>>, StoreError>;

    fn handle(&mut self, msg: Get, _: &mut Context<Self>) -> Self::Result {
        let key = self.key(&msg.namespace, &msg.key)?;
        let read = |db: &Database| -> Result<Option<Vec<u8>>, redb::Error> {
            let tx = db.begin_read()?;
            let table = tx.open_table(KV)?;
            Ok(table.get(key.as_slice())?.map(|v| v.value().to_vec()))
        };
        self.db
            .handle()
            .and_then(|db| read(&db))
            .map_err(StoreError::storage("read"))
    }
}

impl Handler<Put> for StoreActor {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: Put, ctx: &mut Context<Self>) -> Self::Result {
        let checked = self.key(&msg.namespace, &msg.key).and_then(|key| {
            if msg.value.len() > self.limits.max_value {
                Err(StoreError::ValueTooLarge {
                    len: msg.value.len(),
                    max: self.limits.max_value,
                })
            } else {
                Ok(key)
            }
        });
        let key = match checked {
            Ok(key) => key,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let done = self.submit(
            WriteOp::Put {
                key,
                value: msg.value,
            },
            ctx,
        );
        Box::pin(async move { done.await.map(drop) })
    }
}

impl Handler<Delete> for StoreActor {
    type Result = ResponseFuture<Result<bool, StoreError>>;

    fn handle(&mut self, msg: Delete, ctx: &mut Context<Self>) -> Self::Result {
        match self.key(&msg.namespace, &msg.key) {
            Ok(key) => self.submit(WriteOp::Delete { key }, ctx),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

impl Handler<List> for StoreActor {
    type Result = Result<Listing, StoreError>;

    fn handle(&mut self, msg: List, _: &mut Context<Self>) -> Self::Result {
        if !self.namespaces.contains(&msg.namespace) {
            return Err(StoreError::UnknownNamespace(msg.namespace));
        }
        if msg.prefix.contains('\0') {
            return Err(StoreError::InvalidKey {
                reason: "the prefix contains a NUL byte",
            });
        }
        let start = physical(&msg.namespace, &msg.prefix);
        let skip = msg.namespace.len() + 1;
        let list = |db: &Database| -> Result<Listing, redb::Error> {
            let tx = db.begin_read()?;
            let table = tx.open_table(KV)?;
            let mut keys = Vec::new();
            let mut truncated = false;
            for item in table.range(start.as_slice()..)? {
                let (key, _) = item?;
                let key = key.value();
                if !key.starts_with(&start) {
                    break;
                }
                if keys.len() == msg.limit {
                    truncated = true;
                    break;
                }
                keys.push(String::from_utf8_lossy(&key[skip..]).into_owned());
            }
            Ok(Listing { keys, truncated })
        };
        self.db
            .handle()
            .and_then(|db| list(&db))
            .map_err(StoreError::storage("list"))
    }
}

impl Handler<GetStoreStats> for StoreActor {
    type Result = MessageResult<GetStoreStats>;

    fn handle(&mut self, _: GetStoreStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats)
    }
}

impl Handler<Flush> for StoreActor {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.flush();
    }
}

impl Handler<Terminate> for StoreActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        // Writes already accepted are committed and answered before stopping.
        self.flush();
        ctx.stop();
    }
}

impl Handler<Inject> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply_fault(msg.0, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("a", 4).is_ok());
        assert!(matches!(
            check_key("", 4),
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            check_key("abcde", 4),
            Err(StoreError::InvalidKey { .. })
        ));
        assert!(matches!(
            check_key("a\0b", 4),
            Err(StoreError::InvalidKey { .. })
        ));
    }

    #[test]
    fn namespaces_cannot_collide_through_keys() {
        // "a" + key "b\0c"-like tricks are impossible: keys cannot hold NUL, namespaces are
        // registered names, and the separator is NUL.
        assert_eq!(physical("client", "k"), b"client\0k");
        assert_ne!(physical("capsule:a", "x"), physical("capsule", "a:x"));
    }

    #[test]
    fn only_registered_namespaces_exist() {
        let ns = Namespaces::default();
        assert!(ns.contains(CLIENT_NAMESPACE));
        assert!(!ns.contains("capsule:echo"));
        ns.register(Namespaces::of_capsule("echo"));
        assert!(ns.contains("capsule:echo"));
    }
}
