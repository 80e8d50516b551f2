//! Client library for the Astrid daemon, and the process-edge pieces its two binaries share.
//!
//! Frontends and tests use [`client::Client`] to talk to a running `astrid-daemon` over its
//! Unix socket; [`paths`] finds the home and session files the same way the daemon does.
//!
//! # Layout
//!
//! - [`client`]: connect, handshake, pipelined requests, events (from `astrid-protocol`).
//! - [`daemon`]: the daemon process (flags, lock, logging, signals, exit status), run by the
//!   `astrid-daemon` binary and by `astrid daemon`.
//! - [`paths`]: the Astrid home (`--home`, `$ASTRID_HOME`, `~/.astrid`) and its layout.
//! - [`instance`]: the single-instance lock and the pid file.
//! - [`protocol`]: the wire contract: the `astrid-protocol` crate, which a frontend can
//!   use alone, without the kernel.
//!
//! The binaries are thin: `src/bin/astrid-daemon/` calls [`daemon::main`], and
//! `src/bin/astrid/` is the CLI. The kernel itself is the `astrid-actors` crate in `actors/`.

pub mod daemon;
pub mod instance;
pub mod paths;

pub use astrid_protocol as protocol;
pub use astrid_protocol::client;

/// An error and its chain of causes on one line, `outer: cause: root cause`, as both
/// binaries print it.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
