//! `GetMetrics`, `astrid metrics` and `astrid top` against a real daemon: the metrics text is
//! parsed by Python's `prometheus_client` (its OpenMetrics parser, a reference
//! implementation of the format; `.ci/run` installs it), and the values the daemon reports
//! are checked against the requests, capsule calls and crash the test made. `astrid top` is
//! driven through pipes: it must show the tree and a capsule's rate, then quit on `q`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use astrid::client::Client;
use astrid::protocol::{CommandOutput, ErrorCode, Request, Written};

use crate::common::{DEADLINE, TestDaemon, cli_bin, failure, output_text, poll_async};

/// Reads OpenMetrics text on standard input with `prometheus_client`'s parser and prints
/// every sample as one JSON object per line.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"family": family.name, "type": family.type,
                          "name": s.name, "labels": s.labels, "value": s.value}))
"#;

/// One parsed sample.
#[derive(Debug, serde::Deserialize)]
struct Parsed {
    family: String,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of `text` as the reference parser reads them; `None` when the parser is not
/// installed (a failure under CI, which installs it).
fn parse(text: &str) -> Option<Vec<Parsed>> {
    let has_parser = Command::new("python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_parser {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 with prometheus_client is needed (`.ci/run` installs it)"
        );
        eprintln!("skipped: python3's prometheus_client is not installed");
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

/// The value of the sample `name` with exactly these labels (0 when absent: the daemon
/// leaves out request outcomes that never happened).
fn value(samples: &[Parsed], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map_or(0.0, |s| s.value)
}

/// Each histogram's buckets `(le, count)`, by family and labels (without `le`).
type Series = BTreeMap<(String, Vec<(String, String)>), Vec<(f64, f64)>>;

/// Every histogram's buckets grow with their bound, and the `+Inf` bucket is the count.
fn check_histograms(samples: &[Parsed]) {
    let mut series = Series::new();
    for s in samples.iter().filter(|s| s.kind == "histogram") {
        if s.name.ends_with("_bucket") {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").unwrap();
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            series
                .entry((s.family.clone(), labels.into_iter().collect()))
                .or_default()
                .push((bound, s.value));
        }
    }
    assert!(!series.is_empty(), "no histogram");
    for ((family, labels), mut buckets) in series {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{family} {labels:?}: {buckets:?}"
        );
        let label_refs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count = value(samples, &format!("{family}_count"), &label_refs);
        assert!(
            (buckets.last().unwrap().1 - count).abs() < f64::EPSILON,
            "{family} {labels:?}: +Inf is not the count {count}"
        );
    }
}

async fn invoke(client: &Client, name: &str) -> Result<CommandOutput, astrid::client::ClientError> {
    client
        .call(Request::InvokeCommand {
            name: name.into(),
            args: vec![],
        })
        .await
}

#[tokio::test]
async fn the_metrics_count_requests_capsule_calls_and_restarts() {
    let d = TestDaemon::builder()
        .capsules(&["echo", "faults/trap"])
        .start();
    let client = d.client().await;
    for _ in 0..5 {
        client.ping().await.unwrap();
    }
    for _ in 0..3 {
        invoke(&client, "echo").await.unwrap();
    }
    let (code, _) = failure(invoke(&client, "no-such-command").await);
    assert_eq!(code, ErrorCode::NotFound);
    let (code, _) = failure(invoke(&client, "trap").await);
    assert_eq!(code, ErrorCode::CapsuleCrashed);
    // The crash is counted once the capsule is restarted.
    poll_async(DEADLINE, async || {
        let tree = client.tree().await.unwrap();
        let node = tree.find("capsule:trap").cloned();
        node.filter(|n| n.restarts >= 1).ok_or(tree)
    })
    .await
    .unwrap();

    let text = client.metrics().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let Some(samples) = parse(&text) else { return };
    let requests = |kind: &str, outcome: &str| {
        value(
            &samples,
            "astrid_requests_total",
            &[("kind", kind), ("outcome", outcome)],
        )
    };
    assert!(
        (requests("Ping", "ok") - 5.0).abs() < f64::EPSILON,
        "{text}"
    );
    assert!((requests("InvokeCommand", "ok") - 3.0).abs() < f64::EPSILON);
    assert!((requests("InvokeCommand", "not_found") - 1.0).abs() < f64::EPSILON);
    assert!((requests("InvokeCommand", "capsule_crashed") - 1.0).abs() < f64::EPSILON);
    assert!(requests("GetSupervisionTree", "ok") >= 1.0);
    let latency = |kind: &str| {
        value(
            &samples,
            "astrid_request_duration_seconds_count",
            &[("kind", kind)],
        )
    };
    assert!((latency("Ping") - 5.0).abs() < f64::EPSILON);
    assert!((latency("InvokeCommand") - 5.0).abs() < f64::EPSILON);
    let calls = value(
        &samples,
        "astrid_capsule_calls_total",
        &[("capsule", "echo"), ("entry", "command")],
    );
    assert!((calls - 3.0).abs() < f64::EPSILON, "{text}");
    assert!(
        value(
            &samples,
            "astrid_capsule_fuel_total",
            &[("capsule", "echo")]
        ) > 0.0
    );
    let traps = value(
        &samples,
        "astrid_capsule_failures_total",
        &[("capsule", "trap"), ("kind", "trap")],
    );
    assert!((traps - 1.0).abs() < f64::EPSILON, "{text}");
    let restarts = value(
        &samples,
        "astrid_actor_restarts_total",
        &[("actor", "capsule:trap")],
    );
    assert!(restarts >= 1.0, "{text}");
    assert!(
        value(&samples, "astrid_actor_restarts_total", &[("actor", "bus")]).abs() < f64::EPSILON
    );
    assert!(value(&samples, "astrid_connections_open", &[]) >= 1.0);
    assert!(value(&samples, "astrid_bus_published_total", &[]) >= 1.0);
    assert!(value(&samples, "astrid_ledger_syncs_total", &[]) >= 1.0);
    check_histograms(&samples);

    // The CLI prints the same text; its own request is counted.
    let out = d.cli(&["metrics"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let samples = parse(&text).unwrap();
    assert!(
        value(
            &samples,
            "astrid_requests_total",
            &[("kind", "GetMetrics"), ("outcome", "ok")]
        ) >= 1.0
    );
    check_histograms(&samples);
}

// Two workers: the calls keep coming while this thread blocks reading `top`'s output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_the_tree_with_a_capsule_s_and_the_store_s_rates_and_quits_on_q() {
    let d = TestDaemon::builder().capsules(&["echo"]).start();
    let client = Arc::new(d.client().await);
    // Calls keep coming while `top` samples.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop) = (Arc::clone(&client), Arc::clone(&stop));
        tokio::spawn(async move {
            let end = Instant::now() + DEADLINE;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                invoke(&client, "echo").await.unwrap();
                let _: Written = client
                    .call(Request::KvPut {
                        key: "k".into(),
                        value: b"v".to_vec(),
                    })
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut top = Command::new(cli_bin())
        .arg("--home")
        .arg(d.home.path())
        .arg("--workspace")
        .arg(d.workspace.path())
        .args(["top", "--interval", "200ms"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = top.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // Rows of the tree with a rate: `capsule:echo  running  0  <calls/s> ...`, and the
    // store's, of the `KvPut`s it serves.
    let end = Instant::now() + DEADLINE;
    let mut shown = Vec::new();
    let mut waiting = vec!["capsule:echo", "store"];
    while !waiting.is_empty() {
        let left = end.saturating_duration_since(Instant::now());
        let Ok(line) = seen.recv_timeout(left) else {
            let _ = top.kill();
            panic!(
                "no rate for {waiting:?} within {DEADLINE:?}:\n{}",
                shown.join("\n")
            );
        };
        shown.push(line.clone());
        waiting.retain(|row| {
            let Some(at) = line.find(&format!("{row} ")) else {
                return true;
            };
            let columns: Vec<&str> = line[at..].split_whitespace().collect();
            // name, state, restarts, calls/s, ...
            !columns
                .get(3)
                .and_then(|r| r.parse::<f64>().ok())
                .is_some_and(|rate| rate > 0.0)
        });
    }
    for node in ["kernel", "bus", "listener", "capsules"] {
        assert!(
            shown.iter().any(|l| l.contains(node)),
            "{node} not shown:\n{}",
            shown.join("\n")
        );
    }
    assert!(
        shown.iter().any(|l| l.starts_with("InvokeCommand")),
        "{}",
        shown.join("\n")
    );
    top.stdin.take().unwrap().write_all(b"q").unwrap();
    let quit = Instant::now();
    let status = loop {
        if let Some(status) = top.try_wait().unwrap() {
            break status;
        }
        assert!(
            quit.elapsed() < Duration::from_secs(5),
            "astrid top did not quit on q"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
}
