//! One capsule's actor: owns the capsule's WebAssembly instance on the capsule's own
//! arbiter (thread), turns requests into calls through the host ABI, and treats every
//! failed call as a crash. A trapped instance's memory cannot be trusted, so the actor
//! answers the failed request, notes why, and stops; its supervisor then starts a fresh
//! instance under the capsule's restart policy. Requests queued behind the failed one are
//! dropped with the mailbox, and their senders see the capsule as crashed.
//!
//! Handles: [`Work`] (runs the calls waiting in its [`CallQueue`], answering each straight
//! into its caller's connection), [`Intercept`], the events of its `[bus] subscribe` patterns (it
//! registers with the bus itself, and again after the bus restarts; it does not hear its
//! own events), and the supervision messages [`Terminate`] and [`Inject`] (whose
//! [`Fault::Trap`] makes the instance fail as a guest bug would).
//!
//! The sandbox (`sandbox.rs`), the checks of what a module declares (`inspect.rs`), the
//! `log` import's budget (`log.rs`), the bound on a capsule's events in the bus's hands
//! (`backlog.rs`), the on-disk compile cache (`cache.rs`), the host imports'
//! work (`host.rs`) and the call queue (`queue.rs`) are plain code, tested on their own.

pub mod backlog;
pub mod cache;
pub mod host;
pub mod inspect;
pub mod log;
mod messages;
mod queue;
pub mod sandbox;

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, StreamHandler};
use serde::Serialize;

pub use self::host::{Host, HostError};
pub use self::messages::{Answer, Call, CallFailure, Intercept, NEVER_RAN, Work};
pub use self::queue::{CallQueue, LINGER, LingerSlots};
use self::sandbox::{CallError, Compiled, Entry, Sandbox};
use crate::bus::intercept::{Decision, Interceptor, Verdict};
use crate::bus::{BusActor, Deregister, Event, Register, SubscriberId};
use crate::capsules::loaded::{CHILD_PREFIX, child_name};
use crate::protocol::{RawValue, raw};
use crate::rate::RateBudget;
use crate::supervisor::{ChildRef, ExitNote, Fault, Inject, Terminate, apply_fault};

/// How long to wait for the bus when subscribing, and before trying again.
const BUS_TIMEOUT: Duration = Duration::from_secs(2);

/// What a capsule's actor is built from, prepared on the supervisor's thread.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The compiled module.
    pub compiled: Compiled,
    /// Its imports.
    pub host: Host,
    /// Topic patterns whose events it receives (`[bus] subscribe`).
    pub subscriptions: Vec<String>,
    /// Its command calls.
    pub queue: Arc<CallQueue>,
}

/// The actor of one loaded capsule.
#[derive(Debug)]
pub struct CapsuleActor {
    name: String,
    sandbox: Result<Sandbox, String>,
    note: ExitNote,
    bus: Option<ChildRef<BusActor>>,
    subscriptions: Vec<String>,
    subscriber: Option<SubscriberId>,
    queue: Arc<CallQueue>,
    /// The last command's input, kept for its buffer.
    input: Vec<u8>,
    /// Events too large for the capsule's memory are skipped; this budget bounds the log
    /// lines saying so.
    skipped: RateBudget,
}

impl CapsuleActor {
    /// Instantiates the recipe's module on the current thread (the capsule's arbiter). An
    /// instance that cannot be made leaves an actor that fails as soon as it starts.
    pub fn build(recipe: Recipe, note: ExitNote, _: &mut Context<Self>) -> Self {
        let name = recipe.host.capsule().to_owned();
        let bus = recipe.host.bus();
        let sandbox = Sandbox::new(&recipe.compiled, recipe.host).map_err(|e| e.to_string());
        Self {
            name,
            sandbox,
            note,
            bus,
            subscriptions: recipe.subscriptions,
            subscriber: None,
            queue: recipe.queue,
            input: Vec::new(),
            skipped: RateBudget::new(1, 1, std::time::Instant::now()),
        }
    }

