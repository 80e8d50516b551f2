//! The kernel booted in-process ([`TestKernel`]): boot writes the session files in order
//! and a clean shutdown removes them; a boot that fails leaves none; kernel actors that
//! panic, stop or hang are restarted (or waited out) while clients are served; a restart
//! budget exhausted escalates and ends the kernel; the key-value store, capabilities and the
//! audit chain work through the socket and survive a reboot in the same home. The
//! daemon's own tests (`tests/it/`) cover the same through a real process.

use std::time::{Duration, Instant};

use astrid_actors::kernel::{BootError, KernelExit};
use astrid_actors::supervisor::{ChildState, Fault, RestartPolicy};
use rmpv::Value;

use crate::common::kernel::{Conn, TestKernel, get, request};
use crate::common::poll_async;

fn kv_put(key: &str, value: &[u8]) -> Value {
    request(
        "KvPut",
        vec![
            ("key", key.into()),
            ("value", Value::Binary(value.to_vec())),
        ],
    )
}

fn kv_get(key: &str) -> Value {
    request("KvGet", vec![("key", key.into())])
}

/// The audit entries from the first, oldest first.
async fn audit(conn: &mut Conn) -> Vec<Value> {
    let fields = vec![("n", 1000.into()), ("from", 1.into())];
    let tail = conn.ok(request("AuditTail", fields)).await;
    tail.as_array().unwrap().clone()
}

/// `(action, target, outcome)` of each audit entry.
fn actions(entries: &[Value]) -> Vec<(String, String, String)> {
    let text = |e: &Value, k: &str| get(e, k).as_str().unwrap_or_default().to_owned();
    entries
        .iter()
        .map(|e| (text(e, "action"), text(e, "target"), text(e, "outcome")))
        .collect()
}

#[actix_rt::test]
async fn boot_writes_the_session_files_and_a_clean_shutdown_removes_them() {
    let mut k = TestKernel::boot(|_| {}).await;
    // The socket and token exist before any actor runs; the ready file last, with our pid.
    assert_eq!(k.session_files().len(), 3, "{:?}", k.session_files());
    let ready = std::fs::read_to_string(k.files.ready()).unwrap();
    assert!(
        ready.starts_with(&format!("pid={}\n", std::process::id())),
        "{ready}"
    );
    assert_eq!(k.kernel().info().pid, std::process::id());
    let tree = k.tree().await;
    for name in [
        "bus",
        "audit",
        "store",
        "capabilities",
        "vfs",
        "capsules",
        "mcp",
    ] {
        let node = tree
            .find(name)
            .unwrap_or_else(|| panic!("{name}: {tree:#?}"));
        assert_eq!(node.state, ChildState::Running, "{node:?}");
    }
    let mut conn = k.connect().await;
    assert_eq!(conn.ok("Ping".into()).await.as_str(), Some("pong"));
    let status = conn.ok("GetStatus".into()).await;
    assert_eq!(get(&status, "session").as_str(), Some("system"), "{status}");

    let exit = k.shutdown("the test is done").await;
    assert_eq!(
        exit,
        KernelExit::Clean {
            reason: "the test is done".into()
        }
    );
    assert!(k.session_files().is_empty(), "{:?}", k.session_files());
    // The open session was ended with the kernel.
    assert_eq!(conn.recv().await, None);
}

