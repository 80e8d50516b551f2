//! Load generator for the Astrid daemon, with an optional side-by-side run of
//! `redis-benchmark` over a Unix socket on the same machine.
//!
//! Each client connects, completes the handshake, then keeps up to `--depth` requests in
//! flight until it has sent its share of `--requests`; every reply is decoded and checked
//! (id and no error), and its latency recorded. Prints requests per second, p50/p99/p99.9
//! latency, and the CPU time each request cost the daemon (all its threads) and this
//! program.
//!
//! ```text
//! cargo build --release --bins --examples
//! ./target/release/examples/loadgen --spawn --clients 50 --requests 200000
//! ./target/release/examples/loadgen --suite ping     # the README's Ping table
//! ./target/release/examples/loadgen --suite kv       # the README's key-value table
//! ./target/release/examples/loadgen --suite capsules # capsule calls and crash recovery
//! ./target/release/examples/loadgen --suite mcp      # MCP tool calls (the example server)
//! ./target/release/examples/loadgen --suite idle     # an idle daemon: memory, wake-ups, boot
//! ./target/release/examples/loadgen --suite soak     # 2,000,000 mixed requests: what grows
//! ./target/release/examples/loadgen --suite soak --requests 20000      # a quick soak
//! ./target/release/examples/loadgen --suite status-growth # 1,000,000 `GetStatus`: state/ growth
//! ```
//!
//! `--spawn` starts a persistent `astrid-daemon` (the release binary next to this example's
//! directory) in a temporary home and stops it at the end; without it, the daemon of
//! `--home` (default `$ASTRID_HOME` or `~/.astrid`) is used.
//!
//! `--suite ping` spawns a daemon and a `redis-server`, and runs both benchmarks for 1 client,
//! 50 clients, and 50 clients with 16 requests in flight each. `--suite kv` measures what one
//! fsync per write allows on this machine (redb commits of one put each, on the same file
//! system), then durable `KvPut`s from 1 and 50 clients and `KvGet`s. `--suite capsules`
//! installs the example `echo` capsule and a copy of `crash-after` (restarted without
//! backoff) in the temporary home, compares `InvokeCommand` of `echo` with `Ping`, then
//! measures crash recovery: the time from a reply saying the capsule crashed to the next
//! successful reply from its restarted instance. `--suite mcp` configures the example MCP
//! server (`examples/mcp-test-server.rs`, the release build beside this example) as `test`
//! and measures `CallMcpTool` of its `echo` tool from 1 and 50 clients, next to `Ping`.
//! `--suite idle` measures an idle daemon with no client: its RSS and wake-ups a second
//! (context switches of all its threads, from `/proc`) with no capsule and with 10 example
//! capsules (5 `echo`, 5 `hello-rust`), boot to ready with 20 capsules from the compile
//! cache, and the first call of an idle capsule (no thread, no instance) against the next
//! call of the same capsule, still warm, over 20 `echo` capsules.
//!
//! `--suite soak` spawns a daemon (with the example `echo` capsule and the fault capsule
//! `trap`, restarted without backoff, and a workspace of its own) and sends it `--requests`
//! (default 2,000,000) requests from `--clients` (default 50) connections, in a fixed mix
//! printed at the start: `GetStatus`, `Publish` to topics three subscriber connections
//! drain, `KvPut`/`KvGet`/`KvDelete` over 1,000 keys, `InvokeCommand` of `echo`, `VfsWrite`
//! over 100 files, and 1 request in 5,000 a call of `trap`, which crashes it. Every request
//! must be answered (within 30 s); errors are counted by request and code, and only
//! `capsule_crashed` (or `unavailable` while it restarts) is expected, for `trap`. At the
//! start and every 5% of the requests it prints a row of samples: the daemon's RSS, open
//! file descriptors and threads (from `/proc`), and the size of `<home>/state/` (all files,
//! `ledger.redb`, the journal files); at the end, per-request latencies and errors, the
//! largest RSS, the growth over the second half of the run, and `state/` after a clean
//! shutdown. `--suite status-growth` does the same with `GetStatus` only (default 1,000,000
//! requests), to show what reads cost in `state/`.
//!
//! Modules: `bench` (the closed-loop run of one `--kind`), `kind`, `report` (a run's
//! figures), `procfs` (what `/proc` says about a process), `daemon` (spawning daemons,
//! filling their homes), one per suite (`ping`, `kv`, `capsules`, `mcp`, `idle`, `soak`),
//! and, for `soak`, `mix` (its requests) and `growth` (its samples).

#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a benchmark: failures panic, statistics are floating point"
)]

mod bench;
mod capsules;
mod daemon;
mod growth;
mod idle;
mod kind;
mod kv;
mod mcp;
mod mix;
mod ping;
mod procfs;
mod report;
mod soak;

use std::path::PathBuf;

use astrid::paths::resolve_home;
use clap::{Parser, ValueEnum};

use crate::bench::run_astrid;
use crate::daemon::{install_capsule, install_mcp_server, spawn_daemon};
use crate::kind::{Kind, parse_kind};
use crate::ping::{run_redis, spawn_redis};
use crate::soak::Flavour;

