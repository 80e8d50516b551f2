//! Polling with a deadline, the one way these tests wait for something to happen: a probe
//! is called every few milliseconds until it yields what is wanted or the deadline passes,
//! and on a timeout the caller gets the probe's last answer to say what it saw. Nothing
//! here sleeps for synchronisation; the sleeps only space the probes.
//!
//! [`poll`] blocks its thread (for plain threads, and for `Drop`); [`poll_async`] awaits,
//! for async tests, where blocking would starve the runtime. The rest are short forms.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Generous deadline for anything a test waits on.
pub(crate) const DEADLINE: Duration = Duration::from_secs(15);

/// Time between two probes.
const EVERY: Duration = Duration::from_millis(10);

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
    probe: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    poll_async_every(timeout, EVERY, probe).await
}

/// [`poll_async`] probing every `every` instead of every 10 ms, for a test that must act
/// the moment something happens.
pub(crate) async fn poll_async_every<T, E>(
    timeout: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let end = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(found) => return Ok(found),
            Err(seen) if Instant::now() >= end => return Err(seen),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Whether `cond` holds within `timeout` (blocking).
pub(crate) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll(timeout, || cond().then_some(()).ok_or(())).is_ok()
}

/// Awaits `fetch` until `pick` finds what is wanted in its answer, for at most
/// [`DEADLINE`]; then panics saying that `what` never reached the state wanted, with the
/// last answer.
pub(crate) async fn poll_until<T: Debug, R>(
    what: &str,
    mut fetch: impl AsyncFnMut() -> T,
    pick: impl Fn(&T) -> Option<R>,
) -> R {
    let found = poll_async(DEADLINE, async || {
        let answer = fetch().await;
        pick(&answer).ok_or(answer)
    })
    .await;
    found.unwrap_or_else(|last| panic!("{what} never reached the state wanted: {last:#?}"))
}