    /// Registers with the (current) bus for the capsule's subscriptions; retried until the
    /// bus answers.
    fn subscribe(&mut self, ctx: &mut Context<Self>) {
        let Some(bus) = self.bus.clone() else { return };
        let register = Register {
            label: child_name(&self.name),
            patterns: self.subscriptions.clone(),
        };
        let ask = async move { bus.call(register, BUS_TIMEOUT).await };
        ctx.spawn(
            actix::fut::wrap_future(ask).map(|answer, act: &mut Self, ctx| match answer {
                Ok(Ok(registration)) => {
                    act.subscriber = Some(registration.id);
                    ctx.add_stream(registration.events);
                }
                Ok(Err(error)) => {
                    tracing::error!(capsule = %act.name, %error, "cannot subscribe");
                }
                Err(error) => {
                    tracing::warn!(capsule = %act.name, %error, "bus unavailable; retrying");
                    ctx.run_later(BUS_TIMEOUT / 4, Self::subscribe);
                }
            }),
        );
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
        let ceiling = sandbox.memory_ceiling();
        if input.len() > ceiling {
            return Err(CallFailure::TooLarge {
                len: input.len(),
                ceiling,
            });
        }
        sandbox.call(entry, input).map_err(|error| {
            tracing::warn!(capsule = %self.name, %error, "call failed; restarting the capsule");
            self.crash(error.to_string(), ctx);
            match error {
                CallError::Deadline(after) => CallFailure::Deadline(after),
                other => CallFailure::Crashed(other.to_string()),
            }
        })
    }

    /// Notes why the instance failed, drops it (its memory cannot be trusted) and stops.
    fn crash(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.note.fail(reason.clone());
        self.sandbox = Err(reason);
        ctx.stop();
    }
}

impl Actor for CapsuleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        match &self.sandbox {
            Err(reason) => {
                tracing::error!(capsule = %self.name, "cannot start: {reason}");
                self.note.fail(reason.clone());
                ctx.stop();
            }
            Ok(sandbox) if sandbox.has(Entry::Event) && !self.subscriptions.is_empty() => {
                self.subscribe(ctx);
            }
            Ok(_) => {}
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let bus = self.bus.as_ref().and_then(ChildRef::get);
        if let (Some(id), Some(bus)) = (self.subscriber.take(), bus) {
            bus.do_send(Deregister(id));
        }
    }
}

impl StreamHandler<Arc<Event>> for CapsuleActor {
    fn handle(&mut self, event: Arc<Event>, ctx: &mut Context<Self>) {
        // Its own events would come straight back; a capsule does not hear itself.
        if event.source.strip_prefix(CHILD_PREFIX) == Some(self.name.as_str()) {
            return;
        }
        self.deliver(&event.topic, &event.payload, ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The bus restarted and dropped the queue: subscribe to the new one.
        if self.subscriber.take().is_some() {
            self.subscribe(ctx);
        }
    }
}

/// `astrid_command`'s input.
#[derive(Serialize)]
struct CommandInput<'a> {
    command: &'a str,
    args: &'a [String],
}

impl CapsuleActor {
    /// Runs one command; its output is the guest's reply, one MessagePack value.
    fn invoke(
        &mut self,
        command: &str,
        args: &[String],
        ctx: &mut Context<Self>,
    ) -> Result<Vec<u8>, CallFailure> {
        self.input.clear();
        rmp_serde::encode::write_named(&mut self.input, &CommandInput { command, args })
            .map_err(|e| CallFailure::Crashed(format!("cannot encode the input: {e}")))?;
        let input = std::mem::take(&mut self.input);
        let reply = self.call(Entry::Command, &input, ctx);
        self.input = input;
        let mut reply = reply?;
        match raw::value_len(&reply) {
            Ok(len) => reply.truncate(len),
            Err(e) => {
                // A reply that is not MessagePack is garbage, as a bad range is.
                let reason = format!("the capsule returned garbage: {e}");
                self.crash(reason.clone(), ctx);
                return Err(CallFailure::Crashed(reason));
            }
        }
        match raw::error_message(&reply) {
            Some(message) => Err(CallFailure::Guest(message)),
            None => Ok(reply),
        }
    }
}

/// Calls run per [`Work`] message before the actor lets its other messages in.
const CALLS_PER_TURN: usize = 64;

impl Handler<Work> for CapsuleActor {
    type Result = ();

    fn handle(&mut self, _: Work, ctx: &mut Context<Self>) {
        let mut ran = 0;
        loop {
            if self.sandbox.is_err() {
                // The instance failed and the actor is stopping: the supervisor's report of
                // its end answers the calls still queued.
                return;
            }
            if ran == CALLS_PER_TURN {
                ctx.notify(Work);
                return;
            }
            let Some((command, args)) = self.queue.next() else {
                if self.queue.linger() || !self.queue.rest() {
                    continue;
                }
                return;
            };
            ran += 1;
            let outcome = self.invoke(&command, &args, ctx);
            if let Some(answer) = self.queue.finish() {
                match outcome {
                    Ok(output) => answer.send(&command, Ok(&output)),
                    Err(failure) => answer.send(&command, Err(failure)),
                }
            }
        }
    }
}

