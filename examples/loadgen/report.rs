//! What one run measured ([`Report`]): rate, latency percentiles, CPU time per request,
//! printed one line per run.

use std::time::Duration;

/// What one benchmark run measured.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) label: String,
    pub(crate) requests: usize,
    pub(crate) elapsed: Duration,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    /// CPU time used per request by the daemon and by this load generator, in µs.
    pub(crate) cpu_us: Option<(f64, f64)>,
}

impl Report {
    pub(crate) fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn print(&self) {
        let cpu = self.cpu_us.map_or(String::new(), |(daemon, us)| {
            format!("   cpu/req daemon {daemon:.1} us, loadgen {us:.1} us")
        });
        println!(
            "{:<44} {:>10.0} req/s   p50 {:>7.1} us   p99 {:>7.1} us   p99.9 {:>7.1} us{cpu}",
            self.label,
            self.rate(),
            self.p50_us,
            self.p99_us,
            self.p999_us
        );
    }
}

pub(crate) fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)])
}
