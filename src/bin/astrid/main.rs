//! `astrid`: the command-line frontend of the Astrid daemon. It finds (or starts) the
//! session's daemon, sends one request per command, and prints the result as text or, with
//! `--json`, as JSON. With no command it opens an interactive session.
//!
//! Exit status: 0 on success, 1 when the daemon reports an error or cannot be reached (or
//! `astrid replay`'s crash did not reproduce), 2 for bad arguments, 3 when `astrid chaos`
//! finds an invariant broken.

mod approvals;
mod args;
mod chaos;
mod chat;
mod crashes;
mod daemon;
mod docs;
mod doctor;
mod fault;
mod install;
mod logs;
mod render;
mod service;
mod settings;
mod top;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use astrid::client::ClientError;
use astrid::paths::PathError;
use astrid::protocol::{
    AuditEntry, CapsuleMetadata, CommandInfo, CommandOutput, Event, FaultInjected, Grant, KvValue,
    Listing, McpReloadReport, McpServerInfo, McpToolInfo, McpToolResult, PruneReport, Published,
    RawValue, ReloadReport, Removed, Request, Subscribed, TrustInfo, TrustReport, Verification,
    Written, to_payload,
};
use clap::Parser;
use serde::Serialize;

use crate::args::{AuditCommand, CapsCommand, Cli, Command, ConfigCommand, KvCommand, McpCommand};
use crate::daemon::{Mode, Stopped, Target};
use crate::fault::parse_fault;

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
    #[error("{0}; see `astrid fault --help`")]
    BadFault(astrid::protocol::BadFault),
    #[error("no key `{0}`")]
    NoSuchKey(String),
    #[error(
        "`{0}` is a secret: give its value on standard input or at the prompt, never as an \
         argument (it would stay in the shell's history and be visible to `ps`)"
    )]
    SecretOnCommandLine(String),
    #[error("not installed: the installation was not confirmed")]
    NotConfirmed,
    #[error("arguments must be a JSON object, such as '{{\"text\": \"hi\"}}': {0}")]
    BadArguments(String),
    #[error("the tool reported an error")]
    ToolFailed,
    #[error("the audit chain is broken at entry {entry}: {reason}")]
    AuditBroken { entry: u64, reason: String },
    #[error("cannot use workspace {}", path.display())]
    Workspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the daemon of session `{session}` serves {there}, not {here}: run this in {there} \
         (or with -w {there}), stop that daemon first (`astrid stop`), or give this workspace \
         a daemon of its own with -s <UUID>",
        there = served.display(),
        here = wanted.display(),
    )]
    OtherWorkspace {
        session: String,
        served: PathBuf,
        wanted: PathBuf,
    },
    #[error("the crash {0} did not reproduce")]
    NotReproduced(String),
    #[error("`{0}` is a command of the interactive session (`astrid`), not one to run")]
    SessionOnly(String),
    #[error("`{0}` takes no arguments")]
    NoArguments(String),
    #[error(transparent)]
    Chaos(#[from] chaos::ChaosError),
    #[error("the daemon logs to the systemd journal: read it with `{0}`")]
    Journal(String),
    #[error("{count} {} failed", if *.count == 1 { "check" } else { "checks" })]
    ChecksFailed { count: usize },
    #[error(
        "the daemon (pid {0}) runs under a service manager, which would not know of a daemon \
         restarted here: `systemctl --user restart astrid.service`"
    )]
    ServiceManaged(u32),
    #[error("cannot find the user's configuration folder (set $XDG_CONFIG_HOME or $HOME)")]
    NoUnitDir,
    #[error("{} differs from the unit this would write; run again with --force to replace it", .0.display())]
    UnitDiffers(PathBuf),
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}

