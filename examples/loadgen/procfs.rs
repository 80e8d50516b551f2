//! What `/proc` tells about a process: CPU time of all its threads, `status` fields (RSS),
//! threads, and context switches (wake-ups).

use std::time::Duration;

/// CPU time all threads of process `pid` have run so far: the sum of the first field of
/// `/proc/<pid>/task/*/schedstat` (nanoseconds). Threads that end during a run take theirs
/// with them; the daemon's and this program's live as long as the run.
pub(crate) fn cpu_time(pid: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .sum()
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `RssAnon`, ...).
pub(crate) fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of process `pid` (entries of `/proc/<pid>/fd`).
pub(crate) fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The daemon's threads.
pub(crate) fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

/// Per thread of process `pid`: its name and its context switches so far (voluntary and
/// not), by thread id.
fn switches(pid: u32) -> std::collections::BTreeMap<String, (String, u64)> {
    let mut all = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return all;
    };
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("")
            .trim()
            .to_owned();
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        all.insert(task.file_name().to_string_lossy().into_owned(), (name, n));
    }
    all
}

/// Wake-ups a second of process `pid` over `over`: context switches of every thread (a
/// thread that ends meanwhile counts what it did before the first look), and the threads
/// that had any, by name.
pub(crate) fn wakeups(pid: u32, over: Duration) -> (f64, Vec<(String, u64)>) {
    let before = switches(pid);
    std::thread::sleep(over);
    let after = switches(pid);
    let mut by_name = std::collections::BTreeMap::<String, u64>::new();
    for (tid, (name, n)) in &after {
        let was = before.get(tid).map_or(0, |(_, n)| *n);
        *by_name.entry(name.clone()).or_default() += n.saturating_sub(was);
    }
    let total: u64 = by_name.values().sum();
    let mut busy: Vec<(String, u64)> = by_name.into_iter().filter(|(_, n)| *n > 0).collect();
    busy.sort_by_key(|b| std::cmp::Reverse(b.1));
    (total as f64 / over.as_secs_f64(), busy)
}
