//! `astrid top`: a live view of the supervision tree with per-actor, per-capsule and
//! per-server rates (a kernel actor's being those of the requests it serves: `served.rs`),
//! and the requests by kind, redrawn every `--interval` from successive `GetMetrics`
//! readings (rates and percentiles are over the interval: see `rates.rs`). Quits on `q` or
//! Ctrl-C. On a terminal, its input is read unbuffered and unechoed (rustix's termios) and
//! restored on the way out; elsewhere frames are printed one after another and `q` is read
//! from standard input (whose end quits too), so a script or a test can drive it.

mod rates;
mod sample;
mod served;

use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use astrid::client::Client;
use astrid::protocol::TreeNode;
use tokio::sync::mpsc;

use self::sample::Sample;
use crate::CliError;

/// Most request kinds listed under the tree.
const MAX_KINDS: usize = 12;

/// One reading of the daemon.
struct Reading {
    at: Instant,
    metrics: Sample,
    tree: TreeNode,
}

/// Runs the view until `q`, Ctrl-C, or the end of standard input.
pub(crate) async fn run(client: &Client, interval: Duration) -> Result<(), CliError> {
    let screen = std::io::stdout().is_terminal();
    let _raw = std::io::stdin()
        .is_terminal()
        .then(RawInput::new)
        .transpose()?;
    let mut keys = keys();
    let mut before: Option<Reading> = None;
    loop {
        let (text, tree) = tokio::join!(client.metrics(), client.tree());
        let now = Reading {
            at: Instant::now(),
            metrics: Sample::parse(&text?),
            tree: tree?,
        };
        let frame = render(before.as_ref(), &now, interval);
        let mut out = std::io::stdout().lock();
        if screen {
            // Home, clear, then the frame.
            write!(out, "\x1b[H\x1b[2J{frame}")?;
        } else {
            writeln!(out, "{frame}")?;
        }
        out.flush()?;
        drop(out);
        before = Some(now);
        tokio::select! {
            key = keys.recv() => match key {
                Some(b'q' | b'Q' | 0x03) | None => return Ok(()),
                Some(_) => {}
            },
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Standard input's bytes, read on a thread of their own; the channel closes at its end.
fn keys() -> mpsc::UnboundedReceiver<u8> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut byte = [0u8; 1];
        while let Ok(1) = stdin.read(&mut byte) {
            if tx.send(byte[0]).is_err() {
                return;
            }
        }
    });
    rx
}

/// The terminal without line buffering, echo or signal keys (Ctrl-C arrives as a byte),
/// until dropped.
struct RawInput {
    saved: rustix::termios::Termios,
}

impl RawInput {
    fn new() -> std::io::Result<Self> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.local_modes
            .remove(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG);
        tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ =
            rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &self.saved);
    }
}

/// The rate and percentiles of one row, between two readings (since boot on the first).
struct Row {
    per_second: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
}

impl Row {
    fn of(
        before: Option<&Reading>,
        now: &Reading,
        calls: impl Fn(&Sample) -> f64,
        histogram: &str,
        with: &[(&str, &str)],
    ) -> Self {
        Self::of_buckets(before, now, calls, |s| s.buckets(histogram, with))
    }

    /// The figures of the request kinds `kinds` together.
    fn of_kinds(before: Option<&Reading>, now: &Reading, kinds: &[&str]) -> Self {
        let calls = |s: &Sample| {
            kinds
                .iter()
                .map(|k| s.sum("astrid_requests_total", &[("kind", k)]))
                .sum()
        };
        let buckets = |s: &Sample| {
            let each: Vec<_> = kinds
                .iter()
                .map(|k| s.buckets("astrid_request_duration_seconds", &[("kind", k)]))
                .collect();
            rates::merge(&each)
        };
        Self::of_buckets(before, now, calls, buckets)
    }

    fn of_buckets(
        before: Option<&Reading>,
        now: &Reading,
        calls: impl Fn(&Sample) -> f64,
        buckets_of: impl Fn(&Sample) -> Vec<(f64, f64)>,
    ) -> Self {
        let buckets = buckets_of(&now.metrics);
        let (per_second, observed) = match before {
            Some(b) => {
                let seconds = now.at.duration_since(b.at).as_secs_f64();
                let earlier = buckets_of(&b.metrics);
                (
                    Some(rates::rate(calls(&b.metrics), calls(&now.metrics), seconds)),
                    rates::delta(&earlier, &buckets),
                )
            }
            None => (None, buckets),
        };
        Self {
            per_second,
            p50: rates::quantile(0.5, &observed),
            p99: rates::quantile(0.99, &observed),
        }
    }

    fn cells(&self) -> String {
        let rate = self
            .per_second
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
        format!(
            "{rate:>9} {:>8} {:>8}",
            seconds(self.p50),
            seconds(self.p99)
        )
    }
}

