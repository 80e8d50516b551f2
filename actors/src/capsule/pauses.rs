//! The time a capsule's call spends waiting for the user (an `ask:` grant's approval), which
//! does not count against the call's deadline: the import that waited pushes the call's
//! deadline back by as much (`imports.rs`), the sandbox leaves it out when it judges whether
//! the call was late (`sandbox.rs`), and the call's queue gives its caller as much more
//! patience (through the hold the runner sets for each command call, `runner.rs`).
//!
//! One per capsule, shared by its instances through its [`Host`](super::host::Host): a
//! capsule runs one call at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Extends the patience of the caller of the call running, to the given total.
pub type Hold = Box<dyn Fn(Duration) + Send>;

/// The pauses of the call running.
#[derive(Default)]
pub struct CallPauses {
    state: Mutex<State>,
    /// Nanoseconds paused since the import hook last took them: read after every host call,
    /// so one atomic swap rather than a lock.
    fresh: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Paused in this call so far.
    total: Duration,
    hold: Option<Hold>,
}

impl std::fmt::Debug for CallPauses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallPauses")
            .field("total", &self.lock().total)
            .finish_non_exhaustive()
    }
}

impl CallPauses {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A call starts: nothing paused yet.
    pub fn begin(&self) {
        self.lock().total = Duration::ZERO;
        self.fresh.store(0, Ordering::Release);
    }

    /// How the caller of the call running is given more patience (none between calls, or
    /// for events and interceptors, whose callers do not wait on the queue).
    pub fn set_hold(&self, hold: Option<Hold>) {
        self.lock().hold = hold;
    }

    /// A pause of at most `upto` begins: the caller waits that much longer meanwhile.
    pub fn pausing(&self, upto: Duration) {
        let state = self.lock();
        if let Some(hold) = &state.hold {
            hold(state.total + upto);
        }
    }

    /// The pause that began lasted `lasted`.
    pub fn paused(&self, lasted: Duration) {
        let mut state = self.lock();
        state.total += lasted;
        let nanos = u64::try_from(lasted.as_nanos()).unwrap_or(u64::MAX);
        self.fresh.fetch_add(nanos, Ordering::AcqRel);
        if let Some(hold) = &state.hold {
            hold(state.total);
        }
    }

    /// What was paused since the last time this was asked (to push the deadline back).
    pub fn take_fresh(&self) -> Duration {
        Duration::from_nanos(self.fresh.swap(0, Ordering::AcqRel))
    }

    /// What this call paused in all.
    pub fn total(&self) -> Duration {
        self.lock().total
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn pauses_add_up_in_a_call_and_the_caller_is_held_for_them() {
        let pauses = CallPauses::default();
        let held = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&held);
        pauses.set_hold(Some(Box::new(move |d| {
            seen.store(u64::try_from(d.as_millis()).unwrap(), Ordering::SeqCst);
        })));
        pauses.begin();
        pauses.pausing(Duration::from_mins(1));
        assert_eq!(
            held.load(Ordering::SeqCst),
            60_000,
            "held for the whole bound meanwhile"
        );
        pauses.paused(Duration::from_secs(2));
        assert_eq!(held.load(Ordering::SeqCst), 2_000, "then for what it took");
        pauses.paused(Duration::from_secs(1));
        assert_eq!(pauses.take_fresh(), Duration::from_secs(3));
        assert_eq!(pauses.take_fresh(), Duration::ZERO);
        assert_eq!(pauses.total(), Duration::from_secs(3));
        pauses.begin();
        assert_eq!(pauses.total(), Duration::ZERO);
    }
}
