//! The faults armed on one capsule that outlive its incarnations: the `delay` fault's gate,
//! which holds every call into the guest, and the import faults, which make named host
//! imports fail or slow down. Shared by every instance of the capsule through its
//! [`Host`](super::host::Host), as the backlog is, so that a fault stays armed across
//! the restarts it causes, until its span or count ends or `clear` disarms it.
//!
//! Import faults are consulted by every host call (see `imports.rs`, `hook`): with none
//! armed that costs one atomic load. Several may be armed at once, one per import (arming
//! another on the same import replaces it). A fault with a probability draws from its own
//! generator, seeded by the fault's `seed`, so that the same seed affects the same calls
//! (counted from when it was armed) on every run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::protocol::{Fault, ImportEffect, ImportFault};
use crate::supervisor::DelayGate;

/// A capsule's armed faults.
#[derive(Debug, Default)]
pub struct CapsuleFaults {
    delay: DelayGate,
    /// Whether `imports` holds any fault (read on every host call without the lock).
    imports_armed: AtomicBool,
    imports: Mutex<Vec<ArmedImport>>,
}

/// One armed import fault, and what is left of it.
#[derive(Debug)]
struct ArmedImport {
    import: String,
    effect: ImportEffect,
    /// Calls it may still affect; none: until cleared.
    left: Option<u32>,
    probability: Option<f64>,
    draws: SplitMix64,
}

impl ArmedImport {
    fn new(fault: &ImportFault) -> Self {
        Self {
            import: fault.import.clone(),
            effect: fault.effect,
            left: fault.times,
            probability: fault.probability,
            draws: SplitMix64::new(fault.seed),
        }
    }

    /// Whether a call now is affected; spends one of its count if so.
    fn strikes(&mut self) -> bool {
        if let Some(p) = self.probability
            && self.draws.unit() >= p
        {
            return false;
        }
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(1);
        }
        true
    }

    fn spent(&self) -> bool {
        self.left == Some(0)
    }
}

