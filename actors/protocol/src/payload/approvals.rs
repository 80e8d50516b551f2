//! Approvals: a capsule's use of an `ask:` grant waits for the user. What `ListApprovals`
//! returns and the `approval.requested` event carries, the answers `AnswerApproval` takes,
//! and what the `approval.answered` event says.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The topic of the event that asks connected frontends to answer.
pub const APPROVAL_REQUESTED: &str = "approval.requested";
/// The topic of the event that says how a request was settled.
pub const APPROVAL_ANSWERED: &str = "approval.answered";

/// A use waiting for the user's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// Its number, for `AnswerApproval`.
    pub id: u64,
    /// The capsule asking.
    pub capsule: String,
    /// What it attempts, e.g. `net:http GET https://api.example.com:443/v1/chat`.
    pub access: String,
    /// The `ask:` grant that covers it, as written.
    pub grant: String,
    /// When it asked, milliseconds since the Unix epoch.
    pub asked_ms: u64,
    /// When it is denied unless answered first, milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// The user's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalAnswer {
    /// Allowed, this time only.
    Once,
    /// Allowed, and from now on: the grant is given outright, persisted as a runtime grant.
    Always,
    /// Refused (the capsule sees its import fail as denied).
    Deny,
}

impl ApprovalAnswer {
    /// The answer as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Once => "once",
            Self::Always => "always",
            Self::Deny => "deny",
        }
    }
}

impl fmt::Display for ApprovalAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalAnswer {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "once" => Ok(Self::Once),
            "always" => Ok(Self::Always),
            "deny" => Ok(Self::Deny),
            _ => Err(format!("`{text}` is not an answer: once, always or deny")),
        }
    }
}

/// How a request was settled: the `approval.answered` event, and `AnswerApproval`'s result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalSettled {
    /// The request's number.
    pub id: u64,
    /// The capsule that asked.
    pub capsule: String,
    /// Whether the use went ahead.
    pub approved: bool,
    /// `once`, `always` or `deny` by whom, `expired`, or why it was refused without asking.
    pub outcome: String,
}
