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
//! The restart arithmetic lives in `policy.rs` and is tested there without actors.

mod child;
mod fault;
mod messages;
pub mod panic_capture;
mod policy;
mod tree;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, ResponseFuture, SpawnHandle,
};
use tokio::sync::oneshot;

pub use self::child::{CallError, ChildControl, ChildRef, ChildSpec, ExitGuard, ExitNote};
pub use self::fault::{Fault, Inject, apply as apply_fault};
pub use self::messages::{
    ChildExited, ChildSummary, GetChild, GetTree, InjectFault, ShutdownTree, StartChild, StopChild,
    Terminate,
};
pub use self::policy::{
    Backoff, ExitReason, RestartIntensity, RestartPolicy, RestartType, should_restart,
};
pub use self::tree::{ChildState, Failure, NodeKind, TreeNode};

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
    #[error("fault `{fault}` applies only to capsules; `{target}` is not one")]
    FaultNotApplicable {
        /// Child name.
        target: String,
        /// The fault.
        fault: Fault,
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

struct Slot {
    /// Stable for the slot's life (slots are added and removed at run time).
    id: u64,
    spec: ChildSpec,
    /// The slot's own restart window, when its spec has its own budget.
    own_window: Option<RestartIntensity>,
    /// Answered once the child is stopped and removed ([`StopChild`]).
    removal: Option<Removal>,
    generation: u64,
    state: ChildState,
    control: Option<Box<dyn ChildControl>>,
    stop_requested: Arc<AtomicBool>,
    restarts: u32,
    backoff: Backoff,
    started_at: Option<Instant>,
    last_failure: Option<(String, Instant)>,
    pending_restart: Option<SpawnHandle>,
    /// A fatal fault was delivered to the current incarnation: it is about to die, and a
    /// second one would cost no second restart, so it is refused.
    doomed: bool,
}

impl Slot {
    fn new(id: u64, spec: ChildSpec) -> Self {
        Self {
            id,
            own_window: spec.budget.map(|_| RestartIntensity::default()),
            removal: None,
            spec,
            generation: 0,
            state: ChildState::Stopped,
            control: None,
            stop_requested: Arc::new(AtomicBool::new(false)),
            restarts: 0,
            backoff: Backoff::default(),
            started_at: None,
            last_failure: None,
            pending_restart: None,
            doomed: false,
        }
    }

    /// Asks the running child to stop; its exit then counts as requested.
    fn request_stop(&mut self) {
        self.stop_requested.store(true, Ordering::Release);
        self.state = ChildState::Stopping;
        if let Some(control) = &self.control {
            control.terminate();
        }
    }

    /// Gives up on a child that did not stop in time: its exit report will be stale.
    fn abandon(&mut self, supervisor: &str) {
        tracing::warn!(
            %supervisor,
            child = %self.spec.name,
            "did not stop within {:?}; abandoning it",
            self.spec.shutdown_timeout
        );
        self.control = None;
        self.generation += 1;
        self.state = ChildState::Stopped;
    }
}

struct Removal {
    waiters: Vec<oneshot::Sender<()>>,
    timer: Option<SpawnHandle>,
    /// A child of the same name, to start once this one is gone (its [`StartChild`] came
    /// while this one was stopping).
    successor: Option<ChildSpec>,
}

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

    fn start_child(&mut self, i: usize, ctx: &mut Context<Self>) {
        let slot = &mut self.slots[i];
        slot.generation += 1;
        slot.doomed = false;
        slot.stop_requested = Arc::new(AtomicBool::new(false));
        let guard = ExitGuard::new(
            ctx.address().recipient(),
            slot.id,
            slot.generation,
            Arc::clone(&slot.stop_requested),
        );
        match (slot.spec.start)(guard) {
            Ok(control) => {
                slot.control = Some(control);
                slot.state = ChildState::Running;
                slot.started_at = Some(Instant::now());
                tracing::debug!(supervisor = %self.name, child = %slot.spec.name, "started");
                if slot.restarts == 0 {
                    let child = slot.spec.name.clone();
                    self.emit(SupervisorEvent::ChildStarted { child });
                }
            }
            Err(message) => {
                // The guard was dropped inside the failed start; make its report stale.
                slot.generation += 1;
                tracing::error!(supervisor = %self.name, child = %slot.spec.name, "start failed: {message}");
                self.child_ended(i, &ExitReason::Failed(message), Duration::ZERO, ctx);
            }
        }
    }

    /// A running child ended (or failed to start) while the supervisor is running.
    fn child_ended(
        &mut self,
        i: usize,
        reason: &ExitReason,
        uptime: Duration,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        let slot = &mut self.slots[i];
        let policy = slot.spec.budget.unwrap_or(self.policy);
        let child = slot.spec.name.clone();
        if reason.is_abnormal() {
            slot.last_failure = Some((reason.to_string(), now));
        }
        if !should_restart(slot.spec.restart, reason) {
            slot.state = ChildState::Stopped;
            tracing::info!(supervisor = %self.name, %child, %reason, "not restarted ({:?})", slot.spec.restart);
            self.emit(SupervisorEvent::ChildExited {
                child,
                reason: reason.to_string(),
                restart_in: None,
            });
            return;
        }
        let within_budget = match &mut slot.own_window {
            Some(window) => window.record(now, &policy),
            None => self.intensity.record(now, &policy),
        };
        if !within_budget && slot.own_window.is_some() {
            slot.state = ChildState::Failed;
            tracing::error!(
                supervisor = %self.name,
                %child,
                %reason,
                "restart budget exhausted (more than {} restarts in {:?}); it stays down",
                policy.intensity,
                policy.period
            );
            self.emit(SupervisorEvent::ChildFailed {
                child,
                reason: reason.to_string(),
            });
            return;
        }
        if !within_budget {
            slot.state = ChildState::Failed;
            tracing::error!(
                supervisor = %self.name,
                %child,
                %reason,
                "restart budget exhausted (more than {} restarts in {:?}); stopping every child",
                policy.intensity,
                policy.period
            );
            let exit = SupervisorExit::Escalated {
                child: child.clone(),
                reason: reason.to_string(),
            };
            self.emit(SupervisorEvent::Escalated {
                child,
                reason: reason.to_string(),
            });
            self.begin_shutdown(exit, ctx);
            return;
        }
        let delay = slot.backoff.next_delay(uptime, &policy);
        slot.state = ChildState::Restarting;
        slot.restarts += 1;
        tracing::warn!(supervisor = %self.name, %child, %reason, ?delay, restarts = slot.restarts, "restarting");
        self.emit(SupervisorEvent::ChildExited {
            child: child.clone(),
            reason: reason.to_string(),
            restart_in: Some(delay),
        });
        if delay.is_zero() {
            self.restart(i, ctx);
        } else {
            let id = self.slots[i].id;
            let handle = ctx.run_later(delay, move |act, ctx| {
                let Some(i) = act.index(id) else { return };
                act.slots[i].pending_restart = None;
                if matches!(act.phase, Phase::Running) {
                    act.restart(i, ctx);
                }
            });
            self.slots[i].pending_restart = Some(handle);
        }
    }

    fn restart(&mut self, i: usize, ctx: &mut Context<Self>) {
        self.start_child(i, ctx);
        let slot = &self.slots[i];
        if slot.state == ChildState::Running {
            self.emit(SupervisorEvent::ChildRestarted {
                child: slot.spec.name.clone(),
                restarts: slot.restarts,
            });
        }
    }

    fn begin_shutdown(&mut self, exit: SupervisorExit, ctx: &mut Context<Self>) {
        if !matches!(self.phase, Phase::Running) {
            return;
        }
        tracing::info!(supervisor = %self.name, ?exit, "stopping children in reverse order");
        for slot in &mut self.slots {
            if let Some(handle) = slot.pending_restart.take() {
                ctx.cancel_future(handle);
                slot.state = ChildState::Stopped;
            }
            if let Some(timer) = slot.removal.as_mut().and_then(|r| r.timer.take()) {
                ctx.cancel_future(timer);
            }
        }
        self.phase = Phase::ShuttingDown {
            exit,
            waiting: None,
        };
        self.stop_next(ctx);
    }

    fn stop_next(&mut self, ctx: &mut Context<Self>) {
        let Some(i) = self.slots.iter().rposition(|s| s.control.is_some()) else {
            self.finish(ctx);
            return;
        };
        let slot = &mut self.slots[i];
        slot.request_stop();
        let (id, timeout) = (slot.id, slot.spec.shutdown_timeout);
        let timer = ctx.run_later(timeout, move |act, ctx| act.stop_timed_out(id, ctx));
        if let Phase::ShuttingDown { waiting, .. } = &mut self.phase {
            *waiting = Some((id, timer));
        }
    }

    fn stop_timed_out(&mut self, id: u64, ctx: &mut Context<Self>) {
        if let Some(i) = self.index(id) {
            self.slots[i].abandon(&self.name);
        }
        if let Phase::ShuttingDown { waiting, .. } = &mut self.phase {
            *waiting = None;
        }
        self.stop_next(ctx);
    }

    /// Starts removing the child at `i` ([`StopChild`]): stops it if it runs, then drops
    /// its slot and answers every waiter.
    fn remove(&mut self, i: usize, waiter: oneshot::Sender<()>, ctx: &mut Context<Self>) {
        let slot = &mut self.slots[i];
        if let Some(removal) = &mut slot.removal {
            removal.waiters.push(waiter);
            return;
        }
        if let Some(handle) = slot.pending_restart.take() {
            ctx.cancel_future(handle);
        }
        if slot.control.is_none() {
            drop(self.slots.remove(i));
            let _ = waiter.send(());
            return;
        }
        slot.request_stop();
        let (id, timeout) = (slot.id, slot.spec.shutdown_timeout);
        let timer = ctx.run_later(timeout, move |act, ctx| {
            if let Some(i) = act.index(id) {
                act.slots[i].abandon(&act.name);
                let mut slot = act.slots.remove(i);
                if let Some(mut removal) = slot.removal.take() {
                    removal.timer = None;
                    act.removed(removal, ctx);
                }
            }
        });
        slot.removal = Some(Removal {
            waiters: vec![waiter],
            timer: Some(timer),
            successor: None,
        });
    }

    /// A removed child is gone: answers those waiting on its removal, and starts its
    /// successor, if one is waiting.
    fn removed(&mut self, removal: Removal, ctx: &mut Context<Self>) {
        if let Some(timer) = removal.timer {
            ctx.cancel_future(timer);
        }
        for waiter in removal.waiters {
            let _ = waiter.send(());
        }
        if let (Some(spec), Phase::Running) = (removal.successor, &self.phase) {
            self.add_and_start(spec, ctx);
        }
    }

    fn add_and_start(&mut self, spec: ChildSpec, ctx: &mut Context<Self>) {
        let id = self.next_id;
        self.next_id += 1;
        self.slots.push(Slot::new(id, spec));
        self.start_child(self.slots.len() - 1, ctx);
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        let Phase::ShuttingDown { exit, .. } = std::mem::replace(&mut self.phase, Phase::Stopped)
        else {
            return;
        };
        tracing::info!(supervisor = %self.name, "all children stopped");
        if let Some(tx) = self.exit.take() {
            let _ = tx.send(exit);
        }
        ctx.stop();
    }

    /// The supervisors nested under this one, with their position among the children.
    fn nested(&self) -> Vec<(usize, Addr<SupervisorActor>)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.control.is_some())
            .filter_map(|(i, s)| Some((i, s.spec.subtree.as_ref()?.get()?)))
            .collect()
    }

    fn node(slot: &Slot, now: Instant) -> TreeNode {
        let running = matches!(slot.state, ChildState::Running | ChildState::Stopping);
        TreeNode {
            name: slot.spec.name.clone(),
            kind: slot.spec.kind,
            restart: Some(slot.spec.restart),
            state: slot.state,
            restarts: slot.restarts,
            uptime_ms: slot
                .started_at
                .filter(|_| running)
                .map(|t| millis(now.saturating_duration_since(t))),
            last_failure: slot.last_failure.as_ref().map(|(reason, at)| Failure {
                reason: reason.clone(),
                ago_ms: millis(now.saturating_duration_since(*at)),
            }),
            detail: None,
            children: slot.spec.describe.as_ref().map(|d| d()).unwrap_or_default(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

impl Handler<ChildExited> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Some(i) = self.index(msg.id) else {
            return;
        };
        let slot = &mut self.slots[i];
        if slot.generation != msg.generation {
            return;
        }
        slot.control = None;
        let uptime = slot.started_at.map_or(Duration::ZERO, |t| t.elapsed());
        match &mut self.phase {
            Phase::Running if slot.removal.is_some() => {
                let mut slot = self.slots.remove(i);
                tracing::debug!(supervisor = %self.name, child = %slot.spec.name, "removed");
                if let Some(removal) = slot.removal.take() {
                    self.removed(removal, ctx);
                }
            }
            Phase::Running => self.child_ended(i, &msg.reason, uptime, ctx),
            Phase::ShuttingDown { waiting, .. } => {
                let was_awaited = matches!(*waiting, Some((id, _)) if id == msg.id);
                if let Some((_, timer)) = waiting.take_if(|_| was_awaited) {
                    ctx.cancel_future(timer);
                }
                let slot = &mut self.slots[i];
                if msg.reason.is_abnormal() {
                    slot.last_failure = Some((msg.reason.to_string(), Instant::now()));
                }
                slot.state = ChildState::Stopped;
                if was_awaited {
                    self.stop_next(ctx);
                }
            }
            Phase::Stopped => {}
        }
    }
}

impl Handler<ShutdownTree> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: ShutdownTree, ctx: &mut Context<Self>) {
        self.begin_shutdown(SupervisorExit::Normal { reason: msg.reason }, ctx);
    }
}

