//! The process groups of the session's MCP servers, kept in memory and in a record file,
//! and the sweep that kills what a daemon killed by SIGKILL left behind.
//!
//! Each server leads a process group of its own. A daemon that exits in any way but
//! SIGKILL kills those groups ([`ServerGroups::kill_all`]), and a server itself dies with
//! any daemon (`PR_SET_PDEATHSIG`). What a server started in turn survives a SIGKILL,
//! though (an `npx` server's `node`, say). So the groups are also written to the session's
//! record file, with a random mark that every server gets in its environment
//! ([`MARK_VAR`]). The next daemon of the session, holding its lock, [`sweep`]s: it kills
//! every process still in a recorded group that carries the recorded mark. Both must
//! match, so a process group id reused since by something else is never touched, and
//! neither is a process that left its server's group on purpose.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::process::{Pid, Signal};

use crate::files::{remove_if_exists, write_private};

/// The variable in every server's environment that names the daemon which started it.
pub const MARK_VAR: &str = "ASTRID_MCP_MARK";

/// How many times [`sweep`] looks again for processes forked while it was killing.
const SWEEP_PASSES: usize = 10;

/// The live server process groups of this daemon, mirrored in the record file.
#[derive(Debug)]
pub struct ServerGroups {
    /// The record file; `None` keeps the groups in memory only (unit tests).
    record: Option<PathBuf>,
    mark: String,
    live: Mutex<BTreeSet<i32>>,
}

impl Default for ServerGroups {
    fn default() -> Self {
        Self::new(None)
    }
}

impl ServerGroups {
    /// Groups recorded in `record` (if any), under a fresh mark.
    pub fn new(record: Option<PathBuf>) -> Self {
        Self {
            record,
            mark: uuid::Uuid::new_v4().simple().to_string(),
            live: Mutex::default(),
        }
    }

    /// The value of [`MARK_VAR`] for this daemon's servers.
    pub fn mark(&self) -> &str {
        &self.mark
    }

    fn live(&self) -> MutexGuard<'_, BTreeSet<i32>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A server started, leading group `pgid`.
    pub fn track(&self, pgid: i32) {
        let mut live = self.live();
        live.insert(pgid);
        self.save(&live);
    }

    /// Group `pgid` was killed.
    pub fn ended(&self, pgid: i32) {
        let mut live = self.live();
        if live.remove(&pgid) {
            self.save(&live);
        }
    }

    /// Kills every group still alive (SIGKILL) and removes the record: the last step of
    /// a shutdown, so that nothing a server started outlives the daemon.
    pub fn kill_all(&self) {
        let mut live = self.live();
        for pgid in std::mem::take(&mut *live) {
            if let Some(pgid) = Pid::from_raw(pgid) {
                // The group may be gone already (ESRCH).
                let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
            }
        }
        self.save(&live);
    }

    /// Writes the record (the lock held keeps writes in order), or removes it when no
    /// group is left. A failure is logged: the servers run on, only a sweep after a
    /// SIGKILL would miss them.
    fn save(&self, live: &BTreeSet<i32>) {
        let Some(path) = &self.record else {
            return;
        };
        let written = if live.is_empty() {
            remove_if_exists(path)
        } else {
            write_private(path, Record::text(&self.mark, live).as_bytes())
        };
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot update the MCP servers' record: {e}");
        }
    }
}

/// A record file's contents: the mark, then one group id per line.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    mark: String,
    groups: BTreeSet<i32>,
}

impl Record {
    fn text(mark: &str, groups: &BTreeSet<i32>) -> String {
        std::iter::once(format!("mark {mark}"))
            .chain(groups.iter().map(i32::to_string))
            .map(|line| line + "\n")
            .collect()
    }

    /// `None` for anything but a mark line followed by positive group ids.
    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let mark = lines.next()?.strip_prefix("mark ")?;
        if mark.is_empty() || !mark.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let groups = lines
            .map(|line| line.parse::<i32>().ok().filter(|&pgid| pgid > 1))
            .collect::<Option<BTreeSet<i32>>>()?;
        Some(Self {
            mark: mark.to_owned(),
            groups,
        })
    }
}

/// The process group in a `/proc/<pid>/stat` line (its fifth field; the second, the
/// command name in parentheses, may itself hold spaces and parentheses).
fn stat_group(stat: &str) -> Option<i32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // state, parent, group
    after_name.split_whitespace().nth(2)?.parse().ok()
}

