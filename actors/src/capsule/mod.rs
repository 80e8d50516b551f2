//! One capsule's actor: owns the capsule's WebAssembly instance on the capsule's own
//! arbiter (thread), turns requests into calls through the host ABI, and treats every
//! failed call as a crash. A trapped instance's memory cannot be trusted, so the actor
//! answers the failed request, notes why, and stops; its supervisor then starts a fresh
//! instance under the capsule's restart policy. Requests queued behind the failed one are
//! dropped with the mailbox, and their senders see the capsule as crashed.
//!
//! Handles: [`Invoke`], [`Deliver`], and the supervision messages [`Terminate`] and
//! [`Inject`] (whose [`Fault::Trap`] makes the instance fail as a guest bug would).
//!
//! The sandbox (`sandbox.rs`), the host imports' work (`host.rs`) and call deadlines
//! (`watchdog.rs`) are plain code, tested on their own.

pub mod host;
mod messages;
pub mod sandbox;
mod watchdog;

use actix::{Actor, ActorContext, Context, Handler};
use serde::Serialize;

pub use self::host::{Host, HostError};
pub use self::messages::{CallFailure, Deliver, Invoke};
use self::sandbox::{CallError, Compiled, Entry, Sandbox};
use crate::supervisor::{ExitNote, Fault, Inject, Terminate, apply_fault};

/// What a capsule's actor is built from, prepared on the supervisor's thread.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The compiled module.
    pub compiled: Compiled,
    /// Its imports.
    pub host: Host,
}

/// The actor of one loaded capsule.
#[derive(Debug)]
pub struct CapsuleActor {
    name: String,
    sandbox: Result<Sandbox, String>,
    note: ExitNote,
}

impl CapsuleActor {
    /// Instantiates the recipe's module on the current thread (the capsule's arbiter). An
    /// instance that cannot be made leaves an actor that fails as soon as it starts.
    pub fn build(recipe: Recipe, note: ExitNote, _: &mut Context<Self>) -> Self {
        let name = recipe.host.capsule().to_owned();
        let sandbox = Sandbox::new(&recipe.compiled, recipe.host).map_err(|e| e.to_string());
        Self {
            name,
            sandbox,
            note,
        }
    }

    /// Calls the guest; on any failure, notes it and stops (the supervisor restarts it).
    fn call(
        &mut self,
        entry: Entry,
        input: &[u8],
        ctx: &mut Context<Self>,
    ) -> Result<Vec<u8>, CallFailure> {
        let sandbox = self
            .sandbox
            .as_mut()
            .map_err(|e| CallFailure::Crashed(e.clone()))?;
        sandbox.call(entry, input).map_err(|error| {
            tracing::warn!(capsule = %self.name, %error, "call failed; restarting the capsule");
            self.note.fail(error.to_string());
            ctx.stop();
            match error {
                CallError::Deadline(after) => CallFailure::Deadline(after),
                other => CallFailure::Crashed(other.to_string()),
            }
        })
    }
}

impl Actor for CapsuleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        if let Err(reason) = &self.sandbox {
            tracing::error!(capsule = %self.name, "cannot start: {reason}");
            self.note.fail(reason.clone());
            ctx.stop();
        }
    }
}

/// `astrid_command`'s input.
#[derive(Serialize)]
struct CommandInput<'a> {
    command: &'a str,
    args: &'a [String],
}

/// `astrid_event`'s input.
#[derive(Serialize)]
struct EventInput<'a> {
    topic: &'a str,
    payload: &'a rmpv::Value,
}

impl Handler<Invoke> for CapsuleActor {
    type Result = Result<rmpv::Value, CallFailure>;

    fn handle(&mut self, msg: Invoke, ctx: &mut Context<Self>) -> Self::Result {
        let input = rmp_serde::to_vec_named(&CommandInput {
            command: &msg.command,
            args: &msg.args,
        })
        .map_err(|e| CallFailure::Crashed(format!("cannot encode the input: {e}")))?;
        let reply = self.call(Entry::Command, &input, ctx)?;
        let value = rmpv::decode::read_value(&mut reply.as_slice()).map_err(|e| {
            // A reply that is not MessagePack is garbage, as a bad range is.
            self.note.fail(format!("the capsule returned garbage: {e}"));
            ctx.stop();
            CallFailure::Crashed(format!("the capsule returned garbage: {e}"))
        })?;
        match guest_error(&value) {
            Some(message) => Err(CallFailure::Guest(message.to_owned())),
            None => Ok(value),
        }
    }
}

/// The message of a `{"error": "..."}` reply.
fn guest_error(value: &rmpv::Value) -> Option<&str> {
    match value.as_map()?.as_slice() {
        [(key, message)] if key.as_str() == Some("error") => message.as_str(),
        _ => None,
    }
}

impl Handler<Deliver> for CapsuleActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        let has_handler = self.sandbox.as_ref().is_ok_and(|s| s.has(Entry::Event));
        if !has_handler {
            return;
        }
        let Ok(input) = rmp_serde::to_vec_named(&EventInput {
            topic: &msg.topic,
            payload: &msg.payload,
        }) else {
            return;
        };
        let _ = self.call(Entry::Event, &input, ctx);
    }
}

impl Handler<Terminate> for CapsuleActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Inject> for CapsuleActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        if msg.0 == Fault::Trap {
            tracing::warn!(capsule = %self.name, "injected fault: trap");
            self.note.fail("trapped: injected fault");
            ctx.stop();
        } else {
            apply_fault(msg.0, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_error_key_is_a_guest_error() {
        let err = rmpv::Value::Map(vec![("error".into(), "no".into())]);
        assert_eq!(guest_error(&err), Some("no"));
        let more = rmpv::Value::Map(vec![
            ("error".into(), "no".into()),
            ("data".into(), 1.into()),
        ]);
        assert_eq!(guest_error(&more), None);
        assert_eq!(guest_error(&rmpv::Value::from("error")), None);
    }
}
