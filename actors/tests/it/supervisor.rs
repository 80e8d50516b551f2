//! Actor-level tests of the supervisor (no socket): restarts after panics and unexpected
//! stops, OTP restart types, the intensity/period budget and escalation, reverse-order
//! shutdown with per-child deadlines, backoff, failed starts, fault injection, and the
//! event stream.
//!
//! Every child here is a small `Worker` actor defined below. It counts its incarnations in a
//! shared counter, answers `Ping` with its incarnation number, can be told to panic or stop
//! itself, and records `Terminate` and `stopped()` in a shared log so stop order is visible.
//! Nothing sleeps as a readiness wait: tests await answers or poll with a deadline.

use crate::common::{DEADLINE, eventually, poll_async};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, Addr, Context, Handler, MailboxError, Message};

use astrid_actors::supervisor::{
    CallError, ChildRef, ChildSpec, ChildState, Fault, GetChild, GetTree, Inject, InjectFault,
    RestartPolicy, RestartType, ShutdownTree, StartChild, StopChild, SupervisorActor,
    SupervisorError, SupervisorEvent, SupervisorExit, Terminate, TreeNode, apply_fault,
};
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------------------
// The test child
// ---------------------------------------------------------------------------------------

/// Shared, append-only record of what children did (`"<name>:terminate"`, `"<name>:stopped"`).
type Log = Arc<Mutex<Vec<String>>>;

/// Answers the incarnation number of the worker (1 for the first start).
#[derive(Debug, Message)]
#[rtype(result = "usize")]
struct Ping;

/// Makes the worker panic with the given message inside its handler.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Crash(&'static str);

/// Makes the worker stop itself (`ctx.stop()`), as if it had decided to quit.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Quit;

#[derive(Debug)]
struct Worker {
    name: &'static str,
    incarnation: usize,
    log: Log,
    ignore_terminate: bool,
}

impl Worker {
    fn record(&self, what: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:{what}", self.name));
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.record("stopped");
    }
}

impl Handler<Ping> for Worker {
    type Result = usize;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> usize {
        self.incarnation
    }
}

impl Handler<Crash> for Worker {
    type Result = ();

    fn handle(&mut self, msg: Crash, _: &mut Context<Self>) {
        panic!("{}", msg.0);
    }
}

impl Handler<Quit> for Worker {
    type Result = ();

    fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Terminate> for Worker {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        self.record("terminate");
        if !self.ignore_terminate {
            ctx.stop();
        }
    }
}

impl Handler<Inject> for Worker {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply_fault(&msg.0, ctx);
    }
}

/// One supervised worker as seen from the test: its address slot and start counter.
#[derive(Debug, Clone)]
struct Child {
    name: &'static str,
    slot: ChildRef<Worker>,
    starts: Arc<AtomicUsize>,
}

impl Child {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            slot: ChildRef::new(name),
            starts: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn starts(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }

    /// The current incarnation's address.
    fn addr(&self) -> Addr<Worker> {
        self.slot.get().expect("child has started at least once")
    }

    /// A spec whose factory always succeeds.
    fn spec(&self, restart: RestartType, log: &Log) -> ChildSpec {
        self.spec_with(restart, log, false, 0)
    }

    /// A spec whose worker ignores `Terminate`.
    fn stubborn_spec(&self, restart: RestartType, log: &Log) -> ChildSpec {
        self.spec_with(restart, log, true, 0)
    }