/// Whether a `/proc/<pid>/environ` (NUL-separated `NAME=value` entries) holds
/// `MARK_VAR=mark`.
fn marked(environ: &[u8], mark: &str) -> bool {
    let wanted = format!("{MARK_VAR}={mark}");
    environ
        .split(|&b| b == 0)
        .any(|entry| entry == wanted.as_bytes())
}

/// Kills what the servers of an earlier daemon of this session left (see the module
/// docs), then removes its record. Call it holding the session's lock, before any server
/// starts. Returns how many processes were killed.
pub fn sweep(record: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(record) else {
        return 0;
    };
    let mut killed = 0;
    if let Some(found) = Record::parse(&text) {
        // Until a pass finds nothing: a process may fork while its group is swept.
        for _ in 0..SWEEP_PASSES {
            let pass = kill_marked(&found);
            killed += pass;
            if pass == 0 {
                break;
            }
        }
    } else {
        tracing::warn!(path = %record.display(), "unreadable MCP servers' record ignored");
    }
    if killed > 0 {
        tracing::warn!(
            killed,
            "killed processes left by the MCP servers of a daemon that did not exit cleanly"
        );
    }
    if let Err(e) = remove_if_exists(record) {
        tracing::warn!(path = %record.display(), "cannot remove the MCP servers' record: {e}");
    }
    killed
}

/// One pass over `/proc`: SIGKILL to every process in one of `record`'s groups that
/// carries its mark. Processes of other users, and those gone meanwhile, are skipped.
fn kill_marked(record: &Record) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        let dir = entry.path();
        let in_group = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|stat| stat_group(&stat))
            .is_some_and(|pgid| record.groups.contains(&pgid));
        // A zombie's environment reads empty: it is not counted again.
        if in_group
            && std::fs::read(dir.join("environ")).is_ok_and(|env| marked(&env, &record.mark))
            && rustix::process::kill_process(pid, Signal::KILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_what_was_written() {
        let groups = BTreeSet::from([4242, 17]);
        let text = Record::text("00ff", &groups);
        assert_eq!(text, "mark 00ff\n17\n4242\n");
        let read = Record::parse(&text).unwrap();
        assert_eq!(read.mark, "00ff");
        assert_eq!(read.groups, groups);
    }

    #[test]
    fn a_damaged_record_is_not_trusted() {
        for text in [
            "",
            "17\n",
            "mark \n17\n",
            "mark zz\n17\n",
            "mark 00ff\nseventeen\n",
            // Group 1 is init's, 0 and below are "this group" and "all groups".
            "mark 00ff\n1\n",
            "mark 00ff\n0\n",
            "mark 00ff\n-5\n",
        ] {
            assert_eq!(Record::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_group_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4321 (a (b) c) S 1 4300 4300 0 -1 4194560 101 0 0 0";
        assert_eq!(stat_group(stat), Some(4300));
        assert_eq!(stat_group("4321 (sleep"), None);
        assert_eq!(stat_group("garbage"), None);
    }

    #[test]
    fn only_the_exact_mark_counts() {
        let env = b"PATH=/bin\0ASTRID_MCP_MARK=00ff\0HOME=/root\0";
        assert!(marked(env, "00ff"));
        assert!(!marked(env, "00f"));
        assert!(!marked(env, "00ffee"));
        assert!(!marked(b"X_ASTRID_MCP_MARK=00ff\0", "00ff"));
        assert!(!marked(b"", "00ff"));
    }

    #[test]
    fn the_record_follows_the_live_groups_and_goes_with_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.mcp");
        let groups = ServerGroups::new(Some(path.clone()));
        // Group ids no process can have: nothing real is signalled.
        groups.track(i32::MAX - 1);
        groups.track(i32::MAX);
        let read = Record::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read.mark, groups.mark());
        assert_eq!(read.groups, BTreeSet::from([i32::MAX - 1, i32::MAX]));
        groups.ended(i32::MAX);
        let read = Record::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read.groups, BTreeSet::from([i32::MAX - 1]));
        groups.kill_all();
        assert!(!path.exists());
    }

    #[test]
    fn a_sweep_of_groups_that_are_gone_kills_nothing_and_removes_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.mcp");
        std::fs::write(&path, Record::text("00ff", &BTreeSet::from([i32::MAX]))).unwrap();
        assert_eq!(sweep(&path), 0);
        assert!(!path.exists());
        // No record: nothing to do.
        assert_eq!(sweep(&path), 0);
    }
}
