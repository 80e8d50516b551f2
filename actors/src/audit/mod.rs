//! The audit log: append-only, hash-chained entries in the ledger's `audit` table, written
//! with group commit, verified at boot and on request.
//!
//! An entry is acknowledged (its sequence number returned) only once it is durable. The chain
//! head lives in the [`Ledger`], which the key-value store shares: a put and its entry are
//! written together there, and entries get their sequence numbers in commit order whichever
//! actor writes them. A broken chain is reported (logged at error level and shown in status)
//! but never stops the daemon; new entries keep linking to the last stored one. Like the
//! store, the actor runs on the sessions' arbiter without ever waiting for the disk: records
//! are staged in the ledger, and `Tail` and `VerifyChain` read on the blocking pool.
//!
//! The chain itself (entries, hashing, sealing, verification) lives next to the ledger that
//! stores it, in `ledger::chain`, re-exported here as [`chain`]: this module builds on the
//! ledger, never the reverse.
//!
//! Which requests are recorded is the [`AuditPolicy`]'s (`policy.rs`), which the router asks.
//!
//! Handles: [`Record`] (router, kernel, capability store), [`Tail`], [`VerifyChain`] and
//! [`Prune`] (router), `Flush` (itself), [`Terminate`] (commits what is pending, then
//! stops) and [`Inject`].

mod messages;
pub mod policy;

use std::sync::{Arc, PoisonError, RwLock};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message, ResponseFuture};
use redb::{Database, ReadableDatabase, ReadableTable};

use self::chain::{Entry, Verification, verify};
pub use self::messages::{AuditError, Prune, Record, Tail, VerifyChain};
pub use self::policy::{AuditPolicy, PolicyError};
use crate::group_commit::{GroupCommit, answer};
/// The hash chain (entries, hashing, verification), which lives next to the ledger that
/// stores it.
pub use crate::ledger::chain;
use crate::ledger::retention::Pruned;
use crate::ledger::{AUDIT, CommitResult, Ledger, LedgerError};
use crate::relay::Relay;
use crate::supervisor::{Inject, Terminate, apply_fault};

/// Reads and checks the whole log, of the daemon's database or of one opened read-only
/// (`astrid doctor` with no daemon running).
///
/// # Errors
///
/// When the database cannot be read at all (a damaged entry is a failed verification, not
/// an error).
pub fn verify_db(db: &impl ReadableDatabase) -> Result<Verification, redb::Error> {
    let tx = db.begin_read()?;
    let table = tx.open_table(AUDIT)?;
    let mut stored = Vec::new();
    for item in table.iter()? {
        let (key, value) = item?;
        let entry = rmp_serde::from_slice::<Entry>(value.value()).map_err(|e| e.to_string());
        stored.push((key.value(), entry));
    }
    Ok(verify(stored))
}

/// Opens the ledger database at `path` read-only and checks its log, with no daemon (for
/// `astrid doctor`). Only entries already in the database are checked, not those still in
/// the journal.
///
/// # Errors
///
/// When the file cannot be opened read-only (a daemon holds it, or it was not closed cleanly
/// and needs the repair a daemon does at its start) or cannot be read.
pub fn verify_file(path: &std::path::Path) -> Result<Verification, redb::Error> {
    let db = redb::ReadOnlyDatabase::open(path)?;
    verify_db(&db)
}

/// The result of the latest verification, for status.
#[derive(Debug)]
pub struct AuditHealth(RwLock<Verification>);

impl AuditHealth {
    /// Health as found by `verification`.
    pub fn new(verification: Verification) -> Self {
        Self(RwLock::new(verification))
    }

    /// The latest verification.
    pub fn get(&self) -> Verification {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, verification: Verification) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = verification;
    }
}

type Outcome = Result<u64, AuditError>;

/// Commits everything pending.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

/// The audit actor.
#[derive(Debug)]
pub struct AuditActor {
    ledger: Arc<Ledger>,
    relay: Relay,
    health: Arc<AuditHealth>,
    writes: GroupCommit<Record, Outcome>,
}

impl AuditActor {
    /// An audit log over `ledger`, reporting verifications to `health`.
    pub fn new(ledger: Arc<Ledger>, health: Arc<AuditHealth>) -> Self {
        Self {
            ledger,
            relay: Relay::direct(),
            health,
            writes: GroupCommit::default(),
        }
    }