    /// A spec whose factory fails (with `"no resources"`) for the first `failures` attempts,
    /// then succeeds. `starts` counts every attempt, failed or not.
    fn spec_with(
        &self,
        restart: RestartType,
        log: &Log,
        ignore_terminate: bool,
        failures: usize,
    ) -> ChildSpec {
        let name = self.name;
        let starts = Arc::clone(&self.starts);
        let log = Arc::clone(log);
        ChildSpec::worker(name, restart, self.slot.clone(), move || {
            let attempt = starts.fetch_add(1, Ordering::SeqCst) + 1;
            if attempt <= failures {
                return Err("no resources".to_owned());
            }
            Ok(Worker {
                name,
                incarnation: attempt - failures,
                log: Arc::clone(&log),
                ignore_terminate,
            })
        })
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn new_log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Log entries of the named children only, in order.
fn entries_of(log: &Log, names: &[&str]) -> Vec<String> {
    entries(log)
        .into_iter()
        .filter(|e| names.iter().any(|n| e.starts_with(&format!("{n}:"))))
        .collect()
}

fn policy(intensity: u32, backoff_base_ms: u64) -> RestartPolicy {
    RestartPolicy {
        intensity,
        period: Duration::from_secs(10),
        backoff_base: Duration::from_millis(backoff_base_ms),
        backoff_max: Duration::from_secs(1),
    }
}

/// Events recorded by `on_event`, with the time each arrived.
type Events = Arc<Mutex<Vec<(Instant, SupervisorEvent)>>>;

struct Harness {
    sup: Addr<SupervisorActor>,
    exit: oneshot::Receiver<SupervisorExit>,
    events: Events,
}

/// Starts a supervisor over `children` and waits until it has started them.
async fn start(policy: RestartPolicy, children: Vec<ChildSpec>) -> Harness {
    let (tx, exit) = oneshot::channel();
    let events: Events = Arc::default();
    let sink = Arc::clone(&events);
    let sup = SupervisorActor::new("root", policy, children)
        .on_exit(tx)
        .on_event(move |ev| sink.lock().unwrap().push((Instant::now(), ev)))
        .start();
    // `started()` (which starts the children) runs before the first message is handled.
    sup.send(GetTree).await.unwrap();
    Harness { sup, exit, events }
}

impl Harness {
    async fn tree(&self) -> TreeNode {
        self.sup.send(GetTree).await.unwrap()
    }

    async fn node(&self, name: &str) -> TreeNode {
        self.tree().await.find(name).unwrap().clone()
    }

    /// Polls the tree until `cond` holds on the node named `name`.
    async fn node_until(
        &self,
        name: &str,
        what: &str,
        cond: impl Fn(&TreeNode) -> bool,
    ) -> TreeNode {
        let found = poll_async(DEADLINE, async || {
            let node = self.node(name).await;
            if cond(&node) { Ok(node) } else { Err(node) }
        })
        .await;
        found.unwrap_or_else(|node| panic!("timed out waiting for {what}; last: {node:#?}"))
    }

    /// Waits until `name` has been restarted `restarts` times and is running again.
    async fn restarted(&self, name: &str, restarts: u32) -> TreeNode {
        self.node_until(name, &format!("{name} restarted {restarts} time(s)"), |n| {
            n.restarts == restarts && n.state == ChildState::Running
        })
        .await
    }

    async fn exit(self) -> SupervisorExit {
        tokio::time::timeout(DEADLINE, self.exit)
            .await
            .expect("the supervisor reported its exit in time")
            .expect("the supervisor reported its exit (channel not dropped)")
    }

    /// Events after the initial starts (every test begins with one `ChildStarted` per child).
    fn events(&self) -> Vec<SupervisorEvent> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .filter(|e| !matches!(e, SupervisorEvent::ChildStarted { .. }))
            .collect()
    }
}

/// Polls `cond` until it holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    eventually(what, async || cond().then_some(())).await;
}