impl Handler<Terminate> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        self.begin_shutdown(
            SupervisorExit::Normal {
                reason: "parent shutting down".into(),
            },
            ctx,
        );
    }
}

impl Handler<Inject> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply_fault(msg.0, ctx);
    }
}

impl Handler<GetTree> for SupervisorActor {
    type Result = ResponseFuture<TreeNode>;

    fn handle(&mut self, _: GetTree, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let state = match self.phase {
            Phase::Running => ChildState::Running,
            Phase::ShuttingDown { .. } => ChildState::Stopping,
            Phase::Stopped => ChildState::Stopped,
        };
        let in_window = self.intensity.in_window(now, &self.policy);
        let mut node = TreeNode {
            name: self.name.clone(),
            kind: NodeKind::Supervisor,
            restart: None,
            state,
            restarts: u32::try_from(in_window).unwrap_or(u32::MAX),
            uptime_ms: None,
            last_failure: None,
            detail: Some(format!(
                "one_for_one, at most {} restarts in {:?}",
                self.policy.intensity, self.policy.period
            )),
            children: self.slots.iter().map(|s| Self::node(s, now)).collect(),
        };
        let nested = self.nested();
        Box::pin(async move {
            // A nested supervisor shows its own children and budget (it answers at once: it
            // lives on this thread or answers from its own).
            for (i, addr) in nested {
                if let Ok(sub) = addr.send(GetTree).await {
                    node.children[i].children = sub.children;
                    node.children[i].detail = sub.detail;
                }
            }
            node
        })
    }
}

