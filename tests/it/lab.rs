//! The fault lab, through real daemons and the CLI: import faults (a capsule's host imports
//! made to fail or slow down), crash bundles kept in `<home>/crashes/`, and their replay.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{
    DEADLINE, TestDaemon, example_capsule, failure, files_in, invoke, one_command_manifest,
    output_text, patient_client, poll, poll_async, wait_node, wait_restarted, write_capsule,
};
use astrid::client::Client;
use astrid::protocol::{ChildState, CrashSummary, ErrorCode, Request, TreeNode};

/// The most crash bundles a home keeps (`actors/src/capsule/crashes.rs`).
const MAX_CRASHES: usize = 64;

/// Runs `astrid ARGS` against `d` and returns its standard output; it must succeed.
fn ok(d: &TestDaemon, args: &[&str]) -> String {
    let out = d.cli(args);
    assert!(
        out.status.success(),
        "astrid {args:?}: {}",
        output_text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `astrid ARGS` against `d`; it must fail. Returns its output.
fn fails(d: &TestDaemon, args: &[&str]) -> String {
    let out = d.cli(args);
    assert!(
        !out.status.success(),
        "astrid {args:?} succeeded: {}",
        output_text(&out)
    );
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
    let text = ok(
        &d,
        &["fault", "capsule:notes", "import:kv_put,fail=-5,times=2"],
    );
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
    ok(
        &d,
        &[
            "fault",
            "capsule:notes",
            "import:kv_get,delay=300ms,times=1",
        ],
    );
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
        assert!(
            message.contains("vfs_read notes/notes.txt: code -1"),
            "{message}"
        );
    }
    ok(&d, &["fault", "capsule:notes", "clear"]);
    assert_eq!(note_add(&client, "five").await, Ok(5));
    assert_eq!(
        restarts(&client, "capsule:notes").await,
        0,
        "nothing restarted"
    );

    // Unknown imports and codes outside the ABI's are refused, naming what is allowed.
    let err = fails(&d, &["fault", "capsule:notes", "import:kv_frob,fail=-5"]);
    assert!(err.contains("`kv_frob` is not a host import"), "{err}");
    assert!(
        err.contains("kv_put") && err.contains("http_request"),
        "{err}"
    );
    let err = fails(&d, &["fault", "capsule:notes", "import:kv_put,fail=-9"]);
    assert!(
        err.contains("-9 is not one of the ABI's error codes"),
        "{err}"
    );
    let (code, _) = failure(
        client
            .call::<Value>(Request::InjectFault {
                target: "capsule:notes".into(),
                fault: "import:nope,fail=-1".parse().unwrap(),
            })
            .await,
    );
    assert_eq!(code, ErrorCode::InvalidArgument);

    // A delay past the call's deadline: the caller gets `timeout`, and the late call ends
    // the incarnation as any call past its deadline does.
    ok(
        &d,
        &["fault", "capsule:notes", "import:kv_get,delay=3s,times=1"],
    );
    let started = Instant::now();
    let (code, message) = note_add(&client, "late").await.unwrap_err();
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "held to the deadline"
    );
    wait_restarted(&client, "capsule:notes", 1).await;
    assert!(note_add(&client, "six").await.is_ok());
    client.ping().await.unwrap();

    // The late call left a crash bundle; its replay does not wait where the live call
    // waited, so it does not reproduce, and says why.
    let summary = wait_bundles(&d, "notes", 1);
    assert_eq!(summary["kind"], "deadline", "{summary:#}");
    let (reproduced, report) = replay(&d, summary["id"].as_str().unwrap());
    assert!(!reproduced, "{report:#}");
    assert!(
        report["notes"].to_string().contains("wall-clock deadline"),
        "{report:#}"
    );
}

// ---------------------------------------------------------------------------------------
// Crash bundles and replay
// ---------------------------------------------------------------------------------------

/// `astrid --json ARGS`, parsed; it must succeed.
fn json_of(d: &TestDaemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(d, &all)).unwrap()
}

