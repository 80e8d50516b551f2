//! MCP faults (`astrid fault mcp:files mcp:kill`): the next tool calls to a server get their
//! reply late, get a reply that is not JSON-RPC (the server's next line of stdout is
//! corrupted on its way to the SDK, as a broken server would write it), or see the server
//! killed while they are in flight. Shared by every incarnation of the server's actor, so
//! that the counts outlive the restarts a fault causes. Unarmed, each check is one atomic
//! load.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::protocol::{Fault, McpEffect};

/// What the next calls to one server meet.
#[derive(Debug, Default)]
pub struct McpFaults {
    delayed: AtomicU32,
    delay_millis: AtomicU64,
    malformed: AtomicU32,
    killed: AtomicU32,
    /// Lines of stdout still to corrupt (set when a call is sent).
    corrupt: AtomicU32,
}

/// What one call meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallFaults {
    /// Its reply waits this long first.
    pub delay: Option<Duration>,
    /// The next line the server writes is corrupted.
    pub malformed: bool,
    /// The server is killed while the call is in flight.
    pub kill: bool,
}

fn take(counter: &AtomicU32) -> bool {
    counter.load(Ordering::Acquire) > 0
        && counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
}

impl McpFaults {
    /// Arms what `fault` asks for if it is an MCP fault, or disarms everything on `clear`;
    /// answers whether it was one of those.
    pub fn inject(&self, fault: &Fault) -> bool {
        match fault {
            Fault::Mcp { effect, times } => {
                let counter = match effect {
                    McpEffect::Delay { millis } => {
                        self.delay_millis.store(*millis, Ordering::Release);
                        &self.delayed
                    }
                    McpEffect::Malformed => &self.malformed,
                    McpEffect::Kill => &self.killed,
                };
                counter.store(*times, Ordering::Release);
                true
            }
            Fault::Clear => {
                for counter in [&self.delayed, &self.malformed, &self.killed, &self.corrupt] {
                    counter.store(0, Ordering::Release);
                }
                true
            }
            _ => false,
        }
    }

    /// What the call being sent now meets (counting it against each armed fault).
    pub fn next_call(&self) -> CallFaults {
        let malformed = take(&self.malformed);
        if malformed {
            self.corrupt.fetch_add(1, Ordering::AcqRel);
        }
        CallFaults {
            delay: take(&self.delayed)
                .then(|| Duration::from_millis(self.delay_millis.load(Ordering::Acquire))),
            malformed,
            kill: take(&self.killed),
        }
    }

    /// Whether the line of stdout starting now is to be corrupted (counting it if so).
    pub fn corrupt_line(&self) -> bool {
        take(&self.corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_armed_effect_meets_as_many_calls_as_asked() {
        let faults = McpFaults::default();
        assert_eq!(faults.next_call(), CallFaults::default());
        assert!(faults.inject(&Fault::Mcp {
            effect: McpEffect::Delay { millis: 50 },
            times: 2,
        }));
        assert!(faults.inject(&Fault::Mcp {
            effect: McpEffect::Malformed,
            times: 1,
        }));
        let first = faults.next_call();
        assert_eq!(first.delay, Some(Duration::from_millis(50)));
        assert!(first.malformed && !first.kill);
        assert!(faults.corrupt_line());
        assert!(!faults.corrupt_line(), "one line per malformed call");
        let second = faults.next_call();
        assert_eq!(second.delay, Some(Duration::from_millis(50)));
        assert!(!second.malformed);
        assert_eq!(faults.next_call(), CallFaults::default());
        assert!(faults.inject(&Fault::Mcp {
            effect: McpEffect::Kill,
            times: 3,
        }));
        assert!(faults.inject(&Fault::Clear));
        assert_eq!(faults.next_call(), CallFaults::default());
        assert!(!faults.inject(&Fault::Panic));
    }
}
