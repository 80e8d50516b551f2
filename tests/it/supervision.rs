//! Supervision seen from outside: faults injected into a real daemon's kernel actors are
//! restarted within the budget without disturbing clients, and a kernel actor that keeps
//! failing past the budget makes the daemon shut down cleanly with exit status 4.

use std::time::{Duration, Instant};

use crate::common::{DEADLINE, TestDaemon, inject, next_on, poll_async, wait_node};
use astrid::client::Client;
use astrid::protocol::{
    ChildState, ErrorCode, Fault, FaultInjected, Published, Request, Subscribed,
};

async fn publish(client: &Client, topic: &str) -> Result<Published, astrid::client::ClientError> {
    client
        .call(Request::Publish {
            topic: topic.into(),
            payload: astrid::protocol::RawValue::encode(topic).unwrap(),
        })
        .await
}

#[tokio::test]
async fn a_panicking_bus_is_restarted_and_subscriptions_survive() {
    let d = TestDaemon::builder().fault_injection().start();
    let mut watcher = d.client().await;
    let _: Subscribed = watcher
        .call(Request::Subscribe {
            pattern: "user.>".into(),
        })
        .await
        .unwrap();
    let actor = d.client().await;
    inject(&actor, "bus", Fault::Panic).await;
    let bus = wait_node(&actor, "bus", |n| {
        n.restarts == 1 && n.state == ChildState::Running
    })
    .await;
    let failure = bus.last_failure.unwrap();
    assert!(
        failure.reason.contains("panicked: injected fault"),
        "{failure:?}"
    );

    // The watcher re-registers with the new bus by itself; publish until it sees an event.
    let delivered = poll_async(DEADLINE, async || {
        let published = publish(&actor, "user.after").await;
        published
            .is_ok_and(|p| p.delivered == 1)
            .then_some(())
            .ok_or(())
    })
    .await;
    assert_eq!(delivered, Ok(()), "subscription never came back");
    let event = next_on(&mut watcher, "user.after").await;
    assert_eq!(event.payload, rmpv::Value::from("user.after"));
    // Other work never stopped.
    watcher.ping().await.unwrap();
    let status = actor.status().await.unwrap();
    assert!(status.unavailable.is_empty(), "{:?}", status.unavailable);
}

#[tokio::test]
async fn a_stopped_listener_is_restarted_and_sessions_keep_working() {
    let d = TestDaemon::builder().fault_injection().start();
    let client = d.client().await;
    inject(&client, "listener", Fault::Stop).await;
    let listener = wait_node(&client, "listener", |n| {
        n.restarts == 1 && n.state == ChildState::Running
    })
    .await;
    assert!(
        listener
            .last_failure
            .unwrap()
            .reason
            .contains("stopped unexpectedly"),
        "a self-stop is reported as such"
    );
    // The existing session survived the listener's restart, and new ones are accepted.
    client.ping().await.unwrap();
    let fresh = d.client().await;
    fresh.ping().await.unwrap();
    let capsules = fresh.capsules().await.unwrap();
    let cli = capsules
        .iter()
        .find(|c| c.name == "astrid-capsule-cli")
        .unwrap();
    assert_eq!(cli.restarts, 1);
}

#[tokio::test]
async fn restarts_are_published_as_supervision_events() {
    let d = TestDaemon::builder().fault_injection().start();
    let mut watcher = d.client().await;
    let _: Subscribed = watcher
        .call(Request::Subscribe {
            pattern: "astrid.supervisor.>".into(),
        })
        .await
        .unwrap();
    inject(&watcher, "registry", Fault::Panic).await;
    let exited = next_on(&mut watcher, "astrid.supervisor.child_exited").await;
    assert_eq!(exited.source, "supervisor");
    let exited = serde_json::to_value(&exited.payload).unwrap();
    assert_eq!(exited["child"], "registry", "{exited}");
    assert!(
        exited["reason"].as_str().unwrap().contains("panicked"),
        "{exited}"
    );
    assert_eq!(
        exited["restart_in_ms"], 0,
        "the first restart is immediate: {exited}"
    );
    let restarted = next_on(&mut watcher, "astrid.supervisor.child_restarted").await;
    let restarted = serde_json::to_value(&restarted.payload).unwrap();
    assert_eq!(restarted["child"], "registry", "{restarted}");
    assert_eq!(restarted["restarts"], 1, "{restarted}");
}

#[tokio::test]
async fn a_hung_actor_costs_callers_a_timeout_not_a_hang() {
    let d = TestDaemon::builder()
        .args(&["--allow-fault-injection", "--call-timeout", "200ms"])
        .start();
    let client = d.client().await;
    inject(&client, "registry", Fault::Hang { millis: 1500 }).await;
    let started = Instant::now();
    let error = client.capsules().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Timeout), "{error}");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    // Requests that do not need the hung actor are unaffected.
    client.ping().await.unwrap();
    // Once it wakes up it serves again, without having been restarted.
    let back = poll_async(DEADLINE, async || client.capsules().await).await;
    back.unwrap_or_else(|e| panic!("the registry never came back: {e}"));
    let node = client.tree().await.unwrap();
    assert_eq!(node.find("registry").unwrap().restarts, 0);
}

#[tokio::test]
async fn exhausting_the_restart_budget_stops_the_daemon_with_status_4() {
    let mut d = TestDaemon::builder()
        .args(&[
            "--allow-fault-injection",
            "--max-restarts",
            "2",
            "--restart-window",
            "30s",
        ])
        .start();
    let client = d.client().await;
    for round in 1..=2 {
        inject(&client, "bus", Fault::Panic).await;
        wait_node(&client, "bus", |n| {
            n.restarts == round && n.state == ChildState::Running
        })
        .await;
    }
    // The third failure inside the window is one too many.
    inject(&client, "bus", Fault::Panic).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = d.wait_exit(DEADLINE);
        (status, d.stderr(), d.leftover_files())
    })
    .await
    .unwrap();
    let (status, stderr, left) = status;
    assert_eq!(status.and_then(|s| s.code()), Some(4), "{stderr}");
    assert!(stderr.contains("exceeded the restart budget"), "{stderr}");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn fault_injection_is_refused_unless_enabled() {
    let d = TestDaemon::builder().start();
    let client = d.client().await;
    let error = client
        .call::<FaultInjected>(Request::InjectFault {
            target: "bus".into(),
            fault: Fault::Panic,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::FaultInjectionDisabled));
    assert_eq!(
        client.tree().await.unwrap().find("bus").unwrap().restarts,
        0
    );
}

#[tokio::test]
async fn a_hung_actor_cannot_keep_the_daemon_from_stopping() {
    let mut d = TestDaemon::builder().fault_injection().start();
    let client = d.client().await;
    // The listener will not see its Terminate for a minute; the supervisor gives up on it
    // after its shutdown deadline and the kernel drains the sessions itself.
    inject(&client, "listener", Fault::Hang { millis: 60_000 }).await;
    let ack: astrid::protocol::ShutdownAck = client
        .call(Request::Shutdown {
            reason: "wedged listener".into(),
        })
        .await
        .unwrap();
    assert!(ack.shutting_down);
    let started = Instant::now();
    let (status, left) = tokio::task::spawn_blocking(move || {
        let status = d.wait_exit(DEADLINE);
        (status, d.leftover_files())
    })
    .await
    .unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(left.is_empty(), "{left:?}");
    // The session was closed by the daemon, not left dangling.
    assert!(client.ping().await.is_err());
}