impl Handler<InjectFault> for SupervisorActor {
    type Result = ResponseFuture<Result<(), SupervisorError>>;

    fn handle(&mut self, msg: InjectFault, _: &mut Context<Self>) -> Self::Result {
        if !matches!(self.phase, Phase::Running) {
            return Box::pin(std::future::ready(Err(SupervisorError::ShuttingDown)));
        }
        let Some(slot) = self.slots.iter_mut().find(|s| s.spec.name == msg.target) else {
            // Not a child of this supervisor: perhaps of a nested one.
            let nested = self.nested();
            return Box::pin(async move {
                for (_, addr) in nested {
                    match addr.send(msg.clone()).await {
                        Ok(Err(SupervisorError::UnknownChild(_))) | Err(_) => {}
                        Ok(answer) => return answer,
                    }
                }
                Err(SupervisorError::UnknownChild(msg.target))
            });
        };
        let answer = if msg.fault == Fault::Trap && slot.spec.kind != NodeKind::Capsule {
            Err(SupervisorError::FaultNotApplicable {
                target: msg.target,
                fault: msg.fault,
            })
        } else {
            let fatal = !matches!(msg.fault, Fault::Hang { .. });
            match (&slot.control, slot.state) {
                (Some(_), ChildState::Running) if fatal && slot.doomed => {
                    Err(SupervisorError::NotRunning {
                        name: msg.target,
                        state: ChildState::Stopping,
                    })
                }
                (Some(control), ChildState::Running) => {
                    control.inject(msg.fault);
                    slot.doomed |= fatal;
                    Ok(())
                }
                (_, state) => Err(SupervisorError::NotRunning {
                    name: msg.target,
                    state,
                }),
            }
        };
        Box::pin(std::future::ready(answer))
    }
}

