//! The approval requests (`ListApprovals`, `AnswerApproval`): a client answers a capsule's
//! use of an `ask:` grant; the answer names the client in the audit log.

use super::{Dispatch, call};
use crate::approvals::{AnswerApproval, ListApprovals};
use crate::protocol::ApprovalAnswer;

/// `ListApprovals`.
pub(super) fn list(d: Dispatch<'_>) {
    let ask = call(
        &d.session.deps.services.approvals,
        ListApprovals,
        d.timeout(),
    );
    d.run(ask);
}

/// `AnswerApproval`.
pub(super) fn answer(d: Dispatch<'_>, id: u64, answer: ApprovalAnswer) {
    let msg = AnswerApproval {
        id,
        answer,
        by: d.session.audit_actor(),
    };
    let ask = call(&d.session.deps.services.approvals, msg, d.timeout());
    d.run(async move { Ok(ask.await??) });
}
