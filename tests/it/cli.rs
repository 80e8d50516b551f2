//! The `astrid` command-line client end to end, against real `astrid-daemon` processes:
//! starting an ephemeral daemon on demand (and its idle exit), `start` and `stop` of a
//! persistent daemon (gracefully, and by force when the daemon is wedged), the one-shot
//! commands in text and JSON, events and publishing, fault injection, the interactive
//! session, boot failures, and concurrent starts.
//!
//! Every daemon a test starts through the CLI is found by its `--home` in `/proc` and killed
//! when the test's [`Home`] is dropped, so a failing test leaves no process behind.

use crate::common;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    DEADLINE, TestDaemon, cli_bin, cli_in, daemon_bin, files_in, poll, short_tempdir, wait_until,
};
use astrid::instance::PidFile;
use astrid::paths::{HomeLayout, SessionFiles};
use astrid::protocol::{Request, Subscribed};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::{Value, json};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the command succeeded and returns its stdout.
#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "astrid failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// Asserts the command failed with exit status 1 and returns its stderr.
#[track_caller]
fn fails(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit status 1:\nstdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    stderr(out)
}

/// Asserts success and parses stdout as one JSON document.
#[track_caller]
fn json_of(out: &Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The daemon binary as pid files record it (canonical).
fn daemon_exe() -> PathBuf {
    std::fs::canonicalize(daemon_bin()).unwrap()
}

/// The pid-file view of a daemon process, for `is_running`.
fn daemon_pid(pid: u32) -> PidFile {
    PidFile {
        pid,
        exe: daemon_exe(),
    }
}

/// Live (non-zombie) `astrid-daemon` processes started with `--home <home>`.
fn daemons_of(home: &Path) -> Vec<PidFile> {
    let home = home.as_os_str().as_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let serves = args.windows(2).any(|w| w[0] == b"--home" && w[1] == home);
        let daemon = daemon_pid(pid);
        if serves && daemon.is_running() {
            found.push(daemon);
        }
    }
    found
}

fn sigkill(daemon: &PidFile) {
    if daemon.is_running()
        && let Some(pid) = i32::try_from(daemon.pid).ok().and_then(Pid::from_raw)
    {
        let _ = kill_process(pid, Signal::KILL);
    }
}

/// An Astrid home and a workspace for daemons the CLI starts by itself. Dropping it kills
/// every daemon still serving the home.
struct Home {
    root: PathBuf,
    workspace: TempDir,
    _base: TempDir,
}

impl Home {
    fn new() -> Self {
        let base = short_tempdir();
        Self {
            root: base.path().to_owned(),
            workspace: short_tempdir(),
            _base: base,
        }
    }

    /// A home whose socket path is longer than a Unix socket address allows.
    fn too_long() -> Self {
        let base = short_tempdir();
        let root = base.path().join("x".repeat(100));
        Self {
            root,
            workspace: short_tempdir(),
            _base: base,
        }
    }

    fn path(&self) -> &Path {
        &self.root
    }

    fn files(&self) -> SessionFiles {
        HomeLayout::new(self.path()).session(uuid::Uuid::nil())
    }

    /// The workspace as the daemon reports it (canonical).
    fn workspace(&self) -> String {
        std::fs::canonicalize(self.workspace.path())
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn session_files(&self) -> Vec<String> {
        files_in(&self.path().join("sessions"))
    }

    /// Runs `astrid --home <home> --workspace <ws> <args>` with a deadline.
    fn cli(&self, args: &[&str]) -> Output {
        let ws = self.workspace.path().to_str().unwrap();
        let mut all = vec!["--workspace", ws];
        all.extend_from_slice(args);
        cli_in(self.path(), &all)
    }

    /// The same command, to spawn in the background.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = cli_command(self.path(), args);
        command.arg("--workspace").arg(self.workspace.path());
        command
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        drop(Reaper(self.root.clone()));
    }
}

/// Kills every daemon still serving a home when dropped.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for daemon in daemons_of(&self.0) {
            sigkill(&daemon);
        }
    }
}

