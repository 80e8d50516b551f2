//! The Astrid kernel: an OTP-style supervision tree of actix actors behind a Unix socket.
//!
//! Everything the daemon runs lives here; the `astrid-daemon` binary only resolves paths
//! and flags, takes the single-instance lock, sets up logging and signals, and calls
//! [`kernel::Kernel::boot`]. Nothing in this crate reads the environment or `$HOME`, so
//! tests boot whole kernels inside temporary directories.
//!
//! # Layout
//!
//! - [`supervisor`]: the supervisor actor, restart policy (plain, unit-tested), exit guards
//!   that notice stops and panics, fault injection.
//! - [`bus`]: the event bus (topics, `*`/`>` wildcards, bounded subscriber queues).
//! - [`store`]: the key-value store (namespaces, limits, group commit).
//! - [`audit`]: the hash-chained audit log (group commit, verification).
//! - [`ledger`]: the durable write path both share: redb tables behind a write-ahead
//!   journal, with a syncer and a checkpointer thread.
//! - [`caps`]: the capability store (grants, resource grammar, checks).
//! - [`approvals`]: uses of `ask:` grants waiting for the user's answer.
//! - [`vfs`]: the workspace file system (path rules, cap-std confinement, atomic writes).
//! - [`capsules`]: the capsule registry (built-in listener, discovered capsule folders,
//!   loading, reload diffing, the table that routes commands).
//! - [`capsule`]: one capsule's actor, its wasmer sandbox and what its host imports do.
//! - [`listener`]: the socket (bind, stale probe), token, connection table, accept loop.
//! - [`session`]: one actor per connection (handshake, requests, events, backpressure).
//! - [`protocol`]: the wire contract, re-exported from the `astrid-protocol` crate; the
//!   kernel maps its errors to wire codes in [`error`].
//! - [`metrics`]: the daemon's counters and histograms (a shared registry, not an actor)
//!   and their OpenMetrics text, for `GetMetrics`.
//! - [`kernel`]: configuration, databases, boot order, the tree, shutdown, file names.
//! - [`trust`]: workspace trust: which workspaces may run their own capsules and MCP
//!   servers (a record in the home of each trusted `.astrid/`, by content hash).
//! - [`db`]: a redb database that is reopened after an I/O failure; [`error`]: errors a
//!   request can meet; [`files`]: private atomic writes; [`relay`]: answers delivered on
//!   the waiting thread in bulk.
//!
//! The actor tree:
//!
//! ```text
//! kernel (root supervisor, one_for_one)
//! ├── bus           permanent
//! ├── audit         permanent   (writes synced by the ledger's threads)
//! ├── store         permanent   (writes synced by the ledger's threads)
//! ├── capabilities  permanent   (own thread)
//! ├── vfs           permanent   (own thread)
//! ├── approvals     permanent
//! ├── capsules      permanent   (a supervisor)
//! │   ├── registry         permanent
//! │   └── capsule:<name>   per manifest, own restart budget (own thread)
//! └── listener      permanent   (built-in capsule astrid-capsule-cli)
//!     └── session:<n>  temporary, one per client connection
//! ```

pub mod approvals;
pub mod audit;
pub mod bus;
pub mod caps;
pub mod capsule;
pub mod capsules;
pub mod clock;
pub mod db;
pub mod error;
pub mod files;
pub(crate) mod group_commit;
pub mod kernel;
pub mod ledger;
pub mod listener;
pub mod mcp;
pub mod metrics;
pub use astrid_protocol as protocol;
pub mod rate;
pub mod relay;
pub mod runtime;
pub mod session;
pub mod settings;
pub mod socket;
pub mod store;
pub mod supervisor;
pub mod trust;
pub mod vfs;
