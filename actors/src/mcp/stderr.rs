//! What an MCP server writes to stderr goes to the daemon's log, within bounds, so that a
//! server writing an endless line or a flood of lines grows neither the daemon's memory nor
//! its log without limit:
//!
//! - a line is kept up to [`MAX_LINE`] bytes; the rest of it is read and counted, never
//!   buffered, and the line is logged with a note of how much was cut;
//! - lines are logged while the server's budget lasts: [`BURST`] bytes at once, refilled at
//!   [`RATE`] bytes a second, a line costing its length plus [`LINE_COST`] (the log line's own
//!   prefix); lines past the budget are dropped and counted;
//! - what was dropped is summed up in one warning every [`SUMMARY_EVERY`] and when stderr
//!   closes.
//!
//! stderr is always read to its end, so a noisy server never blocks on a full pipe.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest line kept, in bytes.
pub const MAX_LINE: usize = 4096;
/// Bytes of lines a server may log at once.
pub const BURST: u64 = 256 * 1024;
/// Bytes of lines a second a server may log once its burst is spent.
pub const RATE: u64 = 4096;
/// What a line costs beyond its own bytes.
pub const LINE_COST: u64 = 128;
/// How often what was dropped is summed up.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The log target of servers' lines and of the summaries.
const TARGET: &str = "astrid::mcp::stderr";

/// What was not logged since the last summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Lines dropped whole (over the budget).
    pub lines: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Lines logged without their end (longer than [`MAX_LINE`]).
    pub cut_lines: u64,
    /// The bytes cut from them.
    pub cut_bytes: u64,
}

/// Cuts a server's stderr into lines and decides which are logged (see the module docs).
#[derive(Debug)]
pub struct StderrLines {
    /// The line being read, at most [`MAX_LINE`] bytes.
    line: Vec<u8>,
    /// Bytes of the line being read past [`MAX_LINE`].
    cut: u64,
    /// Bytes the server may still log.
    budget: u64,
    /// When the budget was last refilled.
    refilled: Instant,
    dropped: Dropped,
}

impl StderrLines {
    /// A server's stderr, opened at `now`, with its whole burst to spend.
    pub fn new(now: Instant) -> Self {
        Self {
            line: Vec::new(),
            cut: 0,
            budget: BURST,
            refilled: now,
            dropped: Dropped::default(),
        }
    }

    /// Reads `chunk`, received at `now`; `emit` gets each complete line to log.
    pub fn feed(&mut self, mut chunk: &[u8], now: Instant, emit: &mut impl FnMut(&str)) {
        while !chunk.is_empty() {
            let (part, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => (&chunk[..at], Some(at + 1)),
                None => (chunk, None),
            };
            let room = MAX_LINE - self.line.len();
            let kept = part.len().min(room);
            self.line.extend_from_slice(&part[..kept]);
            self.cut += (part.len() - kept) as u64;
            match end {
                Some(end) => {
                    self.end_line(now, emit);
                    chunk = &chunk[end..];
                }
                None => break,
            }
        }
    }

    /// The end of stderr: the last line, if it had no newline.
    pub fn finish(&mut self, now: Instant, emit: &mut impl FnMut(&str)) {
        if !self.line.is_empty() || self.cut > 0 {
            self.end_line(now, emit);
        }
    }

    /// What was dropped since the last call, if anything.
    pub fn take_dropped(&mut self) -> Option<Dropped> {
        let dropped = std::mem::take(&mut self.dropped);
        (dropped != Dropped::default()).then_some(dropped)
    }

    fn end_line(&mut self, now: Instant, emit: &mut impl FnMut(&str)) {
        let cut = std::mem::take(&mut self.cut);
        if self.line.last() == Some(&b'\r') && cut == 0 {
            self.line.pop();
        }
        self.refill(now);
        let cost = self.line.len() as u64 + LINE_COST;
        if cost <= self.budget {
            self.budget -= cost;
            let text = String::from_utf8_lossy(&self.line);
            if cut > 0 {
                self.dropped.cut_lines += 1;
                self.dropped.cut_bytes += cut;
                emit(&format!("{text}… ({cut} more bytes cut)"));
            } else {
                emit(&text);
            }
        } else {
            self.dropped.lines += 1;
            self.dropped.bytes += self.line.len() as u64 + cut;
        }
        self.line.clear();
        if self.line.capacity() > MAX_LINE {
            self.line.shrink_to(MAX_LINE);
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_nanos();
        let earned = elapsed * u128::from(RATE) / 1_000_000_000;
        if earned > 0 {
            let earned = u64::try_from(earned).unwrap_or(u64::MAX);
            self.budget = self.budget.saturating_add(earned).min(BURST);
            self.refilled = now;
        }
    }
}

/// Logs `server`'s stderr until it closes (see the module docs). What was dropped is summed
/// up at the end, also when the future is dropped first (its actor stopped).
pub async fn forward(server: String, mut stderr: impl AsyncRead + Unpin) {
    let mut state = Forwarding {
        lines: StderrLines::new(Instant::now()),
        server,
    };
    let mut buf = vec![0; 8192];
    let mut summary =
        tokio::time::interval_at(tokio::time::Instant::now() + SUMMARY_EVERY, SUMMARY_EVERY);
    loop {
        tokio::select! {
            read = stderr.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => state.feed(&buf[..n]),
            },
            _ = summary.tick() => report(&state.server, state.lines.take_dropped()),
        }
    }
    let Forwarding { lines, server } = &mut state;
    lines.finish(Instant::now(), &mut |line| log(server, line));
}

