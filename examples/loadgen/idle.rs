//! `--suite idle`: an idle daemon with no client: RSS and wake-ups a second with and
//! without capsules, boot to ready, and the first call of an idle capsule.

use std::path::Path;
use std::time::{Duration, Instant};

use astrid_protocol::client::Client;
use astrid_protocol::{CommandOutput, Request};

use crate::daemon::{install_many, spawn_daemon_with, stop};
use crate::procfs::{status_kib, threads, wakeups};
use crate::report::percentile;

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

pub(crate) fn idle_suite(rt: &tokio::runtime::Runtime) {
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
