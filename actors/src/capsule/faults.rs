//! The faults armed on one capsule that outlive its incarnations: the `delay` fault's gate,
//! which holds every call into the guest. Shared by every instance of the capsule through
//! its [`Host`](super::host::Host), as the backlog is, so that a fault stays armed across
//! the restarts it causes, until its span or count ends or `clear` disarms it.

use std::time::Duration;

use crate::protocol::Fault;
use crate::supervisor::DelayGate;

/// A capsule's armed faults.
#[derive(Debug, Default)]
pub struct CapsuleFaults {
    delay: DelayGate,
}

impl CapsuleFaults {
    /// Arms what `fault` asks for, if it is one of the faults kept here; answers whether it
    /// was.
    pub fn arm(&self, fault: &Fault) -> bool {
        match fault {
            Fault::Delay { millis, for_millis } => {
                self.delay.arm(
                    Duration::from_millis(*millis),
                    Duration::from_millis(*for_millis),
                );
                true
            }
            Fault::Clear => {
                self.delay.disarm();
                true
            }
            _ => false,
        }
    }

    /// How long a call into the guest that starts now waits first.
    pub fn delay(&self) -> Option<Duration> {
        self.delay.current()
    }
}
