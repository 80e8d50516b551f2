//! One capsule's actor: a light actor on the capsules supervisor's thread that holds no
//! instance and no thread of its own. Its [`Runner`] (`runner.rs`) starts a thread when the
//! guest has something to do, instantiates the compiled module there, and retires both
//! after the linger ([`CAPSULE_LINGER`](crate::runtime::CAPSULE_LINGER) by default) without
//! work; so an idle capsule costs neither. Command calls go from the sessions straight to
//! the runner through the capsule's [`CallQueue`]; the actor hands it the rest (events,
//! interception, a hang) as [`Job`]s, and treats every failed call as a crash. A trapped
//! instance's memory cannot be trusted, so the runner answers the failed request, drops the
//! instance and tells the actor why; the actor notes it and stops, and its supervisor then
//! starts a new incarnation (with a new runner) under the capsule's restart policy. Calls
//! queued behind the failed one are answered as never run when the supervisor reports the
//! end.
//!
//! Handles: [`Intercept`] (answered by the runner, without holding the actor up), the
//! events of its `[bus] subscribe` patterns (it registers with the bus itself, and again
//! after the bus restarts; it does not hear its own events; it takes the next event only
//! once the runner has handled the last, so the bus's bounded queue holds the backlog),
//! and the supervision messages [`Terminate`] and [`Inject`] ([`Fault::Trap`] ends the
//! incarnation as a guest bug would; [`Fault::Hang`] holds the actor and the runner;
//! [`Fault::Overflow`] asks the bus to drop its next events; the faults that outlive an
//! incarnation are armed in the capsule's `faults.rs`).
//!
//! The sandbox (`sandbox.rs`), the checks of what a module declares (`inspect.rs`), the
//! `log` import's budget (`log.rs`), the bound on a capsule's events in the bus's hands
//! (`backlog.rs`), the on-disk compile cache (`cache.rs`), the host imports'
//! work (`host.rs`), the call queue (`queue.rs`), the runner (`runner.rs`), what an instance
//! records of its calls (`tape.rs`), crash bundles on disk (`crashes.rs`) and their replay
//! (`replay.rs`) are plain code, tested on their own. A crash is kept as a bundle by the
//! runner's thread as it ends the incarnation, or, for the injected `trap`, from here.

pub mod backlog;
pub mod cache;
pub mod config;
pub mod crashes;
mod error;
pub mod faults;
pub mod host;
pub mod http;
mod imports;
pub mod inspect;
mod limits;
pub mod log;
mod messages;
pub mod pauses;
mod queue;
pub mod replay;
pub mod runner;
pub mod sandbox;
pub mod tape;
mod tunables;

use std::sync::Arc;
use std::time::Duration;

use actix::fut::wrap_future;
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, ResponseFuture,
    StreamHandler,
};

use self::crashes::Crashed;
pub use self::error::CapsuleError;
pub use self::host::{Host, HostError};
pub use self::limits::Limits;
pub use self::messages::{Answer, Call, CallFailure, Intercept, NEVER_RAN};
pub use self::queue::{CallQueue, LINGER, LingerSlots, SweepDue, Sweeper};
pub use self::runner::{Job, Runner, RunnerSlot};
use self::sandbox::{Compiled, Entry};
use crate::bus::intercept::{Decision, Interceptor, Verdict};
use crate::bus::{BusActor, Deregister, Event, Overflow, Register, SubscriberId};
use crate::protocol::{CrashKind, RawValue};
use crate::supervisor::{ChildRef, ExitNote, Fault, Inject, Terminate, apply_fault};

/// What the supervision-tree name of a capsule's actor starts with; the same name is its
/// source on the bus and its actor in the audit log.
pub const CHILD_PREFIX: &str = "capsule:";

/// The supervision-tree name of capsule `name`'s actor.
pub fn child_name(capsule: &str) -> String {
    format!("{CHILD_PREFIX}{capsule}")
}

/// How long to wait for the bus when subscribing, and before trying again.
const BUS_TIMEOUT: Duration = Duration::from_secs(2);

/// What a capsule's actor is built from, prepared by the registry.
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
    /// Where the queue finds the current incarnation's runner.
    pub runner: RunnerSlot,
    /// How long a thread with nothing to do waits before it retires.
    pub linger: Duration,
}

/// The actor of one loaded capsule.
#[derive(Debug)]
pub struct CapsuleActor {
    name: String,
    runner: Arc<Runner>,
    has_events: bool,
    note: ExitNote,
    bus: Option<ChildRef<BusActor>>,
    subscriptions: Vec<String>,
    subscriber: Option<SubscriberId>,
}

