//! A histogram recorded with two relaxed atomic additions per observation (its bucket and
//! its sum), encoded through `prometheus-client`'s encoder. The crate's own `Histogram`
//! takes a mutex on every observation, which the request path cannot afford.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Upper bounds of latencies, in nanoseconds: 10 µs to 10 s (encoded in seconds).
pub const LATENCY_BOUNDS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds of sizes (batches in one journal sync): 1 to 4096, by powers of 2.
pub const SIZE_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Fixed buckets of `u64` observations (nanoseconds, or counts).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Observations per bucket, not cumulative; the last bucket is `+Inf`.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations, in the recorded unit.
    sum: AtomicU64,
    /// Recorded units per encoded unit (1e9 for nanoseconds encoded as seconds).
    scale: f64,
}

impl Histogram {
    /// Latencies, recorded in nanoseconds and encoded in seconds.
    pub fn latency() -> Self {
        Self::new(LATENCY_BOUNDS, 1e9)
    }

    /// Sizes (counts), encoded as they are.
    pub fn sizes() -> Self {
        Self::new(SIZE_BOUNDS, 1.0)
    }

    fn new(bounds: &'static [u64], scale: f64) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    /// Records a duration (a latency histogram).
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// `(upper bound in the encoded unit, observations in the bucket)` per bucket (not
    /// cumulative: the encoder sums them), `+Inf` last.
    #[allow(
        clippy::cast_precision_loss,
        reason = "bounds are at most 1e10, exact in an f64"
    )]
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let bound = self
                    .bounds
                    .get(i)
                    .map_or(f64::INFINITY, |&b| b as f64 / self.scale);
                (bound, count.load(Relaxed))
            })
            .collect()
    }
}

impl EncodeMetric for Histogram {
    #[allow(
        clippy::cast_precision_loss,
        reason = "a sum past 2^53 ns (104 days of latency) may lose nanoseconds"
    )]
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets = self.buckets();
        let count = buckets.iter().map(|&(_, n)| n).sum();
        let sum = self.sum.load(Relaxed) as f64 / self.scale;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_that_holds_it() {
        let h = Histogram::sizes();
        for value in [0, 1, 2, 3, 4096, 4097] {
            h.observe(value);
        }
        let buckets = h.buckets();
        // le=1: 0 and 1; le=2: 2; le=4: 3; le=4096: 4096; +Inf: 4097.
        assert_eq!(buckets[0], (1.0, 2));
        assert_eq!(buckets[1], (2.0, 1));
        assert_eq!(buckets[2], (4.0, 1));
        assert_eq!(buckets[SIZE_BOUNDS.len() - 1], (4096.0, 1));
        assert_eq!(buckets[SIZE_BOUNDS.len()].1, 1);
        assert!(buckets[SIZE_BOUNDS.len()].0.is_infinite());
        assert_eq!(h.count(), 6);
    }

    #[test]
    fn latencies_are_encoded_in_seconds() {
        let h = Histogram::latency();
        h.observe_duration(Duration::from_micros(30));
        let buckets = h.buckets();
        assert_eq!(buckets[1], (25e-6, 0));
        assert_eq!(buckets[2], (50e-6, 1));
        assert_eq!(h.count(), 1);
    }
}
