//! The event bus: topics, wildcard subscriptions, and one bounded queue per subscriber.
//!
//! Publishing never blocks: an event goes into each matching subscriber's queue, and a full
//! queue (of events or of bytes, `queue.rs`) drops it and counts the drop (visible in
//! [`BusStats`]). A payload is kept as its bytes ([`RawValue`](crate::protocol::RawValue)), shared by every queue it
//! goes into; an event must fit a frame ([`BusActor::with_max_frame`]), and a subscriber holds at
//! most [`MAX_PATTERNS`] patterns. When the bus stops or crashes, every queue's sender is
//! dropped, so subscribers see their stream end and can register again with the new
//! incarnation.
//!
//! An event whose topic matches interceptors (`intercept.rs`) is held until they have
//! decided; the bus takes no other message meanwhile, so events keep their order.
//!
//! Handles: [`Register`], [`Subscribe`], [`Unsubscribe`], [`Deregister`], [`Publish`],
//! [`GetBusStats`], [`Overflow`] (a capsule's `overflow` fault: its next events are dropped
//! as by a full queue, and counted), and the supervision messages [`Terminate`] and
//! [`Inject`].

pub mod intercept;
mod messages;
mod queue;
pub mod topic;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::fut::{ActorFutureExt, wrap_future};
use actix::{Actor, ActorContext, AsyncContext, Context, Handler, MessageResult, ResponseFuture};
use tokio::sync::oneshot;

use self::intercept::Interceptors;

pub use self::messages::{
    BusError, BusStats, Deregister, Event, GetBusStats, Overflow, Publish, Published, Register,
    Registration, Subscribe, SubscriberId, SubscriberStats, Unsubscribe,
};
use self::queue::Refused;
pub use self::queue::{DEFAULT_QUEUE_BYTES, Events};
pub use self::topic::Pattern;
use self::topic::validate_topic;
use crate::clock::unix_millis;
use crate::protocol::{DEFAULT_MAX_FRAME_LEN, raw};
use crate::supervisor::{Inject, Terminate, apply_fault};

/// Patterns one subscriber may hold (a client connection, a capsule).
pub const MAX_PATTERNS: usize = 64;

struct Subscriber {
    label: String,
    patterns: Vec<Pattern>,
    queue: queue::Sender,
    delivered: u64,
    dropped: u64,
    /// Events still to drop for the `overflow` fault.
    overflow: u32,
}

impl Subscriber {
    fn pattern_texts(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect()
    }
}

/// The bus actor. State is lost on a crash by design: subscribers re-register.
#[derive(Debug)]
pub struct BusActor {
    queue_capacity: usize,
    queue_bytes: usize,
    max_frame: usize,
    interceptors: Arc<Interceptors>,
    subscribers: BTreeMap<SubscriberId, Subscriber>,
    next_id: SubscriberId,
    seq: u64,
    published: u64,
    delivered: u64,
    dropped: u64,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("label", &self.label)
            .field("patterns", &self.pattern_texts())
            .finish_non_exhaustive()
    }
}

impl BusActor {
    /// A bus whose subscriber queues hold at most `queue_capacity` events each (and
    /// [`DEFAULT_QUEUE_BYTES`] bytes), carrying events that fit a frame of
    /// [`DEFAULT_MAX_FRAME_LEN`] bytes.
    pub fn new(queue_capacity: usize) -> Self {
        Self {
            queue_capacity: queue_capacity.max(1),
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_frame: DEFAULT_MAX_FRAME_LEN,
            interceptors: Arc::default(),
            subscribers: BTreeMap::new(),
            next_id: 1,
            seq: 0,
            published: 0,
            delivered: 0,
            dropped: 0,
        }
    }

    /// Consults `interceptors` before delivering each event.
    #[must_use]
    pub fn with_interceptors(mut self, interceptors: Arc<Interceptors>) -> Self {
        self.interceptors = interceptors;
        self
    }

    /// Subscriber queues hold at most `bytes` bytes of events each (see [`Event::cost`]);
    /// a larger event still goes into an empty queue.
    #[must_use]
    pub fn with_queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Events whose frame would be longer than `bytes` are refused
    /// ([`BusError::PayloadTooLarge`]): no subscriber could receive them.
    #[must_use]
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Refuses a payload whose event would not fit a frame.
    fn check_size(&self, msg: &Publish) -> Result<(), BusError> {
        let payload = &msg.payload;
        let max = self
            .max_frame
            .saturating_sub(msg.topic.len() + msg.source.len() + raw::EVENT_ENVELOPE);
        if payload.len() > max {
            return Err(BusError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        Ok(())
    }

    fn parse(pattern: &str) -> Result<Pattern, BusError> {
        Pattern::parse(pattern).map_err(|rule| BusError::InvalidPattern {
            pattern: pattern.to_owned(),
            rule,
        })
    }

    fn subscriber(&mut self, id: SubscriberId) -> Result<&mut Subscriber, BusError> {
        self.subscribers
            .get_mut(&id)
            .ok_or(BusError::UnknownSubscriber(id))
    }
}

impl Actor for BusActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<Register> for BusActor {
    type Result = Result<Registration, BusError>;

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
        let mut patterns = Vec::with_capacity(msg.patterns.len().min(MAX_PATTERNS));
        for text in &msg.patterns {
            let pattern = Self::parse(text)?;
            if !patterns.contains(&pattern) {
                if patterns.len() == MAX_PATTERNS {
                    return Err(BusError::TooManyPatterns(MAX_PATTERNS));
                }
                patterns.push(pattern);
            }
        }
        let (queue, events) = queue::queue(self.queue_capacity, self.queue_bytes);
        let id = self.next_id;
        self.next_id += 1;
        self.subscribers.insert(
            id,
            Subscriber {
                label: msg.label,
                patterns,
                queue,
                delivered: 0,
                dropped: 0,
                overflow: 0,
            },
        );
        Ok(Registration { id, events })
    }
}

impl Handler<Subscribe> for BusActor {
    type Result = Result<Vec<String>, BusError>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let pattern = Self::parse(&msg.pattern)?;
        let sub = self.subscriber(msg.subscriber)?;
        if !sub.patterns.contains(&pattern) {
            if sub.patterns.len() >= MAX_PATTERNS {
                return Err(BusError::TooManyPatterns(MAX_PATTERNS));
            }
            sub.patterns.push(pattern);
        }
        Ok(sub.pattern_texts())
    }
}