/// Sends `Crash` and checks that the caller sees the mailbox close under it.
async fn crash(child: &Child, message: &'static str) {
    let answer = child.addr().send(Crash(message)).await;
    assert!(
        matches!(answer, Err(MailboxError::Closed)),
        "the caller of a panicking handler gets Closed, got {answer:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 1. Panics
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn panicking_child_is_restarted_and_its_ref_points_at_the_new_incarnation() {
    let log = new_log();
    let w = Child::new("worker");
    let h = start(policy(3, 50), vec![w.spec(RestartType::Permanent, &log)]).await;
    assert_eq!(w.addr().send(Ping).await.unwrap(), 1);
    let first = w.addr();

    crash(&w, "boom 42").await;

    let node = h.restarted("worker", 1).await;
    assert_eq!(node.state, ChildState::Running);
    assert_eq!(node.restart, Some(RestartType::Permanent));
    let failure = node.last_failure.expect("the panic is recorded");
    assert!(failure.reason.contains("panicked"), "{}", failure.reason);
    assert!(failure.reason.contains("boom 42"), "{}", failure.reason);
    assert_eq!(failure.reason, "panicked: boom 42");

    // The ref now points at incarnation 2; the old address is dead.
    assert_eq!(w.addr().send(Ping).await.unwrap(), 2);
    assert!(!first.connected());
    assert!(matches!(first.send(Ping).await, Err(MailboxError::Closed)));
    assert_eq!(w.slot.call(Ping, DEADLINE).await.unwrap(), 2);
    assert_eq!(w.starts(), 2);

    // The supervisor counts the restart in its window and answers GetChild the same way.
    let root = h.tree().await;
    assert_eq!(root.state, ChildState::Running);
    assert_eq!(root.restarts, 1);
    let summary = h
        .sup
        .send(GetChild {
            name: "worker".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.state, ChildState::Running);
    assert_eq!(summary.restarts, 1);
    assert_eq!(summary.last_failure.as_deref(), Some("panicked: boom 42"));
    assert!(
        h.sup
            .send(GetChild {
                name: "nobody".into()
            })
            .await
            .unwrap()
            .is_none()
    );
}

#[actix_rt::test]
async fn injected_panic_is_reported_as_injected_fault_and_restarted() {
    let log = new_log();
    let w = Child::new("worker");
    let h = start(policy(3, 50), vec![w.spec(RestartType::Permanent, &log)]).await;

    h.sup
        .send(InjectFault {
            target: "worker".into(),
            fault: Fault::Panic,
            dry_run: false,
        })
        .await
        .unwrap()
        .unwrap();

    let node = h.restarted("worker", 1).await;
    assert_eq!(
        node.last_failure.unwrap().reason,
        "panicked: injected fault"
    );
    assert_eq!(w.addr().send(Ping).await.unwrap(), 2);
}

// ---------------------------------------------------------------------------------------
// 2. Unexpected stops
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn child_that_stops_itself_is_restarted_and_reported_stopped_unexpectedly() {
    let log = new_log();
    let w = Child::new("worker");
    let h = start(policy(3, 50), vec![w.spec(RestartType::Permanent, &log)]).await;

    // The handler returns before the actor stops, so the caller gets its answer.
    w.addr().send(Quit).await.unwrap();

    let node = h.restarted("worker", 1).await;
    assert_eq!(node.last_failure.unwrap().reason, "stopped unexpectedly");
    assert_eq!(w.addr().send(Ping).await.unwrap(), 2);
    // A self-stop runs the normal actix stop path, without a Terminate.
    assert_eq!(entries(&log), ["worker:stopped"]);
}

#[actix_rt::test]
async fn injected_stop_is_restarted_and_reported_stopped_unexpectedly() {
    let log = new_log();
    let w = Child::new("worker");
    let h = start(policy(3, 50), vec![w.spec(RestartType::Permanent, &log)]).await;

    h.sup
        .send(InjectFault {
            target: "worker".into(),
            fault: Fault::Stop,
            dry_run: false,
        })
        .await
        .unwrap()
        .unwrap();

    let node = h.restarted("worker", 1).await;
    assert_eq!(node.last_failure.unwrap().reason, "stopped unexpectedly");
    assert_eq!(w.addr().send(Ping).await.unwrap(), 2);
}

// ---------------------------------------------------------------------------------------
// 3. Restart types
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn transient_child_is_restarted_after_a_panic() {
    let log = new_log();
    let w = Child::new("capsule");
    let h = start(policy(3, 50), vec![w.spec(RestartType::Transient, &log)]).await;

    crash(&w, "transient boom").await;

    let node = h.restarted("capsule", 1).await;
    assert_eq!(node.restart, Some(RestartType::Transient));
    assert_eq!(
        node.last_failure.unwrap().reason,
        "panicked: transient boom"
    );
    assert_eq!(w.addr().send(Ping).await.unwrap(), 2);
}

/// Documents current behaviour: the exit guard cannot tell a deliberate self-stop from an
/// unexpected one, so it reports `Stopped` ("stopped unexpectedly"), which is abnormal, and
/// a transient child that stops itself is restarted like a permanent one. Nothing produces
/// `ExitReason::Normal`, so a transient child has no way to end for good.
#[actix_rt::test]
async fn transient_child_that_stops_itself_is_restarted_because_self_stop_counts_as_abnormal() {
    let log = new_log();
    let w = Child::new("capsule");
    let h = start(policy(3, 50), vec![w.spec(RestartType::Transient, &log)]).await;

    w.addr().send(Quit).await.unwrap();

    let node = h.restarted("capsule", 1).await;
    assert_eq!(node.last_failure.unwrap().reason, "stopped unexpectedly");
    assert_eq!(w.addr().send(Ping).await.unwrap(), 2);
}

#[actix_rt::test]
async fn temporary_child_is_never_restarted() {
    let log = new_log();
    let panics = Child::new("session:1");
    let quits = Child::new("session:2");
    let h = start(
        policy(3, 50),
        vec![
            panics.spec(RestartType::Temporary, &log),
            quits.spec(RestartType::Temporary, &log),
        ],
    )
    .await;

    crash(&panics, "client went mad").await;
    quits.addr().send(Quit).await.unwrap();

    let a = h
        .node_until("session:1", "session:1 stopped", |n| {
            n.state == ChildState::Stopped
        })
        .await;
    let b = h
        .node_until("session:2", "session:2 stopped", |n| {
            n.state == ChildState::Stopped
        })
        .await;
    assert_eq!(a.restarts, 0);
    assert_eq!(b.restarts, 0);
    assert_eq!(a.uptime_ms, None);
    assert_eq!(a.last_failure.unwrap().reason, "panicked: client went mad");
    assert_eq!(b.last_failure.unwrap().reason, "stopped unexpectedly");
    assert_eq!(panics.starts(), 1);
    assert_eq!(quits.starts(), 1);
    // The refs still hold the dead incarnations; calls fail instead of hanging.
    assert!(matches!(
        panics.addr().send(Ping).await,
        Err(MailboxError::Closed)
    ));
    assert!(matches!(
        quits.slot.call(Ping, DEADLINE).await,
        Err(CallError::Unavailable {
            actor: "session:2",
            ..
        })
    ));
    // No restart was spent from the budget, and faults cannot reach a stopped child.
    assert_eq!(h.tree().await.restarts, 0);
    let refused = h
        .sup
        .send(InjectFault {
            target: "session:1".into(),
            fault: Fault::Panic,
            dry_run: false,
        })
        .await
        .unwrap();
    assert!(matches!(
        refused,
        Err(SupervisorError::NotRunning { ref name, state: ChildState::Stopped })
            if name == "session:1"
    ));
    assert_eq!(
        h.events(),
        [
            SupervisorEvent::ChildExited {
                child: "session:1".into(),
                reason: "panicked: client went mad".into(),
                restart_in: None,
            },
            SupervisorEvent::ChildExited {
                child: "session:2".into(),
                reason: "stopped unexpectedly".into(),
                restart_in: None,
            },
        ]
    );
}

// ---------------------------------------------------------------------------------------
// 4. Restart budget and escalation
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn exceeding_the_restart_budget_escalates_and_stops_the_others_in_reverse_order() {
    let log = new_log();
    let first = Child::new("first");
    let flaky = Child::new("flaky");
    let third = Child::new("third");
    let h = start(
        policy(2, 10),
        vec![
            first.spec(RestartType::Permanent, &log),
            flaky.spec(RestartType::Permanent, &log),
            third.spec(RestartType::Permanent, &log),
        ],
    )
    .await;
    let (first_addr, third_addr) = (first.addr(), third.addr());

    crash(&flaky, "crash 1").await;
    h.restarted("flaky", 1).await;
    crash(&flaky, "crash 2").await;
    h.restarted("flaky", 2).await;
    assert_eq!(h.tree().await.restarts, 2);
    assert_eq!(flaky.addr().send(Ping).await.unwrap(), 3);
    assert!(
        entries_of(&log, &["first", "third"]).is_empty(),
        "nobody else was touched yet"
    );

    crash(&flaky, "crash 3").await;

    let sup = h.sup.clone();
    let events = Arc::clone(&h.events);
    let exit = h.exit().await;
    assert_eq!(
        exit,
        SupervisorExit::Escalated {
            child: "flaky".into(),
            reason: "panicked: crash 3".into(),
        }
    );
    // The others got Terminate, last started first, each stopped before the next was asked.
    assert_eq!(
        entries_of(&log, &["first", "third"]),
        [
            "third:terminate",
            "third:stopped",
            "first:terminate",
            "first:stopped"
        ]
    );
    // The failing child was not restarted a third time and was never sent Terminate.
    assert_eq!(flaky.starts(), 3);
    assert!(!entries_of(&log, &["flaky"]).contains(&"flaky:terminate".to_owned()));
    assert_eq!(first.starts(), 1);
    assert_eq!(third.starts(), 1);
    until("the stopped children's mailboxes to close", || {
        !first_addr.connected() && !third_addr.connected()
    })
    .await;
    until("the supervisor to stop", || !sup.connected()).await;
    assert!(matches!(sup.send(GetTree).await, Err(MailboxError::Closed)));
    let last = events.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(
        last,
        SupervisorEvent::Escalated {
            child: "flaky".into(),
            reason: "panicked: crash 3".into(),
        }
    );
}

#[actix_rt::test]
async fn the_restart_budget_is_shared_by_all_children() {
    let log = new_log();
    let a = Child::new("a");
    let b = Child::new("b");
    let h = start(
        policy(2, 10),
        vec![
            a.spec(RestartType::Permanent, &log),
            b.spec(RestartType::Permanent, &log),
        ],
    )
    .await;

    crash(&a, "a1").await;
    h.restarted("a", 1).await;
    crash(&b, "b1").await;
    h.restarted("b", 1).await;
    // Third restart in the window, though each child failed at most twice.
    crash(&a, "a2").await;

    assert_eq!(
        h.exit().await,
        SupervisorExit::Escalated {
            child: "a".into(),
            reason: "panicked: a2".into()
        }
    );
    // `b` panicked once before: actix runs `stopped()` on a panicked actor while dropping its
    // context, hence the first `b:stopped`. Then it was terminated once, by the escalation.
    assert_eq!(
        entries_of(&log, &["b"]),
        ["b:stopped", "b:terminate", "b:stopped"]
    );
}

// ---------------------------------------------------------------------------------------
// 5. Orderly shutdown
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn shutdown_tree_stops_children_in_reverse_start_order_and_reports_normal_exit() {
    let log = new_log();
    let kids = [Child::new("a"), Child::new("b"), Child::new("c")];
    let h = start(
        policy(3, 50),
        kids.iter()
            .map(|k| k.spec(RestartType::Permanent, &log))
            .collect(),
    )
    .await;
    let addrs: Vec<_> = kids.iter().map(Child::addr).collect();
    let sup = h.sup.clone();

    sup.do_send(ShutdownTree {
        reason: "test over".into(),
    });

    assert_eq!(
        h.exit().await,
        SupervisorExit::Normal {
            reason: "test over".into()
        }
    );
    assert_eq!(
        entries(&log),
        [
            "c:terminate",
            "c:stopped",
            "b:terminate",
            "b:stopped",
            "a:terminate",
            "a:stopped",
        ]
    );
    // Permanent children stopped by their supervisor are not restarted.
    assert!(kids.iter().all(|k| k.starts() == 1));
    until("children and supervisor to be gone", || {
        addrs.iter().all(|a| !a.connected()) && !sup.connected()
    })
    .await;
}

#[actix_rt::test]
async fn shutdown_abandons_a_child_that_ignores_terminate_after_its_timeout() {
    let log = new_log();
    let a = Child::new("a");
    let b = Child::new("b");
    let stubborn = Child::new("stubborn");
    let h = start(
        policy(3, 50),
        vec![
            a.spec(RestartType::Permanent, &log),
            b.spec(RestartType::Permanent, &log),
            stubborn
                .stubborn_spec(RestartType::Permanent, &log)
                .shutdown_timeout(Duration::from_millis(200)),
        ],
    )
    .await;

    let began = Instant::now();
    h.sup.do_send(ShutdownTree {
        reason: "bye".into(),
    });
    // Queued behind ShutdownTree, so answered while the stubborn child is being waited for.
    let during = h.tree().await;
    assert_eq!(during.state, ChildState::Stopping);
    assert_eq!(during.find("stubborn").unwrap().state, ChildState::Stopping);
    assert_eq!(during.find("b").unwrap().state, ChildState::Running);
    assert_eq!(during.find("a").unwrap().state, ChildState::Running);
    assert_eq!(
        h.sup
            .send(InjectFault {
                target: "a".into(),
                fault: Fault::Panic,
                dry_run: false,
            })
            .await
            .unwrap()
            .unwrap_err()
            .to_string(),
        SupervisorError::ShuttingDown.to_string()
    );

    assert_eq!(
        h.exit().await,
        SupervisorExit::Normal {
            reason: "bye".into()
        }
    );
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "waited the stubborn child's timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "did not wait much longer: {took:?}"
    );
    assert_eq!(
        entries(&log),
        [
            "stubborn:terminate",
            "b:terminate",
            "b:stopped",
            "a:terminate",
            "a:stopped"
        ]
    );
    // Abandoned, not killed (actix cannot kill an actor): it still answers.
    assert_eq!(stubborn.addr().send(Ping).await.unwrap(), 1);
    assert_eq!(stubborn.starts(), 1);
}

/// A child replaced under the same name (a capsule reloaded with its MCP server): the new
/// one's `StartChild`, sent while the old one stops, starts it once the old one is gone,
/// whether the old one stops when told or is abandoned at its deadline.
#[actix_rt::test]
async fn a_child_started_while_its_namesake_stops_starts_once_that_one_is_gone() {
    for stubborn in [false, true] {
        let log = new_log();
        let old = Child::new("w");
        let spec = if stubborn {
            old.stubborn_spec(RestartType::Permanent, &log)
        } else {
            old.spec(RestartType::Permanent, &log)
        };
        let h = start(
            policy(3, 0),
            vec![spec.shutdown_timeout(Duration::from_millis(200))],
        )
        .await;
        let stopping = actix_rt::spawn(h.sup.send(StopChild { name: "w".into() }));
        let new = Child::new("w");
        h.sup
            .send(StartChild(new.spec(RestartType::Permanent, &log)))
            .await
            .unwrap()
            .unwrap();
        // One successor at a time.
        let third = Child::new("w");
        let refused = h
            .sup
            .send(StartChild(third.spec(RestartType::Permanent, &log)))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            SupervisorError::Duplicate("w".into()).to_string()
        );

        stopping.await.unwrap().unwrap().unwrap();
        until("the successor's start", || new.starts() == 1).await;
        assert_eq!(
            new.addr().send(Ping).await.unwrap(),
            1,
            "stubborn: {stubborn}"
        );
        let tree = h.tree().await;
        assert_eq!(tree.children.len(), 1, "{tree:#?}");
        assert_eq!(tree.children[0].state, ChildState::Running);
        assert_eq!(tree.children[0].restarts, 0);
        assert_eq!((old.starts(), third.starts()), (1, 0));
        assert_eq!(entries(&log)[0], "w:terminate");
    }
}

// ---------------------------------------------------------------------------------------
// 6. Backoff
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn consecutive_restarts_back_off_and_calls_in_between_fail_fast() {
    let log = new_log();
    let w = Child::new("worker");
    let h = start(policy(10, 250), vec![w.spec(RestartType::Permanent, &log)]).await;

    // First restart: immediate.
    crash(&w, "one").await;
    h.restarted("worker", 1).await;

    // Second consecutive restart: after backoff_base.
    let before_crash = Instant::now();
    crash(&w, "two").await;
    let waiting = h.node("worker").await;
    assert_eq!(waiting.state, ChildState::Restarting);
    assert_eq!(
        waiting.restarts,
        1 + 1,
        "the restart is counted when it is scheduled"
    );
    assert_eq!(waiting.uptime_ms, None);
    assert_eq!(waiting.last_failure.unwrap().reason, "panicked: two");

    // Meanwhile the ref points at the dead incarnation: calls fail at once, not at the deadline.
    let asked = Instant::now();
    let answer = w.slot.call(Ping, Duration::from_secs(2)).await;
    assert!(
        matches!(
            answer,
            Err(CallError::Unavailable {
                actor: "worker",
                ..
            })
        ),
        "{answer:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "failed fast: {:?}",
        asked.elapsed()
    );
    let refused = h
        .sup
        .send(InjectFault {
            target: "worker".into(),
            fault: Fault::Panic,
            dry_run: false,
        })
        .await
        .unwrap();
    assert!(matches!(
        refused,
        Err(SupervisorError::NotRunning {
            state: ChildState::Restarting,
            ..
        })
    ));

    h.restarted("worker", 2).await;
    let restarted_at = h
        .events
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|(at, e)| {
            matches!(e, SupervisorEvent::ChildRestarted { restarts: 2, .. }).then_some(*at)
        })
        .unwrap();
    let delay = restarted_at - before_crash;
    assert!(
        delay >= Duration::from_millis(250),
        "restarted after {delay:?}"
    );
    assert!(delay < Duration::from_secs(2), "restarted after {delay:?}");
    assert_eq!(w.addr().send(Ping).await.unwrap(), 3);

    // Third consecutive restart: the delay doubles.
    crash(&w, "three").await;
    h.restarted("worker", 3).await;
    let delays: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SupervisorEvent::ChildExited { restart_in, .. } => restart_in,
            _ => None,
        })
        .collect();
    assert_eq!(
        delays,
        [
            Duration::ZERO,
            Duration::from_millis(250),
            Duration::from_millis(500)
        ]
    );
}

