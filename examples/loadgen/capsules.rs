//! `--suite capsules`: `InvokeCommand` of the example `echo` capsule next to `Ping`, and
//! crash recovery of `crash-after`.

use std::time::Instant;

use astrid_protocol::client::Client;
use astrid_protocol::layout::SessionFiles;
use astrid_protocol::{CommandOutput, ErrorCode, Request};

use crate::bench::run_astrid;
use crate::kind::Kind;
use crate::report::{Report, percentile};

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

pub(crate) fn capsules_suite(rt: &tokio::runtime::Runtime, files: &SessionFiles, requests: usize) {
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
