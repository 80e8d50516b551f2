//! Fault injection into supervised actors: the message that carries a fault (the kinds are
//! wire types, in `types.rs`), the single function that applies it inside an actor's
//! context, and the supervisor's side: [`InjectFault`] delivered to a child (of this
//! supervisor or a nested one), refused for a child that is not running or already doomed.
//! Every supervised actor handles [`Inject`] by calling [`apply`]; whether a client may
//! inject at all is decided by the session router, not here.

use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message, ResponseFuture};

use super::messages::InjectFault;
use super::types::{ChildState, Fault, NodeKind};
use super::{Phase, SupervisorActor, SupervisorError};

/// Delivers a fault to a supervised actor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Inject(pub Fault);

/// Applies `fault` to the actor owning `ctx`. Capsules handle [`Fault::Trap`] themselves;
/// the supervisor refuses it for other actors, so here it is a panic like any crash.
///
/// # Panics
///
/// On purpose, for [`Fault::Panic`] (and [`Fault::Trap`]).
pub fn apply<A: Actor<Context = Context<A>>>(fault: Fault, ctx: &mut Context<A>) {
    tracing::warn!(actor = std::any::type_name::<A>(), %fault, "injected fault");
    match fault {
        Fault::Panic | Fault::Trap => panic!("injected fault"),
        Fault::Stop => ctx.stop(),
        Fault::Hang { millis } => {
            ctx.wait(actix::fut::wrap_future(tokio::time::sleep(
                Duration::from_millis(millis),
            )));
        }
    }
}

impl Handler<Inject> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply(msg.0, ctx);
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
