//! One subscriber's queue, bounded twice: by events and by bytes (what the queued events
//! [cost](super::Event::cost)). A slow subscriber holds at most that much; past either bound
//! new events are dropped for it (and counted), never waited for.
//!
//! An event larger than the byte bound still goes into an empty queue, so that a subscriber
//! that keeps up receives every event the bus accepts (events are at most a frame long).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};

use super::Event;

/// Bytes of events a subscriber's queue holds by default (4 MiB).
pub const DEFAULT_QUEUE_BYTES: usize = 4 * 1024 * 1024;

/// Why an event did not go into a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The queue holds as many events, or bytes, as it may.
    Full,
    /// The subscriber is gone.
    Closed,
}

/// The bus's end of a queue.
#[derive(Debug)]
pub(super) struct Sender {
    events: mpsc::Sender<Arc<Event>>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// A subscriber's end of its queue: a stream of events. It ends when the bus drops the
/// subscriber (the bus stopped, or the subscriber was removed).
#[derive(Debug)]
pub struct Events {
    events: mpsc::Receiver<Arc<Event>>,
    bytes: Arc<AtomicUsize>,
}

/// A queue of at most `max_events` events and `max_bytes` bytes.
pub(super) fn queue(max_events: usize, max_bytes: usize) -> (Sender, Events) {
    let (tx, rx) = mpsc::channel(max_events.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    let sender = Sender {
        events: tx,
        bytes: Arc::clone(&bytes),
        max_bytes,
    };
    (sender, Events { events: rx, bytes })
}

impl Sender {
    /// Queues `event` unless the queue is full, of events or of bytes.
    pub(super) fn try_send(&self, event: &Arc<Event>) -> Result<(), Refused> {
        let cost = event.cost();
        // Only the bus adds; the subscriber only takes away, so this can only grow room.
        let queued = self.bytes.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(cost) > self.max_bytes {
            return if self.events.is_closed() {
                Err(Refused::Closed)
            } else {
                Err(Refused::Full)
            };
        }
        self.bytes.fetch_add(cost, Ordering::AcqRel);
        self.events.try_send(Arc::clone(event)).map_err(|e| {
            self.bytes.fetch_sub(cost, Ordering::AcqRel);
            match e {
                TrySendError::Full(_) => Refused::Full,
                TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }

    /// Events waiting, and what they cost in bytes.
    pub(super) fn queued(&self) -> (usize, usize) {
        let events = self.events.max_capacity() - self.events.capacity();
        (events, self.bytes.load(Ordering::Acquire))
    }
}

impl Events {
    /// Gives back what `event`, just taken from the queue, counted for.
    fn taken(&self, event: &Arc<Event>) {
        self.bytes.fetch_sub(event.cost(), Ordering::AcqRel);
    }

    /// The next event; `None` once the queue has ended and is empty.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        let event = self.events.recv().await;
        event.inspect(|e| self.taken(e))
    }

    /// The next event if one is queued, without waiting.
    ///
    /// # Errors
    ///
    /// `Empty` when none is queued, `Disconnected` once the queue has ended.
    pub fn try_recv(&mut self) -> Result<Arc<Event>, TryRecvError> {
        let event = self.events.try_recv()?;
        self.taken(&event);
        Ok(event)
    }
}

impl Stream for Events {
    type Item = Arc<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<Event>>> {
        let polled = self.events.poll_recv(cx);
        if let Poll::Ready(Some(event)) = &polled {
            self.taken(event);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RawValue;

    fn event(payload_len: usize) -> Arc<Event> {
        Arc::new(Event {
            topic: "t".into(),
            payload: RawValue::from_value(&rmpv::Value::Binary(vec![0; payload_len])).unwrap(),
            seq: 1,
            source: "s".into(),
            time_ms: 0,
        })
    }

    #[test]
    fn a_queue_is_bounded_by_bytes_as_well_as_by_events() {
        let small = event(100);
        let (tx, mut rx) = queue(100, 3 * small.cost());
        for _ in 0..3 {
            tx.try_send(&small).unwrap();
        }
        assert_eq!(
            tx.try_send(&small),
            Err(Refused::Full),
            "the bytes are spent"
        );
        assert_eq!(tx.queued(), (3, 3 * small.cost()));
        rx.try_recv().unwrap();
        tx.try_send(&small).unwrap();

        let (tx, _rx) = queue(2, usize::MAX);
        tx.try_send(&small).unwrap();
        tx.try_send(&small).unwrap();
        assert_eq!(
            tx.try_send(&small),
            Err(Refused::Full),
            "the events are spent"
        );
    }

    #[test]
    fn an_event_larger_than_the_bound_goes_into_an_empty_queue_only() {
        let big = event(10_000);
        let (tx, mut rx) = queue(100, 1000);
        tx.try_send(&big).unwrap();
        assert_eq!(tx.try_send(&event(1)), Err(Refused::Full));
        assert_eq!(rx.try_recv().unwrap().seq, 1);
        assert_eq!(tx.queued(), (0, 0), "taking an event gives its bytes back");
        tx.try_send(&big).unwrap();
        drop(rx);
        assert_eq!(tx.try_send(&big), Err(Refused::Closed));
    }
}
