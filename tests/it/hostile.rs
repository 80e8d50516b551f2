//! Hostile capsules: guests written to make the daemon spend what it should not (memory
//! through tables, memories, segments and counts, the stack, host calls in a loop, the
//! log), or to reach what they must not (files through symbolic links and odd spellings,
//! the daemon's own configuration). Each runs in a real daemon while another client pings
//! it. The bounds checked, for every attack:
//!
//! - the daemon's resident memory stays under [`RSS_BOUND`] above what it was before the
//!   attack (a watcher reads `/proc/<pid>/status` every few milliseconds, and kills the
//!   daemon as soon as the bound is passed, so that a regression cannot take the machine
//!   down with it);
//! - every ping is answered within [`PING_BOUND`];
//! - the capsule is refused at load, or its call fails (or is refused) with a clear reason.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::{
    DEADLINE, TestDaemon, audit_tail, failure, one_command_manifest, patient_client, poll_until,
    wait_audit, write_capsule,
};
use astrid::client::{Client, ClientError};
use astrid::protocol::{AuditEntry, CapsuleInfo, CapsuleState, CommandOutput, ErrorCode, Request};

/// How much the daemon's resident memory may grow during an attack. The most a capsule
/// with default limits can legitimately hold is a few MiB (a 1 MiB memory, a 512 KiB
/// table, a value or payload of at most 1 MiB in flight, its compiled code); 64 MiB leaves
/// room for the allocator's own slack in a debug build, and is far below what any of the
/// attacks reaches unbounded (hundreds of MiB a second).
const RSS_BOUND: u64 = 64 << 20;

/// Longest a ping may take during an attack (a capsule runs on a thread of its own; the
/// machine running the tests may have two cores, one of them busy with the attack).
const PING_BOUND: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

/// The daemon's resident memory, in bytes (`None` once it has exited).
fn rss(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What an attack cost, as measured by [`under_attack`].
#[derive(Debug)]
struct Cost {
    /// The bound on `rss_growth`.
    bound: u64,
    /// Highest resident memory seen above the level before the attack.
    rss_growth: u64,
    /// Whether the watcher had to kill the daemon (the bound was passed).
    killed: bool,
    /// Slowest ping.
    slowest_ping: Duration,
    /// Pings answered.
    pings: u64,
}

impl Cost {
    /// Asserts every bound of the module's documentation.
    #[track_caller]
    fn within_bounds(&self, what: &str) {
        eprintln!("{what}: {self:?}");
        assert!(
            !self.killed && self.rss_growth <= self.bound,
            "{what}: the daemon's memory grew by {} MiB (bound {} MiB){}",
            self.rss_growth >> 20,
            self.bound >> 20,
            if self.killed { "; it was killed" } else { "" }
        );
        assert!(self.pings > 0, "{what}: no ping was answered");
        assert!(
            self.slowest_ping <= PING_BOUND,
            "{what}: a ping took {:?} (bound {PING_BOUND:?})",
            self.slowest_ping
        );
    }
}

/// Runs `attack` while a second client pings the daemon and a watcher samples its memory
/// (killing it past [`RSS_BOUND`]); returns what `attack` returned and what it cost.
async fn under_attack<T>(d: &TestDaemon, attack: impl Future<Output = T>) -> (T, Cost) {
    under_attack_within(d, RSS_BOUND, attack).await
}

/// [`under_attack`] with another bound on the daemon's memory.
async fn under_attack_within<T>(
    d: &TestDaemon,
    bound: u64,
    attack: impl Future<Output = T>,
) -> (T, Cost) {
    let pid = d.pid();
    let pinger = d.client().await;
    pinger.ping().await.unwrap();
    let idle = rss(pid).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(idle));
    let killed = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, peak, killed) = (stop.clone(), peak.clone(), killed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(now) = rss(pid) else { break };
                peak.fetch_max(now, Ordering::Relaxed);
                if now > idle + bound {
                    // Stop a runaway daemon before it takes the machine down.
                    let pid = rustix::process::Pid::from_raw(pid).unwrap();
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    killed.store(true, Ordering::Relaxed);
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let pinging = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut slowest, mut pings) = (Duration::ZERO, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match tokio::time::timeout(DEADLINE, pinger.ping()).await {
                    Ok(Ok(())) => pings += 1,
                    _ => break,
                }
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (slowest, pings)
        })
    };
    let result = attack.await;
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let (slowest_ping, pings) = pinging.await.unwrap();
    let cost = Cost {
        bound,
        rss_growth: peak.load(Ordering::Relaxed).saturating_sub(idle),
        killed: killed.load(Ordering::Relaxed),
        slowest_ping,
        pings,
    };
    (result, cost)
}

async fn invoke(client: &Client, name: &str) -> Result<CommandOutput, ClientError> {
    client
        .call(Request::InvokeCommand {
            name: name.into(),
            args: Vec::new(),
        })
        .await
}