/// `astrid --home <home> <args>` with stdout and stderr piped and stdin closed.
fn cli_command(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(cli_bin());
    command
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A CLI process running in the background; killed if the test ends before it does.
struct Background(Option<Child>);

impl Background {
    fn spawn(mut command: Command) -> Self {
        Self(Some(command.spawn().unwrap()))
    }

    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    fn exited(&mut self) -> bool {
        self.child().try_wait().unwrap().is_some()
    }

    /// Waits up to `timeout` for the process to exit. `Err` carries what it printed
    /// before it was killed for overrunning.
    fn finish(mut self, timeout: Duration) -> Result<Output, Output> {
        let mut child = self.0.take().unwrap();
        let exited = poll(timeout, || child.try_wait().unwrap().ok_or(()));
        if exited.is_err() {
            let _ = child.kill();
            return Err(child.wait_with_output().unwrap());
        }
        Ok(child.wait_with_output().unwrap())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the interactive session with `input` on stdin. With `close_stdin`, stdin reaches
/// EOF after the input, as when a file is piped in; otherwise it stays open, as a terminal
/// does.
fn chat(
    d: &TestDaemon,
    input: &str,
    close_stdin: bool,
    timeout: Duration,
) -> Result<Output, Output> {
    let ws = d.workspace.path().to_str().unwrap();
    let mut command = cli_command(d.home.path(), &["--workspace", ws]);
    command.stdin(Stdio::piped());
    let mut session = Background::spawn(command);
    let mut stdin = session.child().stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let keep_open = if close_stdin {
        drop(stdin);
        None
    } else {
        Some(stdin)
    };
    let result = session.finish(timeout);
    drop(keep_open);
    result
}

/// The value of a `key  value` row in `astrid status` output.
fn status_row<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let line = line.trim_start();
        let rest = line.strip_prefix(key)?;
        rest.starts_with(' ').then(|| rest.trim())
    })
}

/// A node of `astrid ps --json` by name, searched depth first.
fn find_node<'a>(node: &'a Value, name: &str) -> Option<&'a Value> {
    if node["name"] == name {
        return Some(node);
    }
    node["children"]
        .as_array()?
        .iter()
        .find_map(|c| find_node(c, name))
}

fn capsule<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|c| c["name"] == name)
}

fn write_capsule(root: &Path, name: &str, extra: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Capsule.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\n{extra}\n[module]\nfile = \"{name}.wat\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{name}.wat")), common::ECHO_WAT).unwrap();
    dir
}

fn canonical(path: &str) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Ephemeral daemons started on demand
// ---------------------------------------------------------------------------------------

#[test]
fn status_without_a_daemon_starts_an_ephemeral_one_that_idles_out() {
    let home = Home::new();
    assert!(daemons_of(home.path()).is_empty());

    let text = ok(&home.cli(&["--idle-grace", "300ms", "status"]));
    assert!(text.contains("ephemeral"), "{text}");
    assert!(text.contains("300ms"), "the grace is shown: {text}");
    assert_eq!(
        status_row(&text, "workspace"),
        Some(home.workspace().as_str()),
        "{text}"
    );
    let pid: u32 = status_row(&text, "pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid row: {text}"));
    let first = daemon_pid(pid);
    // The daemon it started lives on its own and leaves after the grace, files and all.
    assert!(
        wait_until(DEADLINE, || !first.is_alive()
            && home.session_files().is_empty()),
        "the ephemeral daemon {pid} did not idle out: running={}, files={:?}",
        first.is_running(),
        home.session_files()
    );
    let boot_log = home.path().join("logs").join("daemon-boot.log");
    assert!(boot_log.is_file(), "{}", boot_log.display());

    // The same with --json, from an empty home again.
    let status = json_of(&home.cli(&["--idle-grace", "300ms", "--json", "status"]));
    assert_eq!(status["ephemeral"], json!(true), "{status}");
    assert_eq!(status["idle_grace_ms"], json!(300), "{status}");
    assert_eq!(status["workspace"], json!(home.workspace()), "{status}");
    assert!(
        capsule(&status["capsules"], "astrid-capsule-cli").is_some(),
        "{status}"
    );
    let pid = u32::try_from(status["pid"].as_u64().expect("pid")).unwrap();
    let second = daemon_pid(pid);
    assert!(
        wait_until(DEADLINE, || !second.is_alive()
            && home.session_files().is_empty()),
        "the second ephemeral daemon {pid} did not idle out: files={:?}",
        home.session_files()
    );
    assert!(daemons_of(home.path()).is_empty());
}

// ---------------------------------------------------------------------------------------
// start / stop
// ---------------------------------------------------------------------------------------

