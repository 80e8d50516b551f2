//! The daemon's metrics: a plain shared registry, not an actor. [`Metrics`] is made at boot
//! and reached, as an `Arc`, from where things happen: the sessions' answers (requests by
//! kind and outcome, with latencies), each capsule's calls, each MCP server's calls, and
//! the ledger's syncs. Recording is a few relaxed atomic additions into counters resolved
//! once (per kind, per capsule, per server), never a lookup per event. What other parts
//! already count (the bus, the store, the connection table, the tree's restarts) is read when
//! the metrics are asked for ([`Snapshot`]). [`Metrics::encode`] writes the OpenMetrics text
//! with `prometheus-client`'s encoder; the README's "Metrics" section lists the families.
//!
//! Nothing here imports another kernel module: every floor may record into it.

mod capsules;
mod histogram;
mod ledger;
mod mcp;
mod requests;
mod snapshot;

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

pub use self::capsules::{CapsuleMetrics, Capsules};
pub use self::histogram::{Histogram, LATENCY_BOUNDS, SIZE_BOUNDS};
pub use self::ledger::LedgerMetrics;
pub use self::mcp::{McpCalls, McpOutcome, McpServers};
pub use self::requests::{Requests, Timer, UNDECODED};
pub use self::snapshot::{ConnectionCounts, Snapshot};

/// Everything the kernel counts itself (see the module docs).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered, by kind and outcome.
    pub requests: Requests,
    /// The loaded capsules' calls.
    pub capsules: Capsules,
    /// The configured MCP servers' calls.
    pub mcp: McpServers,
    /// The ledger's syncs (shared with the ledger's syncer thread).
    pub ledger: Arc<LedgerMetrics>,
}

/// The live counters, as a collector.
#[derive(Debug)]
struct Live(Arc<Metrics>);

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.requests.encode(&mut encoder)?;
        self.0.capsules.encode(&mut encoder)?;
        self.0.mcp.encode(&mut encoder)?;
        self.0.ledger.encode(&mut encoder)
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        Self::encode(self, &mut encoder)
    }
}

impl Metrics {
    /// Metrics whose ledger counters are `ledger` (the ledger's own).
    pub fn new(ledger: Arc<LedgerMetrics>) -> Self {
        Self {
            ledger,
            ..Self::default()
        }
    }

    /// The OpenMetrics text of the live counters and of `snapshot`, ending in `# EOF`.
    pub fn encode(self: &Arc<Self>, snapshot: Snapshot) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Live(Arc::clone(self))));
        registry.register_collector(Box::new(snapshot));
        let mut text = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            // Writing into a `String` cannot fail; a bug in an encoder might.
            tracing::error!("cannot encode the metrics: {e}");
            text.clear();
            text.push_str("# EOF\n");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::{ErrorCode, Request};

    #[test]
    fn the_text_counts_requests_by_kind_and_outcome_and_ends_in_eof() {
        let metrics = Arc::new(Metrics::default());
        for _ in 0..3 {
            metrics
                .requests
                .finish(Timer::start(&Request::Ping), Ok(()));
        }
        let kv = Request::KvGet { key: "k".into() };
        metrics
            .requests
            .finish(Timer::start(&kv), Err(ErrorCode::InvalidArgument));
        metrics.requests.undecoded(ErrorCode::BadRequest);
        metrics
            .capsules
            .of("echo")
            .call(0, Duration::from_micros(40), 120);
        metrics.ledger.synced(3, Duration::from_micros(300), true);
        let text = metrics.encode(Snapshot {
            restarts: vec![("bus".into(), 2)],
            ..Snapshot::default()
        });
        for line in [
            "astrid_requests_total{kind=\"Ping\",outcome=\"ok\"} 3",
            "astrid_requests_total{kind=\"KvGet\",outcome=\"invalid_argument\"} 1",
            "astrid_requests_total{kind=\"undecoded\",outcome=\"bad_request\"} 1",
            "astrid_request_duration_seconds_count{kind=\"Ping\"} 3",
            "astrid_capsule_calls_total{capsule=\"echo\",entry=\"command\"} 1",
            "astrid_capsule_fuel_total{capsule=\"echo\"} 120",
            "astrid_ledger_sync_batches_bucket{le=\"2.0\"} 0",
            "astrid_ledger_sync_batches_bucket{le=\"4.0\"} 1",
            "astrid_ledger_sync_batches_bucket{le=\"+Inf\"} 1",
            "astrid_actor_restarts_total{actor=\"bus\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
