//! A connection's write side: one buffer of encoded frames, shared by the session and by whoever
//! answers its requests from another thread, and the futures that flush it.
//!
//! Replies and events are encoded straight into the buffer. On the session's thread the
//! writer future (spawned after the read stream, so it runs right after a batch of requests
//! is handled) writes everything pending in as few system calls as possible. A [`ReplyTo`]
//! answered on another thread (a capsule's actor answering a command) writes its frame to the
//! socket there and then, so the session's thread never wakes for it; only what the socket
//! does not take at once is left to the writer. When the buffer grows past the high
//! watermark the session waits on `CatchUp` (`session/writer.rs`), which blocks further reads and events until
//! the client catches up, or closes the connection when it does not read for
//! `write_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context as TaskContext, Poll, Waker};
use std::thread::{self, ThreadId};

use bytes::{Buf, BytesMut};
use serde::Serialize;
use tokio::io::AsyncWrite;
use tokio::net::unix::OwnedWriteHalf;

use crate::metrics::{Metrics, Timer};
use crate::protocol::{
    EncodeError, ErrorBody, ErrorCode, ErrorFrame, ProtocolError, ReplyFrame, encode_frame,
};

/// Why a request's answer could not be written as it was; the request is answered with the
/// error instead. Mapped to wire codes with every other kernel error (`error/codes.rs`).
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The result does not fit a frame.
    #[error("the result is {len} bytes, more than the frame limit of {max} bytes; ask for less")]
    TooLarge {
        /// The encoded result's size.
        len: usize,
        /// The frame limit.
        max: usize,
    },
    /// The result could not be encoded (a bug).
    #[error("the daemon could not encode the result: {0}")]
    Encoding(#[source] EncodeError),
    /// The work serving the request ended without answering it (a bug).
    #[error("the daemon dropped this request without an answer")]
    Unanswered,
}

/// Above this many pending bytes, the session stops taking work until the client reads.
pub(crate) const HIGH_WATER: usize = 1024 * 1024;
/// The session resumes once the pending bytes fall below this.
pub(crate) const LOW_WATER: usize = 64 * 1024;
/// An empty buffer that grew past this (for a large reply or event) is let go, so that a
/// connection does not keep a frame's worth of memory after sending one.
const KEPT_CAPACITY: usize = 1024 * 1024;

/// Pending output and the socket's write half, shared (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Outbox(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Frames longer than this are not sent (the limit clients apply).
    max_frame: usize,
    /// The connection, for logs.
    connection: u64,
    /// The session's thread: replies made there are left to the writer.
    home: ThreadId,
    /// Where answers are counted.
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct State {
    /// `None` once the session has ended: late replies are dropped.
    io: Option<OwnedWriteHalf>,
    buf: BytesMut,
    /// The writer's, while it has nothing to write.
    waker: Option<Waker>,
    closing: bool,
    /// Requests taken and not answered yet.
    in_flight: usize,
    /// Wake the writer when the last request in flight is answered (the session closes
    /// once idle).
    watch_idle: bool,
}

