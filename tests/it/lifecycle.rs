//! Lifecycle of a real daemon process: boot files and their modes, the single-instance
//! lock, stale and live sockets, SIGTERM and `Shutdown` cleanup, ephemeral and persistent
//! lifetimes, argument errors, and `state/` synced after the first boot creates its files.

use crate::common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{DEADLINE, TestDaemon, short_tempdir, wait_until};
use astrid::instance::PidFile;
use astrid::protocol::{Request, ShutdownAck};
use rustix::process::Signal;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn boot_creates_private_dirs_and_session_files() {
    let d = TestDaemon::builder().start();
    for dir in d.layout.dirs() {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let token = d.token();
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(mode(&d.files.token()), 0o600);
    assert_eq!(mode(&d.files.ready()), 0o600);
    assert_eq!(mode(&d.files.pid()), 0o600);
    assert_eq!(mode(&d.files.lock()), 0o600);
    let socket = std::fs::symlink_metadata(d.socket()).unwrap();
    assert!(socket.file_type().is_socket());
    assert_eq!(socket.permissions().mode() & 0o777, 0o600);
    let pid = PidFile::read(&d.files.pid()).unwrap();
    assert_eq!(pid.pid, d.child.id());
    assert!(pid.is_running());
    let ready = std::fs::read_to_string(d.files.ready()).unwrap();
    assert!(ready.contains(&format!("pid={}", d.child.id())), "{ready}");
    // A daily log file exists and records the boot.
    assert!(wait_until(DEADLINE, || {
        std::fs::read_dir(d.layout.logs())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("astrid.")
                    && e.path().extension().is_some_and(|x| x == "log")
                    && std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("kernel booted"))
            })
    }));
}

#[test]
fn sigterm_shuts_down_cleanly_and_removes_files() {
    let mut d = TestDaemon::builder().start();
    d.signal(Signal::TERM);
    let status = d.wait_exit(DEADLINE).expect("daemon exits after SIGTERM");
    assert!(status.success(), "{status}: {}", d.stderr());
    assert!(d.leftover_files().is_empty(), "{:?}", d.leftover_files());
}

#[test]
fn sigint_shuts_down_cleanly_too() {
    let mut d = TestDaemon::builder().start();
    d.signal(Signal::INT);
    let status = d.wait_exit(DEADLINE).expect("daemon exits after SIGINT");
    assert!(status.success(), "{status}");
    assert!(d.leftover_files().is_empty(), "{:?}", d.leftover_files());
}

#[tokio::test]
async fn shutdown_request_is_answered_before_the_daemon_exits() {
    let mut d = TestDaemon::builder().start();
    let client = d.client().await;
    let ack: ShutdownAck = client
        .call(Request::Shutdown {
            reason: "test over".into(),
        })
        .await
        .unwrap();
    assert!(ack.shutting_down);
    assert_eq!(ack.reason, "test over");
    let status = d.wait_exit(DEADLINE).expect("daemon exits after Shutdown");
    assert!(status.success(), "{status}");
    assert!(d.leftover_files().is_empty(), "{:?}", d.leftover_files());
    let log = std::fs::read_dir(d.layout.logs())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("shutdown requested: test over"), "{log}");
}

#[test]
fn a_second_instance_is_refused_and_the_first_keeps_serving() {
    let first = TestDaemon::builder().start();
    let token_before = first.token();
    let second = Command::new(common::daemon_bin())
        .arg("--home")
        .arg(first.home.path())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(3), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.child.id())),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    // The first daemon and its files are untouched.
    assert_eq!(first.token(), token_before);
    assert!(first.files.ready().exists());
    let mut raw = first.raw();
    raw.request(1, "Ping");
    let reply = raw.recv().unwrap();
    assert_eq!(common::get(&reply, "result").as_str(), Some("pong"));
}

