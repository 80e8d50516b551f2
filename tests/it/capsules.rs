//! Capsules end to end: real daemons with the example capsules (and variants of them)
//! copied into their homes, driven through the socket and the CLI. Commands and their
//! replies, every kind of guest crash and the restart that follows, restart budgets, call
//! deadlines, host calls with and without capabilities, injected faults, requests caught
//! behind a crash, reload diffing, modules that do not fit the ABI, workspace capsules
//! overriding home ones, and idle capsules holding no thread.

use crate::common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{
    DEADLINE, TestDaemon, copy_capsule, example_capsule, failure, invoke, one_command_manifest,
    patient_client, poll_async, poll_until, try_inject, wait_audit, wait_node, wait_restarted,
    write_capsule,
};
use astrid::client::Client;
use astrid::protocol::{
    CapsuleInfo, CapsuleMetadata, CapsuleOrigin, CapsuleState, ChildState, CommandInfo, ErrorCode,
    Fault, Grant, GrantSource, ReloadReport, Removed, Request, TreeNode, TrustReport,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The command's output as JSON; panics on an error.
async fn run(client: &Client, name: &str, args: &[&str]) -> Value {
    let out = invoke(client, name, args)
        .await
        .unwrap_or_else(|e| panic!("/{name} {args:?} failed: {e}"));
    serde_json::to_value(&out.output).unwrap()
}

async fn reload(client: &Client) -> ReloadReport {
    client.call(Request::ReloadCapsules).await.unwrap()
}

async fn commands(client: &Client) -> Vec<CommandInfo> {
    client.call(Request::GetCommands).await.unwrap()
}

async fn capsule(client: &Client, name: &str) -> Option<CapsuleInfo> {
    client
        .capsules()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == name)
}

/// Polls `ListCapsules` until capsule `name` is listed and `cond` holds for it.
async fn wait_capsule(
    client: &Client,
    name: &str,
    cond: impl Fn(&CapsuleInfo) -> bool,
) -> CapsuleInfo {
    let list = || async { client.capsules().await.unwrap() };
    let pick = |list: &Vec<CapsuleInfo>| list.iter().find(|c| c.name == name && cond(c)).cloned();
    poll_until(&format!("capsule `{name}`"), list, pick).await
}

/// An example capsule's module bytes.
fn module(example: &str, file: &str) -> Vec<u8> {
    std::fs::read(example_capsule(example).join(file)).unwrap()
}

