//! Checks of the ledger (`state/ledger.redb` and its journal): the audit chain, verified by
//! the running daemon (which holds the database open) or, with none running, read here from
//! the database opened read-only; and the ledger's size against the audit log's bound.

use std::path::Path;
use std::time::Duration;

use astrid::client::Client;
use astrid::daemon::HomeSettings;
use astrid::instance::InstanceLock;
use astrid::paths::HomeLayout;
use astrid::protocol::{Request, Verification};
use astrid_actors::audit::verify_file;

use super::Check;

/// The database and journal files, in `state/`.
const DATABASE: &str = "ledger.redb";
const JOURNAL: [&str; 2] = ["ledger.journal.0", "ledger.journal.1"];

/// How large a journal file grows between checkpoints (16 MiB of frames, a MiB at a time).
const JOURNAL_FILE_MAX: u64 = 17 * MIB;

/// How long the daemon has to verify the chain.
const VERIFY_DEADLINE: Duration = Duration::from_secs(30);

const MIB: u64 = 1024 * 1024;

/// The audit chain is intact.
pub(crate) async fn audit_chain(home: &HomeLayout, daemon: Option<&Client>) -> Check {
    let fix_broken = "entries were changed or removed outside the daemon: keep a copy of state/ledger.redb as evidence; `astrid audit tail` shows the entries around it, and the chain goes on from the last one";
    if let Some(client) = daemon {
        let asked = tokio::time::timeout(
            VERIFY_DEADLINE,
            client.call::<Verification>(Request::AuditVerify),
        )
        .await;
        return match asked {
            Ok(Ok(v)) => verdict(&v, "verified by the running daemon", fix_broken),
            Ok(Err(e)) => Check::warn(
                "audit chain",
                format!("not checked: the daemon did not verify it ({e})"),
                "run `astrid audit verify`",
            ),
            Err(_) => Check::warn(
                "audit chain",
                format!("not checked: the daemon did not answer within {VERIFY_DEADLINE:?}"),
                "run `astrid audit verify`",
            ),
        };
    }
    let path = home.state().join(DATABASE);
    if !path.exists() {
        return Check::pass("audit chain", "no audit log yet");
    }
    match verify_file(&path) {
        Ok(v) => {
            let pending = journal_frames(home);
            let how = if pending {
                "checked here, read-only; the journal holds writes not yet in the database, checked when a daemon replays them at its start"
            } else {
                "checked here, read-only"
            };
            verdict(&v, how, fix_broken)
        }
        Err(e) => {
            let fix = match live_sessions(home).first() {
                Some(session) if session == "system" => "the system session's daemon holds it: run `astrid audit verify` in its workspace (or with -w)".to_owned(),
                Some(session) => format!(
                    "the daemon of session {session} holds it: run `astrid -s {session} audit verify` in its workspace (or with -w)"
                ),
                None => "start the daemon (`astrid start`), which opens and repairs it, then run `astrid doctor` again".to_owned(),
            };
            Check::warn(
                "audit chain",
                format!(
                    "not checked: {} cannot be opened read-only ({e})",
                    path.display()
                ),
                fix,
            )
        }
    }
}

/// The sessions of the home whose daemon runs (holds its lock).
fn live_sessions(home: &HomeLayout) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(home.sessions()) else {
        return Vec::new();
    };
    let mut live: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "lock") && InstanceLock::is_held(p))
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    live.sort();
    live
}

fn verdict(v: &Verification, how: &str, fix: &str) -> Check {
    if v.ok {
        let pruned = v.pruned.as_ref().map_or_else(String::new, |p| {
            format!(", from the anchor of entries {}..={}", p.first, p.last)
        });
        Check::pass(
            "audit chain",
            format!("intact: {} entries{pruned} ({how})", v.entries),
        )
    } else {
        Check::fail(
            "audit chain",
            format!(
                "broken at entry {}: {} ({how})",
                v.first_bad
                    .map_or_else(|| "?".to_owned(), |e| e.to_string()),
                v.reason.as_deref().unwrap_or("no reason given")
            ),
            fix,
        )
    }
}

/// Whether a journal file holds frames: a header with its magic (an emptied file's header
/// is zeroed).
fn journal_frames(home: &HomeLayout) -> bool {
    JOURNAL.iter().any(|name| {
        let mut head = [0; 8];
        std::fs::File::open(home.state().join(name))
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .is_ok_and(|()| &head == b"ASTRIDJ1")
    })
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The ledger stays within the audit log's bound (`audit_max_size`: the database and the
/// journal under it), and each journal file within what a checkpoint leaves it.
pub(crate) fn size(home: &HomeLayout, settings: &HomeSettings) -> Vec<Check> {
    let state = home.state();
    let database = size_of(&state.join(DATABASE));
    let journal: Vec<(String, u64)> = JOURNAL
        .iter()
        .map(|name| ((*name).to_owned(), size_of(&state.join(name))))
        .collect();
    let total = database + journal.iter().map(|(_, n)| n).sum::<u64>();
    let bound = settings.audit_max_size;
    let mut checks = Vec::new();
    let mib = |n: u64| format!("{}.{} MiB", n / MIB, n % MIB * 10 / MIB);
    for (name, len) in &journal {
        if *len > JOURNAL_FILE_MAX {
            checks.push(Check::warn(
                "ledger size",
                format!(
                    "{name} is {}, more than the {} a checkpoint keeps it under: checkpoints are failing",
                    mib(*len),
                    mib(JOURNAL_FILE_MAX)
                ),
                "look for the reason in `astrid logs --actor store --level warn` (a full disk, an I/O error)",
            ));
        }
    }
    if total > bound {
        checks.push(Check::warn(
            "ledger size",
            format!(
                "{DATABASE} and its journal take {}, over audit_max_size ({})",
                mib(total),
                mib(bound)
            ),
            "`astrid audit prune` applies the retention now (the daemon does at its start and as the log is written), or raise audit_max_size in config.toml",
        ));
    }
    if checks.is_empty() {
        checks.push(Check::pass(
            "ledger size",
            format!(
                "{DATABASE} {}, journal {}: under audit_max_size ({})",
                mib(database),
                mib(total - database),
                mib(bound)
            ),
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn a_ledger_over_its_bound_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let home = HomeLayout::new(tmp.path());
        std::fs::create_dir_all(home.state()).unwrap();
        std::fs::write(home.state().join(DATABASE), vec![0; 4096]).unwrap();
        let small = HomeSettings {
            audit_max_size: 1024,
            ..HomeSettings::default()
        };
        let checks = size(&home, &small);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, Status::Warn);
        assert!(checks[0].fix.as_deref().unwrap().contains("audit prune"));
        let fine = size(&home, &HomeSettings::default());
        assert_eq!(fine[0].status, Status::Pass);
        assert!(!journal_frames(&home));
    }
}