#[actix_rt::test]
async fn backoff_is_capped_at_backoff_max() {
    let log = new_log();
    let w = Child::new("worker");
    let p = RestartPolicy {
        intensity: 10,
        period: Duration::from_secs(10),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(25),
    };
    let h = start(p, vec![w.spec(RestartType::Permanent, &log)]).await;

    for n in 1..=4 {
        crash(&w, "again").await;
        h.restarted("worker", n).await;
    }
    let delays: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SupervisorEvent::ChildExited { restart_in, .. } => restart_in,
            _ => None,
        })
        .collect();
    let ms = Duration::from_millis;
    assert_eq!(delays, [ms(0), ms(10), ms(20), ms(25)]);
}

#[actix_rt::test]
async fn backoff_starts_over_when_the_child_stayed_up_a_whole_period() {
    let log = new_log();
    let w = Child::new("worker");
    let p = RestartPolicy {
        intensity: 10,
        period: Duration::from_millis(300),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_secs(1),
    };
    let h = start(p, vec![w.spec(RestartType::Permanent, &log)]).await;

    crash(&w, "one").await;
    h.restarted("worker", 1).await;
    crash(&w, "two").await;
    h.restarted("worker", 2).await;
    // Wait (by polling the tree) until this incarnation has been up a whole period.
    h.node_until("worker", "an uptime of one period", |n| {
        n.uptime_ms >= Some(310)
    })
    .await;
    crash(&w, "three").await;
    h.restarted("worker", 3).await;

    let delays: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SupervisorEvent::ChildExited { restart_in, .. } => restart_in,
            _ => None,
        })
        .collect();
    assert_eq!(
        delays,
        [Duration::ZERO, Duration::from_millis(50), Duration::ZERO]
    );
}

