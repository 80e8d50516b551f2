//! The futures that drive a session's [`Outbox`]: the writer, which flushes pending frames
//! and ends the session when it is done, and [`CatchUp`], which holds the session back while
//! a client does not read.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::{ActorContext, ActorFuture, Context};

use super::SessionActor;
#[allow(unused_imports, reason = "named by the docs")]
use crate::runtime::outbox::Outbox;
use crate::runtime::outbox::{Flushed, LOW_WATER};

/// Writes pending frames whenever there are any; ends the session once it is closing and
/// everything has been written, or when the socket fails. Once the session waits to be idle
/// (see [`Outbox::watch_idle`]), it closes it when the last request is answered.
#[derive(Debug)]
pub(super) struct Writer;

impl ActorFuture<SessionActor> for Writer {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut SessionActor,
        ctx: &mut Context<SessionActor>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        match act.out.poll_flush(task, true) {
            Poll::Ready(Ok(Flushed::Closed)) => {
                ctx.stop();
                Poll::Ready(())
            }
            Poll::Ready(Ok(Flushed::Idle)) => {
                act.close_if_done(ctx);
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(connection = act.id, "write failed: {e}");
                ctx.stop();
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Blocks the session (through `ctx.wait`) until the client has read enough, writing as it
/// goes; closes the session if the client reads nothing for `timeout`.
pub(super) struct CatchUp {
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl std::fmt::Debug for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchUp").finish_non_exhaustive()
    }
}

impl CatchUp {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl ActorFuture<SessionActor> for CatchUp {
    type Output = ();

    fn poll(
        mut self: Pin<&mut Self>,
        act: &mut SessionActor,
        ctx: &mut Context<SessionActor>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let before = act.out.pending();
        match act.out.poll_flush(task, false) {
            Poll::Ready(Err(_)) => {
                ctx.stop();
                return Poll::Ready(());
            }
            _ if act.out.pending() < LOW_WATER => return Poll::Ready(()),
            _ => {}
        }
        if act.out.pending() < before {
            // Progress: the client is reading; give it a fresh deadline.
            let timeout = act.deps.limits.write_timeout;
            self.deadline
                .as_mut()
                .reset(tokio::time::Instant::now() + timeout);
        }
        if self.deadline.as_mut().poll(task).is_ready() {
            tracing::warn!(
                connection = act.id,
                pending = act.out.pending(),
                "client stopped reading; closing"
            );
            ctx.stop();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
