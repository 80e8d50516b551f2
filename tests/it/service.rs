//! The daemon under a service manager, with systemd's own protocols played by the test: the
//! notify protocol and the watchdog through a datagram socket of the test's as
//! `NOTIFY_SOCKET` (the way libsystemd's tests do it), socket activation through systemd's
//! `systemd-socket-activate`, the journal's `JOURNAL_STREAM`, and the units `astrid service`
//! writes checked by `systemd-analyze verify`.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use astrid::protocol::{Fault, Request, ShutdownAck};

use crate::common::{
    DEADLINE, TestDaemon, cli_in, cli_with, daemon_bin, inject, output_text, short_tempdir,
    wait_output, wait_until,
};

/// A datagram socket standing in for systemd's notify socket: every message it receives,
/// line by line, with when it arrived.
struct NotifySocket {
    path: PathBuf,
    lines: mpsc::Receiver<(Instant, String)>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = short_tempdir();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let now = Instant::now();
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    if tx.send((now, line.to_owned())).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            path,
            lines,
            _dir: dir,
        }
    }

    /// Lines until one that `wanted` accepts (included), failing after [`DEADLINE`].
    fn until(&self, wanted: impl Fn(&str) -> bool) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((at, line)) = self.lines.recv_timeout(left) else {
                panic!("no such notification within {DEADLINE:?}; got {seen:?}");
            };
            let done = wanted(&line);
            seen.push((at, line));
            if done {
                return seen;
            }
        }
    }

    /// Every line that arrives within `span`.
    fn during(&self, span: Duration) -> Vec<(Instant, String)> {
        let end = Instant::now() + span;
        let mut seen = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            seen.push(line);
        }
        seen
    }
}

/// The longest time between two consecutive `WATCHDOG=1` in `lines`, counting from `from`.
fn longest_watchdog_gap(from: Instant, lines: &[(Instant, String)]) -> Duration {
    let mut last = from;
    let mut gap = Duration::ZERO;
    for (at, _) in lines.iter().filter(|(_, l)| l == "WATCHDOG=1") {
        gap = gap.max(at.duration_since(last));
        last = *at;
    }
    gap
}

#[tokio::test]
async fn the_daemon_tells_the_service_manager_it_is_ready_and_pings_the_watchdog_only_while_its_tree_answers()
 {
    let notify = NotifySocket::bind();
    // systemd would kill it after 600 ms without a ping: it pings every 300 ms.
    let mut d = TestDaemon::builder()
        .fault_injection()
        .envs(&[
            ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
            ("WATCHDOG_USEC", "600000"),
        ])
        .spawn();
    let boot = notify.until(|l| l == "READY=1");
    assert_eq!(boot[0].1, "STATUS=booting", "{boot:?}");
    assert!(
        d.layout.session(uuid::Uuid::nil()).ready().exists(),
        "READY=1 comes after the ready file"
    );
    let rest = notify.until(|l| l.starts_with("MAINPID="));
    assert!(
        rest.iter().any(|(_, l)| l == "STATUS=serving 0 clients"),
        "{rest:?}"
    );
    assert_eq!(rest.last().unwrap().1, format!("MAINPID={}", d.pid()));
    for _ in 0..3 {
        notify.until(|l| l == "WATCHDOG=1");
    }

    let client = d.client().await;
    notify.until(|l| l == "STATUS=serving 1 client");
    assert!(client.status().await.unwrap().service_manager);
    // Restarting it here would leave a daemon systemd does not know of.
    let out = d.cli(&["restart"]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("systemctl --user restart astrid.service"),
        "{}",
        output_text(&out)
    );
    assert!(
        d.layout.session(uuid::Uuid::nil()).ready().exists(),
        "still running"
    );

    // A wedged listener: the tree does not answer, so no ping until it does again.
    let wedged = Instant::now();
    inject(&client, "listener", Fault::Hang { millis: 3_000 }).await;
    let lines = notify.during(Duration::from_millis(4_500));
    let gap = longest_watchdog_gap(wedged, &lines);
    assert!(
        gap >= Duration::from_secs(2),
        "no ping while the listener hangs (longest gap {gap:?}): {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(at, l)| l == "WATCHDOG=1" && at.duration_since(wedged) >= Duration::from_secs(3)),
        "pings resume once it answers again: {lines:?}"
    );
    assert!(
        d.log_text().contains("no watchdog ping"),
        "the log says why"
    );

    let _: ShutdownAck = client
        .call(Request::Shutdown {
            reason: "test over".into(),
        })
        .await
        .unwrap();
    let stop = notify.until(|l| l.starts_with("STATUS=draining"));
    assert!(stop.iter().any(|(_, l)| l == "STOPPING=1"), "{stop:?}");
    assert_eq!(stop.last().unwrap().1, "STATUS=draining: test over");
    assert!(d.wait_exit(DEADLINE).is_some_and(|s| s.success()));
}