/// `astrid run COMMAND`: a command as `astrid commands` lists it (`/echo` as well as
/// `echo`), the built-in capsule's commands being the `astrid` commands of the same name.
fn builtin(command: &str, args: Vec<String>) -> Result<Command, CliError> {
    let name = command.strip_prefix('/').unwrap_or(command).to_owned();
    let builtin = match name.as_str() {
        "status" => Command::Status,
        "capsules" => Command::Capsules,
        "commands" => Command::Commands,
        "ps" => Command::Ps,
        "quit" => return Err(CliError::SessionOnly(name)),
        _ => {
            return Ok(Command::Run {
                command: name,
                args,
            });
        }
    };
    if args.is_empty() {
        Ok(builtin)
    } else {
        Err(CliError::NoArguments(name))
    }
}

/// The same allocator as `astrid-daemon`, since `astrid daemon` runs the daemon in this
/// binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            if matches!(e, CliError::Chaos(chaos::ChaosError::Invariants(_))) {
                ExitCode::from(chaos::EXIT_INVARIANT)
            } else {
                ExitCode::FAILURE
            }
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
        let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        text.push('\n');
        emit(&text)
    } else {
        emit(&human(value))
    }
}

/// Writes `text` to standard output. A reader that went away (`astrid events | head`) ends
/// the command quietly with status 0, as it ends other Unix tools, instead of a panic.
pub(crate) fn emit(text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            #[allow(clippy::exit, reason = "nobody reads the rest: the command is done")]
            std::process::exit(0)
        }
        result => Ok(result?),
    }
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
        Command::Restart { timeout } => {
            let mode = target
                .running_mode()
                .await?
                .unwrap_or(Mode::Persistent { faults: false });
            let stopped = target.stop(timeout).await?;
            let (client, _) = target.connect_or_start(mode).await?;
            let status = client.status().await?;
            let before = match stopped {
                Stopped::NotRunning => "none was running".to_owned(),
                Stopped::Graceful(p) | Stopped::Terminated(p) | Stopped::Killed(p) => {
                    format!("was pid {p}")
                }
            };
            show(json, &status, |s| {
                let mode = if s.ephemeral {
                    "ephemeral"
                } else {
                    "persistent"
                };
                let faults = if s.fault_injection {
                    ", fault injection allowed"
                } else {
                    ""
                };
                format!(
                    "astrid-daemon restarted (pid {}, {before}; {mode}{faults}, session {})\n",
                    s.pid, s.session
                )
            })
        }
        Command::Trust { path, list } => {
            let (client, _) = target.connect_or_start(Mode::Ephemeral).await?;
            if list {
                let all: Vec<TrustInfo> = client.call(Request::ListTrust).await?;
                return show(json, &all, |a| render::trusted(a));
            }
            let path = workspace_arg(&target, path)?;
            let report: TrustReport = client.call(Request::TrustWorkspace { path }).await?;
            show(json, &report, render::trust_report)
        }
        Command::Untrust { path } => {
            let (client, _) = target.connect_or_start(Mode::Ephemeral).await?;
            let path = workspace_arg(&target, path)?;
            let report: TrustReport = client.call(Request::UntrustWorkspace { path }).await?;
            show(json, &report, render::trust_report)
        }
        Command::Chat => {
            let (client, _) = target.connect_or_start(Mode::Ephemeral).await?;
            // Commands run on a connection of their own, so that the session keeps reading
            // (an approval the command waits for is answered here).
            let (worker, _) = target.connect_or_start(Mode::Ephemeral).await?;
            chat::run(client, worker).await
        }
        Command::Chaos(args) => chaos::run(&cli.global, args).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { out } => docs::man(out.as_deref()),
        Command::Logs(args) => logs::run(&target, args).await,
        Command::Doctor => doctor::run(&target, json).await,
        Command::Service(cmd) => service::run(&target, &cmd, json),
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
    let command = match command {
        Command::Run { command, args } => builtin(&command, args)?,
        other => other,
    };
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
        Command::Metrics => show(json, &client.metrics().await?, Clone::clone),
        Command::Top { interval } => top::run(&client, interval).await,
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
                None => RawValue::nil(),
                Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(value) => to_payload(&value),
                    Err(_) => to_payload(&text),
                }
                .map_err(std::io::Error::other)?,
            };
            let published: Published = client.call(Request::Publish { topic, payload }).await?;
            show(json, &published, |p| {
                format!("published event {} to {} subscribers\n", p.seq, p.delivered)
            })
        }
        Command::Run { command, args } => {
            let out: CommandOutput = client
                .call(Request::InvokeCommand {
                    name: command,
                    args,
                })
                .await?;
            show(json, &out, render::output)
        }
        Command::Fault { target, fault } => {
            let fault = parse_fault(&fault)?;
            let done: FaultInjected = client.call(Request::InjectFault { target, fault }).await?;
            show(json, &done, |d| {
                format!("injected {} into {}\n", d.fault, d.target)
            })
        }
        Command::Kv(kv) => kv_command(&client, kv, json).await,
        Command::Caps(caps) => caps_command(&client, caps, json).await,
        Command::Settings(settings) => settings::run(&client, settings, json).await,
        Command::Approvals(cmd) => approvals::run(&client, cmd, json).await,
        Command::Install { path, yes } => install::install(&client, &path, yes, json).await,
        Command::Uninstall { name } => {
            let done: Removed = client.call(Request::UninstallCapsule { name }).await?;
            show(json, &done, |d| format!("uninstalled {}\n", d.target))
        }
        Command::Audit(audit) => audit_command(&client, audit, json).await,
        Command::Config(ConfigCommand::Show) => show(json, &client.config().await?, render::config),
        Command::Mcp(mcp) => mcp_command(&client, mcp, json).await,
        Command::Crashes(crashes) => crashes::run(&client, crashes, json).await,
        Command::Replay { id } => crashes::replay(&client, id, json).await,
        Command::Chat
        | Command::Start { .. }
        | Command::Stop { .. }
        | Command::Restart { .. }
        | Command::Trust { .. }
        | Command::Untrust { .. }
        | Command::Chaos(_)
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Logs(_)
        | Command::Doctor
        | Command::Service(_) => Ok(()),
    }
}

