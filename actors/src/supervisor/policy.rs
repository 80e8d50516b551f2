//! Restart policy as plain data and arithmetic, with no actors involved: the
//! OTP intensity/period budget, exponential backoff, and how an exit reason is judged.
//! Time is passed in (`now`), so every rule here is unit-tested without waiting.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::types::RestartType;

/// A supervisor's restart budget and backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// At most this many restarts ...
    pub intensity: u32,
    /// ... within this window; one more and the supervisor gives up (escalates).
    pub period: Duration,
    /// Delay before the second consecutive restart of a child; it doubles each time after.
    /// The first restart is immediate.
    pub backoff_base: Duration,
    /// Ceiling of the backoff delay.
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    /// Three restarts in five seconds; backoff 50 ms doubling to 5 s.
    fn default() -> Self {
        Self {
            intensity: 3,
            period: Duration::from_secs(5),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Why a child's actor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// It finished its work and said so.
    Normal,
    /// Its supervisor asked it to stop.
    Shutdown,
    /// It stopped without being asked (for example an injected `stop`).
    Stopped,
    /// A handler panicked; the message is kept.
    Panicked(String),
    /// It could not be started, or failed in another way.
    Failed(String),
}

impl ExitReason {
    /// Normal and requested exits are not failures.
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, Self::Normal | Self::Shutdown)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("exited normally"),
            Self::Shutdown => f.write_str("shut down"),
            Self::Stopped => f.write_str("stopped unexpectedly"),
            Self::Panicked(msg) => write!(f, "panicked: {msg}"),
            Self::Failed(msg) => write!(f, "failed: {msg}"),
        }
    }
}

/// Whether a child of `restart` type that ended for `reason` should be started again.
pub fn should_restart(restart: RestartType, reason: &ExitReason) -> bool {
    match restart {
        RestartType::Permanent => *reason != ExitReason::Shutdown,
        RestartType::Transient => reason.is_abnormal(),
        RestartType::Temporary => false,
    }
}

/// The sliding window of recent restarts, shared by all children of one supervisor (as in
/// OTP's `supervisor.erl`).
#[derive(Debug, Clone, Default)]
pub struct RestartIntensity {
    restarts: VecDeque<Instant>,
}

impl RestartIntensity {
    /// Records a restart at `now`. Returns `false` when it exceeds the budget: more than
    /// `intensity` restarts within `period`.
    pub fn record(&mut self, now: Instant, policy: &RestartPolicy) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) >= policy.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() <= policy.intensity as usize
    }

    /// Restarts still inside the window at `now`.
    pub fn in_window(&self, now: Instant, policy: &RestartPolicy) -> usize {
        self.restarts
            .iter()
            .filter(|&&t| now.saturating_duration_since(t) < policy.period)
            .count()
    }
}

/// Exponential backoff for one child: the first restart is immediate, then `base`, `2*base`,
/// ... up to `max`. A child that stayed up for a whole `period` starts over at zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    consecutive: u32,
}

impl Backoff {
    /// The delay before restarting a child that ran for `uptime`, and counts the restart.
    pub fn next_delay(&mut self, uptime: Duration, policy: &RestartPolicy) -> Duration {
        if uptime >= policy.period {
            self.consecutive = 0;
        }
        let delay = match self.consecutive {
            0 => Duration::ZERO,
            n => {
                let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
                policy
                    .backoff_base
                    .saturating_mul(factor)
                    .min(policy.backoff_max)
            }
        };
        self.consecutive = self.consecutive.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            intensity: 2,
            period: Duration::from_secs(10),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
        }
    }

    #[test]
    fn restart_types_follow_otp() {
        use ExitReason::*;
        let panic = Panicked("x".into());
        assert!(should_restart(RestartType::Permanent, &Normal));
        assert!(should_restart(RestartType::Permanent, &panic));
        assert!(!should_restart(RestartType::Permanent, &Shutdown));
        assert!(!should_restart(RestartType::Transient, &Normal));
        assert!(should_restart(RestartType::Transient, &Stopped));
        assert!(should_restart(RestartType::Transient, &Failed("x".into())));
        assert!(!should_restart(RestartType::Temporary, &panic));
    }

    #[test]
    fn intensity_allows_the_budget_then_refuses() {
        let p = policy();
        let t0 = Instant::now();
        let mut w = RestartIntensity::default();
        assert!(w.record(t0, &p));
        assert!(w.record(t0 + Duration::from_secs(1), &p));
        assert!(!w.record(t0 + Duration::from_secs(2), &p));
    }

    #[test]
    fn restarts_older_than_the_period_leave_the_window() {
        let p = policy();
        let t0 = Instant::now();
        let mut w = RestartIntensity::default();
        assert!(w.record(t0, &p));
        assert!(w.record(t0 + Duration::from_secs(5), &p));
        // The first restart is exactly one period old: out of the window.
        assert!(w.record(t0 + Duration::from_secs(10), &p));
        assert_eq!(w.in_window(t0 + Duration::from_secs(10), &p), 2);
        assert!(!w.record(t0 + Duration::from_secs(11), &p));
    }

    #[test]
    fn backoff_is_immediate_then_doubles_to_the_cap() {
        let p = policy();
        let mut b = Backoff::default();
        let short = Duration::from_millis(1);
        let delays: Vec<_> = (0..5)
            .map(|_| b.next_delay(short, &p).as_millis())
            .collect();
        assert_eq!(delays, [0, 100, 200, 350, 350]);
    }

    #[test]
    fn a_long_uptime_resets_the_backoff() {
        let p = policy();
        let mut b = Backoff::default();
        b.next_delay(Duration::ZERO, &p);
        assert_eq!(b.next_delay(Duration::ZERO, &p), Duration::from_millis(100));
        assert_eq!(b.next_delay(p.period, &p), Duration::ZERO);
    }

    #[test]
    fn huge_restart_counts_do_not_overflow() {
        let p = policy();
        let mut b = Backoff { consecutive: 200 };
        assert_eq!(b.next_delay(Duration::ZERO, &p), p.backoff_max);
    }
}
