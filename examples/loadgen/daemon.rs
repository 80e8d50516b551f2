//! Daemons under test: spawning a persistent `astrid-daemon` (the release binary beside this
//! example) in a temporary home and stopping it, and what goes into the home first (example
//! capsules, the example MCP server).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use astrid_protocol::layout::{HomeLayout, SessionFiles};

/// A child process killed when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn wait_for(path: &Path) {
    let end = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(Instant::now() < end, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Copies example capsule `example` (a folder under `examples/capsules/`) into `home`'s
/// capsules as `name`, appending `extra` to its manifest.
pub(crate) fn install_capsule(home: &Path, example: &str, name: &str, extra: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/capsules")
        .join(example);
    let to = home.join("capsules").join(name);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
    let manifest = to.join("Capsule.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(manifest, format!("{text}\n{extra}")).unwrap();
}

/// Configures the example MCP server (the release build beside this example) as `test`.
pub(crate) fn install_mcp_server(home: &Path) {
    let exe = std::env::current_exe().unwrap();
    let server = exe.parent().unwrap().join("mcp-test-server");
    assert!(
        server.is_file(),
        "{} not found: run `cargo build --release --examples` first",
        server.display()
    );
    let config = format!(
        "[[server]]\nname = \"test\"\ncommand = \"{}\"\ncall_timeout = \"10s\"\n",
        server.display()
    );
    std::fs::write(home.join("mcp.toml"), config).unwrap();
}

/// Starts a persistent daemon in `home` from the release binary beside this example.
pub(crate) fn spawn_daemon(home: &Path) -> (Guard, SessionFiles) {
    let (guard, files, _) = spawn_daemon_with(home, &[]);
    (guard, files)
}

/// Starts a persistent daemon in `home` with `args`; also returns how long it took to be
/// ready (its ready file written).
pub(crate) fn spawn_daemon_with(home: &Path, args: &[&str]) -> (Guard, SessionFiles, Duration) {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("astrid-daemon");
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build --release --bins` first",
        bin.display()
    );
    let files = HomeLayout::new(home).session(uuid::Uuid::nil());
    let _ = std::fs::remove_file(files.ready());
    let started = Instant::now();
    let child = Command::new(&bin)
        .arg("--home")
        .arg(home)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = started + Duration::from_secs(15);
    while !files.ready().exists() {
        assert!(Instant::now() < end, "the daemon did not get ready");
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = started.elapsed();
    (Guard(child), files, took)
}

/// Stops the daemon with SIGTERM and waits for it.
pub(crate) fn stop(mut guard: Guard) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(guard.0.id().to_string())
        .status();
    let _ = guard.0.wait();
}

/// Installs `n` copies of the example `echo` named `e1`.. (command `e1`..), and, when
/// `hello` is set, every other one a copy of `hello-rust` instead (named `h2`..).
pub(crate) fn install_many(home: &Path, n: usize, hello: bool) {
    for i in 1..=n {
        let (example, name) = if hello && i % 2 == 0 {
            ("hello-rust", format!("h{i}"))
        } else {
            ("echo", format!("e{i}"))
        };
        install_capsule(home, example, &name, "");
        let manifest = home.join("capsules").join(&name).join("Capsule.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        // The capsule's name (the first `name`); an echo copy's command too.
        let mut text = text.replacen(
            &format!("name = \"{example}\""),
            &format!("name = \"{name}\""),
            1,
        );
        if example == "echo" {
            text = text.replacen("name = \"echo\"", &format!("name = \"{name}\""), 1);
        }
        std::fs::write(manifest, text).unwrap();
    }
}
