//! `astrid doctor`: a healthy home passes (with its daemon running, and after it stopped,
//! the audit chain read offline); a broken home reports each of its failures with the fix
//! and exits 1; a missing home is reported, not created; a ledger another session's daemon
//! holds is not checked, and the fix names that session.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::common::{
    DEADLINE, TestDaemon, cli_at, copy_capsule, example_capsule, find_in_path, output_text,
    short_tempdir, tamper, wait_until, write_capsule,
};

/// `astrid doctor` (with `--json` when asked) for `home` and `workspace`.
fn doctor(home: &Path, workspace: &Path, json: bool) -> Output {
    let ws = workspace.to_str().unwrap();
    let mut args = vec!["-w", ws, "doctor"];
    if json {
        args.push("--json");
    }
    cli_at(home, workspace, &args)
}

/// The checks of a `--json` run.
fn checks(out: &Output) -> Vec<Value> {
    let parsed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", output_text(out)));
    let Value::Array(all) = parsed else {
        panic!("not an array: {parsed}")
    };
    for c in &all {
        for field in ["check", "status", "detail", "fix"] {
            assert!(c.get(field).is_some(), "no `{field}` in {c}");
        }
    }
    all
}

/// The status of every check named `name`.
fn statuses<'a>(all: &'a [Value], name: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|c| c["check"] == name)
        .map(|c| c["status"].as_str().unwrap())
        .collect()
}

/// The check named `name` whose detail holds `needle`; panics naming what was found.
#[track_caller]
fn finding<'a>(all: &'a [Value], name: &str, needle: &str) -> &'a Value {
    all.iter()
        .find(|c| c["check"] == name && c["detail"].as_str().unwrap().contains(needle))
        .unwrap_or_else(|| panic!("no `{name}` check saying `{needle}` in {all:#?}"))
}

fn sleep_server() -> String {
    let sleep = find_in_path("sleep").expect("sleep in PATH");
    format!(
        "[[server]]\nname = \"sleeper\"\ncommand = \"{}\"\nargs = [\"1000\"]\n",
        sleep.display()
    )
}

#[test]
fn a_healthy_home_passes_with_and_without_its_daemon() {
    let mut d = TestDaemon::builder()
        .capsules(&["echo"])
        .mcp(sleep_server())
        .start();
    let out = doctor(d.home.path(), d.workspace.path(), false);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("\nfail "), "{text}");
    assert!(text.contains("0 failed"), "{text}");

    let out = doctor(d.home.path(), d.workspace.path(), true);
    assert!(out.status.success(), "{}", output_text(&out));
    let all = checks(&out);
    for name in [
        "home",
        "sessions",
        "config",
        "capsules",
        "mcp.toml",
        "trust",
        "mcp commands",
        "audit chain",
        "ledger size",
    ] {
        assert_eq!(statuses(&all, name), ["pass"], "{name}: {all:#?}");
    }
    for name in ["open files", "disk"] {
        assert_eq!(statuses(&all, name).len(), 1, "{name}: {all:#?}");
        assert_ne!(statuses(&all, name), ["fail"], "{name}: {all:#?}");
    }
    finding(&all, "sessions", "daemons running: system");
    finding(&all, "capsules", "1 capsule manifests");
    finding(&all, "mcp commands", "sleeper");
    finding(&all, "audit chain", "verified by the running daemon");

    // Stopped cleanly: the chain is read from the database, opened read-only.
    assert!(d.terminate(DEADLINE).unwrap().success());
    let out = doctor(d.home.path(), d.workspace.path(), true);
    assert!(out.status.success(), "{}", output_text(&out));
    let all = checks(&out);
    finding(&all, "audit chain", "checked here, read-only");
    finding(&all, "sessions", "no session files");
    assert_eq!(statuses(&all, "audit chain"), ["pass"]);
}

