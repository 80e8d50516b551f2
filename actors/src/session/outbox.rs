//! A session's write side: one buffer of encoded frames and the futures that flush it.
//!
//! Replies and events are encoded straight into the buffer; the writer future (spawned
//! after the read stream, so it runs right after a batch of requests is handled) writes
//! everything pending in as few syscalls as possible. When the buffer grows past the high
//! watermark the session waits on [`CatchUp`], which blocks further reads and events until the
//! client catches up, or closes the connection when it does not read for `write_timeout`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use actix::{ActorContext, ActorFuture, Context};
use bytes::{Buf, BytesMut};
use serde::Serialize;
use tokio::io::AsyncWrite;
use tokio::net::unix::OwnedWriteHalf;

use super::SessionActor;
use crate::protocol::{EncodeError, encode_frame};

/// Above this many pending bytes, the session stops taking work until the client reads.
pub(super) const HIGH_WATER: usize = 1024 * 1024;
/// The session resumes once the pending bytes fall below this.
const LOW_WATER: usize = 64 * 1024;

/// Pending output and the socket's write half.
#[derive(Debug)]
pub(super) struct Outbox {
    io: OwnedWriteHalf,
    buf: BytesMut,
    waker: Option<Waker>,
    closing: bool,
    max_frame: usize,
}

impl Outbox {
    /// An outbox that never sends a frame longer than `max_frame` (the limit clients apply).
    pub(super) fn new(io: OwnedWriteHalf, max_frame: usize) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            waker: None,
            closing: false,
            max_frame,
        }
    }

    /// Appends one frame and wakes the writer.
    ///
    /// A value whose encoding is longer than the frame limit is not sent
    /// ([`EncodeError::TooLarge`]): the client would have to drop the connection.
    pub(super) fn frame<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        let start = self.buf.len();
        encode_frame(&mut self.buf, value)?;
        let body = self.buf.len() - start - crate::protocol::codec::LENGTH_PREFIX;
        if body > self.max_frame {
            self.buf.truncate(start);
            return Err(EncodeError::TooLarge(body));
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        Ok(())
    }

    /// After what is pending has been written, close the connection.
    pub(super) fn close(&mut self) {
        self.closing = true;
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    pub(super) fn pending(&self) -> usize {
        self.buf.len()
    }

    fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.buf.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes pending frames whenever there are any; ends the session once it is closing and
/// everything has been written, or when the socket fails.
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
        match act.out.poll_flush(task) {
            Poll::Ready(Ok(())) if act.out.closing => {
                ctx.stop();
                Poll::Ready(())
            }
            Poll::Ready(Ok(())) => {
                act.out.waker = Some(task.waker().clone());
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
        match act.out.poll_flush(task) {
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
