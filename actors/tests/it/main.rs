//! The kernel crate's integration tests, in one binary so that wasmer and cranelift are
//! linked once: actors driven through their messages (the supervisor, the bus, the storage
//! actors over a disk that fills up, the ledger), the parsers' property tests, and the
//! kernel booted in-process, and the import graph of `actors/src`. Helpers shared by every
//! module live in [`common`].
//!
//! Tests run in parallel threads of this one process; none changes process-wide state.

#![allow(clippy::unwrap_used)]

mod common;

mod audit;
mod bus;
mod caps;
mod kernel;
mod layers;
mod ledger;
mod manifest;
mod parsers;
mod store;
mod supervisor;
mod vfs_paths;
