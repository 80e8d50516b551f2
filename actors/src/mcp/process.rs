//! How a server's process is started: found in `PATH`, dying with the daemon, with the
//! open-file limit the daemon started with.

use std::path::PathBuf;

/// Makes the server die with the daemon, even with a daemon killed by SIGKILL (which
/// cleans nothing up): the kernel sends the server SIGKILL when the thread that started it
/// ends, and the servers' thread lives as long as the daemon. (What the server started in
/// turn is killed with its process group at every other exit; after a SIGKILL, by the
/// session's next daemon: see [`groups`](super::groups).)
pub(super) fn die_with_the_daemon(cmd: &mut tokio::process::Command) {
    use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};
    let daemon = getpid();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the child between fork and exec; it allocates nothing
    // and makes only async-signal-safe system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::KILL))?;
            // A daemon that died before the prctl would never send the signal.
            if getppid() == Some(daemon) {
                Ok(())
            } else {
                Err(std::io::ErrorKind::NotConnected.into())
            }
        });
    }
}

/// Gives the server the soft open-file limit `soft` (the one the daemon started with,
/// before raising its own), within the hard limit it inherits.
pub(super) fn limit_open_files(cmd: &mut tokio::process::Command, soft: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the child between fork and exec; it allocates nothing
    // and makes only async-signal-safe system calls (prlimit).
    unsafe {
        cmd.pre_exec(move || {
            let Rlimit { maximum, .. } = getrlimit(Resource::Nofile);
            let current = maximum.map_or(soft, |hard| soft.min(hard));
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(current),
                    maximum,
                },
            )?;
            Ok(())
        });
    }
}

/// `command` itself when it has a `/`; else the first executable of that name in the
/// daemon's `PATH` (or the name as is, which then fails to start with "not found").
pub(super) fn find_program(command: &str) -> PathBuf {
    if command.contains('/') {
        return PathBuf::from(command);
    }
    find_in_path(command).unwrap_or_else(|| PathBuf::from(command))
}

/// The first executable file named `name` in this process's `PATH`, if any.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
}

/// Whether `path` is a file its owner, group or others may execute.
pub fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
