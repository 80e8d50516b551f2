//! A token bucket: how many times something may happen at once, then how many times a
//! second. It bounds what a capsule can make the daemon write about it, however fast it
//! calls: its log lines (`capsule/log.rs`) and the audit entries of its denials (`caps`).
//! What is over the budget is counted, for one summary instead.

use std::time::{Duration, Instant};

/// One budget.
#[derive(Debug, Clone)]
pub struct RateBudget {
    burst: u32,
    per_second: u32,
    available: u32,
    /// When `available` was last brought up to date.
    refilled_at: Instant,
    dropped: u64,
}

impl RateBudget {
    /// A full budget of `burst`, refilled at `per_second` (at least 1).
    pub fn new(burst: u32, per_second: u32, now: Instant) -> Self {
        Self {
            burst,
            per_second: per_second.max(1),
            available: burst,
            refilled_at: now,
            dropped: 0,
        }
    }

    /// Whether one more may happen at `now`; a refused one is counted as dropped.
    pub fn admit(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.available > 0 {
            self.available -= 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// How many were refused since the last time this was asked; resets the count.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Whether the budget is whole again at `now`, with nothing dropped left to tell.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.available == self.burst && self.dropped == 0
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let gained = elapsed.as_millis() * u128::from(self.per_second) / 1000;
        if gained == 0 {
            return;
        }
        let total = u128::from(self.available) + gained;
        if total >= u128::from(self.burst) {
            self.available = self.burst;
            self.refilled_at = now;
        } else {
            // Below `burst`, so it fits; time not yet worth one more is kept.
            self.available = u32::try_from(total).unwrap_or(self.burst);
            let spent = gained * 1000 / u128::from(self.per_second);
            self.refilled_at += Duration::from_millis(u64::try_from(spent).unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let start = Instant::now();
        let mut budget = RateBudget::new(100, 10, start);
        for _ in 0..100 {
            assert!(budget.admit(start));
        }
        assert!(!budget.admit(start));
        assert!(!budget.admit(start + Duration::from_millis(99)));
        assert_eq!(budget.take_dropped(), 2);
        assert_eq!(budget.take_dropped(), 0);
        // A tenth of a second is worth one more, kept to the millisecond.
        assert!(budget.admit(start + Duration::from_millis(100)));
        assert!(!budget.admit(start + Duration::from_millis(150)));
        assert!(budget.admit(start + Duration::from_millis(200)));
        assert_eq!(budget.take_dropped(), 1);
        // A long pause refills to the burst, not beyond.
        let later = start + Duration::from_hours(1);
        let admitted = (0..200).filter(|_| budget.admit(later)).count();
        assert_eq!(admitted, 100);
        assert!(!budget.is_full(later));
        assert_eq!(budget.take_dropped(), 100);
        assert!(budget.is_full(later + Duration::from_secs(10)));
    }
}
