//! The event bus on the wire: an event as the daemon holds and sends it (its payload kept as
//! the publisher's bytes), what `Publish` answers, and the bus's counters in status.

use serde::{Deserialize, Serialize};

use crate::RawValue;

/// One published event, shared by every subscriber that receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RawEvent {
    /// Concrete topic.
    pub topic: String,
    /// Any MessagePack value, as the publisher's bytes.
    pub payload: RawValue,
    /// Bus-wide sequence number, increasing by one per published event.
    pub seq: u64,
    /// Who published it: `kernel`, `supervisor`, `client:<n>`, ...
    pub source: String,
    /// Publication time, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

impl RawEvent {
    /// What the event counts for in a subscriber's queue: its payload, topic and source,
    /// and a fixed share for the rest.
    pub fn cost(&self) -> usize {
        const FIXED: usize = 64;
        FIXED + self.payload.len() + self.topic.len() + self.source.len()
    }
}

/// Result of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The event's sequence number.
    pub seq: u64,
    /// Subscribers whose queue accepted it.
    pub delivered: usize,
}

/// Counters of the bus since it (last) started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusStats {
    /// Events published.
    pub published: u64,
    /// Deliveries into subscriber queues.
    pub delivered: u64,
    /// Deliveries dropped because a queue was full (of events or of bytes).
    pub dropped: u64,
    /// One entry per subscriber.
    pub subscribers: Vec<SubscriberStats>,
}

/// Counters of one subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberStats {
    /// Who it is.
    pub label: String,
    /// Its patterns.
    pub patterns: Vec<String>,
    /// Events waiting in its queue.
    pub queued: usize,
    /// What they count for, in bytes (see [`RawEvent::cost`]).
    #[serde(default)]
    pub queued_bytes: usize,
    /// Events delivered to its queue.
    pub delivered: u64,
    /// Events dropped because its queue was full (of events or of bytes).
    pub dropped: u64,
}
