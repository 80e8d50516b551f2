//! `--suite soak` and `--suite status-growth`: one persistent daemon under a long, fixed mix
//! of requests, sampled at intervals for what grows (RSS, open files, threads, `state/` on
//! disk), with every reply checked and every error counted by request and code.
//!
//! The soak mix ([`SOAK_MIX`]) covers the daemon's main paths: `GetStatus`, `Publish` to
//! topics that subscriber connections drain, `KvPut`/`KvGet`/`KvDelete` over a bounded key
//! set, `InvokeCommand` of the example `echo` capsule, `VfsWrite` over a bounded set of
//! workspace paths, and, 1 request in 5,000, a call of the fault capsule `trap`, which crashes
//! it (the capsule is restarted without backoff). `status-growth` sends only `GetStatus`, to
//! measure what reads cost in `state/` (the audit log).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use astrid_protocol::client::{Client, connect_socket, handshake, read_token};
use astrid_protocol::layout::SessionFiles;
use astrid_protocol::{
    ErrorCode, FrameCodec, FrameHead, Request, RequestFrame, Status, Verification, encode_frame,
};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use crate::daemon::{install_capsule, spawn_daemon_with, stop};
use crate::growth::{Sample, mib, print_growth, state_sizes};
use crate::mix::{KEYS, Op, PATHS, Rng, SOAK_MIX, STATUS_MIX, TOPICS};
use crate::procfs::cpu_time;
use crate::report::percentile;

/// Samples over the run, besides the one at the start (every 5%).
const SAMPLES: usize = 20;
/// How long a request may go unanswered before the run fails.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// What the clients share: the requests answered so far (all clients), the errors, and
/// where to say that another 5% is done.
#[derive(Debug)]
struct Progress {
    done: AtomicUsize,
    errors: AtomicU64,
    unexpected: AtomicU64,
    total: usize,
    milestones: mpsc::UnboundedSender<()>,
}

impl Progress {
    /// Counts one answer; at every 5% of the total, wakes the sampler.
    fn answered(&self) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if n * SAMPLES / self.total > (n - 1) * SAMPLES / self.total {
            let _ = self.milestones.send(());
        }
    }
}

/// What one client saw, per request kind.
#[derive(Debug, Default)]
struct Tally {
    /// Latencies in microseconds, by request kind.
    latencies: HashMap<Op, Vec<u32>>,
    /// Error replies, by request kind and code.
    errors: HashMap<(Op, ErrorCode), u64>,
}

impl Tally {
    fn merge(&mut self, other: Self) {
        for (op, mut l) in other.latencies {
            self.latencies.entry(op).or_default().append(&mut l);
        }
        for (key, n) in other.errors {
            *self.errors.entry(key).or_default() += n;
        }
    }
}

/// One client of the mix: sends `count` requests, `depth` in flight, and waits for every
/// answer. Returns the connection with the tally, so that it stays open until every client
/// is done (the last sample sees as many connections as the others).
async fn soak_client(
    files: SessionFiles,
    mix: &'static [(Op, u32)],
    me: usize,
    count: usize,
    depth: usize,
    progress: Arc<Progress>,
) -> (Tally, tokio::net::UnixStream) {
    let mut stream = connect_socket(&files.socket()).await.unwrap();
    let token = read_token(&files).unwrap();
    handshake(&mut stream, &token, "loadgen-soak")
        .await
        .unwrap();
    let mut rng = Rng::new(me as u64);
    let depth = depth.max(1);
    let mut in_flight: HashMap<u64, (Instant, Op)> = HashMap::with_capacity(depth);
    let mut tally = Tally::default();
    let mut out = BytesMut::with_capacity(512 * depth);
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut codec = FrameCodec::new(16 * 1024 * 1024);
    let (mut sent, mut done) = (0usize, 0usize);
    while done < count {
        while sent < count && in_flight.len() < depth {
            let op = rng.pick(mix);
            let id = sent as u64;
            encode_frame(
                &mut out,
                &RequestFrame {
                    id,
                    request: op.request(&mut rng),
                },
            )
            .unwrap();
            in_flight.insert(id, (Instant::now(), op));
            sent += 1;
        }
        if !out.is_empty() {
            stream.write_all(&out).await.unwrap();
            out.clear();
        }
        let read = tokio::time::timeout(ANSWER_WITHIN, stream.read_buf(&mut input))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "client {me}: no answer within {} s ({} requests in flight)",
                    ANSWER_WITHIN.as_secs(),
                    in_flight.len()
                )
            })
            .unwrap();
        assert!(read > 0, "the daemon closed the connection");
        while let Some(frame) = codec.decode(&mut input).unwrap() {
            let head: FrameHead = rmp_serde::from_slice(&frame).unwrap();
            let Some(id) = head.id else {
                // An event: this connection subscribes to nothing.
                continue;
            };
            let (at, op) = in_flight
                .remove(&id)
                .expect("a reply to a request in flight");
            let micros = u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX);
            tally.latencies.entry(op).or_default().push(micros);
            if let Some(error) = head.error {
                *tally.errors.entry((op, error.code)).or_default() += 1;
                progress.errors.fetch_add(1, Ordering::Relaxed);
                if !op.expects(error.code) {
                    progress.unexpected.fetch_add(1, Ordering::Relaxed);
                }
            }
            done += 1;
            progress.answered();
        }
    }
    (tally, stream)
}