// ---------------------------------------------------------------------------------------
// 7. Failed starts
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_failed_start_is_retried_with_backoff_and_counts_toward_the_budget() {
    let log = new_log();
    let w = Child::new("worker");
    let h = start(
        policy(3, 20),
        vec![w.spec_with(RestartType::Permanent, &log, false, 2)],
    )
    .await;

    let node = h.restarted("worker", 2).await;
    assert_eq!(w.starts(), 3, "two failed attempts, then a successful one");
    assert_eq!(node.last_failure.unwrap().reason, "failed: no resources");
    assert_eq!(w.addr().send(Ping).await.unwrap(), 1);
    assert_eq!(
        h.tree().await.restarts,
        2,
        "both retries are in the budget window"
    );
    assert_eq!(
        h.events(),
        [
            SupervisorEvent::ChildExited {
                child: "worker".into(),
                reason: "failed: no resources".into(),
                restart_in: Some(Duration::ZERO),
            },
            SupervisorEvent::ChildExited {
                child: "worker".into(),
                reason: "failed: no resources".into(),
                restart_in: Some(Duration::from_millis(20)),
            },
            SupervisorEvent::ChildRestarted {
                child: "worker".into(),
                restarts: 2
            },
        ]
    );
    // One budget slot is left: one more crash is restarted, the next escalates.
    crash(&w, "late").await;
    h.restarted("worker", 3).await;
    crash(&w, "later").await;
    assert!(matches!(h.exit().await, SupervisorExit::Escalated { child, .. } if child == "worker"));
}

