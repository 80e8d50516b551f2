//! Facts about the running daemon, fixed at boot, that sessions report in status.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Facts about the running daemon that every session may report.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    /// Process id.
    pub pid: u32,
    /// Daemon version.
    pub version: String,
    /// Session UUID.
    pub session_id: Uuid,
    /// `system` or the UUID.
    pub session_name: String,
    /// Workspace root.
    pub workspace: PathBuf,
    /// Socket path.
    pub socket: PathBuf,
    /// Whether it exits when idle.
    pub ephemeral: bool,
    /// Idle grace (ephemeral mode).
    pub idle_grace: Duration,
    /// Whether `InjectFault` is accepted.
    pub fault_injection: bool,
    /// How the process is run.
    pub hosting: Hosting,
    /// Boot time.
    pub started_at: Instant,
    /// The configuration file read at boot (it may not exist).
    pub config_file: PathBuf,
    /// The effective settings, each with where it came from.
    pub settings: Vec<crate::protocol::Setting>,
}

/// How the daemon's process is run, as the daemon's edge found it; reported in status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hosting {
    /// A service manager (systemd) runs the daemon, so that `astrid restart` leaves
    /// restarting to it.
    pub service_manager: bool,
    /// Logs go to the systemd journal rather than the log files (so `astrid logs` can say so).
    pub logs_to_journal: bool,
}
