//! Messages handled by [`CapsuleActor`](super::CapsuleActor), the calls it serves, and how a
//! call can fail.
//!
//! Senders: the bus ([`Intercept`], through
//! [`CapsuleInterceptor`](super::CapsuleInterceptor)), and the supervisor
//! ([`Terminate`](crate::supervisor::Terminate), [`Inject`](crate::supervisor::Inject)).

use std::sync::Arc;
use std::time::Duration;

use actix::Message;

use super::CapsuleError;
use crate::protocol::{ErrorBody, raw};
use crate::runtime::ReplyTo;

/// One command call, waiting in its capsule's queue.
#[derive(Debug)]
pub struct Call {
    /// Command name, without the slash.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Where the outcome goes.
    pub answer: Answer,
}

/// The answer owed to a client for one command call, written straight into its connection
/// from whichever thread has the outcome. Dropped unanswered (its capsule died with the
/// call queued or running), it answers that the call never ran.
#[derive(Debug)]
pub struct Answer {
    capsule: Arc<str>,
    reply: Option<ReplyTo>,
}

impl Answer {
    /// The answer to a call of capsule `capsule`, owed to `reply`'s request.
    pub fn new(capsule: Arc<str>, reply: ReplyTo) -> Self {
        Self {
            capsule,
            reply: Some(reply),
        }
    }

    /// Answers with the outcome of `command`: its output is one MessagePack value, passed
    /// on as the guest wrote it (see [`raw`]).
    pub fn send(mut self, command: &str, outcome: Result<&[u8], CallFailure>) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        match outcome {
            Ok(output) => reply.ok_encoded(|buf, id| {
                raw::encode_command_reply(buf, id, &self.capsule, command, output)
            }),
            Err(failure) => reply.err(&self.error(failure)),
        }
    }

    /// Answers with `failure`.
    pub fn fail(mut self, failure: CallFailure) {
        if let Some(reply) = self.reply.take() {
            reply.err(&self.error(failure));
        }
    }

    fn error(&self, failure: CallFailure) -> ErrorBody {
        let capsule = self.capsule.to_string();
        let error = match failure {
            CallFailure::Crashed(reason) => CapsuleError::Crashed { capsule, reason },
            CallFailure::Deadline(timeout) => CapsuleError::Deadline { capsule, timeout },
            CallFailure::Guest(message) => CapsuleError::Guest { capsule, message },
            CallFailure::TooLarge { len, ceiling } => CapsuleError::InputTooLarge {
                capsule,
                len,
                ceiling,
            },
        };
        ErrorBody::from(&error)
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            reply.err(&self.error(CallFailure::Crashed(NEVER_RAN.into())));
        }
    }
}

/// Asks the capsule's interceptor (`astrid_intercept`) about an event.
#[derive(Debug, Message)]
#[rtype(result = "Result<crate::bus::intercept::Verdict, CallFailure>")]
pub struct Intercept {
    /// The event's topic.
    pub topic: String,
    /// Its payload.
    pub payload: crate::protocol::RawValue,
}

/// Why a call queued behind a crash, or still on its way when the capsule died, failed:
/// it never ran.
pub const NEVER_RAN: &str = "it stopped before answering (an earlier request crashed it)";

/// Why a call into a capsule did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The guest trapped, ran out of fuel or returned garbage; the capsule is restarted.
    #[error("{0}")]
    Crashed(String),
    /// The call ended after its deadline; the capsule is restarted.
    #[error("the capsule did not answer within {} ms", .0.as_millis())]
    Deadline(Duration),
    /// The guest answered with an error of its own (`{"error": "..."}`).
    #[error("{0}")]
    Guest(String),
    /// The input is larger than the capsule's whole memory: it was not handed over, and the
    /// capsule runs on (a client must not crash a capsule by sending it too much).
    #[error("the input ({len} bytes) is larger than the capsule's memory ({ceiling} bytes)")]
    TooLarge {
        /// Bytes of input.
        len: usize,
        /// The capsule's memory ceiling.
        ceiling: usize,
    },
}