impl Handler<Unsubscribe> for BusActor {
    type Result = Result<(bool, Vec<String>), BusError>;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) -> Self::Result {
        let sub = self.subscriber(msg.subscriber)?;
        let before = sub.patterns.len();
        sub.patterns.retain(|p| p.as_str() != msg.pattern);
        Ok((sub.patterns.len() != before, sub.pattern_texts()))
    }
}

impl Handler<Deregister> for BusActor {
    type Result = ();

    fn handle(&mut self, msg: Deregister, _: &mut Context<Self>) {
        self.subscribers.remove(&msg.0);
    }
}

impl Handler<Overflow> for BusActor {
    type Result = ();

    fn handle(&mut self, msg: Overflow, _: &mut Context<Self>) {
        if let Some(sub) = self.subscribers.get_mut(&msg.subscriber) {
            tracing::warn!(subscriber = %sub.label, times = msg.times, "injected fault: overflow");
            sub.overflow = sub.overflow.saturating_add(msg.times);
        }
    }
}

impl Handler<Publish> for BusActor {
    type Result = ResponseFuture<Result<Published, BusError>>;

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(rule) = validate_topic(&msg.topic) {
            let error = BusError::InvalidTopic {
                topic: msg.topic,
                rule,
            };
            return Box::pin(std::future::ready(Err(error)));
        }
        if let Err(error) = self.check_size(&msg) {
            return Box::pin(std::future::ready(Err(error)));
        }
        let chain = self.interceptors.matching(&msg.topic);
        if chain.is_empty() {
            return Box::pin(std::future::ready(Ok(self.deliver(msg))));
        }
        // Hold the bus (and so every later event) until the interceptors have decided.
        let (tx, rx) = oneshot::channel();
        let Publish {
            topic,
            payload,
            source,
        } = msg;
        let decide = intercept::run(chain, topic.clone(), payload);
        ctx.wait(wrap_future(decide).map(move |decided, act: &mut Self, _| {
            let answer = match decided {
                Ok(payload) => {
                    let msg = Publish {
                        topic,
                        payload,
                        source,
                    };
                    // An interceptor's payload is held to the same limit.
                    act.check_size(&msg).map(|()| act.deliver(msg))
                }
                Err((by, reason)) => Err(BusError::Denied { topic, by, reason }),
            };
            let _ = tx.send(answer);
        }));
        Box::pin(async move { rx.await.unwrap_or(Err(BusError::Stopped)) })
    }
}

impl BusActor {
    /// Delivers a valid event to every matching subscriber.
    fn deliver(&mut self, msg: Publish) -> Published {
        self.seq += 1;
        self.published += 1;
        let event = Arc::new(Event {
            topic: msg.topic,
            payload: msg.payload,
            seq: self.seq,
            source: msg.source,
            time_ms: unix_millis(),
        });
        let mut delivered = 0;
        let mut gone = Vec::new();
        for (&id, sub) in &mut self.subscribers {
            if !sub.patterns.iter().any(|p| p.matches(&event.topic)) {
                continue;
            }
            let sent = if sub.overflow > 0 {
                sub.overflow -= 1;
                Err(Refused::Full)
            } else {
                sub.queue.try_send(&event)
            };
            match sent {
                Ok(()) => {
                    sub.delivered += 1;
                    delivered += 1;
                }
                Err(Refused::Full) => {
                    sub.dropped += 1;
                    self.dropped += 1;
                }
                Err(Refused::Closed) => gone.push(id),
            }
        }
        for id in gone {
            self.subscribers.remove(&id);
        }
        self.delivered += delivered as u64;
        Published {
            seq: self.seq,
            delivered,
        }
    }
}

impl Handler<GetBusStats> for BusActor {
    type Result = MessageResult<GetBusStats>;

    fn handle(&mut self, _: GetBusStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(BusStats {
            published: self.published,
            delivered: self.delivered,
            dropped: self.dropped,
            subscribers: self
                .subscribers
                .values()
                .map(|s| {
                    let (queued, queued_bytes) = s.queue.queued();
                    SubscriberStats {
                        label: s.label.clone(),
                        patterns: s.pattern_texts(),
                        queued,
                        queued_bytes,
                        delivered: s.delivered,
                        dropped: s.dropped,
                    }
                })
                .collect(),
        })
    }
}

impl Handler<Terminate> for BusActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Inject> for BusActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply_fault(&msg.0, ctx);
    }
}
