//! How a supervisor holds its children: the spec that (re)starts a child, the swappable
//! address other actors use to reach it, and the exit guard that reports its death however
//! it happens (stop, panic, or shutdown), with the note an actor leaves to say why it
//! stopped itself.
//!
//! The exit guard is the answer to actix not restarting panicked actors: it lives in a
//! future spawned into the child's own context, so it is dropped exactly when the context
//! is, and its `Drop` tells the supervisor which incarnation died and why.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{
    Actor, Addr, ArbiterHandle, AsyncContext, Context, Handler, MailboxError, Message, Recipient,
};

use super::delay::DelayGate;
use super::fault::{FaultFamily, Inject};
use super::messages::{ChildExited, Terminate};
use super::panic_capture;
use super::policy::{ExitReason, RestartPolicy};
use super::types::{Fault, NodeKind, RestartType, TreeNode};

/// The current address of a supervised actor. The supervisor swaps in the new address on
/// every restart, so holders never keep talking to a dead incarnation.
#[derive(Debug)]
pub struct ChildRef<A: Actor> {
    name: &'static str,
    addr: Arc<RwLock<Option<Addr<A>>>>,
    /// The `delay` fault's gate, shared with the child's slot.
    delay: Arc<DelayGate>,
}

impl<A: Actor> Clone for ChildRef<A> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            addr: Arc::clone(&self.addr),
            delay: Arc::clone(&self.delay),
        }
    }
}

impl<A: Actor> ChildRef<A> {
    /// An empty reference to the child called `name` (used in error messages).
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            addr: Arc::new(RwLock::new(None)),
            delay: Arc::default(),
        }
    }

    /// A reference already pointing at `addr` (for actors started outside a supervisor, as
    /// in tests).
    pub fn with(name: &'static str, addr: Addr<A>) -> Self {
        let r = Self::new(name);
        r.set(addr);
        r
    }

    /// The child's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The current address, if the child has started at least once.
    pub fn get(&self) -> Option<Addr<A>> {
        self.addr
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How long a message sent now is held first, while a `delay` fault is armed (for
    /// senders that do not go through [`ChildRef::call`]).
    pub fn delay(&self) -> Option<Duration> {
        self.delay.current()
    }

    /// Waits out an armed `delay` fault, within `timeout`, for a sender that does not go
    /// through [`ChildRef::call`]; answers the time left of `timeout`.
    ///
    /// # Errors
    ///
    /// [`CallError::Timeout`] when the delay is at least `timeout` (waited out to the end).
    pub async fn held(&self, timeout: Duration) -> Result<Duration, CallError> {
        let Some(wait) = self.delay.current() else {
            return Ok(timeout);
        };
        tokio::time::sleep(wait.min(timeout)).await;
        timeout.checked_sub(wait).ok_or(CallError::Timeout {
            actor: self.name,
            timeout,
        })
    }

    /// The gate the `delay` fault arms.
    pub(crate) fn delay_gate(&self) -> Arc<DelayGate> {
        Arc::clone(&self.delay)
    }

    pub(crate) fn set(&self, addr: Addr<A>) {
        *self.addr.write().unwrap_or_else(PoisonError::into_inner) = Some(addr);
    }

    /// Sends `msg` and waits at most `timeout` for the answer (a `delay` fault holds the
    /// message for its delay first, within `timeout`).
    ///
    /// # Errors
    ///
    /// [`CallError::NotStarted`] before the child first started, [`CallError::Unavailable`]
    /// when it is down or restarting (including when it dies while handling the message),
    /// [`CallError::Timeout`] past the deadline.
    pub async fn call<M>(&self, msg: M, timeout: Duration) -> Result<M::Result, CallError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let addr = self
            .get()
            .ok_or(CallError::NotStarted { actor: self.name })?;
        let left = self.held(timeout).await?;
        addr.send(msg)
            .timeout(left)
            .await
            .map_err(|e| CallError::mailbox(self.name, timeout, e))
    }
}

/// Why a call to a supervised actor got no answer. The kernel's request errors wrap it
/// (`KernelError::Call`); it is defined here so that the supervisor imports nothing above it.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The actor has not started yet.
    #[error("the {actor} actor has not started")]
    NotStarted {
        /// Actor name.
        actor: &'static str,
    },
    /// The actor is down: it stopped or crashed (possibly while handling this request) and
    /// has not been restarted yet.
    #[error("the {actor} actor is unavailable: it stopped or is restarting")]
    Unavailable {
        /// Actor name.
        actor: &'static str,
        /// The mailbox error.
        #[source]
        source: MailboxError,
    },
    /// The actor did not answer in time.
    #[error("the {actor} actor did not answer within {} ms", timeout.as_millis())]
    Timeout {
        /// Actor name.
        actor: &'static str,
        /// The deadline.
        timeout: Duration,
    },
}

impl CallError {
    /// Maps a failed `send` to `actor` with deadline `timeout`.
    pub fn mailbox(actor: &'static str, timeout: Duration, error: MailboxError) -> Self {
        match error {
            MailboxError::Timeout => Self::Timeout { actor, timeout },
            MailboxError::Closed => Self::Unavailable {
                actor,
                source: error,
            },
        }
    }
}

