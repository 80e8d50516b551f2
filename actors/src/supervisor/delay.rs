//! The `delay` fault's gate: while armed, every request sent through a child's
//! [`ChildRef`](super::ChildRef) (and, for a capsule, every call into its guest) waits a fixed
//! time before it is delivered. One gate belongs to a child's slot for its whole life, so a
//! delay outlives restarts until its span ends or `clear` disarms it.
//!
//! Unarmed, a check costs one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Shared by a child's references and its supervisor.
#[derive(Debug, Default)]
pub struct DelayGate {
    armed: AtomicBool,
    /// Each request's delay, and when the delay ends.
    window: Mutex<Option<(Duration, Instant)>>,
}

impl DelayGate {
    /// Delays each request by `each` until `span` from now.
    pub fn arm(&self, each: Duration, span: Duration) {
        *self.lock() = Some((each, Instant::now() + span));
        self.armed.store(true, Ordering::Release);
    }

    /// Ends the delay now.
    pub fn disarm(&self) {
        *self.lock() = None;
        self.armed.store(false, Ordering::Release);
    }

    /// How long a request made now waits, if the gate is armed.
    pub fn current(&self) -> Option<Duration> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let mut window = self.lock();
        match *window {
            Some((each, until)) if Instant::now() < until => Some(each),
            _ => {
                *window = None;
                self.armed.store(false, Ordering::Release);
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Duration, Instant)>> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_delays_until_its_span_ends_or_it_is_disarmed() {
        let gate = DelayGate::default();
        assert_eq!(gate.current(), None);
        gate.arm(Duration::from_millis(5), Duration::from_mins(1));
        assert_eq!(gate.current(), Some(Duration::from_millis(5)));
        gate.disarm();
        assert_eq!(gate.current(), None);
        gate.arm(Duration::from_millis(5), Duration::ZERO);
        assert_eq!(gate.current(), None, "a span that has ended delays nothing");
    }
}
