//! What the daemon's replies and events carry, by the kernel service that produces it. The
//! kernel uses these very types, so a reply cannot drift from what clients decode.

pub mod approvals;
pub mod audit;
pub mod bus;
pub mod caps;
pub mod capsule_settings;
pub mod capsules;
pub mod config;
pub mod crash;
pub mod fault;
pub mod install;
pub mod mcp;
pub mod session;
pub mod store;
pub mod tree;
pub mod trust;
pub mod vfs;
