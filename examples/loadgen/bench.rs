//! The closed-loop run behind every table: `--clients` connections, each keeping `--depth`
//! requests of one [`Kind`] in flight, every reply decoded and checked, and its latency
//! recorded.

use std::time::{Duration, Instant};

use astrid_protocol::client::{connect_socket, handshake, read_token};
use astrid_protocol::layout::SessionFiles;
use astrid_protocol::{FrameCodec, FrameHead, RequestFrame, encode_frame};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

use crate::kind::Kind;
use crate::procfs::cpu_time;
use crate::report::{Report, percentile};

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

pub(crate) async fn run_astrid(
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