#[actix_rt::test]
async fn a_boot_that_fails_leaves_no_session_files() {
    let bad = |config: &mut astrid_actors::kernel::KernelConfig| {
        config.client_publish = vec!["user.>.x".into()];
    };
    let home = tempfile::Builder::new().prefix("ak").tempdir_in("/tmp");
    let workspace = tempfile::tempdir();
    let (e, home, _) = TestKernel::boot_in(home.unwrap(), workspace.unwrap(), bad)
        .await
        .expect_err("an invalid publish pattern fails boot");
    assert!(matches!(e, BootError::PublishPattern { .. }), "{e:?}");
    assert!(e.to_string().contains("user.>.x"), "{e}");
    let sessions = home.path().join("sessions");
    let left: Vec<_> = std::fs::read_dir(sessions).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[actix_rt::test]
async fn a_second_kernel_on_the_same_home_does_not_boot_and_the_first_serves_on() {
    let first = TestKernel::boot(|_| {}).await;
    let home = tempfile::TempDir::new_in("/tmp").unwrap();
    // Same session files: point the second kernel's home at the first one's.
    let shared = first.home.path().to_owned();
    let second = TestKernel::boot_in(home, tempfile::tempdir().unwrap(), |config| {
        let layout = astrid_actors::kernel::HomeLayout::new(&shared);
        config.files = layout.session(uuid::Uuid::nil());
        config.state_dir = layout.state();
    })
    .await;
    let Err((e, _, _)) = second else {
        panic!("a second kernel booted over the first one's files");
    };
    assert!(
        matches!(e, BootError::Store { .. } | BootError::Socket(_)),
        "{e:?}"
    );
    assert_eq!(first.session_files().len(), 3);
    let mut conn = first.connect().await;
    assert_eq!(conn.ok("Ping".into()).await.as_str(), Some("pong"));
}

#[actix_rt::test]
async fn a_panicking_bus_is_restarted_and_clients_are_served_meanwhile() {
    let mut k = TestKernel::boot(|_| {}).await;
    let mut conn = k.connect().await;
    k.inject("bus", Fault::Panic).await.unwrap();
    let bus = k
        .node_until("bus", |n| n.restarts == 1 && n.state == ChildState::Running)
        .await;
    let failure = bus.last_failure.unwrap();
    assert!(
        failure.reason.contains("panicked: injected fault"),
        "{failure:?}"
    );
    assert_eq!(conn.ok("Ping".into()).await.as_str(), Some("pong"));
    // Publishing reaches the new bus.
    let published = poll_async(crate::common::DEADLINE, async || {
        let fields = vec![("topic", "user.after".into()), ("payload", Value::Nil)];
        conn.call(request("Publish", fields)).await
    })
    .await;
    published.unwrap_or_else(|e| panic!("the bus never came back: {e}"));
    let others = k.tree().await;
    for name in ["store", "audit", "listener", "registry"] {
        assert_eq!(others.find(name).unwrap().restarts, 0, "{name}");
    }
    assert!(matches!(k.shutdown("done").await, KernelExit::Clean { .. }));
}

#[actix_rt::test]
async fn a_stopped_listener_is_restarted_and_open_sessions_keep_working() {
    let mut k = TestKernel::boot(|_| {}).await;
    let mut before = k.connect().await;
    k.inject("listener", Fault::Stop).await.unwrap();
    k.node_until("listener", |n| {
        n.restarts == 1 && n.state == ChildState::Running
    })
    .await;
    assert_eq!(before.ok("Ping".into()).await.as_str(), Some("pong"));
    let mut after = k.connect().await;
    assert_eq!(after.ok("Ping".into()).await.as_str(), Some("pong"));
    assert!(matches!(k.shutdown("done").await, KernelExit::Clean { .. }));
}

#[actix_rt::test]
async fn exhausting_the_restart_budget_escalates_and_ends_the_kernel() {
    let mut k = TestKernel::boot(|config| {
        config.restart_policy = RestartPolicy {
            intensity: 2,
            period: Duration::from_secs(30),
            ..RestartPolicy::default()
        };
    })
    .await;
    for round in 1..=2 {
        k.inject("bus", Fault::Panic).await.unwrap();
        k.node_until("bus", |n| {
            n.restarts == round && n.state == ChildState::Running
        })
        .await;
    }
    // The third failure inside the window is one too many.
    k.inject("bus", Fault::Panic).await.unwrap();
    match k.wait().await {
        KernelExit::Escalated { child, reason } => {
            assert_eq!(child, "bus");
            assert!(reason.contains("injected fault"), "{reason}");
        }
        other => panic!("expected an escalation, got {other:?}"),
    }
    assert!(k.session_files().is_empty(), "{:?}", k.session_files());
}

#[actix_rt::test]
async fn a_hung_listener_cannot_keep_the_kernel_from_stopping() {
    let mut k = TestKernel::boot(|_| {}).await;
    let mut conn = k.connect().await;
    // The listener will not see its Terminate for a minute; the supervisor gives up on it
    // after its shutdown deadline and the kernel drains the sessions itself.
    k.inject("listener", Fault::Hang { millis: 60_000 })
        .await
        .unwrap();
    let started = Instant::now();
    let exit = k.shutdown("wedged listener").await;
    assert!(matches!(exit, KernelExit::Clean { .. }), "{exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(k.session_files().is_empty());
    assert_eq!(conn.recv().await, None, "the session was closed");
}

#[actix_rt::test]
async fn writes_are_audited_in_a_chain_and_survive_a_reboot_in_the_same_home() {
    let mut k = TestKernel::boot(|_| {}).await;
    let mut conn = k.connect().await;
    conn.ok(kv_put("greeting", b"hello")).await;
    let got = conn.ok(kv_get("greeting")).await;
    assert_eq!(
        get(&got, "value"),
        &Value::Binary(b"hello".to_vec()),
        "{got}"
    );
    let grant = vec![("subject", "echo".into()), ("resource", "kv".into())];
    conn.ok(request("GrantCapability", grant)).await;
    let bad = conn.call(kv_put("", b"x")).await.unwrap_err();
    assert_eq!(
        get(&bad, "code").as_str(),
        Some("invalid_argument"),
        "{bad}"
    );
    assert!(matches!(
        k.shutdown("reboot").await,
        KernelExit::Clean { .. }
    ));

    let (home, workspace) = k.into_dirs();
    let Ok(mut k) = TestKernel::boot_in(home, workspace, |_| {}).await else {
        panic!("the kernel did not boot again");
    };
    let mut conn = k.connect().await;
    let got = conn.ok(kv_get("greeting")).await;
    assert_eq!(
        get(&got, "value"),
        &Value::Binary(b"hello".to_vec()),
        "{got}"
    );
    let verified = conn.ok("AuditVerify".into()).await;
    assert_eq!(get(&verified, "ok"), &Value::Boolean(true), "{verified}");
    let entries = audit(&mut conn).await;
    let seen = actions(&entries);
    let position = |action: &str, target: &str| {
        seen.iter()
            .position(|(a, t, _)| a == action && t.contains(target))
            .unwrap_or_else(|| panic!("no {action} of {target} in {seen:#?}"))
    };
    let boots: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, (a, _, _))| a == "boot")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(boots.len(), 2, "{seen:#?}");
    let put = position("KvPut", "greeting");
    let granted = position("GrantCapability", "echo:kv");
    let shutdown = position("shutdown", "reboot");
    assert!(
        boots[0] < put && put < granted && granted < shutdown && shutdown < boots[1],
        "{seen:#?}"
    );
    // Sequence numbers run on across the reboot.
    let seqs: Vec<u64> = entries
        .iter()
        .map(|e| get(e, "seq").as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(matches!(k.shutdown("done").await, KernelExit::Clean { .. }));
}
