//! Bus events and interceptors in capsules, end to end: real daemons with the example
//! capsules `watch` (subscribes to `user.>`, counts in its key-value namespace, announces on
//! `watch.seen`), `guard` and `guard-late` (interceptors on `user.guarded.>` at priorities 10
//! and 20) copied into their homes. Delivery to a capsule and what it publishes back, its
//! subscription across its own restart and the bus's (and gone after a reload removes it),
//! and interceptors that deny, rewrite and finish, in priority order, skipped while their
//! capsule is crashed, silent or failed, kept across a bus restart, gone after a reload;
//! and payloads nested deeper than clients are sure to decode, refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use astrid::client::{Client, ClientError};
use astrid::protocol::{
    CapsuleState, ChildState, CommandOutput, ErrorCode, Event, Fault, FaultInjected, Published,
    ReloadReport, Request, Subscribed, TreeNode,
};
use common::{
    DEADLINE, TestDaemon, copy_capsule, example_capsule, failure, one_command_manifest,
    patient_client, wait_node, write_capsule,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A client subscribed to `pattern`.
async fn subscriber(d: &TestDaemon, pattern: &str) -> Client {
    let client = patient_client(d).await;
    let _: Subscribed = client
        .call(Request::Subscribe {
            pattern: pattern.into(),
        })
        .await
        .unwrap();
    client
}

/// The command's output as JSON; panics on an error.
async fn run(client: &Client, name: &str) -> Value {
    let out: CommandOutput = client
        .call(Request::InvokeCommand {
            name: name.into(),
            args: Vec::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("/{name} failed: {e}"));
    serde_json::to_value(&out.output).unwrap()
}

/// Runs `name` until its output is `want`.
async fn wait_output(client: &Client, name: &str, want: &Value) {
    let end = Instant::now() + DEADLINE;
    loop {
        let got = run(client, name).await;
        if got == *want {
            return;
        }
        assert!(Instant::now() < end, "/{name} answered {got}, never {want}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn publish(
    client: &Client,
    topic: &str,
    payload: impl Into<rmpv::Value>,
) -> Result<Published, ClientError> {
    client
        .call(Request::Publish {
            topic: topic.into(),
            payload: payload.into(),
        })
        .await
}

async fn inject(client: &Client, target: &str, fault: Fault) {
    let _: FaultInjected = client
        .call(Request::InjectFault {
            target: target.into(),
            fault,
        })
        .await
        .unwrap();
}

/// The next event on this connection, whatever its topic.
async fn next_event(client: &mut Client) -> Event {
    tokio::time::timeout(DEADLINE, client.next_event())
        .await
        .expect("an event in time")
        .expect("connection open")
}

/// The next event on `topic`, skipping others.
async fn next_on(client: &mut Client, topic: &str) -> Event {
    let end = Instant::now() + DEADLINE;
    loop {
        let event = next_event(client).await;
        if event.topic == topic {
            return event;
        }
        assert!(Instant::now() < end, "no event on `{topic}` in time");
    }
}

/// Waits until `name` has restarted `n` times in all and runs again.
async fn wait_restarted(client: &Client, name: &str, n: u32) -> TreeNode {
    wait_node(client, name, |node| {
        node.restarts == n && node.state == ChildState::Running
    })
    .await
}

/// How many bus subscribers are labelled `label` (`None` while the bus is down).
async fn subscribers_labelled(client: &Client, label: &str) -> Option<usize> {
    let status = client.status().await.ok()?;
    let bus = status.bus?;
    Some(bus.subscribers.iter().filter(|s| s.label == label).count())
}

/// Waits until exactly one bus subscriber is labelled with each of `labels`: each has
/// registered (again) with the bus, and no stale registration is left.
async fn wait_registered(client: &Client, labels: &[&str]) {
    let end = Instant::now() + DEADLINE;
    for label in labels {
        loop {
            let n = subscribers_labelled(client, label).await;
            if n == Some(1) {
                break;
            }
            assert!(
                Instant::now() < end,
                "`{label}` is registered with the bus {n:?} times, never once"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The bus label of a test client's session.
fn session_label(client: &Client) -> String {
    format!("client:{} (test)", client.welcome().connection.unwrap())
}

/// Publishes `marker` on `user.marker` and returns the events `client` received before it
/// (those of `user.>` published earlier, in order).
async fn events_before_marker(publisher: &Client, client: &mut Client, marker: &str) -> Vec<Event> {
    publish(publisher, "user.marker", marker).await.unwrap();
    let mut before = Vec::new();
    loop {
        let event = next_event(client).await;
        if event.topic == "user.marker" && event.payload.as_str() == Some(marker) {
            return before;
        }
        before.push(event);
    }
}

/// Starts a daemon (faults allowed) with the given example capsules in its home, and waits
/// until each answers `command` (so that its actor is up).
async fn daemon_with(capsules: &[(&str, &str)]) -> TestDaemon {
    let names: Vec<&str> = capsules.iter().map(|(name, _)| *name).collect();
    let d = TestDaemon::start_with_capsules(&names, &["--allow-fault-injection"]);
    let client = patient_client(&d).await;
    for (_, command) in capsules {
        run(&client, command).await;
    }
    d
}

// ---------------------------------------------------------------------------------------
// Events delivered to a capsule
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_subscribed_capsule_receives_events_and_publishes_its_own() {
    let d = daemon_with(&[("watch", "watch-count")]).await;
    let client = patient_client(&d).await;
    let mut announcements = subscriber(&d, "watch.>").await;
    wait_registered(&client, &["capsule:watch"]).await;
    assert_eq!(run(&client, "watch-count").await, json!(0));
    assert_eq!(run(&client, "watch-last").await, json!(""));

    let published = publish(&client, "user.x", "hi").await.unwrap();
    assert!(published.delivered >= 1, "{published:?}");
    wait_output(&client, "watch-count", &json!(1)).await;
    assert_eq!(run(&client, "watch-last").await, json!("user.x"));

    let seen = next_on(&mut announcements, "watch.seen").await;
    assert_eq!(seen.source, "capsule:watch");
    assert_eq!(
        serde_json::to_value(&seen.payload).unwrap(),
        json!({"topic": "user.x", "count": 1})
    );

    // A deeper topic matches `user.>` too; the announcement's source is the capsule, the
    // event's the client.
    publish(&client, "user.y.z", rmpv::Value::Nil)
        .await
        .unwrap();
    let seen = next_on(&mut announcements, "watch.seen").await;
    assert_eq!(
        serde_json::to_value(&seen.payload).unwrap(),
        json!({"topic": "user.y.z", "count": 2})
    );
    assert_eq!(run(&client, "watch-count").await, json!(2));
}

#[tokio::test]
async fn a_capsule_keeps_its_subscription_across_its_restart_and_the_buss() {
    let d = daemon_with(&[("watch", "watch-count")]).await;
    let client = patient_client(&d).await;
    let mut announcements = subscriber(&d, "watch.>").await;
    wait_registered(&client, &["capsule:watch"]).await;
    publish(&client, "user.one", 1).await.unwrap();
    wait_output(&client, "watch-count", &json!(1)).await;

    // The capsule traps: a fresh instance registers again and counts on (the count is in
    // the key-value store).
    inject(&client, "capsule:watch", Fault::Trap).await;
    wait_restarted(&client, "capsule:watch", 1).await;
    wait_registered(&client, &["capsule:watch"]).await;
    publish(&client, "user.two", 2).await.unwrap();
    wait_output(&client, "watch-count", &json!(2)).await;
    assert_eq!(run(&client, "watch-last").await, json!("user.two"));

    // The bus panics: its subscribers' queues are gone; the capsule registers with the new
    // bus by itself, and its announcements go out on the new bus.
    inject(&client, "bus", Fault::Panic).await;
    wait_restarted(&client, "bus", 1).await;
    let session = session_label(&announcements);
    wait_registered(&client, &["capsule:watch", &session]).await;
    publish(&client, "user.three", 3).await.unwrap();
    wait_output(&client, "watch-count", &json!(3)).await;
    assert_eq!(run(&client, "watch-last").await, json!("user.three"));
    // Announcements made before the bus restarted may or may not have been read yet.
    loop {
        let seen = next_on(&mut announcements, "watch.seen").await;
        let payload = serde_json::to_value(&seen.payload).unwrap();
        if payload["count"] == json!(3) {
            assert_eq!(payload, json!({"topic": "user.three", "count": 3}));
            assert_eq!(seen.source, "capsule:watch");
            break;
        }
    }

    // Removed by a reload: its registration goes with it.
    std::fs::remove_dir_all(d.home.path().join("capsules/watch")).unwrap();
    let report: ReloadReport = client.call(Request::ReloadCapsules).await.unwrap();
    assert_eq!(report.removed, ["watch"]);
    let end = Instant::now() + DEADLINE;
    while subscribers_labelled(&client, "capsule:watch").await != Some(0) {
        assert!(
            Instant::now() < end,
            "the removed capsule is still subscribed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Interceptors
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn interceptors_deny_rewrite_and_finish_in_priority_order() {
    let d = daemon_with(&[
        ("guard", "guard-info"),
        ("guard-late", "guard-late-info"),
        ("watch", "watch-count"),
    ])
    .await;
    let client = patient_client(&d).await;
    let mut events = subscriber(&d, "user.>").await;
    wait_registered(&client, &["capsule:watch"]).await;
    let info = run(&client, "guard-info").await;
    assert!(info.as_str().unwrap().contains("user.guarded"), "{info}");

    // Denied: the publisher learns who denied it and why; no subscriber (client or capsule)
    // gets it.
    let (code, message) = failure(publish(&client, "user.guarded.a", "forbidden").await);
    assert_eq!(code, ErrorCode::Forbidden);
    assert_eq!(
        message,
        "`guard` denied the event on `user.guarded.a`: forbidden payload"
    );
    assert!(
        events_before_marker(&client, &mut events, "m1")
            .await
            .is_empty()
    );
    wait_output(&client, "watch-last", &json!("user.marker")).await;
    assert_eq!(
        run(&client, "watch-count").await,
        json!(1),
        "the denied event was counted"
    );

    // Rewritten by guard (10), then by guard-late (20).
    publish(&client, "user.guarded.a", "lower").await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(event.topic, "user.guarded.a");
    assert_eq!(event.payload, rmpv::Value::from("LOWER!"));
    assert!(event.source.starts_with("client:"), "{}", event.source);

    // Finished by guard: guard-late never sees it.
    publish(&client, "user.guarded.b.c", "stop-here")
        .await
        .unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(
        (event.topic.as_str(), event.payload),
        ("user.guarded.b.c", rmpv::Value::from("stop-here"))
    );

    // Let through by guard, rewritten by guard-late; non-strings left alone.
    publish(&client, "user.guarded.a", "other").await.unwrap();
    assert_eq!(
        next_event(&mut events).await.payload,
        rmpv::Value::from("other!")
    );
    publish(&client, "user.guarded.a", 42).await.unwrap();
    assert_eq!(next_event(&mut events).await.payload, rmpv::Value::from(42));

    // Other topics are not intercepted.
    publish(&client, "user.plain", "forbidden").await.unwrap();
    let event = next_event(&mut events).await;
    assert_eq!(
        (event.topic.as_str(), event.payload),
        ("user.plain", rmpv::Value::from("forbidden"))
    );
    publish(&client, "user.guarded", "forbidden").await.unwrap();
    assert_eq!(
        next_event(&mut events).await.payload,
        rmpv::Value::from("forbidden")
    );
}

#[tokio::test]
async fn priority_not_name_orders_the_chain() {
    // guard-late with priority 5 runs before guard (10), whatever their names: "forbidden"
    // becomes "forbidden!" first, which guard lets through.
    let d = TestDaemon::start_prepared(&[], |home, _| {
        let capsules = home.join("capsules");
        copy_capsule(&example_capsule("guard"), &capsules);
        let late = copy_capsule(&example_capsule("guard-late"), &capsules);
        let manifest = late.join("Capsule.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        assert!(text.contains("priority = 20"));
        std::fs::write(&manifest, text.replace("priority = 20", "priority = 5")).unwrap();
    });
    let client = patient_client(&d).await;
    run(&client, "guard-info").await;
    run(&client, "guard-late-info").await;
    let mut events = subscriber(&d, "user.guarded.>").await;
    publish(&client, "user.guarded.a", "forbidden")
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events).await.payload,
        rmpv::Value::from("forbidden!")
    );
    publish(&client, "user.guarded.a", "lower").await.unwrap();
    assert_eq!(
        next_event(&mut events).await.payload,
        rmpv::Value::from("lower!")
    );
}

#[tokio::test]
async fn a_crashed_or_silent_interceptor_is_skipped_and_a_removed_one_is_gone() {
    let d = daemon_with(&[("guard", "guard-info"), ("guard-late", "guard-late-info")]).await;
    let client = patient_client(&d).await;
    let mut events = subscriber(&d, "user.guarded.>").await;

    // Crash guard and publish at once: the publisher gets an answer in time, whether guard
    // was skipped (delivered, rewritten by guard-late only) or already back (denied).
    inject(&client, "capsule:guard", Fault::Trap).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        publish(&client, "user.guarded.a", "forbidden"),
    )
    .await
    .expect("a reply while guard restarts");
    match answer {
        Ok(_) => {
            let event = next_event(&mut events).await;
            assert_eq!(event.payload, rmpv::Value::from("forbidden!"));
        }
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}"),
    }
    // Once restarted, guard decides again.
    wait_restarted(&client, "capsule:guard", 1).await;
    run(&client, "guard-info").await;
    let (code, _) = failure(publish(&client, "user.guarded.a", "forbidden").await);
    assert_eq!(code, ErrorCode::Forbidden);

    // A guard that does not answer is skipped after its call deadline (1 s, plus a margin),
    // not waited for until it answers again (3 s).
    inject(&client, "capsule:guard", Fault::Hang { millis: 3000 }).await;
    let started = Instant::now();
    publish(&client, "user.guarded.a", "forbidden")
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    assert_eq!(
        next_event(&mut events).await.payload,
        rmpv::Value::from("forbidden!")
    );

    // A guard past its restart budget (3 in 5 s) is skipped at once, until a reload starts
    // it again.
    let end = Instant::now() + DEADLINE;
    loop {
        let list = client.capsules().await.unwrap();
        let guard = list.iter().find(|c| c.name == "guard").unwrap();
        if guard.state == CapsuleState::Failed {
            break;
        }
        assert!(Instant::now() < end, "guard never failed: {guard:?}");
        // Refused while it restarts; that is fine.
        let _: Result<FaultInjected, _> = client
            .call(Request::InjectFault {
                target: "capsule:guard".into(),
                fault: Fault::Trap,
            })
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    publish(&client, "user.guarded.a", "forbidden")
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        next_event(&mut events).await.payload,
        rmpv::Value::from("forbidden!")
    );
    let report: ReloadReport = client.call(Request::ReloadCapsules).await.unwrap();
    assert_eq!(report.restarted, ["guard"]);
    run(&client, "guard-info").await;
    let (code, _) = failure(publish(&client, "user.guarded.a", "forbidden").await);
    assert_eq!(code, ErrorCode::Forbidden);
    publish(&client, "user.guarded.a", "lower").await.unwrap();
    assert_eq!(
        next_event(&mut events).await.payload,
        rmpv::Value::from("LOWER!")
    );

    // The hooks live outside the bus: a restarted bus still consults them.
    inject(&client, "bus", Fault::Panic).await;
    wait_restarted(&client, "bus", 1).await;
    wait_registered(&client, &[&session_label(&events)]).await;
    let (code, _) = failure(publish(&client, "user.guarded.a", "forbidden").await);
    assert_eq!(code, ErrorCode::Forbidden);
    publish(&client, "user.guarded.a", "lower").await.unwrap();
    assert_eq!(
        next_event(&mut events).await.payload,
        rmpv::Value::from("LOWER!")
    );

    // Removed: its hook goes with it.
    let folder = d.home.path().join("capsules/guard");
    std::fs::remove_dir_all(&folder).unwrap();
    let report: ReloadReport = client.call(Request::ReloadCapsules).await.unwrap();
    assert_eq!(report.removed, ["guard"]);
    let published = publish(&client, "user.guarded.a", "forbidden")
        .await
        .unwrap();
    assert_eq!(published.delivered, 1);
    assert_eq!(
        next_event(&mut events).await.payload,
        rmpv::Value::from("forbidden!")
    );
}

#[tokio::test]
async fn a_payload_nested_deeper_than_clients_decode_is_refused() {
    let d = TestDaemon::start(&[]);
    let mut watcher = subscriber(&d, "user.deep").await;
    let publisher = patient_client(&d).await;
    let nested = |depth: usize| {
        (0..depth).fold(rmpv::Value::from("leaf"), |inner, _| {
            rmpv::Value::Array(vec![inner])
        })
    };

    let (code, message) = failure(publish(&publisher, "user.deep", nested(129)).await);
    assert_eq!(code, ErrorCode::InvalidArgument, "{message}");
    assert!(message.contains("deeper than 128"), "{message}");

    publish(&publisher, "user.deep", nested(128)).await.unwrap();
    let event = next_on(&mut watcher, "user.deep").await;
    assert_eq!(event.payload, nested(128), "only the allowed one arrives");
}

#[tokio::test]
async fn a_capsule_cannot_publish_a_payload_nested_too_deep() {
    // `deep` publishes 129 nested arrays on `user.deep`, `ok` 128; each replies with what
    // `publish` returned.
    let module = |depth: usize| {
        let payload: String = "\\91".repeat(depth) + "\\c0";
        format!(
            "(module\n\
               (import \"astrid\" \"publish\" (func $publish (param i32 i32 i32 i32) (result i32)))\n\
               (memory (export \"memory\") 1)\n\
               (data (i32.const 1024) \"user.deep\")\n\
               (data (i32.const 1100) \"{payload}\")\n\
               (func (export \"astrid_alloc\") (param i32) (result i32) i32.const 16)\n\
               (func (export \"astrid_command\") (param i32 i32) (result i64)\n\
                 (i32.store8 (i32.const 2048)\n\
                   (call $publish (i32.const 1024) (i32.const 9) (i32.const 1100) (i32.const {})))\n\
                 i64.const {}))",
            depth + 1,
            (2048u64 << 32) | 1
        )
    };
    let d = TestDaemon::start_prepared(&[], |home, _| {
        for (name, depth) in [("deep", 129), ("ok", 128)] {
            let manifest = one_command_manifest(
                name,
                "[capabilities]\ngrant = [\"bus:publish:user.deep\"]\n",
            );
            let module = module(depth);
            write_capsule(
                &home.join("capsules"),
                name,
                &manifest,
                &[("m.wat", module.as_bytes())],
            );
        }
    });
    let mut watcher = subscriber(&d, "user.deep").await;
    let client = patient_client(&d).await;

    // -3: invalid.
    assert_eq!(run(&client, "deep").await, json!(-3));
    assert_eq!(run(&client, "ok").await, json!(0));
    let event = next_on(&mut watcher, "user.deep").await;
    assert_eq!(event.source, "capsule:ok", "only the allowed one arrives");
}
