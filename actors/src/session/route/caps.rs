//! Capabilities (`GrantCapability`, `RevokeCapability`, `ListCapabilities`) and the audit
//! log (`AuditTail`, `AuditVerify`).

use super::{Dispatch, call};
use crate::audit::{Prune, Tail, VerifyChain};
use crate::caps::{GrantCapability, ListCapabilities, RevokeCapability};
use crate::protocol::{PruneReport, Removed};

/// Upper bound of `AuditTail` sizes (entries are up to a few KiB each).
const MAX_TAIL: usize = 1000;

/// `GrantCapability`.
pub(super) fn grant(d: Dispatch<'_>, subject: String, resource: String) {
    let msg = GrantCapability { subject, resource };
    let ask = call(&d.session.deps.services.caps, msg, d.timeout());
    d.run(async move { Ok(ask.await??) });
}

/// `RevokeCapability`.
pub(super) fn revoke(d: Dispatch<'_>, subject: String, resource: String) {
    let target = format!("{subject}:{resource}");
    let msg = RevokeCapability { subject, resource };
    let ask = call(&d.session.deps.services.caps, msg, d.timeout());
    d.run(async move {
        let removed = ask.await??;
        Ok(Removed { target, removed })
    });
}

/// `ListCapabilities`.
pub(super) fn list(d: Dispatch<'_>, subject: Option<String>) {
    let ask = call(
        &d.session.deps.services.caps,
        ListCapabilities { subject },
        d.timeout(),
    );
    d.run(ask);
}

/// `AuditTail`: at most [`MAX_TAIL`] entries (20 by default).
pub(super) fn audit_tail(d: Dispatch<'_>, n: Option<usize>, from: Option<u64>) {
    let n = n.unwrap_or(20).min(MAX_TAIL);
    let ask = call(
        &d.session.deps.services.audit,
        Tail { n, from },
        d.timeout(),
    );
    d.run(async move { Ok(ask.await??) });
}

/// `AuditVerify`.
pub(super) fn audit_verify(d: Dispatch<'_>) {
    let ask = call(&d.session.deps.services.audit, VerifyChain, d.timeout());
    d.run(async move { Ok(ask.await??) });
}

/// `AuditPrune`.
pub(super) fn audit_prune(d: Dispatch<'_>) {
    let ask = call(&d.session.deps.services.audit, Prune, d.timeout());
    d.run(async move {
        let pruned = ask.await??;
        Ok(PruneReport {
            removed: pruned.removed,
            pruned: pruned.range,
            kept: pruned.kept,
            reason: pruned.reason.to_owned(),
        })
    });
}
