//! The daemon's process edge, shared by the `astrid-daemon` binary and `astrid daemon`: it
//! parses flags, resolves and prepares the home, reads `<home>/config.toml` below the flags,
//! takes the single-instance lock, writes the pid file, starts logging and signal handling,
//! boots the kernel (from the `astrid-actors` crate) on the socket it binds or the one a
//! service manager passed, keeps the service manager told (`systemd.rs`), and turns how it
//! ended into an exit status.
//!
//! Exit status: 0 after a clean shutdown, 1 when boot or the kernel failed, 2 for bad
//! arguments or an unusable path, 3 when a daemon already runs for the session, 4 when a
//! kernel actor exhausted its restart budget.

mod args;
mod config;
mod fdlimit;
mod logging;
mod signals;
mod systemd;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::instance::{InstanceLock, LockError, PidFile};
use crate::paths::{PathError, prepare_home, resolve_home};
use astrid_actors::audit::AuditPolicy;
use astrid_actors::kernel::{
    BootError, HomeLayout, Hosting, Kernel, KernelConfig, KernelExit, Limits,
};
use astrid_actors::ledger::retention::Retention;
use astrid_actors::store::Quota;
use astrid_actors::supervisor::RestartPolicy;

use self::config::{CommandLine, ConfigError, Resolved};
use self::signals::SignalTarget;

/// How long a graceful shutdown may take before the watchdog ends the process.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);

/// Why the daemon did not run to a clean end.
#[derive(Debug, thiserror::Error)]
enum DaemonError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("workspace {path} is not a usable directory")]
    Workspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("astrid-daemon is already running for session `{session}`{pid}")]
    AlreadyRunning { session: String, pid: String },
    #[error(transparent)]
    Lock(LockError),
    #[error("cannot write the pid file {path}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Logging(String),
    #[error("{0}")]
    Activation(String),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("boot failed")]
    Boot(#[from] BootError),
    #[error("`{child}` exceeded the restart budget ({reason}); the daemon stopped")]
    Escalated { child: String, reason: String },
    #[error("the root supervisor died; the daemon stopped")]
    SupervisorDied,
}

impl DaemonError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Path(_) | Self::Config(_) | Self::Workspace { .. } => 2,
            Self::AlreadyRunning { .. } => EXIT_ALREADY_RUNNING,
            Self::Escalated { .. } => 4,
            _ => 1,
        }
    }
}

/// Exit status when another daemon already runs for the session.
pub const EXIT_ALREADY_RUNNING: u8 = 3;

/// Runs the daemon with the command line `args` (program name first) and returns its exit
/// status.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = crate::error_chain(&e);
            tracing::error!("{message}");
            eprintln!("astrid-daemon: {message}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn parse_args<I, T>(args: I) -> Result<CommandLine, DaemonError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    CommandLine::parse(args.into_iter().map(Into::into).collect()).map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            let _ = e.print();
            #[allow(
                clippy::exit,
                reason = "--help and --version end the process successfully"
            )]
            std::process::exit(0);
        }
        // One line: clap's own rendering spans several.
        DaemonError::Usage(config::first_line(&e))
    })
}

/// The settings of `cli` with `<home>/config.toml` below them, and the audit policy.
fn configure(
    cli: &CommandLine,
    home: &HomeLayout,
) -> Result<(Resolved, AuditPolicy, PathBuf), DaemonError> {
    let path = home.root().join(config::FILE);
    let resolved = config::resolve(cli, &path)?;
    let policy = AuditPolicy::with_overrides(&resolved.audit_policy).map_err(|e| {
        DaemonError::Config(ConfigError::Invalid {
            path: path.clone(),
            message: format!("[audit_policy]: {e}"),
        })
    })?;
    Ok((resolved, policy, path))
}

/// The settings of `<home>/config.toml` that bound what the daemon may use, as a daemon
/// started with no flags would take them (for `astrid doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeSettings {
    /// Settings the file sets (0 when there is no file).
    pub from_file: usize,
    /// `max_connections`.
    pub max_connections: usize,
    /// `max_unauthenticated`.
    pub max_unauthenticated: usize,
    /// `audit_max_size`, in bytes.
    pub audit_max_size: u64,
}