/// Load generator for astrid-daemon.
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent client connections [default: 1; 50 with --suite soak or status-growth].
    #[arg(long, value_name = "N")]
    clients: Option<usize>,
    /// Requests in total, split evenly across clients [default: 200000; 2000000 with
    /// --suite soak, 1000000 with --suite status-growth].
    #[arg(long, value_name = "N")]
    requests: Option<usize>,
    /// Requests in flight per connection (pipelining).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Request to send: `ping`, `status`, `publish`, `tree`, `kvput`, `kvget`,
    /// `invoke:<command>` (a capsule's slash command, without arguments), or
    /// `mcp:<server>/<tool>` (an MCP tool, with the arguments `{"text": "hi"}`).
    #[arg(long, default_value = "ping", value_parser = parse_kind)]
    kind: Kind,
    /// Start a temporary persistent daemon for the run.
    #[arg(long)]
    spawn: bool,
    /// Astrid home of the daemon to load (ignored with --spawn).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Also run `redis-benchmark -t ping` with the same clients, requests and pipelining.
    #[arg(long)]
    redis: bool,
    /// Run a README table: `ping` (against redis-benchmark), `kv` (against one fsync per
    /// write), `capsules`, `mcp`, `idle`, or a long run: `soak`, `status-growth`.
    #[arg(long, value_enum)]
    suite: Option<Suite>,
    /// With --suite soak or status-growth: a `config.toml` for the spawned daemon's home
    /// (e.g. `[audit_policy]` raising reads to `metadata`, or `audit_max_size`).
    #[arg(long, value_name = "FILE")]
    daemon_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    /// `Ping` with 1, 50 and 50×16 clients, next to `redis-benchmark -t ping`.
    Ping,
    /// Durable `KvPut` with 1 and 50 clients, and `KvGet`, next to one fsync per write.
    Kv,
    /// `InvokeCommand` of the `echo` capsule next to `Ping`, and crash recovery.
    Capsules,
    /// `CallMcpTool` of the example MCP server's `echo` next to `Ping`.
    Mcp,
    /// An idle daemon: RSS, wake-ups a second, boot to ready, first calls of idle capsules.
    Idle,
    /// A daemon under a long mixed load (status, publish to subscribers, KV, echo calls,
    /// workspace writes, capsule crashes), sampled every 5% for RSS, fds, threads and the
    /// size of `state/`, with the growth over the second half.
    Soak,
    /// `GetStatus` only, sampled the same way: how much reads grow `state/` (the audit log).
    StatusGrowth,
}

fn main() {
    let args = Args::parse();
    let long_run = matches!(args.suite, Some(Suite::Soak | Suite::StatusGrowth));
    let clients = args.clients.unwrap_or(if long_run { 50 } else { 1 });
    let requests = args.requests.unwrap_or(match args.suite {
        Some(Suite::Soak) => 2_000_000,
        Some(Suite::StatusGrowth) => 1_000_000,
        _ => 200_000,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("loadgen")
        .tempdir_in("/tmp")
        .unwrap();
    if args.suite == Some(Suite::Capsules) {
        install_capsule(tmp.path(), "echo", "echo", "");
        install_capsule(
            tmp.path(),
            "faults/crash-after",
            "crash-after",
            "[restart]\nintensity = 1000\nperiod = \"10ms\"\nbackoff = \"0s\"\n",
        );
    }
    if args.suite == Some(Suite::Mcp) {
        install_mcp_server(tmp.path());
    }
    match args.suite {
        Some(Suite::Idle) => return idle::idle_suite(&rt),
        Some(Suite::Soak) => {
            let plan = (Flavour::Soak, clients, requests, args.depth);
            return soak::soak_suite(&rt, plan, args.daemon_config.as_deref());
        }
        Some(Suite::StatusGrowth) => {
            let plan = (Flavour::StatusGrowth, clients, requests, args.depth);
            return soak::soak_suite(&rt, plan, args.daemon_config.as_deref());
        }
        _ => {}
    }
    let (_daemon, files) = if args.spawn || args.suite.is_some() {
        let (guard, files) = spawn_daemon(tmp.path());
        (Some(guard), files)
    } else {
        let env_home = std::env::var_os("ASTRID_HOME").map(PathBuf::from);
        let home = resolve_home(args.home.as_deref(), env_home.as_deref()).unwrap();
        (None, home.session(uuid::Uuid::nil()))
    };
    match args.suite {
        Some(Suite::Ping) => return ping::ping_suite(&rt, &files, tmp.path(), requests),
        Some(Suite::Kv) => return kv::kv_suite(&rt, &files, tmp.path(), requests),
        Some(Suite::Capsules) => return capsules::capsules_suite(&rt, &files, requests),
        Some(Suite::Mcp) => return mcp::mcp_suite(&rt, &files, requests),
        Some(Suite::Idle | Suite::Soak | Suite::StatusGrowth) | None => {}
    }
    let ours = rt.block_on(run_astrid(
        &files, &args.kind, clients, requests, args.depth,
    ));
    ours.print();
    if args.redis {
        let (_redis, socket) = spawn_redis(tmp.path());
        for r in run_redis(&socket, clients, requests, args.depth) {
            r.print();
        }
    }
}