/// Invokes `name` `times` times, one after the other; the answers.
async fn invoke_times(
    client: &Client,
    name: &str,
    times: usize,
) -> Vec<Result<CommandOutput, ClientError>> {
    let mut answers = Vec::new();
    for _ in 0..times {
        answers.push(invoke(client, name).await);
    }
    answers
}

/// Writes capsule `name` (one command of the same name) into the home, with `extra`
/// manifest tables and `wat` as its module.
fn hostile(home: &Path, name: &str, extra: &str, wat: &str) {
    write_capsule(
        &home.join("capsules"),
        name,
        &one_command_manifest(name, extra),
        &[("m.wat", wat.as_bytes())],
    );
}

/// A capsule's listing, once it is there.
async fn listed(client: &Client, name: &str) -> CapsuleInfo {
    let list = || async { client.capsules().await.unwrap() };
    let pick = |list: &Vec<CapsuleInfo>| list.iter().find(|c| c.name == name).cloned();
    poll_until(&format!("capsule `{name}`"), list, pick).await
}

/// Asserts that capsule `name` is `invalid` with an error that says `why`.
#[track_caller]
fn assert_invalid(info: &CapsuleInfo, why: &str) {
    assert_eq!(info.state, CapsuleState::Invalid, "{info:?}");
    let error = info.error.as_deref().unwrap_or_default();
    assert!(error.contains(why), "{}: {error}", info.name);
}

/// Asserts that every call failed as a guest crash, the first with a message that says
/// `why` (a call sent right after may find the crashed instance still in place, and be
/// told so).
#[track_caller]
fn assert_crashed(answers: Vec<Result<CommandOutput, ClientError>>, why: &str) {
    for (i, answer) in answers.into_iter().enumerate() {
        let (code, message) = failure(answer);
        assert_eq!(code, ErrorCode::CapsuleCrashed, "{message}");
        assert!(i > 0 || message.contains(why), "{message}");
    }
}

/// The exports every guest here has: a memory of `pages`, an allocator that hands out the
/// same bytes at 64 every time, and `astrid_command` running `body` then replying with the
/// `len` bytes at `ptr`.
fn guest(imports: &str, pages: u32, extra: &str, body: &str, reply: (u32, u32)) -> String {
    let (ptr, len) = reply;
    format!(
        r#"(module
  {imports}
  (memory (export "memory") {pages})
  {extra}
  (func (export "astrid_alloc") (param i32) (result i32) (i32.const 64))
  (func (export "astrid_command") (param $ptr i32) (param $len i32) (result i64)
    {body}
    (i64.const {packed})))"#,
        packed = (u64::from(ptr) << 32) | u64::from(len)
    )
}

/// MessagePack `"capped"` at address 0 (7 bytes), the reply of guests that found a limit.
const CAPPED: &str = r#"(data (i32.const 0) "\a6capped")"#;