/// A copy of example capsule `example` into `root` whose manifest gets `extra` appended.
fn copy_with(root: &Path, example: &str, extra: &str) -> PathBuf {
    let dir = copy_capsule(&example_capsule(example), root);
    let manifest = dir.join("Capsule.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push('\n');
    text.push_str(extra);
    std::fs::write(&manifest, text).unwrap();
    dir
}

fn home_capsules(home: &Path) -> PathBuf {
    home.join("capsules")
}

/// How many of the daemon's threads are named `name` (a capsule's thread is named after
/// it; Linux keeps 15 bytes of a name).
fn threads_named(pid: i32, name: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Waits until `threads_named` is `n`.
async fn wait_threads(pid: i32, name: &str, n: usize) {
    let counted = poll_async(DEADLINE, async || {
        let seen = threads_named(pid, name);
        if seen == n { Ok(()) } else { Err(seen) }
    })
    .await;
    if let Err(seen) = counted {
        panic!("{seen} threads named {name}, not {n}");
    }
}

/// The names in a list, sorted.
fn sorted(names: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = names.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_replies_its_input_through_the_socket_and_the_cli() {
    let d = TestDaemon::builder().capsules(&["echo"]).start();
    let client = patient_client(&d).await;

    let out = invoke(&client, "echo", &["a", "b c"]).await.unwrap();
    assert_eq!(out.capsule, "echo");
    assert_eq!(out.command, "echo");
    assert_eq!(
        serde_json::to_value(&out.output).unwrap(),
        json!({"command": "echo", "args": ["a", "b c"]})
    );
    // No arguments: an empty list.
    assert_eq!(
        run(&client, "echo", &[]).await,
        json!({"command": "echo", "args": []})
    );

    let echo = capsule(&client, "echo").await.unwrap();
    assert_eq!(echo.state, CapsuleState::Running, "{echo:?}");
    assert_eq!(echo.origin, CapsuleOrigin::Home);
    assert_eq!(echo.restarts, 0);
    let node = client.tree().await.unwrap();
    let capsules = node.find("capsules").unwrap();
    assert_eq!(capsules.children[0].name, "registry", "{capsules:#?}");
    assert!(
        capsules.children.iter().any(|c| c.name == "capsule:echo"),
        "{capsules:#?}"
    );

    // GetCommands: echo's command with its description, and the built-in ones.
    let list = commands(&client).await;
    let echo_cmd = list.iter().find(|c| c.name == "echo").unwrap();
    assert_eq!(echo_cmd.capsule, "echo");
    assert_eq!(
        echo_cmd.description,
        "Reply with the command and its arguments, as received"
    );
    for builtin in ["status", "capsules", "commands", "ps", "quit"] {
        assert!(
            list.iter()
                .any(|c| c.name == builtin && c.capsule == "astrid-capsule-cli"),
            "{builtin} missing from {list:?}"
        );
    }

    // Unknown commands, and the interactive session's own.
    let (code, message) = failure(invoke(&client, "nope", &[]).await);
    assert_eq!(code, ErrorCode::NotFound);
    assert!(message.contains("`nope`"), "{message}");
    let (code, message) = failure(invoke(&client, "status", &[]).await);
    assert_eq!(code, ErrorCode::NotFound);
    assert!(message.contains("interactive"), "{message}");

    // The CLI: `astrid run` prints the output; with --json, the whole CommandOutput.
    let out = d.cli(&["run", "echo", "a", "b"]);
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, json!({"command": "echo", "args": ["a", "b"]}));
    let out = d.cli(&["--json", "run", "echo", "--flag", "x"]);
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed,
        json!({"capsule": "echo", "command": "echo",
               "output": {"command": "echo", "args": ["--flag", "x"]}})
    );
    let out = d.cli(&["run", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not_found"), "{err}");
    let out = d.cli(&["commands"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("echo"),
        "{out:?}"
    );

    // A command as `commands` lists it, with its slash: through the socket and the CLI.
    let out = invoke(&client, "/echo", &["slash"]).await.unwrap();
    assert_eq!(out.command, "/echo");
    let out = d.cli(&["run", "/echo", "a"]);
    assert!(out.status.success(), "{out:?}");
    // The built-in capsule's commands run as the `astrid` commands of the same name.
    for builtin in ["status", "/ps", "capsules", "commands"] {
        let out = d.cli(&["run", builtin]);
        assert!(out.status.success(), "{builtin}: {out:?}");
    }
    let out = d.cli(&["run", "status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pid"),
        "{out:?}"
    );
    for (args, says) in [
        (&["run", "quit"][..], "a command of the interactive session"),
        (&["run", "ps", "x"][..], "takes no arguments"),
    ] {
        let out = d.cli(args);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}

// ---------------------------------------------------------------------------------------
// Crashing capsules
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_guest_crash_is_answered_and_restarted_without_touching_others() {
    let d = TestDaemon::builder()
        .capsules(&[
            "echo",
            "faults/trap",
            "faults/loop",
            "faults/oom",
            "faults/stack-overflow",
            "faults/garbage",
            "faults/crash-after",
        ])
        .start();
    let client = patient_client(&d).await;
    let bystander = patient_client(&d).await;

    for (name, what) in [
        ("trap", "unreachable"),
        ("loop", "fuel"),
        ("oom", "unreachable"),
        ("stack-overflow", "stack overflow"),
        ("garbage", "garbage"),
    ] {
        let (code, message) = failure(invoke(&client, name, &[]).await);
        assert_eq!(code, ErrorCode::CapsuleCrashed, "{name}: {message}");
        assert!(message.contains(what), "{name}: {message}");
        assert!(message.contains(&format!("`{name}`")), "{name}: {message}");

        let node = wait_restarted(&client, &format!("capsule:{name}"), 1).await;
        let reason = node.last_failure.unwrap().reason;
        assert!(reason.contains(what), "{name}: {reason}");
        let info = wait_capsule(&client, name, |c| c.state == CapsuleState::Running).await;
        assert_eq!(info.restarts, 1, "{info:?}");

        // Others are not affected.
        assert_eq!(
            run(&bystander, "echo", &[name]).await,
            json!({"command": "echo", "args": [name]})
        );
        bystander.ping().await.unwrap();
    }

    // crash-after: 1, 2, 3, then a crash; the fresh instance counts from 1 again.
    for n in 1..=3 {
        assert_eq!(run(&client, "crash-after", &[]).await, json!(n));
    }
    let (code, message) = failure(invoke(&client, "crash-after", &[]).await);
    assert_eq!(code, ErrorCode::CapsuleCrashed, "{message}");
    assert!(message.contains("unreachable"), "{message}");
    wait_restarted(&client, "capsule:crash-after", 1).await;
    assert_eq!(run(&client, "crash-after", &[]).await, json!(1));

    // Nothing else restarted; the kernel did not notice.
    let tree = client.tree().await.unwrap();
    assert_eq!(tree.find("capsule:echo").unwrap().restarts, 0);
    for kernel in [
        "bus",
        "store",
        "capabilities",
        "vfs",
        "listener",
        "registry",
    ] {
        assert_eq!(
            tree.find(kernel).unwrap().restarts,
            0,
            "{kernel}: {tree:#?}"
        );
    }
    let status = client.status().await.unwrap();
    assert!(status.unavailable.is_empty(), "{:?}", status.unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capsule_past_its_restart_budget_fails_until_reloaded() {
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            copy_capsule(&example_capsule("echo"), &home_capsules(home));
            copy_with(
                &home_capsules(home),
                "faults/trap",
                "[restart]\nintensity = 2\nperiod = \"30s\"\nbackoff = \"10ms\"\n",
            );
        })
        .start();
    let client = patient_client(&d).await;

    // Two crashes are within the budget.
    for n in 1..=2 {
        let (code, _) = failure(invoke(&client, "trap", &[]).await);
        assert_eq!(code, ErrorCode::CapsuleCrashed);
        wait_restarted(&client, "capsule:trap", n).await;
    }
    // The third is one too many.
    let (code, _) = failure(invoke(&client, "trap", &[]).await);
    assert_eq!(code, ErrorCode::CapsuleCrashed);
    let info = wait_capsule(&client, "trap", |c| c.state == CapsuleState::Failed).await;
    assert!(
        info.error.as_deref().unwrap_or("").contains("unreachable"),
        "{info:?}"
    );
    let node = wait_node(&client, "capsule:trap", |n| n.state == ChildState::Failed).await;
    assert!(node.uptime_ms.is_none(), "{node:?}");

    // Requests are refused at once, and name the way out.
    let started = Instant::now();
    let (code, message) = failure(invoke(&client, "trap", &[]).await);
    assert_eq!(code, ErrorCode::CapsuleFailed, "{message}");
    assert!(message.contains("reload"), "{message}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // Others are fine, and so is the daemon.
    assert_eq!(
        run(&client, "echo", &["x"]).await,
        json!({"command": "echo", "args": ["x"]})
    );
    client.ping().await.unwrap();

    // A reload with nothing changed on disk starts the failed capsule again.
    let report = reload(&client).await;
    assert_eq!(report.restarted, vec!["trap".to_owned()], "{report:?}");
    assert!(report.added.is_empty(), "{report:?}");
    assert!(report.changed.is_empty(), "{report:?}");
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(sorted(&report.unchanged), ["echo", "trap"], "{report:?}");
    let info = wait_capsule(&client, "trap", |c| c.state == CapsuleState::Running).await;
    assert_eq!(info.restarts, 0, "{info:?}");
    wait_node(&client, "capsule:trap", |n| n.state == ChildState::Running).await;
    // It runs (and crashes) again, rather than being refused.
    let (code, _) = failure(invoke(&client, "trap", &[]).await);
    assert_eq!(code, ErrorCode::CapsuleCrashed);
    wait_restarted(&client, "capsule:trap", 1).await;
    // echo was never restarted by any of this.
    let echo = wait_restarted(&client, "capsule:echo", 0).await;
    assert!(echo.last_failure.is_none(), "{echo:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_gets_timeout_and_the_capsule_restarts() {
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            copy_capsule(&example_capsule("echo"), &home_capsules(home));
            copy_with(
                &home_capsules(home),
                "faults/loop",
                // About two seconds of looping: far past the deadline, then stopped by fuel.
                "[limits]\nfuel = 1000000000\ncall_timeout = \"200ms\"\n",
            );
        })
        .start();
    let client = patient_client(&d).await;

    let started = Instant::now();
    let (code, message) = failure(invoke(&client, "loop", &[]).await);
    let took = started.elapsed();
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    assert!(message.contains("200 ms"), "{message}");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    let node = wait_restarted(&client, "capsule:loop", 1).await;
    let reason = node.last_failure.unwrap().reason;
    assert!(reason.contains("did not answer within 200 ms"), "{reason}");
    assert_eq!(
        run(&client, "echo", &[]).await,
        json!({"command": "echo", "args": []})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_behind_a_crash_get_capsule_crashed() {
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            copy_capsule(&example_capsule("echo"), &home_capsules(home));
            copy_with(
                &home_capsules(home),
                "faults/loop",
                "[limits]\nfuel = 1000000000\ncall_timeout = \"500ms\"\n",
            );
        })
        .start();
    let first = patient_client(&d).await;
    let second = patient_client(&d).await;

    // Pipelined on one connection, then more from another: the capsule runs one of them
    // until its deadline, the others wait in its mailbox and must not be left hanging
    // when it dies.
    let started = Instant::now();
    let (loop_a, loop_b, loop_c, echo) = tokio::join!(
        invoke(&first, "loop", &["a"]),
        invoke(&first, "loop", &["b"]),
        invoke(&second, "loop", &["c"]),
        invoke(&second, "echo", &["unaffected"]),
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    echo.unwrap();
    // Nothing preempts the looping guest: the call it runs and the two queued behind it are
    // answered at their deadline (`timeout`), or as crashed once its instance is gone.
    for r in [loop_a, loop_b, loop_c] {
        let (code, message) = failure(r);
        assert!(
            matches!(code, ErrorCode::Timeout | ErrorCode::CapsuleCrashed),
            "{code}: {message}"
        );
    }
    // One death, one restart.
    wait_restarted(&first, "capsule:loop", 1).await;
    first.ping().await.unwrap();
}

/// Capsules write their replies straight into the caller's connection, from their own
/// thread: pipelined calls are all answered, with their own ids; a client that leaves with
/// calls in flight costs nothing; and a draining session waits for capsule replies before it
/// closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capsule_replies_reach_pipelined_departed_and_draining_clients() {
    let mut d = TestDaemon::builder()
        .capsules(&["echo"])
        .fault_injection()
        .start();
    let client = patient_client(&d).await;
    wait_node(&client, "capsule:echo", |n| n.state == ChildState::Running).await;
    let invoke_raw = |raw: &mut common::Raw, id: u64, arg: &str| {
        #[derive(serde::Serialize)]
        enum Req {
            InvokeCommand { name: String, args: Vec<String> },
        }
        raw.request(
            id,
            Req::InvokeCommand {
                name: "echo".into(),
                args: vec![arg.to_owned()],
            },
        );
    };

    // Pipelined: 50 calls sent before any reply is read, each answered with its own output.
    let mut raw = d.raw();
    for id in 0..50 {
        invoke_raw(&mut raw, id, &format!("n{id}"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let reply = raw.recv().expect("a reply");
        let id = common::get(&reply, "id").as_u64().unwrap();
        let output = common::get(common::get(&reply, "result"), "output");
        let args = common::get(output, "args");
        assert_eq!(args[0].as_str(), Some(format!("n{id}").as_str()), "{reply}");
        assert!(seen.insert(id), "{id} answered twice");
    }

    // Departed: calls queued behind a hang, then the client leaves; the daemon serves on.
    try_inject(&client, "capsule:echo", Fault::Hang { millis: 300 })
        .await
        .unwrap();
    let mut leaving = d.raw();
    for id in 0..5 {
        invoke_raw(&mut leaving, id, "gone");
    }
    drop(leaving);
    assert_eq!(
        run(&client, "echo", &["after"]).await,
        json!({"command": "echo", "args": ["after"]})
    );

    // Draining: a call held behind a hang when the daemon is told to stop is answered
    // before the connection closes.
    try_inject(&client, "capsule:echo", Fault::Hang { millis: 300 })
        .await
        .unwrap();
    let mut draining = d.raw();
    invoke_raw(&mut draining, 7, "last");
    client
        .call::<astrid::protocol::ShutdownAck>(Request::Shutdown {
            reason: "test".into(),
        })
        .await
        .unwrap();
    let reply = draining.recv().expect("the call in flight is answered");
    assert_eq!(common::get(&reply, "id").as_u64(), Some(7), "{reply}");
    let output = common::get(common::get(&reply, "result"), "output");
    assert_eq!(
        common::get(output, "args")[0].as_str(),
        Some("last"),
        "{reply}"
    );
    assert!(draining.closed());
    d.wait_exit(DEADLINE).expect("the daemon exits");
}

// ---------------------------------------------------------------------------------------
// Host functions and capabilities
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_calls_work_with_the_manifest_grants_and_their_data_outlives_a_crash() {
    let d = TestDaemon::builder()
        .capsules(&["hello-rust", "notes"])
        .fault_injection()
        .start();
    let client = patient_client(&d).await;

    assert_eq!(run(&client, "hello", &[]).await, json!("Hello, world!"));
    assert_eq!(
        run(&client, "hello", &["Ada", "L"]).await,
        json!("Hello, Ada L!")
    );

    // kv: the counter is durable, and the crash of the capsule does not lose it.
    assert_eq!(run(&client, "count", &[]).await, json!(1));
    assert_eq!(run(&client, "count", &[]).await, json!(2));
    try_inject(&client, "capsule:hello-rust", Fault::Trap)
        .await
        .unwrap();
    wait_restarted(&client, "capsule:hello-rust", 1).await;
    assert_eq!(run(&client, "count", &[]).await, json!(3));
    // Its write is audited under the capsule's name.
    wait_audit(&client, "hello-rust's kv_put", |e| {
        e.actor == "capsule:hello-rust" && e.action == "kv_put" && e.target == "count"
    })
    .await;

    // Manifest grants are listed, and cannot be revoked through the API.
    let grants: Vec<Grant> = client
        .call(Request::ListCapabilities {
            subject: Some("notes".into()),
        })
        .await
        .unwrap();
    let mut resources: Vec<&str> = grants.iter().map(|g| g.resource.as_str()).collect();
    resources.sort_unstable();
    assert_eq!(resources, ["kv", "vfs:read:notes/**", "vfs:write:notes/**"]);
    assert!(grants.iter().all(|g| g.source == GrantSource::Manifest));
    let (code, _) = failure(
        client
            .call::<Removed>(Request::RevokeCapability {
                subject: "hello-rust".into(),
                resource: "kv".into(),
            })
            .await,
    );
    assert_eq!(code, ErrorCode::Forbidden);

    // notes: a workspace file and a counter.
    assert_eq!(run(&client, "note-count", &[]).await, json!(0));
    assert_eq!(run(&client, "note-list", &[]).await, json!(""));
    assert_eq!(
        run(&client, "note-add", &["hello", "world"]).await,
        json!(1)
    );
    assert_eq!(run(&client, "note-list", &[]).await, json!("hello world\n"));
    assert_eq!(run(&client, "note-count", &[]).await, json!(1));
    let file = d.workspace.path().join("notes/notes.txt");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello world\n");
    assert_eq!(run(&client, "note-add", &["second"]).await, json!(2));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "hello world\nsecond\n"
    );
    wait_audit(&client, "notes' vfs_write", |e| {
        e.actor == "capsule:notes" && e.action == "vfs_write" && e.target == "notes/notes.txt"
    })
    .await;
    // A command error is the guest's answer, not a crash: nothing restarts.
    let (code, message) = failure(invoke(&client, "note-add", &[]).await);
    assert_eq!(code, ErrorCode::CapsuleError);
    assert!(message.contains("usage"), "{message}");
    let notes = wait_restarted(&client, "capsule:notes", 0).await;
    assert!(notes.last_failure.is_none(), "{notes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_calls_without_a_grant_are_denied_and_audited() {
    // Copies of hello-rust and notes under other names, with fewer grants: hello-nokv has
    // none, notes-ro may read its folder but not write it.
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            let root = home_capsules(home);
            write_capsule(
                &root,
                "hello-nokv",
                "[package]\nname = \"hello-nokv\"\nversion = \"0.1.0\"\n\n[module]\n\
             file = \"hello_rust.wasm\"\n\n[[command]]\nname = \"hello\"\n\n\
             [[command]]\nname = \"count\"\n",
                &[("hello_rust.wasm", &module("hello-rust", "hello_rust.wasm"))],
            );
            write_capsule(
                &root,
                "notes-ro",
                "[package]\nname = \"notes-ro\"\nversion = \"0.1.0\"\n\n[module]\n\
             file = \"notes.wasm\"\n\n[capabilities]\n\
             grant = [\"kv\", \"vfs:read:notes/**\"]\n\n[limits]\nmemory_pages = 64\n\n\
             [[command]]\nname = \"note-add\"\n\n[[command]]\nname = \"note-list\"\n",
                &[("notes.wasm", &module("notes", "notes.wasm"))],
            );
        })
        .start();
    let client = patient_client(&d).await;

    // No `kv`: the host call is denied, the guest reports it, the denial is audited.
    assert_eq!(run(&client, "hello", &[]).await, json!("Hello, world!"));
    let (code, message) = failure(invoke(&client, "count", &[]).await);
    assert_eq!(code, ErrorCode::CapsuleError, "{message}");
    assert!(message.contains("kv_get count: code -1"), "{message}");
    let denial = wait_audit(&client, "the kv denial", |e| {
        e.actor == "capsule:hello-nokv" && e.action == "deny" && e.target == "kv"
    })
    .await;
    assert!(denial.outcome.contains("denied"), "{denial:?}");

    // Reading is granted, writing is not.
    assert_eq!(run(&client, "note-list", &[]).await, json!(""));
    let (code, message) = failure(invoke(&client, "note-add", &["x"]).await);
    assert_eq!(code, ErrorCode::CapsuleError, "{message}");
    assert!(
        message.contains("vfs_write notes/notes.txt: code -1"),
        "{message}"
    );
    wait_audit(&client, "the vfs write denial", |e| {
        e.actor == "capsule:notes-ro"
            && e.action == "deny"
            && e.target == "vfs:write:notes/notes.txt"
    })
    .await;
    let file = d.workspace.path().join("notes/notes.txt");
    assert!(!file.exists());

    // A runtime grant allows it; revoking it denies it again.
    let grant: Grant = client
        .call(Request::GrantCapability {
            subject: "notes-ro".into(),
            resource: "vfs:write:notes/**".into(),
        })
        .await
        .unwrap();
    assert_eq!(grant.source, GrantSource::Runtime);
    assert_eq!(run(&client, "note-add", &["granted"]).await, json!(1));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "granted\n");
    let removed: Removed = client
        .call(Request::RevokeCapability {
            subject: "notes-ro".into(),
            resource: "vfs:write:notes/**".into(),
        })
        .await
        .unwrap();
    assert!(removed.removed);
    let (code, _) = failure(invoke(&client, "note-add", &["revoked"]).await);
    assert_eq!(code, ErrorCode::CapsuleError);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "granted\n");

    // Denials are answers, not crashes.
    let tree = client.tree().await.unwrap();
    for name in ["capsule:hello-nokv", "capsule:notes-ro"] {
        let node = tree.find(name).unwrap();
        assert_eq!(node.restarts, 0, "{node:?}");
        assert_eq!(node.state, ChildState::Running, "{node:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Injected faults
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_injected_into_a_capsule_restart_it() {
    let d = TestDaemon::builder()
        .capsules(&["echo"])
        .fault_injection()
        .start();
    let client = patient_client(&d).await;
    let echoes = |node: &TreeNode| node.state == ChildState::Running;
    wait_node(&client, "capsule:echo", echoes).await;

    // Panic, stop, trap (the last through the CLI): one restart each, within echo's default
    // budget of 3; echo serves after each.
    for (n, (fault, reason)) in [
        (Fault::Panic, "panicked: injected fault"),
        (Fault::Stop, "stopped unexpectedly"),
        (Fault::Trap, "trapped: injected fault"),
    ]
    .into_iter()
    .enumerate()
    {
        if fault == Fault::Trap {
            let out = d.cli(&["fault", "capsule:echo", "trap"]);
            assert!(out.status.success(), "{out:?}");
        } else {
            let done = try_inject(&client, "capsule:echo", fault.clone())
                .await
                .unwrap();
            assert_eq!(done.target, "capsule:echo");
            assert_eq!(done.fault, fault);
        }
        let n = u32::try_from(n).unwrap() + 1;
        let node = wait_restarted(&client, "capsule:echo", n).await;
        let failure = node.last_failure.unwrap();
        assert!(failure.reason.contains(reason), "{fault}: {failure:?}");
        assert_eq!(
            run(&client, "echo", &["again"]).await,
            json!({"command": "echo", "args": ["again"]})
        );
    }
    assert_eq!(capsule(&client, "echo").await.unwrap().restarts, 3);

    // A hang: a call made meanwhile is answered, late or with `timeout`, and nothing
    // restarts.
    try_inject(&client, "capsule:echo", Fault::Hang { millis: 300 })
        .await
        .unwrap();
    let started = Instant::now();
    let answer = invoke(&client, "echo", &["during"]).await;
    let took = started.elapsed();
    match answer {
        Ok(out) => assert_eq!(
            serde_json::to_value(&out.output).unwrap(),
            json!({"command": "echo", "args": ["during"]})
        ),
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::Timeout), "{e}"),
    }
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    let node = wait_restarted(&client, "capsule:echo", 3).await;
    assert_eq!(node.restarts, 3);

    // `trap` is for capsules only; unknown targets are not found.
    let (code, message) = failure(try_inject(&client, "bus", Fault::Trap).await);
    assert_eq!(code, ErrorCode::InvalidArgument, "{message}");
    let (code, _) = failure(try_inject(&client, "capsule:nope", Fault::Panic).await);
    assert_eq!(code, ErrorCode::NotFound);
    let tree = client.tree().await.unwrap();
    assert_eq!(tree.find("bus").unwrap().restarts, 0);
    client.ping().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Reloading
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_changes_and_removes_capsules_and_leaves_the_rest_running() {
    let d = TestDaemon::builder()
        .capsules(&["echo", "faults/trap", "faults/crash-after"])
        .fault_injection()
        .start();
    let client = patient_client(&d).await;
    let root = home_capsules(d.home.path());

    // State that a restart would lose: crash-after's call count, echo's restart count.
    assert_eq!(run(&client, "crash-after", &[]).await, json!(1));
    assert_eq!(run(&client, "crash-after", &[]).await, json!(2));
    try_inject(&client, "capsule:echo", Fault::Trap)
        .await
        .unwrap();
    wait_restarted(&client, "capsule:echo", 1).await;
    let before = client.tree().await.unwrap();
    let uptime = |tree: &TreeNode, name: &str| tree.find(name).unwrap().uptime_ms.unwrap();

    // Added.
    copy_capsule(&example_capsule("hello-rust"), &root);
    let report = reload(&client).await;
    assert_eq!(report.added, ["hello-rust"], "{report:?}");
    assert!(report.changed.is_empty(), "{report:?}");
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(
        sorted(&report.unchanged),
        ["crash-after", "echo", "trap"],
        "{report:?}"
    );
    assert_eq!(run(&client, "hello", &[]).await, json!("Hello, world!"));
    wait_node(&client, "capsule:hello-rust", |n| {
        n.state == ChildState::Running
    })
    .await;

    // Changed: echo's module gains a comment.
    let wat = root.join("echo/echo.wat");
    let mut text = std::fs::read_to_string(&wat).unwrap();
    text.push_str("\n;; changed\n");
    std::fs::write(&wat, text).unwrap();
    let report = reload(&client).await;
    assert_eq!(report.changed, ["echo"], "{report:?}");
    assert!(report.added.is_empty(), "{report:?}");
    assert_eq!(
        sorted(&report.unchanged),
        ["crash-after", "hello-rust", "trap"],
        "{report:?}"
    );
    // A new instance: its restart count starts over.
    let echo = wait_restarted(&client, "capsule:echo", 0).await;
    assert!(echo.last_failure.is_none(), "{echo:?}");
    let info = wait_capsule(&client, "echo", |c| c.state == CapsuleState::Running).await;
    assert_eq!(info.restarts, 0, "{info:?}");
    assert_eq!(
        run(&client, "echo", &["new"]).await,
        json!({"command": "echo", "args": ["new"]})
    );

    // Unchanged ones were not touched: same instance (crash-after counts on), no restart,
    // uptime still growing.
    assert_eq!(run(&client, "crash-after", &[]).await, json!(3));
    let after = client.tree().await.unwrap();
    for name in ["capsule:crash-after", "capsule:trap"] {
        assert_eq!(after.find(name).unwrap().restarts, 0, "{after:#?}");
        assert!(
            uptime(&after, name) > uptime(&before, name),
            "{name}: {} then {}",
            uptime(&before, name),
            uptime(&after, name)
        );
    }

    // Removed: its commands go, and so does its node.
    std::fs::remove_dir_all(root.join("trap")).unwrap();
    let report = reload(&client).await;
    assert_eq!(report.removed, ["trap"], "{report:?}");
    assert!(
        report.capsules.iter().all(|c| c.name != "trap"),
        "{report:?}"
    );
    let (code, _) = failure(invoke(&client, "trap", &[]).await);
    assert_eq!(code, ErrorCode::NotFound);
    assert!(commands(&client).await.iter().all(|c| c.capsule != "trap"));
    assert!(capsule(&client, "trap").await.is_none());
    let gone = poll_async(DEADLINE, async || {
        let tree = client.tree().await.unwrap();
        tree.find("capsule:trap")
            .is_none()
            .then_some(())
            .ok_or(tree)
    })
    .await;
    gone.unwrap_or_else(|tree| panic!("capsule:trap still in {tree:#?}"));
    // The rest serve on.
    assert_eq!(
        run(&client, "hello", &["again"]).await,
        json!("Hello, again!")
    );
    assert_eq!(
        run(&client, "echo", &[]).await,
        json!({"command": "echo", "args": []})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_that_do_not_fit_the_abi_are_invalid_and_the_daemon_serves_on() {
    let manifest = |name: &str| one_command_manifest(name, "");
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            let root = home_capsules(home);
            copy_capsule(&example_capsule("echo"), &root);
            write_capsule(
                &root,
                "empty",
                &manifest("empty"),
                &[("m.wat", b"(module)")],
            );
            write_capsule(
                &root,
                "no-command",
                &manifest("no-command"),
                &[(
                    "m.wat",
                    b"(module (memory (export \"memory\") 1)\n\
                  (func (export \"astrid_alloc\") (param i32) (result i32) i32.const 16))",
                )],
            );
            write_capsule(
                &root,
                "bad-import",
                &manifest("bad-import"),
                &[(
                    "m.wat",
                    b"(module (import \"astrid\" \"nope\" (func))\n\
                  (memory (export \"memory\") 1)\n\
                  (func (export \"astrid_alloc\") (param i32) (result i32) i32.const 16)\n\
                  (func (export \"astrid_command\") (param i32 i32) (result i64) i64.const 0))",
                )],
            );
            write_capsule(
                &root,
                "not-wasm",
                &manifest("not-wasm"),
                &[("m.wat", b"(modu")],
            );
        })
        .start();
    let client = patient_client(&d).await;

    for (name, what) in [
        ("empty", "memory"),
        ("no-command", "astrid_command"),
        ("bad-import", "astrid.nope"),
        ("not-wasm", "does not compile"),
    ] {
        let info = capsule(&client, name).await.unwrap();
        assert_eq!(info.state, CapsuleState::Invalid, "{info:?}");
        let error = info.error.unwrap_or_default();
        assert!(error.contains(what), "{name}: {error}");
        assert!(error.contains("m.wat"), "{name}: names the file: {error}");
        let (code, _) = failure(invoke(&client, name, &[]).await);
        assert_eq!(code, ErrorCode::NotFound, "{name}");
    }
    let tree = client.tree().await.unwrap();
    let capsules = tree.find("capsules").unwrap();
    let mut children: Vec<&str> = capsules.children.iter().map(|c| c.name.as_str()).collect();
    children.sort_unstable();
    assert_eq!(children, ["capsule:echo", "registry"], "{capsules:#?}");

    client.ping().await.unwrap();
    assert_eq!(
        run(&client, "echo", &[]).await,
        json!({"command": "echo", "args": []})
    );
    let status = client.status().await.unwrap();
    assert!(status.unavailable.is_empty(), "{:?}", status.unavailable);

    // Fixing the module on disk and reloading loads it.
    std::fs::copy(
        example_capsule("echo").join("echo.wat"),
        d.home.path().join("capsules/empty/m.wat"),
    )
    .unwrap();
    let report = reload(&client).await;
    assert_eq!(report.changed, ["empty"], "{report:?}");
    let info = wait_capsule(&client, "empty", |c| c.state == CapsuleState::Running).await;
    assert!(info.error.is_none(), "{info:?}");
    assert_eq!(
        run(&client, "empty", &["x"]).await,
        json!({"command": "empty", "args": ["x"]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_capsule_overrides_the_home_capsule_of_the_same_name() {
    // The workspace's `echo` runs crash-after's module: it answers 1, not the input map.
    let d = TestDaemon::builder()
        .prepare(|home, workspace| {
            copy_capsule(&example_capsule("echo"), &home_capsules(home));
            write_capsule(
                &astrid::paths::workspace_capsules(workspace),
                "my-echo",
                "[package]\nname = \"echo\"\nversion = \"0.2.0\"\n\
             description = \"The workspace's echo\"\n\n[module]\nfile = \"count.wat\"\n\n\
             [[command]]\nname = \"echo\"\n",
                &[(
                    "count.wat",
                    &module("faults/crash-after", "crash-after.wat"),
                )],
            );
        })
        .start();
    let client = patient_client(&d).await;
    // The workspace's own capsules run once it is trusted (see `trust.rs`).
    let _: TrustReport = client
        .call(Request::TrustWorkspace { path: None })
        .await
        .unwrap();

    assert_eq!(run(&client, "echo", &["a"]).await, json!(1));
    assert_eq!(run(&client, "echo", &["a"]).await, json!(2));
    let list = client.capsules().await.unwrap();
    let echoes: Vec<&CapsuleInfo> = list.iter().filter(|c| c.name == "echo").collect();
    assert_eq!(echoes.len(), 1, "{list:#?}");
    let echo = echoes[0];
    assert_eq!(echo.origin, CapsuleOrigin::Workspace, "{echo:?}");
    assert_eq!(echo.description.as_deref(), Some("The workspace's echo"));
    assert_eq!(echo.version.as_deref(), Some("0.2.0"));
    assert_eq!(echo.state, CapsuleState::Running);

    let meta: Vec<CapsuleMetadata> = client
        .call(Request::GetCapsuleMetadata {
            name: Some("echo".into()),
        })
        .await
        .unwrap();
    let overridden = PathBuf::from(meta[0].overrides.as_deref().unwrap());
    assert_eq!(
        std::fs::canonicalize(overridden).unwrap(),
        std::fs::canonicalize(home_capsules(d.home.path()).join("echo")).unwrap()
    );

    // Removing the workspace copy brings the home one back on reload.
    std::fs::remove_dir_all(astrid::paths::workspace_capsules(d.workspace.path()).join("my-echo"))
        .unwrap();
    let report = reload(&client).await;
    assert_eq!(report.changed, ["echo"], "{report:?}");
    let echo = wait_capsule(&client, "echo", |c| c.origin == CapsuleOrigin::Home).await;
    assert_eq!(echo.state, CapsuleState::Running, "{echo:?}");
    assert_eq!(
        run(&client, "echo", &["a"]).await,
        json!({"command": "echo", "args": ["a"]})
    );
}

// ---------------------------------------------------------------------------------------
// Supervision around capsules
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_acknowledged_for_a_capsule_is_applied_or_refused() {
    // Two stops queued behind a hang: the first kills the incarnation, so the second can
    // only be refused (`not_running`) or applied to the next incarnation; an `ok` for a fault
    // that never happens leaves restart counts that no client can reconcile.
    let d = TestDaemon::builder()
        .capsules(&["echo"])
        .fault_injection()
        .start();
    let client = patient_client(&d).await;
    try_inject(&client, "capsule:echo", Fault::Hang { millis: 300 })
        .await
        .unwrap();
    try_inject(&client, "capsule:echo", Fault::Stop)
        .await
        .unwrap();
    let second = try_inject(&client, "capsule:echo", Fault::Stop).await;
    let expected = match second {
        Ok(_) => 2,
        Err(e) => {
            assert_eq!(e.code(), Some(ErrorCode::NotRunning), "{e}");
            1
        }
    };
    let restarted = poll_async(Duration::from_secs(3), async || {
        let tree = client.tree().await.unwrap();
        let node = tree.find("capsule:echo").cloned().unwrap();
        let done = node.restarts == expected && node.state == ChildState::Running;
        done.then_some(()).ok_or(node)
    })
    .await;
    if let Err(node) = restarted {
        panic!(
            "{expected} stop faults acknowledged, but capsule:echo restarted {} times: {node:?}",
            node.restarts
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_registry_keeps_capsules_and_restarting_their_supervisor_reloads_them() {
    let d = TestDaemon::builder()
        .capsules(&["echo", "faults/crash-after"])
        .fault_injection()
        .start();
    let client = patient_client(&d).await;
    assert_eq!(run(&client, "crash-after", &[]).await, json!(1));

    // The registry is only the first child: its restart leaves the capsules running (the
    // same instances: crash-after counts on).
    try_inject(&client, "registry", Fault::Panic).await.unwrap();
    wait_node(&client, "registry", |n| {
        n.restarts == 1 && n.state == ChildState::Running
    })
    .await;
    assert_eq!(run(&client, "crash-after", &[]).await, json!(2));
    let tree = client.tree().await.unwrap();
    for name in ["capsule:echo", "capsule:crash-after"] {
        assert_eq!(tree.find(name).unwrap().restarts, 0, "{tree:#?}");
    }
    let list = client.capsules().await.unwrap();
    for name in ["echo", "crash-after"] {
        let c = list.iter().find(|c| c.name == name).unwrap();
        assert_eq!(c.state, CapsuleState::Running, "{c:?}");
    }
    assert!(commands(&client).await.iter().any(|c| c.name == "echo"));

    // The capsules supervisor itself: everything under it starts afresh.
    try_inject(&client, "capsules", Fault::Panic).await.unwrap();
    wait_node(&client, "capsules", |n| {
        n.restarts == 1 && n.state == ChildState::Running
    })
    .await;
    for name in ["echo", "crash-after"] {
        wait_node(&client, &format!("capsule:{name}"), |n| {
            n.state == ChildState::Running
        })
        .await;
    }
    assert_eq!(run(&client, "crash-after", &[]).await, json!(1));
    assert_eq!(
        run(&client, "echo", &[]).await,
        json!({"command": "echo", "args": []})
    );
    let tree = client.tree().await.unwrap();
    let capsules = tree.find("capsules").unwrap();
    let names: Vec<&str> = capsules.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names[0], "registry", "{capsules:#?}");
    assert_eq!(names.len(), 3, "{capsules:#?}");
    client.ping().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Deadlines while the guest is in host code
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_call_to_a_hung_service_ends_at_the_call_deadline() {
    let d = TestDaemon::builder()
        .capsules(&["hello-rust"])
        .fault_injection()
        .start();
    let client = patient_client(&d).await;
    assert_eq!(run(&client, "count", &[]).await, json!(1));

    try_inject(&client, "store", Fault::Hang { millis: 1500 })
        .await
        .unwrap();
    let started = Instant::now();
    let (code, message) = failure(invoke(&client, "count", &[]).await);
    let took = started.elapsed();
    assert!(
        matches!(code, ErrorCode::Timeout | ErrorCode::CapsuleError),
        "{code}: {message}"
    );
    assert!(
        took < Duration::from_millis(1400),
        "answered after {took:?}"
    );
    // Commands that need no service still work meanwhile (after a restart, if the deadline
    // crashed the capsule).
    let hello = poll_async(DEADLINE, async || {
        let answer = invoke(&client, "hello", &[]).await;
        if let Err(e) = &answer {
            // Restarting; or, just before the supervisor has seen the crash, routed to the
            // instance that is gone.
            assert!(
                matches!(
                    e.code(),
                    Some(ErrorCode::Unavailable | ErrorCode::CapsuleCrashed)
                ),
                "hello-rust stopped answering after count ({code}: {message}): {e}"
            );
        }
        answer
    })
    .await;
    let out = hello.unwrap_or_else(|e| panic!("hello never came back: {e}"));
    assert_eq!(out.output, rmpv::Value::from("Hello, world!"));
    // Once the store answers again, so does the capsule, with the counter intact.
    let count = poll_async(DEADLINE, async || {
        let answer = invoke(&client, "count", &[]).await;
        if let Err(e) = &answer {
            assert!(
                matches!(
                    e.code(),
                    Some(
                        ErrorCode::Timeout
                            | ErrorCode::CapsuleError
                            | ErrorCode::Unavailable
                            | ErrorCode::CapsuleCrashed
                    )
                ),
                "{e}"
            );
        }
        answer
    })
    .await;
    let out = count.unwrap_or_else(|e| panic!("count never came back: {e}"));
    assert_eq!(out.output, rmpv::Value::from(2));
    assert_eq!(
        client.tree().await.unwrap().find("store").unwrap().restarts,
        0
    );
}

/// A guest that spends its time in host calls (`log`, at debug level: filtered out, and
/// past its first 100 lines refused by its budget, but still a trip through the host) and
/// never returns. Its fuel must outlast its deadline even though such a call is cheap.
const SPIN_IN_HOST_WAT: &str = r#"(module
  (import "astrid" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "spin")
  (func (export "astrid_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "astrid_command") (param i32 i32) (result i64)
    (loop $again
      (call $log (i32.const 3) (i32.const 0) (i32.const 4))
      (br $again))
    i64.const 0))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capsules_spinning_in_host_calls_are_stopped_at_their_deadline() {
    // Each capsule runs on a thread of its own: 32 of them, called at once, each in and out
    // of host code far past its deadline until its fuel ends it. Every caller gets `timeout`
    // (from the capsule, or from its session at deadline + 250 ms), every capsule is then
    // restarted, and the daemon stays up. (This once found wasmer's signal-based interrupt
    // deadlocking or aborting the daemon when a signal landed in host code.)
    const N: usize = 32;
    let mut d = TestDaemon::builder()
        .prepare(|home, _| {
            for i in 0..N {
                let name = format!("spin-{i}");
                write_capsule(
                    &home_capsules(home),
                    &name,
                    &format!(
                        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\n\n[module]\n\
                     file = \"spin.wat\"\n\n[limits]\nfuel = 2000000\n\
                     call_timeout = \"100ms\"\n\n[[command]]\nname = \"{name}\"\n"
                    ),
                    &[("spin.wat", SPIN_IN_HOST_WAT.as_bytes())],
                );
            }
        })
        .start();
    let client = patient_client(&d).await;
    let started = Instant::now();
    let calls = (0..N).map(|i| {
        let client = &client;
        async move { (i, invoke(client, &format!("spin-{i}"), &[]).await) }
    });
    let answers = futures_util::future::join_all(calls).await;
    let took = started.elapsed();
    for (i, answer) in answers {
        let (code, message) = failure(answer);
        assert_eq!(code, ErrorCode::Timeout, "spin-{i}: {message}");
    }
    // Every one ran out of fuel past its deadline and was restarted: how long that takes is
    // CPU time (32 guests spending their fuel in host calls on 2 cores, beside the other
    // tests), hence the generous bound. Done when every one is back, or at once when the
    // daemon is gone.
    let back = poll_async(Duration::from_secs(40), async || {
        let tree = match client.tree().await {
            Ok(tree) => tree,
            Err(e) => return Ok(Some(e)),
        };
        let behind: Vec<String> = (0..N)
            .filter_map(|i| {
                let name = format!("capsule:spin-{i}");
                match tree.find(&name) {
                    Some(n) if n.restarts == 1 && n.state == ChildState::Running => None,
                    Some(n) => Some(format!("{name}: {} after {} restarts", n.state, n.restarts)),
                    None => Some(format!("{name}: not in the tree")),
                }
            })
            .collect();
        if behind.is_empty() {
            Ok(None)
        } else {
            Err(behind)
        }
    })
    .await;
    match back {
        Ok(None) => {}
        Ok(Some(e)) => {
            let status = d.wait_exit(DEADLINE);
            let stderr = d.stderr();
            let head: String = stderr.chars().take(3000).collect();
            panic!("the daemon is gone ({e}); exit status {status:?}; stderr:\n{head}");
        }
        Err(behind) => panic!(
            "{} of {N} capsules never came back from their deadline (calls answered after \
             {took:?}): {behind:?}",
            behind.len()
        ),
    }
}

/// A module whose `astrid_command` always replies with `reply`, as a WAT data segment.
fn fixed_reply_module(reply: &[u8]) -> Vec<u8> {
    let mut data = String::new();
    for b in reply {
        write!(data, "\\{b:02x}").unwrap();
    }
    format!(
        "(module (memory (export \"memory\") 1)\n\
         (data (i32.const 1024) \"{data}\")\n\
         (func (export \"astrid_alloc\") (param i32) (result i32) i32.const 16)\n\
         (func (export \"astrid_command\") (param i32 i32) (result i64)\n\
           i64.const {}))",
        (1024u64 << 32) | reply.len() as u64
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_reaches_the_client_as_written_and_malformed_output_crashes() {
    let manifest = |name: &str| one_command_manifest(name, "[restart]\nbackoff = \"0s\"\n");
    // [5, "hi"] with wider encodings than needed, then a byte that is not part of it.
    let wide = [0x92, 0xcc, 0x05, 0xd9, 0x02, b'h', b'i', 0xc1];
    // {"error": "no"}, its map length in 16 bits.
    let error = [
        0xde, 0x00, 0x01, 0xa5, b'e', b'r', b'r', b'o', b'r', 0xa2, b'n', b'o',
    ];
    let nested = |depth: usize| {
        let mut bytes = vec![0x91; depth];
        bytes.push(0xc0);
        bytes
    };
    let modules = [
        ("wide", fixed_reply_module(&wide)),
        ("error", fixed_reply_module(&error)),
        ("deep-ok", fixed_reply_module(&nested(128))),
        ("too-deep", fixed_reply_module(&nested(129))),
        ("cut", fixed_reply_module(&[0x92, 0x01])),
    ];
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            for (name, module) in &modules {
                write_capsule(
                    &home_capsules(home),
                    name,
                    &manifest(name),
                    &[("m.wat", module)],
                );
            }
        })
        .start();
    let client = patient_client(&d).await;

    assert_eq!(run(&client, "wide", &[]).await, json!([5, "hi"]));
    let (code, message) = failure(invoke(&client, "error", &[]).await);
    assert_eq!(
        (code, message.as_str()),
        (ErrorCode::CapsuleError, "error: no")
    );
    let deep = invoke(&client, "deep-ok", &[]).await.unwrap().output;
    let mut depth = 0;
    let mut value = &deep;
    while let rmpv::Value::Array(items) = value {
        depth += 1;
        value = &items[0];
    }
    assert_eq!((depth, value), (128, &rmpv::Value::Nil));

    for (name, why) in [
        ("too-deep", "nested deeper than 128"),
        ("cut", "ends in the middle"),
    ] {
        let (code, message) = failure(invoke(&client, name, &[]).await);
        assert_eq!(code, ErrorCode::CapsuleCrashed, "{name}: {message}");
        assert!(
            message.contains("garbage") && message.contains(why),
            "{name}: {message}"
        );
        wait_restarted(&client, &format!("capsule:{name}"), 1).await;
    }
    // Those that answered well never crashed.
    for name in ["wide", "error", "deep-ok"] {
        let tree = client.tree().await.unwrap();
        let node = tree.find(&format!("capsule:{name}")).unwrap();
        assert_eq!(node.restarts, 0, "{node:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Idle capsules
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_capsule_holds_no_thread_and_a_busy_one_delays_no_other() {
    let d = TestDaemon::builder()
        .args(&["--capsule-linger", "300ms"])
        .prepare(|home, _| {
            let root = home_capsules(home);
            copy_capsule(&example_capsule("echo"), &root);
            copy_capsule(&example_capsule("faults/crash-after"), &root);
            copy_with(
                &root,
                "faults/loop",
                "[limits]\nfuel = 3000000000\ncall_timeout = \"1s\"\n",
            );
        })
        .start();
    let client = patient_client(&d).await;
    let pid = d.pid();

    // Loaded and never called: no capsule has a thread.
    for name in ["capsule:echo", "capsule:crash-a", "capsule:loop"] {
        assert_eq!(threads_named(pid, name), 0, "{name}");
    }
    // A call starts one, which serves the calls that follow while they come within the
    // linger (the guest's memory lasts: crash-after counts), then retires with the
    // instance; the next call starts a fresh one, as after a restart but without one.
    assert_eq!(run(&client, "crash-after", &[]).await, json!(1));
    assert_eq!(run(&client, "crash-after", &[]).await, json!(2));
    wait_threads(pid, "capsule:crash-a", 0).await;
    assert_eq!(run(&client, "crash-after", &[]).await, json!(1));
    assert_eq!(
        run(&client, "echo", &["woken"]).await,
        json!({"command": "echo", "args": ["woken"]})
    );
    wait_threads(pid, "capsule:echo", 0).await;
    let listed = capsule(&client, "crash-after").await.unwrap();
    assert_eq!(
        (listed.state, listed.restarts),
        (CapsuleState::Running, 0),
        "{listed:?}"
    );

    // A capsule stuck in a long call holds its own thread; another capsule's calls, its
    // first included, are not delayed by it.
    let looping = tokio::spawn({
        let client = patient_client(&d).await;
        async move { invoke(&client, "loop", &[]).await }
    });
    wait_threads(pid, "capsule:loop", 1).await;
    for i in 0..5 {
        let started = Instant::now();
        let arg = i.to_string();
        assert_eq!(
            run(&client, "echo", &[&arg]).await,
            json!({"command": "echo", "args": [arg]})
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "echo took {:?} while loop ran",
            started.elapsed()
        );
    }
    assert!(!looping.is_finished(), "loop should still be running");
    let (code, message) = failure(looping.await.unwrap());
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    wait_restarted(&client, "capsule:loop", 1).await;
    // Its thread ended with the failed instance; the restarted capsule has none until
    // called.
    wait_threads(pid, "capsule:loop", 0).await;
}
