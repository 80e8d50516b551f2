//! A capsule's events still in the bus's hands. `publish` does not wait for the bus (the
//! capsule may be the interceptor the bus is waiting for), so without a bound a guest
//! publishing in a loop could queue events faster than the bus takes them, each holding its
//! payload. The backlog keeps the bus's answer to each event (answered once the bus has
//! handled it) and refuses a new one while [`MAX_EVENTS`] events or [`MAX_BYTES`] bytes of
//! payload are unanswered; one event of any size may go when none is.
//!
//! It belongs to the capsule, not to one instance: a guest cannot empty it by crashing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};

/// Events of one capsule the bus may hold at once.
pub const MAX_EVENTS: usize = 16;
/// Bytes of payload (as the guest wrote them) of one capsule the bus may hold at once.
pub const MAX_BYTES: usize = 1 << 20;

/// The unanswered events: the bus's answer to come, and the payload's size.
pub(crate) struct Backlog<F> {
    pending: Vec<(Pin<Box<F>>, usize)>,
}

impl<F> std::fmt::Debug for Backlog<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backlog")
            .field("events", &self.pending.len())
            .field("bytes", &bytes(&self.pending))
            .finish()
    }
}

impl<F> Default for Backlog<F> {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
        }
    }
}

impl<F: Future> Backlog<F> {
    /// Whether an event of `len` bytes may go now (answered events are forgotten first).
    pub(crate) fn admit(&mut self, len: usize) -> bool {
        self.sweep();
        self.pending.is_empty()
            || (self.pending.len() < MAX_EVENTS
                && bytes(&self.pending).saturating_add(len) <= MAX_BYTES)
    }

    /// Keeps the bus's answer to an event of `len` bytes just handed to it.
    pub(crate) fn push(&mut self, answer: F, len: usize) {
        self.pending.push((Box::pin(answer), len));
    }

    /// Polls every answer once (outside Tokio's budget: see `host::wait`), dropping those
    /// that have come.
    fn sweep(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        self.pending.retain_mut(|(answer, _)| {
            let mut unconstrained = tokio::task::coop::unconstrained(answer.as_mut());
            Pin::new(&mut unconstrained).poll(&mut cx).is_pending()
        });
    }
}

fn bytes<F>(pending: &[(Pin<Box<F>>, usize)]) -> usize {
    pending.iter().map(|(_, len)| len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = tokio::sync::oneshot::Receiver<()>;

    #[test]
    fn events_and_bytes_in_the_bus_hands_are_bounded() {
        let mut backlog = Backlog::<Answer>::default();
        let mut senders = Vec::new();
        // Any one event may go when none is pending, whatever its size.
        assert!(backlog.admit(MAX_BYTES * 4));
        let (tx, rx) = tokio::sync::oneshot::channel();
        backlog.push(rx, MAX_BYTES * 4);
        assert!(!backlog.admit(1));
        tx.send(()).unwrap();
        assert!(backlog.admit(1));
        // Up to MAX_EVENTS small ones.
        for _ in 0..MAX_EVENTS {
            assert!(backlog.admit(10));
            let (tx, rx) = tokio::sync::oneshot::channel();
            backlog.push(rx, 10);
            senders.push(tx);
        }
        assert!(!backlog.admit(10));
        // One answered (or dropped by a bus that stopped) frees one place.
        senders.pop().unwrap().send(()).unwrap();
        drop(senders.pop());
        assert!(backlog.admit(10));
        // Bytes.
        let mut backlog = Backlog::<Answer>::default();
        let (_tx, rx) = tokio::sync::oneshot::channel();
        backlog.push(rx, MAX_BYTES - 10);
        assert!(backlog.admit(10));
        assert!(!backlog.admit(11));
    }
}