impl CapsuleActor {
    /// Hands an event to `astrid_event`, if the guest has one.
    fn deliver(&mut self, topic: &str, payload: &RawValue, ctx: &mut Context<Self>) {
        let has_handler = self.sandbox.as_ref().is_ok_and(|s| s.has(Entry::Event));
        if !has_handler {
            return;
        }
        if let Err(error @ CallFailure::TooLarge { .. }) =
            self.call_with_event(Entry::Event, topic, payload, ctx)
        {
            // Skipped, not a crash: whoever publishes cannot spend the capsule's budget.
            if self.skipped.admit(std::time::Instant::now()) {
                let also = self.skipped.take_dropped();
                tracing::warn!(capsule = %self.name, %topic, skipped_before = also, "event skipped: {error}");
            }
        }
    }

    /// Calls `entry` with `{topic, payload}`, written around the payload's bytes into the
    /// input buffer.
    fn call_with_event(
        &mut self,
        entry: Entry,
        topic: &str,
        payload: &RawValue,
        ctx: &mut Context<Self>,
    ) -> Result<Vec<u8>, CallFailure> {
        let mut input = std::mem::take(&mut self.input);
        input.clear();
        raw::write_event_input(&mut input, topic, payload);
        let reply = self.call(entry, &input, ctx);
        // A payload may be large: its copy is not kept for the next call.
        input.clear();
        input.shrink_to(INPUT_KEPT);
        self.input = input;
        reply
    }
}

/// Bytes of input buffer kept between calls.
const INPUT_KEPT: usize = 64 * 1024;

/// `astrid_intercept`'s reply. Its payload is written back into MessagePack as serde reads
/// it (see [`RawValue`]), never into a tree.
#[derive(serde::Deserialize)]
struct InterceptReply {
    action: String,
    #[serde(default)]
    payload: Option<RawValue>,
    #[serde(default)]
    reason: Option<String>,
}

impl Handler<Intercept> for CapsuleActor {
    type Result = Result<Verdict, CallFailure>;

    fn handle(&mut self, msg: Intercept, ctx: &mut Context<Self>) -> Self::Result {
        let reply = match self.call_with_event(Entry::Intercept, &msg.topic, &msg.payload, ctx) {
            // An interceptor that cannot see an event cannot let it pass.
            Err(error @ CallFailure::TooLarge { .. }) => {
                return Ok(Verdict::Deny(format!(
                    "not checked by `{}`: {error}",
                    self.name
                )));
            }
            other => other?,
        };
        // Its payload goes on to every subscriber: held to the depth of command output.
        let decided = raw::value_len(&reply)
            .ok()
            .and_then(|_| rmp_serde::from_slice::<InterceptReply>(&reply).ok())
            .and_then(|r| match r.action.as_str() {
                "continue" => Some(Verdict::Continue(r.payload)),
                "finish" => Some(Verdict::Finish(r.payload)),
                "deny" => Some(Verdict::Deny(r.reason.unwrap_or_default())),
                _ => None,
            });
        decided.ok_or_else(|| {
            let reason = "the capsule returned garbage: not an interceptor reply";
            self.crash(reason.into(), ctx);
            CallFailure::Crashed(reason.into())
        })
    }
}

/// A capsule's interceptor, as the bus sees it: asks whichever incarnation of the capsule
/// runs now, within its call deadline.
#[derive(Debug)]
pub struct CapsuleInterceptor {
    /// The capsule's actor.
    pub actor: ChildRef<CapsuleActor>,
    /// Its call deadline, plus a margin.
    pub timeout: Duration,
}

impl Interceptor for CapsuleInterceptor {
    fn intercept(&self, topic: &str, payload: &RawValue) -> Decision {
        let ask = self.actor.get().map(|actor| {
            actor
                .send(Intercept {
                    topic: topic.to_owned(),
                    payload: payload.clone(),
                })
                .timeout(self.timeout)
        });
        Box::pin(async move {
            match ask {
                None => Err("the capsule is not running".into()),
                Some(ask) => match ask.await {
                    Ok(Ok(verdict)) => Ok(verdict),
                    Ok(Err(failure)) => Err(failure.to_string()),
                    Err(e) => Err(format!("the capsule did not answer: {e}")),
                },
            }
        })
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
            self.crash("trapped: injected fault".into(), ctx);
        } else {
            apply_fault(msg.0, ctx);
        }
    }
}