#[test]
fn restart_starts_the_daemon_again_in_the_same_mode() {
    let home = Home::new();
    ok(&home.cli(&["start", "--allow-fault-injection"]));
    let first = PidFile::read(&home.files().pid()).unwrap();
    let text = ok(&home.cli(&["restart"]));
    assert!(
        text.contains("restarted")
            && text.contains(&format!("was pid {}", first.pid))
            && text.contains("persistent, fault injection allowed"),
        "{text}"
    );
    let second = PidFile::read(&home.files().pid()).unwrap();
    assert_ne!(second.pid, first.pid);
    assert!(!first.is_alive(), "the first daemon is gone");
    let status = json_of(&home.cli(&["--json", "status"]));
    assert_eq!(status["fault_injection"], json!(true), "{status}");
    assert_eq!(status["ephemeral"], json!(false), "{status}");
    ok(&home.cli(&["stop"]));

    // With none running, a persistent one is started.
    let text = ok(&home.cli(&["restart"]));
    assert!(
        text.contains("none was running") && text.contains("persistent"),
        "{text}"
    );
    let status = json_of(&home.cli(&["--json", "status"]));
    assert_eq!(status["fault_injection"], json!(false), "{status}");
    ok(&home.cli(&["stop"]));
}

#[test]
fn start_runs_a_persistent_daemon_until_stop() {
    let home = Home::new();
    let text = ok(&home.cli(&["--idle-grace", "100ms", "start"]));
    assert!(text.contains("started"), "{text}");
    assert!(text.contains("persistent"), "{text}");
    let daemon = PidFile::read(&home.files().pid()).unwrap();
    assert!(daemon.is_running());
    assert!(text.contains(&format!("pid {}", daemon.pid)), "{text}");

    let again = ok(&home.cli(&["start"]));
    assert!(again.contains("already running"), "{again}");
    assert!(again.contains(&format!("pid {}", daemon.pid)), "{again}");

    let status = json_of(&home.cli(&["--json", "status"]));
    assert_eq!(status["ephemeral"], json!(false), "{status}");
    assert_eq!(status["pid"], json!(daemon.pid), "{status}");

    // Many times the grace with no client: a persistent daemon stays.
    let exited = wait_until(Duration::from_millis(800), || !daemon.is_alive());
    assert!(!exited, "a persistent daemon exited while idle");
    assert_eq!(daemons_of(home.path()), vec![daemon.clone()]);

    let stopped = ok(&home.cli(&["stop"]));
    assert!(stopped.contains("stopped"), "{stopped}");
    assert!(
        stopped.contains(&format!("pid {}", daemon.pid)),
        "{stopped}"
    );
    // `stop` returns only once the process is gone and its files with it.
    assert!(
        !daemon.is_running(),
        "astrid stop returned before the daemon exited"
    );
    assert!(
        home.session_files().is_empty(),
        "{:?}",
        home.session_files()
    );

    let again = ok(&home.cli(&["stop"]));
    assert!(again.contains("no daemon is running"), "{again}");
}

#[test]
fn stop_ends_a_daemon_it_did_not_start_gracefully() {
    let mut d = TestDaemon::builder().start();
    let out = json_of(&d.cli(&["--json", "stop"]));
    assert_eq!(
        out,
        json!({"stopped": true, "pid": d.child.id(), "how": "stopped"}),
    );
    let status = d.wait_exit(DEADLINE).expect("the daemon exits");
    assert!(status.success(), "{status}: {}", d.stderr());
    assert!(d.leftover_files().is_empty(), "{:?}", d.leftover_files());
}

#[test]
fn stop_kills_a_daemon_that_does_not_answer() {
    let mut d = TestDaemon::builder().start();
    // A stopped process accepts connections (the kernel queues them) but never answers,
    // and SIGTERM stays pending; only SIGKILL ends it.
    d.signal(Signal::STOP);
    let started = Instant::now();
    let stop = Background::spawn(cli_command(d.home.path(), &["stop", "--timeout", "500ms"]))
        .finish(Duration::from_secs(8));
    let out = match stop {
        Ok(out) => out,
        Err(out) => {
            panic!(
                "`astrid stop --timeout 500ms` was still running after 8s against a wedged \
                 daemon:\nstdout: {}\nstderr: {}",
                stdout(&out),
                stderr(&out)
            )
        }
    };
    let text = ok(&out);
    assert!(text.contains("killed"), "{text}");
    assert!(text.contains(&format!("pid {}", d.child.id())), "{text}");
    assert!(started.elapsed() < Duration::from_secs(8));
    let status = d.wait_exit(DEADLINE).expect("the daemon is dead");
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(d.leftover_files().is_empty(), "{:?}", d.leftover_files());
}