/// A server's stderr being forwarded; dropping it sums up what was dropped.
struct Forwarding {
    lines: StderrLines,
    server: String,
}

impl Forwarding {
    fn feed(&mut self, chunk: &[u8]) {
        let server = &self.server;
        self.lines
            .feed(chunk, Instant::now(), &mut |line| log(server, line));
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        report(&self.server, self.lines.take_dropped());
    }
}

fn log(server: &str, line: &str) {
    tracing::info!(target: TARGET, server = %server, "{line}");
}

fn report(server: &str, dropped: Option<Dropped>) {
    let Some(d) = dropped else {
        return;
    };
    tracing::warn!(
        target: TARGET,
        server,
        dropped_lines = d.lines,
        dropped_bytes = d.bytes,
        cut_lines = d.cut_lines,
        cut_bytes = d.cut_bytes,
        "stderr past its bounds: {} lines ({} bytes) dropped, {} lines cut at {MAX_LINE} bytes",
        d.lines,
        d.bytes,
        d.cut_lines,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(lines: &mut StderrLines, chunks: &[&[u8]], now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in chunks {
            lines.feed(chunk, now, &mut |l| out.push(l.to_owned()));
        }
        out
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let now = Instant::now();
        let mut lines = StderrLines::new(now);
        let out = collect(&mut lines, &[b"one\ntw", b"o\r\n", b"three"], now);
        assert_eq!(out, ["one", "two"]);
        let mut rest = Vec::new();
        lines.finish(now, &mut |l| rest.push(l.to_owned()));
        assert_eq!(rest, ["three"]);
        assert_eq!(lines.take_dropped(), None);
    }

    #[test]
    fn an_endless_line_is_cut_and_never_buffered_past_the_limit() {
        let now = Instant::now();
        let mut lines = StderrLines::new(now);
        let chunk = vec![b'x'; 8192];
        for _ in 0..10_000 {
            lines.feed(&chunk, now, &mut |_| panic!("no line ended"));
            assert!(lines.line.capacity() <= 2 * MAX_LINE);
        }
        let mut out = Vec::new();
        lines.feed(b"\n", now, &mut |l| out.push(l.to_owned()));
        let cut = 10_000 * 8192 - MAX_LINE;
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with(&"x".repeat(MAX_LINE)));
        assert!(
            out[0].ends_with(&format!("… ({cut} more bytes cut)")),
            "{}",
            &out[0][MAX_LINE..]
        );
        let dropped = lines.take_dropped().unwrap();
        assert_eq!((dropped.cut_lines, dropped.cut_bytes), (1, cut as u64));
    }

    #[test]
    fn a_flood_is_logged_up_to_the_budget_then_counted() {
        let now = Instant::now();
        let mut lines = StderrLines::new(now);
        let line = [b"y".repeat(71).as_slice(), b"\n"].concat();
        let flood = line.repeat(100_000);
        let out = collect(&mut lines, &[&flood], now);
        let per_line = 71 + LINE_COST;
        assert_eq!(out.len() as u64, BURST / per_line);
        let dropped = lines.take_dropped().unwrap();
        assert_eq!(dropped.lines, 100_000 - out.len() as u64);
        assert_eq!(dropped.bytes, dropped.lines * 71);
        assert_eq!(lines.take_dropped(), None, "counts start again");
        // The budget comes back with time, at RATE bytes a second.
        let later = now + Duration::from_secs(10);
        let out = collect(&mut lines, &[&flood[..line.len() * 1000]], later);
        assert_eq!(out.len() as u64, (BURST % per_line + 10 * RATE) / per_line);
    }
}
