//! `--suite ping` and `--redis`: `Ping` next to `redis-benchmark -t ping` on a
//! `redis-server` over a Unix socket, started here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use astrid_protocol::layout::SessionFiles;

use crate::bench::run_astrid;
use crate::daemon::{Guard, wait_for};
use crate::kind::Kind;
use crate::report::Report;

pub(crate) fn spawn_redis(dir: &Path) -> (Guard, PathBuf) {
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
pub(crate) fn run_redis(socket: &Path, clients: usize, total: usize, depth: usize) -> Vec<Report> {
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

pub(crate) fn ping_suite(
    rt: &tokio::runtime::Runtime,
    files: &SessionFiles,
    dir: &Path,
    requests: usize,
) {
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
