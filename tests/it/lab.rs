//! The fault lab, through real daemons and the CLI: import faults (a capsule's host imports
//! made to fail or slow down), crash bundles kept in `<home>/crashes/`, and their replay.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{
    TestDaemon, failure, invoke, output_text, patient_client, wait_node, wait_restarted,
};
use astrid::client::Client;
use astrid::protocol::{ChildState, ErrorCode, TreeNode};

/// Runs `astrid ARGS` against `d` and returns its standard output; it must succeed.
fn ok(d: &TestDaemon, args: &[&str]) -> String {
    let out = d.cli(args);
    assert!(out.status.success(), "astrid {args:?}: {}", output_text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `astrid ARGS` against `d`; it must fail. Returns its output.
fn fails(d: &TestDaemon, args: &[&str]) -> String {
    let out = d.cli(args);
    assert!(!out.status.success(), "astrid {args:?} succeeded: {}", output_text(&out));
    output_text(&out)
}

/// `note-add` with `text`: the count it replies, or the error's code and message.
async fn note_add(client: &Client, text: &str) -> Result<i64, (ErrorCode, String)> {
    match invoke(client, "note-add", &[text]).await {
        Ok(out) => Ok(serde_json::to_value(&out.output).unwrap().as_i64().unwrap()),
        Err(e) => Err((e.code().unwrap(), e.to_string())),
    }
}

async fn restarts(client: &Client, name: &str) -> u32 {
    client.tree().await.unwrap().find(name).unwrap().restarts
}

fn running(node: &TreeNode) -> bool {
    node.state == ChildState::Running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_fault_fails_or_slows_the_named_host_call_and_clear_disarms_it() {
    let d = TestDaemon::builder()
        .capsules(&["notes"])
        .fault_injection()
        .start();
    let client = patient_client(&d).await;
    wait_node(&client, "capsule:notes", running).await;
    assert_eq!(note_add(&client, "one").await, Ok(1));

    // `kv_put` fails twice with -5: the command says so; the third call works again.
    let text = ok(&d, &["fault", "capsule:notes", "import:kv_put,fail=-5,times=2"]);
    assert!(text.contains("import:kv_put,fail=-5,times=2"), "{text}");
    for _ in 0..2 {
        let (code, message) = note_add(&client, "lost").await.unwrap_err();
        assert_eq!(code, ErrorCode::CapsuleError, "{message}");
        assert!(message.contains("kv_put notes: code -5"), "{message}");
    }
    assert_eq!(note_add(&client, "two").await, Ok(2));
    // Another import is not touched.
    let count = invoke(&client, "note-count", &[]).await.unwrap();
    assert_eq!(serde_json::to_value(&count.output).unwrap(), json!(2));

    // A delay within the deadline (1 s): the call is slower, and succeeds.
    ok(&d, &["fault", "capsule:notes", "import:kv_get,delay=300ms,times=1"]);
    let started = Instant::now();
    assert_eq!(note_add(&client, "three").await, Ok(3));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    let started = Instant::now();
    assert_eq!(note_add(&client, "four").await, Ok(4));
    assert!(started.elapsed() < Duration::from_millis(300), "spent");

    // An uncounted fault lasts until `clear`.
    ok(&d, &["fault", "capsule:notes", "import:vfs_read,fail=-1"]);
    for _ in 0..3 {
        let (_, message) = note_add(&client, "denied").await.unwrap_err();
        assert!(message.contains("vfs_read notes/notes.txt: code -1"), "{message}");
    }
    ok(&d, &["fault", "capsule:notes", "clear"]);
    assert_eq!(note_add(&client, "five").await, Ok(5));
    assert_eq!(restarts(&client, "capsule:notes").await, 0, "nothing restarted");

    // Unknown imports and codes outside the ABI's are refused, naming what is allowed.
    let err = fails(&d, &["fault", "capsule:notes", "import:kv_frob,fail=-5"]);
    assert!(err.contains("`kv_frob` is not a host import"), "{err}");
    assert!(err.contains("kv_put") && err.contains("http_request"), "{err}");
    let err = fails(&d, &["fault", "capsule:notes", "import:kv_put,fail=-9"]);
    assert!(err.contains("-9 is not one of the ABI's error codes"), "{err}");
    let (code, _) = failure(
        client
            .call::<Value>(astrid::protocol::Request::InjectFault {
                target: "capsule:notes".into(),
                fault: "import:nope,fail=-1".parse().unwrap(),
            })
            .await,
    );
    assert_eq!(code, ErrorCode::InvalidArgument);

    // A delay past the call's deadline: the caller gets `timeout`, and the late call ends
    // the incarnation as any call past its deadline does.
    ok(&d, &["fault", "capsule:notes", "import:kv_get,delay=3s,times=1"]);
    let started = Instant::now();
    let (code, message) = note_add(&client, "late").await.unwrap_err();
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    assert!(started.elapsed() < Duration::from_secs(3), "held to the deadline");
    wait_restarted(&client, "capsule:notes", 1).await;
    assert!(note_add(&client, "six").await.is_ok());
    client.ping().await.unwrap();
}
