//! Messages handled by [`BusActor`](super::BusActor), the event it delivers, and its errors.
//!
//! Senders: sessions (for clients) and the kernel's own components register subscribers,
//! subscribe, and publish; the session router asks for [`GetBusStats`].

use actix::Message;

use super::queue::Events;
use super::topic::TopicRule;
use crate::protocol::RawValue;
pub use astrid_protocol::payload::bus::{BusStats, Published, RawEvent as Event, SubscriberStats};

/// Identifies one subscriber (one queue) on the bus.
pub type SubscriberId = u64;

/// Errors answered by the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The topic is not valid.
    #[error("invalid topic `{topic}`: {rule}")]
    InvalidTopic {
        /// The topic.
        topic: String,
        /// The rule it breaks.
        rule: TopicRule,
    },
    /// The pattern is not valid.
    #[error("invalid topic pattern `{pattern}`: {rule}")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// The rule it breaks.
        rule: TopicRule,
    },
    /// The payload is larger than an event may carry: its frame would be longer than the
    /// frame limit, and no subscriber could receive it.
    #[error("the payload is {len} bytes; an event on this topic fits a frame with at most {max}")]
    PayloadTooLarge {
        /// The payload's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The subscriber already has as many patterns as it may.
    #[error(
        "a subscriber may hold at most {0} patterns; unsubscribe one first (a pattern with \
         wildcards may cover several)"
    )]
    TooManyPatterns(usize),
    /// An interceptor refused the event; it was not delivered.
    #[error("`{by}` denied the event on `{topic}`: {reason}")]
    Denied {
        /// The topic.
        topic: String,
        /// The interceptor's owner (a capsule).
        by: String,
        /// Its reason.
        reason: String,
    },
    /// The bus stopped before the event was delivered.
    #[error("the bus stopped before delivering the event")]
    Stopped,
    /// The subscriber is unknown (the bus restarted since it registered).
    #[error("subscriber {0} is not registered (the bus restarted); subscribe again")]
    UnknownSubscriber(SubscriberId),
}

/// A new subscriber: its id and the receiving end of its bounded queue.
#[derive(Debug)]
pub struct Registration {
    /// Use this id for later subscribe and unsubscribe calls.
    pub id: SubscriberId,
    /// Events matching any of the subscriber's patterns. It ends when the bus stops.
    pub events: Events,
}

/// Creates a subscriber with an initial set of patterns.
#[derive(Debug, Message)]
#[rtype(result = "Result<Registration, BusError>")]
pub struct Register {
    /// Shown in bus statistics, e.g. `client:3 (astrid-cli)`.
    pub label: String,
    /// Patterns to start with (may be empty).
    pub patterns: Vec<String>,
}

/// Adds a pattern to a subscriber. Answers every pattern it now has.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, BusError>")]
pub struct Subscribe {
    /// Subscriber.
    pub subscriber: SubscriberId,
    /// Pattern to add (adding one twice is harmless).
    pub pattern: String,
}

/// Removes a pattern from a subscriber. Answers whether it was there and what is left.
#[derive(Debug, Message)]
#[rtype(result = "Result<(bool, Vec<String>), BusError>")]
pub struct Unsubscribe {
    /// Subscriber.
    pub subscriber: SubscriberId,
    /// Pattern to remove.
    pub pattern: String,
}

/// Removes a subscriber and its queue.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Deregister(pub SubscriberId);

/// The `overflow` fault: the next `times` events for `subscriber` are dropped as by a full
/// queue, and counted as such.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Overflow {
    /// Subscriber.
    pub subscriber: SubscriberId,
    /// How many events.
    pub times: u32,
}

/// Publishes an event to every subscriber with a matching pattern.
#[derive(Debug, Message)]
#[rtype(result = "Result<Published, BusError>")]
pub struct Publish {
    /// Concrete topic.
    pub topic: String,
    /// Payload.
    pub payload: RawValue,
    /// Publisher, recorded in the event.
    pub source: String,
}

/// Asks for the bus counters.
#[derive(Debug, Message)]
#[rtype(result = "BusStats")]
pub struct GetBusStats;
