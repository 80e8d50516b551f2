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

#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a benchmark: failures panic, statistics are floating point"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use astrid::paths::resolve_home;
use astrid_protocol::client::{Client, connect_socket, handshake, read_token};
use astrid_protocol::layout::{HomeLayout, SessionFiles};
use astrid_protocol::{
    CommandOutput, ErrorCode, FrameCodec, FrameHead, McpServerInfo, McpServerState, RawValue,
    Request, RequestFrame, encode_frame,
};
use bytes::BytesMut;
use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

/// Load generator for astrid-daemon.
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent client connections.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests in total, split evenly across clients.
    #[arg(long, default_value_t = 200_000)]
    requests: usize,
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
    /// Run a README table: `ping` (against redis-benchmark) or `kv` (against one fsync
    /// per write).
    #[arg(long, value_enum)]
    suite: Option<Suite>,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `Ping`, answered by the connection's session.
    Ping,
    /// `GetStatus`, which asks the bus and the capsule registry.
    Status,
    /// `Publish` to `user.loadgen` (no subscribers).
    Publish,
    /// `GetSupervisionTree`, answered by the root supervisor.
    Tree,
    /// `KvPut` of a 64-byte value under a key of its own, answered once durable.
    Kvput,
    /// `KvGet` of one of the keys `kvput` writes (100 per client).
    Kvget,
    /// `InvokeCommand` of a capsule command.
    Invoke(String),
    /// `CallMcpTool` of a server's tool.
    Mcp {
        /// The server.
        server: String,
        /// The tool.
        tool: String,
    },
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    Ok(match text {
        "ping" => Kind::Ping,
        "status" => Kind::Status,
        "publish" => Kind::Publish,
        "tree" => Kind::Tree,
        "kvput" => Kind::Kvput,
        "kvget" => Kind::Kvget,
        _ => {
            if let Some(command) = text.strip_prefix("invoke:").filter(|c| !c.is_empty()) {
                Kind::Invoke(command.to_owned())
            } else if let Some((server, tool)) = text
                .strip_prefix("mcp:")
                .and_then(|t| t.split_once('/'))
                .filter(|(s, t)| !s.is_empty() && !t.is_empty())
            {
                Kind::Mcp {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                }
            } else {
                return Err(
                    "use ping, status, publish, tree, kvput, kvget, invoke:<command> or mcp:<server>/<tool>"
                        .into(),
                );
            }
        }
    })
}

impl Kind {
    /// Request number `n` of client `client`.
    fn request(&self, client: usize, n: usize) -> Request {
        match self {
            Self::Ping => Request::Ping,
            Self::Status => Request::GetStatus,
            Self::Publish => Request::Publish {
                topic: "user.loadgen".into(),
                payload: RawValue::encode(&42).unwrap_or_default(),
            },
            Self::Tree => Request::GetSupervisionTree,
            Self::Kvput => Request::KvPut {
                key: format!("loadgen/{client}/{}", n % 100),
                value: vec![b'v'; 64],
            },
            Self::Kvget => Request::KvGet {
                key: format!("loadgen/{client}/{}", n % 100),
            },
            Self::Invoke(command) => Request::InvokeCommand {
                name: command.clone(),
                args: Vec::new(),
            },
            Self::Mcp { server, tool } => Request::CallMcpTool {
                server: server.clone(),
                tool: tool.clone(),
                arguments: RawValue::from_value(&rmpv::Value::Map(vec![(
                    "text".into(),
                    "hi".into(),
                )]))
                .unwrap_or_default(),
            },
        }
    }
}

/// What one benchmark run measured.
#[derive(Debug, Clone)]
struct Report {
    label: String,
    requests: usize,
    elapsed: Duration,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    /// CPU time used per request by the daemon and by this load generator, in µs.
    cpu_us: Option<(f64, f64)>,
}

impl Report {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self) {
        let cpu = self.cpu_us.map_or(String::new(), |(daemon, us)| {
            format!("   cpu/req daemon {daemon:.1} us, loadgen {us:.1} us")
        });
        println!(
            "{:<44} {:>10.0} req/s   p50 {:>7.1} us   p99 {:>7.1} us   p99.9 {:>7.1} us{cpu}",
            self.label,
            self.rate(),
            self.p50_us,
            self.p99_us,
            self.p999_us
        );
    }
}