/// A subscriber connection: subscribes to `pattern` and drains its events, counting them.
async fn subscriber(files: SessionFiles, pattern: String, received: Arc<AtomicU64>) {
    let mut client = Client::connect(&files, "loadgen-subscriber").await.unwrap();
    client
        .call::<rmpv::Value>(Request::Subscribe { pattern })
        .await
        .unwrap();
    while client.next_event().await.is_some() {
        received.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which run: the soak mix or `GetStatus` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// `--suite soak`.
    Soak,
    /// `--suite status-growth`.
    StatusGrowth,
}

/// What a run is made of.
#[derive(Debug)]
struct Plan {
    flavour: Flavour,
    mix: &'static [(Op, u32)],
    /// The patterns of the subscriber connections.
    subscribers: &'static [&'static str],
    clients: usize,
    requests: usize,
    depth: usize,
}

impl Plan {
    fn print(&self, pid: u32, home: &std::path::Path) {
        println!(
            "{} requests from {} clients, {} in flight each; daemon pid {pid}, home {}",
            self.requests,
            self.clients,
            self.depth,
            home.display()
        );
        let weights: u32 = self.mix.iter().map(|(_, w)| w).sum();
        let mut line = String::from("mix:");
        for (op, w) in self.mix {
            let _ = write!(
                line,
                " {} {:.2}%,",
                op.name(),
                f64::from(*w) * 100.0 / f64::from(weights)
            );
        }
        line.pop();
        println!("{line}");
        if !self.subscribers.is_empty() {
            println!(
                "subscribers: {} (each drains its events); keys: {KEYS}; workspace files: {PATHS}; topics: {TOPICS}",
                self.subscribers.join(", ")
            );
        }
    }
}

/// What a run measured.
#[derive(Debug)]
struct Run {
    samples: Vec<Sample>,
    tally: Tally,
    elapsed: Duration,
    /// CPU time of the daemon and of this program over the run.
    cpu: (Duration, Duration),
    /// Events each subscriber read.
    received: Vec<u64>,
}

/// Runs `--suite soak` or `--suite status-growth`: spawns a daemon in a temporary home
/// (with a workspace of its own, and `config` as its `config.toml` if given), loads it with
/// `requests` requests from `clients` connections, `depth` in flight each, and reports.
pub(crate) fn soak_suite(
    rt: &tokio::runtime::Runtime,
    (flavour, clients, requests, depth): (Flavour, usize, usize, usize),
    config: Option<&Path>,
) {
    assert!(
        clients > 0 && requests >= clients,
        "need at least one request per client"
    );
    let home = tempfile::Builder::new()
        .prefix("loadgen-soak-home")
        .tempdir_in("/tmp")
        .unwrap();
    let workspace = tempfile::Builder::new()
        .prefix("loadgen-soak-workspace")
        .tempdir_in("/tmp")
        .unwrap();
    if let Some(config) = config {
        std::fs::copy(config, home.path().join("config.toml"))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", config.display()));
        println!("daemon configuration ({}):", config.display());
        print!("{}", std::fs::read_to_string(config).unwrap_or_default());
    }
    let (mix, subscribers): (_, &[&str]) = match flavour {
        Flavour::Soak => {
            install_capsule(home.path(), "echo", "echo", "");
            install_capsule(
                home.path(),
                "faults/trap",
                "trap",
                "[restart]\nintensity = 1000\nperiod = \"10ms\"\nbackoff = \"0s\"\n",
            );
            (SOAK_MIX, &["user.soak.>", "user.soak.t0", "user.soak.*"])
        }
        Flavour::StatusGrowth => (STATUS_MIX, &[]),
    };
    let plan = Plan {
        flavour,
        mix,
        subscribers,
        clients,
        requests,
        depth,
    };
    let workspace_arg = workspace.path().to_str().unwrap();
    let (daemon, files, _) = spawn_daemon_with(home.path(), &["--workspace", workspace_arg]);
    let pid = daemon.0.id();
    let state = home.path().join("state");
    plan.print(pid, home.path());

    let run = rt.block_on(load(&plan, &files, pid, &state));
    let (status, verified) = rt.block_on(async {
        let client = Client::connect(&files, "loadgen").await.unwrap();
        let status = client.status().await.unwrap();
        let started = Instant::now();
        let verification: Verification = client.call(Request::AuditVerify).await.unwrap();
        (status, (verification, started.elapsed()))
    });
    stop(daemon);

    report(&run.samples, &run.tally, run.elapsed, requests, run.cpu);
    print_outcome(&plan, &run, &status, &state);
    let (v, took) = verified;
    println!(
        "audit log at the end: {} entries{}, verified through the socket in {:.0} ms ({})",
        v.entries,
        v.pruned.map_or_else(String::new, |p| format!(
            " (entries {}..={} pruned, checked from their anchor)",
            p.first, p.last
        )),
        took.as_secs_f64() * 1e3,
        if v.ok { "intact" } else { "BROKEN" }
    );
}

