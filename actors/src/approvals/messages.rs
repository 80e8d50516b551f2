//! Messages handled by [`ApprovalsActor`](super::ApprovalsActor).
//!
//! Senders: a capsule's host imports ([`AskApproval`], when only an `ask:` grant covers what
//! they attempt) and the session router ([`ListApprovals`], [`AnswerApproval`]).

use std::time::Duration;

use actix::Message;

use super::table::Decision;
use crate::protocol::{ApprovalAnswer, ApprovalSettled, PendingApproval};

/// Capsule `capsule` attempts `access`, which only its `ask:` grant `grant` covers: ask the
/// user, and answer within `timeout` (a request nobody answers in time is denied).
#[derive(Debug, Message)]
#[rtype(result = "Decision")]
pub struct AskApproval {
    /// The capsule.
    pub capsule: String,
    /// What it attempts, as shown to the user.
    pub access: String,
    /// The `ask:` grant, as written.
    pub grant: String,
    /// How long the user has.
    pub timeout: Duration,
}

/// What waits for an answer, oldest first.
#[derive(Debug, Message)]
#[rtype(result = "Vec<PendingApproval>")]
pub struct ListApprovals;

/// The user's answer to request `id`, given through `by` (a client session).
#[derive(Debug, Message)]
#[rtype(result = "Result<ApprovalSettled, ApprovalError>")]
pub struct AnswerApproval {
    /// The request.
    pub id: u64,
    /// The answer.
    pub answer: ApprovalAnswer,
    /// Who answered, for the audit log.
    pub by: String,
}

/// Why an answer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// Nothing waits under that number.
    #[error("no approval #{0} is waiting: it was answered, it expired, or its call ended")]
    Unknown(u64),
    /// `always`: the grant could not be given (the use was denied).
    #[error("the grant `{grant}` could not be given, so the use was denied: {reason}")]
    Grant {
        /// The grant.
        grant: String,
        /// Why.
        reason: String,
    },
}
