//! What grows in a long run: samples of the daemon (RSS, open files, threads) and of its
//! `state/` on disk, printed as a table while they come, and the growth over the second
//! half of the run.

use std::path::Path;
use std::time::Duration;

use crate::procfs::{fds, status_kib, threads};

/// The daemon and its files at one moment of the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Requests answered.
    pub(crate) done: usize,
    /// Since the start of the run.
    pub(crate) at: Duration,
    /// The daemon's `VmRSS`, KiB.
    pub(crate) rss_kib: u64,
    /// Its open file descriptors.
    pub(crate) fds: usize,
    /// Its threads.
    pub(crate) threads: usize,
    /// Bytes of every file under `state/`.
    pub(crate) state: u64,
    /// Of which `ledger.redb`.
    pub(crate) ledger: u64,
    /// Of which the journal files (`ledger.journal.*`).
    pub(crate) journal: u64,
    /// Error replies so far.
    errors: u64,
    /// Of which not expected (anything but a crash of `trap`).
    unexpected: u64,
}

/// Sizes of the files under `dir`, recursively: all, `ledger.redb`, the journal files.
pub(crate) fn state_sizes(dir: &Path) -> (u64, u64, u64) {
    let (mut all, mut ledger, mut journal) = (0, 0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                all += meta.len();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name == "ledger.redb" {
                    ledger += meta.len();
                } else if name.starts_with("ledger.journal") {
                    journal += meta.len();
                }
            }
        }
    }
    (all, ledger, journal)
}

/// Bytes in MiB.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Sample {
    /// Samples daemon `pid` and the `state` folder of its home now, `at` into the run,
    /// `done` requests answered, `errors` of them errors (`unexpected` unexpected ones).
    pub(crate) fn take(
        pid: u32,
        state: &Path,
        at: Duration,
        done: usize,
        errors: u64,
        unexpected: u64,
    ) -> Self {
        let (all, ledger, journal) = state_sizes(state);
        Self {
            done,
            at,
            rss_kib: status_kib(pid, "VmRSS"),
            fds: fds(pid),
            threads: threads(pid),
            state: all,
            ledger,
            journal,
            errors,
            unexpected,
        }
    }

    /// Prints the header of the table of samples.
    pub(crate) fn print_header() {
        println!(
            "\n| answered | % | s | req/s (interval) | RSS MiB | fds | threads | state/ MiB | ledger.redb MiB | journal MiB | errors (unexpected) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
    }

    /// Prints this sample as a row of the table: `total` is the run's requests, `last` the
    /// previous sample (for the rate since).
    pub(crate) fn print_row(&self, total: usize, last: Option<&Self>) {
        let rate = last.map_or(String::from("-"), |l| {
            let secs = self.at.saturating_sub(l.at).as_secs_f64();
            format!("{:.0}", (self.done - l.done) as f64 / secs.max(1e-9))
        });
        println!(
            "| {} | {:.0}% | {:.1} | {rate} | {:.1} | {} | {} | {:.1} | {:.1} | {:.1} | {} ({}) |",
            self.done,
            self.done as f64 * 100.0 / total as f64,
            self.at.as_secs_f64(),
            self.rss_kib as f64 / 1024.0,
            self.fds,
            self.threads,
            mib(self.state),
            mib(self.ledger),
            mib(self.journal),
            self.errors,
            self.unexpected
        );
    }
}

/// Prints the largest RSS, and the growth from the first sample at or past the half of
/// `requests` to the last sample.
pub(crate) fn print_growth(samples: &[Sample], requests: usize) {
    let max_rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    println!(
        "\nmax RSS over the samples: {:.1} MiB",
        max_rss as f64 / 1024.0
    );
    let half = samples
        .iter()
        .find(|s| s.done * 2 >= requests)
        .copied()
        .unwrap_or(samples[0]);
    let end = samples[samples.len() - 1];
    let growth = |what: &str, from: f64, to: f64, unit: &str| {
        let pct = if from > 0.0 {
            format!("{:+.1}%", (to - from) * 100.0 / from)
        } else {
            "-".to_owned()
        };
        // Counts are whole numbers; sizes get one decimal.
        let decimals = usize::from(!unit.is_empty());
        println!(
            "| {what} | {from:.decimals$}{unit} | {to:.decimals$}{unit} | {:+.decimals$}{unit} | {pct} |",
            to - from
        );
    };
    println!(
        "\nsecond half: from {} to {} requests\n\n| what | at the half | at the end | growth | growth % |",
        half.done, end.done
    );
    println!("|---|---|---|---|---|");
    growth(
        "RSS",
        half.rss_kib as f64 / 1024.0,
        end.rss_kib as f64 / 1024.0,
        " MiB",
    );
    growth("open fds", half.fds as f64, end.fds as f64, "");
    growth("threads", half.threads as f64, end.threads as f64, "");
    growth("state/", mib(half.state), mib(end.state), " MiB");
    growth("ledger.redb", mib(half.ledger), mib(end.ledger), " MiB");
    growth("journal", mib(half.journal), mib(end.journal), " MiB");
}
