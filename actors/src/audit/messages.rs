//! Messages handled by [`AuditActor`](super::AuditActor), and its errors.
//!
//! Senders: the session router (every request and its outcome, `AuditTail`, `AuditVerify`,
//! `AuditPrune`),
//! the kernel (boot, shutdown, actor lifecycle), the capability store (grants, revokes,
//! denials).

use actix::Message;

use super::chain::{Entry, Verification};
use crate::ledger::LedgerError;
use crate::ledger::retention::Pruned;

/// Why the audit log could not be written or read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The database failed; the entries of this commit were not written.
    #[error("the audit database failed during {op}")]
    Storage {
        /// What was being done.
        op: &'static str,
        /// The database error (shared by every entry of a failed commit).
        #[source]
        source: std::sync::Arc<LedgerError>,
    },
    /// The commit carrying this entry was abandoned (the audit actor stopped).
    #[error("the audit log stopped before committing the entry")]
    Aborted,
}

impl AuditError {
    pub(crate) fn storage(op: &'static str) -> impl FnOnce(LedgerError) -> Self {
        move |source| Self::Storage {
            op,
            source: std::sync::Arc::new(source),
        }
    }
}

/// Appends one entry; answered with its sequence number once it is durable. The record is
/// the chain's own (it lives next to the ledger, which seals it).
pub use crate::ledger::chain::Record;

impl Message for Record {
    type Result = Result<u64, AuditError>;
}

/// Up to `n` entries, oldest first: the last ones, or those from sequence number `from` on.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Entry>, AuditError>")]
pub struct Tail {
    /// How many.
    pub n: usize,
    /// Start at this sequence number instead of ending at the last entry (for paging).
    pub from: Option<u64>,
}

/// Applies the log's retention now (see `ledger::retention`).
#[derive(Debug, Message)]
#[rtype(result = "Result<Pruned, AuditError>")]
pub struct Prune;

/// Verifies the whole chain.
#[derive(Debug, Message)]
#[rtype(result = "Result<Verification, AuditError>")]
pub struct VerifyChain;
