//! The audit log as clients read it (`AuditTail`, `AuditVerify`, status): one hash-chained
//! entry, and the outcome of checking the chain.

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
}