/// What a supervisor can do to a running child, whatever its actor type.
pub trait ChildControl {
    /// Asks the child to stop (it receives [`Terminate`]).
    fn terminate(&self);
    /// Delivers a fault.
    fn inject(&self, fault: Fault);
}

impl<A> ChildControl for Addr<A>
where
    A: Actor + Handler<Terminate> + Handler<Inject>,
    A::Context: ToEnvelope<A, Terminate> + ToEnvelope<A, Inject>,
{
    fn terminate(&self) {
        self.do_send(Terminate);
    }

    fn inject(&self, fault: Fault) {
        self.do_send(Inject(fault));
    }
}

type Starter = Box<dyn FnMut(ExitGuard) -> Result<Box<dyn ChildControl>, String> + Send>;
type Describe = Box<dyn Fn() -> Vec<TreeNode> + Send>;

/// How to start (and restart) one child. `Send`, so that a child can be added at run time
/// ([`StartChild`](super::StartChild)).
pub struct ChildSpec {
    pub(crate) name: String,
    pub(crate) restart: RestartType,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) kind: NodeKind,
    pub(crate) start: Starter,
    pub(crate) describe: Option<Describe>,
    /// A restart budget of the child's own; exhausting it leaves the child failed.
    pub(crate) budget: Option<RestartPolicy>,
    /// The supervisor this child is, when it is one: the tree and faults reach into it.
    pub(crate) subtree: Option<ChildRef<super::SupervisorActor>>,
    /// The `delay` fault's gate, shared with the child's references.
    pub(crate) delay: Option<Arc<DelayGate>>,
    /// The faults beyond panic, stop, hang and clear that the child implements.
    pub(crate) accepts: Vec<FaultFamily>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A worker on the supervisor's own arbiter. `factory` builds a fresh actor value for
    /// every incarnation (state is never carried over a crash); an `Err` counts as a failed
    /// start. Each new address is published through `slot`.
    pub fn worker<A, F>(
        name: impl Into<String>,
        restart: RestartType,
        slot: ChildRef<A>,
        mut factory: F,
    ) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Terminate> + Handler<Inject>,
        F: FnMut() -> Result<A, String> + Send + 'static,
    {
        let gate = slot.delay_gate();
        Self::with_starter(name, restart, move |guard: ExitGuard| {
            let actor = factory()?;
            let addr = A::create(move |ctx| {
                guard.attach(ctx);
                actor
            });
            slot.set(addr.clone());
            Ok(Box::new(addr) as Box<dyn ChildControl>)
        })
        .delayed(gate)
    }

    /// A worker on its own arbiter (thread), for actors whose handlers block (disk I/O,
    /// fsync). The actor is built on the supervisor's thread and moved there.
    pub fn worker_on<A, F>(
        name: impl Into<String>,
        restart: RestartType,
        slot: ChildRef<A>,
        arbiter: ArbiterHandle,
        mut factory: F,
    ) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Terminate> + Handler<Inject> + Send,
        F: FnMut() -> Result<A, String> + Send + 'static,
    {
        let gate = slot.delay_gate();
        Self::with_starter(name, restart, move |guard: ExitGuard| {
            let actor = factory()?;
            let addr = A::start_in_arbiter(&arbiter, move |ctx| {
                guard.attach(ctx);
                actor
            });
            slot.set(addr.clone());
            Ok(Box::new(addr) as Box<dyn ChildControl>)
        })
        .delayed(gate)
    }

    /// A worker built on an arbiter (thread) by `build`, for actors that cannot be moved
    /// between threads (a capsule's wasmer store). `factory` prepares what `build` needs on
    /// the supervisor's thread; its `Err` counts as a failed start. `build` cannot fail: an
    /// actor that finds it cannot run stops itself with [`ExitNote::fail`].
    pub fn worker_in<A, R, F, B>(
        name: impl Into<String>,
        restart: RestartType,
        slot: ChildRef<A>,
        arbiter: ArbiterHandle,
        mut factory: F,
        build: B,
    ) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<Terminate> + Handler<Inject>,
        R: Send + 'static,
        F: FnMut() -> Result<R, String> + Send + 'static,
        B: Fn(R, ExitNote, &mut Context<A>) -> A + Send + Sync + Copy + 'static,
    {
        let gate = slot.delay_gate();
        Self::with_starter(name, restart, move |guard: ExitGuard| {
            let recipe = factory()?;
            // The address exists at once; the actor is built on its thread, where messages
            // wait for it.
            let addr = A::start_in_arbiter(&arbiter, move |ctx| {
                let note = guard.attach(ctx);
                build(recipe, note, ctx)
            });
            slot.set(addr.clone());
            Ok(Box::new(addr) as Box<dyn ChildControl>)
        })
        .delayed(gate)
    }

    /// A nested supervisor: `factory` builds it (its children included) for every
    /// incarnation, given its own address. The parent's tree and fault injection reach
    /// into it.
    pub fn nested<F>(
        name: impl Into<String>,
        restart: RestartType,
        slot: ChildRef<super::SupervisorActor>,
        mut factory: F,
    ) -> Self
    where
        F: FnMut(Addr<super::SupervisorActor>) -> super::SupervisorActor + Send + 'static,
    {
        let subtree = slot.clone();
        let mut spec = Self::with_starter(name, restart, move |guard: ExitGuard| {
            let mut ctx = Context::new();
            let sup = factory(ctx.address());
            guard.attach(&mut ctx);
            let addr = ctx.run(sup);
            slot.set(addr.clone());
            Ok(Box::new(addr) as Box<dyn ChildControl>)
        });
        spec.kind = NodeKind::Supervisor;
        spec.subtree = Some(subtree);
        spec
    }

    fn with_starter(
        name: impl Into<String>,
        restart: RestartType,
        start: impl FnMut(ExitGuard) -> Result<Box<dyn ChildControl>, String> + Send + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            restart,
            shutdown_timeout: Duration::from_secs(5),
            kind: NodeKind::Worker,
            start: Box::new(start),
            describe: None,
            budget: None,
            subtree: None,
            delay: None,
            accepts: Vec::new(),
        }
    }

    /// A worker reached through `gate`'s references: the `delay` fault applies.
    fn delayed(mut self, gate: Arc<DelayGate>) -> Self {
        self.delay = Some(gate);
        self.accepts.push(FaultFamily::Delay);
        self
    }

    /// The child implements the faults of `family` (its `Inject` handler applies them).
    #[must_use]
    pub fn accepts(mut self, family: FaultFamily) -> Self {
        self.accepts.push(family);
        self
    }

    /// Gives the child a restart budget (and backoff) of its own instead of sharing the
    /// supervisor's: past it, the child stays `failed` and nothing escalates.
    #[must_use]
    pub fn own_budget(mut self, policy: RestartPolicy) -> Self {
        self.budget = Some(policy);
        self
    }

    /// Marks the node as a capsule in the tree (it accepts the faults only capsules
    /// implement: `trap`, `import` and `overflow`).
    #[must_use]
    pub fn capsule(mut self) -> Self {
        self.kind = NodeKind::Capsule;
        // Its calls do not go through its references: the capsule delays them itself.
        self.delay = None;
        self.accepts.extend([
            FaultFamily::Trap,
            FaultFamily::Import,
            FaultFamily::Overflow,
        ]);
        self
    }

    /// How long the child gets to stop before it is abandoned (default 5 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Marks the node as a supervisor in the tree.
    #[must_use]
    pub fn supervisor(mut self) -> Self {
        self.kind = NodeKind::Supervisor;
        self
    }

    /// Children to show under this node in the tree (for example a listener's sessions).
    #[must_use]
    pub fn describe_children(
        mut self,
        describe: impl Fn() -> Vec<TreeNode> + Send + 'static,
    ) -> Self {
        self.describe = Some(Box::new(describe));
        self
    }
}

