//! The key-value store: the ledger's `kv` table, one namespace per capsule plus one for
//! clients, get / put / delete / list-by-prefix, with group commit.
//!
//! Writes are acknowledged only after the batch that carries them is durable; writes that
//! arrive while a commit is in flight share the next batch (see `group_commit.rs`). A write
//! may carry its audit entry, which the [`Ledger`] makes durable together with it. The actor
//! runs on the sessions' arbiter yet never waits for the disk: writes are only staged in the
//! ledger, whose own threads write and sync the journal, and reads that may touch the disk run
//! on the blocking pool. The ledger is opened once by the kernel and shared across restarts of
//! the actor; after a failed commit its database is reopened, so a disk that was full accepts
//! writes again once it has space. Each namespace holds at most its quota of keys and bytes
//! (`quota.rs`); a write past it is refused before anything is staged.
//!
//! Handles: [`Get`], [`Put`], [`Delete`], [`Deferred`] (writes answered from where they
//! become durable), [`List`] (the session router, capsule host functions), `Flush` (itself),
//! and the supervision messages [`Terminate`] (commits what is pending, then stops) and
//! [`Inject`].

mod messages;
pub mod quota;

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

use actix::{
    Actor, ActorContext, AsyncContext, Context, Handler, Message, MessageResult, ResponseFuture,
};
use redb::{Database, ReadableDatabase};
use tokio::sync::oneshot;

use crate::audit::Record;
use crate::group_commit::answer;
use crate::ledger::{CommitResult, KV, KvChange, Ledger};
use crate::relay::Relay;

pub use self::messages::{
    CLIENT_NAMESPACE, Deferred, Delete, Get, GetStoreStats, List, Listing, Put, StoreError,
    StoreStats, Write,
};
pub use self::quota::{Quota, Usage};
use self::quota::{Quotas, count};
use crate::group_commit::GroupCommit;
use crate::supervisor::{Inject, Terminate, apply_fault};

/// Size limits of keys and values, and what each namespace may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Longest key, in bytes.
    pub max_key: usize,
    /// Largest value, in bytes.
    pub max_value: usize,
    /// Keys and bytes per namespace.
    pub quota: Quota,
}

