//! Approvals through a real daemon: a capsule whose only grant on the key-value store is
//! `ask:kv` waits, in each call, for a client's answer (up to 3 s, its manifest says: longer
//! than its 1 s call deadline, which the wait does not count against). `once` lets one call through,
//! `always` gives the grant outright (persisted: no question afterwards, across a restart
//! too), `deny` and no answer in time refuse it, and with no frontend listening it is
//! refused at once; every decision is in the audit log; the interactive `astrid` shows the
//! question and takes `/approve`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use astrid::client::Client;
use astrid::protocol::{
    APPROVAL_REQUESTED, ApprovalAnswer, ApprovalSettled, CommandOutput, ErrorCode, Grant,
    PendingApproval, Request, Subscribed,
};

use crate::common::{
    DEADLINE, TestDaemon, audit_tail, cli_bin, failure, invoke, next_on, one_command_manifest,
    output_text, patient_client, write_capsule,
};

/// A capsule whose command `asker` puts `k` = `v` in its namespace and replies the import's
/// status (0, or -1 when denied) as a MessagePack integer.
const ASKER: &str = r#"(module
  (import "astrid" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "kv")
  (func (export "astrid_alloc") (param $len i32) (result i32) (i32.const 1024))
  (func (export "astrid_command") (param $ptr i32) (param $len i32) (result i64)
    (i32.store8 (i32.const 8)
      (call $kv_put (i32.const 0) (i32.const 1) (i32.const 1) (i32.const 1)))
    (i64.or (i64.shl (i64.const 8) (i64.const 32)) (i64.const 1))))
"#;

fn daemon() -> TestDaemon {
    TestDaemon::builder()
        .prepare(|home, _| {
            let manifest = one_command_manifest(
                "asker",
                "[capabilities]\ngrant = [\"ask:kv\"]\n\n\
                 [capabilities.approval_timeout]\n\"ask:kv\" = \"3s\"\n",
            );
            write_capsule(
                &home.join("capsules"),
                "asker",
                &manifest,
                &[("m.wat", ASKER.as_bytes())],
            );
        })
        .start()
}

/// A client listening for approval requests, as a frontend does.
async fn frontend(d: &TestDaemon) -> Client {
    let client = d.client().await;
    let _: Subscribed = client
        .call(Request::Subscribe {
            pattern: "approval.>".into(),
        })
        .await
        .unwrap();
    client
}

/// Runs `asker` on a connection of its own; its output, the import's status.
fn call_asker(d: &TestDaemon) -> tokio::task::JoinHandle<(i64, Duration)> {
    let files = d.files.clone();
    tokio::spawn(async move {
        let client = Client::connect(&files, "caller").await.unwrap();
        let started = Instant::now();
        let out: CommandOutput = client
            .call(Request::InvokeCommand {
                name: "asker".into(),
                args: Vec::new(),
            })
            .await
            .unwrap();
        (out.output.as_i64().unwrap(), started.elapsed())
    })
}

async fn answer(client: &Client, id: u64, answer: ApprovalAnswer) -> ApprovalSettled {
    client
        .call(Request::AnswerApproval { id, answer })
        .await
        .unwrap()
}

/// The next request a frontend is asked.
async fn next_request(ui: &mut Client) -> PendingApproval {
    rmpv::ext::from_value(next_on(ui, APPROVAL_REQUESTED).await.payload).unwrap()
}

