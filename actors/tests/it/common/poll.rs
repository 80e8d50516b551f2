//! Polling with a deadline, the one way these tests wait for something to happen: a probe
//! is called every few milliseconds until it yields what is wanted or the deadline passes,
//! and on a timeout the caller gets the probe's last answer to say what it saw. Nothing
//! here sleeps for synchronisation; the sleeps only space the probes.
//!
//! [`poll`] blocks its thread (for plain `#[test]`s); [`poll_async`] awaits, for tests
//! inside an actix system, where blocking would stop the actors. The rest are short forms.

use std::time::{Duration, Instant};

/// Upper bound for any single wait; reached only when something is broken.
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);

/// Time between two probes.
const EVERY: Duration = Duration::from_millis(5);

/// Calls `probe` until it returns `Ok`, at least once and for at most `timeout`; on a
/// timeout, returns the last `Err` (what the probe saw instead).
pub(crate) fn poll<T, E>(
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let end = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(found) => return Ok(found),
            Err(seen) if Instant::now() >= end => return Err(seen),
            Err(_) => std::thread::sleep(EVERY),
        }
    }
}

/// [`poll`] for async code: awaits `probe` and sleeps without blocking the runtime.
pub(crate) async fn poll_async<T, E>(
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let end = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(found) => return Ok(found),
            Err(seen) if Instant::now() >= end => return Err(seen),
            Err(_) => tokio::time::sleep(EVERY).await,
        }
    }
}

/// Awaits `probe` until it yields a value, for at most [`DEADLINE`]; then panics saying it
/// timed out waiting for `what`.
pub(crate) async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    match poll_async(DEADLINE, async || probe().await.ok_or(())).await {
        Ok(found) => found,
        Err(()) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}