impl CapsuleActor {
    /// A new incarnation: its runner (no thread yet) takes over the capsule's queue, and is
    /// woken at once if calls wait there already.
    pub fn build(recipe: Recipe, note: ExitNote, ctx: &mut Context<Self>) -> Self {
        let name = recipe.host.capsule().to_owned();
        let bus = recipe.host.bus();
        let has_events = recipe.compiled.has(Entry::Event);
        let (crashed, crash) = tokio::sync::oneshot::channel();
        let runner = Runner::new(
            recipe.compiled,
            recipe.host,
            &recipe.queue,
            recipe.linger,
            crashed,
        );
        recipe.runner.set(Arc::clone(&runner));
        recipe.queue.resume(&runner);
        // The runner's report of a failed call ends the incarnation.
        ctx.spawn(wrap_future(crash).map(|reason, act: &mut Self, ctx| {
            if let Ok(reason) = reason {
                act.crash(reason, ctx);
            }
        }));
        Self {
            name,
            runner,
            has_events,
            note,
            bus,
            subscriptions: recipe.subscriptions,
            subscriber: None,
        }
    }

    /// The incarnation's runner.
    pub fn runner(&self) -> &Arc<Runner> {
        &self.runner
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

    /// The `overflow` fault: the bus drops the next `times` events for this capsule as a
    /// full queue would, and counts them.
    fn overflow(&self, times: u32) {
        let bus = self.bus.as_ref().and_then(ChildRef::get);
        if let (Some(subscriber), Some(bus)) = (self.subscriber, bus) {
            bus.do_send(Overflow { subscriber, times });
        } else {
            tracing::warn!(
                capsule = %self.name,
                "overflow fault ignored: the capsule has no bus subscription"
            );
        }
    }

    /// Keeps a bundle of a crash injected between calls (nothing to replay), off the
    /// actor's thread.
    fn keep_injected(&self, reason: &str) {
        self.runner.host().metrics().failed(CrashKind::Injected);
        let Some(sink) = self.runner.host().crash_sink().cloned() else {
            return;
        };
        let limits = self.runner.compiled().crash_limits();
        let name = self.name.clone();
        let crashed = Crashed {
            kind: Some(CrashKind::Injected),
            message: reason.to_owned(),
            ..Crashed::default()
        };
        tokio::task::spawn_blocking(move || sink.keep(&name, limits, crashed));
    }

    /// Notes why the incarnation failed, ends its runner (its instance cannot be trusted)
    /// and stops.
    fn crash(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.note.fail(reason);
        self.runner.close();
        ctx.stop();
    }
}

impl Actor for CapsuleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        if self.has_events && !self.subscriptions.is_empty() {
            self.subscribe(ctx);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.runner.close();
        let bus = self.bus.as_ref().and_then(ChildRef::get);
        if let (Some(id), Some(bus)) = (self.subscriber.take(), bus) {
            bus.do_send(Deregister(id));
        }
    }
}

/// Ends the runner however the actor goes, a panic included (its value is dropped then).
impl Drop for CapsuleActor {
    fn drop(&mut self) {
        self.runner.close();
    }
}

impl StreamHandler<Arc<Event>> for CapsuleActor {
    fn handle(&mut self, event: Arc<Event>, ctx: &mut Context<Self>) {
        // Its own events would come straight back; a capsule does not hear itself.
        if event.source.strip_prefix(CHILD_PREFIX) == Some(self.name.as_str()) {
            return;
        }
        let (done, handled) = tokio::sync::oneshot::channel();
        self.runner.push(Job::Event {
            topic: event.topic.clone(),
            payload: event.payload.clone(),
            done,
        });
        // The next event waits in the bus's bounded queue until this one is handled.
        ctx.wait(wrap_future(async move {
            let _ = handled.await;
        }));
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The bus restarted and dropped the queue: subscribe to the new one.
        if self.subscriber.take().is_some() {
            self.subscribe(ctx);
        }
    }
}

impl Handler<Intercept> for CapsuleActor {
    type Result = ResponseFuture<Result<Verdict, CallFailure>>;

    fn handle(&mut self, msg: Intercept, _: &mut Context<Self>) -> Self::Result {
        let (reply, verdict) = tokio::sync::oneshot::channel();
        self.runner.push(Job::Intercept {
            topic: msg.topic,
            payload: msg.payload,
            reply,
        });
        Box::pin(async move {
            verdict
                .await
                .unwrap_or_else(|_| Err(CallFailure::Crashed(NEVER_RAN.into())))
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
        match msg.0 {
            Fault::Trap => {
                tracing::warn!(capsule = %self.name, "injected fault: trap");
                let reason = "trapped: injected fault";
                self.keep_injected(reason);
                self.crash(reason.into(), ctx);
            }
            Fault::Hang { millis } => {
                // The guest takes no call meanwhile, as the actor takes no message.
                self.runner.push(Job::Hang(Duration::from_millis(millis)));
                apply_fault(&msg.0, ctx);
            }
            Fault::Overflow { times } => self.overflow(times),
            fault => {
                tracing::warn!(capsule = %self.name, %fault, "injected fault");
                if !self.runner.host().faults().arm(&fault) {
                    apply_fault(&fault, ctx);
                }
            }
        }
    }
}
