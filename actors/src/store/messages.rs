//! Messages handled by [`StoreActor`](super::StoreActor), and its errors.
//!
//! Senders: the session router (for `KvGet`, `KvPut`, `KvDelete`, `KvList` in the client
//! namespace) and, from the capsule runtime on, capsule host functions (their own namespace).

use actix::Message;

use crate::audit::Record;
use crate::ledger::LedgerError;
pub use astrid_protocol::payload::store::{Listing, StoreStats};

/// The namespace of data written through the client API.
pub const CLIENT_NAMESPACE: &str = "client";

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The namespace is neither the client namespace nor a registered capsule's.
    #[error("unknown namespace `{0}`")]
    UnknownNamespace(String),
    /// The key is empty, too long, or holds a NUL byte.
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The value is over the limit.
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The write would take its namespace past its quota; nothing was written.
    #[error("namespace `{namespace}` is at its quota of {limit} {what}; nothing was written")]
    QuotaExceeded {
        /// The namespace.
        namespace: String,
        /// `keys` or `bytes`.
        what: &'static str,
        /// The quota.
        limit: u64,
    },
    /// The database or its journal failed (e.g. the disk is full); nothing of this
    /// operation was written.
    #[error("the key-value database failed during {op}; nothing was written")]
    Storage {
        /// What was being done.
        op: &'static str,
        /// The database error (shared by every write of a failed commit).
        #[source]
        source: std::sync::Arc<LedgerError>,
    },
    /// The commit carrying this write was abandoned (the store stopped).
    #[error("the store stopped before committing; nothing was written")]
    Aborted,
}

impl StoreError {
    pub(crate) fn storage(op: &'static str) -> impl FnOnce(LedgerError) -> Self {
        move |source| Self::Storage {
            op,
            source: std::sync::Arc::new(source),
        }
    }
}

/// Reads one key.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Vec<u8>>, StoreError>")]
pub struct Get {
    /// Namespace.
    pub namespace: String,
    /// Key.
    pub key: String,
}

/// Writes one key; answered once the write is durable.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Put {
    /// Namespace.
    pub namespace: String,
    /// Key.
    pub key: String,
    /// Value.
    pub value: Vec<u8>,
    /// The audit entry to write with it, durable together with the write (not written if
    /// the write fails: the caller records the failure).
    pub audit: Option<Record>,
}

/// Deletes one key; answered once durable, with whether it existed.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Delete {
    /// Namespace.
    pub namespace: String,
    /// Key.
    pub key: String,
    /// The audit entry to write with it, as for [`Put`].
    pub audit: Option<Record>,
}

/// A write for [`Deferred`].
#[derive(Debug)]
pub enum Write {
    /// A [`Put`].
    Put(Put),
    /// A [`Delete`].
    Delete(Delete),
}

/// A [`Put`] or [`Delete`] answered through `reply` rather than as the message's response:
/// once the write is durable the answer is sent from where the store delivers answers (see
/// `StoreActor::answer_on`), without a hop back through the store's thread. The answer is
/// what a `Delete` answers (for a put, always `false`); a dropped `reply` means the store
/// stopped before answering.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Deferred {
    /// The write.
    pub write: Write,
    /// Where its outcome goes.
    pub reply: tokio::sync::oneshot::Sender<Result<bool, StoreError>>,
}

/// Lists keys by prefix, in order.
#[derive(Debug, Message)]
#[rtype(result = "Result<Listing, StoreError>")]
pub struct List {
    /// Namespace.
    pub namespace: String,
    /// Only keys starting with this.
    pub prefix: String,
    /// At most this many.
    pub limit: usize,
}

/// Asks for [`StoreStats`].
#[derive(Debug, Message)]
#[rtype(result = "StoreStats")]
pub struct GetStoreStats;
