//! The audit log as clients read it (`AuditTail`, `AuditVerify`, `AuditPrune`, status): one
//! hash-chained entry, the outcome of checking the chain, and what retention pruned.

use serde::{Deserialize, Serialize};

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The daemon session that wrote it.
    pub session: String,
    /// Who acted: `client:3 (astrid-cli, pid 42, uid 1000)`, `capsule:echo`, `kernel`, ...
    pub actor: String,
    /// What was done: a request name, `grant`, `deny`, `child_restarted`, `boot`, ...
    pub action: String,
    /// What it was done to: a key, a path, a capability, an actor name.
    pub target: String,
    /// `ok`, or an error code with its message.
    pub outcome: String,
    /// The previous entry's hash (hex), the genesis hash (64 zeros) for the first.
    pub prev_hash: String,
    /// This entry's hash (hex).
    pub hash: String,
}

/// The outcome of checking a whole log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Whether every entry is intact and linked.
    pub ok: bool,
    /// Entries checked.
    pub entries: u64,
    /// The first entry that fails, if any.
    pub first_bad: Option<u64>,
    /// Why it fails.
    pub reason: Option<String>,
    /// Hash of the last entry (the genesis hash (64 zeros) for an empty log).
    pub head: String,
    /// When older entries were pruned: the range they covered. The chain was verified from
    /// the anchor entry that stands for them (absent from daemons before retention).
    #[serde(default)]
    pub pruned: Option<PrunedRange>,
}

/// Entries removed by retention, as the anchor entry left in their place records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedRange {
    /// The first entry pruned (1 unless the log was started by an older daemon's anchor).
    pub first: u64,
    /// The last entry pruned; the anchor has its sequence number and hash.
    pub last: u64,
}

impl PrunedRange {
    /// How many entries were pruned.
    pub fn count(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// Result of `AuditPrune`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Entries removed by this prune (0 when the log was within its retention).
    pub removed: u64,
    /// Everything pruned so far, this prune included.
    pub pruned: Option<PrunedRange>,
    /// Entries kept, the anchor included.
    pub kept: u64,
    /// Why entries were removed: `age`, `size`, both, or nothing.
    pub reason: String,
}
