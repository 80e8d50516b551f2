//! Capability grants as `GrantCapability` and `ListCapabilities` return them.

use serde::{Deserialize, Serialize};

/// Where a grant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    /// The capsule's manifest, at load; replaced on every load.
    Manifest,
    /// The API; persisted until revoked.
    Runtime,
}

/// One capability held by a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The capsule that holds it.
    pub subject: String,
    /// The resource, as written.
    pub resource: String,
    /// Manifest or runtime.
    pub source: GrantSource,
    /// When it was granted, milliseconds since the Unix epoch.
    pub granted_ms: u64,
}