// ---------------------------------------------------------------------------------------
// One-shot commands
// ---------------------------------------------------------------------------------------

#[test]
fn ps_prints_the_supervision_tree_with_the_cli_session() {
    let d = TestDaemon::builder().start();
    let text = ok(&d.cli(&["ps"]));
    for name in ["kernel", "bus", "capsules", "listener"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().any(|w| w.ends_with(name))),
            "no `{name}` row: {text}"
        );
    }
    let session = text
        .lines()
        .find(|l| l.contains("session:"))
        .unwrap_or_else(|| panic!("no session row: {text}"));
    assert!(session.contains("astrid-cli"), "{session}");

    let tree = json_of(&d.cli(&["--json", "ps"]));
    assert_eq!(tree["name"], json!("kernel"), "{tree}");
    assert!(!tree["children"].as_array().unwrap().is_empty(), "{tree}");
    for name in ["bus", "capsules", "listener"] {
        let node = find_node(&tree, name).unwrap_or_else(|| panic!("no {name}: {tree}"));
        assert_eq!(node["state"], json!("running"), "{node}");
    }
    let listener = find_node(&tree, "listener").unwrap();
    let sessions = listener["children"].as_array().unwrap();
    assert!(
        sessions.iter().any(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("session:"))
                && s["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("astrid-cli"))
        }),
        "{listener}"
    );
}

