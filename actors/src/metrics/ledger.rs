//! The ledger's group commit: journal syncs (one `write` and one `fdatasync` each), how many
//! batches each carried, and how long each took. Recorded by the syncer thread.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::histogram::Histogram;

/// The syncer's counters.
#[derive(Debug)]
pub struct LedgerMetrics {
    syncs: AtomicU64,
    failed: AtomicU64,
    batches: Histogram,
    duration: Histogram,
}

impl Default for LedgerMetrics {
    fn default() -> Self {
        Self {
            syncs: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            batches: Histogram::sizes(),
            duration: Histogram::latency(),
        }
    }
}

impl LedgerMetrics {
    /// Records one journal write and sync carrying `batches` batches, and whether it failed.
    pub fn synced(&self, batches: usize, elapsed: Duration, ok: bool) {
        self.syncs.fetch_add(1, Relaxed);
        if !ok {
            self.failed.fetch_add(1, Relaxed);
        }
        self.batches
            .observe(u64::try_from(batches).unwrap_or(u64::MAX));
        self.duration.observe_duration(elapsed);
    }

    pub(super) fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encoder
            .encode_descriptor(
                "astrid_ledger_syncs",
                "Journal writes, each synced with one fdatasync (group commit)",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&self.syncs.load(Relaxed), None)?;
        encoder
            .encode_descriptor(
                "astrid_ledger_sync_failures",
                "Journal writes or syncs that failed (their batches were failed)",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&self.failed.load(Relaxed), None)?;
        self.batches.encode(encoder.encode_descriptor(
            "astrid_ledger_sync_batches",
            "Batches (key-value writes and audit entries of one commit) carried by each sync",
            None,
            MetricType::Histogram,
        )?)?;
        self.duration.encode(encoder.encode_descriptor(
            "astrid_ledger_sync_duration_seconds",
            "Time each journal write and sync took",
            None,
            MetricType::Histogram,
        )?)
    }
}