// ---------------------------------------------------------------------------------------
// Tables, memory, segments and counts
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_bombs_are_capped() {
    // Grows its table by a million elements at a time until `table.grow` refuses, then
    // checks the size: unbounded, each step costs the host 8 MB, filled inside the call.
    let grow = guest(
        "",
        1,
        &format!("(table $t 1 funcref) {CAPPED}"),
        "(loop $grow
           (br_if $grow (i32.ne (table.grow $t (ref.null func) (i32.const 1000000))
                                (i32.const -1))))
         (if (i32.gt_u (table.size $t) (i32.const 65536)) (then unreachable))",
        (0, 7),
    );
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            hostile(home, "grow", "", &grow);
            // Ten million elements at instantiation: 80 MB per instance, and per restart.
            let declared = guest("", 1, "(table 10000000 funcref)", "", (0, 0));
            hostile(home, "declared", "", &declared);
            let max_ok = guest("", 1, "(table 65536 65536 funcref)", "", (0, 0));
            hostile(home, "max-ok", "", &max_ok);
        })
        .start();
    let client = patient_client(&d).await;
    let (answers, cost) = under_attack(&d, invoke_times(&client, "grow", 20)).await;
    cost.within_bounds("table.grow bomb");
    for answer in answers {
        let output = answer.unwrap().output;
        assert_eq!(output, rmpv::Value::from("capped"));
    }
    assert_invalid(
        &listed(&client, "declared").await,
        "table of 10000000 elements",
    );
    assert_eq!(listed(&client, "max-ok").await.state, CapsuleState::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_segments_and_counts_are_capped() {
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            // Grows its memory a page at a time and writes to every page it gets.
            let memory = guest(
                "",
                1,
                CAPPED,
                "(loop $grow
               (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1))
                 (then
                   (i32.store (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 4))
                              (i32.const 1))
                   (br $grow))))
             (if (i32.gt_u (memory.size) (i32.const 16)) (then unreachable))",
                (0, 7),
            );
            hostile(home, "memory", "", &memory);
            // 2 MiB of passive data, for a capsule whose memory may hold 1 MiB.
            let chunk = "x".repeat(256 * 1024);
            let data = format!(r#"(data "{chunk}")"#).repeat(8);
            hostile(home, "data", "", &guest("", 1, &data, "", (0, 0)));
            // 70,000 element items.
            let items = "$f ".repeat(35_000);
            let elems = format!("(func $f) (elem func {items}) (elem func {items})");
            hostile(home, "elements", "", &guest("", 1, &elems, "", (0, 0)));
            let globals = "(global i32 (i32.const 0))".repeat(10_001);
            hostile(home, "globals", "", &guest("", 1, &globals, "", (0, 0)));
            // A hundred memories of 16 pages each, every one within `memory_pages`.
            let memories = "(memory 16)".repeat(99);
            hostile(home, "memories", "", &guest("", 1, &memories, "", (0, 0)));
            // Larger than a module may be (read no further than the limit).
            let mut big = b"\0asm\x01\0\0\0".to_vec();
            big.resize(9 << 20, 0);
            write_capsule(
                &home.join("capsules"),
                "huge",
                &one_command_manifest("huge", "").replace("m.wat", "m.wasm"),
                &[("m.wasm", &big)],
            );
        })
        .start();
    let client = patient_client(&d).await;
    for (name, why) in [
        ("data", "data segments hold 2097152 bytes"),
        ("elements", "70000 items"),
        ("globals", "10001 globals"),
        ("memories", "100 memories"),
        ("huge", "9437184 bytes"),
    ] {
        assert_invalid(&listed(&client, name).await, why);
        let (code, _) = failure(invoke(&client, name).await);
        assert_eq!(code, ErrorCode::NotFound, "{name}");
    }
    let (answers, cost) = under_attack(&d, invoke_times(&client, "memory", 20)).await;
    cost.within_bounds("memory growth");
    for answer in answers {
        assert_eq!(answer.unwrap().output, rmpv::Value::from("capped"));
    }
}

/// How much the daemon's resident memory may grow while it compiles the largest code it
/// accepts (4 MiB; measured: about 100 MiB in a debug build).
const COMPILE_RSS_BOUND: u64 = 160 << 20;

/// `n` as unsigned LEB128.
fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = u8::try_from(n & 0x7f).unwrap();
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A section: its id, then its contents with their length.
fn section(id: u8, contents: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(contents.len(), out);
    out.extend_from_slice(contents);
}

