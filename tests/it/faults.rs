//! The fault kinds beyond crashes, through a real daemon: a `delay` on a kernel actor and on
//! a capsule (callers meet their deadlines, nothing restarts), storage faults on the ledger
//! (`storage_failed`, and nothing acknowledged lost across a SIGKILL), MCP faults (a late
//! reply, a corrupted one, the server killed mid-call, each followed by recovery), the
//! `overflow` of a capsule's bus queue (drops counted), `clear`, and the refusals: the text
//! grammar at the CLI, a fault the target does not implement, a fault out of its bounds.

use std::time::{Duration, Instant};

use crate::common::{
    DEADLINE, Graceful, TestDaemon, failure, inject, invoke, mcp_test_server, output_text,
    patient_client, poll_async, poll_until, try_inject, wait_node,
};
use astrid::client::Client;
use astrid::protocol::{
    ErrorCode, Fault, KvValue, McpEffect, McpServerInfo, McpServerState, McpToolResult, Published,
    RawValue, Request, StorageOp, SubscriberStats, Written, to_payload,
};
use serde_json::json;

async fn put(
    client: &Client,
    key: &str,
    value: &str,
) -> Result<Written, astrid::client::ClientError> {
    client
        .call(Request::KvPut {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        })
        .await
}

async fn get(client: &Client, key: &str) -> Option<Vec<u8>> {
    let value: KvValue = client
        .call(Request::KvGet { key: key.into() })
        .await
        .unwrap();
    value.value
}

async fn restarts(client: &Client, name: &str) -> u32 {
    client.tree().await.unwrap().find(name).unwrap().restarts
}

