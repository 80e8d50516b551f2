//! The OTP-style supervisor: starts children in order, notices every death (stop or panic,
//! through each child's exit guard), restarts under the child's restart type with
//! exponential backoff inside an intensity/period budget, escalates when the budget is
//! exhausted, and stops children in reverse order with a deadline each.
//!
//! Handles: [`ChildExited`] (from exit guards), [`ShutdownTree`] (kernel), [`Terminate`] and
//! [`Inject`] (from a parent, when nested), [`GetTree`] and [`InjectFault`] (sessions; both
//! reach into nested supervisors), [`GetChild`] (capsules actor), and [`StartChild`] /
//! [`StopChild`] for children added and removed at run time (capsules, as OTP's
//! `start_child` and `terminate_child`). Reports its own end once, on the channel given to
//! [`SupervisorActor::on_exit`]; if the supervisor itself dies, that channel closes unsent.
//!
//! Restart budgets: children share the supervisor's budget, and one more restart than it
//! allows escalates (every child is stopped, then the supervisor). A child given a budget of
//! its own ([`ChildSpec::own_budget`], as capsules are) is instead left `failed` when it
//! exhausts it, and its siblings are unaffected.
//!
//! Files: the actor and its life (`mod.rs`); the types that go on the wire, plain serde
//! data (`types.rs`); one child's place (`slot.rs`); starts, exits, restarts and escalation
//! (`exits.rs`); stopping in reverse order (`shutdown.rs`); children added and removed at
//! run time (`dynamic.rs`); the live tree and child summaries (`inspect.rs`); fault
//! injection (`fault.rs`) and the `delay` fault's gate (`delay.rs`); events for the tables that follow children (`events.rs`); the
//! messages (`messages.rs`); child specs and exit guards (`child.rs`, `panic_capture.rs`).
//! The restart arithmetic lives in `policy.rs` and is tested there without actors.

mod child;
mod delay;
mod dynamic;
mod events;
mod exits;
mod fault;
mod inspect;
mod messages;
pub mod panic_capture;
mod policy;
mod shutdown;
mod slot;
mod types;

use actix::{Actor, Context, SpawnHandle};
use tokio::sync::oneshot;

pub use self::child::{CallError, ChildControl, ChildRef, ChildSpec, ExitGuard, ExitNote};
pub use self::delay::DelayGate;
pub use self::events::{ChildReport, SupervisorEvent};
pub use self::fault::{FaultFamily, Inject, apply as apply_fault};
pub use self::messages::{
    ChildExited, ChildSummary, GetChild, GetTree, InjectFault, ShutdownTree, StartChild, StopChild,
    Terminate,
};
pub use self::policy::{Backoff, ExitReason, RestartIntensity, RestartPolicy, should_restart};
use self::slot::Slot;
pub use self::types::{ChildState, Failure, Fault, NodeKind, RestartType, TreeNode};

/// Errors answered by the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No child has that name.
    #[error("no actor named `{0}` in the supervision tree")]
    UnknownChild(String),
    /// The child exists but is not running.
    #[error("`{name}` is not running (it is {state})")]
    NotRunning {
        /// Child name.
        name: String,
        /// Its state.
        state: ChildState,
    },
    /// The tree is being stopped.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// A child of that name already exists.
    #[error("an actor named `{0}` is already supervised")]
    Duplicate(String),
    /// The fault does not apply to this kind of actor.
    #[error("fault `{fault}` applies only to {applies_to}; `{target}` is not one")]
    FaultNotApplicable {
        /// Child name.
        target: String,
        /// The fault.
        fault: Fault,
        /// Which actors it applies to.
        applies_to: &'static str,
    },
}

/// How a supervisor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorExit {
    /// Stopped on request; every child was stopped first.
    Normal {
        /// Why it was asked to stop.
        reason: String,
    },
    /// A child exceeded the restart budget; every other child was stopped.
    Escalated {
        /// The child that kept failing.
        child: String,
        /// Its last failure.
        reason: String,
    },
}

/// Where the supervisor is in its life.
enum Phase {
    Running,
    ShuttingDown {
        exit: SupervisorExit,
        waiting: Option<(u64, SpawnHandle)>,
    },
    Stopped,
}

type EventSink = Box<dyn Fn(SupervisorEvent)>;

/// A one_for_one supervisor over a fixed, ordered list of children.
pub struct SupervisorActor {
    name: String,
    policy: RestartPolicy,
    slots: Vec<Slot>,
    next_id: u64,
    intensity: RestartIntensity,
    phase: Phase,
    exit: Option<oneshot::Sender<SupervisorExit>>,
    on_event: Option<EventSink>,
}

impl std::fmt::Debug for SupervisorActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorActor")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field(
                "children",
                &self.slots.iter().map(|s| &s.spec.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl SupervisorActor {
    /// A supervisor named `name` that will start `children` in order when it starts.
    pub fn new(name: impl Into<String>, policy: RestartPolicy, children: Vec<ChildSpec>) -> Self {
        panic_capture::install();
        let slots: Vec<Slot> = children
            .into_iter()
            .zip(0..)
            .map(|(spec, id)| Slot::new(id, spec))
            .collect();
        Self {
            name: name.into(),
            policy,
            next_id: slots.len() as u64,
            slots,
            intensity: RestartIntensity::default(),
            phase: Phase::Running,
            exit: None,
            on_event: None,
        }
    }

    /// Where to report how the supervisor ended.
    #[must_use]
    pub fn on_exit(mut self, exit: oneshot::Sender<SupervisorExit>) -> Self {
        self.exit = Some(exit);
        self
    }

    /// Called for every [`SupervisorEvent`], on the supervisor's thread.
    #[must_use]
    pub fn on_event(mut self, sink: impl Fn(SupervisorEvent) + 'static) -> Self {
        self.on_event = Some(Box::new(sink));
        self
    }

    fn emit(&self, event: SupervisorEvent) {
        if let Some(sink) = &self.on_event {
            sink(event);
        }
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }
}

/// A supervisor that dies (a panic, or a fault injected into it) takes its children with
/// it, as an OTP supervisor's links do: none is left running unsupervised.
impl Drop for SupervisorActor {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if slot.control.is_some() {
                slot.request_stop();
            }
        }
    }
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Supervisors receive a burst of exits and queries; do not make guards wait.
        ctx.set_mailbox_capacity(1024);
        for i in 0..self.slots.len() {
            // A failed start may exhaust the budget; then the rest must not start.
            if !matches!(self.phase, Phase::Running) {
                break;
            }
            self.start_child(i, ctx);
        }
    }
}
