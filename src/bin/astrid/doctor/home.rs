//! Checks of the home itself: its folders (there, ours, `0700`), the session files of
//! daemons that are gone, the open-file limit a daemon started from here would have, and the
//! free disk under `state/`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use astrid::daemon::{HomeSettings, RESERVED_FILES, connection_caps};
use astrid::instance::{InstanceLock, PidFile};
use astrid::paths::HomeLayout;
use rustix::process::{Resource, getrlimit};

use super::Check;

/// The extensions of a session's files (see `SessionFiles`).
const SESSION_FILES: &[&str] = &["sock", "token", "ready", "lock", "pid", "mcp"];

/// Bytes the ledger's journal may take: two files of up to 17 MiB each.
const JOURNAL_ROOM: u64 = 2 * 17 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;

/// The home's folders: each that exists is a folder, ours, and closed to others. A home
/// that does not exist is reported, not created.
pub(crate) fn home(home: &HomeLayout) -> Vec<Check> {
    let root = home.root();
    if std::fs::symlink_metadata(root).is_err() {
        return vec![Check::warn(
            "home",
            format!(
                "{} does not exist: no daemon has run with it",
                root.display()
            ),
            "`astrid start` creates it (with mode 0700)",
        )];
    }
    let uid = rustix::process::geteuid().as_raw();
    let mut checks = Vec::new();
    for dir in home.dirs() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            // The daemon creates what is missing.
            continue;
        };
        let shown = dir.display();
        if !meta.is_dir() {
            checks.push(Check::fail(
                "home",
                format!("{shown} is not a folder"),
                format!("move {shown} out of the way: the daemon needs a folder there"),
            ));
        } else if meta.uid() != uid {
            checks.push(Check::fail(
                "home",
                format!(
                    "{shown} belongs to uid {}, not to you (uid {uid})",
                    meta.uid()
                ),
                format!(
                    "sudo chown -R {uid} {shown} (the daemon refuses a folder of another user)"
                ),
            ));
        } else if meta.permissions().mode() & 0o077 != 0 {
            checks.push(Check::fail(
                "home",
                format!(
                    "{shown} has mode {:04o}: other users may read what is in it",
                    meta.permissions().mode() & 0o7777
                ),
                format!("chmod 700 {shown} (a daemon starting also does it)"),
            ));
        }
    }
    if checks.is_empty() {
        checks.push(Check::pass(
            "home",
            format!("{}: its folders are yours, with mode 0700", root.display()),
        ));
    }
    checks
}

/// Session files of daemons that are gone: files of a session whose lock nobody holds.
pub(crate) fn sessions(home: &HomeLayout) -> Vec<Check> {
    let mut by_session: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(home.sessions()) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((session, ext)) = name.rsplit_once('.')
                && SESSION_FILES.contains(&ext)
            {
                by_session
                    .entry(session.to_owned())
                    .or_default()
                    .push(name.clone());
            }
        }
    }
    let mut checks = Vec::new();
    let mut live = Vec::new();
    for (session, mut names) in by_session {
        names.sort();
        let dir = home.sessions();
        if InstanceLock::is_held(&dir.join(format!("{session}.lock"))) {
            let pid = PidFile::read(&dir.join(format!("{session}.pid")))
                .map_or_else(|_| "booting".to_owned(), |p| format!("pid {}", p.pid));
            live.push(format!("{session} ({pid})"));
            continue;
        }
        let flag = if session == "system" {
            String::new()
        } else {
            format!(" -s {session}")
        };
        let mut fix =
            format!("`astrid stop{flag}` removes them (so does the session's next daemon)");
        if names
            .iter()
            .any(|n| Path::new(n).extension().is_some_and(|e| e == "mcp"))
        {
            fix = format!(
                "`astrid start{flag}`: the session's next daemon kills the MCP servers `{session}.mcp` names and removes the files; `astrid stop{flag}` then"
            );
        }
        checks.push(Check::warn(
            "sessions",
            format!(
                "session `{session}`: {} left by a daemon that is gone",
                names.join(", ")
            ),
            fix,
        ));
    }
    if checks.is_empty() {
        let detail = if live.is_empty() {
            "no session files: no daemon runs".to_owned()
        } else {
            format!("daemons running: {}", live.join(", "))
        };
        checks.push(Check::pass("sessions", detail));
    }
    checks
}

