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

    /// Workspace this command is for [default: the current directory]. A daemon this
    /// command starts serves it; a running daemon that serves another workspace is refused
    /// (a folder inside its workspace counts as its workspace when no -w is given).
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
    /// Stop the daemon and start it again in the same mode (persistent or ephemeral, with
    /// or without fault injection); settings come from config.toml, as at any start. With
    /// none running, start a persistent one. A daemon systemd runs is left to
    /// `systemctl --user restart astrid`.
    Restart {
        /// How long to wait for a graceful exit before SIGTERM, then SIGKILL.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
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
    /// Run a capsule's slash command once and print its output.
    Run {
        /// Command name, as `astrid commands` lists it (the slash is optional): a capsule's,
        /// or a built-in one (`status`, `capsules`, `commands`, `ps`).
        command: String,
        /// Its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show capsule manifests (all, or one).
    Metadata {
        /// Capsule name.
        name: Option<String>,
    },
    /// Show the live supervision tree.
    Ps,
    /// Print the daemon's metrics (OpenMetrics text).
    Metrics,
    /// A live view of the supervision tree with per-capsule rates, latencies and memory,
    /// and the busiest requests; `q` or Ctrl-C quits.
    Top {
        /// How often to redraw (at least 100ms: each frame asks the daemon twice).
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
    },
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
    /// Read and write the client key-value namespace.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Grant, revoke and list capsule capabilities.
    #[command(subcommand)]
    Caps(CapsCommand),
    /// List and change a capsule's settings (its manifest's `[[config]]`), which it reads
    /// with `config_get`.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Answer capsules' uses of `ask:` grants, which wait for a client's approval (the
    /// interactive session shows each as it comes, with `/approve` and `/deny`).
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Install a capsule folder into the home (`<home>/capsules/<name>`): shows its name,
    /// version, commands, grants and settings (and, for an upgrade, the grants it adds and
    /// drops), asks to confirm, copies it, and reloads. An installed capsule whose files
    /// change afterwards does not run until it is installed again.
    Install {
        /// The capsule folder (holding `Capsule.toml`), or a `.tar.gz`/`.tgz` of one (the
        /// capsule at its root or in its one top folder).
        path: PathBuf,
        /// Install without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Remove a capsule installed in the home, and reload.
    Uninstall {
        /// Capsule name.
        name: String,
    },
    /// Read and verify the audit log, and show its policy.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Show the daemon's settings (`<home>/config.toml` below the daemon's flags).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List MCP servers and their tools, and call tools.
    #[command(subcommand)]
    Mcp(McpCommand),
    /// Trust a workspace, so that its own capsules and MCP servers (in `.astrid/`) may run.
    ///
    /// A workspace's `.astrid/` may come with a cloned repository: nothing of it runs until
    /// you trust it, and any later change to it (a `git pull`, say) makes it untrusted
    /// again until you trust it anew. The record is kept in the home (`trust.toml`).
    Trust {
        /// The workspace [default: the workspace of this command].
        path: Option<PathBuf>,
        /// List the trusted workspaces instead, each checked against its `.astrid/` now.
        #[arg(long, conflicts_with = "path")]
        list: bool,
    },
    /// Stop trusting a workspace: its own capsules and MCP servers stop.
    Untrust {
        /// The workspace [default: the workspace of this command].
        path: Option<PathBuf>,
    },
    /// Print a completion script for a shell, e.g. `astrid completions bash >
    /// ~/.local/share/bash-completion/completions/astrid` (no daemon needed).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, or with --out write one page per command (`astrid.1`,
    /// `astrid-<command>.1`) into a folder, e.g. `astrid man --out ~/.local/share/man/man1`
    /// (no daemon needed).
    Man {
        /// The folder to write the pages into.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the daemon's log (its daily files under `<home>/logs/`; no daemon needed),
    /// oldest line first. A daemon that logs to the systemd journal writes no files:
    /// read it with `journalctl --user -u astrid`.
    Logs(LogsArgs),
    /// Check the home, its session files, the open-file limit, free disk, capsule manifests,
    /// `mcp.toml` files, workspace trust, MCP commands, the audit chain and the ledger's
    /// size: pass, warn or fail for each, with the fix. Exit status 1 when a check fails
    /// (warnings do not fail). Never starts a daemon, nor creates the home.
    Doctor,
    /// Run the daemon as a systemd user service: write, remove or show its units.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Make an actor fail on purpose (the daemon needs --allow-fault-injection).
    #[command(after_help = FAULT_HELP)]
    Fault {
        /// Actor name as `astrid ps` shows it, e.g. `bus`, `store`, `capsule:echo`,
        /// `mcp:files`.
        target: String,
        /// The fault, e.g. `trap`, `hang:2s`, `delay:200ms,for=30s`,
        /// `import:kv_put,fail=-5,times=3`, `storage:fsync`, `mcp:kill` (see below).
        fault: String,
    },
    /// List, show and remove the crash bundles kept of capsule crashes (`<home>/crashes/`).
    #[command(subcommand)]
    Crashes(CrashesCommand),
    /// Replay a crash bundle: its calls run again against the crashed module, with the
    /// recorded host-call results (no service is touched). Exit status 0 when it crashes the
    /// same way, 1 when it does not.
    Replay {
        /// The bundle's id (see `astrid crashes ls`).
        id: String,
    },
    /// Run a chaos plan: a workload of requests while faults are injected on a seeded
    /// schedule, then a report of what was answered, how fast, what restarted, and the
    /// invariants checked (exit status 3 when one fails). See README "Chaos plans".
    Chaos(ChaosArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum CrashesCommand {
    /// List the crash bundles, oldest first.
    Ls,
    /// Show a bundle: the failure, its backtrace, the calls and their host calls.
    Show {
        /// The bundle's id.
        id: String,
    },
    /// Remove a bundle, or every one with --all.
    Rm {
        /// The bundle's id.
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        /// Remove every bundle.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

/// `astrid chaos`.
#[derive(Debug, ClapArgs)]
pub(crate) struct ChaosArgs {
    /// The plan file (TOML).
    pub(crate) plan: PathBuf,
    /// Run this long instead of the plan's `duration` or `requests`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Seed of the fault schedule instead of the plan's.
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,
    /// Run against a daemon of its own in a fresh temporary home and workspace, holding the
    /// plan's `capsules`; both are removed afterwards.
    #[arg(long)]
    pub(crate) fresh: bool,
    /// No progress lines on stderr (`--json` implies it).
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// `astrid logs`.
#[derive(Debug, ClapArgs)]
pub(crate) struct LogsArgs {
    /// Keep printing lines as they are written, across the daily rotation, until Ctrl-C.
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// Print the last N lines (of those the filters keep) first.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 50)]
    pub(crate) lines: usize,
    /// Only lines written in the last DURATION, e.g. 10m, 2h, 1day.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) since: Option<Duration>,
    /// Only lines of this level and worse.
    #[arg(long, value_name = "LEVEL", value_enum)]
    pub(crate) level: Option<crate::logs::line::Level>,
    /// Only lines about this actor, named as `astrid ps` names it (`capsule:echo`,
    /// `mcp:files`, `bus`, `store`) or by its bare name (`echo`).
    #[arg(long, value_name = "NAME")]
    pub(crate) actor: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum McpCommand {
    /// List the configured MCP servers: state, restarts, tools.
    Ls,
    /// Read the `mcp.toml` files again: unchanged servers run on, changed ones restart,
    /// removed ones stop, new ones start.
    Reload,
    /// List the tools of one server, or of all.
    Tools {
        /// Server name (see `astrid mcp ls`).
        server: Option<String>,
    },
    /// Call a tool and print its result (exit status 1 when the tool reports an error).
    Call {
        /// Server name.
        server: String,
        /// Tool name.
        tool: String,
        /// Arguments, as a JSON object (default `{}`).
        arguments: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KvCommand {
    /// Print a value (exit status 1 when the key does not exist).
    Get {
        /// Key.
        key: String,
    },
    /// Store a value; returns once it is durable.
    Put {
        /// Key.
        key: String,
        /// Value (stored as its UTF-8 bytes).
        value: String,
    },
    /// Delete a key.
    Rm {
        /// Key.
        key: String,
    },
    /// List keys.
    Ls {
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CapsCommand {
    /// List grants (of one capsule, or all).
    Ls {
        /// Capsule name.
        subject: Option<String>,
    },
    /// Grant a capability: `kv`, `vfs:read:<glob>`, `vfs:write:<glob>`,
    /// `bus:publish:<pattern>`, `bus:subscribe:<pattern>`, `mcp:call:<server>/<tool>`,
    /// `net:http:<scheme>://<host>[:<port>][/<path-glob>]`.
    Grant {
        /// Capsule name.
        subject: String,
        /// Resource.
        resource: String,
    },
    /// Revoke a capability granted with `grant`.
    Revoke {
        /// Capsule name.
        subject: String,
        /// Resource, exactly as granted.
        resource: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SettingsCommand {
    /// List the settings a capsule declares, with their values (never a secret's).
    Ls {
        /// Capsule name.
        capsule: String,
    },
    /// Set a setting; returns once it is durable. Without VALUE, the value is read from
    /// standard input (at a prompt on a terminal, not echoed for a secret). A secret is
    /// never taken from the command line.
    Set {
        /// Capsule name.
        capsule: String,
        /// Setting name (see `astrid settings ls CAPSULE`).
        name: String,
        /// The value (not for a secret).
        value: Option<String>,
    },
    /// Remove a setting's value (its default, if any, applies again).
    Unset {
        /// Capsule name.
        capsule: String,
        /// Setting name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ApprovalsCommand {
    /// List the requests waiting, oldest first.
    Ls,
    /// Let the use go ahead: this time, or with --always from now on (the grant is then
    /// given outright, as a runtime grant that `caps revoke` removes).
    Approve {
        /// The request's number (`astrid approvals ls`).
        id: u64,
        /// Give the grant outright.
        #[arg(long)]
        always: bool,
    },
    /// Refuse the use (the capsule sees it denied).
    Deny {
        /// The request's number.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Print the last entries.
    Tail {
        /// How many.
        #[arg(short, default_value_t = 20)]
        n: usize,
    },
    /// Verify the hash chain (exit status 1, naming the first bad entry, when it is broken).
    Verify,
    /// Apply the log's retention now (by age and by size; see the daemon's
    /// `--audit-max-age` and `--audit-max-size`): the oldest entries go, and an anchor entry
    /// takes their place, from which `audit verify` still checks the chain.
    Prune,
    /// Show which request kinds are recorded (`none` or `metadata`), and why. Set them in
    /// `<home>/config.toml` under `[audit_policy]`, e.g. `GetStatus = "metadata"`.
    Policy,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print every setting of the daemon with its value and where it came from: `flag`,
    /// `config` (`<home>/config.toml`) or `default`.
    Show,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("not a duration like 5s or 250ms ({e})"))
}

/// `astrid top`'s interval: at least 100ms.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let interval = parse_duration(s)?;
    if interval < Duration::from_millis(100) {
        return Err("at least 100ms".into());
    }
    Ok(interval)
}

/// The fault grammar, shown by `astrid fault --help`.
const FAULT_HELP: &str = "\
Faults (durations as 250ms, 2s, 1m):
  panic | stop                  any actor: it crashes, and is restarted
  hang:DURATION                 any actor: it takes no message for that long
  delay:DURATION[,for=SPAN]     kernel actors and capsules: every request waits DURATION
                                first, for SPAN (default 10s)
  trap                          capsules: the instance traps as a guest bug would
  import:NAME,fail=CODE|delay=DURATION[,times=N][,p=P][,seed=S]
                                capsules: host import NAME (kv_put, vfs_read, ...) returns
                                CODE (negative) or waits first; for the next N calls, or each
                                call with probability P (seeded by S); until cleared otherwise
  storage:journal_write|fsync|checkpoint[,times=N]
                                store, audit: the ledger's next N such operations fail
  mcp:delay=DURATION|malformed|kill[,times=N]
                                mcp:<server>: its next N tool calls get a late reply, a reply
                                that is not JSON-RPC, or the server killed mid-call
  overflow[,times=N]            capsules: the next N events for it are dropped as by a full
                                queue, and counted
  clear                         disarm every armed delay, import, storage, MCP and overflow
                                fault of the target";

/// `astrid service`.
#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Write `astrid.service` (and `astrid.socket` with --socket-activation) into
    /// ~/.config/systemd/user (or $XDG_CONFIG_HOME/systemd/user), running the installed
    /// `astrid-daemon` persistently for this home, session and workspace (-w, else the
    /// current directory), then print the `systemctl --user` commands that start it. The
    /// service is `Type=notify`: systemd knows when it is ready, restarts it when it fails
    /// or stops answering its watchdog, and its logs go to the journal
    /// (`journalctl --user -u astrid`).
    Install {
        /// systemd listens on the session socket and starts the daemon at the first
        /// connection (`astrid.socket`).
        #[arg(long)]
        socket_activation: bool,
        /// Let the daemon accept `astrid fault`.
        #[arg(long)]
        allow_fault_injection: bool,
        /// systemd restarts a daemon whose supervision tree has not answered for this long
        /// (`WatchdogSec=`); 0 turns the watchdog off.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
        watchdog: Duration,
        /// Replace units that differ from what this would write (edited by hand, or
        /// written with other flags).
        #[arg(long)]
        force: bool,
    },
    /// Remove the units and print the `systemctl --user` commands that stop what runs.
    Uninstall,
    /// Show whether the units are installed, what the service runs, and what systemctl
    /// says of them.
    Status,
}
