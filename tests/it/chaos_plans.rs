//! `astrid chaos PLAN.toml` through the real CLI: every plan shipped in `examples/chaos/`
//! runs (shortened with `--duration`) against a daemon of its own (`--fresh`) and its JSON
//! report is checked; a plan broken on purpose exits 3 naming the invariant; plan files with
//! errors are refused naming the key; a daemon without fault injection is refused at once;
//! and a plan runs against the workspace's own daemon, as without `--fresh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{
    TestDaemon, cli_bin, example_capsule, mcp_test_server, output_text, short_tempdir, wait_output,
};

/// A shipped plan: `examples/chaos/<name>`.
fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/chaos")
        .join(name)
}

/// How long one run may take: a few seconds of plan, a daemon's boot (compiling the plan's
/// capsules), the settling and checks after the run, on a machine busy with the other tests
/// (the wait for its turn is not counted).
const RUN_DEADLINE: Duration = Duration::from_mins(1);

/// Held by each run of a plan with a daemon of its own: the plans load the machine on
/// purpose (hundreds of requests a second, crash storms), so they run one at a time, not
/// all at once beside the other tests.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `astrid chaos` with `args` in a temporary home, from the repository's root, within
/// [`RUN_DEADLINE`] (one at a time: see [`ONE_AT_A_TIME`]).
fn chaos(args: &[&str]) -> Output {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let home = short_tempdir();
    let child = Command::new(cli_bin())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--home")
        .arg(home.path())
        .arg("chaos")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, RUN_DEADLINE)
}

/// The JSON report a run printed.
fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", output_text(out)))
}

/// The names of the invariants that held, and of those that failed.
fn invariants(report: &Value) -> (Vec<String>, Vec<String>) {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for i in report["invariants"].as_array().unwrap() {
        let name = i["name"].as_str().unwrap().to_owned();
        if i["ok"] == Value::Bool(true) {
            ok.push(name);
        } else {
            failed.push(name);
        }
    }
    (ok, failed)
}

const ALL_INVARIANTS: [&str; 5] = [
    "no_request_unanswered",
    "no_acknowledged_write_lost",
    "audit_chain_verifies",
    "daemon_up",
    "restarts_equal_crashes",
];