/// Reads `<home>/config.toml` (a missing file is an empty one) exactly as the daemon does.
///
/// # Errors
///
/// What would keep the daemon from starting, on one line: an unreadable file, an unknown
/// key, or a bad value.
pub fn home_settings(home: &HomeLayout) -> Result<HomeSettings, String> {
    let argv = vec![
        OsString::from("astrid-daemon"),
        OsString::from("--home"),
        home.root().as_os_str().to_owned(),
    ];
    let cli = CommandLine::parse(argv).map_err(|e| config::first_line(&e))?;
    let resolved = config::resolve(&cli, &home.root().join(config::FILE))
        .map_err(|e| crate::error_chain(&e))?;
    let from_file = resolved
        .settings
        .iter()
        .filter(|s| s.source == "config")
        .count();
    Ok(HomeSettings::of(&resolved.args, from_file))
}

impl HomeSettings {
    fn of(args: &args::Args, from_file: usize) -> Self {
        Self {
            from_file,
            max_connections: args.max_connections,
            max_unauthenticated: args.max_unauthenticated,
            audit_max_size: args.audit_max_size as u64,
        }
    }
}

impl Default for HomeSettings {
    /// The defaults of the daemon's flags.
    fn default() -> Self {
        let cli = CommandLine::parse(vec![OsString::from("astrid-daemon")])
            .expect("the daemon's flags all have defaults");
        Self::of(cli.args(), 0)
    }
}

/// Descriptors of the open-file limit the daemon keeps for its own files, out of its
/// connection caps.
pub const RESERVED_FILES: u64 = fdlimit::RESERVED;

/// The connection caps `(total, unauthenticated)` a daemon whose open-file limit is
/// `nofile` serves, for the caps `total` and `unauthenticated` it was given.
pub fn connection_caps(total: usize, unauthenticated: usize, nofile: u64) -> (usize, usize) {
    fdlimit::fit_caps(total, unauthenticated, nofile)
}

fn run<I, T>(args: I) -> Result<(), DaemonError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // Everything the daemon creates is private to its user, sockets included.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = parse_args(args)?;
    let args = cli.args();
    let workspace = match &args.workspace {
        Some(path) => path.clone(),
        None => std::env::current_dir().map_err(|source| DaemonError::Workspace {
            path: PathBuf::from("."),
            source,
        })?,
    };
    let workspace = std::fs::canonicalize(&workspace)
        .and_then(|p| {
            if p.is_dir() {
                Ok(p)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "not a directory",
                ))
            }
        })
        .map_err(|source| DaemonError::Workspace {
            path: workspace.clone(),
            source,
        })?;
    let env_home = std::env::var_os("ASTRID_HOME").map(PathBuf::from);
    let home = resolve_home(args.home.as_deref(), env_home.as_deref())?;
    prepare_home(&home)?;
    let configured = configure(&cli, &home)?;
    let args = &configured.0.args;
    let files = home.session(args.session);

    let lock = match InstanceLock::acquire(&files.lock()) {
        Ok(lock) => lock,
        Err(LockError::Held(_)) => {
            let pid = PidFile::read(&files.pid())
                .map(|p| format!(" (pid {})", p.pid))
                .unwrap_or_default();
            return Err(DaemonError::AlreadyRunning {
                session: files.name().to_owned(),
                pid,
            });
        }
        Err(e) => return Err(DaemonError::Lock(e)),
    };
    let result = run_locked(&home, workspace, configured);
    if let Err(e) = astrid_actors::files::remove_if_exists(&files.pid()) {
        tracing::warn!("cannot remove the pid file: {e}");
    }
    lock.release();
    result
}

