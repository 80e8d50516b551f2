//! Signals and the shutdown watchdog, on their own OS threads so a busy or wedged runtime
//! cannot starve them.
//!
//! The first SIGTERM or SIGINT asks the kernel for a graceful shutdown (or, during boot, as
//! soon as boot ends). A second one exits at once. Any shutdown, however it started, arms a
//! watchdog: if the process is still alive at the deadline, it removes the session files and
//! exits with status 1.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::paths::SessionFiles;
use astrid_actors::files::remove_if_exists;
use astrid_actors::kernel::ShutdownHandle;
use astrid_actors::mcp::servers::McpServers;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Exit status after a second signal (128 + SIGINT, as shells report it).
const FORCED_EXIT: i32 = 130;

/// Where signals go once the kernel is up.
#[derive(Debug, Clone, Default)]
pub(crate) struct SignalTarget {
    handle: Arc<OnceLock<ShutdownHandle>>,
    pending: Arc<OnceLock<String>>,
    mcp: Arc<OnceLock<Arc<McpServers>>>,
}

impl SignalTarget {
    /// Connects the kernel; a signal that arrived during boot is delivered now.
    pub(crate) fn attach(&self, handle: &ShutdownHandle, mcp: Arc<McpServers>) {
        let _ = self.mcp.set(mcp);
        let _ = self.handle.set(handle.clone());
        if let Some(reason) = self.pending.get() {
            handle.request(reason.clone());
        }
    }

    fn deliver(&self, reason: String) {
        match self.handle.get() {
            Some(handle) => {
                handle.request(reason);
            }
            None => {
                let _ = self.pending.set(reason);
            }
        }
    }

    /// Kills the MCP servers' process groups, if the kernel got that far.
    fn kill_servers(&self) {
        if let Some(mcp) = self.mcp.get() {
            mcp.groups().kill_all();
        }
    }

    /// Whether a signal arrived before the kernel was attached.
    pub(crate) fn pending(&self) -> bool {
        self.pending.get().is_some()
    }
}

/// Installs the handlers now and serves them on a thread.
///
/// # Errors
///
/// When the handlers cannot be installed.
pub(crate) fn spawn(target: SignalTarget, files: SessionFiles) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                let name = if signal == SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                if seen == 1 {
                    tracing::info!("{name} received; shutting down");
                    target.deliver(format!("signal {name}"));
                } else {
                    tracing::warn!("{name} received again; exiting now");
                    force_exit(&files, &target, FORCED_EXIT);
                }
            }
        })?;
    Ok(())
}

/// Arms the watchdog once; later calls do nothing.
pub(crate) fn arm_watchdog(
    armed: &AtomicBool,
    deadline: Duration,
    files: SessionFiles,
    target: SignalTarget,
) {
    if armed.swap(true, Ordering::SeqCst) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("shutdown-watchdog".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            tracing::error!("shutdown did not finish within {deadline:?}; exiting anyway");
            force_exit(&files, &target, 1);
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the shutdown watchdog: {e}");
    }
}

/// Kills the MCP servers' process groups, removes the session files, and exits without
/// waiting for anything else.
fn force_exit(files: &SessionFiles, target: &SignalTarget, code: i32) -> ! {
    target.kill_servers();
    let paths: [PathBuf; 5] = [
        files.ready(),
        files.socket(),
        files.token(),
        files.pid(),
        files.lock(),
    ];
    for path in paths {
        let _ = remove_if_exists(&path);
    }
    #[allow(
        clippy::exit,
        reason = "the process must end even if the runtime is wedged"
    )]
    std::process::exit(code)
}