#[test]
fn a_stale_socket_is_reclaimed() {
    let home = short_tempdir();
    let sessions = home.path().join("sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    // A socket file with nobody listening, as a crashed daemon leaves it.
    drop(UnixListener::bind(sessions.join("system.sock")).unwrap());
    let d = TestDaemon::builder().home(home).spawn();
    d.wait_ready();
    let mut raw = d.raw();
    raw.request(1, "Ping");
    assert!(raw.recv().is_some());
}

#[test]
fn a_live_socket_is_not_taken_over() {
    let home = short_tempdir();
    let sessions = home.path().join("sessions");
    std::fs::create_dir_all(&sessions).unwrap();
    // Someone else (not holding our lock) listens on the path.
    let squatter = UnixListener::bind(sessions.join("system.sock")).unwrap();
    let mut d = TestDaemon::builder().home(home).spawn();
    let status = d.wait_exit(DEADLINE).expect("boot fails");
    assert_eq!(status.code(), Some(1));
    let stderr = d.stderr();
    assert!(stderr.contains("already running"), "{stderr}");
    // The live socket is still there and still works; nothing else is left behind.
    assert!(std::os::unix::net::UnixStream::connect(sessions.join("system.sock")).is_ok());
    drop(squatter);
    let left = d.leftover_files();
    assert_eq!(left, vec!["system.sock".to_owned()], "{left:?}");
}

#[test]
fn an_ephemeral_daemon_exits_after_the_grace_when_nobody_connects() {
    let mut d = TestDaemon::builder()
        .args(&["--ephemeral", "--idle-grace", "200ms"])
        .start();
    let status = d.wait_exit(DEADLINE).expect("ephemeral daemon exits");
    assert!(status.success(), "{status}");
    assert!(d.leftover_files().is_empty(), "{:?}", d.leftover_files());
}

#[test]
fn an_ephemeral_daemon_waits_for_its_last_client_then_the_grace() {
    let mut d = TestDaemon::builder()
        .args(&["--ephemeral", "--idle-grace", "300ms"])
        .start();
    let mut raw = d.raw();
    // Keep the client connected well past the grace: the daemon must stay.
    let held = Instant::now();
    while held.elapsed() < Duration::from_millis(900) {
        raw.request(1, "Ping");
        assert!(raw.recv().is_some(), "daemon must serve a connected client");
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "exited with a client connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let left_at = Instant::now();
    drop(raw);
    let status = d.wait_exit(DEADLINE).expect("exits after the last client");
    assert!(status.success());
    assert!(
        left_at.elapsed() >= Duration::from_millis(300),
        "exited before the grace"
    );
    assert!(d.leftover_files().is_empty());
}

#[test]
fn a_persistent_daemon_never_idles_out() {
    let mut d = TestDaemon::builder()
        .args(&["--idle-grace", "100ms"])
        .start();
    {
        let mut raw = d.raw();
        raw.request(1, "Ping");
        raw.recv().unwrap();
    }
    // Ten times the grace without clients: still up and serving.
    let exited = wait_until(Duration::from_secs(1), || {
        d.child.try_wait().unwrap().is_some()
    });
    assert!(!exited, "a persistent daemon exited while idle");
    let mut raw = d.raw();
    raw.request(2, "Ping");
    assert!(raw.recv().is_some());
}

#[test]
fn bad_arguments_are_one_line_errors_with_status_2() {
    let home = short_tempdir();
    let cases: [&[&str]; 3] = [
        &["--session", "not-a-uuid"],
        &["--workspace", "/nonexistent/astrid/ws"],
        &["--frobnicate"],
    ];
    for args in cases {
        let out = Command::new(common::daemon_bin())
            .arg("--home")
            .arg(home.path())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("astrid-daemon: "), "{stderr}");
    }
    // Nothing was created for a run that never started.
    assert!(!home.path().join("sessions").exists());
}

#[test]
fn a_session_uuid_names_the_files() {
    let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let home = short_tempdir();
    let mut child = Command::new(common::daemon_bin())
        .arg("--home")
        .arg(home.path())
        .args(["--session", id, "--ephemeral", "--idle-grace", "100ms"])
        .spawn()
        .unwrap();
    let ready = home.path().join("sessions").join(format!("{id}.ready"));
    assert!(wait_until(DEADLINE, || ready.exists()
        || child.try_wait().unwrap().is_some()));
    assert!(
        home.path()
            .join("sessions")
            .join(format!("{id}.sock"))
            .exists()
    );
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_socket_path_too_long_fails_boot_cleanly() {
    let base = short_tempdir();
    let deep = base.path().join("x".repeat(100));
    std::fs::create_dir_all(&deep).unwrap();
    let out = Command::new(common::daemon_bin())
        .arg("--home")
        .arg(&deep)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("more than the 107"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(deep.join("sessions")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Index of the first call at or after `from` that opens `path`, and the descriptor it got.
fn opened_at(calls: &[&str], from: usize, path: &std::path::Path) -> Option<(usize, String)> {
    let quoted = format!("\"{}\"", path.display());
    calls.iter().enumerate().skip(from).find_map(|(i, call)| {
        (call.starts_with("openat(") && call.contains(&quoted))
            .then(|| (i, call.rsplit(" = ").next().unwrap_or("").to_owned()))
    })
}

/// Files created in `state/` at the first boot (the databases and the journal) survive a
/// crash only once the directory itself is synced: boot syncs `state/` after creating them,
/// and the home above it, before the ready file. Seen through `strace`; skipped without it.
#[test]
fn the_first_boot_syncs_state_after_creating_its_files_and_before_ready() {
    let Some(strace) = common::find_in_path("strace") else {
        eprintln!("skipped: no strace");
        return;
    };
    let home = short_tempdir();
    let workspace = short_tempdir();
    let traces = short_tempdir();
    let trace = traces.path().join("trace");
    let status = Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=openat,fsync", "-o"])
        .arg(&trace)
        .arg(common::daemon_bin())
        .arg("--home")
        .arg(home.path())
        .arg("--workspace")
        .arg(workspace.path())
        .args(["--ephemeral", "--idle-grace", "100ms"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{status:?}");
    // Lines are `<tid>  openat(AT_FDCWD, "<path>", <flags>) = <fd>` and `<tid>  fsync(<fd>) = 0`.
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = text
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, call)| call.trim_start()))
        .collect();
    let state = home.path().join("state");
    let (created, _) = opened_at(&calls, 0, &state.join("ledger.journal.1"))
        .unwrap_or_else(|| panic!("the journal was not created:\n{text}"));
    let ready = calls
        .iter()
        .position(|c| c.starts_with("openat(") && c.contains(".ready."))
        .unwrap_or_else(|| panic!("no ready file written:\n{text}"));
    for dir in [state.as_path(), home.path()] {
        let (open, fd) = opened_at(&calls, created, dir)
            .unwrap_or_else(|| panic!("{} not opened after the journal:\n{text}", dir.display()));
        let sync = format!("fsync({fd})");
        let synced = calls[open..]
            .iter()
            .position(|c| c.starts_with(&sync))
            .map(|i| open + i);
        assert!(
            synced.is_some_and(|at| at < ready),
            "{} not synced before the ready file:\n{text}",
            dir.display()
        );
    }
}