#[actix_rt::test]
async fn a_child_that_never_starts_escalates_once_the_budget_is_spent() {
    let log = new_log();
    let sibling = Child::new("sibling");
    let broken = Child::new("broken");
    let h = start(
        policy(2, 10),
        vec![
            sibling.spec(RestartType::Permanent, &log),
            broken.spec_with(RestartType::Permanent, &log, false, usize::MAX),
        ],
    )
    .await;

    assert_eq!(
        h.exit().await,
        SupervisorExit::Escalated {
            child: "broken".into(),
            reason: "failed: no resources".into(),
        }
    );
    assert_eq!(broken.starts(), 3, "the first attempt and two retries");
    assert!(broken.slot.get().is_none(), "never published an address");
    assert!(matches!(
        broken.slot.call(Ping, DEADLINE).await,
        Err(CallError::NotStarted { actor: "broken" })
    ));
    assert_eq!(entries(&log), ["sibling:terminate", "sibling:stopped"]);
}

/// A child that fails to start with the budget already spent (here intensity 1: the failed
/// start and its immediate retry) escalates from inside the supervisor's `started()`,
/// before the children after it in the list were started. The supervisor must then stop
/// what is running in reverse start order, and must not start the later children (OTP
/// aborts the start sequence) -- or, if it does start them, must stop them first.
#[actix_rt::test]
async fn escalation_during_boot_stops_started_children_in_reverse_order() {
    let log = new_log();
    let before = Child::new("before");
    let broken = Child::new("broken");
    let after = Child::new("after");
    let (tx, exit) = oneshot::channel();
    let sup = SupervisorActor::new(
        "root",
        policy(1, 10),
        vec![
            before.spec(RestartType::Permanent, &log),
            broken.spec_with(RestartType::Permanent, &log, false, usize::MAX),
            after.spec(RestartType::Permanent, &log),
        ],
    )
    .on_exit(tx)
    .start();

    let exit = tokio::time::timeout(DEADLINE, exit).await.unwrap().unwrap();
    assert!(matches!(exit, SupervisorExit::Escalated { ref child, .. } if child == "broken"));
    until("the supervisor to stop", || !sup.connected()).await;
    assert_eq!(
        broken.starts(),
        2,
        "the failed start and one immediate retry"
    );
    let stops = entries(&log);
    let expected_if_not_started = ["before:terminate", "before:stopped"];
    let expected_if_started = [
        "after:terminate",
        "after:stopped",
        "before:terminate",
        "before:stopped",
    ];
    assert!(
        stops == expected_if_not_started || stops == expected_if_started,
        "stop order {stops:?}; `after` was started {} time(s)",
        after.starts()
    );
}