    /// Answers recorders through `relay` (the arbiter most of them wait on) instead of from
    /// the ledger's syncer thread.
    #[must_use]
    pub fn answer_on(mut self, relay: Relay) -> Self {
        self.relay = relay;
        self
    }

    fn flush(&mut self) {
        let batch = self.writes.take();
        if batch.is_empty() {
            return;
        }
        let (records, senders): (Vec<Record>, Vec<_>) = batch.into_iter().unzip();
        let relay = self.relay.clone();
        let reply = move |result: CommitResult| {
            let outcome =
                result
                    .map(|committed| committed.seqs)
                    .map_err(|source| AuditError::Storage {
                        op: "commit",
                        source,
                    });
            answer(senders, outcome);
        };
        self.ledger.commit_then(
            Vec::new(),
            &records,
            Box::new(move |result| relay.run(move || reply(result))),
        );
    }
}

impl Actor for AuditActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<Record> for AuditActor {
    type Result = ResponseFuture<Outcome>;

    fn handle(&mut self, msg: Record, ctx: &mut Context<Self>) -> Self::Result {
        let (rx, schedule) = self.writes.submit(msg);
        if schedule {
            ctx.notify(Flush);
        }
        Box::pin(async move { rx.await.unwrap_or(Err(AuditError::Aborted)) })
    }
}

impl Handler<Flush> for AuditActor {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.flush();
    }
}

impl Handler<Tail> for AuditActor {
    type Result = ResponseFuture<Result<Vec<Entry>, AuditError>>;

    fn handle(&mut self, msg: Tail, _: &mut Context<Self>) -> Self::Result {
        let read = move |db: &Database| -> Result<Vec<Entry>, redb::Error> {
            let tx = db.begin_read()?;
            let table = tx.open_table(AUDIT)?;
            let decode =
                |item: Result<_, redb::StorageError>| -> Result<Option<Entry>, redb::Error> {
                    let (_, value): (_, redb::AccessGuard<'_, &[u8]>) = item?;
                    Ok(rmp_serde::from_slice::<Entry>(value.value()).ok())
                };
            let mut entries = Vec::with_capacity(msg.n.min(1024));
            if let Some(from) = msg.from {
                for item in table.range(from..)?.take(msg.n) {
                    entries.extend(decode(item)?);
                }
            } else {
                for item in table.iter()?.rev().take(msg.n) {
                    entries.extend(decode(item)?);
                }
                entries.reverse();
            }
            Ok(entries)
        };
        let ledger = Arc::clone(&self.ledger);
        Box::pin(async move {
            ledger
                .read_blocking(read)
                .await
                .map_err(AuditError::storage("read"))
        })
    }
}

impl Handler<VerifyChain> for AuditActor {
    type Result = ResponseFuture<Result<Verification, AuditError>>;

    fn handle(&mut self, _: VerifyChain, _: &mut Context<Self>) -> Self::Result {
        self.flush();
        let (ledger, health) = (Arc::clone(&self.ledger), Arc::clone(&self.health));
        Box::pin(async move {
            let verification = ledger
                .read_blocking(verify_db)
                .await
                .map_err(AuditError::storage("verify"))?;
            if !verification.ok {
                tracing::error!(
                    first_bad = ?verification.first_bad,
                    reason = ?verification.reason,
                    "the audit chain is broken"
                );
            }
            health.set(verification.clone());
            Ok(verification)
        })
    }
}

impl Handler<Prune> for AuditActor {
    type Result = ResponseFuture<Result<Pruned, AuditError>>;

    fn handle(&mut self, _: Prune, _: &mut Context<Self>) -> Self::Result {
        self.flush();
        let ledger = Arc::clone(&self.ledger);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || ledger.prune())
                .await
                .unwrap_or(Err(LedgerError::Interrupted))
                .map_err(AuditError::storage("prune"))
        })
    }
}

impl Handler<Terminate> for AuditActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        self.flush();
        if let Err(e) = self.ledger.checkpoint() {
            tracing::warn!("checkpoint at shutdown failed; the journal keeps the data: {e}");
        }
        ctx.stop();
    }
}

/// Storage faults arm the ledger it shares with the store.
impl Handler<Inject> for AuditActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        if !self.ledger.faults().inject(&msg.0) {
            apply_fault(&msg.0, ctx);
        }
    }
}
