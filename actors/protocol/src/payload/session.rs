//! A client connection as the listener describes it.

use serde::{Deserialize, Serialize};

/// One connection, as the supervision tree shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Connection number.
    pub id: u64,
    /// Client name from the handshake (absent before it).
    pub client: Option<String>,
    /// Peer process id, when the kernel reported it.
    pub pid: Option<i32>,
    /// Whether the handshake succeeded.
    pub authenticated: bool,
    /// Milliseconds since the connection was accepted.
    pub connected_ms: u64,
}