/// The open-file limit of this shell, which a daemon started from it raises to the hard
/// limit: enough for the connections `config.toml` allows and the daemon's own files?
pub(crate) fn open_files(settings: &HomeSettings) -> Check {
    let limit = getrlimit(Resource::Nofile);
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let (total, _) = connection_caps(settings.max_connections, settings.max_unauthenticated, hard);
    let detail = format!(
        "soft {}, hard {} (a daemon raises the soft limit to the hard one)",
        show(limit.current),
        show(limit.maximum)
    );
    if total < settings.max_connections {
        return Check::warn(
            "open files",
            format!(
                "{detail}: a daemon would serve {total} connections, not the {} of max_connections (it keeps {RESERVED_FILES} descriptors for its own files)",
                settings.max_connections
            ),
            format!(
                "raise the hard limit to {} or more (`LimitNOFILE=` in a systemd unit, `nofile` in /etc/security/limits.conf), or lower max_connections in config.toml",
                settings.max_connections as u64 + RESERVED_FILES
            ),
        );
    }
    Check::pass(
        "open files",
        format!(
            "{detail}: room for max_connections ({}) and the daemon's own files",
            settings.max_connections
        ),
    )
}

/// Free space where the daemon keeps its databases: room for the journal at least, and for
/// the audit log to reach its bound.
pub(crate) fn disk(home: &HomeLayout, settings: &HomeSettings) -> Check {
    let state = home.state();
    let Some(dir) = nearest_existing(&state) else {
        return Check::warn(
            "disk",
            format!("no folder of {} exists", state.display()),
            "check the home's path",
        );
    };
    let stat = match rustix::fs::statvfs(&dir) {
        Ok(stat) => stat,
        Err(e) => {
            return Check::warn(
                "disk",
                format!("cannot tell the free space of {}: {e}", dir.display()),
                "check that the file system is mounted and readable",
            );
        }
    };
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let want = settings.audit_max_size.saturating_add(JOURNAL_ROOM);
    let detail = format!("{} MiB free for {}", free / MIB, dir.display());
    let fix = format!(
        "free space on that file system, or lower audit_max_size in config.toml (now {} MiB)",
        settings.audit_max_size / MIB
    );
    if free < JOURNAL_ROOM {
        Check::fail(
            "disk",
            format!(
                "{detail}: less than the {} MiB the ledger's journal may take; durable writes will fail",
                JOURNAL_ROOM / MIB
            ),
            fix,
        )
    } else if free < want {
        Check::warn(
            "disk",
            format!(
                "{detail}: less than the {} MiB the audit log and journal may grow to",
                want / MIB
            ),
            fix,
        )
    } else {
        Check::pass(
            "disk",
            format!("{detail} (the ledger may take up to {} MiB)", want / MIB),
        )
    }
}

/// `path`, or the nearest of its ancestors that exists.
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors().find(|p| p.exists()).map(Path::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn settings() -> HomeSettings {
        HomeSettings {
            from_file: 0,
            max_connections: 1024,
            max_unauthenticated: 64,
            audit_max_size: 256 * MIB,
        }
    }

    #[test]
    fn a_missing_home_is_reported_not_created() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = HomeLayout::new(tmp.path().join("none"));
        let checks = home(&layout);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, Status::Warn);
        assert_eq!(sessions(&layout)[0].status, Status::Pass);
        assert!(disk(&layout, &settings()).detail.contains("MiB free"));
        assert!(!tmp.path().join("none").exists());
    }

    #[test]
    fn open_modes_and_stale_sessions_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = HomeLayout::new(tmp.path().join("h"));
        std::fs::create_dir_all(layout.sessions()).unwrap();
        std::fs::set_permissions(layout.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(layout.sessions(), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::write(layout.sessions().join("system.pid"), "1\n/x\n").unwrap();
        std::fs::write(layout.sessions().join("system.sock"), "").unwrap();
        let found = home(&layout);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].detail.contains("mode 0755"), "{found:?}");
        let stale = sessions(&layout);
        assert_eq!(stale.len(), 1);
        assert!(
            stale[0].detail.contains("system.pid, system.sock"),
            "{stale:?}"
        );
        assert!(stale[0].fix.as_deref().unwrap().contains("astrid stop"));
    }
}