/// Same as above with no child before the failing one: nothing is running when the budget
/// runs out, so the supervisor reports `Escalated` and stops at once. A child after the
/// failing one must not be left running with nobody supervising it.
#[actix_rt::test]
async fn escalation_during_boot_does_not_orphan_later_children() {
    let log = new_log();
    let broken = Child::new("broken");
    let after = Child::new("after");
    let (tx, exit) = oneshot::channel();
    let sup = SupervisorActor::new(
        "root",
        policy(0, 10),
        vec![
            broken.spec_with(RestartType::Permanent, &log, false, usize::MAX),
            after.spec(RestartType::Permanent, &log),
        ],
    )
    .on_exit(tx)
    .start();

    let exit = tokio::time::timeout(DEADLINE, exit).await.unwrap().unwrap();
    assert!(matches!(exit, SupervisorExit::Escalated { ref child, .. } if child == "broken"));
    until("the supervisor to stop", || !sup.connected()).await;
    if let Some(orphan) = after.slot.get() {
        let stopped = poll_async(Duration::from_secs(1), async || {
            (!orphan.connected()).then_some(()).ok_or(())
        })
        .await;
        assert!(
            stopped.is_ok(),
            "`after` (started {} time(s)) is still running after its supervisor exited; \
             it answers Ping with {:?}",
            after.starts(),
            orphan.send(Ping).await
        );
    }
}

// ---------------------------------------------------------------------------------------
// 8. Fault injection
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn inject_fault_into_an_unknown_child_is_refused() {
    let log = new_log();
    let w = Child::new("worker");
    let h = start(policy(3, 50), vec![w.spec(RestartType::Permanent, &log)]).await;

    let answer = h
        .sup
        .send(InjectFault {
            target: "nobody".into(),
            fault: Fault::Panic,
            dry_run: false,
        })
        .await
        .unwrap();
    assert!(
        matches!(answer, Err(SupervisorError::UnknownChild(ref name)) if name == "nobody"),
        "{answer:?}"
    );
    assert_eq!(w.addr().send(Ping).await.unwrap(), 1);
    assert_eq!(h.node("worker").await.restarts, 0);
}

#[actix_rt::test]
async fn injected_hang_delays_answers_without_a_restart() {
    let log = new_log();
    let w = Child::new("worker");
    let h = start(policy(3, 50), vec![w.spec(RestartType::Permanent, &log)]).await;

    let began = Instant::now();
    h.sup
        .send(InjectFault {
            target: "worker".into(),
            fault: Fault::Hang { millis: 300 },
            dry_run: false,
        })
        .await
        .unwrap()
        .unwrap();

    // A caller with a short deadline meets it...
    let short = w.addr().send(Ping).timeout(Duration::from_millis(50)).await;
    assert!(matches!(short, Err(MailboxError::Timeout)), "{short:?}");
    assert!(matches!(
        w.slot.call(Ping, Duration::from_millis(50)).await,
        Err(CallError::Timeout {
            actor: "worker",
            ..
        })
    ));
    // ...a patient one is answered by the same incarnation once the hang is over.
    assert_eq!(w.addr().send(Ping).await.unwrap(), 1);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "answered after {took:?}"
    );

    let node = h.node("worker").await;
    assert_eq!(node.state, ChildState::Running);
    assert_eq!(node.restarts, 0);
    assert_eq!(node.last_failure, None);
    assert_eq!(w.starts(), 1);
    assert!(h.events().is_empty());
}

#[actix_rt::test]
async fn inject_message_sent_directly_to_a_child_applies_the_fault() {
    let log = new_log();
    let w = Child::new("worker");
    let h = start(policy(3, 50), vec![w.spec(RestartType::Permanent, &log)]).await;

    let answer = w.addr().send(Inject(Fault::Panic)).await;
    assert!(matches!(answer, Err(MailboxError::Closed)), "{answer:?}");
    let node = h.restarted("worker", 1).await;
    assert_eq!(
        node.last_failure.unwrap().reason,
        "panicked: injected fault"
    );
}

// ---------------------------------------------------------------------------------------
// 9. Events
// ---------------------------------------------------------------------------------------