#[test]
fn capsules_commands_and_metadata_describe_the_builtin_cli_capsule() {
    let d = TestDaemon::builder().start();
    let text = ok(&d.cli(&["capsules"]));
    let row = text
        .lines()
        .find(|l| l.starts_with("astrid-capsule-cli "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("running") && row.contains("builtin"), "{row}");
    let list = json_of(&d.cli(&["--json", "capsules"]));
    let cli = capsule(&list, "astrid-capsule-cli").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(cli["state"], json!("running"));
    assert_eq!(cli["origin"], json!("builtin"));

    let commands = ok(&d.cli(&["commands"]));
    for name in ["status", "capsules", "commands", "ps", "quit"] {
        assert!(
            commands
                .lines()
                .any(|l| l.starts_with(&format!("/{name} "))),
            "no /{name}: {commands}"
        );
    }
    let listed = json_of(&d.cli(&["--json", "commands"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["capsule"] == "astrid-capsule-cli"),
        "{listed}"
    );

    let meta = ok(&d.cli(&["metadata", "astrid-capsule-cli"]));
    assert!(meta.starts_with("astrid-capsule-cli "), "{meta}");
    assert!(meta.contains("path: (built in)"), "{meta}");
    assert!(meta.contains("command /status"), "{meta}");
    let meta = json_of(&d.cli(&["--json", "metadata", "astrid-capsule-cli"]));
    assert_eq!(meta.as_array().map(Vec::len), Some(1), "{meta}");
    assert_eq!(meta[0]["origin"], json!("builtin"));
}

#[test]
fn metadata_of_an_unknown_capsule_fails() {
    let d = TestDaemon::builder().start();
    let out = d.cli(&["metadata", "nope"]);
    let err = fails(&out);
    assert!(err.contains("not_found"), "{err}");
    assert!(err.contains("no capsule named `nope`"), "{err}");
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}

#[test]
fn reload_picks_up_a_new_home_capsule() {
    let d = TestDaemon::builder().start();
    let before = ok(&d.cli(&["capsules"]));
    assert!(!before.contains("echo"), "{before}");
    let dir = write_capsule(&d.layout.capsules(), "echo", "");

    let report = ok(&d.cli(&["reload"]));
    assert!(report.lines().any(|l| l == "added: echo"), "{report}");
    let row = report
        .lines()
        .find(|l| l.starts_with("echo "))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(row.contains("running"), "{row}");

    let text = ok(&d.cli(&["capsules"]));
    let row = text
        .lines()
        .find(|l| l.starts_with("echo "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.contains("0.1.0") && row.contains("running") && row.contains("home"),
        "{row}"
    );
    let list = json_of(&d.cli(&["--json", "capsules"]));
    let echo = capsule(&list, "echo").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(echo["state"], json!("running"), "{echo}");
    assert_eq!(echo["origin"], json!("home"), "{echo}");
    assert_eq!(
        canonical(echo["path"].as_str().unwrap()),
        canonical(dir.to_str().unwrap())
    );

    // A second reload finds nothing new.
    let report = json_of(&d.cli(&["--json", "reload"]));
    assert_eq!(report["added"], json!([]), "{report}");
    assert_eq!(
        report["unchanged"]
            .as_array()
            .map(|u| u.contains(&json!("echo"))),
        Some(true)
    );
}

#[test]
fn an_invalid_manifest_is_listed_with_its_file_and_field_and_the_daemon_serves_on() {
    let d = TestDaemon::builder().start();
    let dir = write_capsule(&d.layout.capsules(), "echo", "[limits]\nfuel = 999\n");
    write_capsule(&d.layout.capsules(), "fine", "");
    let report = json_of(&d.cli(&["--json", "reload"]));
    assert_eq!(report["added"], json!(["echo", "fine"]), "{report}");

    let list = json_of(&d.cli(&["--json", "capsules"]));
    let echo = capsule(&list, "echo").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(echo["state"], json!("invalid"), "{echo}");
    let error = echo["error"].as_str().unwrap_or_else(|| panic!("{echo}"));
    let manifest = dir.join("Capsule.toml");
    assert!(
        error.contains(manifest.to_str().unwrap()) && error.contains("`limits.fuel`"),
        "{error}"
    );
    let fine = capsule(&list, "fine").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(fine["state"], json!("running"), "{fine}");
    // The human listing shows the error too, and the daemon answers as before.
    let text = ok(&d.cli(&["capsules"]));
    assert!(text.contains("limits.fuel"), "{text}");
    ok(&d.cli(&["status"]));
}

#[test]
fn a_workspace_capsule_overrides_a_home_capsule_of_the_same_name() {
    let d = TestDaemon::builder().start();
    let home_dir = write_capsule(&d.layout.capsules(), "echo", "");
    let ws_root = astrid::paths::workspace_capsules(d.workspace.path());
    let ws_dir = write_capsule(
        &ws_root,
        "echo",
        "description = \"workspace echo\"\n[[command]]\nname = \"echo\"\ndescription = \"Echo\"\n",
    );
    // The workspace's own capsules run once it is trusted (see `trust.rs`).
    let report = json_of(&d.cli(&["--json", "trust"]));
    assert_eq!(report["capsules"]["added"], json!(["echo"]), "{report}");

    let meta = ok(&d.cli(&["metadata", "echo"]));
    let path = meta
        .lines()
        .find_map(|l| l.trim().strip_prefix("path: "))
        .unwrap_or_else(|| panic!("{meta}"));
    let overrides = meta
        .lines()
        .find_map(|l| l.trim().strip_prefix("overrides: "))
        .unwrap_or_else(|| panic!("no overrides line: {meta}"));
    assert_eq!(
        canonical(path),
        canonical(ws_dir.to_str().unwrap()),
        "{meta}"
    );
    assert_eq!(
        canonical(overrides),
        canonical(home_dir.to_str().unwrap()),
        "{meta}"
    );
    assert!(meta.contains("workspace echo"), "{meta}");

    let meta = json_of(&d.cli(&["--json", "metadata", "echo"]));
    assert_eq!(meta[0]["origin"], json!("workspace"), "{meta}");
    let list = json_of(&d.cli(&["--json", "capsules"]));
    let echoes: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "echo")
        .collect();
    assert_eq!(echoes.len(), 1, "{list}");
    assert_eq!(echoes[0]["origin"], json!("workspace"));
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

#[test]
fn events_prints_published_events_as_json_lines() {
    let d = TestDaemon::builder().start();
    let ws = d.workspace.path().to_str().unwrap();
    let mut events = Background::spawn(cli_command(
        d.home.path(),
        &["-w", ws, "--json", "events", "user.>", "--count", "2"],
    ));
    // Publish until the subscriber has subscribed and received the event.
    let first = poll(DEADLINE, || {
        let published = json_of(&d.cli(&["--json", "publish", "user.a", r#"{"x":1}"#]));
        assert!(!events.exited(), "`astrid events` exited early");
        if published["delivered"] == 1 {
            Ok(published)
        } else {
            Err(())
        }
    })
    .expect("`astrid events` never subscribed");
    let second = json_of(&d.cli(&["--json", "publish", "user.b", "hello"]));
    assert_eq!(second["delivered"], json!(1), "{second}");

    let out = events
        .finish(DEADLINE)
        .unwrap_or_else(|o| panic!("events did not exit: {o:?}"));
    let text = ok(&out);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["topic"], json!("user.a"));
    assert_eq!(lines[0]["payload"], json!({"x": 1}));
    assert_eq!(lines[0]["seq"], first["seq"]);
    assert_eq!(lines[1]["topic"], json!("user.b"));
    assert_eq!(lines[1]["payload"], json!("hello"));
    assert_eq!(lines[1]["seq"], second["seq"]);
    for line in &lines {
        let source = line["source"].as_str().unwrap_or_default();
        let n = source
            .strip_prefix("client:")
            .unwrap_or_else(|| panic!("{line}"));
        assert!(n.parse::<u64>().is_ok(), "{line}");
        assert!(line["time_ms"].as_u64().is_some(), "{line}");
    }
    assert_ne!(
        lines[0]["source"], lines[1]["source"],
        "two publishers, two connections"
    );
}

#[test]
fn publishing_outside_user_topics_is_forbidden() {
    let d = TestDaemon::builder().start();
    let err = fails(&d.cli(&["publish", "astrid.x"]));
    assert!(err.contains("forbidden"), "{err}");
    let published = json_of(&d.cli(&["--json", "publish", "user.ok"]));
    assert_eq!(published["delivered"], json!(0), "{published}");
}

// ---------------------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------------------

#[test]
fn fault_is_refused_by_a_daemon_without_fault_injection() {
    let d = TestDaemon::builder().start();
    let err = fails(&d.cli(&["fault", "bus", "panic"]));
    assert!(err.contains("--allow-fault-injection"), "{err}");
    let tree = json_of(&d.cli(&["--json", "ps"]));
    assert_eq!(
        find_node(&tree, "bus").unwrap()["restarts"],
        json!(0),
        "{tree}"
    );
}

#[test]
fn fault_panic_makes_the_bus_restart() {
    let d = TestDaemon::builder().fault_injection().start();
    let text = ok(&d.cli(&["fault", "bus", "panic"]));
    assert!(text.contains("injected panic into bus"), "{text}");
    let restarted = poll(DEADLINE, || {
        let tree = json_of(&d.cli(&["--json", "ps"]));
        let bus = find_node(&tree, "bus").unwrap_or_else(|| panic!("{tree}"));
        if bus["restarts"] == 1 && bus["state"] == "running" {
            Ok(bus.clone())
        } else {
            Err(tree)
        }
    });
    let bus = restarted.unwrap_or_else(|tree| panic!("the bus was not restarted: {tree}"));
    let failure = bus["last_failure"]["reason"].as_str().unwrap_or_default();
    assert!(failure.contains("injected fault"), "{bus}");
}

#[test]
fn an_unknown_fault_is_a_clear_error() {
    let d = TestDaemon::builder().fault_injection().start();
    let out = d.cli(&["fault", "bus", "explode"]);
    let err = fails(&out);
    assert!(err.contains("bad fault `explode`"), "{err}");
    assert!(
        err.contains("(panic, stop, trap, hang, delay, import, storage, mcp, overflow, clear)")
            && err.contains("astrid fault --help"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let tree = json_of(&d.cli(&["--json", "ps"]));
    assert_eq!(
        find_node(&tree, "bus").unwrap()["restarts"],
        json!(0),
        "{tree}"
    );
}

// ---------------------------------------------------------------------------------------
// Interactive session
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_publishes_prompts_and_runs_slash_commands() {
    let d = TestDaemon::builder().start();
    let mut watcher = d.client().await;
    let _: Subscribed = watcher
        .call(Request::Subscribe {
            pattern: "user.prompt".into(),
        })
        .await
        .unwrap();
    let input = "hello there\n/status\n/commands\n/nope\n/quit\n";
    let out = tokio::task::block_in_place(|| chat(&d, input, true, DEADLINE))
        .unwrap_or_else(|o| panic!("chat did not exit: {o:?}"));
    let text = ok(&out);
    assert!(text.starts_with("connected to astrid-daemon"), "{text}");
    assert!(text.contains("session system"), "{text}");
    assert_eq!(
        status_row(&text, "pid"),
        Some(d.child.id().to_string().as_str()),
        "/status output: {text}"
    );
    assert!(text.contains("/quit "), "/commands output: {text}");
    assert!(
        text.contains("no capsule offers the command `nope`"),
        "{text}"
    );
    assert!(
        !text.contains("hello there"),
        "own prompts are not echoed: {text}"
    );

    let event = tokio::time::timeout(DEADLINE, watcher.next_event())
        .await
        .expect("the prompt arrives")
        .expect("connection open");
    assert_eq!(event.topic, "user.prompt");
    assert!(event.source.starts_with("client:"), "{event:?}");
    // The prompt goes out as the map `{"text": ...}`, as a JSON client would publish it.
    assert_eq!(
        serde_json::to_value(&event.payload).unwrap(),
        json!({"text": "hello there"})
    );
}

#[test]
fn chat_ends_cleanly_on_end_of_input() {
    let d = TestDaemon::builder().start();
    let out =
        chat(&d, "", true, DEADLINE).unwrap_or_else(|o| panic!("chat did not exit on EOF: {o:?}"));
    let text = ok(&out);
    assert!(text.starts_with("connected to"), "{text}");
    let out = chat(&d, "one line\n/ps\n", true, DEADLINE)
        .unwrap_or_else(|o| panic!("chat did not exit on EOF: {o:?}"));
    let text = ok(&out);
    assert!(text.contains("listener"), "{text}");
}

#[test]
fn chat_quit_ends_the_session_while_stdin_stays_open() {
    // As at a terminal: /quit must end the process without waiting for another line.
    let d = TestDaemon::builder().start();
    let out = chat(&d, "/quit\n", false, Duration::from_secs(5)).unwrap_or_else(|o| {
        panic!(
            "`astrid` did not exit after /quit while stdin was open:\nstdout: {}\nstderr: {}",
            stdout(&o),
            stderr(&o)
        )
    });
    let text = ok(&out);
    assert!(text.starts_with("connected to"), "{text}");
}

// ---------------------------------------------------------------------------------------
// Boot failures and concurrent starts
// ---------------------------------------------------------------------------------------

#[test]
fn a_daemon_that_fails_to_boot_is_reported_with_its_log() {
    let home = Home::new();
    // The CLI hands the workspace to the daemon it spawns, which refuses a missing one.
    let missing = home.workspace.path().join("missing");
    let started = Instant::now();
    let out = cli_in(
        home.path(),
        &["--workspace", missing.to_str().unwrap(), "status"],
    );
    let took = started.elapsed();
    let err = fails(&out);
    assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
    assert!(err.contains("the daemon failed to start"), "{err}");
    assert!(err.contains("exit status: 2"), "{err}");
    let log = home.path().join("logs").join("daemon-boot.log");
    assert!(err.contains(log.to_str().unwrap()), "{err}");
    // The daemon's own error line is quoted from the log.
    let line = format!("workspace {} is not a usable directory", missing.display());
    assert!(err.contains(&line), "{err}");
    assert!(std::fs::read_to_string(&log).unwrap().contains(&line));
    assert!(daemons_of(home.path()).is_empty());
    assert!(
        home.session_files().is_empty(),
        "{:?}",
        home.session_files()
    );
}

#[test]
fn a_home_too_long_for_a_socket_fails_fast_and_leaves_no_daemon() {
    let home = Home::too_long();
    let socket = home.files().socket();
    assert!(socket.as_os_str().len() > 107);
    let started = Instant::now();
    let out = home.cli(&["status"]);
    let took = started.elapsed();
    let err = fails(&out);
    assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
    // Either the CLI refuses the path itself, or it reports the daemon's boot failure.
    assert!(err.contains(socket.to_str().unwrap()), "{err}");
    assert!(
        err.contains("SUN_LEN") || err.contains("more than the 107 bytes"),
        "{err}"
    );
    if err.contains("failed to start") {
        assert!(err.contains("daemon-boot.log"), "{err}");
    }
    assert!(daemons_of(home.path()).is_empty());
    assert!(
        home.session_files().is_empty(),
        "{:?}",
        home.session_files()
    );
}

#[test]
fn concurrent_status_commands_share_one_daemon() {
    for round in 0..10 {
        let home = Home::new();
        let args = ["--idle-grace", "2s", "--json", "status"];
        let a = Background::spawn(home.command(&args));
        let b = Background::spawn(home.command(&args));
        let a = a
            .finish(DEADLINE)
            .unwrap_or_else(|o| panic!("round {round}: {o:?}"));
        let b = b
            .finish(DEADLINE)
            .unwrap_or_else(|o| panic!("round {round}: {o:?}"));
        let (a, b) = (json_of(&a), json_of(&b));
        assert_eq!(a["pid"], b["pid"], "round {round}: two daemons: {a} {b}");
        let pid = u32::try_from(a["pid"].as_u64().unwrap()).unwrap();
        // A daemon that lost the start race exits by itself; one remains.
        assert!(
            wait_until(DEADLINE, || daemons_of(home.path()).len() == 1),
            "round {round}: {:?}",
            daemons_of(home.path())
        );
        assert_eq!(daemons_of(home.path()), vec![daemon_pid(pid)]);
        let stopped = ok(&home.cli(&["stop"]));
        assert!(stopped.contains(&format!("pid {pid}")), "{stopped}");
        assert!(daemons_of(home.path()).is_empty());
    }
}

#[test]
fn status_while_a_daemon_boots_uses_that_daemon() {
    let home = short_tempdir();
    let d = TestDaemon::builder().home(home).spawn();
    // Should the CLI wrongly start a daemon of its own, it must not outlive the test.
    let _reaper = Reaper(d.home.path().to_owned());
    let status = json_of(&d.cli(&["--json", "status"]));
    assert_eq!(status["pid"], json!(d.child.id()), "{status}");
    assert_eq!(status["ephemeral"], json!(false), "{status}");
    // A daemon the CLI started while this one was not yet bound loses the lock and exits
    // by itself (as in `concurrent_status_commands_share_one_daemon`); one remains.
    assert!(
        wait_until(DEADLINE, || daemons_of(d.home.path()).len() == 1),
        "{:?}",
        daemons_of(d.home.path())
    );
}

#[test]
fn status_waits_for_a_daemon_that_has_bound_its_socket_but_not_written_its_token() {
    // A daemon binds its socket before it writes the token and long before it is ready;
    // a client that connects in between must wait for the ready file, not give up.
    let home = short_tempdir();
    let files = HomeLayout::new(home.path()).session(uuid::Uuid::nil());
    std::fs::create_dir_all(home.path().join("sessions")).unwrap();
    let lock = astrid::instance::InstanceLock::acquire(&files.lock()).unwrap();
    let socket = std::os::unix::net::UnixListener::bind(files.socket()).unwrap();
    let _reaper = Reaper(home.path().to_owned());
    let workspace = short_tempdir();
    let ws = workspace.path().to_str().unwrap().to_owned();
    let mut status = Background::spawn(cli_command(home.path(), &["-w", &ws, "--json", "status"]));
    let gave_up = wait_until(Duration::from_millis(500), || status.exited());
    if gave_up {
        let out = status.finish(DEADLINE).unwrap();
        panic!(
            "`astrid status` gave up on a booting daemon ({}):\nstderr: {}",
            out.status,
            stderr(&out)
        );
    }
    // The "booting daemon" goes away and a real one takes the session.
    drop(socket);
    std::fs::remove_file(files.socket()).unwrap();
    lock.release();
    let d = TestDaemon::builder()
        .home(home)
        .workspace(workspace)
        .spawn();
    let out = status
        .finish(DEADLINE)
        .unwrap_or_else(|o| panic!("status never finished: {o:?}"));
    let status = json_of(&out);
    assert_eq!(status["pid"], json!(d.child.id()), "{status}");
    assert_eq!(daemons_of(d.home.path()).len(), 1);
}

#[test]
fn completions_and_manual_pages_need_no_daemon() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&crate::common::cli_in(home.path(), &["completions", shell]));
        for word in ["chaos", "approvals", "crashes", "fault"] {
            assert!(script.contains(word), "{shell}: no `{word}`");
        }
    }
    let bad = crate::common::cli_in(home.path(), &["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let page = ok(&crate::common::cli_in(home.path(), &["man"]));
    assert!(page.contains(".TH astrid 1"), "{page}");
    let pages = home.path().join("man1");
    let said = ok(&crate::common::cli_in(
        home.path(),
        &["man", "--out", pages.to_str().unwrap()],
    ));
    assert!(said.contains("manual pages into"), "{said}");
    let fault = std::fs::read_to_string(pages.join("astrid-fault.1")).unwrap();
    assert!(
        fault.contains(".TH astrid-fault 1") && fault.contains("storage"),
        "{fault}"
    );
    assert!(pages.join("astrid.1").is_file());
    // Nothing was started: the home holds only the pages.
    assert_eq!(crate::common::files_in(home.path()), ["man1"]);
}
