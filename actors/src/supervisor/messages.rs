//! Messages handled by [`SupervisorActor`](super::SupervisorActor) and the two messages every
//! supervised child handles ([`Terminate`], and [`Inject`](super::Inject) in `fault.rs`).
//!
//! Senders: exit guards send [`ChildExited`]; the kernel sends [`ShutdownTree`]; sessions
//! send [`GetTree`] and [`InjectFault`]; the capsules actor sends [`GetChild`],
//! [`StartChild`] and [`StopChild`].

use actix::Message;

use super::child::ChildSpec;
use super::policy::ExitReason;
use super::types::{ChildState, Fault, TreeNode};

/// Sent by a child's exit guard when an incarnation ends.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub(crate) id: u64,
    pub(crate) generation: u64,
    pub(crate) reason: ExitReason,
}

/// Asks a supervised child to stop; it may finish in-flight work first.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Terminate;

/// Stops every child in reverse start order, then the supervisor itself.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ShutdownTree {
    /// Recorded in the log and in the supervisor's exit.
    pub reason: String,
}

/// Returns the live tree under this supervisor.
#[derive(Debug, Message)]
#[rtype(result = "TreeNode")]
pub struct GetTree;

/// Delivers a fault to the child named `target` (of this supervisor or a nested one), or
/// only checks that it could be delivered now.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), super::SupervisorError>")]
pub struct InjectFault {
    /// Child name.
    pub target: String,
    /// The fault.
    pub fault: Fault,
    /// Check only: answer as a delivery would, without delivering.
    pub dry_run: bool,
}

/// State and restart count of one child.
#[derive(Debug, Message)]
#[rtype(result = "Option<ChildSummary>")]
pub struct GetChild {
    /// Child name.
    pub name: String,
}

/// Answer to [`GetChild`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSummary {
    /// Current state.
    pub state: ChildState,
    /// Restarts so far.
    pub restarts: u32,
    /// Last failure, if any.
    pub last_failure: Option<String>,
}

/// Adds a child at run time and starts it (it is stopped first at shutdown, being the
/// youngest). Refused when a child of that name exists, unless that child is being removed
/// ([`StopChild`]): the new one then starts as soon as the old one is gone.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), super::SupervisorError>")]
pub struct StartChild(pub ChildSpec);

/// Stops a child (with its shutdown deadline) and removes it; answered once it is gone.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), super::SupervisorError>")]
pub struct StopChild {
    /// Child name.
    pub name: String,
}
