//! Errors a request can meet inside the kernel. Each actor's own error type nests here, so
//! the session router has one type to map to a wire code (in `codes.rs`).

mod codes;

use crate::approvals::ApprovalError;
use crate::audit::AuditError;
use crate::bus::BusError;
use crate::caps::CapsError;
use crate::capsule::CapsuleError;
use crate::capsule::crashes::CrashError;
use crate::mcp::McpError;
use crate::store::StoreError;
use crate::supervisor::{CallError, SupervisorError};
use crate::trust::TrustError;
use crate::vfs::VfsError;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The actor serving the request did not answer: not started, down, or too slow.
    #[error(transparent)]
    Call(#[from] CallError),
    /// Refused by the bus.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Refused by the supervisor.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// Refused by the capsule registry.
    #[error(transparent)]
    Capsules(#[from] CapsuleError),
    /// Refused or failed by the key-value store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Refused or failed by the capability store.
    #[error(transparent)]
    Caps(#[from] CapsError),
    /// Failed by the audit log.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Refused or failed by the workspace file system.
    #[error(transparent)]
    Vfs(#[from] VfsError),
    /// Refused or failed by an MCP server.
    #[error(transparent)]
    Mcp(#[from] McpError),
    /// An answer to an approval not taken.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// A workspace could not be trusted or untrusted.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// A crash bundle could not be found, read or removed.
    #[error(transparent)]
    Crash(#[from] CrashError),
    /// Clients may not publish to this topic.
    #[error("clients may not publish to `{topic}`; allowed: {allowed}")]
    PublishForbidden {
        /// The topic.
        topic: String,
        /// The allowlist.
        allowed: String,
    },
    /// `InjectFault` without `--allow-fault-injection`.
    #[error("fault injection is disabled; start the daemon with --allow-fault-injection")]
    FaultInjectionDisabled,
    /// A fault out of its bounds.
    #[error("fault `{fault}`: {why}")]
    BadFault {
        /// The fault.
        fault: astrid_protocol::Fault,
        /// What is out of bounds.
        why: String,
    },
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// Work the request ran off the actors' threads (on the blocking pool) panicked.
    #[error("the daemon failed while it {task}")]
    TaskFailed {
        /// What the work was.
        task: &'static str,
    },
}
