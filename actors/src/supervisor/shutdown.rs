//! Stopping: children are stopped in reverse start order, each with its shutdown deadline
//! (abandoned past it), then the supervisor itself, which reports how it ended. Asked by
//! [`ShutdownTree`] (the kernel), [`Terminate`] (a parent supervisor), or an escalation.

use actix::{ActorContext, AsyncContext, Context, Handler};

use super::messages::{ShutdownTree, Terminate};
use super::types::ChildState;
use super::{Phase, SupervisorActor, SupervisorExit};

impl SupervisorActor {
    pub(super) fn begin_shutdown(&mut self, exit: SupervisorExit, ctx: &mut Context<Self>) {
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

    pub(super) fn stop_next(&mut self, ctx: &mut Context<Self>) {
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