impl Handler<GetChild> for SupervisorActor {
    type Result = Option<ChildSummary>;

    fn handle(&mut self, msg: GetChild, _: &mut Context<Self>) -> Self::Result {
        self.slots
            .iter()
            .find(|s| s.spec.name == msg.name)
            .map(|s| ChildSummary {
                state: s.state,
                restarts: s.restarts,
                last_failure: s.last_failure.as_ref().map(|(r, _)| r.clone()),
            })
    }
}

impl Handler<StartChild> for SupervisorActor {
    type Result = Result<(), SupervisorError>;

    fn handle(&mut self, msg: StartChild, ctx: &mut Context<Self>) -> Self::Result {
        if !matches!(self.phase, Phase::Running) {
            return Err(SupervisorError::ShuttingDown);
        }
        if let Some(slot) = self.slots.iter_mut().find(|s| s.spec.name == msg.0.name) {
            return match &mut slot.removal {
                Some(removal) if removal.successor.is_none() => {
                    removal.successor = Some(msg.0);
                    Ok(())
                }
                _ => Err(SupervisorError::Duplicate(msg.0.name)),
            };
        }
        self.add_and_start(msg.0, ctx);
        Ok(())
    }
}

impl Handler<StopChild> for SupervisorActor {
    type Result = ResponseFuture<Result<(), SupervisorError>>;

    fn handle(&mut self, msg: StopChild, ctx: &mut Context<Self>) -> Self::Result {
        if !matches!(self.phase, Phase::Running) {
            return Box::pin(std::future::ready(Err(SupervisorError::ShuttingDown)));
        }
        let Some(i) = self.slots.iter().position(|s| s.spec.name == msg.name) else {
            return Box::pin(std::future::ready(Err(SupervisorError::UnknownChild(
                msg.name,
            ))));
        };
        let (tx, rx) = oneshot::channel();
        self.remove(i, tx, ctx);
        // The channel closes unanswered only if the whole tree stops first.
        Box::pin(async move { rx.await.map_err(|_| SupervisorError::ShuttingDown) })
    }
}