/// Waits until `capsule` has `n` crash bundles; returns the last (newest).
fn wait_bundles(d: &TestDaemon, capsule: &str, n: usize) -> Value {
    let found = poll(DEADLINE, || {
        let list = json_of(d, &["crashes", "ls"]);
        let mine: Vec<Value> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["capsule"] == capsule)
            .cloned()
            .collect();
        if mine.len() == n {
            Ok(mine.last().unwrap().clone())
        } else {
            Err(list)
        }
    });
    found.unwrap_or_else(|list| panic!("no {n} bundle(s) of {capsule}: {list:#}"))
}

/// `astrid --json replay ID`: its exit status and report.
fn replay(d: &TestDaemon, id: &str) -> (bool, Value) {
    let out = d.cli(&["--json", "replay", id]);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("replay {id}: {e}: {}", output_text(&out)));
    (out.status.success(), report)
}

#[test]
fn a_crash_of_each_fault_capsule_is_kept_and_replays_to_the_same_failure() {
    let capsules = [
        (
            "faults/trap",
            "trap",
            1,
            "trap",
            "the capsule trapped: unreachable",
        ),
        (
            "faults/loop",
            "loop",
            1,
            "out_of_fuel",
            "the capsule ran out of fuel",
        ),
        (
            "faults/oom",
            "oom",
            1,
            "trap",
            "the capsule trapped: unreachable",
        ),
        (
            "faults/stack-overflow",
            "stack-overflow",
            1,
            "trap",
            "the capsule trapped: stack overflow",
        ),
        (
            "faults/garbage",
            "garbage",
            1,
            "garbage",
            "the capsule returned garbage",
        ),
        (
            "faults/crash-after",
            "crash-after",
            4,
            "trap",
            "the capsule trapped: unreachable",
        ),
    ];
    let d = TestDaemon::builder()
        .capsules(&capsules.map(|c| c.0))
        .start();
    for (_, name, calls, kind, message) in capsules {
        for call in 1..=calls {
            let out = d.cli(&["run", name]);
            assert_eq!(
                out.status.success(),
                call < calls,
                "{name} #{call}: {}",
                output_text(&out)
            );
        }
        let summary = wait_bundles(&d, name, 1);
        assert_eq!(summary["kind"], kind, "{summary:#}");
        assert!(
            summary["message"].as_str().unwrap().starts_with(message),
            "{summary:#}"
        );
        assert_eq!(summary["calls"], calls, "{summary:#}");
        let id = summary["id"].as_str().unwrap();

        let bundle = json_of(&d, &["crashes", "show", id]);
        assert_eq!(bundle["capsule"], name);
        assert_eq!(bundle["in_call"], true);
        assert_eq!(bundle["module"]["kept"], true, "{bundle:#}");
        assert_eq!(bundle["calls"].as_array().unwrap().len(), calls);
        assert_eq!(bundle["calls"][0]["entry"], "command");
        assert!(bundle["fuel_used"].as_u64().unwrap() > 0, "{bundle:#}");
        // wasmer gives no frames for a stack overflow.
        if message.ends_with("unreachable") {
            let frames = bundle["backtrace"].as_array().unwrap();
            assert!(!frames.is_empty(), "{bundle:#}");
        }

        let (reproduced, report) = replay(&d, id);
        assert!(reproduced, "{name}: {report:#}");
        assert_eq!(report["reproduced"], true);
        assert_eq!(report["got"], kind, "{report:#}");
        assert_eq!(report["got_message"], bundle["message"], "{report:#}");
        assert_eq!(report["module_changed"], Value::Null);
        assert_eq!(report["calls_run"], calls);
        for pair in report["fuel"].as_array().unwrap() {
            assert_eq!(pair[0], pair[1], "the same fuel: {report:#}");
        }
        let text = ok(&d, &["replay", id]);
        assert!(text.contains("reproduced"), "{text}");
    }
    // The bundles are private files in a private folder.
    let crashes = d.layout.crashes();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&crashes), 0o700);
    for entry in std::fs::read_dir(&crashes).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}