/// The largest code the daemon accepts, give or take: the echo ABI and sixteen functions
/// whose bodies are each just under 256 KiB of `local.get 0 local.get 0 i32.add local.set 0`.
fn largest_module() -> Vec<u8> {
    const FILLERS: usize = 16;
    const OPS: usize = 37_000;
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 (i32) -> i32, 1 (i32 i32) -> i64, 2 (i32) -> ().
    section(
        1,
        &[
            3, 0x60, 1, 0x7f, 1, 0x7f, 0x60, 2, 0x7f, 0x7f, 1, 0x7e, 0x60, 1, 0x7f, 0,
        ],
        &mut m,
    );
    let mut functions = vec![u8::try_from(2 + FILLERS).unwrap(), 0, 1];
    functions.extend([2; FILLERS]);
    section(3, &functions, &mut m);
    section(5, &[1, 0, 1], &mut m);
    let mut exports = vec![3];
    for (name, kind, index) in [
        ("memory", 2u8, 0u8),
        ("astrid_alloc", 0, 0),
        ("astrid_command", 0, 1),
    ] {
        exports.push(u8::try_from(name.len()).unwrap());
        exports.extend_from_slice(name.as_bytes());
        exports.extend([kind, index]);
    }
    section(7, &exports, &mut m);
    let mut code = Vec::new();
    leb(2 + FILLERS, &mut code);
    for body in [vec![0, 0x41, 0, 0x0b], vec![0, 0x42, 0, 0x0b]] {
        leb(body.len(), &mut code);
        code.extend(body);
    }
    let mut filler = vec![0];
    for _ in 0..OPS {
        filler.extend([0x20, 0, 0x20, 0, 0x6a, 0x21, 0]);
    }
    filler.push(0x0b);
    for _ in 0..FILLERS {
        leb(filler.len(), &mut code);
        code.extend_from_slice(&filler);
    }
    section(10, &code, &mut m);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_module_compiles_within_bounds() {
    // The test profile builds cranelift unoptimized (Cargo.toml), which compiles this module
    // in about 5 s instead of 1 s, longer under the parallel tests' load: the reload gets a
    // longer deadline than the default 5 s. What is measured is memory and responsiveness.
    let d = TestDaemon::builder()
        .args(&["--call-timeout", "60s"])
        .prepare(|_, _| {})
        .start();
    let client = patient_client(&d).await;
    let module = largest_module();
    assert!(module.len() > 4_100_000, "{}", module.len());
    assert!(module.len() < 4 << 20, "{}", module.len());
    write_capsule(
        &d.home.path().join("capsules"),
        "largest",
        &one_command_manifest("largest", "").replace("m.wat", "m.wasm"),
        &[("m.wasm", &module)],
    );
    let reload = async {
        let _: astrid::protocol::ReloadReport = client.call(Request::ReloadCapsules).await.unwrap();
        listed(&client, "largest").await
    };
    let (info, cost) = under_attack_within(&d, COMPILE_RSS_BOUND, reload).await;
    cost.within_bounds("compiling the largest module");
    assert_eq!(info.state, CapsuleState::Running, "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_and_exceptions_are_refused_and_recursion_traps() {
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            // A shared memory and a wait that nothing will ever end: the capsule's thread
            // would be blocked for good (no fuel is spent while waiting).
            let wait = r#"(module
  (memory (export "memory") 1 1 shared)
  (func (export "astrid_alloc") (param i32) (result i32) (i32.const 64))
  (func (export "astrid_command") (param i32 i32) (result i64)
    (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1)))
    (i64.const 0)))"#;
            hostile(home, "wait", "", wait);
            // Every `throw` allocates an exception object that lives as long as the instance.
            let throw = guest(
                "",
                1,
                "(tag $e)",
                "(loop $again
               (block $caught (try_table (catch_all $caught) (throw $e)))
               (br $again))",
                (0, 0),
            );
            hostile(home, "throw", "", &throw);
            let recurse = guest(
                "",
                1,
                "(func $deeper (param i64) (result i64)
               (i64.add (call $deeper (i64.add (local.get 0) (i64.const 1))) (i64.const 1)))",
                "(drop (call $deeper (i64.const 0)))",
                (0, 0),
            );
            hostile(home, "recurse", "[restart]\nbackoff = \"0s\"\n", &recurse);
        })
        .start();
    let client = patient_client(&d).await;
    assert_invalid(&listed(&client, "wait").await, "shared");
    assert_invalid(&listed(&client, "throw").await, "exception");
    let (answers, cost) = under_attack(&d, invoke_times(&client, "recurse", 2)).await;
    cost.within_bounds("deep recursion");
    assert_crashed(answers, "stack overflow");
}

// ---------------------------------------------------------------------------------------
// Host calls in a loop
// ---------------------------------------------------------------------------------------

