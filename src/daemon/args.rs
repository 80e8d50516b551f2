//! The daemon's command line. Only this file knows the flags.

#![allow(
    clippy::doc_markdown,
    reason = "these doc comments are --help text, not rustdoc"
)]

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use uuid::Uuid;

/// The Astrid kernel daemon.
///
/// Serves one session on a Unix socket under the Astrid home
/// (`<home>/sessions/<session>.sock`). Frontends such as the `astrid` CLI find or start it;
/// run it by hand for a long-running host. It stops on SIGTERM, SIGINT or a `Shutdown`
/// request, removing its socket, token, ready and pid files.
///
/// Every flag below but --home, --session and --workspace can also be set in
/// `<home>/config.toml`, as a key named like the flag with `_` for `-` (`call_timeout =
/// "3s"`), with the audit levels of request kinds under `[audit_policy]`. Flags win over
/// the file; `astrid config show` prints what is in force and where it came from.
#[derive(Debug, Parser)]
#[command(name = "astrid-daemon", version, about, long_about)]
pub(crate) struct Args {
    /// Session UUID; the nil UUID is the `system` session.
    #[arg(short, long, value_name = "UUID", default_value_t = Uuid::nil(), value_parser = parse_uuid)]
    pub(crate) session: Uuid,

    /// Workspace root served to capsules [default: the current directory].
    #[arg(short, long, value_name = "PATH")]
    pub(crate) workspace: Option<PathBuf>,

    /// Exit a grace period after the last client disconnects (or after readiness if none
    /// connects). Without it the daemon never idles out.
    #[arg(long)]
    pub(crate) ephemeral: bool,

    /// Grace period of --ephemeral, e.g. `5s`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) idle_grace: Duration,

    /// Astrid home [default: $ASTRID_HOME, else ~/.astrid].
    #[arg(long, value_name = "PATH")]
    pub(crate) home: Option<PathBuf>,

    /// Log at debug level (the filter can also be set with ASTRID_LOG, e.g. `astrid_actors=trace`).
    #[arg(short, long)]
    pub(crate) verbose: bool,

    /// Accept `InjectFault` requests (`astrid fault`), for testing supervision.
    #[arg(long)]
    pub(crate) allow_fault_injection: bool,

    /// Kernel actors may be restarted at most this many times within --restart-window;
    /// one more and the daemon shuts down with exit code 4.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub(crate) max_restarts: u32,

    /// Window of --max-restarts.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) restart_window: Duration,

    /// Deadline of a request inside the daemon; past it the client gets `timeout`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) call_timeout: Duration,

    /// Largest frame accepted from a client, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    pub(crate) max_frame: usize,

    /// Open connections served at once (authenticated or not); one more is refused with
    /// `too_many_connections`. Lowered if need be to leave 256 descriptors of the open-file
    /// limit to the daemon.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = count)]
    pub(crate) max_connections: usize,

    /// Connections still in their handshake at once; one more is refused with
    /// `too_many_connections`. At most --max-connections.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = count)]
    pub(crate) max_unauthenticated: usize,

    /// Refused connections and handshakes are audited and logged one by one only when rare:
    /// those within this window of the last one recorded are counted, and the count is
    /// recorded when the window ends.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_window)]
    pub(crate) refusal_window: Duration,

    /// How long a capsule's thread waits for more work before it retires with the capsule's
    /// instance (and the guest's memory); the next call starts a fresh one.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) capsule_linger: Duration,

    /// Page cache of each database (the ledger and the grants), e.g. `8MiB`: reads beyond
    /// it go to the file. Memory the daemon holds for storage is bounded by it, not by how
    /// much was ever written.
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = parse_size)]
    pub(crate) db_cache: usize,

    /// Audit entries older than this are removed (an anchor entry takes their place, from
    /// which the chain still verifies); `0` keeps them whatever their age. Applied at boot,
    /// as the log is written, and by `astrid audit prune`.
    #[arg(long, value_name = "DURATION", default_value = "90days", value_parser = parse_age)]
    pub(crate) audit_max_age: Duration,

    /// The audit log is kept under this size on disk (counting each entry's share of the
    /// database): past it, the oldest entries are removed until it is at nine tenths.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub(crate) audit_max_size: usize,

    /// Keys each key-value namespace (the clients', and each capsule's) may hold; a write
    /// past it is refused with `quota_exceeded` and nothing is written.
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = count)]
    pub(crate) kv_max_keys: usize,

    /// Bytes of keys and values each key-value namespace may hold, e.g. `64MiB`.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub(crate) kv_max_bytes: usize,

    /// The daily log files (seven kept) hold at most this much in all: a day's file takes a
    /// seventh of it, and that day's further lines are dropped (and counted).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub(crate) log_max_size: usize,
}

fn count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("not a whole number of at least 1".to_owned()),
    }
}

/// A duration, where `0` means no limit.
fn parse_age(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

fn parse_window(s: &str) -> Result<Duration, String> {
    let window = parse_duration(s)?;
    if window < Duration::from_millis(100) {
        return Err("shorter than 100ms".to_owned());
    }
    Ok(window)
}

/// A size in bytes: a whole number, optionally followed by `B`, `KiB`, `MiB` or `GiB`.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` (use B, KiB, MiB or GiB)")),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| "not a size like 8MiB or 65536".to_owned())
}

fn parse_uuid(s: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s).map_err(|e| format!("not a UUID ({e})"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("not a duration like 5s or 250ms ({e})"))
}