/// CPU time all threads of process `pid` have run so far: the sum of the first field of
/// `/proc/<pid>/task/*/schedstat` (nanoseconds). Threads that end during a run take theirs
/// with them; the daemon's and this program's live as long as the run.
fn cpu_time(pid: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .sum()
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)])
}

/// One client: returns the latency of every request, in microseconds.
async fn client(
    files: SessionFiles,
    kind: Kind,
    me: usize,
    count: usize,
    depth: usize,
) -> Vec<u32> {
    let mut stream = connect_socket(&files.socket()).await.unwrap();
    let token = read_token(&files).unwrap();
    handshake(&mut stream, &token, "loadgen").await.unwrap();
    let depth = depth.max(1);
    let mut sent_at = vec![Instant::now(); depth];
    let mut latencies = Vec::with_capacity(count);
    let mut out = BytesMut::with_capacity(64 * depth);
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut codec = FrameCodec::new(16 * 1024 * 1024);
    let (mut sent, mut done) = (0usize, 0usize);
    while done < count {
        // Top up the pipeline, then read whatever replies are there.
        while sent < count && sent - done < depth {
            let id = sent as u64;
            encode_frame(
                &mut out,
                &RequestFrame {
                    id,
                    request: kind.request(me, sent),
                },
            )
            .unwrap();
            sent_at[sent % depth] = Instant::now();
            sent += 1;
        }
        if !out.is_empty() {
            stream.write_all(&out).await.unwrap();
            out.clear();
        }
        let read = stream.read_buf(&mut input).await.unwrap();
        assert!(read > 0, "the daemon closed the connection");
        while let Some(frame) = codec.decode(&mut input).unwrap() {
            let head: FrameHead = rmp_serde::from_slice(&frame).unwrap();
            assert!(head.error.is_none(), "request failed: {:?}", head.error);
            let id = usize::try_from(head.id.expect("a reply")).unwrap();
            let micros = sent_at[id % depth].elapsed().as_micros();
            latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
            done += 1;
        }
    }
    latencies
}

