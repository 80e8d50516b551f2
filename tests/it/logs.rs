//! `astrid logs`: the lines a real daemon wrote, filtered by level, actor and count; files
//! written by hand for two days (order, `--since`); `-f` following appended lines and the
//! next day's file, and ending quietly when its reader goes away; bad arguments; a daemon
//! under the journal, whose logs `journalctl` reads.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crate::common::{DEADLINE, TestDaemon, cli_bin, cli_in, output_text, poll, short_tempdir};

fn lines_of(out: &std::process::Output) -> Vec<String> {
    assert!(out.status.success(), "{}", output_text(out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A log line stamped `ago` before now, as the daemon writes them.
fn line(ago: Duration, level: &str, rest: &str) -> String {
    let at = SystemTime::now() - ago;
    format!("{} {level:>5} {rest}", humantime::format_rfc3339_micros(at))
}

#[test]
fn a_daemon_log_is_shown_and_filtered_by_level_actor_and_count() {
    let d = TestDaemon::builder()
        .capsules(&["echo"])
        .fault_injection()
        .start();
    let out = d.cli(&["fault", "capsule:echo", "panic"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let home = d.home.path();
    // The daemon's lines reach the file from a writer thread: wait for the restart's.
    let warned = poll(DEADLINE, || {
        let lines = lines_of(&cli_in(home, &["logs", "--level", "warn"]));
        if lines.iter().any(|l| l.contains("restarting")) {
            Ok(lines)
        } else {
            Err(lines)
        }
    })
    .unwrap_or_else(|seen| panic!("no restart line at warn level: {seen:#?}"));
    for l in &warned {
        assert!(
            l.contains(" WARN ") || l.contains("ERROR "),
            "below warn: {l}"
        );
    }

    let all = lines_of(&cli_in(home, &["logs", "-n", "1000"]));
    assert!(
        all.iter().any(|l| l.contains("astrid-daemon starting")),
        "{all:#?}"
    );
    assert!(all.iter().any(|l| l.contains(" INFO ")), "{all:#?}");

    let echo = lines_of(&cli_in(home, &["logs", "-n", "1000", "--actor", "echo"]));
    assert!(
        echo.iter().any(|l| l.contains("capsule loaded")),
        "{echo:#?}"
    );
    assert!(echo.iter().any(|l| l.contains("restarting")), "{echo:#?}");
    for l in &echo {
        assert!(l.contains("echo"), "not about echo: {l}");
    }
    assert!(echo.len() < all.len());
    let same = lines_of(&cli_in(
        home,
        &["logs", "--actor", "capsule:echo", "-n", "1000"],
    ));
    // Read later: lines may have come since, after those.
    assert_eq!(same[..echo.len()], echo[..]);

    // Read before the whole log, which may have grown since but holds them, one after the
    // other.
    let last = lines_of(&cli_in(home, &["logs", "-n", "2"]));
    assert_eq!(last.len(), 2, "{last:#?}");
    let all = lines_of(&cli_in(home, &["logs", "-n", "1000"]));
    let at = all
        .iter()
        .position(|l| *l == last[0])
        .expect("a line of the log");
    assert_eq!(all[at + 1], last[1]);
}

#[test]
fn hand_written_days_are_read_in_order_and_since_goes_by_timestamp() {
    let home = short_tempdir();
    let logs = home.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let old = line(
        Duration::from_hours(26),
        "INFO",
        "astrid_actors::kernel: yesterday",
    );
    let two_hours = line(
        Duration::from_hours(2),
        "WARN",
        "astrid_actors::bus: two hours ago",
    );
    let recent = line(
        Duration::from_mins(1),
        "ERROR",
        "astrid_actors::store: a minute ago",
    );
    std::fs::write(
        logs.join("astrid.2026-01-02.log"),
        format!("{two_hours}\n  its second line\n{recent}\n"),
    )
    .unwrap();
    std::fs::write(logs.join("astrid.2026-01-01.log"), format!("{old}\n")).unwrap();
    std::fs::write(logs.join("daemon-boot.log"), "not a daily file\n").unwrap();

    let all = lines_of(&cli_in(home.path(), &["logs"]));
    assert_eq!(
        all,
        [old.as_str(), &two_hours, "  its second line", &recent]
    );
    let recent_only = lines_of(&cli_in(home.path(), &["logs", "--since", "10m"]));
    assert_eq!(recent_only, [recent.as_str()]);
    let today = lines_of(&cli_in(home.path(), &["logs", "--since", "3h"]));
    assert_eq!(today, [two_hours.as_str(), "  its second line", &recent]);
    let bus = lines_of(&cli_in(home.path(), &["logs", "--actor", "bus"]));
    assert_eq!(bus, [two_hours.as_str(), "  its second line"]);
    let errors = lines_of(&cli_in(home.path(), &["logs", "--level", "error"]));
    assert_eq!(errors, [recent.as_str()]);
    let last = lines_of(&cli_in(home.path(), &["logs", "-n", "2"]));
    assert_eq!(last, ["  its second line", recent.as_str()]);
}

#[test]
fn bad_arguments_are_clap_errors() {
    let home = short_tempdir();
    for args in [
        &["logs", "--level", "loud"][..],
        &["logs", "-n", "x"],
        &["logs", "--since", "soon"],
    ] {
        let out = cli_in(home.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            output_text(&out)
        );
        let text = output_text(&out);
        assert!(text.contains("invalid value"), "{args:?}: {text}");
    }
    // No home, no logs: said on stderr, nothing created.
    let none = home.path().join("none");
    let out = cli_in(&none, &["logs"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains("no log files"));
    assert!(!none.exists());
}

/// `astrid logs -f`, whose lines arrive on the returned channel.
struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(home: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(cli_bin())
            .arg("--home")
            .arg(home)
            .args(["logs", "-f"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    #[track_caller]
    fn next(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("a line from astrid logs -f in time")
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[test]
fn follow_prints_appended_lines_and_moves_to_the_next_day() {
    let home = short_tempdir();
    let logs = home.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let first = logs.join("astrid.2026-01-01.log");
    let old = line(
        Duration::from_secs(5),
        "INFO",
        "astrid_actors::kernel: before",
    );
    append(&first, &format!("{old}\n"));
    let f = Follower::start(home.path(), &["-n", "1", "--level", "info"]);
    assert_eq!(f.next(), old);

    let added = line(Duration::ZERO, "WARN", "astrid_actors::bus: appended");
    // Half a line is printed once it is whole.
    append(&first, &added[..10]);
    append(&first, &format!("{}\n", &added[10..]));
    assert_eq!(f.next(), added);
    let skipped = line(
        Duration::ZERO,
        "DEBUG",
        "astrid_actors::bus: below the level",
    );
    let last_of_day = line(Duration::ZERO, "INFO", "astrid_actors::bus: end of day");
    append(&first, &format!("{skipped}\n{last_of_day}"));
    let next_day = line(Duration::ZERO, "INFO", "astrid_actors::bus: a new day");
    append(
        &logs.join("astrid.2026-01-02.log"),
        &format!("{next_day}\n"),
    );
    // The old file's last line first (finished without its newline), then the new day's.
    assert_eq!(f.next(), last_of_day);
    assert_eq!(f.next(), next_day);
    let later = line(Duration::ZERO, "ERROR", "astrid_actors::bus: later");
    append(&logs.join("astrid.2026-01-02.log"), &format!("{later}\n"));
    assert_eq!(f.next(), later);
}

#[test]
fn follow_ends_quietly_when_its_reader_goes_away() {
    let home = short_tempdir();
    let logs = home.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let file = logs.join("astrid.2026-01-01.log");
    let mut child = Command::new(cli_bin())
        .arg("--home")
        .arg(home.path())
        .args(["logs", "-f"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    // Each line written meets the closed pipe: the command ends at the first.
    let status = poll(DEADLINE, || {
        append(
            &file,
            &format!("{}\n", line(Duration::ZERO, "INFO", "x: y")),
        );
        child.try_wait().unwrap().ok_or(())
    });
    let Ok(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("astrid logs -f did not end after its reader went away");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn under_the_journal_it_says_to_use_journalctl() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = short_tempdir();
    let journal = std::fs::File::create(dir.path().join("journal")).unwrap();
    let meta = journal.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let d = TestDaemon::builder()
        .envs(&[("JOURNAL_STREAM", &stream)])
        .stderr_to(journal)
        .start();
    for (args, command) in [
        (&["logs"][..], "`journalctl --user -u astrid`"),
        (
            &["logs", "-f", "--level", "warn"],
            "`journalctl --user -u astrid -f`",
        ),
    ] {
        let out = d.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            output_text(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", output_text(&out));
        assert!(
            stderr.contains("logs to the systemd journal") && stderr.contains(command),
            "{args:?}: {stderr}"
        );
    }
}