/// The imports of the loop guests.
const IMPORTS: &str = r#"
  (import "astrid" "log" (func $log (param i32 i32 i32)))
  (import "astrid" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
  (import "astrid" "kv_get" (func $kv_get (param i32 i32) (result i64)))
  (import "astrid" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "astrid" "vfs_read" (func $vfs_read (param i32 i32) (result i64)))
  (import "astrid" "vfs_write" (func $vfs_write (param i32 i32 i32 i32) (result i32)))"#;

/// Names at fixed addresses: `hostile.flood` at 0 (13 bytes), `key` at 16 (3), `out/f` at
/// 32 (5), `secret.txt` at 48 (10); a 1000-byte log line at 1024.
fn names() -> String {
    let line = "FLOOD-LINE ".repeat(91);
    format!(
        r#"(data (i32.const 0) "hostile.flood")
  (data (i32.const 16) "key")
  (data (i32.const 32) "out/f")
  (data (i32.const 48) "secret.txt")
  (data (i32.const 1024) "{}")"#,
        &line[..1000]
    )
}

/// `call` forever (it ends at the call's fuel); the value 512 KiB at 4096 is a MessagePack
/// `bin 32` header and its bytes.
fn looping(call: &str) -> String {
    guest(
        IMPORTS,
        16,
        &names(),
        &format!(
            "(i32.store8 (i32.const 4096) (i32.const 0xc6))
             (i32.store (i32.const 4097) (i32.const 0x00000800))
             (loop $again {call} (br $again))"
        ),
        (0, 0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_call_loops_stay_within_bounds() {
    let limits = "[limits]\nmemory_pages = 16\n\n[restart]\nbackoff = \"0s\"\nintensity = 100\n";
    let grants = |g: &str| format!("[capabilities]\ngrant = [{g}]\n\n{limits}");
    let d = TestDaemon::builder().prepare(|home, _| {
        let publish = looping(
            "(drop (call $publish (i32.const 0) (i32.const 13) (i32.const 4096) (i32.const 524293)))",
        );
        hostile(
            home,
            "publish",
            &grants("\"bus:publish:hostile.>\""),
            &publish,
        );
        let put = looping(
            "(drop (call $kv_put (i32.const 16) (i32.const 3) (i32.const 4096) (i32.const 524288)))",
        );
        hostile(home, "put", &grants("\"kv\""), &put);
        let write = looping(
            "(drop (call $vfs_write (i32.const 32) (i32.const 5) (i32.const 4096) (i32.const 524288)))",
        );
        hostile(home, "write", &grants("\"vfs:write:out/**\""), &write);
        // Ranges the host would have to allocate for before finding them outside memory.
        let ranges = looping(
            "(drop (call $kv_put (i32.const 16) (i32.const 3) (i32.const 0x7fff0000) (i32.const 0x3fffffff)))
             (drop (call $vfs_write (i32.const 32) (i32.const 5) (i32.const 4096) (i32.const 0x3fffffff)))",
        );
        hostile(
            home,
            "ranges",
            &grants("\"kv\", \"vfs:write:out/**\""),
            &ranges,
        );
    }).start();
    let client = patient_client(&d).await;
    for name in ["publish", "put", "write", "ranges"] {
        let (answers, cost) = under_attack(&d, invoke_times(&client, name, 2)).await;
        cost.within_bounds(name);
        for answer in answers {
            // Out of fuel, or past the deadline: either way the call fails, and says so.
            let (code, message) = failure(answer);
            assert!(
                matches!(code, ErrorCode::CapsuleCrashed | ErrorCode::Timeout),
                "{name}: {code}: {message}"
            );
        }
        client.ping().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_in_a_loop_are_recorded_within_a_budget() {
    // No grants at all: every call is denied, and every denial used to be an audit entry
    // and a log line, thousands a second, for as long as anything called the capsule.
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            let denied = looping("(drop (call $vfs_read (i32.const 48) (i32.const 10)))");
            hostile(home, "denied", "[restart]\nbackoff = \"0s\"\n", &denied);
        })
        .start();
    let client = patient_client(&d).await;
    let started = Instant::now();
    let (answers, cost) = under_attack(&d, invoke_times(&client, "denied", 2)).await;
    cost.within_bounds("denials in a loop");
    for answer in answers {
        let (code, message) = failure(answer);
        assert!(
            matches!(code, ErrorCode::CapsuleCrashed | ErrorCode::Timeout),
            "{code}: {message}"
        );
    }
    // Summed up once a second: the counts add up to thousands.
    let not_recorded = |tail: &Vec<AuditEntry>| -> u64 {
        tail.iter()
            .filter(|e| e.actor == "capsule:denied" && e.target == "(repeated)")
            .map(|e| {
                e.outcome
                    .strip_prefix("denied ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("{e:?}"))
            })
            .sum()
    };
    let fetch = || audit_tail(&client, 1000);
    poll_until("the summaries of the denials", fetch, |tail| {
        (not_recorded(tail) > 1000).then_some(())
    })
    .await;
    let tail = audit_tail(&client, 1000).await;
    let one_by_one = tail
        .iter()
        .filter(|e| e.actor == "capsule:denied" && e.target == "vfs:read:secret.txt")
        .count();
    // 100 at once, then 10 a second.
    let allowed = 100 + 10 * usize::try_from(started.elapsed().as_secs() + 1).unwrap();
    assert!(
        (100..=allowed).contains(&one_by_one),
        "{one_by_one} denials recorded one by one (at most {allowed})"
    );
    let lines = d
        .log_text()
        .lines()
        .filter(|l| l.contains("capability denied"))
        .count();
    assert!(lines <= allowed, "{lines} denial lines in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_a_guest_cannot_hold_crash_it() {
    // Puts 32 KiB, then gets it again and again; its allocator grows memory for each copy
    // and, at the ceiling, answers -1.
    let get = guest(
        IMPORTS,
        1,
        &format!(
            "{}
  (global $next (mut i32) (i32.const 65536))
  (func $alloc (param $len i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (block $fits
      (loop $more
        (br_if $fits (i32.le_u (i32.add (local.get $at) (local.get $len))
                               (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (return (i32.const -1))))
        (br $more)))
    (global.set $next (i32.add (local.get $at) (local.get $len)))
    (local.get $at))
  (export \"grow_alloc\" (func $alloc))",
            names()
        ),
        "(drop (call $kv_put (i32.const 16) (i32.const 3) (i32.const 4096) (i32.const 32768)))
         (loop $again (drop (call $kv_get (i32.const 16) (i32.const 3))) (br $again))",
        (0, 0),
    )
    // The growing allocator is the one the host calls.
    .replace(
        r#"(func (export "astrid_alloc") (param i32) (result i32) (i32.const 64))"#,
        r#"(func (export "astrid_alloc") (param i32) (result i32) (call $alloc (local.get 0)))"#,
    );
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            hostile(
                home,
                "get",
                "[capabilities]\ngrant = [\"kv\"]\n\n[restart]\nbackoff = \"0s\"\n",
                &get,
            );
        })
        .start();
    let client = patient_client(&d).await;
    let (answers, cost) = under_attack(&d, invoke_times(&client, "get", 2)).await;
    cost.within_bounds("kv_get into a full memory");
    assert_crashed(answers, "astrid_alloc returned -1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_cut_to_the_budget_and_summed_up() {
    let flood = looping("(call $log (i32.const 2) (i32.const 1024) (i32.const 1000))");
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            hostile(home, "flood", "[restart]\nbackoff = \"0s\"\n", &flood);
        })
        .start();
    let client = patient_client(&d).await;
    let started = Instant::now();
    let (answers, cost) = under_attack(&d, invoke_times(&client, "flood", 1)).await;
    // The budget refills while the flood runs, which takes longer on a loaded machine.
    let refilled =
        u64::from(astrid_actors::capsule::log::PER_SECOND) * (started.elapsed().as_secs() + 1);
    cost.within_bounds("log flood");
    let (code, message) = failure(answers.into_iter().next().unwrap());
    assert!(
        matches!(code, ErrorCode::CapsuleCrashed | ErrorCode::Timeout),
        "{code}: {message}"
    );
    // The log is written in the background: wait for the summary line.
    let summary = common::wait_until(DEADLINE, || d.log_text().contains("log lines dropped"));
    let text = d.log_text();
    assert!(summary, "no summary line in the log");
    let lines = text.lines().filter(|l| l.contains("FLOOD-LINE")).count();
    let burst = u64::from(astrid_actors::capsule::log::BURST);
    assert!(
        (burst..=burst + refilled).contains(&u64::try_from(lines).unwrap()),
        "{lines} flood lines reached the log"
    );
    let summary = text
        .lines()
        .find(|l| l.contains("log lines dropped"))
        .unwrap();
    assert!(summary.contains("capsule=flood"), "{summary}");
    let dropped: u64 = summary
        .split_whitespace()
        .find_map(|w| w.strip_prefix("dropped="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped > 1000, "{summary}");
}

// ---------------------------------------------------------------------------------------
// The file system: what a grant names is what is opened
// ---------------------------------------------------------------------------------------

/// A guest with two commands, `rd PATH` and `wr PATH`: `vfs_read` of the path, replying
/// with the data (MessagePack `bin 8`: the files here are short), or `vfs_write` of
/// `pwned` to it; on a failure, or for a write, it replies with the import's code (an int).
///
/// It finds the path at a fixed place in its input, `{"command": "rd", "args": [PATH]}`:
/// `82 a7 "command" a2 "rd" a4 "args" 91`, then the path as a `fixstr` (at 18) or a
/// `str 8` (at 18 and 19).
const FILE_GUEST: &str = r#"(module
  (import "astrid" "vfs_read" (func $vfs_read (param i32 i32) (result i64)))
  (import "astrid" "vfs_write" (func $vfs_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "pwned")
  (global $next (mut i32) (i32.const 4096))
  (func (export "astrid_alloc") (param $len i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (global.set $next (i32.add (local.get $at) (local.get $len)))
    (local.get $at))
  (func (export "astrid_command") (param $ptr i32) (param $len i32) (result i64)
    (local $path i32) (local $plen i32) (local $result i64)
    (if (i32.eq (i32.load8_u offset=18 (local.get $ptr)) (i32.const 0xd9))
      (then
        (local.set $plen (i32.load8_u offset=19 (local.get $ptr)))
        (local.set $path (i32.add (local.get $ptr) (i32.const 20))))
      (else
        (local.set $plen (i32.and (i32.load8_u offset=18 (local.get $ptr)) (i32.const 0x1f)))
        (local.set $path (i32.add (local.get $ptr) (i32.const 19)))))
    (if (i32.eq (i32.load8_u offset=10 (local.get $ptr)) (i32.const 0x77))
      (then (local.set $result (i64.extend_i32_s
        (call $vfs_write (local.get $path) (local.get $plen) (i32.const 0) (i32.const 5)))))
      (else (local.set $result (call $vfs_read (local.get $path) (local.get $plen)))))
    (if (i64.ge_s (local.get $result) (i64.const 0x100000000))
      (then
        (i32.store8 (i32.const 16) (i32.const 0xc4))
        (i32.store8 (i32.const 17) (i32.wrap_i64 (local.get $result)))
        (memory.copy (i32.const 18)
                     (i32.wrap_i64 (i64.shr_u (local.get $result) (i64.const 32)))
                     (i32.and (i32.wrap_i64 (local.get $result)) (i32.const 0xff)))
        (return (i64.or (i64.const 0x0000001000000000)
                        (i64.add (i64.const 2) (i64.and (local.get $result) (i64.const 0xff)))))))
    (i32.store8 (i32.const 16) (i32.const 0xd3))
    (i64.store (i32.const 17) (call $be64 (local.get $result)))
    (i64.const 0x0000001000000009))
  (func $be64 (param $x i64) (result i64)
    (local $out i64) (local $i i32)
    (loop $byte
      (local.set $out (i64.or (i64.shl (local.get $out) (i64.const 8))
                              (i64.and (local.get $x) (i64.const 0xff))))
      (local.set $x (i64.shr_u (local.get $x) (i64.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $byte (i32.lt_u (local.get $i) (i32.const 8))))
    (local.get $out)))"#;

/// Writes the capsule `files` ([`FILE_GUEST`], commands `rd` and `wr`) with `grants` into
/// the capsule folder `root`.
fn files_capsule(root: &Path, grants: &[&str]) {
    let grants: Vec<String> = grants.iter().map(|g| format!("{g:?}")).collect();
    let manifest = format!(
        "[package]\nname = \"files\"\nversion = \"0.1.0\"\n\n[module]\nfile = \"m.wat\"\n\n\
         [capabilities]\ngrant = [{}]\n\n[[command]]\nname = \"rd\"\n\n[[command]]\nname = \"wr\"\n",
        grants.join(", ")
    );
    write_capsule(
        root,
        "files",
        &manifest,
        &[("m.wat", FILE_GUEST.as_bytes())],
    );
}

/// What `files` answered to `op PATH`.
async fn file_op(client: &Client, op: &str, path: &str) -> rmpv::Value {
    client
        .call::<CommandOutput>(Request::InvokeCommand {
            name: op.into(),
            args: vec![path.into()],
        })
        .await
        .unwrap_or_else(|e| panic!("{op} {path}: {e}"))
        .output
}

/// `files` reads `path`: the data, or the import's error code.
async fn read(client: &Client, path: &str) -> Result<Vec<u8>, i64> {
    match file_op(client, "rd", path).await {
        rmpv::Value::Binary(data) => Ok(data),
        other => Err(other
            .as_i64()
            .unwrap_or_else(|| panic!("rd {path}: {other}"))),
    }
}

/// `files` writes `pwned` to `path`: the import's code (0 when written).
async fn write(client: &Client, path: &str) -> i64 {
    let out = file_op(client, "wr", path).await;
    out.as_i64().unwrap_or_else(|| panic!("wr {path}: {out}"))
}

/// Polls the audit log for a denial of `access` to capsule `files`.
async fn denial(client: &Client, access: &str) -> AuditEntry {
    wait_audit(client, &format!("the denial of {access}"), |e| {
        e.actor == "capsule:files" && e.action == "deny" && e.target == access
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_apply_to_the_normalized_path_and_links_are_never_followed() {
    let d = TestDaemon::builder()
        .prepare(|home, workspace| {
            files_capsule(
                &home.join("capsules"),
                &[
                    "vfs:read:public/**",
                    "vfs:read:*/secret.txt",
                    "vfs:read:data/*/x",
                    "vfs:write:public/**",
                ],
            );
            std::fs::create_dir_all(workspace.join("public/dir")).unwrap();
            std::fs::create_dir_all(workspace.join("data")).unwrap();
            std::fs::write(workspace.join("secret.txt"), b"top secret").unwrap();
            std::fs::write(workspace.join("data/x"), b"data x").unwrap();
            std::fs::write(workspace.join("public/ok.txt"), b"public").unwrap();
            std::os::unix::fs::symlink("../secret.txt", workspace.join("public/link")).unwrap();
            std::os::unix::fs::symlink("..", workspace.join("public/up")).unwrap();
            std::os::unix::fs::symlink("dir", workspace.join("public/alias")).unwrap();
        })
        .start();
    let client = patient_client(&d).await;
    let ws = d.workspace.path();
    assert_eq!(read(&client, "public/ok.txt").await, Ok(b"public".to_vec()));
    assert_eq!(
        read(&client, "./public//ok.txt").await,
        Ok(b"public".to_vec())
    );
    // Spellings that matched the glob as written, not as opened.
    assert_eq!(read(&client, "./secret.txt").await, Err(-1));
    denial(&client, "vfs:read:secret.txt").await;
    assert_eq!(read(&client, "data//x").await, Err(-1));
    denial(&client, "vfs:read:data/x").await;
    // Links, wherever they are in the path, even to a directory inside the grant.
    for path in ["public/link", "public/up/secret.txt", "public/alias/new"] {
        assert_eq!(read(&client, path).await, Err(-1), "{path}");
    }
    let entry = denial(&client, "vfs:read:public/up/secret.txt").await;
    assert!(entry.outcome.contains("symbolic link"), "{entry:?}");
    assert_eq!(write(&client, "public/link").await, -1);
    assert_eq!(write(&client, "public/alias/new").await, -1);
    denial(&client, "vfs:write:public/link").await;
    assert_eq!(std::fs::read(ws.join("secret.txt")).unwrap(), b"top secret");
    assert!(!ws.join("public/dir/new").exists());
    // Plain paths inside the grant work.
    assert_eq!(write(&client, "public/dir/new").await, 0);
    assert_eq!(std::fs::read(ws.join("public/dir/new")).unwrap(), b"pwned");
    // Clients still follow links inside the workspace.
    let through: astrid::protocol::ReadResult = client
        .call(Request::VfsRead {
            path: "public/link".into(),
            offset: 0,
            len: None,
        })
        .await
        .unwrap();
    assert_eq!(through.data, b"top secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capsules_cannot_configure_the_daemon() {
    let d = TestDaemon::builder()
        .prepare(|home, workspace| {
            files_capsule(&home.join("capsules"), &["vfs:read:**", "vfs:write:**"]);
            std::fs::create_dir_all(workspace.join(".astrid")).unwrap();
            std::fs::write(workspace.join(".astrid/mcp.toml"), b"").unwrap();
            // A link to the home is a link: refused like any other.
            std::os::unix::fs::symlink(home, workspace.join("h")).unwrap();
        })
        .start();
    let client = patient_client(&d).await;
    let ws = d.workspace.path();
    for path in [
        ".astrid/mcp.toml",
        "./.astrid//mcp.toml",
        ".ASTRID/mcp.toml",
        ".astrid/capsules/evil/Capsule.toml",
        "h/capsules/evil/Capsule.toml",
    ] {
        assert_eq!(write(&client, path).await, -1, "{path}");
    }
    assert_eq!(read(&client, ".astrid/mcp.toml").await, Err(-1));
    assert_eq!(read(&client, "h/sessions/system.token").await, Err(-1));
    let entry = denial(&client, "vfs:write:.astrid/mcp.toml").await;
    assert!(entry.outcome.starts_with("denied"), "{entry:?}");
    assert_eq!(std::fs::read(ws.join(".astrid/mcp.toml")).unwrap(), b"");
    assert!(!ws.join(".astrid/capsules").exists());
    assert!(!d.home.path().join("capsules/evil").exists());
    // Ordinary files still work.
    assert_eq!(write(&client, "notes/n.txt").await, 0);
    assert_eq!(read(&client, "notes/n.txt").await, Ok(b"pwned".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_inside_the_workspace_is_out_of_reach() {
    // The workspace holds the home, as when it is the user's home directory and the home
    // is `~/.astrid` (here a folder of another name: `.astrid/` is refused anyway).
    let workspace = common::short_tempdir();
    let home = tempfile::Builder::new()
        .prefix("h")
        .tempdir_in(workspace.path())
        .unwrap();
    let inside = home
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    files_capsule(
        &home.path().join("capsules"),
        &["vfs:read:**", "vfs:write:**"],
    );
    let d = TestDaemon::builder()
        .home(home)
        .workspace(workspace)
        .spawn();
    d.wait_ready();
    let client = patient_client(&d).await;
    let token = format!("{inside}/sessions/system.token");
    assert_eq!(read(&client, &token).await, Err(-1));
    assert_eq!(
        read(&client, &format!("./{inside}//sessions/system.token")).await,
        Err(-1)
    );
    let evil = format!("{inside}/capsules/evil/Capsule.toml");
    assert_eq!(write(&client, &evil).await, -1);
    denial(&client, &format!("vfs:write:{evil}")).await;
    assert!(!d.home.path().join("capsules/evil").exists());
    assert_eq!(write(&client, "elsewhere.txt").await, 0);
    assert_eq!(
        std::fs::read(d.workspace.path().join("elsewhere.txt")).unwrap(),
        b"pwned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_call_of_a_long_call_is_answered() {
    // A thousand reads of a missing file in one call, each answered -2 (not found). Only
    // the first 128 used to be: the capsule's thread then spun until its deadline.
    let reads = r#"(module
  (import "astrid" "vfs_read" (func $vfs_read (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\a4done")
  (data (i32.const 48) "secret.txt")
  (func (export "astrid_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "astrid_command") (param i32 i32) (result i64) (local $n i32)
    (loop $again
      (if (i64.ne (call $vfs_read (i32.const 48) (i32.const 10)) (i64.const -2))
        (then unreachable))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $n) (i32.const 1000))))
    (i64.const 5)))"#;
    let d = TestDaemon::builder()
        .prepare(|home, _| {
            let manifest = "[limits]\ncall_timeout = \"10s\"\n\n\
                        [capabilities]\ngrant = [\"vfs:read:**\"]\n";
            hostile(home, "reads", manifest, reads);
        })
        .start();
    let client = patient_client(&d).await;
    let started = Instant::now();
    let (answer, cost) = under_attack(&d, invoke(&client, "reads")).await;
    cost.within_bounds("a thousand host calls in one call");
    assert_eq!(answer.unwrap().output, rmpv::Value::from("done"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
