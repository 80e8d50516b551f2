//! The supervision tree as data: what `GetSupervisionTree` returns and `astrid ps` prints.

pub use astrid_protocol::payload::tree::{ChildState, Failure, NodeKind, TreeNode};
