//! `astrid`: the command-line frontend of the Astrid daemon. It finds (or starts) the
//! session's daemon, sends one request per command, and prints the result as text or, with
//! `--json`, as JSON. With no command it opens an interactive session.
//!
//! Exit status: 0 on success, 1 when the daemon reports an error or cannot be reached,
//! 2 for bad arguments.

mod args;
mod chat;
mod daemon;
mod render;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use astrid::client::ClientError;
use astrid::paths::PathError;
use astrid::protocol::{
    CapsuleMetadata, CommandInfo, Event, Fault, FaultInjected, Published, ReloadReport, Request,
    Subscribed, to_payload,
};
use clap::Parser;
use serde::Serialize;

use crate::args::{Cli, Command};
use crate::daemon::{Mode, Stopped, Target};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("cannot start {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon failed to start ({status}); see {log}:\n{tail}")]
    BootFailed {
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("the daemon did not become ready within {after:?}; see {log}")]
    BootTimeout { after: Duration, log: PathBuf },
    #[error("a daemon holds the session lock but wrote no pid file ({0})")]
    NoPidFile(PathBuf),
    #[error("process {0} did not exit, even after SIGKILL")]
    StopFailed(u32),
    #[error("bad fault `{0}`: use panic, stop or hang:<duration>")]
    BadFault(String),
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}

fn main() -> ExitCode {
    // `astrid daemon [FLAGS]` is the daemon itself, with the flags of `astrid-daemon`; the CLI
    // falls back to it when no `astrid-daemon` binary is installed.
    if std::env::args_os().nth(1).is_some_and(|a| a == "daemon") {
        let argv =
            std::iter::once(OsString::from("astrid daemon")).chain(std::env::args_os().skip(2));
        return astrid::daemon::main(argv);
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(CliError::Io(e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = astrid::error_chain(&e);
            eprintln!("astrid: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `value` as JSON, or as `human` renders it.
fn show<T: Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> Result<(), CliError> {
    if json {
        let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        println!("{text}");
    } else {
        print!("{}", human(value));
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let json = cli.global.json;
    let target = Target::new(&cli.global)?;
    let command = cli.command.unwrap_or(Command::Chat);
    match command {
        Command::Start {
            allow_fault_injection,
        } => {
            let mode = Mode::Persistent {
                faults: allow_fault_injection,
            };
            let (client, started) = target.connect_or_start(mode).await?;
            let status = client.status().await?;
            let word = if started {
                "started"
            } else {
                "already running"
            };
            show(json, &status, |s| {
                let mode = if s.ephemeral {
                    "ephemeral"
                } else {
                    "persistent"
                };
                format!(
                    "astrid-daemon {word} (pid {}, {mode}, session {})\n",
                    s.pid, s.session
                )
            })
        }
        Command::Stop { timeout } => stop(&target, timeout, json).await,
        Command::Chat => {
            let (client, _) = target.connect_or_start(Mode::Ephemeral).await?;
            chat::run(client).await
        }
        other => {
            let (client, _) = target.connect_or_start(Mode::Ephemeral).await?;
            one_shot(client, other, json).await
        }
    }
}

async fn one_shot(
    mut client: astrid::client::Client,
    command: Command,
    json: bool,
) -> Result<(), CliError> {
    match command {
        Command::Status => show(json, &client.status().await?, render::status),
        Command::Capsules => show(json, &client.capsules().await?, |c| render::capsules(c)),
        Command::Reload => {
            let report: ReloadReport = client.call(Request::ReloadCapsules).await?;
            show(json, &report, render::reload)
        }
        Command::Commands => {
            let list: Vec<CommandInfo> = client.call(Request::GetCommands).await?;
            show(json, &list, |l| render::commands(l))
        }
        Command::Metadata { name } => {
            let list: Vec<CapsuleMetadata> =
                client.call(Request::GetCapsuleMetadata { name }).await?;
            show(json, &list, |l| render::metadata(l))
        }
        Command::Ps => show(json, &client.tree().await?, render::tree),
        Command::Events { pattern, count } => {
            let _: Subscribed = client.call(Request::Subscribe { pattern }).await?;
            let mut seen = 0;
            while count.is_none_or(|n| seen < n) {
                let Some(event) = client.next_event().await else {
                    return Err(ClientError::Closed.into());
                };
                print_event(json, &event)?;
                seen += 1;
            }
            Ok(())
        }
        Command::Publish { topic, payload } => {
            let payload = match payload {
                None => rmpv::Value::Nil,
                Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(value) => to_payload(&value).map_err(std::io::Error::other)?,
                    Err(_) => rmpv::Value::from(text),
                },
            };
            let published: Published = client.call(Request::Publish { topic, payload }).await?;
            show(json, &published, |p| {
                format!("published event {} to {} subscribers\n", p.seq, p.delivered)
            })
        }
        Command::Fault { target, fault } => {
            let fault = parse_fault(&fault)?;
            let done: FaultInjected = client.call(Request::InjectFault { target, fault }).await?;
            show(json, &done, |d| {
                format!("injected {} into {}\n", d.fault, d.target)
            })
        }
        Command::Chat | Command::Start { .. } | Command::Stop { .. } => Ok(()),
    }
}

/// What `astrid stop --json` prints.
#[derive(Serialize)]
struct StopOutcome {
    stopped: bool,
    pid: Option<u32>,
    how: &'static str,
}

async fn stop(target: &Target, timeout: Duration, json: bool) -> Result<(), CliError> {
    let (pid, how) = match target.stop(timeout).await? {
        Stopped::NotRunning => (None, "not running"),
        Stopped::Graceful(p) => (Some(p), "stopped"),
        Stopped::Terminated(p) => (Some(p), "terminated with SIGTERM"),
        Stopped::Killed(p) => (Some(p), "killed with SIGKILL"),
    };
    let outcome = StopOutcome {
        stopped: pid.is_some(),
        pid,
        how,
    };
    show(json, &outcome, |o| match o.pid {
        Some(p) => format!("astrid-daemon {} (pid {p})\n", o.how),
        None => format!(
            "no daemon is running for session `{}`\n",
            target.files.name()
        ),
    })
}

fn print_event(json: bool, event: &Event) -> Result<(), CliError> {
    if json {
        // One object per line, so the stream can be piped into line-oriented tools.
        let line = serde_json::to_string(event).map_err(std::io::Error::other)?;
        println!("{line}");
    } else {
        println!("{}", render::event(event));
    }
    Ok(())
}

fn parse_fault(text: &str) -> Result<Fault, CliError> {
    match text {
        "panic" => Ok(Fault::Panic),
        "stop" => Ok(Fault::Stop),
        _ => text
            .strip_prefix("hang:")
            .and_then(|d| humantime::parse_duration(d).ok())
            .map(|d| Fault::Hang {
                millis: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            })
            .ok_or_else(|| CliError::BadFault(text.to_owned())),
    }
}
