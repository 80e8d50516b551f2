//! A child's exit: the supervisor starts children and, when one ends (or fails to start),
//! restarts it under its restart type and backoff, leaves it `failed` past a budget of its
//! own, or escalates past the shared budget. [`ChildExited`] comes from the exit guards.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use actix::{AsyncContext, Context, Handler};

use super::child::ExitGuard;
use super::messages::ChildExited;
use super::policy::{ExitReason, should_restart};
use super::types::ChildState;
use super::{Phase, SupervisorActor, SupervisorEvent, SupervisorExit};

impl SupervisorActor {
    /// Starts a new incarnation of the child at `i`, with an exit guard of its generation.
    pub(super) fn start_child(&mut self, i: usize, ctx: &mut Context<Self>) {
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