/// A capsule whose command writes `abc` under `key`, reads it back, and reads the clock
/// and random bytes; its third call traps when the read gave 3 bytes.
const HOSTCALLS: &str = r#"(module
  (import "astrid" "kv_get" (func $kv_get (param i32 i32) (result i64)))
  (import "astrid" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "astrid" "clock_now" (func $clock (result i64)))
  (import "astrid" "random_fill" (func $random (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "key")
  (data (i32.const 8) "abc")
  (global $calls (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const 1024))
  (func (export "astrid_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (local.get $p))
  (func (export "astrid_command") (param $ptr i32) (param $len i32) (result i64)
    (local $got i64)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (drop (call $clock))
    (drop (call $random (i32.const 32) (i32.const 8)))
    (drop (call $kv_put (i32.const 0) (i32.const 3) (i32.const 8) (i32.const 3)))
    (local.set $got (call $kv_get (i32.const 0) (i32.const 3)))
    (if (i32.and (i32.ge_u (global.get $calls) (i32.const 3))
                 (i64.eq (i64.and (local.get $got) (i64.const 0xffffffff)) (i64.const 3)))
      (then unreachable))
    (i32.store8 (i32.const 16) (i32.const 0xc0))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1))))"#;

#[test]
fn a_replay_answers_host_calls_from_the_recording_and_says_when_the_module_changed() {
    let d = TestDaemon::builder()
        .capsules(&["faults/trap"])
        .prepare(|home, _| {
            let manifest = one_command_manifest("hostcalls", "[capabilities]\ngrant = [\"kv\"]\n");
            write_capsule(
                &home.join("capsules"),
                "hostcalls",
                &manifest,
                &[("m.wat", HOSTCALLS.as_bytes())],
            );
        })
        .start();
    for call in 1..=3 {
        let out = d.cli(&["run", "hostcalls"]);
        assert_eq!(
            out.status.success(),
            call < 3,
            "#{call}: {}",
            output_text(&out)
        );
    }
    let id = wait_bundles(&d, "hostcalls", 1)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bundle = json_of(&d, &["crashes", "show", &id]);
    let host_calls = &bundle["calls"][2]["host_calls"];
    let imports: Vec<&str> = host_calls
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["import"].as_str().unwrap())
        .collect();
    assert_eq!(
        imports,
        ["clock_now", "random_fill", "kv_put", "kv_get"],
        "{bundle:#}"
    );
    assert_eq!(host_calls[2]["sizes"], json!([3, 3]));
    assert_eq!(host_calls[2]["given"], json!({"code": 0}));
    assert_eq!(host_calls[3]["given"]["bytes"], json!(b"abc"), "{bundle:#}");
    let text = ok(&d, &["crashes", "show", &id]);
    assert!(text.contains("kv_get[3] -> 3 bytes"), "{text}");
    assert!(text.contains("unreachable"), "{text}");

    // The replay reproduces the crash from the recording alone: the value it read is
    // gone from the store meanwhile (the capsule is removed, its namespace unused).
    let (reproduced, report) = replay(&d, &id);
    assert!(reproduced, "{report:#}");
    assert_eq!(report["calls_run"], 3);

    // The module changes: the replay runs the kept copy of the one that crashed, and says
    // so.
    let module = d.home.path().join("capsules/hostcalls/m.wat");
    std::fs::write(&module, format!("{HOSTCALLS}\n;; changed")).unwrap();
    let (reproduced, report) = replay(&d, &id);
    assert!(reproduced, "{report:#}");
    let now = report["module_changed"].as_str().unwrap();
    assert_ne!(now, report["module_hash"].as_str().unwrap());
    let text = output_text(&d.cli(&["replay", &id]));
    assert!(
        text.contains("the capsule's module changed since the crash"),
        "{text}"
    );

    // A trap injected between calls: a bundle with nothing to replay.
    let d2 = TestDaemon::builder()
        .capsules(&["faults/trap"])
        .fault_injection()
        .start();
    ok(&d2, &["fault", "capsule:trap", "trap"]);
    let summary = wait_bundles(&d2, "trap", 1);
    assert_eq!(summary["kind"], "injected");
    let id = summary["id"].as_str().unwrap();
    let (reproduced, report) = replay(&d2, id);
    assert!(!reproduced);
    let notes = report["notes"].to_string();
    assert!(notes.contains("nothing to replay"), "{report:#}");
    let text = ok(&d2, &["crashes", "show", id]);
    assert!(text.contains("crashed outside a call"), "{text}");
}

