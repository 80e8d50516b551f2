//! The daemon's side of a service manager (systemd), read from the environment once at start
//! and inert outside one:
//!
//! - notifications (`NOTIFY_SOCKET`, through the `sd-notify` crate): `STATUS=` lines
//!   (booting, serving N clients, draining), `READY=1` once the ready file is written, and
//!   `STOPPING=1` when a shutdown begins;
//! - the watchdog (`WATCHDOG_USEC`, `WATCHDOG_PID`): `WATCHDOG=1` every half interval, sent
//!   only when the supervision tree answered within that time, so a wedged kernel is
//!   restarted by the service manager;
//! - socket activation (`LISTEN_FDS`, `LISTEN_PID`): the one listening socket passed;
//! - the journal (`JOURNAL_STREAM`): whether stderr is connected to it.
//!
//! The variables stay in the daemon's environment; MCP servers never see them, as they start
//! with an empty environment plus what their configuration names.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use astrid_actors::kernel::Health;
use sd_notify::NotifyState;

/// How often the status line is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Sends notifications to the service manager, when there is one.
#[derive(Debug, Clone)]
pub(crate) struct Notifier {
    enabled: bool,
    stopping: Arc<AtomicBool>,
}

impl Notifier {
    /// A notifier for `NOTIFY_SOCKET`, inert when it is not set.
    pub(crate) fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            stopping: Arc::default(),
        }
    }

    /// Whether a service manager listens (`NOTIFY_SOCKET` is set).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The watchdog interval the service manager asks for, if any (`WATCHDOG_USEC`, for this
    /// process by `WATCHDOG_PID`).
    pub(crate) fn watchdog(&self) -> Option<Duration> {
        sd_notify::watchdog_enabled().filter(|d| self.enabled && !d.is_zero())
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("cannot notify the service manager: {e}");
        }
    }

    /// `STATUS=booting`.
    pub(crate) fn booting(&self) {
        self.send(&[NotifyState::Status("booting")]);
    }

    /// `READY=1` with the first status line and the main pid.
    pub(crate) fn ready(&self, clients: usize) {
        let status = serving(clients);
        self.send(&[
            NotifyState::Ready,
            NotifyState::Status(&status),
            NotifyState::MainPid(std::process::id()),
        ]);
    }

    /// `STOPPING=1` and the reason as the status line; the status is not refreshed after.
    pub(crate) fn stopping(&self, reason: &str) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let status = format!("draining: {reason}");
        self.send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
    }

    /// `STATUS=` saying why boot failed.
    pub(crate) fn failed(&self, error: &str) {
        let status = format!("failed: {error}");
        self.send(&[NotifyState::Status(&status)]);
    }

    /// Runs while the kernel runs: every tick (half the watchdog interval, or
    /// [`STATUS_EVERY`]), `WATCHDOG=1` if the tree answered within the tick, and a new
    /// status line when the number of clients changed.
    pub(crate) async fn watch(self, health: Health, watchdog: Option<Duration>) {
        if !self.enabled {
            return;
        }
        let tick = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shown = Some(0);
        loop {
            interval.tick().await;
            if watchdog.is_some() {
                if health.answers(tick).await {
                    self.send(&[NotifyState::Watchdog]);
                } else {
                    tracing::warn!(
                        "the supervision tree did not answer within {tick:?}; no watchdog ping"
                    );
                }
            }
            let clients = health.clients();
            if !self.stopping.load(Ordering::SeqCst) && shown != Some(clients) {
                shown = Some(clients);
                self.send(&[NotifyState::Status(&serving(clients))]);
            }
        }
    }
}

fn serving(clients: usize) -> String {
    match clients {
        1 => "serving 1 client".to_owned(),
        n => format!("serving {n} clients"),
    }
}

/// The listening socket the service manager passed (socket activation), if any.
///
/// # Errors
///
/// When `LISTEN_FDS` is malformed or names more than one socket, or its descriptor is not
/// open.
pub(crate) fn activated_socket() -> Result<Option<UnixListener>, String> {
    /// Whether the descriptor was taken: it is owned once.
    static TAKEN: AtomicBool = AtomicBool::new(false);
    // Checks `LISTEN_PID` is this process and marks the descriptors close-on-exec (failing
    // on one that is not open).
    let fds: Vec<_> = sd_notify::listen_fds()
        .map_err(|e| format!("socket activation: {e}"))?
        .collect();
    let raw = match fds.as_slice() {
        [] => return Ok(None),
        [fd] => *fd,
        more => {
            return Err(format!(
                "socket activation: the service manager passed {} sockets; the socket unit must have one ListenStream",
                more.len()
            ));
        }
    };
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err("socket activation: the socket was already taken".to_owned());
    }
    #[allow(unsafe_code)]
    // SAFETY: by the socket activation protocol this descriptor (3) was passed to this very
    // process (`listen_fds` checked `LISTEN_PID`) and is open (it just set its flags);
    // nothing else in the process owns it, and `TAKEN` makes this the only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(Some(UnixListener::from(fd)))
}

/// Whether stderr is the journal: `JOURNAL_STREAM` names its device and inode.
pub(crate) fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    rustix::fs::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_counts_clients() {
        assert_eq!(serving(0), "serving 0 clients");
        assert_eq!(serving(1), "serving 1 client");
        assert_eq!(serving(7), "serving 7 clients");
    }
}
