//! The daemon's integration tests, in one binary so that wasmer and cranelift are linked
//! once: each module starts real `astrid-daemon` processes (and the `astrid` CLI) in
//! temporary homes and speaks to them through the socket. Helpers shared by every module
//! (the [`common::TestDaemon`] builder, raw frames, polling with a deadline) live in
//! [`common`].
//!
//! Tests run in parallel threads of this one process; nothing here changes process-wide
//! state (environment, working directory, umask, limits, signal handlers): whatever a test
//! needs differently is given to the processes it spawns.

#![allow(clippy::unwrap_used)]

mod common;

mod approvals;
mod bounds;
mod capsules;
mod chaos;
mod chaos_plans;
mod cli;
mod config;
mod crash;
mod doctor;
mod events;
mod faults;
mod hostile;
mod http;
mod install;
mod lab;
mod lifecycle;
mod logs;
mod mcp;
mod mcp_interop;
mod metrics;
mod protocol;
mod retention;
mod service;
mod services;
mod supervision;
mod trust;
mod world;
