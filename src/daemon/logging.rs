//! Logging: daily files under `<home>/logs/` (seven kept), plus stderr when it is a terminal.
//! actix and other `log` users are bridged into `tracing`.

use std::io::IsTerminal;
use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log files kept.
const KEEP: usize = 7;

/// Starts logging; keep the guard alive until exit so buffered lines are written.
///
/// # Errors
///
/// When the log directory cannot be used.
pub(crate) fn init(
    dir: &Path,
    verbose: bool,
    filter: Option<String>,
) -> Result<WorkerGuard, String> {
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix("astrid")
        .filename_suffix("log")
        .max_log_files(KEEP)
        .build(dir)
        .map_err(|e| format!("cannot log to {}: {e}", dir.display()))?;
    let (file, guard) = tracing_appender::non_blocking(appender);
    // The MCP SDK narrates every connection at `info`; its warnings are what matter.
    let default = if verbose {
        "debug,rmcp=info"
    } else {
        "info,rmcp=warn"
    };
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let to_file = tracing_subscriber::fmt::layer()
        .with_writer(file)
        .with_ansi(false);
    let to_terminal = std::io::stderr()
        .is_terminal()
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter)
        .with(to_file)
        .with(to_terminal)
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))?;
    Ok(guard)
}
