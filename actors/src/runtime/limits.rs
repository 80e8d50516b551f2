//! The limits every connection and call works under, with their defaults (the daemon's flags
//! set them).

use std::time::Duration;

use crate::protocol::DEFAULT_MAX_FRAME_LEN;

/// How long a capsule's thread waits for more work before it retires with its instance, by
/// default.
pub const CAPSULE_LINGER: Duration = Duration::from_secs(5);

/// Limits on connections and calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted, in bytes after the length prefix.
    pub max_frame_len: usize,
    /// Time a client has to complete the handshake.
    pub handshake_timeout: Duration,
    /// Deadline of a request sent to an actor.
    pub call_timeout: Duration,
    /// Time a client may leave a large backlog of replies unread before it is dropped.
    pub write_timeout: Duration,
    /// Time sessions get to finish in-flight requests at shutdown.
    pub drain_timeout: Duration,
    /// Requests in flight per connection.
    pub max_in_flight: usize,
    /// Events queued per subscriber before new ones are dropped.
    pub event_queue: usize,
    /// Bytes of events queued per subscriber before new ones are dropped (an event larger
    /// than this still goes into an empty queue).
    pub event_queue_bytes: usize,
    /// Open connections, authenticated or not; one more is refused at once.
    pub max_connections: usize,
    /// Connections still waiting for their handshake; one more is refused at once.
    pub max_unauthenticated: usize,
    /// Refused connections and handshakes are audited and logged one by one only while
    /// they are rare: within this window of the last one recorded, they are counted, and
    /// the count is recorded when the window ends.
    pub refusal_window: Duration,
    /// How long a capsule's thread with nothing to do waits before it retires with the
    /// capsule's instance ([`CAPSULE_LINGER`] by default).
    pub capsule_linger: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(3),
            max_in_flight: 1024,
            event_queue: 1024,
            event_queue_bytes: crate::bus::DEFAULT_QUEUE_BYTES,
            max_connections: 1024,
            max_unauthenticated: 64,
            refusal_window: Duration::from_secs(10),
            capsule_linger: CAPSULE_LINGER,
        }
    }
}