fn run_locked(
    home: &HomeLayout,
    workspace: PathBuf,
    (resolved, audit_policy, config_file): (Resolved, AuditPolicy, PathBuf),
) -> Result<(), DaemonError> {
    let args = &resolved.args;
    let files = home.session(args.session);
    // A crashed daemon may have left these; they are ours now that we hold the lock. A stale
    // token would be read by clients that connect before the new one is written.
    let _ = astrid_actors::files::remove_if_exists(&files.ready());
    let _ = astrid_actors::files::remove_if_exists(&files.token());
    let pid_file = PidFile::current().and_then(|p| p.write(&files.pid()));
    pid_file.map_err(|source| DaemonError::PidFile {
        path: files.pid(),
        source,
    })?;
    let filter = std::env::var("ASTRID_LOG").ok();
    let journal = systemd::stderr_is_journal();
    let sink = if journal {
        logging::Sink::Journal
    } else {
        logging::Sink::Files {
            dir: &home.logs(),
            max_size: args.log_max_size as u64,
        }
    };
    let _log_guard = logging::init(&sink, args.verbose, filter).map_err(DaemonError::Logging)?;
    let notifier = systemd::Notifier::from_env();
    notifier.booting();
    let activated = systemd::activated_socket().map_err(DaemonError::Activation)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        session = files.name(),
        workspace = %workspace.display(),
        home = %home.root().display(),
        ephemeral = args.ephemeral,
        "astrid-daemon starting"
    );

    let target = SignalTarget::default();
    signals::spawn(target.clone(), files.clone()).map_err(DaemonError::Signals)?;
    let armed = Arc::new(AtomicBool::new(false));
    let (watchdog_files, watchdog_target) = (files.clone(), target.clone());
    let stopping = notifier.clone();

    let mut config = kernel_config(home, workspace, &resolved, audit_policy, config_file);
    config.hosting = Hosting {
        service_manager: notifier.enabled(),
        logs_to_journal: journal,
    };
    config.activated_socket = activated;
    config.on_shutdown = Some(Arc::new(move |reason: &str| {
        stopping.stopping(reason);
        signals::arm_watchdog(
            &armed,
            SHUTDOWN_DEADLINE,
            watchdog_files.clone(),
            watchdog_target.clone(),
        );
    }));

    let system = actix::System::new();
    let exit = system.block_on(async move {
        let kernel = match Kernel::boot(config).await {
            Ok(kernel) => kernel,
            Err(e) => {
                notifier.failed(&crate::error_chain(&e));
                return Err(e.into());
            }
        };
        let watchdog = notifier.watchdog();
        notifier.ready(kernel.health().clients());
        actix::spawn(notifier.watch(kernel.health(), watchdog));
        if target.pending() {
            tracing::info!("a signal arrived during boot");
        }
        target.attach(&kernel.shutdown_handle(), kernel.mcp());
        Ok::<_, DaemonError>(kernel.wait().await)
    })?;
    match exit {
        KernelExit::Clean { reason } => {
            tracing::info!("astrid-daemon stopped: {reason}");
            Ok(())
        }
        KernelExit::Escalated { child, reason } => Err(DaemonError::Escalated { child, reason }),
        KernelExit::SupervisorDied => Err(DaemonError::SupervisorDied),
    }
}

/// The kernel's configuration from the resolved settings, with the connection caps fitted
/// to the open-file limit (raised first).
fn kernel_config(
    home: &HomeLayout,
    workspace: PathBuf,
    resolved: &Resolved,
    audit_policy: AuditPolicy,
    config_file: PathBuf,
) -> KernelConfig {
    let args = &resolved.args;
    let open_files = fdlimit::raise();
    let (max_connections, max_unauthenticated) = fdlimit::fit_caps(
        args.max_connections,
        args.max_unauthenticated,
        open_files.limit,
    );
    let mut config = KernelConfig::new(home, args.session, workspace);
    config.ephemeral = args.ephemeral;
    config.idle_grace = args.idle_grace;
    config.allow_fault_injection = args.allow_fault_injection;
    config.mcp_open_file_limit = open_files.raised_from;
    config.restart_policy = RestartPolicy {
        intensity: args.max_restarts,
        period: args.restart_window,
        ..RestartPolicy::default()
    };
    config.limits = Limits {
        call_timeout: args.call_timeout,
        max_frame_len: args.max_frame,
        max_connections,
        max_unauthenticated,
        refusal_window: args.refusal_window,
        capsule_linger: args.capsule_linger,
        ..Limits::default()
    };
    config.audit_policy = audit_policy;
    config.db_cache = args.db_cache;
    config.store_limits.quota = Quota {
        max_keys: args.kv_max_keys as u64,
        max_bytes: args.kv_max_bytes as u64,
    };
    config.audit_retention = Retention {
        max_age: (!args.audit_max_age.is_zero()).then_some(args.audit_max_age),
        max_size: args.audit_max_size as u64,
    };
    config.config_file = config_file;
    config.settings.clone_from(&resolved.settings);
    config
}