#[test]
fn a_broken_home_reports_each_failure_with_its_fix() {
    // A home a daemon used, so that it has an audit log to break.
    let mut d = TestDaemon::builder().start();
    let put = d.cli(&["kv", "put", "k", "v"]);
    assert!(put.status.success(), "{}", output_text(&put));
    let tail = d.cli(&["audit", "tail", "-n", "1", "--json"]);
    let entries: Value = serde_json::from_slice(&tail.stdout).unwrap();
    let seq = entries[0]["seq"].as_u64().unwrap();
    assert!(d.terminate(DEADLINE).unwrap().success());
    let home = d.home.path().to_owned();
    let ws = d.workspace.path().to_owned();
    tamper(&home.join("state/ledger.redb"), seq, "forged");

    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A daemon killed long ago: its pid file, and its socket (bound, then let go).
    std::fs::write(
        home.join("sessions/system.pid"),
        "999999999\n/nonexistent\n",
    )
    .unwrap();
    drop(std::os::unix::net::UnixListener::bind(home.join("sessions/system.sock")).unwrap());
    write_capsule(&home.join("capsules"), "bad", "[package]\nname = 3\n", &[]);
    std::fs::write(
        home.join("mcp.toml"),
        "[[server]]\nname = \"broken\"\n\n\
         [[server]]\nname = \"missing\"\ncommand = \"astrid-doctor-no-such-program\"\n",
    )
    .unwrap();
    std::fs::write(home.join("config.toml"), "max_connections = \"lots\"\n").unwrap();
    copy_capsule(&example_capsule("echo"), &ws.join(".astrid/capsules"));

    let out = doctor(&home, &ws, false);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for needle in [
        "mode 0755",
        "fix: chmod 700",
        "system.pid, system.sock",
        "fix: `astrid stop` removes them",
        "capsule `bad` will not load",
        "fix: correct",
        "server `broken` will not run",
        "`astrid mcp reload`",
        "`astrid-doctor-no-such-program` is not found in PATH",
        "is not trusted",
        "fix: review",
        "`astrid trust",
        "invalid value 'lots'",
        "broken at entry",
        "astrid: 6 checks failed",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }

    let out = doctor(&home, &ws, true);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let all = checks(&out);
    let expect = [
        ("home", "mode 0755", "fail"),
        ("sessions", "system.pid, system.sock", "warn"),
        ("capsules", "`bad`", "fail"),
        ("mcp.toml", "`broken`", "fail"),
        ("mcp commands", "astrid-doctor-no-such-program", "fail"),
        ("trust", "not trusted", "warn"),
        ("config", "'lots'", "fail"),
        ("audit chain", &format!("broken at entry {seq}"), "fail"),
    ];
    for (name, needle, status) in expect {
        let c = finding(&all, name, needle);
        assert_eq!(c["status"], status, "{c}");
        assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{c}");
    }
    for c in all.iter().filter(|c| c["status"] == "pass") {
        assert!(c["fix"].is_null(), "{c}");
    }
}

#[test]
fn a_missing_home_is_reported_and_not_created() {
    let tmp = short_tempdir();
    let home = tmp.path().join("none");
    let out = doctor(&home, tmp.path(), true);
    assert!(out.status.success(), "{}", output_text(&out));
    let all = checks(&out);
    let c = finding(&all, "home", "does not exist");
    assert_eq!(c["status"], "warn");
    assert!(!home.exists(), "doctor created the home");
}

#[test]
fn a_chain_held_by_another_session_s_daemon_is_not_checked_and_the_fix_names_it() {
    let session = "6f1c2a3e-0000-4000-8000-00000000d0c7";
    let d = TestDaemon::builder().args(&["--session", session]).spawn();
    let ready = d
        .layout
        .session(uuid::Uuid::parse_str(session).unwrap())
        .ready();
    assert!(wait_until(DEADLINE, || ready.exists()), "not ready");
    // The system session's doctor: no daemon of its own to ask, and the database is held.
    let out = doctor(d.home.path(), d.workspace.path(), true);
    assert!(out.status.success(), "{}", output_text(&out));
    let all = checks(&out);
    finding(&all, "sessions", &format!("daemons running: {session}"));
    let c = finding(&all, "audit chain", "not checked");
    assert_eq!(c["status"], "warn", "{c}");
    let fix = c["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("astrid -s {session} audit verify")),
        "{fix}"
    );
}
