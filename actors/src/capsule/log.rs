//! The `log` import's budget: how much a capsule may write to the daemon's log, so that a
//! guest calling `log` in a loop can neither fill the disk nor drown other lines.
//!
//! Each instance has a token bucket ([`RateBudget`]): a burst of [`BURST`] lines, refilled at [`PER_SECOND`]
//! lines a second. A line over the budget is dropped and counted; the sandbox writes one
//! summary line with the count at the end of the call. A line keeps at most [`MAX_LINE`]
//! bytes, and its control characters (newlines included) are escaped, so that a guest
//! cannot forge lines of the daemon's own. At most about 10 KiB a second per capsule reach
//! the log, after the first 100 KiB.

use std::fmt::Write as _;
use std::time::Instant;

use crate::rate::RateBudget;

/// Lines a capsule may log at once.
pub const BURST: u32 = 100;
/// Lines a second the budget refills with.
pub const PER_SECOND: u32 = 10;
/// Bytes of one line kept (the rest is cut).
pub const MAX_LINE: usize = 1024;

/// A full budget for one instance.
pub(crate) fn budget(now: Instant) -> RateBudget {
    RateBudget::new(BURST, PER_SECOND, now)
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
