//! `--suite kv`: durable `KvPut`s and `KvGet`s next to what one fsync per write allows on
//! this machine (redb commits of one put each, on the same file system).

use std::path::Path;
use std::time::Instant;

use astrid_protocol::layout::SessionFiles;

use crate::bench::run_astrid;
use crate::kind::Kind;
use crate::report::{Report, percentile};

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

pub(crate) fn kv_suite(
    rt: &tokio::runtime::Runtime,
    files: &SessionFiles,
    dir: &Path,
    requests: usize,
) {
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
    row("`KvGet` (not audited by default)", "1", &runs[2]);
    row("`KvGet` (not audited by default)", "50", &runs[3]);
}