async fn kv_command(
    client: &astrid::client::Client,
    command: KvCommand,
    json: bool,
) -> Result<(), CliError> {
    match command {
        KvCommand::Get { key } => {
            let got: KvValue = client.call(Request::KvGet { key: key.clone() }).await?;
            let Some(value) = got.value else {
                return Err(CliError::NoSuchKey(key));
            };
            if json {
                let text = serde_json::json!({
                    "key": key,
                    "value": String::from_utf8_lossy(&value),
                    "bytes": value.len(),
                });
                emit(&format!("{text}\n"))?;
            } else {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        KvCommand::Put { key, value } => {
            let request = Request::KvPut {
                key,
                value: value.into_bytes(),
            };
            let done: Written = client.call(request).await?;
            show(json, &done, |d| {
                format!("stored {} ({} bytes)\n", d.target, d.bytes)
            })
        }
        KvCommand::Rm { key } => {
            let done: Removed = client.call(Request::KvDelete { key }).await?;
            show(json, &done, |d| {
                let what = if d.removed { "deleted" } else { "no such key" };
                format!("{what}: {}\n", d.target)
            })
        }
        KvCommand::Ls { prefix, limit } => {
            let request = Request::KvList {
                prefix,
                limit: Some(limit),
            };
            let listing: Listing = client.call(request).await?;
            show(json, &listing, |l| {
                let mut out = l.keys.join("\n");
                if !out.is_empty() {
                    out.push('\n');
                }
                if l.truncated {
                    out.push_str("(more keys; raise --limit)\n");
                }
                out
            })
        }
    }
}

async fn mcp_command(
    client: &astrid::client::Client,
    command: McpCommand,
    json: bool,
) -> Result<(), CliError> {
    match command {
        McpCommand::Ls => {
            let servers: Vec<McpServerInfo> = client.call(Request::ListMcpServers).await?;
            show(json, &servers, |s| render::mcp_servers(s))
        }
        McpCommand::Reload => {
            let report: McpReloadReport = client.call(Request::ReloadMcp).await?;
            show(json, &report, render::mcp_reload)
        }
        McpCommand::Tools { server } => {
            let tools: Vec<McpToolInfo> = client.call(Request::ListMcpTools { server }).await?;
            show(json, &tools, |t| render::mcp_tools(t))
        }
        McpCommand::Call {
            server,
            tool,
            arguments,
        } => {
            let arguments = match arguments {
                None => RawValue::nil(),
                Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(value @ serde_json::Value::Object(_)) => {
                        to_payload(&value).map_err(std::io::Error::other)?
                    }
                    Ok(other) => return Err(CliError::BadArguments(format!("got {other}"))),
                    Err(e) => return Err(CliError::BadArguments(e.to_string())),
                },
            };
            let result: McpToolResult = client
                .call(Request::CallMcpTool {
                    server,
                    tool,
                    arguments,
                })
                .await?;
            show(json, &result, render::mcp_result)?;
            if result.is_error {
                return Err(CliError::ToolFailed);
            }
            Ok(())
        }
    }
}

async fn caps_command(
    client: &astrid::client::Client,
    command: CapsCommand,
    json: bool,
) -> Result<(), CliError> {
    match command {
        CapsCommand::Ls { subject } => {
            let grants: Vec<Grant> = client.call(Request::ListCapabilities { subject }).await?;
            show(json, &grants, |g| render::grants(g))
        }
        CapsCommand::Grant { subject, resource } => {
            let grant: Grant = client
                .call(Request::GrantCapability { subject, resource })
                .await?;
            show(json, &grant, |g| {
                format!("granted {} to {}\n", g.resource, g.subject)
            })
        }
        CapsCommand::Revoke { subject, resource } => {
            let done: Removed = client
                .call(Request::RevokeCapability { subject, resource })
                .await?;
            show(json, &done, |d| {
                let what = if d.removed { "revoked" } else { "not granted" };
                format!("{what}: {}\n", d.target)
            })
        }
    }
}

async fn audit_command(
    client: &astrid::client::Client,
    command: AuditCommand,
    json: bool,
) -> Result<(), CliError> {
    match command {
        AuditCommand::Tail { n } => {
            let entries: Vec<AuditEntry> = client
                .call(Request::AuditTail {
                    n: Some(n),
                    from: None,
                })
                .await?;
            show(json, &entries, |e| render::audit(e))
        }
        AuditCommand::Prune => {
            let report: PruneReport = client.call(Request::AuditPrune).await?;
            show(json, &report, render::prune)
        }
        AuditCommand::Policy => {
            let config = client.config().await?;
            show(json, &config.audit_policy, |rules| {
                render::audit_policy(rules)
            })
        }
        AuditCommand::Verify => {
            let v: Verification = client.call(Request::AuditVerify).await?;
            show(json, &v, |v| {
                if v.ok {
                    let from = v.pruned.map_or_else(String::new, |p| {
                        format!(
                            " (entries {}..={} were pruned; checked from the anchor at {})",
                            p.first, p.last, p.last
                        )
                    });
                    format!(
                        "audit chain intact: {} entries, head {}{from}\n",
                        v.entries, v.head
                    )
                } else {
                    String::new()
                }
            })?;
            match (v.ok, v.first_bad) {
                (false, Some(entry)) => Err(CliError::AuditBroken {
                    entry,
                    reason: v.reason.unwrap_or_default(),
                }),
                _ => Ok(()),
            }
        }
    }
}

/// The absolute path a trust command names: `path` taken from the current directory, or
/// the command's workspace. A path that no longer exists is passed on as it is (it can still
/// be untrusted).
fn workspace_arg(target: &Target, path: Option<PathBuf>) -> Result<Option<String>, CliError> {
    let path = match path {
        None => target.workspace()?,
        Some(path) => {
            let absolute = std::env::current_dir()?.join(path);
            std::fs::canonicalize(&absolute).unwrap_or(absolute)
        }
    };
    Ok(Some(path.to_string_lossy().into_owned()))
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
        emit(&format!("{line}\n"))
    } else {
        emit(&format!("{}\n", render::event(event)))
    }
}
