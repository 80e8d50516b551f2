//! Each capsule's calls, their latency, the fuel they spent, their failures by kind, and the
//! linear memory of its live instance. A capsule's [`CapsuleMetrics`] is resolved once per
//! incarnation (when its host is made), so a call records into it with relaxed atomics only.
//! The table holds the capsules loaded now: an unloaded capsule's entry is dropped, so the
//! label set is bounded by the capsules in the capsule folders.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::histogram::Histogram;
use crate::protocol::CrashKind;

/// The entry points a call goes to, as labels (in the order of the sandbox's `Entry`).
pub(super) const ENTRIES: [&str; 3] = ["command", "event", "intercept"];

/// The kinds of failure counted, by position (`kind as usize`).
pub(super) const FAILURES: [CrashKind; 6] = [
    CrashKind::Trap,
    CrashKind::OutOfFuel,
    CrashKind::Deadline,
    CrashKind::Garbage,
    CrashKind::Injected,
    CrashKind::Start,
];

/// One capsule's counters.
#[derive(Debug)]
pub struct CapsuleMetrics {
    /// By entry point ([`ENTRIES`]).
    calls: [AtomicU64; 3],
    latency: Histogram,
    fuel: AtomicU64,
    /// By kind ([`FAILURES`]).
    failures: [AtomicU64; 6],
    memory: AtomicU64,
}

impl Default for CapsuleMetrics {
    fn default() -> Self {
        Self {
            calls: Default::default(),
            latency: Histogram::latency(),
            fuel: AtomicU64::new(0),
            failures: Default::default(),
            memory: AtomicU64::new(0),
        }
    }
}

impl CapsuleMetrics {
    /// Records a call of entry point `entry` (`command` 0, `event` 1, `intercept` 2, as the
    /// sandbox numbers them) that took `elapsed` and spent `fuel` metering points.
    pub fn call(&self, entry: usize, elapsed: Duration, fuel: u64) {
        self.calls[entry].fetch_add(1, Relaxed);
        self.latency.observe_duration(elapsed);
        self.fuel.fetch_add(fuel, Relaxed);
    }

    /// Records a failure that ended an incarnation.
    pub fn failed(&self, kind: CrashKind) {
        self.failures[kind as usize].fetch_add(1, Relaxed);
    }

    /// Sets the size of the live instance's linear memory (0 when there is none).
    pub fn set_memory(&self, bytes: u64) {
        self.memory.store(bytes, Relaxed);
    }
}

/// The loaded capsules' counters, by name.
#[derive(Debug, Default)]
pub struct Capsules(Mutex<BTreeMap<String, Arc<CapsuleMetrics>>>);

impl Capsules {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<CapsuleMetrics>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Capsule `name`'s counters (made at its first load; kept across its restarts).
    pub fn of(&self, name: &str) -> Arc<CapsuleMetrics> {
        Arc::clone(self.lock().entry(name.to_owned()).or_default())
    }

    /// Drops the counters of a capsule that is unloaded (or reloaded: they start again).
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    pub(super) fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let table: Vec<(String, Arc<CapsuleMetrics>)> = self
            .lock()
            .iter()
            .map(|(name, m)| (name.clone(), Arc::clone(m)))
            .collect();
        let mut family = encoder.encode_descriptor(
            "astrid_capsule_calls",
            "Calls into each capsule's guest, by entry point",
            None,
            MetricType::Counter,
        )?;
        for (name, m) in &table {
            for (entry, count) in ENTRIES.iter().zip(&m.calls) {
                let labels = [("capsule", name.as_str()), ("entry", entry)];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count.load(Relaxed), None)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "astrid_capsule_call_duration_seconds",
            "Time each capsule's guest took per call",
            None,
            MetricType::Histogram,
        )?;
        for (name, m) in &table {
            let labels = [("capsule", name.as_str())];
            m.latency.encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "astrid_capsule_fuel",
            "Metering points each capsule's calls spent",
            None,
            MetricType::Counter,
        )?;
        for (name, m) in &table {
            let labels = [("capsule", name.as_str())];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&m.fuel.load(Relaxed), None)?;
        }
        let mut family = encoder.encode_descriptor(
            "astrid_capsule_failures",
            "Failures that ended a capsule's incarnation, by kind (trap, out_of_fuel, deadline, garbage, injected, start)",
            None,
            MetricType::Counter,
        )?;
        for (name, m) in &table {
            for (kind, count) in FAILURES.iter().zip(&m.failures) {
                let labels = [("capsule", name.as_str()), ("kind", kind.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count.load(Relaxed), None)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "astrid_capsule_memory_bytes",
            "Linear memory of each capsule's live instance (0 while it has none: idle, or restarting)",
            None,
            MetricType::Gauge,
        )?;
        for (name, m) in &table {
            let labels = [("capsule", name.as_str())];
            family
                .encode_family(&labels)?
                .encode_gauge(&m.memory.load(Relaxed))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_listed_at_their_own_index() {
        for (i, kind) in FAILURES.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
    }

    #[test]
    fn an_unloaded_capsule_is_forgotten() {
        let capsules = Capsules::default();
        capsules.of("a").call(0, Duration::from_micros(5), 7);
        let again = capsules.of("a");
        assert_eq!(again.fuel.load(Relaxed), 7, "the same counters");
        capsules.forget("a");
        assert_eq!(capsules.of("a").fuel.load(Relaxed), 0, "a new entry");
    }
}