#[test]
fn crashes_are_listed_shown_and_removed_by_id_or_all() {
    let d = TestDaemon::builder().capsules(&["faults/trap"]).start();
    assert_eq!(ok(&d, &["crashes", "ls"]), "no crash bundles\n");
    for n in 1..=2 {
        assert!(!d.cli(&["run", "trap"]).status.success());
        wait_bundles(&d, "trap", n);
    }
    let list = json_of(&d, &["crashes", "ls"]);
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids[0] < ids[1], "oldest first: {ids:?}");
    let text = ok(&d, &["crashes", "ls"]);
    assert!(
        text.contains(&ids[0]) && text.contains("the capsule trapped"),
        "{text}"
    );

    let text = ok(&d, &["crashes", "rm", &ids[0]]);
    assert_eq!(text, format!("removed {}\n", ids[0]));
    let err = fails(&d, &["crashes", "show", &ids[0]]);
    assert!(err.contains("no crash bundle"), "{err}");
    let err = fails(&d, &["crashes", "rm", "../../etc"]);
    assert!(err.contains("is not a crash id"), "{err}");
    let err = fails(&d, &["crashes", "rm"]);
    assert!(err.contains("<ID>"), "{err}");
    let done = json_of(&d, &["crashes", "rm", "--all"]);
    assert_eq!(done["removed"], json!([ids[1]]));
    assert_eq!(json_of(&d, &["crashes", "ls"]), json!([]));
    // The module copy went with the last bundle that named it.
    assert_eq!(
        files_in(&d.layout.crashes().join("modules")),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_bundles_are_bounded_in_count_and_the_oldest_go_first() {
    // A trapping capsule restarted without backoff, whose budget outlasts the test.
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            let extra = "[restart]\nintensity = 1000\nperiod = \"10ms\"\nbackoff = \"0s\"\n";
            let module = std::fs::read(example_capsule("faults/trap/trap.wat")).unwrap();
            write_capsule(
                &home.join("capsules"),
                "storm",
                &one_command_manifest("storm", extra),
                &[("m.wat", &module)],
            );
        })
        .start();
    let client = patient_client(&d).await;
    let list = async || -> Vec<CrashSummary> { client.call(Request::ListCrashes).await.unwrap() };
    let mut ids = Vec::new();
    for n in 1..=MAX_CRASHES + 3 {
        let crashed = poll_async(DEADLINE, async || {
            match invoke(&client, "storm", &[]).await {
                Err(e) if e.code() == Some(ErrorCode::CapsuleCrashed) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        crashed.unwrap_or_else(|seen| panic!("crash {n}: {seen}"));
        // Its bundle is written before the next crash, so that none is dropped as a storm.
        let newest = poll_async(DEADLINE, async || {
            let now = list().await;
            match now.last() {
                Some(c) if ids.last() != Some(&c.id) => Ok(c.id.clone()),
                _ => Err(now.len()),
            }
        })
        .await;
        ids.push(newest.unwrap_or_else(|len| panic!("no bundle for crash {n} ({len} kept)")));
    }
    let kept: Vec<String> = list().await.into_iter().map(|c| c.id).collect();
    assert_eq!(kept.len(), MAX_CRASHES);
    assert_eq!(kept, ids[3..], "the three oldest went");
    let files = files_in(&d.layout.crashes());
    assert_eq!(files.len(), MAX_CRASHES + 1, "the bundles and `modules`");
    assert_eq!(files_in(&d.layout.crashes().join("modules")).len(), 1);
}
