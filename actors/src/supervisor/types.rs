//! The supervision tree's types that go on the wire: node states and kinds, restart types,
//! faults and the tree itself. They are defined in the protocol crate (clients decode them);
//! the supervisor uses them from there.

pub use astrid_protocol::payload::fault::Fault;
pub use astrid_protocol::payload::tree::{ChildState, Failure, NodeKind, RestartType, TreeNode};
