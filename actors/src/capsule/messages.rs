//! Messages handled by [`CapsuleActor`](super::CapsuleActor), and how a call can fail.
//!
//! Senders: the session router ([`InvokeBatch`], for `InvokeCommand`), the bus ([`Intercept`],
//! through [`CapsuleInterceptor`](super::CapsuleInterceptor)), and the
//! supervisor ([`Terminate`](crate::supervisor::Terminate),
//! [`Inject`](crate::supervisor::Inject)).

use std::time::Duration;

use actix::Message;
use tokio::sync::oneshot;

/// One command call of an [`InvokeBatch`], answered on `reply`.
#[derive(Debug)]
pub struct Call {
    /// Command name, without the slash.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Where the outcome goes (dropped unanswered only if the capsule dies first).
    pub reply: oneshot::Sender<Result<rmpv::Value, CallFailure>>,
}

/// Command calls gathered on the sessions' thread: one message (and one wake-up of the
/// capsule's thread) for all of them; the answers go back together too (see
/// [`Batcher`](crate::capsules::loaded::Batcher)).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct InvokeBatch(pub Vec<Call>);

/// Asks the capsule's interceptor (`astrid_intercept`) about an event.
#[derive(Debug, Message)]
#[rtype(result = "Result<crate::bus::intercept::Verdict, CallFailure>")]
pub struct Intercept {
    /// The event's topic.
    pub topic: String,
    /// Its payload.
    pub payload: rmpv::Value,
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
}
