//! What one capsule may use (its manifest's `[limits]`): memory, fuel and the deadline of a
//! call. The manifest parser checks the bounds; the sandbox and the runner enforce them.

use std::time::Duration;

/// `[limits]`: what one capsule may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory ceiling, in 64 KiB pages.
    pub memory_pages: u32,
    /// Metering points one call may spend (a loop that never ends runs out).
    pub fuel: u64,
    /// Wall-clock deadline of one call.
    pub call_timeout: Duration,
}

impl Default for Limits {
    /// 16 pages (1 MiB), 10 million points, one second.
    fn default() -> Self {
        Self {
            memory_pages: 16,
            fuel: 10_000_000,
            call_timeout: Duration::from_secs(1),
        }
    }
}