impl Default for StoreLimits {
    /// Keys up to 1 KiB, values up to 1 MiB, and [`Quota::default`].
    fn default() -> Self {
        Self {
            max_key: 1024,
            max_value: 1024 * 1024,
            quota: Quota::default(),
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

/// A change waiting for the next commit, with the audit entry to write along with it.
#[derive(Debug)]
struct WriteOp {
    change: KvChange,
    audit: Option<Record>,
}

type Outcome = Result<bool, StoreError>;

/// Commits everything pending.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

/// The store actor.
#[derive(Debug)]
pub struct StoreActor {
    ledger: Arc<Ledger>,
    relay: Relay,
    namespaces: Arc<Namespaces>,
    limits: StoreLimits,
    /// What each namespace holds, counted when the actor starts.
    quotas: Quotas,
    writes: GroupCommit<WriteOp, Outcome>,
    stats: StoreStats,
}

impl StoreActor {
    /// A store over the `kv` table of `ledger`.
    pub fn new(ledger: Arc<Ledger>, namespaces: Arc<Namespaces>, limits: StoreLimits) -> Self {
        Self {
            quotas: Quotas::new(limits.quota, std::collections::HashMap::new()),
            ledger,
            relay: Relay::direct(),
            namespaces,
            limits,
            writes: GroupCommit::default(),
            stats: StoreStats::default(),
        }
    }

    /// Answers writers through `relay` (the arbiter most writers wait on) instead of from
    /// the ledger's syncer thread.
    #[must_use]
    pub fn answer_on(mut self, relay: Relay) -> Self {
        self.relay = relay;
        self
    }

    fn key(&self, namespace: &str, key: &str) -> Result<Vec<u8>, StoreError> {
        if !self.namespaces.contains(namespace) {
            return Err(StoreError::UnknownNamespace(namespace.to_owned()));
        }
        check_key(key, self.limits.max_key)?;
        Ok(physical(namespace, key))
    }

    /// Hands the pending writes (and their audit entries) to the ledger as one batch; each
    /// writer is answered once it is durable.
    fn flush(&mut self) {
        let batch = self.writes.take();
        if batch.is_empty() {
            return;
        }
        let mut changes = Vec::with_capacity(batch.len());
        let mut records = Vec::new();
        let mut senders = Vec::with_capacity(batch.len());
        for (op, tx) in batch {
            changes.push(op.change);
            records.extend(op.audit);
            senders.push(tx);
        }
        let n = senders.len() as u64;
        let settle = self.quotas.seal();
        self.stats.commits += 1;
        self.stats.writes += n;
        self.stats.largest_batch = self.stats.largest_batch.max(n);
        let relay = self.relay.clone();
        let reply = move |result: CommitResult| {
            settle.done(result.is_ok());
            let outcome =
                result
                    .map(|committed| committed.removed)
                    .map_err(|source| StoreError::Storage {
                        op: "commit",
                        source,
                    });
            answer(senders, outcome);
        };
        self.ledger.commit_then(
            changes,
            &records,
            Box::new(move |result| relay.run(move || reply(result))),
        );
    }
}

/// The size `physical`'s durable value counts for in its namespace's quota (its key and
/// value bytes), if it exists.
fn durable_size(ledger: &Ledger, physical: &[u8]) -> Result<Option<u64>, StoreError> {
    let value = ledger.get(physical).map_err(StoreError::storage("read"))?;
    let key_len = physical
        .iter()
        .position(|&b| b == 0)
        .map_or(0, |at| physical.len() - at - 1);
    Ok(value.map(|v| (key_len + v.len()) as u64))
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

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Many writers at once must queue here, not wait outside: the queue is the batch.
        ctx.set_mailbox_capacity(4096);
        // Every incarnation counts what the namespaces hold (before its first message).
        match self.ledger.read(count) {
            Ok(usage) => self.quotas = Quotas::new(self.limits.quota, usage),
            Err(e) => tracing::error!("cannot count the namespaces for their quotas: {e}"),
        }
    }
}

impl Handler<Get> for StoreActor {
    type Result = ResponseFuture<Result<Option<Vec<u8>>, StoreError>>;

    fn handle(&mut self, msg: Get, _: &mut Context<Self>) -> Self::Result {
        let key = match self.key(&msg.namespace, &msg.key) {
            Ok(key) => key,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        // A point read: from the ledger's overlay, or one B-tree lookup in pages redb and
        // the kernel keep cached; done in place.
        let read = self.ledger.get(&key).map_err(StoreError::storage("read"));
        Box::pin(async move { read })
    }
}

impl StoreActor {
    /// Checks a write, within its namespace's quota, and turns it into the operation to
    /// commit.
    fn accept(&mut self, write: Write) -> Result<WriteOp, StoreError> {
        match write {
            Write::Put(put) => {
                let key = self.key(&put.namespace, &put.key)?;
                if put.value.len() > self.limits.max_value {
                    return Err(StoreError::ValueTooLarge {
                        len: put.value.len(),
                        max: self.limits.max_value,
                    });
                }
                let size = (put.key.len() + put.value.len()) as u64;
                let ledger = &self.ledger;
                self.quotas
                    .admit(&key, Some(size), || durable_size(ledger, &key))?;
                Ok(WriteOp {
                    change: KvChange::Put {
                        key,
                        value: put.value,
                    },
                    audit: put.audit,
                })
            }
            Write::Delete(delete) => {
                let key = self.key(&delete.namespace, &delete.key)?;
                let ledger = &self.ledger;
                self.quotas
                    .admit(&key, None, || durable_size(ledger, &key))?;
                Ok(WriteOp {
                    change: KvChange::Delete { key },
                    audit: delete.audit,
                })
            }
        }
    }

    /// Queues `write` for the next commit, its outcome going to `reply`.
    fn enqueue(&mut self, write: Write, reply: oneshot::Sender<Outcome>, ctx: &mut Context<Self>) {
        match self.accept(write) {
            Ok(op) => {
                if self.writes.submit_with(op, reply) {
                    ctx.notify(Flush);
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Queues `write` and answers it as the message's response.
    fn respond(&mut self, write: Write, ctx: &mut Context<Self>) -> ResponseFuture<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(write, tx, ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Aborted)) })
    }
}

impl Handler<Put> for StoreActor {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: Put, ctx: &mut Context<Self>) -> Self::Result {
        let done = self.respond(Write::Put(msg), ctx);
        Box::pin(async move { done.await.map(drop) })
    }
}

impl Handler<Delete> for StoreActor {
    type Result = ResponseFuture<Result<bool, StoreError>>;

    fn handle(&mut self, msg: Delete, ctx: &mut Context<Self>) -> Self::Result {
        self.respond(Write::Delete(msg), ctx)
    }
}

impl Handler<Deferred> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: Deferred, ctx: &mut Context<Self>) {
        self.enqueue(msg.write, msg.reply, ctx);
    }
}

impl Handler<List> for StoreActor {
    type Result = ResponseFuture<Result<Listing, StoreError>>;

    fn handle(&mut self, msg: List, _: &mut Context<Self>) -> Self::Result {
        if !self.namespaces.contains(&msg.namespace) {
            return Box::pin(async move { Err(StoreError::UnknownNamespace(msg.namespace)) });
        }
        if msg.prefix.contains('\0') {
            return Box::pin(async move {
                Err(StoreError::InvalidKey {
                    reason: "the prefix contains a NUL byte",
                })
            });
        }
        let start = physical(&msg.namespace, &msg.prefix);
        let skip = msg.namespace.len() + 1;
        let list = move |db: &Database| -> Result<Listing, redb::Error> {
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
        let ledger = Arc::clone(&self.ledger);
        Box::pin(async move {
            ledger
                .read_blocking(list)
                .await
                .map_err(StoreError::storage("list"))
        })
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

/// Storage faults arm the ledger it shares with the audit log.
impl Handler<Inject> for StoreActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        if !self.ledger.faults().inject(&msg.0) {
            apply_fault(&msg.0, ctx);
        }
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
