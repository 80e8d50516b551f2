//! Fault injection into supervised actors: the message that carries a fault (the kinds are
//! wire types, in `types.rs`), the families of faults only some actors implement, the single
//! function that applies the universal ones inside an actor's context, and the supervisor's
//! side: [`InjectFault`] delivered to a child (of this supervisor or a nested one), refused
//! for a child that is not running, already doomed, or does not implement the fault. The
//! supervisor arms a child's `delay` gate itself. Every supervised actor handles [`Inject`]
//! by calling [`apply`] for what it does not implement itself; whether a client may inject at
//! all, and whether a fault is within its bounds, is decided by the session router.

use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Message, ResponseFuture};

use super::messages::InjectFault;
use super::types::{ChildState, Fault};
use super::{Phase, SupervisorActor, SupervisorError};

/// A family of faults that only some actors implement; a child's spec lists those it
/// accepts ([`ChildSpec::accepts`](super::ChildSpec::accepts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultFamily {
    /// `trap`: capsules.
    Trap,
    /// `delay`: workers (through their references' gate) and capsules.
    Delay,
    /// `import`: capsules.
    Import,
    /// `overflow`: capsules (their bus subscription).
    Overflow,
    /// `storage`: the actors writing through the ledger.
    Storage,
    /// `mcp`: MCP servers.
    Mcp,
}

impl FaultFamily {
    /// The family `fault` belongs to; none for the faults every actor takes.
    pub fn of(fault: &Fault) -> Option<Self> {
        match fault {
            Fault::Panic | Fault::Stop | Fault::Hang { .. } | Fault::Clear => None,
            Fault::Trap => Some(Self::Trap),
            Fault::Delay { .. } => Some(Self::Delay),
            Fault::Import(_) => Some(Self::Import),
            Fault::Overflow { .. } => Some(Self::Overflow),
            Fault::Storage { .. } => Some(Self::Storage),
            Fault::Mcp { .. } => Some(Self::Mcp),
        }
    }

    /// Which actors implement it, for error messages.
    pub fn applies_to(self) -> &'static str {
        match self {
            Self::Trap | Self::Import | Self::Overflow => "capsules",
            Self::Delay => "kernel actors and capsules",
            Self::Storage => "the actors that write through the ledger (store, audit)",
            Self::Mcp => "MCP servers (mcp:<server>)",
        }
    }
}

/// Delivers a fault to a supervised actor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Inject(pub Fault);

/// Applies `fault` to the actor owning `ctx`. Capsules handle [`Fault::Trap`] themselves;
/// the supervisor refuses it for other actors, so here it is a panic like any crash. A
/// `delay` is the supervisor's to arm, and `clear` has nothing more to undo here; the other
/// families reach only the actors that implement them, so here they are logged and ignored.
///
/// # Panics
///
/// On purpose, for [`Fault::Panic`] (and [`Fault::Trap`]).
pub fn apply<A: Actor<Context = Context<A>>>(fault: &Fault, ctx: &mut Context<A>) {
    tracing::warn!(actor = std::any::type_name::<A>(), %fault, "injected fault");
    match fault {
        Fault::Panic | Fault::Trap => panic!("injected fault"),
        Fault::Stop => ctx.stop(),
        Fault::Hang { millis } => {
            ctx.wait(actix::fut::wrap_future(tokio::time::sleep(
                Duration::from_millis(*millis),
            )));
        }
        Fault::Delay { .. } | Fault::Clear => {}
        Fault::Import(_) | Fault::Storage { .. } | Fault::Mcp { .. } | Fault::Overflow { .. } => {
            tracing::error!(
                actor = std::any::type_name::<A>(),
                %fault,
                "a fault this actor does not implement reached it; ignored"
            );
        }
    }
}

impl Handler<Inject> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply(&msg.0, ctx);
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
        let family = FaultFamily::of(&msg.fault);
        let answer = match family {
            Some(family) if !slot.spec.accepts.contains(&family) => {
                Err(SupervisorError::FaultNotApplicable {
                    target: msg.target,
                    fault: msg.fault,
                    applies_to: family.applies_to(),
                })
            }
            _ => {
                let fatal = msg.fault.is_crash();
                match (&slot.control, slot.state) {
                    (Some(_), ChildState::Running) if fatal && slot.doomed => {
                        Err(SupervisorError::NotRunning {
                            name: msg.target,
                            state: ChildState::Stopping,
                        })
                    }
                    (Some(_), ChildState::Running) if msg.dry_run => Ok(()),
                    (Some(control), ChildState::Running) => {
                        if let Some(gate) = &slot.spec.delay {
                            match msg.fault {
                                Fault::Delay { millis, for_millis } => gate.arm(
                                    Duration::from_millis(millis),
                                    Duration::from_millis(for_millis),
                                ),
                                Fault::Clear => gate.disarm(),
                                _ => {}
                            }
                        }
                        control.inject(msg.fault);
                        slot.doomed |= fatal;
                        Ok(())
                    }
                    (_, state) => Err(SupervisorError::NotRunning {
                        name: msg.target,
                        state,
                    }),
                }
            }
        };
        Box::pin(std::future::ready(answer))
    }
}
