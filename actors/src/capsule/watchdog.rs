//! Call deadlines: one thread for the whole daemon that interrupts a guest still running
//! when its call's deadline passes (wasmer's host interrupt: a signal to the capsule's
//! thread, turned into a trap at the guest's next instruction).
//!
//! A call arms the watchdog and disarms it by dropping the [`Armed`] guard. wasmer notes
//! that an interrupt may be missed (for example while the guest is inside a host import),
//! so a call still running is interrupted again every [`RETRY`] until it ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use wasmer::Interrupter;

/// How often an overdue call is interrupted again.
const RETRY: Duration = Duration::from_millis(10);

/// The longest the thread sleeps. A call whose deadline is later than the thread's next
/// wake-up does not wake it (so a stream of calls costs no thread switches); it is seen at
/// that wake-up instead.
const IDLE: Duration = Duration::from_millis(500);

struct Shared {
    next: u64,
    armed: BTreeMap<(Instant, u64), Interrupter>,
    /// When the thread wakes up next by itself.
    wake_at: Instant,
}

struct Watchdog {
    shared: Mutex<Shared>,
    changed: Condvar,
}

fn watchdog() -> &'static Arc<Watchdog> {
    static WATCHDOG: OnceLock<Arc<Watchdog>> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let dog = Arc::new(Watchdog {
            shared: Mutex::new(Shared {
                next: 0,
                armed: BTreeMap::new(),
                wake_at: Instant::now(),
            }),
            changed: Condvar::new(),
        });
        let runner = Arc::clone(&dog);
        std::thread::Builder::new()
            .name("capsule-watchdog".into())
            .spawn(move || runner.run())
            .expect("the capsule watchdog thread starts");
        dog
    })
}

impl Watchdog {
    fn run(&self) {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            let due: Vec<(Instant, u64)> = shared
                .armed
                .range(..=(now, u64::MAX))
                .map(|(k, _)| *k)
                .collect();
            for key in due {
                if let Some(interrupter) = shared.armed.remove(&key) {
                    interrupter.interrupt();
                    shared.armed.insert((now + RETRY, key.1), interrupter);
                }
            }
            let now = Instant::now();
            let idle = now + IDLE;
            let wake_at = shared
                .armed
                .keys()
                .next()
                .map_or(idle, |(at, _)| (*at).min(idle));
            shared.wake_at = wake_at;
            shared = self
                .changed
                .wait_timeout(shared, wake_at.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A call under watch; dropping it disarms the watchdog.
#[must_use = "the deadline is disarmed when this is dropped"]
pub(crate) struct Armed {
    id: u64,
}

/// Interrupts the store behind `interrupter` at `deadline` (and again until disarmed).
pub(crate) fn arm(deadline: Instant, interrupter: Interrupter) -> Armed {
    let dog = watchdog();
    let mut shared = dog.shared.lock().unwrap_or_else(PoisonError::into_inner);
    let id = shared.next;
    shared.next += 1;
    shared.armed.insert((deadline, id), interrupter);
    let wake = deadline < shared.wake_at;
    drop(shared);
    if wake {
        dog.changed.notify_one();
    }
    Armed { id }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut shared = watchdog()
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shared.armed.retain(|(_, id), _| *id != self.id);
    }
}
