//! How a supervisor holds its children: the spec that (re)starts a child, the swappable
//! address other actors use to reach it, and the exit guard that reports its death however
//! it happens (stop, panic, or shutdown).
//!
//! The exit guard is the answer to actix not restarting panicked actors: it lives in a
//! future spawned into the child's own context, so it is dropped exactly when the context
//! is, and its `Drop` tells the supervisor which incarnation died and why.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, ArbiterHandle, AsyncContext, Context, Handler, Message, Recipient};

use super::fault::{Fault, Inject};
use super::messages::{ChildExited, Terminate};
use super::panic_capture;
use super::policy::{ExitReason, RestartType};
use super::tree::{NodeKind, TreeNode};
use crate::error::KernelError;

/// The current address of a supervised actor. The supervisor swaps in the new address on
/// every restart, so holders never keep talking to a dead incarnation.
#[derive(Debug)]
pub struct ChildRef<A: Actor> {
    name: &'static str,
    addr: Arc<RwLock<Option<Addr<A>>>>,
}

impl<A: Actor> Clone for ChildRef<A> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            addr: Arc::clone(&self.addr),
        }
    }
}

impl<A: Actor> ChildRef<A> {
    /// An empty reference to the child called `name` (used in error messages).
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            addr: Arc::new(RwLock::new(None)),
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

    pub(crate) fn set(&self, addr: Addr<A>) {
        *self.addr.write().unwrap_or_else(PoisonError::into_inner) = Some(addr);
    }

    /// Sends `msg` and waits at most `timeout` for the answer.
    ///
    /// # Errors
    ///
    /// [`KernelError::Unavailable`] when the child is down or restarting (including when it
    /// dies while handling the message), [`KernelError::Timeout`] past the deadline.
    pub async fn call<M>(&self, msg: M, timeout: Duration) -> Result<M::Result, KernelError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let addr = self
            .get()
            .ok_or(KernelError::NotStarted { actor: self.name })?;
        addr.send(msg)
            .timeout(timeout)
            .await
            .map_err(|e| KernelError::mailbox(self.name, timeout, e))
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

type Starter = Box<dyn FnMut(ExitGuard) -> Result<Box<dyn ChildControl>, String>>;
type Describe = Box<dyn Fn() -> Vec<TreeNode>>;

/// How to start (and restart) one child.
pub struct ChildSpec {
    pub(crate) name: String,
    pub(crate) restart: RestartType,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) kind: NodeKind,
    pub(crate) start: Starter,
    pub(crate) describe: Option<Describe>,
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
        F: FnMut() -> Result<A, String> + 'static,
    {
        Self::with_starter(name, restart, move |guard: ExitGuard| {
            let actor = factory()?;
            let addr = A::create(move |ctx| {
                guard.attach(ctx);
                actor
            });
            slot.set(addr.clone());
            Ok(Box::new(addr) as Box<dyn ChildControl>)
        })
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
        F: FnMut() -> Result<A, String> + 'static,
    {
        Self::with_starter(name, restart, move |guard: ExitGuard| {
            let actor = factory()?;
            let addr = A::start_in_arbiter(&arbiter, move |ctx| {
                guard.attach(ctx);
                actor
            });
            slot.set(addr.clone());
            Ok(Box::new(addr) as Box<dyn ChildControl>)
        })
    }

    fn with_starter(
        name: impl Into<String>,
        restart: RestartType,
        start: impl FnMut(ExitGuard) -> Result<Box<dyn ChildControl>, String> + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            restart,
            shutdown_timeout: Duration::from_secs(5),
            kind: NodeKind::Worker,
            start: Box::new(start),
            describe: None,
        }
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
    pub fn describe_children(mut self, describe: impl Fn() -> Vec<TreeNode> + 'static) -> Self {
        self.describe = Some(Box::new(describe));
        self
    }
}

/// Reports the death of one incarnation of a child to its supervisor when dropped.
#[derive(Debug)]
pub struct ExitGuard {
    notify: Recipient<ChildExited>,
    slot: usize,
    generation: u64,
    stop_requested: Arc<AtomicBool>,
}

impl ExitGuard {
    pub(crate) fn new(
        notify: Recipient<ChildExited>,
        slot: usize,
        generation: u64,
        stop_requested: Arc<AtomicBool>,
    ) -> Self {
        Self {
            notify,
            slot,
            generation,
            stop_requested,
        }
    }

    /// Ties the guard to `ctx`: it is dropped when the context is, whether the actor
    /// stopped or its task was dropped after a panic.
    pub fn attach<A: Actor<Context = Context<A>>>(self, ctx: &mut Context<A>) {
        ctx.spawn(actix::fut::wrap_future(async move {
            let _guard = self;
            std::future::pending::<()>().await;
        }));
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let reason = match panic_capture::take_for_current_task() {
            Some(message) => ExitReason::Panicked(message),
            None if self.stop_requested.load(Ordering::Acquire) => ExitReason::Shutdown,
            None => ExitReason::Stopped,
        };
        self.notify.do_send(ChildExited {
            slot: self.slot,
            generation: self.generation,
            reason,
        });
    }
}
