//! What a supervisor tells the rest of the system ([`SupervisorEvent`], through
//! [`SupervisorActor::on_event`](super::SupervisorActor::on_event)), and what an event says
//! about one child ([`ChildReport`]), for the tables that follow children's states.

use std::time::Duration;

use super::types::ChildState;

/// Something worth telling the rest of the system about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// A child started for the first time.
    ChildStarted {
        /// Child name.
        child: String,
    },
    /// A child ended; `restart_in` is set when it will be restarted.
    ChildExited {
        /// Child name.
        child: String,
        /// What happened.
        reason: String,
        /// Backoff before the restart, if one is scheduled.
        restart_in: Option<Duration>,
    },
    /// A child was started again.
    ChildRestarted {
        /// Child name.
        child: String,
        /// Restarts so far.
        restarts: u32,
    },
    /// A child with a budget of its own exhausted it; it stays down.
    ChildFailed {
        /// Child name.
        child: String,
        /// Its last failure.
        reason: String,
    },
    /// The restart budget is exhausted; the supervisor is stopping.
    Escalated {
        /// Child name.
        child: String,
        /// Its last failure.
        reason: String,
    },
}

/// What a [`SupervisorEvent`] says about one child, for tables that follow children's
/// states (loaded capsules, MCP servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildReport<'a> {
    /// Child name.
    pub child: &'a str,
    /// Its state now.
    pub state: ChildState,
    /// Its restarts so far, when the event says.
    pub restarts: Option<u32>,
    /// Why it went down, when it did.
    pub failure: Option<&'a str>,
}

impl SupervisorEvent {
    /// The child's new state, restarts and failure; `None` for an escalation (the
    /// supervisor is stopping, and its children with it).
    pub fn report(&self) -> Option<ChildReport<'_>> {
        fn report<'a>(
            child: &'a str,
            state: ChildState,
            restarts: Option<u32>,
            failure: Option<&'a str>,
        ) -> ChildReport<'a> {
            ChildReport {
                child,
                state,
                restarts,
                failure,
            }
        }
        Some(match self {
            Self::ChildStarted { child } => report(child, ChildState::Running, None, None),
            Self::ChildRestarted { child, restarts } => {
                report(child, ChildState::Running, Some(*restarts), None)
            }
            Self::ChildExited {
                child,
                reason,
                restart_in,
            } => {
                let state = if restart_in.is_some() {
                    ChildState::Restarting
                } else {
                    ChildState::Stopped
                };
                report(child, state, None, Some(reason.as_str()))
            }
            Self::ChildFailed { child, reason } => {
                report(child, ChildState::Failed, None, Some(reason.as_str()))
            }
            Self::Escalated { .. } => return None,
        })
    }
}
