//! The CLI's command line. Only this file knows the flags.

#![allow(
    clippy::doc_markdown,
    reason = "these doc comments are --help text, not rustdoc"
)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use uuid::Uuid;

/// Talk to the Astrid kernel daemon.
///
/// With no command, opens an interactive session: lines you type are published as
/// `user.prompt` events, events are printed as they arrive, and /status, /capsules,
/// /commands, /ps and /quit are built in. Commands that need a daemon start an ephemeral
/// one for the workspace when none is running; it exits shortly after its last client.
///
/// `astrid daemon [FLAGS]` runs the daemon itself in the foreground, with the flags of
/// `astrid-daemon` (see `astrid daemon --help`).
#[derive(Debug, Parser)]
#[command(name = "astrid", version, about, long_about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// Options every command takes.
#[derive(Debug, ClapArgs)]
pub(crate) struct Global {
    /// Astrid home [default: $ASTRID_HOME, else ~/.astrid].
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) home: Option<PathBuf>,

    /// Session UUID; the nil UUID is the `system` session.
    #[arg(short, long, global = true, value_name = "UUID", default_value_t = Uuid::nil())]
    pub(crate) session: Uuid,

    /// Workspace of a daemon this command starts [default: the current directory].
    #[arg(short, long, global = true, value_name = "PATH")]
    pub(crate) workspace: Option<PathBuf>,

    /// How long an ephemeral daemon started by this command waits after its last client.
    #[arg(long, global = true, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) idle_grace: Duration,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Interactive session (the default).
    Chat,
    /// Start a persistent daemon (it never idles out).
    Start {
        /// Let the daemon accept `astrid fault`.
        #[arg(long)]
        allow_fault_injection: bool,
    },
    /// Stop the daemon and wait until its process has exited.
    Stop {
        /// How long to wait for a graceful exit before SIGTERM, then SIGKILL.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Show the daemon's status.
    Status,
    /// List capsules and their state.
    Capsules,
    /// Rescan capsule folders and show what changed.
    Reload,
    /// List the slash commands capsules offer.
    Commands,
    /// Show capsule manifests (all, or one).
    Metadata {
        /// Capsule name.
        name: Option<String>,
    },
    /// Show the live supervision tree.
    Ps,
    /// Print events as they arrive.
    Events {
        /// Topic pattern: `*` matches one segment, a final `>` the rest.
        #[arg(default_value = ">")]
        pattern: String,
        /// Exit after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Publish an event (clients may publish to `user.>`).
    Publish {
        /// Topic, e.g. `user.note`.
        topic: String,
        /// Payload: JSON if it parses as JSON, otherwise a string.
        payload: Option<String>,
    },
    /// Make an actor fail on purpose (the daemon needs --allow-fault-injection).
    Fault {
        /// Actor name as `astrid ps` shows it, e.g. `bus` or `listener`.
        target: String,
        /// `panic`, `stop`, or `hang:<duration>` (e.g. `hang:2s`).
        fault: String,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("not a duration like 5s or 250ms ({e})"))
}
