//! Errors a request can meet inside the kernel. Each actor's own error type nests here, so
//! the session router has one type to map to a wire code (in `codes.rs`).

use std::time::Duration;

use actix::MailboxError;

mod codes;

use crate::audit::AuditError;
use crate::bus::BusError;
use crate::caps::CapsError;
use crate::capsules::CapsuleError;
use crate::mcp::McpError;
use crate::store::StoreError;
use crate::supervisor::SupervisorError;
use crate::trust::TrustError;
use crate::vfs::VfsError;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The actor has not started yet.
    #[error("the {actor} actor has not started")]
    NotStarted {
        /// Actor name.
        actor: &'static str,
    },
    /// The actor is down: it stopped or crashed (possibly while handling this request) and
    /// has not been restarted yet.
    #[error("the {actor} actor is unavailable: it stopped or is restarting")]
    Unavailable {
        /// Actor name.
        actor: &'static str,
        /// The mailbox error.
        #[source]
        source: MailboxError,
    },
    /// The actor did not answer in time.
    #[error("the {actor} actor did not answer within {} ms", timeout.as_millis())]
    Timeout {
        /// Actor name.
        actor: &'static str,
        /// The deadline.
        timeout: Duration,
    },
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
    /// A workspace could not be trusted or untrusted.
    #[error(transparent)]
    Trust(#[from] TrustError),
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
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// Work the request ran off the actors' threads (on the blocking pool) panicked.
    #[error("the daemon failed while it {task}")]
    TaskFailed {
        /// What the work was.
        task: &'static str,
    },
    /// The request's result does not fit a frame.
    #[error("the result is {len} bytes, more than the frame limit of {max} bytes; ask for less")]
    ReplyTooLarge {
        /// The encoded result's size.
        len: usize,
        /// The frame limit.
        max: usize,
    },
    /// The request's result could not be encoded (a bug).
    #[error("the daemon could not encode the result: {0}")]
    ReplyEncoding(#[source] crate::protocol::EncodeError),
    /// The work serving the request ended without answering it (a bug).
    #[error("the daemon dropped this request without an answer")]
    Unanswered,
}

impl KernelError {
    /// Maps a failed `send` to `actor` with deadline `timeout`.
    pub fn mailbox(actor: &'static str, timeout: Duration, error: MailboxError) -> Self {
        match error {
            MailboxError::Timeout => Self::Timeout { actor, timeout },
            MailboxError::Closed => Self::Unavailable {
                actor,
                source: error,
            },
        }
    }
}
