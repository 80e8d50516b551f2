//! The `log` import's budget: how much a capsule may write to the daemon's log, so that a
//! guest calling `log` in a loop can neither fill the disk nor drown other lines.
//!
//! Each instance has a token bucket: a burst of [`BURST`] lines, refilled at [`PER_SECOND`]
//! lines a second. A line over the budget is dropped and counted; the sandbox writes one
//! summary line with the count at the end of the call. A line keeps at most [`MAX_LINE`]
//! bytes, and its control characters (newlines included) are escaped, so that a guest
//! cannot forge lines of the daemon's own. At most about 10 KiB a second per capsule reach
//! the log, after the first 100 KiB.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Lines a capsule may log at once.
pub const BURST: u32 = 100;
/// Lines a second the budget refills with.
pub const PER_SECOND: u32 = 10;
/// Bytes of one line kept (the rest is cut).
pub const MAX_LINE: usize = 1024;

/// One instance's log budget.
#[derive(Debug)]
pub(crate) struct LogBudget {
    available: u32,
    /// When `available` was last brought up to date.
    refilled_at: Instant,
    dropped: u64,
}

impl LogBudget {
    /// A full budget.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            available: BURST,
            refilled_at: now,
            dropped: 0,
        }
    }

    /// Whether a line may be written at `now`; a refused one is counted as dropped.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.available > 0 {
            self.available -= 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Lines dropped since the last call; resets the count.
    pub(crate) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let gained = elapsed.as_millis() * u128::from(PER_SECOND) / 1000;
        if gained == 0 {
            return;
        }
        let total = u128::from(self.available) + gained;
        if total >= u128::from(BURST) {
            self.available = BURST;
            self.refilled_at = now;
        } else {
            // `total` < BURST, so it fits; time not yet worth a line is kept.
            self.available = u32::try_from(total).unwrap_or(BURST);
            let spent = gained * 1000 / u128::from(PER_SECOND);
            self.refilled_at += Duration::from_millis(u64::try_from(spent).unwrap_or(0));
        }
    }
}

/// The text of a guest's line as it goes to the log: invalid UTF-8 replaced, control
/// characters escaped (`\n`, `\u{1b}`...), at most [`MAX_LINE`] bytes of it kept.
pub(crate) fn sanitize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LINE)]);
    let mut line = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(line, "{}", c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let start = Instant::now();
        let mut budget = LogBudget::new(start);
        for _ in 0..BURST {
            assert!(budget.admit(start));
        }
        assert!(!budget.admit(start));
        assert!(!budget.admit(start + Duration::from_millis(99)));
        assert_eq!(budget.take_dropped(), 2);
        assert_eq!(budget.take_dropped(), 0);
        // A tenth of a second is worth one line, kept to the millisecond.
        assert!(budget.admit(start + Duration::from_millis(100)));
        assert!(!budget.admit(start + Duration::from_millis(150)));
        assert!(budget.admit(start + Duration::from_millis(200)));
        assert_eq!(budget.take_dropped(), 1);
        // A long pause refills to the burst, not beyond.
        let later = start + Duration::from_hours(1);
        let admitted = (0..BURST * 2).filter(|_| budget.admit(later)).count();
        assert_eq!(admitted, BURST as usize);
        assert_eq!(budget.take_dropped(), u64::from(BURST));
    }

    #[test]
    fn lines_are_cut_and_cannot_forge_others() {
        assert_eq!(sanitize(b"plain"), "plain");
        assert_eq!(
            sanitize(b"one\n2026-01-01 INFO forged\r\x1b[31m"),
            "one\\n2026-01-01 INFO forged\\r\\u{1b}[31m"
        );
        assert_eq!(sanitize(&[b'x'; 5000]).len(), MAX_LINE);
        assert_eq!(sanitize(b"bad \xff utf-8"), "bad \u{fffd} utf-8");
    }
}