fn seconds(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(s) if s < 1e-3 => format!("{:.0}us", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a gauge of bytes, written from a u64"
)]
fn bytes(value: f64) -> String {
    let b = value as u64;
    if b >= 1 << 20 {
        format!("{:.1}MiB", value / f64::from(1u32 << 20))
    } else if b >= 1 << 10 {
        format!("{:.0}KiB", value / 1024.0)
    } else {
        format!("{b}B")
    }
}

/// One frame: a header, the tree with each capsule's and MCP server's figures, and the
/// busiest request kinds.
fn render(before: Option<&Reading>, now: &Reading, interval: Duration) -> String {
    let m = &now.metrics;
    let mut out = String::new();
    let uptime = m.sum("astrid_uptime_seconds", &[]);
    let _ = writeln!(
        out,
        "astrid top: every {}, q to quit; up {uptime:.0}s, {} connections open",
        humantime::format_duration(interval),
        m.sum("astrid_connections_open", &[]),
    );
    let all = Row::of(
        before,
        now,
        |s| s.sum("astrid_requests_total", &[]),
        "astrid_request_duration_seconds",
        &[],
    );
    let _ = writeln!(
        out,
        "requests: {}/s, p50 {}, p99 {}\n",
        all.per_second
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
        seconds(all.p50),
        seconds(all.p99)
    );
    let _ = writeln!(
        out,
        "{:<34} {:<10} {:>8} {:>9} {:>8} {:>8} {:>7} {:>8}",
        "ACTOR", "STATE", "RESTARTS", "CALLS/S", "P50", "P99", "ERRORS", "MEMORY"
    );
    crate::render::tree_lines(&mut out, &now.tree, &mut |out, n, name| {
        tree_row(out, before, now, n, name);
    });
    let _ = writeln!(
        out,
        "\n{:<34} {:>9} {:>8} {:>8} {:>7}",
        "REQUEST", "CALLS/S", "P50", "P99", "ERRORS"
    );
    let mut kinds: Vec<(String, Row, f64)> = m
        .label_values("astrid_requests_total", "kind")
        .into_iter()
        .map(|kind| {
            let with = [("kind", kind.as_str())];
            let row = Row::of(
                before,
                now,
                |s| s.sum("astrid_requests_total", &with),
                "astrid_request_duration_seconds",
                &with,
            );
            let errors = m.sum("astrid_requests_total", &with)
                - m.sum(
                    "astrid_requests_total",
                    &[("kind", &kind), ("outcome", "ok")],
                );
            (kind, row, errors)
        })
        .collect();
    kinds.sort_by(|a, b| {
        b.1.per_second
            .unwrap_or_default()
            .total_cmp(&a.1.per_second.unwrap_or_default())
            .then_with(|| a.0.cmp(&b.0))
    });
    for (kind, row, errors) in kinds.iter().take(MAX_KINDS) {
        let _ = writeln!(out, "{kind:<34} {} {errors:>7}", row.cells());
    }
    out
}

/// One row of the tree (`name` behind its branches): a capsule with its calls and memory, an
/// MCP server with its calls, a kernel actor with the requests it serves.
fn tree_row(out: &mut String, before: Option<&Reading>, now: &Reading, n: &TreeNode, name: &str) {
    let m = &now.metrics;
    let figures = if let Some(capsule) = n.name.strip_prefix("capsule:") {
        let with = [("capsule", capsule)];
        let row = Row::of(
            before,
            now,
            |s| s.sum("astrid_capsule_calls_total", &with),
            "astrid_capsule_call_duration_seconds",
            &with,
        );
        format!(
            "{} {:>7} {:>8}",
            row.cells(),
            m.sum("astrid_capsule_failures_total", &with),
            bytes(m.sum("astrid_capsule_memory_bytes", &with))
        )
    } else if let Some(server) = n.name.strip_prefix("mcp:") {
        let with = [("server", server)];
        let calls = |s: &Sample| s.sum("astrid_mcp_calls_total", &with);
        let rate = before.map_or_else(
            || "-".to_owned(),
            |b| {
                let seconds = now.at.duration_since(b.at).as_secs_f64();
                format!("{:.1}", rates::rate(calls(&b.metrics), calls(m), seconds))
            },
        );
        let errors = calls(m)
            - m.sum(
                "astrid_mcp_calls_total",
                &[("server", server), ("outcome", "ok")],
            );
        format!("{rate:>9} {:>8} {:>8} {errors:>7}", "-", "-")
    } else {
        let kinds = m.label_values("astrid_requests_total", "kind");
        let served = served::kinds_of(&n.name, &kinds);
        if served.is_empty() {
            String::new()
        } else {
            let row = Row::of_kinds(before, now, &served);
            let errors: f64 = served
                .iter()
                .map(|k| {
                    m.sum("astrid_requests_total", &[("kind", k)])
                        - m.sum("astrid_requests_total", &[("kind", k), ("outcome", "ok")])
                })
                .sum();
            format!("{} {errors:>7}", row.cells())
        }
    };
    let _ = writeln!(
        out,
        "{name:<34} {:<10} {:>8} {figures}",
        n.state.as_str(),
        n.restarts
    );
}