impl State {
    /// Appends one frame, unless its encoding is longer than `max_frame`.
    fn frame<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        max_frame: usize,
    ) -> Result<(), EncodeError> {
        self.frame_with(max_frame, |buf| encode_frame(buf, value))
    }

    /// Appends the frame `encode` writes, unless its body is longer than `max_frame`.
    fn frame_with(
        &mut self,
        max_frame: usize,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let start = self.buf.len();
        encode(&mut self.buf)?;
        let body = self.buf.len() - start - crate::protocol::codec::LENGTH_PREFIX;
        if body > max_frame {
            self.buf.truncate(start);
            return Err(EncodeError::TooLarge(body));
        }
        Ok(())
    }

    /// Writes what the socket takes now, without waiting.
    fn write_now(&mut self) {
        let Some(io) = &self.io else { return };
        while !self.buf.is_empty() {
            match io.try_write(&self.buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => self.buf.advance(n),
            }
        }
        self.trim();
    }

    /// Lets a large buffer go once everything in it is written.
    fn trim(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > KEPT_CAPACITY {
            self.buf = BytesMut::with_capacity(8 * 1024);
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// How [`Writer`] found the outbox.
pub(crate) enum Flushed {
    /// Everything is written.
    Idle,
    /// Everything is written and the session is closing.
    Closed,
}

impl Outbox {
    /// The outbox of connection `connection`, made on the session's thread; its answers
    /// are counted in `metrics`.
    pub(crate) fn new(
        io: OwnedWriteHalf,
        max_frame: usize,
        connection: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self(Arc::new(Shared {
            state: Mutex::new(State {
                io: Some(io),
                buf: BytesMut::with_capacity(8 * 1024),
                waker: None,
                closing: false,
                in_flight: 0,
                watch_idle: false,
            }),
            max_frame,
            connection,
            home: thread::current().id(),
            metrics,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one frame and wakes the writer.
    ///
    /// A value whose encoding is longer than the frame limit is not sent
    /// ([`EncodeError::TooLarge`]): the client would have to drop the connection.
    pub(crate) fn frame<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), EncodeError> {
        let mut state = self.lock();
        state.frame(value, self.0.max_frame)?;
        state.wake_writer();
        Ok(())
    }

    /// Appends the frame `encode` writes (one that is already MessagePack, see
    /// [`crate::protocol::raw`]) and wakes the writer; as [`frame`](Self::frame) for one
    /// longer than the limit.
    pub(crate) fn frame_with(
        &self,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let mut state = self.lock();
        state.frame_with(self.0.max_frame, encode)?;
        state.wake_writer();
        Ok(())
    }

    /// Appends the reply to request `id` (an error reply when the result cannot be sent).
    pub(crate) fn reply_ok<T: Serialize + ?Sized>(&self, id: u64, result: &T) {
        let mut state = self.lock();
        let _ = self.append_ok(&mut state, id, result);
        state.wake_writer();
    }

    /// Counts the answer to the request `timer` times (see [`Metrics`]).
    pub(crate) fn count(&self, timer: Timer, outcome: Result<(), ErrorCode>) {
        self.0.metrics.requests.finish(timer, outcome);
    }

    /// Appends an error reply (to request `id`, or to the connection).
    pub(crate) fn reply_err(&self, id: Option<u64>, error: &ErrorBody) {
        let mut state = self.lock();
        self.append_err(&mut state, id, error);
        state.wake_writer();
    }

    fn append_ok<T: Serialize + ?Sized>(
        &self,
        state: &mut State,
        id: u64,
        result: &T,
    ) -> Result<(), ErrorCode> {
        let reply = ReplyFrame {
            id,
            result: &result,
        };
        self.append_reply(state, id, |buf| encode_frame(buf, &reply))
    }

    /// Appends the reply frame to request `id` that `encode` writes, or an error reply when
    /// it cannot be sent (then its code).
    fn append_reply(
        &self,
        state: &mut State,
        id: u64,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), ErrorCode> {
        let body = match state.frame_with(self.0.max_frame, encode) {
            Ok(()) => return Ok(()),
            Err(EncodeError::TooLarge(len)) => ErrorBody::from(&ReplyError::TooLarge {
                len,
                max: self.0.max_frame,
            }),
            Err(e) => {
                tracing::error!(
                    connection = self.0.connection,
                    "cannot encode a result: {e}"
                );
                ErrorBody::from(&ReplyError::Encoding(e))
            }
        };
        self.append_err(state, Some(id), &body);
        Err(body.code)
    }

    fn append_err(&self, state: &mut State, id: Option<u64>, error: &ErrorBody) {
        if let Err(e) = state.frame(&ErrorFrame { id, error }, self.0.max_frame) {
            tracing::error!(
                connection = self.0.connection,
                "cannot encode an error reply: {e}"
            );
        }
    }

    /// Sends an answer just appended (see [`ReplyTo`]), and counts its request done.
    fn deliver(&self, state: &mut State) {
        state.in_flight -= 1;
        if thread::current().id() == self.0.home {
            state.wake_writer();
        } else {
            state.write_now();
            if !state.buf.is_empty() {
                state.wake_writer();
            }
        }
        if state.in_flight == 0 && state.watch_idle {
            state.wake_writer();
        }
    }

    /// Takes request `id`: its [`ReplyTo`] must answer it, and counts the answer when
    /// `timer` is given. Refused past `limit` requests in flight.
    pub(crate) fn take(
        &self,
        id: u64,
        limit: usize,
        timer: Option<Timer>,
    ) -> Result<ReplyTo, ProtocolError> {
        let mut state = self.lock();
        if state.in_flight >= limit {
            return Err(ProtocolError::TooManyRequests(limit));
        }
        state.in_flight += 1;
        Ok(ReplyTo {
            out: Some(self.clone()),
            id,
            timer,
        })
    }

    /// Requests taken and not answered yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// From now on, the writer is woken when the last request in flight is answered.
    pub(crate) fn watch_idle(&self) {
        self.lock().watch_idle = true;
    }

    /// After what is pending has been written, close the connection.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closing = true;
        state.wake_writer();
    }

    /// Lets the socket go (the session has ended); later replies are dropped.
    pub(crate) fn release(&self) {
        let io = self.lock().io.take();
        drop(io);
    }

    pub(crate) fn pending(&self) -> usize {
        self.lock().buf.len()
    }

    /// Writes what is pending; with nothing left, parks the writer's waker (when `park`).
    pub(crate) fn poll_flush(
        &self,
        cx: &mut TaskContext<'_>,
        park: bool,
    ) -> Poll<io::Result<Flushed>> {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(io) = state.io.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        while !state.buf.is_empty() {
            match Pin::new(&mut *io).poll_write(cx, &state.buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => state.buf.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        state.trim();
        if state.closing {
            return Poll::Ready(Ok(Flushed::Closed));
        }
        if park {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Ready(Ok(Flushed::Idle))
    }
}

/// The answer owed to one request: whoever holds it, on whichever thread, writes the reply
/// into the request's connection. On the session's thread the writer sends it; on another
/// thread it is written to the socket there and then, and the writer is woken only for what
/// the socket did not take. Dropped unanswered, it answers `internal` (a bug: every path
/// that takes a request answers it).
#[derive(Debug)]
pub struct ReplyTo {
    out: Option<Outbox>,
    id: u64,
    /// Times the request for its metrics.
    timer: Option<Timer>,
}

impl ReplyTo {
    /// Answers with `result`.
    pub fn ok<T: Serialize + ?Sized>(mut self, result: &T) {
        if let Some(out) = self.out.take() {
            let mut state = out.lock();
            let outcome = out.append_ok(&mut state, self.id, result);
            out.deliver(&mut state);
            drop(state);
            self.count(&out, outcome);
        }
    }

    fn count(&self, out: &Outbox, outcome: Result<(), ErrorCode>) {
        if let Some(timer) = self.timer {
            out.count(timer, outcome);
        }
    }

    /// Answers with the reply frame `encode` writes for this request's id: for a result
    /// that is already MessagePack (see [`crate::protocol::raw`]).
    pub fn ok_encoded(
        mut self,
        encode: impl FnOnce(&mut BytesMut, u64) -> Result<(), EncodeError>,
    ) {
        if let Some(out) = self.out.take() {
            let mut state = out.lock();
            let id = self.id;
            let outcome = out.append_reply(&mut state, id, |buf| encode(buf, id));
            out.deliver(&mut state);
            drop(state);
            self.count(&out, outcome);
        }
    }

    /// Answers with `error`.
    pub fn err(mut self, error: &ErrorBody) {
        if let Some(out) = self.out.take() {
            let mut state = out.lock();
            out.append_err(&mut state, Some(self.id), error);
            out.deliver(&mut state);
            drop(state);
            self.count(&out, Err(error.code));
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            tracing::error!(
                connection = out.0.connection,
                request = self.id,
                "a request was dropped unanswered"
            );
            let error = ErrorBody::from(&ReplyError::Unanswered);
            ReplyTo {
                out: Some(out),
                id: self.id,
                timer: self.timer,
            }
            .err(&error);
        }
    }
}

/// A connection for tests of code that answers requests: the daemon's side as an
/// [`Outbox`], the client's side as a reader of frames.
#[cfg(test)]
pub(crate) mod testing {
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixStream;
    use tokio::net::unix::OwnedReadHalf;

    use super::{Outbox, ReplyTo};
    use crate::protocol::FrameCodec;

    /// `value[name]` for a MessagePack map, `Nil` when absent.
    pub(crate) fn field<'a>(value: &'a rmpv::Value, name: &str) -> &'a rmpv::Value {
        value
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(name)))
            .map_or(&rmpv::Value::Nil, |(_, v)| v)
    }

    /// Both ends of a connection. Must be made inside a Tokio runtime.
    pub(crate) struct Connection {
        pub(super) out: Outbox,
        client: OwnedReadHalf,
        _daemon_read: tokio::net::unix::OwnedReadHalf,
        buf: bytes::BytesMut,
    }

    impl Connection {
        pub(crate) fn new() -> Self {
            let (daemon, client) = UnixStream::pair().unwrap();
            let (daemon_read, write) = daemon.into_split();
            let (client, _) = client.into_split();
            Self {
                out: Outbox::new(write, 1024 * 1024, 1, std::sync::Arc::default()),
                client,
                _daemon_read: daemon_read,
                buf: bytes::BytesMut::new(),
            }
        }

        /// Requests taken and not answered yet.
        pub(crate) fn in_flight(&self) -> usize {
            self.out.in_flight()
        }

        /// Takes request `id` (in-flight limit 8).
        pub(crate) fn take(&self, id: u64) -> ReplyTo {
            self.out.take(id, 8, None).unwrap()
        }

        /// The next frame the client receives, as a generic value. What is pending is
        /// written first, as the session's writer would.
        pub(crate) async fn next(&mut self) -> rmpv::Value {
            self.out.lock().write_now();
            let mut codec = FrameCodec::new(1024 * 1024);
            let read = async {
                loop {
                    let frame = tokio_util::codec::Decoder::decode(&mut codec, &mut self.buf);
                    if let Some(frame) = frame.unwrap() {
                        return rmpv::decode::read_value(&mut &frame[..]).unwrap();
                    }
                    let read = self.client.read_buf(&mut self.buf).await.unwrap();
                    assert!(read > 0, "the connection closed");
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(5), read)
                .await
                .expect("no frame within 5 s")
        }
    }
}

#[cfg(test)]
mod tests {

    use super::testing::{Connection, field};
    use super::*;

    #[tokio::test]
    async fn a_reply_from_another_thread_is_written_there() {
        let mut conn = Connection::new();
        // The writer is not running: only a write on the answering thread can deliver it.
        conn.out.frame(&"hello").unwrap();
        assert_eq!(conn.next().await, rmpv::Value::from("hello"));
        let reply = conn.take(7);
        std::thread::spawn(move || reply.ok("pong")).join().unwrap();
        assert_eq!(conn.out.pending(), 0, "written by the answering thread");
        let frame = conn.next().await;
        assert_eq!(field(&frame, "id"), &rmpv::Value::from(7));
        assert_eq!(field(&frame, "result"), &rmpv::Value::from("pong"));
        assert_eq!(conn.out.in_flight(), 0);
        assert_eq!(conn.out.pending(), 0);
    }

    #[tokio::test]
    async fn requests_in_flight_are_counted_and_limited() {
        let conn = Connection::new();
        let replies: Vec<ReplyTo> = (0..8).map(|id| conn.take(id)).collect();
        assert_eq!(conn.out.in_flight(), 8);
        assert!(matches!(
            conn.out.take(9, 8, None),
            Err(ProtocolError::TooManyRequests(8))
        ));
        for reply in replies {
            reply.ok(&1);
        }
        assert_eq!(conn.out.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_reply_dropped_unanswered_answers_internal() {
        let mut conn = Connection::new();
        drop(conn.take(3));
        let frame = conn.next().await;
        assert_eq!(field(&frame, "id"), &rmpv::Value::from(3));
        let error = field(&frame, "error");
        assert_eq!(field(error, "code"), &rmpv::Value::from("internal"));
        assert_eq!(conn.out.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_result_too_large_for_a_frame_is_answered_too_large() {
        let (daemon, _client) = tokio::net::UnixStream::pair().unwrap();
        let (_read, write) = daemon.into_split();
        let out = Outbox::new(write, 200, 1, Arc::default());
        out.reply_ok(1, &"x".repeat(300));
        let pending = out.pending();
        assert!(pending > 0 && pending < 200, "{pending} bytes");
        let body = out.lock().buf.split_off(4);
        let frame: rmpv::Value = crate::protocol::decode_map(&body).unwrap();
        let error = field(&frame, "error");
        assert_eq!(field(error, "code"), &rmpv::Value::from("too_large"));
    }

    #[tokio::test]
    async fn replies_after_the_session_ended_are_dropped() {
        let conn = Connection::new();
        let reply = conn.take(1);
        conn.out.release();
        std::thread::spawn(move || reply.ok("late")).join().unwrap();
        assert_eq!(conn.out.in_flight(), 0);
        // Nothing was written (there is no socket), and the buffer is all that is left.
        assert!(conn.out.lock().io.is_none());
    }
}
