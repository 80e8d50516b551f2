//! Key-value store replies: a listing of keys, and the store's counters in status.

use serde::{Deserialize, Serialize};

/// Counters of the store since its actor started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Writes (puts and deletes) handed to the ledger (a failed journal write fails them
    /// afterwards; their writers are told).
    pub writes: u64,
    /// Batches that carried them to the ledger (one journal write may carry several).
    pub commits: u64,
    /// Most writes carried by one batch.
    pub largest_batch: u64,
}

/// Result of `KvList`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Matching keys, in byte order.
    pub keys: Vec<String>,
    /// Whether more keys matched than `limit`.
    pub truncated: bool,
}