async fn run_astrid(
    files: &SessionFiles,
    kind: &Kind,
    clients: usize,
    total: usize,
    depth: usize,
) -> Report {
    let per_client = total / clients;
    // The daemon's pid, from its pid file (first line).
    let daemon = std::fs::read_to_string(files.pid())
        .ok()
        .and_then(|text| Some(text.lines().next()?.trim().to_owned()));
    let cpu_at = || {
        daemon
            .as_deref()
            .map(|pid| (cpu_time(pid), cpu_time("self")))
    };
    let cpu_before = cpu_at();
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|me| {
            let kind = kind.clone();
            tokio::spawn(client(files.clone(), kind, me, per_client, depth))
        })
        .collect();
    let mut all = Vec::with_capacity(per_client * clients);
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = start.elapsed();
    let per_request = |cpu: Duration| cpu.as_secs_f64() * 1e6 / all.len() as f64;
    let cpu_us = cpu_before.zip(cpu_at()).map(|((d0, l0), (d1, l1))| {
        (
            per_request(d1.saturating_sub(d0)),
            per_request(l1.saturating_sub(l0)),
        )
    });
    all.sort_unstable();
    Report {
        label: format!("astrid {kind:?} c={clients} depth={depth}"),
        requests: all.len(),
        elapsed,
        p50_us: percentile(&all, 50.0),
        p99_us: percentile(&all, 99.0),
        p999_us: percentile(&all, 99.9),
        cpu_us,
    }
}

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) {
    let end = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(Instant::now() < end, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Copies example capsule `example` (a folder under `examples/capsules/`) into `home`'s
/// capsules as `name`, appending `extra` to its manifest.
fn install_capsule(home: &Path, example: &str, name: &str, extra: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/capsules")
        .join(example);
    let to = home.join("capsules").join(name);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
    let manifest = to.join("Capsule.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(manifest, format!("{text}\n{extra}")).unwrap();
}

/// Crash recovery of `crash-after`: `cycles` times, calls it until a call reports the
/// capsule crashed, then calls again until one succeeds; the time between those two
/// replies is one sample (microseconds).
async fn crash_recovery(files: &SessionFiles, cycles: usize) -> Vec<u32> {
    let client = Client::connect(files, "loadgen").await.unwrap();
    let invoke = || Request::InvokeCommand {
        name: "crash-after".into(),
        args: Vec::new(),
    };
    let mut samples = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        loop {
            match client.call::<CommandOutput>(invoke()).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(ErrorCode::CapsuleCrashed) => break,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        let crashed = Instant::now();
        loop {
            match client.call::<CommandOutput>(invoke()).await {
                Ok(_) => break,
                // Restarting, or a request that reached the old instance's mailbox.
                Err(e)
                    if matches!(
                        e.code(),
                        Some(ErrorCode::Unavailable | ErrorCode::CapsuleCrashed)
                    ) => {}
                Err(e) => panic!("unexpected error after the crash: {e}"),
            }
        }
        samples.push(u32::try_from(crashed.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    samples.sort_unstable();
    samples
}

fn capsules_suite(rt: &tokio::runtime::Runtime, files: &SessionFiles, requests: usize) {
    let echo = Kind::Invoke("echo".into());
    rt.block_on(run_astrid(files, &echo, 1, 10_000, 1));
    let mut rows = Vec::new();
    for clients in [1, 50] {
        let ping = rt.block_on(run_astrid(files, &Kind::Ping, clients, requests, 1));
        let invoke = rt.block_on(run_astrid(files, &echo, clients, requests, 1));
        ping.print();
        invoke.print();
        rows.push((clients, ping, invoke));
    }
    let samples = rt.block_on(crash_recovery(files, 1_000));
    println!(
        "crash recovery: {} samples, median {:.0} us, p99 {:.0} us, max {:.0} us",
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        percentile(&samples, 100.0)
    );
    println!(
        "\n| clients | `Ping` req/s (p50 / p99 us) | `InvokeCommand` echo req/s (p50 / p99 us) | invoke ÷ Ping | daemon CPU per request, `Ping` → invoke (us) |"
    );
    println!("|---|---|---|---|---|");
    let daemon_cpu = |r: &Report| r.cpu_us.map_or(f64::NAN, |(daemon, _)| daemon);
    for (clients, ping, invoke) in rows {
        println!(
            "| {clients} | {:.0} ({:.0} / {:.0}) | {:.0} ({:.0} / {:.0}) | {:.2}x | {:.1} → {:.1} |",
            ping.rate(),
            ping.p50_us,
            ping.p99_us,
            invoke.rate(),
            invoke.p50_us,
            invoke.p99_us,
            invoke.rate() / ping.rate(),
            daemon_cpu(&ping),
            daemon_cpu(&invoke),
        );
    }
}

fn mcp_suite(rt: &tokio::runtime::Runtime, files: &SessionFiles, requests: usize) {
    let echo = Kind::Mcp {
        server: "test".into(),
        tool: "echo".into(),
    };
    wait_mcp_running(rt, files);
    rt.block_on(run_astrid(files, &echo, 1, 2_000, 1));
    let mut rows = Vec::new();
    for clients in [1, 50] {
        let ping = rt.block_on(run_astrid(files, &Kind::Ping, clients, requests, 1));
        let call = rt.block_on(run_astrid(files, &echo, clients, requests, 1));
        ping.print();
        call.print();
        rows.push((clients, ping, call));
    }
    println!(
        "\n| clients | `Ping` req/s (p50 / p99 us) | `CallMcpTool` test/echo calls/s (p50 / p99 us) |"
    );
    println!("|---|---|---|");
    for (clients, ping, call) in rows {
        println!(
            "| {clients} | {:.0} ({:.0} / {:.0}) | {:.0} ({:.0} / {:.0}) |",
            ping.rate(),
            ping.p50_us,
            ping.p99_us,
            call.rate(),
            call.p50_us,
            call.p99_us,
        );
    }
}

/// Waits until the MCP server `test` has finished its handshake.
fn wait_mcp_running(rt: &tokio::runtime::Runtime, files: &SessionFiles) {
    rt.block_on(async {
        let client = Client::connect(files, "loadgen").await.unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let servers: Vec<McpServerInfo> = client.call(Request::ListMcpServers).await.unwrap();
            if servers
                .iter()
                .any(|s| s.name == "test" && s.state == McpServerState::Running)
            {
                return;
            }
            assert!(
                Instant::now() < end,
                "the MCP server did not start: {servers:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// Configures the example MCP server (the release build beside this example) as `test`.
fn install_mcp_server(home: &Path) {
    let exe = std::env::current_exe().unwrap();
    let server = exe.parent().unwrap().join("mcp-test-server");
    assert!(
        server.is_file(),
        "{} not found: run `cargo build --release --examples` first",
        server.display()
    );
    let config = format!(
        "[[server]]\nname = \"test\"\ncommand = \"{}\"\ncall_timeout = \"10s\"\n",
        server.display()
    );
    std::fs::write(home.join("mcp.toml"), config).unwrap();
}

/// Starts a persistent daemon in `home` from the release binary beside this example.
fn spawn_daemon(home: &Path) -> (Guard, SessionFiles) {
    let (guard, files, _) = spawn_daemon_with(home, &[]);
    (guard, files)
}

/// Starts a persistent daemon in `home` with `args`; also returns how long it took to be
/// ready (its ready file written).
fn spawn_daemon_with(home: &Path, args: &[&str]) -> (Guard, SessionFiles, Duration) {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("astrid-daemon");
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build --release --bins` first",
        bin.display()
    );
    let files = HomeLayout::new(home).session(uuid::Uuid::nil());
    let _ = std::fs::remove_file(files.ready());
    let started = Instant::now();
    let child = Command::new(&bin)
        .arg("--home")
        .arg(home)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = started + Duration::from_secs(15);
    while !files.ready().exists() {
        assert!(Instant::now() < end, "the daemon did not get ready");
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = started.elapsed();
    (Guard(child), files, took)
}

/// Per thread of process `pid`: its name and its context switches so far (voluntary and
/// not), by thread id.
fn switches(pid: u32) -> std::collections::BTreeMap<String, (String, u64)> {
    let mut all = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return all;
    };
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("")
            .trim()
            .to_owned();
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        all.insert(task.file_name().to_string_lossy().into_owned(), (name, n));
    }
    all
}

/// Wake-ups a second of process `pid` over `over`: context switches of every thread (a
/// thread that ends meanwhile counts what it did before the first look), and the threads
/// that had any, by name.
fn wakeups(pid: u32, over: Duration) -> (f64, Vec<(String, u64)>) {
    let before = switches(pid);
    std::thread::sleep(over);
    let after = switches(pid);
    let mut by_name = std::collections::BTreeMap::<String, u64>::new();
    for (tid, (name, n)) in &after {
        let was = before.get(tid).map_or(0, |(_, n)| *n);
        *by_name.entry(name.clone()).or_default() += n.saturating_sub(was);
    }
    let total: u64 = by_name.values().sum();
    let mut busy: Vec<(String, u64)> = by_name.into_iter().filter(|(_, n)| *n > 0).collect();
    busy.sort_by_key(|b| std::cmp::Reverse(b.1));
    (total as f64 / over.as_secs_f64(), busy)
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `RssAnon`, ...).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The daemon's threads.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

/// Stops the daemon with SIGTERM and waits for it.
fn stop(mut guard: Guard) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(guard.0.id().to_string())
        .status();
    let _ = guard.0.wait();
}

/// Installs `n` copies of the example `echo` named `e1`.. (command `e1`..), and, when
/// `hello` is set, every other one a copy of `hello-rust` instead (named `h2`..).
fn install_many(home: &Path, n: usize, hello: bool) {
    for i in 1..=n {
        let (example, name) = if hello && i % 2 == 0 {
            ("hello-rust", format!("h{i}"))
        } else {
            ("echo", format!("e{i}"))
        };
        install_capsule(home, example, &name, "");
        let manifest = home.join("capsules").join(&name).join("Capsule.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        // The capsule's name (the first `name`); an echo copy's command too.
        let mut text = text.replacen(
            &format!("name = \"{example}\""),
            &format!("name = \"{name}\""),
            1,
        );
        if example == "echo" {
            text = text.replacen("name = \"echo\"", &format!("name = \"{name}\""), 1);
        }
        std::fs::write(manifest, text).unwrap();
    }
}

/// How the idle daemon is doing now: RSS (total, anonymous), threads, wake-ups a second.
fn idle_figures(label: &str, pid: u32) -> (u64, u64, f64) {
    let (rss, anon) = (status_kib(pid, "VmRSS"), status_kib(pid, "RssAnon"));
    let (rate, busy) = wakeups(pid, Duration::from_secs(10));
    let busy: Vec<String> = busy.iter().map(|(n, c)| format!("{n} {c}")).collect();
    println!(
        "{label:<44} RSS {:>6.1} MiB (anonymous {:>5.1} MiB), {:>2} threads, {rate:.1} wake-ups/s over 10 s ({})",
        rss as f64 / 1024.0,
        anon as f64 / 1024.0,
        threads(pid),
        busy.join(", ")
    );
    (rss, anon, rate)
}

/// The first call of an idle capsule, and the next three calls of the same one, warm, in
/// microseconds: the 20 echo capsules of `home`, 10 rounds; a short linger retires them
/// between rounds.
fn first_calls(rt: &tokio::runtime::Runtime, home: &Path) -> (Vec<u32>, Vec<u32>) {
    let (daemon, files, _) = spawn_daemon_with(home, &["--capsule-linger", "100ms"]);
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    rt.block_on(async {
        let client = Client::connect(&files, "loadgen").await.unwrap();
        let call = |name: String| {
            let client = &client;
            async move {
                let started = Instant::now();
                client
                    .call::<CommandOutput>(Request::InvokeCommand {
                        name,
                        args: Vec::new(),
                    })
                    .await
                    .unwrap();
                u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX)
            }
        };
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for i in 1..=20 {
                cold.push(call(format!("e{i}")).await);
                for _ in 0..3 {
                    warm.push(call(format!("e{i}")).await);
                }
            }
        }
    });
    stop(daemon);
    (cold, warm)
}

fn idle_suite(rt: &tokio::runtime::Runtime) {
    // Long enough for the blocking pool's threads (10 s) and capsule threads (5 s) to end.
    const SETTLE: Duration = Duration::from_secs(11);
    let tmp = |what: &str| {
        tempfile::Builder::new()
            .prefix(&format!("loadgen-idle-{what}"))
            .tempdir_in("/tmp")
            .unwrap()
    };

    // No capsule.
    let none = tmp("none");
    let (daemon, _, took) = spawn_daemon_with(none.path(), &[]);
    println!(
        "ready with no capsule in {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    std::thread::sleep(SETTLE);
    idle_figures("no capsule, no client", daemon.0.id());
    stop(daemon);

    // 10 example capsules: 5 echo, 5 hello-rust.
    let ten = tmp("ten");
    install_many(ten.path(), 10, true);
    // The first boot compiles the modules (Cranelift's memory and its thread pool stay);
    // the figures are those of a daemon booted from the compile cache, as after a restart.
    let (daemon, _, took) = spawn_daemon_with(ten.path(), &[]);
    println!(
        "ready with 10 capsules, compiled: {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    std::thread::sleep(SETTLE);
    let pid = daemon.0.id();
    println!(
        "10 capsules, compiled at this boot: RSS {:.1} MiB, {} threads",
        status_kib(pid, "VmRSS") as f64 / 1024.0,
        threads(pid)
    );
    stop(daemon);
    let (daemon, files, took) = spawn_daemon_with(ten.path(), &[]);
    println!(
        "ready with 10 capsules from the compile cache: {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    std::thread::sleep(SETTLE);
    let pid = daemon.0.id();
    idle_figures("10 capsules, never called", pid);
    rt.block_on(async {
        let client = Client::connect(&files, "loadgen").await.unwrap();
        for i in 1..=10 {
            let name = if i % 2 == 0 {
                "hello"
            } else {
                &format!("e{i}")
            };
            client
                .call::<CommandOutput>(Request::InvokeCommand {
                    name: name.to_owned(),
                    args: Vec::new(),
                })
                .await
                .unwrap();
        }
    });
    std::thread::sleep(Duration::from_secs(6));
    idle_figures("10 capsules, each called, then idle 6 s", pid);
    stop(daemon);

    // Boot to ready with 20 capsules, from the compile cache (the first boot fills it).
    let twenty = tmp("twenty");
    install_many(twenty.path(), 20, false);
    let (daemon, _, took) = spawn_daemon_with(twenty.path(), &[]);
    println!(
        "ready with 20 capsules, compiled: {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    stop(daemon);
    let mut boots = Vec::new();
    for _ in 0..5 {
        let (daemon, _, took) = spawn_daemon_with(twenty.path(), &[]);
        boots.push(took);
        stop(daemon);
    }
    boots.sort();
    let ms: Vec<String> = boots
        .iter()
        .map(|t| format!("{:.1}", t.as_secs_f64() * 1e3))
        .collect();
    println!(
        "ready with 20 capsules from the compile cache: median {} ms (5 boots: {})",
        ms[2],
        ms.join(", ")
    );

    let (mut cold, mut warm) = first_calls(rt, twenty.path());
    cold.sort_unstable();
    warm.sort_unstable();
    println!(
        "first call of an idle capsule: median {:.0} us, p99 {:.0} us ({} calls); next calls, warm: median {:.0} us, p99 {:.0} us ({} calls); difference of medians {:.0} us",
        percentile(&cold, 50.0),
        percentile(&cold, 99.0),
        cold.len(),
        percentile(&warm, 50.0),
        percentile(&warm, 99.0),
        warm.len(),
        percentile(&cold, 50.0) - percentile(&warm, 50.0),
    );
}

fn spawn_redis(dir: &Path) -> (Guard, PathBuf) {
    let socket = dir.join("redis.sock");
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--unixsocketperm",
            "700",
        ])
        .arg("--unixsocket")
        .arg(&socket)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server not found (apt-get install redis-server redis-tools)");
    wait_for(&socket);
    (Guard(child), socket)
}

/// Runs `redis-benchmark -t ping` and returns its `PING_INLINE` and `PING_MBULK` rows.
fn run_redis(socket: &Path, clients: usize, total: usize, depth: usize) -> Vec<Report> {
    let out = Command::new("redis-benchmark")
        .arg("-s")
        .arg(socket)
        .args(["-t", "ping", "--csv"])
        .args([
            "-n",
            &total.to_string(),
            "-c",
            &clients.to_string(),
            "-P",
            &depth.to_string(),
        ])
        .output()
        .expect("redis-benchmark not found (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split(',').map(|c| c.trim_matches('"')).collect();
            let rps: f64 = cols.get(1)?.parse().ok()?;
            let p50: f64 = cols.get(4)?.parse().ok()?;
            let p99: f64 = cols.get(6)?.parse().ok()?;
            Some(Report {
                label: format!("redis {} c={clients} depth={depth}", cols[0]),
                requests: total,
                elapsed: Duration::from_secs_f64(total as f64 / rps),
                p50_us: p50 * 1000.0,
                p99_us: p99 * 1000.0,
                p999_us: f64::NAN,
                cpu_us: None,
            })
        })
        .collect()
}

/// Writes `n` keys with one durable redb commit each, in a fresh database under `dir`:
/// the rate one fsync per write allows on this file system.
fn fsync_baseline(dir: &Path, n: usize) -> Report {
    const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
    let db = redb::Database::create(dir.join("baseline.redb")).unwrap();
    let value = [b'v'; 64];
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let began = Instant::now();
        let tx = db.begin_write().unwrap();
        {
            let mut table = tx.open_table(TABLE).unwrap();
            table.insert(format!("k{i}").as_str(), &value[..]).unwrap();
        }
        tx.commit().unwrap();
        latencies.push(u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Report {
        label: "redb, one commit (fsync) per put".into(),
        requests: n,
        elapsed,
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
        p999_us: percentile(&latencies, 99.9),
        cpu_us: None,
    }
}

fn ping_suite(rt: &tokio::runtime::Runtime, files: &SessionFiles, dir: &Path, requests: usize) {
    let (_redis, socket) = spawn_redis(dir);
    // Warm up both servers (connection set-up, allocator, page cache) before measuring.
    rt.block_on(run_astrid(files, &Kind::Ping, 1, 10_000, 1));
    let mut rows = Vec::new();
    for (clients, total, depth) in [(1, requests, 1), (50, requests, 1), (50, requests * 5, 16)] {
        let ours = rt.block_on(run_astrid(files, &Kind::Ping, clients, total, depth));
        ours.print();
        let theirs = run_redis(&socket, clients, total, depth);
        for r in &theirs {
            r.print();
        }
        rows.push((clients, depth, ours, theirs));
    }
    println!(
        "\n| clients | in flight per client | astrid Ping req/s (p50 / p99 us) | redis PING_INLINE req/s | redis PING_MBULK req/s | astrid / best redis |"
    );
    println!("|---|---|---|---|---|---|");
    for (clients, depth, ours, theirs) in rows {
        let best = theirs.iter().map(Report::rate).fold(0.0, f64::max);
        let cell = |name: &str| {
            theirs
                .iter()
                .find(|r| r.label.contains(name))
                .map_or("-".to_owned(), |r| {
                    format!("{:.0} ({:.0} / {:.0})", r.rate(), r.p50_us, r.p99_us)
                })
        };
        println!(
            "| {clients} | {depth} | {:.0} ({:.0} / {:.0}) | {} | {} | {:.2}x |",
            ours.rate(),
            ours.p50_us,
            ours.p99_us,
            cell("PING_INLINE"),
            cell("PING_MBULK"),
            ours.rate() / best
        );
    }
}

fn kv_suite(rt: &tokio::runtime::Runtime, files: &SessionFiles, dir: &Path, requests: usize) {
    let baseline = fsync_baseline(dir, 2_000);
    baseline.print();
    let runs = [
        rt.block_on(run_astrid(files, &Kind::Kvput, 1, 2_000, 1)),
        rt.block_on(run_astrid(files, &Kind::Kvput, 50, requests, 1)),
        rt.block_on(run_astrid(files, &Kind::Kvget, 1, requests, 1)),
        rt.block_on(run_astrid(files, &Kind::Kvget, 50, requests, 1)),
    ];
    for r in &runs {
        r.print();
    }
    println!("\n| what | clients | req/s | p50 / p99 us | ÷ one fsync per put |");
    println!("|---|---|---|---|---|");
    let row = |what: &str, clients: &str, r: &Report| {
        println!(
            "| {what} | {clients} | {:.0} | {:.0} / {:.0} | {:.1}x |",
            r.rate(),
            r.p50_us,
            r.p99_us,
            r.rate() / baseline.rate()
        );
    };
    row("redb commit per put (baseline)", "-", &baseline);
    row("`KvPut`, durable, audited", "1", &runs[0]);
    row("`KvPut`, durable, audited", "50", &runs[1]);
    row("`KvGet`, audited", "1", &runs[2]);
    row("`KvGet`, audited", "50", &runs[3]);
}

fn main() {
    let args = Args::parse();
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
    if args.suite == Some(Suite::Idle) {
        return idle_suite(&rt);
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
        Some(Suite::Ping) => return ping_suite(&rt, &files, tmp.path(), args.requests),
        Some(Suite::Kv) => return kv_suite(&rt, &files, tmp.path(), args.requests),
        Some(Suite::Capsules) => return capsules_suite(&rt, &files, args.requests),
        Some(Suite::Mcp) => return mcp_suite(&rt, &files, args.requests),
        Some(Suite::Idle) | None => {}
    }
    let ours = rt.block_on(run_astrid(
        &files,
        &args.kind,
        args.clients,
        args.requests,
        args.depth,
    ));
    ours.print();
    if args.redis {
        let (_redis, socket) = spawn_redis(tmp.path());
        for r in run_redis(&socket, args.clients, args.requests, args.depth) {
            r.print();
        }
    }
}
