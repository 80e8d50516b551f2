//! Children added and removed at run time ([`StartChild`] and [`StopChild`], as OTP's
//! `start_child` and `terminate_child`; the capsules and MCP supervisors use them): a
//! removal stops the child with its deadline, then drops its slot and answers every waiter;
//! a child of the same name asked for meanwhile starts once the old one is gone.

use actix::{AsyncContext, Context, Handler, ResponseFuture};
use tokio::sync::oneshot;

use super::child::ChildSpec;
use super::messages::{StartChild, StopChild};
use super::slot::{Removal, Slot};
use super::{Phase, SupervisorActor, SupervisorError};

impl SupervisorActor {
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
    pub(super) fn removed(&mut self, removal: Removal, ctx: &mut Context<Self>) {
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