/// Reports the death of one incarnation of a child to its supervisor when dropped.
#[derive(Debug)]
pub struct ExitGuard {
    notify: Recipient<ChildExited>,
    id: u64,
    generation: u64,
    stop_requested: Arc<AtomicBool>,
    note: ExitNote,
}

/// Where an actor says why it is stopping itself (a normal end, or a failure it detected),
/// before calling `ctx.stop()`. Without a note, a stop nobody asked for counts as
/// [`ExitReason::Stopped`] (abnormal).
#[derive(Debug, Clone, Default)]
pub struct ExitNote(Arc<Mutex<Option<ExitReason>>>);

impl ExitNote {
    /// The actor finished its work: a transient child is not restarted.
    pub fn normal(&self) {
        self.set(ExitReason::Normal);
    }

    /// The actor failed (for a capsule: its instance trapped).
    pub fn fail(&self, reason: impl Into<String>) {
        self.set(ExitReason::Failed(reason.into()));
    }

    fn set(&self, reason: ExitReason) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    fn take(&self) -> Option<ExitReason> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl ExitGuard {
    pub(crate) fn new(
        notify: Recipient<ChildExited>,
        id: u64,
        generation: u64,
        stop_requested: Arc<AtomicBool>,
    ) -> Self {
        Self {
            notify,
            id,
            generation,
            stop_requested,
            note: ExitNote::default(),
        }
    }

    /// Ties the guard to `ctx`: it is dropped when the context is, whether the actor
    /// stopped or its task was dropped after a panic. Returns the note the actor may leave.
    pub fn attach<A: Actor<Context = Context<A>>>(self, ctx: &mut Context<A>) -> ExitNote {
        let note = self.note.clone();
        ctx.spawn(actix::fut::wrap_future(async move {
            let _guard = self;
            std::future::pending::<()>().await;
        }));
        note
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let noted = self.note.take();
        let reason = match panic_capture::take_for_current_task() {
            Some(message) => ExitReason::Panicked(message),
            None if self.stop_requested.load(Ordering::Acquire) => ExitReason::Shutdown,
            None => noted.unwrap_or(ExitReason::Stopped),
        };
        self.notify.do_send(ChildExited {
            id: self.id,
            generation: self.generation,
            reason,
        });
    }
}