/// Runs a shipped plan for `secs` seconds with `--fresh --json`; checks that it passed and
/// returns its report.
fn run_shipped(name: &str, secs: u32) -> Value {
    let plan = shipped(name);
    let duration = format!("{secs}s");
    let out = chaos(&[
        plan.to_str().unwrap(),
        "--fresh",
        "--json",
        "--duration",
        &duration,
    ]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{name}: {}", output_text(&out));
    let (ok, failed) = invariants(&r);
    assert!(failed.is_empty(), "{name}: {failed:?}\n{r:#}");
    assert_eq!(ok, ALL_INVARIANTS, "{name}");
    assert_eq!(r["ok"], Value::Bool(true));
    let requests = &r["requests"];
    assert!(requests["sent"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(requests["sent"], requests["answered"], "{r:#}");
    assert_eq!(requests["unanswered"], 0);
    // `--json` prints the report and nothing else: no progress lines.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    r
}

/// The restarts the report counted for `name`, and how many it expected.
fn restarts(report: &Value, name: &str) -> (u64, u64) {
    let line = report["restarts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no restarts of {name}: {report:#}"));
    (
        line["restarts"].as_u64().unwrap(),
        line["expected"].as_u64().unwrap(),
    )
}

#[test]
fn the_crash_storm_plan_passes_and_counts_a_restart_per_crash() {
    let r = run_shipped("crash-storm.toml", 3);
    assert_eq!(r["seed"], 16);
    let faults = &r["faults"];
    let injected = faults["injected"].as_u64().unwrap();
    assert!(injected >= 5, "{faults:#}");
    // Every injected fault is a crash here (trap, panic, stop), and each recovered (but
    // perhaps the last ones, if the run ended first).
    assert_eq!(r["recovery"]["crashes"].as_u64().unwrap(), injected);
    for fault in faults["list"].as_array().unwrap() {
        if fault["outcome"] == "injected" && fault["answered_ms"].as_u64().unwrap() < 2500 {
            assert!(fault["recovery_ms"].as_u64().is_some(), "{fault:#}");
        }
    }
    let (storm, expected) = restarts(&r, "capsule:storm");
    assert_eq!(storm, expected);
    assert!(storm >= 4, "{r:#}");
    assert_eq!(restarts(&r, "capsule:notes"), (1, 1), "{r:#}");
    // The capsule nobody faults never failed.
    let echo = r["workload"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"] == "/echo {client} {n}")
        .unwrap();
    assert_eq!(echo["sent"], echo["ok"], "{echo:#}");
    // Acknowledged keys and notes were checked.
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{checks:#?}");
    assert!(checks.iter().all(|c| c["ok"] == Value::Bool(true)));
    let latency = &r["latency"];
    assert!(latency["all"]["p50_us"].as_u64().is_some(), "{latency:#}");
    assert!(latency["faults_active"]["count"].as_u64().unwrap() > 0);
}

#[test]
fn the_self_crash_plan_counts_the_workloads_own_crashes() {
    let r = run_shipped("self-crash.toml", 4);
    assert_eq!(r["faults"]["scheduled"], 0);
    // At 1.5 calls a second, calls 4 (at 2 s) crashes the capsule: one restart.
    let (count, expected) = restarts(&r, "capsule:crash-after");
    assert_eq!(count, expected);
    assert!(count >= 1, "{r:#}");
    assert_eq!(
        r["requests"]["errors"]["capsule_crashed"].as_u64(),
        Some(count),
        "{r:#}"
    );
}

#[test]
fn the_stalled_store_plan_loses_no_acknowledged_key() {
    let r = run_shipped("stalled-store.toml", 3);
    // The hang at 2 s: the panic at 5 s is past the shortened run, so not scheduled.
    let list = r["faults"]["list"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["target"], "store");
    assert_eq!(
        list[0]["wire"],
        serde_json::json!({"hang": {"millis": 300}})
    );
    assert_eq!(list[0]["crash"], Value::Bool(false));
    assert_eq!(r["faults"]["scheduled"], 1);
    let checks = r["checks"].as_array().unwrap();
    assert!(
        checks[0]["what"]
            .as_str()
            .unwrap()
            .starts_with("kv_put slow/{client}/{n}: "),
        "{checks:#?}"
    );
    // Requests caught in the hang waited for it.
    let max = r["latency"]["faults_active"]["max_us"].as_u64().unwrap();
    assert!(max >= 200_000, "{:#}", r["latency"]);
}

/// The wire form of each fault a report lists as injected.
fn wires(report: &Value) -> Vec<&Value> {
    report["faults"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["wire"])
        .collect()
}

#[test]
fn the_slow_disk_plan_delays_and_fails_storage_and_loses_no_acknowledged_write() {
    let r = run_shipped("slow-disk.toml", 4);
    let wires = wires(&r);
    assert_eq!(
        wires,
        [
            &serde_json::json!({"delay": {"millis": 20, "for_millis": 2000}}),
            &serde_json::json!({"storage": {"op": "fsync", "times": 1}}),
        ]
    );
    assert_eq!(r["faults"]["injected"], 2, "{r:#}");
    // Neither kind is a crash: nothing restarted.
    assert_eq!(r["restarts"], serde_json::json!([]), "{r:#}");
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{checks:#?}");
    assert!(r["latency"]["faults_active"]["count"].as_u64().unwrap() > 0);
}

#[test]
fn the_flaky_host_plan_fails_host_calls_and_loses_no_acknowledged_note() {
    let r = run_shipped("flaky-host.toml", 3);
    let wires = wires(&r);
    assert!(
        wires.iter().any(|w| w["import"]["import"] == "kv_put"),
        "{wires:#?}"
    );
    // The failed host calls made some commands fail (`capsule_error`), never a crash.
    assert!(
        r["requests"]["errors"]["capsule_error"].as_u64() > Some(0),
        "{r:#}"
    );
    assert_eq!(r["restarts"], serde_json::json!([]), "{r:#}");
}

#[test]
fn the_flaky_mcp_plan_counts_a_killed_server_as_a_crash_of_its_own() {
    // The plan, with the example server and capsule where this build keeps them.
    let text = std::fs::read_to_string(shipped("flaky-mcp.toml"))
        .unwrap()
        .replace(
            "../../target/debug/examples/mcp-test-server",
            mcp_test_server().to_str().unwrap(),
        )
        .replace(
            "\"../capsules/mcp-echo\"",
            &format!("{:?}", example_capsule("mcp-echo").to_str().unwrap()),
        );
    let (_dir, plan) = plan_file(&text);
    let out = chaos(&[
        plan.to_str().unwrap(),
        "--fresh",
        "--json",
        "--duration",
        "5s",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let r = report(&out);
    assert_eq!(invariants(&r).0, ALL_INVARIANTS, "{r:#}");
    assert_eq!(r["requests"]["unanswered"], 0);
    // The delay at 1 s and the kill at 3 s.
    assert_eq!(r["faults"]["injected"], 2, "{r:#}");
    let server = r["restarts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "mcp:test")
        .unwrap_or_else(|| panic!("mcp:test did not restart: {r:#}"));
    assert_eq!(server["restarts"], 1, "{server:#}");
    assert_eq!(server["crash_faults"], 0);
    assert_eq!(server["own_crashes"], 1);
    assert!(
        !server["own_reasons"].as_array().unwrap().is_empty(),
        "{server:#}"
    );
}

#[test]
fn a_capsule_that_loses_acknowledged_writes_fails_the_plan_with_status_3() {
    let plan = shipped("lost-writes.toml");
    let out = chaos(&[
        plan.to_str().unwrap(),
        "--fresh",
        "--json",
        "--duration",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    let r = report(&out);
    let (_, failed) = invariants(&r);
    assert_eq!(failed, ["no_acknowledged_write_lost"], "{r:#}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invariants failed: no_acknowledged_write_lost"),
        "{stderr}"
    );
    let check = &r["checks"][0];
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .starts_with("answered `0`, not `"),
        "{check:#}"
    );
    // Text by default: the verdict names the invariant.
    let out = chaos(&[plan.to_str().unwrap(), "--fresh", "-q", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL no_acknowledged_write_lost: /forget-count"),
        "{text}"
    );
    assert!(
        text.ends_with("failed: no_acknowledged_write_lost\n"),
        "{text}"
    );
}

/// Writes `text` as a plan in a fresh folder; returns the folder (kept alive) and the path.
fn plan_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = short_tempdir();
    let path = dir.path().join("plan.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn plan_file_errors_name_the_file_and_the_key() {
    let cases = [
        (
            "duration = \"2s\"\ncolour = \"red\"\n[[workload]]\nrequest = \"ping\"\n",
            "`colour`: unknown field `colour`",
        ),
        (
            "duration = \"fortnight\"\n[[workload]]\nrequest = \"ping\"\n",
            "`duration`: `fortnight` is not a duration",
        ),
        (
            "duration = \"2s\"\n[[workload]]\nrequest = \"ping\"\nclients = 1000\n",
            "`workload[0].clients`: 1000 is outside 1..=64",
        ),
        (
            "duration = \"2s\"\n[[workload]]\nrequest = \"ping\"\n\
             [[fault]]\ntarget = \"bus\"\nfault = \"panic\"\nevery = \"10ms\"\n",
            "fault[0] schedules more than 10000 faults",
        ),
    ];
    for (text, want) in cases {
        let (_dir, path) = plan_file(text);
        let out = chaos(&[path.to_str().unwrap(), "--duration", "5m"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {stderr}");
        assert!(
            stderr.starts_with(&format!("astrid: {}: ", path.display())),
            "{stderr}"
        );
        assert!(
            stderr.contains(want),
            "{text}\n got: {stderr}\nwant: {want}"
        );
        assert!(out.stdout.is_empty());
    }
    let out = chaos(&["/nonexistent/plan.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(output_text(&out).contains("cannot read the plan /nonexistent/plan.toml"));
    let (_dir, path) = plan_file("duration = \"2s\"\n[[workload]]\nrequest = \"ping\"\n");
    let out = chaos(&[path.to_str().unwrap(), "--duration", "11m"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output_text(&out).contains("--duration 11m: outside 100ms..=10m"),
        "{}",
        output_text(&out)
    );
}

const ECHO_PLAN: &str = "seed = 5\nduration = \"1s\"\n\
    [[workload]]\ncommand = \"/echo {n}\"\nclients = 2\nrate = 20\n\
    [[workload]]\nrequest = \"kv_put\"\nkey = \"k/{client}/{n}\"\n\
    [[workload]]\nrequest = \"publish\"\ntopic = \"user.chaos\"\n\
    [[workload]]\nrequest = \"ping\"\n\
    [[fault]]\ntarget = \"capsule:echo\"\nfault = { hang = { millis = 100 } }\nat = [\"300ms\"]\n";

#[test]
fn a_daemon_that_refuses_faults_stops_the_run_at_once() {
    let d = TestDaemon::builder().capsules(&["echo"]).start();
    let (_dir, path) = plan_file(ECHO_PLAN);
    let out = d.cli(&["chaos", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not accept faults (fault_injection_disabled)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("astrid start --allow-fault-injection"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no report: {}", output_text(&out));
}

#[test]
fn a_plan_runs_against_the_workspaces_daemon() {
    let d = TestDaemon::builder()
        .fault_injection()
        .capsules(&["echo"])
        .start();
    let (_dir, path) = plan_file(ECHO_PLAN);
    let out = d.cli(&["chaos", path.to_str().unwrap(), "--json", "--seed", "9"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let r = report(&out);
    assert_eq!(r["seed"], 9, "--seed wins over the plan's");
    assert_eq!(r["faults"]["injected"], 1);
    assert_eq!(r["faults"]["list"][0]["fault"], "hang:100ms");
    let labels: Vec<&str> = r["workload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["workload"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "/echo {n}",
            "kv_put k/{client}/{n}",
            "publish user.chaos",
            "ping"
        ]
    );
    for w in r["workload"].as_array().unwrap() {
        assert!(w["ok"].as_u64().unwrap() > 0, "{w:#}");
    }
    // A hang is not a crash: nothing restarted.
    assert_eq!(r["restarts"], serde_json::json!([]));
    // The daemon is the workspace's: still up after the run.
    assert!(d.cli(&["status"]).status.success());

    // A plan whose capsule or target is not there is refused before anything runs.
    let (_dir2, missing) =
        plan_file("duration = \"1s\"\n[[workload]]\ncommand = \"/note-add x\"\n");
    let out = d.cli(&["chaos", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output_text(&out).contains("`workload[0].command`: no command `note-add`"),
        "{}",
        output_text(&out)
    );
    let (_dir4, mcp) = plan_file(
        "duration = \"1s\"\n[[mcp]]\nname = \"test\"\ncommand = \"nowhere\"\n\
         [[workload]]\nrequest = \"ping\"\n",
    );
    let out = d.cli(&["chaos", mcp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        output_text(&out).contains("`mcp[0]`: MCP server `test` is not running (not configured)"),
        "{}",
        output_text(&out)
    );
    let (_dir3, target) = plan_file(
        "duration = \"1s\"\n[[workload]]\nrequest = \"ping\"\n\
         [[fault]]\ntarget = \"capsule:nope\"\nfault = \"trap\"\nat = [\"0s\"]\n",
    );
    let out = d.cli(&["chaos", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = output_text(&out);
    assert!(
        text.contains("`fault[0].target`: no actor `capsule:nope`")
            && text.contains("capsule:echo"),
        "{text}"
    );
}