impl CapsuleFaults {
    /// Arms what `fault` asks for, if it is one of the faults kept here; answers whether it
    /// was. `clear` disarms them all.
    pub fn arm(&self, fault: &Fault) -> bool {
        match fault {
            Fault::Delay { millis, for_millis } => {
                self.delay.arm(
                    Duration::from_millis(*millis),
                    Duration::from_millis(*for_millis),
                );
                true
            }
            Fault::Import(import) => {
                let mut armed = self.lock();
                armed.retain(|a| a.import != import.import);
                armed.push(ArmedImport::new(import));
                self.imports_armed.store(true, Ordering::Release);
                true
            }
            Fault::Clear => {
                self.delay.disarm();
                let mut armed = self.lock();
                armed.clear();
                self.imports_armed.store(false, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// How long a call into the guest that starts now waits first.
    pub fn delay(&self) -> Option<Duration> {
        self.delay.current()
    }

    /// What an armed fault does to a call of `import` made now, if one strikes it. A
    /// counted fault disarms itself after its last call.
    pub fn on_import(&self, import: &str) -> Option<ImportEffect> {
        if !self.imports_armed.load(Ordering::Acquire) {
            return None;
        }
        let mut armed = self.lock();
        let at = armed.iter().position(|a| a.import == import)?;
        let fault = &mut armed[at];
        let effect = fault.strikes().then_some(fault.effect);
        if fault.spent() {
            armed.remove(at);
            if armed.is_empty() {
                self.imports_armed.store(false, Ordering::Release);
            }
        }
        effect
    }

    /// The imports with a fault armed now (for tests and logs).
    pub fn armed_imports(&self) -> Vec<String> {
        self.lock().iter().map(|a| a.import.clone()).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ArmedImport>> {
        self.imports.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `SplitMix64` generator (Steele, Lea and Flood, 2014): a few lines, the same sequence
/// for a seed on every platform and with every dependency version, which a chaos plan
/// replayed from its seed relies on.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number drawn uniformly from `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits, exactly representable, over 2^53.
        #[allow(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
        let top = (self.next_u64() >> 11) as f64;
        top / 9_007_199_254_740_992.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(name: &str, code: i32, times: Option<u32>, p: Option<f64>, seed: u64) -> Fault {
        Fault::Import(ImportFault {
            import: name.into(),
            effect: ImportEffect::Fail { code },
            times,
            probability: p,
            seed,
        })
    }

    #[allow(
        clippy::unnecessary_wraps,
        reason = "compared with `on_import`'s answer"
    )]
    fn fail(code: i32) -> Option<ImportEffect> {
        Some(ImportEffect::Fail { code })
    }

    #[test]
    fn a_counted_fault_strikes_that_many_calls_of_its_import_then_disarms() {
        let faults = CapsuleFaults::default();
        assert_eq!(faults.on_import("kv_put"), None, "nothing armed");
        assert!(faults.arm(&import("kv_put", -5, Some(2), None, 0)));
        assert_eq!(faults.on_import("kv_get"), None, "another import");
        assert_eq!(faults.on_import("kv_put"), fail(-5));
        assert_eq!(faults.on_import("kv_put"), fail(-5));
        assert_eq!(faults.on_import("kv_put"), None, "spent");
        assert!(faults.armed_imports().is_empty());
    }

    #[test]
    fn an_uncounted_fault_lasts_until_cleared_and_clear_disarms_everything() {
        let faults = CapsuleFaults::default();
        faults.arm(&import("kv_put", -1, None, None, 0));
        let delay = Fault::Import(ImportFault {
            import: "vfs_read".into(),
            effect: ImportEffect::Delay { millis: 5 },
            times: None,
            probability: None,
            seed: 0,
        });
        faults.arm(&delay);
        faults.arm(&Fault::Delay {
            millis: 10,
            for_millis: 60_000,
        });
        for _ in 0..100 {
            assert_eq!(faults.on_import("kv_put"), fail(-1));
        }
        assert_eq!(
            faults.on_import("vfs_read"),
            Some(ImportEffect::Delay { millis: 5 })
        );
        assert!(faults.delay().is_some());
        assert!(faults.arm(&Fault::Clear));
        assert_eq!(faults.on_import("kv_put"), None);
        assert_eq!(faults.on_import("vfs_read"), None);
        assert_eq!(faults.delay(), None);
    }

    #[test]
    fn a_new_fault_on_the_same_import_replaces_the_old_one() {
        let faults = CapsuleFaults::default();
        faults.arm(&import("publish", -1, Some(1000), None, 0));
        faults.arm(&import("kv_get", -2, None, None, 0));
        faults.arm(&import("publish", -4, Some(1), None, 0));
        assert_eq!(faults.armed_imports(), ["kv_get", "publish"]);
        assert_eq!(faults.on_import("publish"), fail(-4));
        assert_eq!(faults.on_import("publish"), None, "the new count, spent");
        assert_eq!(faults.on_import("kv_get"), fail(-2), "the other stays");
    }

    /// Which of `n` calls a fault with probability `p` and seed `seed` strikes.
    fn pattern(p: f64, seed: u64, n: usize) -> Vec<bool> {
        let faults = CapsuleFaults::default();
        faults.arm(&import("kv_put", -5, None, Some(p), seed));
        (0..n)
            .map(|_| faults.on_import("kv_put").is_some())
            .collect()
    }

    #[test]
    fn a_probability_is_reproducible_from_its_seed_and_roughly_right() {
        let a = pattern(0.5, 7, 2000);
        assert_eq!(a, pattern(0.5, 7, 2000), "the same seed, the same calls");
        assert_ne!(a, pattern(0.5, 8, 2000), "another seed, other calls");
        let hits = a.iter().filter(|&&hit| hit).count();
        assert!((900..1100).contains(&hits), "{hits} of 2000 at p=0.5");
        assert!(pattern(1.0, 3, 100).iter().all(|&hit| hit));
        let rare = pattern(0.01, 3, 2000).iter().filter(|&&hit| hit).count();
        assert!((5..60).contains(&rare), "{rare} of 2000 at p=0.01");
    }

    #[test]
    fn a_probability_spends_the_count_only_on_the_calls_it_strikes() {
        let faults = CapsuleFaults::default();
        faults.arm(&import("kv_put", -5, Some(3), Some(0.5), 11));
        let mut struck = 0;
        for _ in 0..200 {
            if faults.on_import("kv_put").is_some() {
                struck += 1;
            }
        }
        assert_eq!(struck, 3);
    }

    #[test]
    fn splitmix_gives_its_published_sequence() {
        // The first outputs for seed 1234567, as in the reference implementation.
        let mut g = SplitMix64::new(1_234_567);
        assert_eq!(g.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(g.next_u64(), 3_203_168_211_198_807_973);
        let mut g = SplitMix64::new(0);
        for _ in 0..1000 {
            let u = g.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