/// systemd's `systemd-socket-activate`, which `.ci/run` installs; elsewhere, its absence
/// skips the test with a note.
fn socket_activate() -> Option<&'static str> {
    const TOOL: &str = "systemd-socket-activate";
    let found = Command::new(TOOL)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{TOOL} is missing: .ci/run installs the systemd package"
    );
    if !found {
        eprintln!("{TOOL} not found: skipped (apt-get install systemd)");
    }
    found.then_some(TOOL)
}

/// A private `sessions` folder in `home`, as the daemon makes it; systemd makes it with
/// `DirectoryMode=0700`.
fn sessions(home: &Path) -> PathBuf {
    let dir = home.join("sessions");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)
        .unwrap();
    dir
}

/// `tool` listening on `socket`, to start a daemon of `home` for `workspace` at the first
/// connection, passing it the socket.
fn activate(tool: &str, socket: &Path, home: &Path, workspace: &Path, stderr: Stdio) -> Child {
    Command::new(tool)
        .arg("--listen")
        .arg(socket)
        .arg(daemon_bin())
        .arg("--home")
        .arg(home)
        .arg("--workspace")
        .arg(workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

#[test]
fn a_socket_passed_by_the_service_manager_is_served_and_outlives_the_daemon() {
    let Some(tool) = socket_activate() else {
        return;
    };
    let (home, workspace) = (short_tempdir(), short_tempdir());
    let socket = sessions(home.path()).join("system.sock");
    let mut manager = activate(tool, &socket, home.path(), workspace.path(), Stdio::null());
    assert!(
        wait_until(DEADLINE, || socket.exists()),
        "the manager listens"
    );
    let pid_file = home.path().join("sessions/system.pid");
    assert!(!pid_file.exists(), "no daemon until a client connects");

    // The CLI's connection starts the daemon, which serves it on the socket it was passed.
    let ws = workspace.path().to_str().unwrap();
    let out = cli_in(home.path(), &["-w", ws, "status", "--json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["pid"],
        manager.id(),
        "the manager's process became the daemon"
    );
    assert_eq!(status["socket"], socket.to_str().unwrap());
    let mode = std::fs::metadata(&socket).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "the daemon makes the passed socket private");

    let out = cli_in(home.path(), &["-w", ws, "stop"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(manager.wait().unwrap().success());
    assert!(
        socket.exists(),
        "the socket file is the manager's: it stays"
    );
    assert!(!pid_file.exists() && !home.path().join("sessions/system.token").exists());
    let log = std::fs::read_to_string(
        std::fs::read_dir(home.path().join("logs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "log") && !p.ends_with("daemon-boot.log"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        log.contains("using the socket the service manager passed"),
        "{log}"
    );
}

#[test]
fn a_passed_socket_that_is_not_the_session_socket_is_refused_with_the_fix() {
    let Some(tool) = socket_activate() else {
        return;
    };
    let (home, workspace) = (short_tempdir(), short_tempdir());
    let elsewhere = sessions(home.path()).join("other.sock");
    let manager = activate(
        tool,
        &elsewhere,
        home.path(),
        workspace.path(),
        Stdio::piped(),
    );
    assert!(wait_until(DEADLINE, || elsewhere.exists()));
    let _first = UnixStream::connect(&elsewhere).unwrap();
    let out = wait_output(manager, DEADLINE);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let wanted = home.path().join("sessions/system.sock");
    assert!(
        stderr.contains(&format!("ListenStream={}", wanted.display()))
            && stderr.contains("other.sock"),
        "{stderr}"
    );
}

#[tokio::test]
async fn under_the_journal_logs_go_to_stderr_with_priorities_and_not_to_files() {
    let dir = short_tempdir();
    let path = dir.path().join("journal");
    let journal = std::fs::File::create(&path).unwrap();
    let meta = journal.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let d = TestDaemon::builder()
        .fault_injection()
        .envs(&[("JOURNAL_STREAM", &stream)])
        .stderr_to(journal)
        .start();
    let client = d.client().await;
    assert!(client.status().await.unwrap().logs_to_journal);
    inject(&client, "bus", Fault::Hang { millis: 1 }).await;
    let text = || std::fs::read_to_string(&path).unwrap();
    assert!(
        wait_until(DEADLINE, || text().contains("injected fault")),
        "{}",
        text()
    );
    let text = text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>astrid_actors::kernel: ") && l.contains("kernel booted")),
        "info lines carry <6> and no timestamp: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("<4>") && l.contains("injected fault")),
        "warnings carry <4>: {text}"
    );
    assert!(
        d.log_text().is_empty(),
        "nothing is written twice, to the files"
    );

    // A stderr that is not the stream named is not the journal.
    let other = TestDaemon::builder()
        .envs(&[("JOURNAL_STREAM", &stream)])
        .start();
    let client = other.client().await;
    assert!(!client.status().await.unwrap().logs_to_journal);
    assert!(other.log_text().contains("kernel booted"));
}

/// `systemd-analyze`, which `.ci/run` installs; elsewhere, its absence skips the check.
fn verify_units(units: &[PathBuf]) {
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(units)
        .output()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing: .ci/run installs the systemd package"
        );
        eprintln!("systemd-analyze not found: units not verified");
        return;
    };
    assert!(
        out.status.success(),
        "systemd-analyze verify {units:?}: {}",
        output_text(&out)
    );
}

#[test]
fn service_install_writes_units_systemd_accepts_and_uninstall_removes_them() {
    let (home, workspace, config) = (short_tempdir(), short_tempdir(), short_tempdir());
    let env = [("XDG_CONFIG_HOME", config.path())];
    let ws = workspace.path().to_str().unwrap();
    let units = config.path().join("systemd/user");
    let service = |args: &[&str]| {
        let mut all = vec!["-w", ws, "service"];
        all.extend_from_slice(args);
        cli_with(home.path(), Path::new("."), &all, &env, None)
    };

    let out = service(&["install", "--socket-activation", "--watchdog", "10s"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let text = output_text(&out);
    assert!(
        text.contains("systemctl --user enable --now astrid.socket"),
        "{text}"
    );
    let unit = std::fs::read_to_string(units.join("astrid.service")).unwrap();
    let daemon = std::fs::canonicalize(daemon_bin()).unwrap();
    assert!(unit.contains("Type=notify\n") && unit.contains("WatchdogSec=10000ms\n"));
    assert!(
        unit.contains(&format!(
            "ExecStart=\"{}\" \"--home\" \"{}\" \"--workspace\" \"{ws}\"\n",
            daemon.display(),
            home.path().display()
        )),
        "{unit}"
    );
    let socket = std::fs::read_to_string(units.join("astrid.socket")).unwrap();
    let session_socket = home.path().join("sessions/system.sock");
    assert!(
        socket.contains(&format!("ListenStream={}\n", session_socket.display())),
        "{socket}"
    );
    verify_units(&[units.join("astrid.service"), units.join("astrid.socket")]);

    // The same again changes nothing; other flags need --force, which drops the socket unit.
    let again = service(&["install", "--socket-activation", "--watchdog", "10s"]);
    assert!(
        output_text(&again).contains("unchanged"),
        "{}",
        output_text(&again)
    );
    let refused = service(&["install"]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("--force"),
        "{}",
        output_text(&refused)
    );
    let forced = service(&["install", "--force", "--allow-fault-injection"]);
    assert!(forced.status.success(), "{}", output_text(&forced));
    assert!(!units.join("astrid.socket").exists());
    let unit = std::fs::read_to_string(units.join("astrid.service")).unwrap();
    assert!(
        unit.contains("\"--allow-fault-injection\"") && unit.contains("WantedBy=default.target")
    );
    verify_units(&[units.join("astrid.service")]);

    let listed = service(&["status", "--json"]);
    let states: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(states[0]["name"], "astrid.service");
    assert_eq!(states[0]["installed"], true);
    assert_eq!(states[1]["installed"], false);

    let out = service(&["uninstall"]);
    assert!(
        output_text(&out).contains("disable --now"),
        "{}",
        output_text(&out)
    );
    assert!(!units.join("astrid.service").exists());
    let out = service(&["uninstall"]);
    assert!(out.status.success() && output_text(&out).contains("no astrid units"));
}