/// Answering `id` is refused: nothing waits under that number.
async fn assert_not_waiting(admin: &Client, id: u64, why: &str) {
    let answered = admin
        .call::<ApprovalSettled>(Request::AnswerApproval {
            id,
            answer: ApprovalAnswer::Once,
        })
        .await;
    assert_eq!(failure(answered).0, ErrorCode::NotFound, "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_always_deny_expiry_and_no_frontend() {
    let d = daemon();
    let admin = patient_client(&d).await;

    // Nobody listens: refused at once, long before the grant's 3 s.
    let started = Instant::now();
    let out = invoke(&admin, "asker", &[]).await.unwrap();
    assert_eq!(out.output.as_i64(), Some(-1));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let mut ui = frontend(&d).await;
    // Once: the call goes ahead; the next one asks again.
    let call = call_asker(&d);
    let request = next_request(&mut ui).await;
    assert_eq!(
        (request.capsule.as_str(), request.grant.as_str()),
        ("asker", "ask:kv")
    );
    assert_eq!(request.access, "kv");
    let waiting: Vec<PendingApproval> = admin.call(Request::ListApprovals).await.unwrap();
    assert_eq!(waiting, std::slice::from_ref(&request));
    // The user takes longer than the capsule's whole call deadline (1 s): the time it waits
    // for the answer does not count against it.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let settled = answer(&admin, request.id, ApprovalAnswer::Once).await;
    assert!(
        settled.approved && settled.outcome.starts_with("approved once by client:"),
        "{settled:?}"
    );
    assert_eq!(call.await.unwrap().0, 0);
    assert_not_waiting(&admin, request.id, "a request is answered once").await;

    // Deny.
    let call = call_asker(&d);
    let request = next_request(&mut ui).await;
    let settled = answer(&admin, request.id, ApprovalAnswer::Deny).await;
    assert!(!settled.approved, "{settled:?}");
    assert_eq!(call.await.unwrap().0, -1);

    // No answer: refused when the grant's 3 s are up.
    let call = call_asker(&d);
    let request = next_request(&mut ui).await;
    let (status, waited) = call.await.unwrap();
    assert_eq!(status, -1);
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    let (code, _) = failure(
        admin
            .call::<ApprovalSettled>(Request::AnswerApproval {
                id: request.id,
                answer: ApprovalAnswer::Once,
            })
            .await,
    );
    assert_eq!(
        code,
        ErrorCode::NotFound,
        "an expired request cannot be answered"
    );

    // Always: the grant is given outright, and nothing is asked any more.
    let call = call_asker(&d);
    let request = next_request(&mut ui).await;
    let settled = answer(&admin, request.id, ApprovalAnswer::Always).await;
    assert!(
        settled.approved && settled.outcome.contains("granted kv"),
        "{settled:?}"
    );
    assert_eq!(call.await.unwrap().0, 0);
    let grants: Vec<Grant> = admin
        .call(Request::ListCapabilities {
            subject: Some("asker".into()),
        })
        .await
        .unwrap();
    assert!(grants.iter().any(|g| g.resource == "kv"), "{grants:?}");
    drop(ui);
    let out = invoke(&admin, "asker", &[]).await.unwrap();
    assert_eq!(out.output.as_i64(), Some(0), "allowed without asking");

    let log = audit_tail(&admin, 200).await;
    let decisions: Vec<&str> = log
        .iter()
        .filter(|e| e.actor == "capsule:asker" && e.action == "approval")
        .map(|e| e.outcome.as_str())
        .collect();
    for expected in [
        "denied: no frontend",
        "approved once by",
        "denied by",
        "expired",
        "approved always by",
    ] {
        assert!(
            decisions.iter().any(|o| o.starts_with(expected)),
            "no `{expected}` in {decisions:#?}"
        );
    }

    // `always` was persisted: after a crash and a restart, still no question.
    drop(admin);
    let d = tokio::task::block_in_place(|| d.kill_and_restart(&[]));
    let admin = patient_client(&d).await;
    let out = invoke(&admin, "asker", &[]).await.unwrap();
    assert_eq!(
        out.output.as_i64(),
        Some(0),
        "the grant given by `always` is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interactive_session_shows_the_question_and_takes_the_answer() {
    let d = daemon();
    let _ = patient_client(&d).await;
    let mut chat = Command::new(cli_bin())
        .args(["--home", d.home.path().to_str().unwrap()])
        .args(["--workspace", d.workspace.path().to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    let mut out = BufReader::new(chat.stdout.take().unwrap());
    let read_until = |out: &mut BufReader<_>, what: &str| -> String {
        let end = Instant::now() + DEADLINE;
        let mut line = String::new();
        while Instant::now() < end {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if line.contains(what) {
                return line.clone();
            }
        }
        panic!("no line with `{what}`");
    };
    tokio::task::block_in_place(|| {
        read_until(&mut out, "connected to");
        writeln!(stdin, "/asker").unwrap();
        let question = read_until(&mut out, "asks to use kv");
        assert!(question.contains("/approve 1"), "{question}");
        writeln!(stdin, "/approve always").unwrap();
        // The settlement (an event) and the command's output, the import's status `0` on a
        // line of its own, come in either order.
        let (mut settled, mut output) = (false, false);
        while !(settled && output) {
            let line = read_until(&mut out, "");
            settled |= line.contains("approved always by");
            output |= line.trim() == "0";
        }
        writeln!(stdin, "/quit").unwrap();
        drop(stdin);
        assert!(chat.wait().unwrap().success());
    });
    let shown = d.cli(&["caps", "ls", "asker"]);
    assert!(
        output_text(&shown).contains("kv"),
        "{}",
        output_text(&shown)
    );
}
