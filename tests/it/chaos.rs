//! Chaos: many clients invoke capsule commands while faults are injected into one capsule at
//! random moments. Every request must get a reply (an answer or one of the errors a crash
//! explains), the daemon must stay up, a capsule that is left alone must not notice, and
//! the supervisor must restart the faulted capsule exactly once per injected fault.
//!
//! The run lasts `ASTRID_CHAOS_SECS` seconds (default 5); `ASTRID_CHAOS_SEED` replays a
//! run (the seed is printed).

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::{DEADLINE, TestDaemon, copy_capsule, example_capsule, poll_async};
use astrid::client::{Client, ClientError};
use astrid::protocol::{
    CapsuleState, ChildState, CommandOutput, ErrorCode, Fault, FaultInjected, Request, TreeNode,
};

/// Concurrent clients.
const CLIENTS: usize = 24;

/// The longest any single request may take before the test calls it hung: well past the
/// capsule's call deadline (1 s) and the supervisor's backoff ceiling here.
const REPLY_DEADLINE: Duration = Duration::from_secs(5);

/// xorshift64*: small, deterministic, good enough to pick faults and pauses.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `low..high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

/// For a failure message: how many injected faults the daemon's log says were requested
/// and how many the capsule's actor actually applied.
fn applied_faults(home: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(home.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("astrid.") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    let count = |pattern: &str| text.lines().filter(|l| l.contains(pattern)).count();
    format!(
        "{} faults requested, {} applied by the capsule (panic or stop {}, trap {}), {} restarts",
        count("fault injection requested"),
        count("CapsuleActor\" fault=") + count("injected fault: trap"),
        count("CapsuleActor\" fault="),
        count("injected fault: trap"),
        count("restarting supervisor=capsules"),
    )
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    ok: u64,
    /// Errors by code, for the faulted capsule.
    errors: BTreeMap<&'static str, u64>,
    /// Any error from the capsule that is left alone (must stay empty).
    bystander_errors: Vec<String>,
}

async fn invoke(
    client: &Client,
    name: &str,
    args: Vec<String>,
) -> Result<CommandOutput, ClientError> {
    client
        .call(Request::InvokeCommand {
            name: name.into(),
            args,
        })
        .await
}

/// Invokes `chaos` (mostly) and `echo` until `end`; every call must come back in time.
async fn client_loop(client: Client, who: usize, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        // One call in four goes to the capsule nobody faults.
        let target = if i.is_multiple_of(4) { "echo" } else { "chaos" };
        let args = vec![format!("{who}"), format!("{i}")];
        tally.sent += 1;
        let Ok(answer) =
            tokio::time::timeout(REPLY_DEADLINE, invoke(&client, target, args.clone())).await
        else {
            panic!("client {who}: /{target} {args:?} got no reply within {REPLY_DEADLINE:?}");
        };
        match answer {
            Ok(out) => {
                let value = serde_json::to_value(&out.output).unwrap();
                assert_eq!(
                    value,
                    serde_json::json!({"command": target, "args": args}),
                    "client {who}: a reply to another request?"
                );
                assert_eq!(out.capsule, target);
                tally.ok += 1;
            }
            Err(e) if target == "echo" => tally.bystander_errors.push(e.to_string()),
            Err(ClientError::Remote(body)) => {
                assert!(
                    matches!(
                        body.code,
                        ErrorCode::CapsuleCrashed | ErrorCode::Unavailable | ErrorCode::Timeout
                    ),
                    "client {who}: unexpected error {body}"
                );
                *tally.errors.entry(body.code.as_str()).or_default() += 1;
            }
            Err(e) => panic!("client {who}: the connection failed: {e}"),
        }
    }
    tally
}

/// Injects random faults into `capsule:chaos` at random intervals until `end`; returns how
/// many were acknowledged and how many were refused (a fault that finds the capsule
/// restarting, or already doomed by an earlier fault, is refused with `not_running` and does
/// not count).
async fn injector(client: Client, seed: u64, end: Instant) -> (u32, u32, BTreeMap<String, u32>) {
    let mut rng = Rng::new(seed);
    let (mut injected, mut refused) = (0u32, 0u32);
    let mut kinds = BTreeMap::new();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.range(5, 120))).await;
        let fault = match rng.range(0, 3) {
            0 => Fault::Panic,
            1 => Fault::Stop,
            _ => Fault::Trap,
        };
        let answer = tokio::time::timeout(
            REPLY_DEADLINE,
            client.call::<FaultInjected>(Request::InjectFault {
                target: "capsule:chaos".into(),
                fault: fault.clone(),
            }),
        )
        .await
        .expect("InjectFault got no reply");
        match answer {
            Ok(done) => {
                assert_eq!(done.fault, fault);
                injected += 1;
                *kinds.entry(fault.to_string()).or_default() += 1;
            }
            Err(e) if e.code() == Some(ErrorCode::NotRunning) => refused += 1,
            Err(e) => panic!("InjectFault {fault}: {e}"),
        }
    }
    (injected, refused, kinds)
}

