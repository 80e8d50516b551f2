//! The supervision tree as data (what `GetSupervisionTree` returns and `astrid ps` prints)
//! and restart types.

use serde::{Deserialize, Serialize};

/// Life-cycle state of a node in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Up and serving.
    Running,
    /// Crashed and waiting out its backoff before the next start.
    Restarting,
    /// Asked to stop; not gone yet.
    Stopping,
    /// Not running and not coming back by itself (normal exit, or shut down).
    Stopped,
    /// Gave up: restart budget exhausted.
    Failed,
}

impl ChildState {
    /// The state as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ChildState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of node this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// Supervises other nodes.
    Supervisor,
    /// A kernel actor.
    Worker,
    /// A capsule's actor (a WebAssembly instance).
    Capsule,
    /// A client connection (a temporary child of the listener).
    Session,
}

/// The most recent failure of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What happened, e.g. `panicked: injected fault`.
    pub reason: String,
    /// How long ago, in milliseconds.
    pub ago_ms: u64,
}

/// One node of the live supervision tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    /// Name, unique among its siblings; fault injection addresses actors by it.
    pub name: String,
    /// Supervisor, worker or session.
    pub kind: NodeKind,
    /// Restart type; absent for the root.
    pub restart: Option<RestartType>,
    /// Current state.
    pub state: ChildState,
    /// Restarts so far (for a supervisor: restarts of its children inside the current window).
    pub restarts: u32,
    /// Milliseconds since the current incarnation started, when running.
    pub uptime_ms: Option<u64>,
    /// The last failure, if any.
    pub last_failure: Option<Failure>,
    /// Extra facts, e.g. the restart budget of a supervisor or a session's client name.
    pub detail: Option<String>,
    /// Children, in start order.
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// Depth-first search for a node by name.
    pub fn find(&self, name: &str) -> Option<&TreeNode> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

/// When a child is restarted (Erlang/OTP restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// Always restarted, whatever the exit reason (kernel services).
    Permanent,
    /// Restarted only after an abnormal exit (capsules).
    Transient,
    /// Never restarted (client sessions).
    Temporary,
}
