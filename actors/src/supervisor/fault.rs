//! Fault injection into supervised actors: the fault kinds, the message that carries one,
//! and the single function that applies it inside an actor's context. Every supervised
//! actor handles [`Inject`] by calling [`apply`]; whether a client may inject at all is
//! decided by the session router, not here.

use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Message};
pub use astrid_protocol::payload::tree::Fault;

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
