//! The audit log: append-only, hash-chained entries in their own redb database, written with
//! group commit, verified at boot and on request.
//!
//! An entry is acknowledged (its sequence number returned) only once it is durable. The chain
//! head is read from the database when the actor starts, so a restarted actor continues the
//! same chain. A broken chain is reported (logged at error level and shown in status) but
//! never stops the daemon; new entries keep linking to the last stored one.
//!
//! Handles: [`Record`] (router, kernel, capability store), [`Tail`] and [`VerifyChain`]
//! (router), `Flush` (itself), [`Terminate`] (commits what is pending, then stops) and
//! [`Inject`].

pub mod chain;
mod messages;

use std::sync::{Arc, PoisonError, RwLock};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message, ResponseFuture};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use self::chain::{Entry, GENESIS, Verification, seal, verify};
pub use self::messages::{AuditError, Record, Tail, VerifyChain};
use crate::bus::unix_millis;
use crate::db::Db;
use crate::group_commit::GroupCommit;
use crate::supervisor::{Inject, Terminate, apply_fault};

/// Sequence number → entry (MessagePack, fields by name).
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Creates the table if the database is new.
///
/// # Errors
///
/// When the database cannot be written.
pub fn prepare(db: &Database) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    tx.open_table(ENTRIES)?;
    tx.commit()?;
    Ok(())
}

/// Reads and checks the whole log.
///
/// # Errors
///
/// When the database cannot be read at all (a damaged entry is a failed verification, not
/// an error).
pub fn verify_db(db: &Database) -> Result<Verification, redb::Error> {
    let tx = db.begin_read()?;
    let table = tx.open_table(ENTRIES)?;
    let mut stored = Vec::new();
    for item in table.iter()? {
        let (key, value) = item?;
        let entry = rmp_serde::from_slice::<Entry>(value.value()).map_err(|e| e.to_string());
        stored.push((key.value(), entry));
    }
    Ok(verify(stored))
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

/// Where the next entry goes.
#[derive(Debug, Clone)]
struct Head {
    next_seq: u64,
    last_hash: String,
}

fn load_head(db: &Database) -> Result<Head, redb::Error> {
    let tx = db.begin_read()?;
    let table = tx.open_table(ENTRIES)?;
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

type Outcome = Result<u64, AuditError>;

/// Commits everything pending.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

/// The audit actor.
#[derive(Debug)]
pub struct AuditActor {
    db: Arc<Db>,
    session: String,
    health: Arc<AuditHealth>,
    head: Head,
    writes: GroupCommit<Record, Outcome>,
}

impl AuditActor {
    /// An audit log over `db` (prepared with [`prepare`]) for session `session`.
    ///
    /// # Errors
    ///
    /// When the chain head cannot be read.
    pub fn new(db: Arc<Db>, session: String, health: Arc<AuditHealth>) -> Result<Self, String> {
        let head = db
            .handle()
            .and_then(|h| load_head(&h))
            .map_err(|e| format!("cannot read the audit log: {e}"))?;
        Ok(Self {
            db,
            session,
            health,
            head,
            writes: GroupCommit::default(),
        })
    }

    fn flush(&mut self) {
        let batch = self.writes.take();
        if batch.is_empty() {
            return;
        }
        let mut head = self.head.clone();
        let time_ms = unix_millis();
        let entries: Vec<Entry> = batch
            .iter()
            .map(|(r, _)| {
                let entry = seal(Entry {
                    seq: head.next_seq,
                    time_ms,
                    session: self.session.clone(),
                    actor: clip(&r.actor),
                    action: clip(&r.action),
                    target: clip(&r.target),
                    outcome: clip(&r.outcome),
                    prev_hash: head.last_hash.clone(),
                    hash: String::new(),
                });
                head.next_seq += 1;
                head.last_hash.clone_from(&entry.hash);
                entry
            })
            .collect();
        let written = self.db.handle().and_then(|db| write(&db, &entries));
        if written.is_err() {
            self.db.discard();
        }
        match written {
            Ok(()) => {
                self.head = head;
                for ((_, tx), entry) in batch.into_iter().zip(&entries) {
                    let _ = tx.send(Ok(entry.seq));
                }
            }
            Err(e) => {
                tracing::error!(entries = entries.len(), "audit commit failed: {e}");
                let shared = Arc::new(e);
                for (_, tx) in batch {
                    let _ = tx.send(Err(AuditError::Storage {
                        op: "commit",
                        source: Arc::clone(&shared),
                    }));
                }
            }
        }
    }
}

/// Longest field kept in an entry: enough for any valid key or path; entries describe
/// requests, they do not copy their data.
const MAX_FIELD: usize = 4096;

/// `text`, or its first [`MAX_FIELD`] bytes (on a character boundary) and its length.
fn clip(text: &str) -> String {
    if text.len() <= MAX_FIELD {
        return text.to_owned();
    }
    let mut cut = MAX_FIELD;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &text[..cut], text.len())
}

fn write(db: &Database, entries: &[Entry]) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    {
        let mut table = tx.open_table(ENTRIES)?;
        for entry in entries {
            let bytes = rmp_serde::to_vec_named(entry)
                .map_err(|e| redb::Error::Io(std::io::Error::other(e)))?;
            table.insert(entry.seq, bytes.as_slice())?;
        }
    }
    tx.commit()?;
    Ok(())
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
    type Result = Result<Vec<Entry>, AuditError>;

    fn handle(&mut self, msg: Tail, _: &mut Context<Self>) -> Self::Result {
        let read = |db: &Database| -> Result<Vec<Entry>, redb::Error> {
            let tx = db.begin_read()?;
            let table = tx.open_table(ENTRIES)?;
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
        self.db
            .handle()
            .and_then(|db| read(&db))
            .map_err(AuditError::storage("read"))
    }
}

impl Handler<VerifyChain> for AuditActor {
    type Result = Result<Verification, AuditError>;

    fn handle(&mut self, _: VerifyChain, _: &mut Context<Self>) -> Self::Result {
        self.flush();
        let verification = self
            .db
            .handle()
            .and_then(|db| verify_db(&db))
            .map_err(AuditError::storage("verify"))?;
        if !verification.ok {
            tracing::error!(
                first_bad = ?verification.first_bad,
                reason = ?verification.reason,
                "the audit chain is broken"
            );
        }
        self.health.set(verification.clone());
        Ok(verification)
    }
}

impl Handler<Terminate> for AuditActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        self.flush();
        ctx.stop();
    }
}

impl Handler<Inject> for AuditActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply_fault(msg.0, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_clipped_on_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(2100);
        let clipped = clip(&long);
        assert!(clipped.len() < 4200, "{}", clipped.len());
        assert!(clipped.ends_with("… (4200 bytes)"), "{clipped}");
    }
}