/// Loads the daemon `pid` as `plan` says, sampling it and its `state` folder every 5%.
async fn load(plan: &Plan, files: &SessionFiles, pid: u32, state: &std::path::Path) -> Run {
    let received: Vec<Arc<AtomicU64>> = plan.subscribers.iter().map(|_| Arc::default()).collect();
    let subs: Vec<_> = plan
        .subscribers
        .iter()
        .zip(&received)
        .map(|(pattern, count)| {
            tokio::spawn(subscriber(
                files.clone(),
                (*pattern).to_owned(),
                Arc::clone(count),
            ))
        })
        .collect();
    // Let the subscriptions land before the first `Publish`.
    wait_subscribed(files, plan.subscribers.len()).await;

    let (milestones, mut reached) = mpsc::unbounded_channel();
    let progress = Arc::new(Progress {
        done: AtomicUsize::new(0),
        errors: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        total: plan.requests,
        milestones,
    });
    Sample::print_header();
    let pid_text = pid.to_string();
    let cpu_before = (cpu_time(&pid_text), cpu_time("self"));
    let start = Instant::now();
    let take = |progress: &Progress| {
        Sample::take(
            pid,
            state,
            start.elapsed(),
            progress.done.load(Ordering::Relaxed),
            progress.errors.load(Ordering::Relaxed),
            progress.unexpected.load(Ordering::Relaxed),
        )
    };
    let first = take(&progress);
    first.print_row(plan.requests, None);
    let mut samples = vec![first];
    let (clients, requests) = (plan.clients, plan.requests);
    let tasks: Vec<_> = (0..clients)
        .map(|me| {
            let count = requests / clients + usize::from(me < requests % clients);
            tokio::spawn(soak_client(
                files.clone(),
                plan.mix,
                me,
                count,
                plan.depth,
                Arc::clone(&progress),
            ))
        })
        .collect();
    for _ in 0..SAMPLES {
        reached.recv().await.unwrap();
        let s = take(&progress);
        s.print_row(requests, samples.last());
        samples.push(s);
    }
    let mut tally = Tally::default();
    let mut connections = Vec::with_capacity(clients);
    for task in tasks {
        let (t, connection) = task.await.unwrap();
        tally.merge(t);
        connections.push(connection);
    }
    drop(connections);
    let elapsed = start.elapsed();
    let cpu = (
        cpu_time(&pid_text).saturating_sub(cpu_before.0),
        cpu_time("self").saturating_sub(cpu_before.1),
    );
    // Let the subscribers drain what is left, then stop them.
    let mut last = u64::MAX;
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let now: u64 = received.iter().map(|r| r.load(Ordering::Relaxed)).sum();
        if now == last || Instant::now() > end {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for s in subs {
        s.abort();
    }
    Run {
        samples,
        tally,
        elapsed,
        cpu,
        received: received.iter().map(|r| r.load(Ordering::Relaxed)).collect(),
    }
}

/// Prints what the daemon said at the end (`status`: the bus, the crashing capsule) and
/// the size of `state` after it stopped.
fn print_outcome(plan: &Plan, run: &Run, status: &Status, state: &std::path::Path) {
    if let Some(bus) = status.bus.as_ref().filter(|_| !plan.subscribers.is_empty()) {
        println!(
            "bus: {} events published, {} delivered to subscriber queues, {} dropped (queue full); the subscribers read {} ({})",
            bus.published,
            bus.delivered,
            bus.dropped,
            run.received.iter().sum::<u64>(),
            plan.subscribers
                .iter()
                .zip(&run.received)
                .map(|(p, n)| format!("{p}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if plan.mix.iter().any(|(op, _)| *op == Op::Crash) {
        let crashed = run
            .tally
            .errors
            .get(&(Op::Crash, ErrorCode::CapsuleCrashed))
            .copied()
            .unwrap_or(0);
        let trap = status.capsules.iter().find(|c| c.name == "trap");
        println!(
            "capsule crashes: {crashed} calls answered `capsule_crashed`; `trap` is now {}, restarted {} times",
            trap.map_or("missing".to_owned(), |c| format!("{:?}", c.state)),
            trap.map_or(0, |c| c.restarts)
        );
    }
    let (after_stop, ledger_after_stop, journal_after_stop) = state_sizes(state);
    let (first, last) = (run.samples[0], run.samples[run.samples.len() - 1]);
    let grew = after_stop.saturating_sub(first.state);
    println!(
        "state/ after a clean shutdown: {:.1} MiB (ledger.redb {:.1} MiB, journal {:.1} MiB); grew {:.1} MiB over the run, {:.0} bytes per request",
        mib(after_stop),
        mib(ledger_after_stop),
        mib(journal_after_stop),
        mib(grew),
        grew as f64 / plan.requests as f64
    );
    if plan.flavour == Flavour::StatusGrowth {
        println!(
            "status-growth: {} `GetStatus` grew state/ by {:.1} MB, ledger.redb by {:.1} MB ({:.1} MB per million requests; the issue's target: under 5 MB per million); while running, state/ went {:.1} MiB → {:.1} MiB",
            plan.requests,
            grew as f64 / 1e6,
            ledger_after_stop.saturating_sub(first.ledger) as f64 / 1e6,
            grew as f64 / plan.requests as f64,
            mib(first.state),
            mib(last.state),
        );
    }
}

/// Waits until the daemon counts `n` subscribers on the bus.
async fn wait_subscribed(files: &SessionFiles, n: usize) {
    if n == 0 {
        return;
    }
    let client = Client::connect(files, "loadgen").await.unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.status().await.unwrap();
        let subscribed = status.bus.as_ref().map_or(0, |b| {
            b.subscribers
                .iter()
                .filter(|s| !s.patterns.is_empty())
                .count()
        });
        if subscribed >= n {
            return;
        }
        assert!(Instant::now() < end, "the subscribers did not subscribe");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Prints the end of a run: rate, per-request figures, and growth.
fn report(
    samples: &[Sample],
    tally: &Tally,
    elapsed: Duration,
    requests: usize,
    cpu: (Duration, Duration),
) {
    let per_request = |d: Duration| d.as_secs_f64() * 1e6 / requests as f64;
    println!(
        "\n{requests} requests in {:.1} s: {:.0} req/s overall; CPU per request: daemon {:.1} us, loadgen {:.1} us",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        per_request(cpu.0),
        per_request(cpu.1),
    );
    println!("\n| request | sent | errors (by code) | p50 / p99 / p99.9 us |");
    println!("|---|---|---|---|");
    let mut ops: Vec<&Op> = tally.latencies.keys().collect();
    ops.sort();
    let mut unexpected = 0;
    for op in ops {
        let mut l = tally.latencies[op].clone();
        l.sort_unstable();
        let mut errors: Vec<String> = tally
            .errors
            .iter()
            .filter(|((o, _), _)| o == op)
            .map(|((_, code), n)| {
                if !op.expects(*code) {
                    unexpected += n;
                }
                let mark = if op.expects(*code) {
                    ""
                } else {
                    " (unexpected)"
                };
                format!("{code:?} {n}{mark}")
            })
            .collect();
        errors.sort();
        println!(
            "| {} | {} | {} | {:.0} / {:.0} / {:.0} |",
            op.name(),
            l.len(),
            if errors.is_empty() {
                "0".to_owned()
            } else {
                errors.join(", ")
            },
            percentile(&l, 50.0),
            percentile(&l, 99.0),
            percentile(&l, 99.9),
        );
    }
    println!(
        "every request answered; unexpected errors: {unexpected}{}",
        if unexpected == 0 { "" } else { " (see above)" }
    );
    print_growth(samples, requests);
}
