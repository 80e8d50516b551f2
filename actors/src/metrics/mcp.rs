//! Each MCP server's tool calls, by outcome. A server's [`McpCalls`] is resolved when its
//! actor starts; the table holds the servers configured now (a removed server's entry is
//! dropped), so the label set is bounded by the servers of the `mcp.toml` files and the
//! loaded capsules' manifests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpOutcome {
    /// The tool answered.
    Ok,
    /// The tool answered, reporting a failure (`is_error`).
    ToolError,
    /// The server refused the call (an unknown tool, bad arguments).
    Refused,
    /// No answer within the server's deadline.
    Timeout,
    /// The server went away (or was not ready) before answering.
    Unavailable,
}

impl McpOutcome {
    const ALL: [Self; 5] = [
        Self::Ok,
        Self::ToolError,
        Self::Refused,
        Self::Timeout,
        Self::Unavailable,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ToolError => "tool_error",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
        }
    }
}

/// One server's calls, by outcome.
#[derive(Debug, Default)]
pub struct McpCalls([AtomicU64; 5]);

impl McpCalls {
    /// Records a call's outcome.
    pub fn record(&self, outcome: McpOutcome) {
        self.0[outcome as usize].fetch_add(1, Relaxed);
    }
}

/// The configured servers' counters, by name.
#[derive(Debug, Default)]
pub struct McpServers(Mutex<BTreeMap<String, Arc<McpCalls>>>);

impl McpServers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<McpCalls>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Server `name`'s counters (kept across its restarts).
    pub fn of(&self, name: &str) -> Arc<McpCalls> {
        Arc::clone(self.lock().entry(name.to_owned()).or_default())
    }

    /// Drops the counters of a server that is stopped for good (or restarted with a new
    /// configuration: they start again).
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    pub(super) fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let table: Vec<(String, Arc<McpCalls>)> = self
            .lock()
            .iter()
            .map(|(name, m)| (name.clone(), Arc::clone(m)))
            .collect();
        let mut family = encoder.encode_descriptor(
            "astrid_mcp_calls",
            "Tool calls to each MCP server, by outcome (ok, tool_error, refused, timeout, unavailable)",
            None,
            MetricType::Counter,
        )?;
        for (name, calls) in &table {
            for (outcome, count) in McpOutcome::ALL.iter().zip(&calls.0) {
                let labels = [("server", name.as_str()), ("outcome", outcome.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&count.load(Relaxed), None)?;
            }
        }
        Ok(())
    }
}