/// A daemon with `echo` and `chaos`: echo again, under another name, with a restart budget
/// that many faults do not exhaust and a short backoff.
fn start_daemon() -> TestDaemon {
    TestDaemon::builder().fault_injection().prepare(|home, _| {
        let root = home.join("capsules");
        copy_capsule(&example_capsule("echo"), &root);
        let dir = root.join("chaos");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            example_capsule("echo").join("echo.wat"),
            dir.join("echo.wat"),
        )
        .unwrap();
        std::fs::write(
            dir.join("Capsule.toml"),
            "[package]\nname = \"chaos\"\nversion = \"0.1.0\"\n\n[module]\nfile = \"echo.wat\"\n\n\
             [[command]]\nname = \"chaos\"\n\n\
             [restart]\nintensity = 1000\nperiod = \"60s\"\nbackoff = \"1ms\"\nbackoff_max = \"20ms\"\n",
        )
        .unwrap();
    }).start()
}

/// Runs the clients and the injector until `end`; returns the clients' tally and the
/// number of faults acknowledged.
async fn storm(d: &TestDaemon, seed: u64, end: Instant) -> (Tally, u32) {
    let mut clients = Vec::new();
    for who in 0..CLIENTS {
        let client = d.client().await;
        clients.push(tokio::spawn(client_loop(client, who, end)));
    }
    let faults = tokio::spawn(injector(d.client().await, seed, end));

    let mut total = Tally::default();
    for handle in clients {
        let t = handle.await.unwrap();
        total.sent += t.sent;
        total.ok += t.ok;
        for (code, n) in t.errors {
            *total.errors.entry(code).or_default() += n;
        }
        total.bystander_errors.extend(t.bystander_errors);
    }
    let (injected, refused, kinds) = faults.await.unwrap();
    println!(
        "chaos: {} requests, {} ok, errors {:?}; {injected} faults acknowledged {kinds:?}, \
         {refused} refused (restarting)",
        total.sent, total.ok, total.errors
    );
    (total, injected)
}

/// After the storm: one restart per acknowledged fault, the capsule runs again, nothing
/// else restarted.
async fn check_restarts(d: &TestDaemon, client: &Client, seed: u64, injected: u32) {
    let too_many = |node: &TreeNode| {
        panic!(
            "capsule:chaos: {} restarts for {injected} acknowledged faults (seed {seed}); \
             the daemon log shows {}: {node:#?}",
            node.restarts,
            applied_faults(d.home.path())
        )
    };
    let restarted = poll_async(DEADLINE, async || {
        let tree = client.tree().await.unwrap();
        let node = tree.find("capsule:chaos").unwrap().clone();
        if node.restarts > injected {
            too_many(&node);
        }
        if node.restarts == injected && node.state == ChildState::Running {
            Ok(node)
        } else {
            Err(node)
        }
    })
    .await;
    let node = restarted.unwrap_or_else(|node| too_many(&node));
    assert!(node.last_failure.is_some(), "{node:?}");
    let tree = client.tree().await.unwrap();
    let echo = tree.find("capsule:echo").unwrap();
    assert_eq!(echo.restarts, 0, "{echo:?}");
    for kernel in ["bus", "store", "capabilities", "listener", "registry"] {
        assert_eq!(
            tree.find(kernel).unwrap().restarts,
            0,
            "{kernel}: {tree:#?}"
        );
    }
    let chaos = client
        .capsules()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "chaos")
        .unwrap();
    assert_eq!(chaos.state, CapsuleState::Running, "{chaos:?}");
    assert_eq!(chaos.restarts, injected, "{chaos:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_get_replies_while_a_capsule_is_faulted_at_random() {
    let secs = env_u64("ASTRID_CHAOS_SECS").unwrap_or(5);
    let seed = env_u64("ASTRID_CHAOS_SEED").unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        u64::try_from(nanos % u128::from(u64::MAX)).unwrap()
    });
    println!("chaos: {secs} s, {CLIENTS} clients, ASTRID_CHAOS_SEED={seed}");

    let mut d = start_daemon();
    // Panics print to the daemon's stderr; keep the pipe drained so it never blocks.
    let mut stderr = d.child.stderr.take().unwrap();
    let drain = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
    });

    let (total, injected) = storm(&d, seed, Instant::now() + Duration::from_secs(secs)).await;

    // Every request got a reply, and the capsule nobody faulted never failed one.
    let failed: u64 = total.errors.values().sum();
    assert_eq!(total.sent, total.ok + failed);
    assert!(
        total.bystander_errors.is_empty(),
        "echo failed {} times: {:?}",
        total.bystander_errors.len(),
        &total.bystander_errors[..total.bystander_errors.len().min(5)]
    );
    assert!(total.ok > 0);
    assert!(injected > 0, "no fault was injected (seed {seed})");

    // The daemon is up and whole.
    let client = d.client().await;
    client.ping().await.unwrap();
    let status = client.status().await.unwrap();
    assert!(status.unavailable.is_empty(), "{:?}", status.unavailable);

    check_restarts(&d, &client, seed, injected).await;
    let out = invoke(&client, "chaos", vec!["after".into()])
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&out.output).unwrap(),
        serde_json::json!({"command": "chaos", "args": ["after"]})
    );

    drop(client);
    drop(d);
    let _ = drain.join();
}