#[test]
fn the_cli_takes_the_grammar_and_says_what_is_wrong() {
    let d = TestDaemon::builder().fault_injection().start();
    let out = d.cli(&["fault", "store", "delay:50ms,for=1s"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "injected delay:50ms,for=1s into store\n"
    );

    let out = d.cli(&["fault", "store", "storage:disk"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let text = output_text(&out);
    assert!(
        text.contains("storage faults are journal_write, fsync or checkpoint")
            && text.contains("astrid fault --help"),
        "{text}"
    );

    // A fault the target does not implement: the daemon names who does.
    let out = d.cli(&["fault", "bus", "storage:fsync"]);
    assert_eq!(out.status.code(), Some(1));
    let text = output_text(&out);
    assert!(
        text.contains("invalid_argument") && text.contains("store, audit"),
        "{text}"
    );
    let out = d.cli(&["fault", "store", "mcp:kill"]);
    assert!(
        output_text(&out).contains("MCP servers"),
        "{}",
        output_text(&out)
    );

    let help = d.cli(&["fault", "--help"]);
    let help = output_text(&help);
    for kind in ["delay:", "import:", "storage:", "mcp:", "overflow", "clear"] {
        assert!(help.contains(kind), "`{kind}` missing from --help: {help}");
    }
}

#[tokio::test]
async fn a_fault_out_of_bounds_is_refused_by_the_daemon() {
    let d = TestDaemon::builder().fault_injection().start();
    let client = d.client().await;
    let refused = try_inject(
        &client,
        "store",
        Fault::Hang {
            millis: 10 * 3600 * 1000,
        },
    )
    .await;
    let (code, message) = failure(refused);
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(message.contains("at most 1h"), "{message}");
    let refused = try_inject(
        &client,
        "store",
        Fault::Storage {
            op: StorageOp::Fsync,
            times: 0,
        },
    )
    .await;
    assert_eq!(failure(refused).0, ErrorCode::InvalidArgument);
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_delayed_kernel_actor_answers_late_and_callers_meet_their_deadlines() {
    let d = TestDaemon::builder()
        .fault_injection()
        .args(&["--call-timeout", "2s"])
        .start();
    let client = d.client().await;
    inject(
        &client,
        "store",
        Fault::Delay {
            millis: 300,
            for_millis: 60_000,
        },
    )
    .await;
    let started = Instant::now();
    put(&client, "slow", "1").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(get(&client, "slow").await.as_deref(), Some(&b"1"[..]));

    // A delay as long as the deadline: the caller gets `timeout` at its deadline, and the
    // write never reached the store.
    inject(
        &client,
        "store",
        Fault::Delay {
            millis: 5_000,
            for_millis: 60_000,
        },
    )
    .await;
    let started = Instant::now();
    let (code, _) = failure(put(&client, "late", "1").await);
    assert_eq!(code, ErrorCode::Timeout);
    assert!(
        started.elapsed() < Duration::from_millis(4_500),
        "{:?}",
        started.elapsed()
    );
    // Others are not held: the bus answers at once.
    let published: Published = client
        .call(Request::Publish {
            topic: "user.x".into(),
            payload: RawValue::nil(),
        })
        .await
        .unwrap();
    assert_eq!(published.delivered, 0);

    inject(&client, "store", Fault::Clear).await;
    let started = Instant::now();
    put(&client, "fast", "1").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        get(&client, "late").await,
        None,
        "a write that timed out before it was sent"
    );
    assert_eq!(
        restarts(&client, "store").await,
        0,
        "a delay restarts nothing"
    );
}

#[tokio::test]
async fn a_delayed_capsule_starts_each_call_late_and_one_past_its_deadline_times_out() {
    let d = TestDaemon::builder()
        .capsules(&["echo"])
        .fault_injection()
        .start();
    let client = patient_client(&d).await;
    invoke(&client, "echo", &["warm"]).await.unwrap();
    inject(
        &client,
        "capsule:echo",
        Fault::Delay {
            millis: 300,
            for_millis: 60_000,
        },
    )
    .await;
    let started = Instant::now();
    let out = invoke(&client, "echo", &["hi"]).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(out.capsule, "echo");

    // The capsule's call deadline is 1 s: a 2 s delay fails the call without running it.
    inject(
        &client,
        "capsule:echo",
        Fault::Delay {
            millis: 2_000,
            for_millis: 60_000,
        },
    )
    .await;
    let (code, message) = failure(invoke(&client, "echo", &["hi"]).await);
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    inject(&client, "capsule:echo", Fault::Clear).await;
    invoke(&client, "echo", &["after"]).await.unwrap();
    assert_eq!(restarts(&client, "capsule:echo").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_faults_fail_writes_with_storage_failed_and_lose_nothing_acknowledged() {
    let d = TestDaemon::builder().fault_injection().start();
    let client = d.client().await;
    put(&client, "before", "1").await.unwrap();

    // A failed sync: the batch is not durable, so it is refused, and the next one is not.
    inject(
        &client,
        "store",
        Fault::Storage {
            op: StorageOp::Fsync,
            times: 1,
        },
    )
    .await;
    assert_eq!(
        failure(put(&client, "unsynced", "1").await).0,
        ErrorCode::StorageFailed
    );
    put(&client, "after-sync", "1").await.unwrap();

    // A failed journal write, armed through the audit log (the ledger is shared).
    inject(
        &client,
        "audit",
        Fault::Storage {
            op: StorageOp::JournalWrite,
            times: 1,
        },
    )
    .await;
    assert_eq!(
        failure(put(&client, "unwritten", "1").await).0,
        ErrorCode::StorageFailed
    );
    put(&client, "after-write", "1").await.unwrap();

    // A failed checkpoint: the journal keeps the data until one succeeds.
    inject(
        &client,
        "store",
        Fault::Storage {
            op: StorageOp::Checkpoint,
            times: 1,
        },
    )
    .await;
    put(&client, "journaled", "1").await.unwrap();
    // Checkpoints run a second after the first change; the failed one leaves the data in
    // the journal, and the next writer reopens the database and catches it up from there.
    let failed = poll_async(DEADLINE, async || {
        let log = d.log_text();
        log.contains("injected fault: a checkpoint fails")
            .then_some(())
            .ok_or(())
    })
    .await;
    assert!(failed.is_ok(), "no checkpoint failed: {}", d.log_text());
    put(&client, "after-checkpoint", "1").await.unwrap();
    assert!(d.log_text().contains("database caught up with the journal"));
    let acked = [
        "before",
        "after-sync",
        "after-write",
        "journaled",
        "after-checkpoint",
    ];
    for key in acked {
        assert!(get(&client, key).await.is_some(), "{key}");
    }
    drop(client);

    let d = tokio::task::block_in_place(|| d.kill_and_restart(&[]));
    let client = d.client().await;
    for key in acked {
        assert_eq!(
            get(&client, key).await.as_deref(),
            Some(&b"1"[..]),
            "{key} lost"
        );
    }
    for key in ["unsynced", "unwritten"] {
        assert_eq!(
            get(&client, key).await,
            None,
            "{key} was refused, yet is there"
        );
    }
    let verified = d.cli(&["audit", "verify"]);
    assert!(verified.status.success(), "{}", output_text(&verified));
}

/// A daemon running the MCP test server as `t`, with fault injection.
async fn with_mcp_server() -> (Graceful, Client) {
    let config = format!(
        "[[server]]\nname = \"t\"\ncommand = \"{}\"\ncall_timeout = \"2s\"\n",
        mcp_test_server().display()
    );
    let d = Graceful(TestDaemon::builder().mcp(config).fault_injection().start());
    let client = d.client().await;
    server(&client, |s| s.state == McpServerState::Running).await;
    (d, client)
}

async fn server(client: &Client, cond: impl Fn(&McpServerInfo) -> bool) -> McpServerInfo {
    let pick = |list: &Result<Vec<McpServerInfo>, _>| {
        list.as_ref()
            .ok()?
            .iter()
            .find(|s| s.name == "t" && cond(s))
            .cloned()
    };
    let list = async || {
        client
            .call::<Vec<McpServerInfo>>(Request::ListMcpServers)
            .await
    };
    poll_until("server `t`", list, pick).await
}

async fn echo(client: &Client, text: &str) -> Result<McpToolResult, astrid::client::ClientError> {
    client
        .call(Request::CallMcpTool {
            server: "t".into(),
            tool: "echo".into(),
            arguments: to_payload(&json!({ "text": text })).unwrap(),
        })
        .await
}

/// Calls `echo` until it answers (the server recovered from a fault).
async fn echo_recovers(client: &Client) {
    let answered = poll_async(DEADLINE, async || {
        echo(client, "again").await.map_err(|_| ())
    })
    .await;
    assert!(answered.is_ok(), "the server never answered again");
}

#[tokio::test]
async fn mcp_faults_delay_a_reply_corrupt_one_and_kill_the_server_mid_call() {
    let (_d, client) = with_mcp_server().await;
    echo(&client, "warm").await.unwrap();

    inject(
        &client,
        "mcp:t",
        Fault::Mcp {
            effect: McpEffect::Delay { millis: 400 },
            times: 1,
        },
    )
    .await;
    let started = Instant::now();
    echo(&client, "late").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    let started = Instant::now();
    echo(&client, "on time").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "only one call was delayed"
    );

    // A reply that is not JSON-RPC: the SDK skips the line, so the call meets its deadline;
    // the server, which answers the ping that follows, is left running.
    inject(
        &client,
        "mcp:t",
        Fault::Mcp {
            effect: McpEffect::Malformed,
            times: 1,
        },
    )
    .await;
    let (code, message) = failure(echo(&client, "garbled").await);
    assert!(
        matches!(
            code,
            ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::McpFailed
        ),
        "{code:?}: {message}"
    );
    echo_recovers(&client).await;

    // Killed mid-call: the call learns it, the supervisor restarts the server.
    let before = server(&client, |s| s.state == McpServerState::Running).await;
    inject(
        &client,
        "mcp:t",
        Fault::Mcp {
            effect: McpEffect::Kill,
            times: 1,
        },
    )
    .await;
    let (code, message) = failure(echo(&client, "doomed").await);
    assert_eq!(code, ErrorCode::Unavailable, "{message}");
    let after = server(&client, |s| {
        s.state == McpServerState::Running && s.restarts > before.restarts
    })
    .await;
    assert_ne!(after.pid, before.pid);
    echo_recovers(&client).await;
}

/// The bus's statistics of the `watch` capsule's subscription, once it has one.
async fn watch_subscriber(client: &Client) -> Result<SubscriberStats, ()> {
    let status = client.status().await.map_err(|_| ())?;
    status
        .bus
        .and_then(|bus| {
            bus.subscribers
                .into_iter()
                .find(|s| s.label == "capsule:watch")
        })
        .ok_or(())
}

#[tokio::test]
async fn an_overflowing_capsule_queue_drops_events_and_counts_them() {
    let d = TestDaemon::builder()
        .capsules(&["watch"])
        .fault_injection()
        .start();
    let client = patient_client(&d).await;
    let before = poll_async(DEADLINE, async || watch_subscriber(&client).await)
        .await
        .expect("the capsule subscribes");
    inject(&client, "capsule:watch", Fault::Overflow { times: 3 }).await;
    for n in 0..5 {
        let _: Published = client
            .call(Request::Publish {
                topic: format!("user.n{n}"),
                payload: RawValue::nil(),
            })
            .await
            .unwrap();
    }
    let seen = poll_async(DEADLINE, async || {
        let count = invoke(&client, "watch-count", &[]).await.map_err(|_| ())?;
        (count.output == rmpv::Value::from(2))
            .then_some(())
            .ok_or(())
    })
    .await;
    assert!(seen.is_ok(), "the capsule saw the two events not dropped");
    let after = watch_subscriber(&client).await.unwrap();
    assert_eq!(after.dropped - before.dropped, 3, "{after:?}");
    assert_eq!(restarts(&client, "capsule:watch").await, 0);
    let _ = wait_node(&client, "bus", |n| n.restarts == 0).await;
}