#[actix_rt::test]
async fn on_event_reports_exits_restarts_and_escalation_in_order() {
    let log = new_log();
    let w = Child::new("worker");
    let other = Child::new("other");
    let h = start(
        policy(1, 10),
        vec![
            w.spec(RestartType::Permanent, &log),
            other.spec(RestartType::Permanent, &log),
        ],
    )
    .await;
    let started: Vec<_> = h
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(
        started,
        [
            SupervisorEvent::ChildStarted {
                child: "worker".into()
            },
            SupervisorEvent::ChildStarted {
                child: "other".into()
            },
        ],
        "each first start is an event, in start order"
    );

    crash(&w, "first").await;
    h.restarted("worker", 1).await;
    crash(&w, "second").await;
    let events = Arc::clone(&h.events);
    assert!(matches!(h.exit().await, SupervisorExit::Escalated { .. }));

    let events: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| e.clone())
        .skip(2)
        .collect();
    assert_eq!(
        events,
        [
            SupervisorEvent::ChildExited {
                child: "worker".into(),
                reason: "panicked: first".into(),
                restart_in: Some(Duration::ZERO),
            },
            SupervisorEvent::ChildRestarted {
                child: "worker".into(),
                restarts: 1
            },
            SupervisorEvent::Escalated {
                child: "worker".into(),
                reason: "panicked: second".into(),
            },
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Nesting and edge cases
// ---------------------------------------------------------------------------------------

/// A supervisor over `x` and `y`, supervised itself as a permanent child named `name`.
fn nested(name: &'static str, x: &Child, y: &Child, log: &Log, intensity: u32) -> ChildSpec {
    let (x, y, log) = (x.clone(), y.clone(), Arc::clone(log));
    ChildSpec::worker(
        name,
        RestartType::Permanent,
        ChildRef::new(name),
        move || {
            Ok(SupervisorActor::new(
                name,
                policy(intensity, 10),
                vec![
                    x.spec(RestartType::Permanent, &log),
                    y.spec(RestartType::Permanent, &log),
                ],
            ))
        },
    )
    .supervisor()
}

#[actix_rt::test]
async fn shutdown_recurses_through_a_nested_supervisor_in_reverse_order() {
    let log = new_log();
    let (a, x, y, b) = (
        Child::new("a"),
        Child::new("x"),
        Child::new("y"),
        Child::new("b"),
    );
    let h = start(
        policy(3, 10),
        vec![
            a.spec(RestartType::Permanent, &log),
            nested("inner", &x, &y, &log, 3),
            b.spec(RestartType::Permanent, &log),
        ],
    )
    .await;
    // The nested supervisor starts its own children when it starts; wait for them.
    until("the nested children to start", || {
        x.starts() == 1 && y.starts() == 1
    })
    .await;
    let tree = h.tree().await;
    let inner = tree.find("inner").unwrap();
    assert_eq!(inner.kind, astrid_actors::supervisor::NodeKind::Supervisor);
    assert_eq!(inner.state, ChildState::Running);

    h.sup.do_send(ShutdownTree {
        reason: "nested".into(),
    });

    assert_eq!(
        h.exit().await,
        SupervisorExit::Normal {
            reason: "nested".into()
        }
    );
    assert_eq!(
        entries(&log),
        [
            "b:terminate",
            "b:stopped",
            "y:terminate",
            "y:stopped",
            "x:terminate",
            "x:stopped",
            "a:terminate",
            "a:stopped",
        ]
    );
}

#[actix_rt::test]
async fn a_nested_supervisor_that_escalates_is_restarted_by_its_parent() {
    let log = new_log();
    let (x, y) = (Child::new("x"), Child::new("y"));
    let h = start(policy(3, 10), vec![nested("inner", &x, &y, &log, 0)]).await;
    until("the nested children to start", || {
        x.starts() == 1 && y.starts() == 1
    })
    .await;

    // No budget inside: the first crash of `x` makes `inner` give up and stop `y`.
    crash(&x, "inner boom").await;

    let node = h.restarted("inner", 1).await;
    assert_eq!(node.last_failure.unwrap().reason, "stopped unexpectedly");
    until("a fresh x and y", || x.starts() == 2 && y.starts() == 2).await;
    assert_eq!(x.addr().send(Ping).await.unwrap(), 2);
    assert_eq!(y.addr().send(Ping).await.unwrap(), 2);
    assert_eq!(entries_of(&log, &["y"]), ["y:terminate", "y:stopped"]);
}

#[actix_rt::test]
async fn shutdown_cancels_a_pending_restart() {
    let log = new_log();
    let w = Child::new("worker");
    let p = RestartPolicy {
        intensity: 5,
        period: Duration::from_secs(10),
        backoff_base: Duration::from_secs(3),
        backoff_max: Duration::from_secs(3),
    };
    let h = start(p, vec![w.spec(RestartType::Permanent, &log)]).await;
    crash(&w, "one").await;
    h.restarted("worker", 1).await;
    crash(&w, "two").await;
    assert_eq!(h.node("worker").await.state, ChildState::Restarting);

    let began = Instant::now();
    h.sup.do_send(ShutdownTree {
        reason: "now".into(),
    });
    assert_eq!(
        h.exit().await,
        SupervisorExit::Normal {
            reason: "now".into()
        }
    );
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "did not wait out the backoff"
    );
    assert_eq!(w.starts(), 2);
}

/// The panic hook remembers the last panic on the thread for a second, and the exit guard
/// blames it on whichever supervised actor ends next on that thread. A panic in an
/// unrelated task (here a plain spawned future on the same arbiter, which tokio catches)
/// must not turn a later, unrelated stop of a child into "panicked: ...".
#[actix_rt::test]
async fn an_unrelated_panic_is_not_blamed_on_a_child_that_stops() {
    let log = new_log();
    let w = Child::new("worker");
    let h = start(policy(3, 50), vec![w.spec(RestartType::Permanent, &log)]).await;

    let joined = actix_rt::spawn(async { panic!("unrelated task") }).await;
    assert!(joined.unwrap_err().is_panic());
    w.addr().send(Quit).await.unwrap();

    let node = h.restarted("worker", 1).await;
    assert_eq!(node.last_failure.unwrap().reason, "stopped unexpectedly");
}
