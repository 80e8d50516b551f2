//! Workspace trust as the trust requests and status show it.

use serde::{Deserialize, Serialize};

/// Where a workspace stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustState {
    /// Trusted, and its `.astrid/` is as it was then.
    Trusted,
    /// Trusted once, but its `.astrid/` has changed since: untrusted until trusted again.
    Changed,
    /// Never trusted (or its configuration cannot be checked).
    Untrusted,
    /// Its `.astrid/` is the home: the user's own configuration.
    Home,
    /// It has no configuration to run (no files in `.astrid/`).
    None,
}

impl TrustState {
    /// Whether the workspace's capsules and MCP servers may run.
    pub fn allows(self) -> bool {
        matches!(self, Self::Trusted | Self::Home | Self::None)
    }
}

/// One workspace's trust, as the trust requests and `GetStatus` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustInfo {
    /// The workspace's canonical path.
    pub path: String,
    /// Where it stands.
    pub state: TrustState,
    /// When it was trusted (Unix milliseconds), if it was.
    pub trusted_ms: Option<u64>,
    /// The files of `.astrid/` it was trusted with (relative to `.astrid/`).
    pub files: Vec<String>,
    /// Why it is not trusted and the command that trusts it, or what trusting it covered.
    pub message: Option<String>,
}

impl TrustInfo {
    /// Whether its capsules and MCP servers may run.
    pub fn allows(&self) -> bool {
        self.state.allows()
    }
}
