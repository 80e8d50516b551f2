//! What other parts of the kernel already count, read when the metrics are asked for rather
//! than counted twice: the bus's and the store's statistics, the connection table, and the
//! restart counts of the supervision tree.

use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::protocol::{BusStats, StoreStats};

/// The connection table's counts.
#[derive(Debug, Clone, Default)]
pub struct ConnectionCounts {
    /// Connections accepted since boot.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Of those, connections still in their handshake.
    pub handshaking: u64,
    /// Connections refused since boot, by reason (an error code, or `other_user`).
    pub refused: Vec<(&'static str, u64)>,
}

/// Counts read at encode time (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Time since the daemon started.
    pub uptime: Duration,
    /// The bus's statistics (`None` while the bus is down).
    pub bus: Option<BusStats>,
    /// The store's statistics (`None` while the store is down).
    pub store: Option<StoreStats>,
    /// The connection table.
    pub connections: ConnectionCounts,
    /// Every actor of the supervision tree but the sessions, with its restarts.
    pub restarts: Vec<(String, u32)>,
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

impl Snapshot {
    pub(super) fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encoder
            .encode_descriptor(
                "astrid_uptime_seconds",
                "Time since the daemon started",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.uptime.as_secs_f64())?;
        let mut family = encoder.encode_descriptor(
            "astrid_actor_restarts",
            "Restarts of each actor of the supervision tree (capsule:<name> and mcp:<server> included) by its supervisor",
            None,
            MetricType::Counter,
        )?;
        for (actor, restarts) in &self.restarts {
            let labels = [("actor", actor.as_str())];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&u64::from(*restarts), None)?;
        }
        if let Some(bus) = &self.bus {
            counter(
                encoder,
                "astrid_bus_published",
                "Events published on the bus",
                bus.published,
            )?;
            counter(
                encoder,
                "astrid_bus_delivered",
                "Events delivered to subscribers",
                bus.delivered,
            )?;
            counter(
                encoder,
                "astrid_bus_dropped",
                "Events dropped because a subscriber's queue was full",
                bus.dropped,
            )?;
            gauge(
                encoder,
                "astrid_bus_subscribers",
                "Subscribers registered on the bus",
                u64::try_from(bus.subscribers.len()).unwrap_or(u64::MAX),
            )?;
        }
        if let Some(store) = &self.store {
            counter(
                encoder,
                "astrid_store_writes",
                "Key-value writes (puts and deletes) handed to the ledger",
                store.writes,
            )?;
            counter(
                encoder,
                "astrid_store_commits",
                "Batches that carried the key-value writes to the ledger",
                store.commits,
            )?;
            gauge(
                encoder,
                "astrid_store_largest_batch",
                "Most key-value writes carried by one batch",
                store.largest_batch,
            )?;
        }
        let c = &self.connections;
        counter(
            encoder,
            "astrid_connections_accepted",
            "Connections accepted",
            c.accepted,
        )?;
        gauge(
            encoder,
            "astrid_connections_open",
            "Connections open now",
            c.open,
        )?;
        gauge(
            encoder,
            "astrid_connections_handshaking",
            "Connections open now that have not completed their handshake",
            c.handshaking,
        )?;
        let mut family = encoder.encode_descriptor(
            "astrid_connections_refused",
            "Connections refused before authentication, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in &c.refused {
            let labels = [("reason", *reason)];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(count, None)?;
        }
        Ok(())
    }
}
