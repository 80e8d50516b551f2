//! MCP servers as supervised children: the `mcp` supervisor starts one [`McpServerActor`]
//! per configured server (`config.rs`), each with a restart budget of its own. An actor owns
//! its server's process (a process group of its own, spoken to over stdio with the official
//! SDK, rmcp): it performs the `initialize` handshake, lists the tools and follows
//! `notifications/tools/list_changed`, and calls tools under the server's deadline.
//!
//! A server that exits, fails its handshake, sends a message past the bounds of its stdout
//! (`stdout.rs`: 16 MiB, 262,144 values and keys), or stops answering (a call runs past its
//! deadline and a `ping` then goes unanswered too, or a periodic `ping` does) is a crash:
//! the actor notes why, answers every call in flight with that reason (`calls.rs`), and
//! stops; the supervisor starts it again under its policy (past its budget it is `failed`).
//! Whenever the actor ends, the whole process group is terminated (SIGTERM, then SIGKILL):
//! no server, and nothing a server started, outlives it. Servers start with the open-file
//! limit the daemon started with, not the one it raised for its connections.
//!
//! Handles: [`CallTool`], and the supervision messages [`Terminate`] and [`Inject`]. The
//! table of servers that sessions read is `servers.rs`.

mod calls;
pub mod config;
pub mod groups;
mod messages;
pub mod servers;
pub mod stderr;
pub mod stdout;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, ResponseFuture, WrapFuture,
};
use process_wrap::tokio::ChildWrapper;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, PingRequest, Tool,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};

use self::calls::InFlight;
use self::config::ServerConfig;
pub use self::messages::{
    CallTool, McpError, McpReloadReport, McpServerInfo, McpServerState, McpToolInfo, McpToolResult,
};
use self::servers::McpServers;
use crate::protocol::raw::{Cursor, Item};
use crate::supervisor::{ExitNote, Fault, Inject, Terminate, apply_fault};
use crate::trust::WorkspaceTrust;
use crate::trust::snapshot::config_dir;

/// How long a server has to start and answer `initialize`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a quiet server is asked whether it is still there, and how long it has to
/// answer.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a `ping` may take before the server counts as hung.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the process group has after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(500);

/// Makes the child specs of servers, at boot (from `mcp.toml`) and at run time (from
/// capsule manifests' `[[mcp_server]]`, started and stopped with their capsule).
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The servers' thread.
    pub arbiter: actix::ArbiterHandle,
    /// The working directory of servers whose configuration names none.
    pub workspace: PathBuf,
    /// The shared table of servers.
    pub table: Arc<McpServers>,
    /// The `mcp` supervisor, for servers started at run time.
    pub supervisor: crate::supervisor::ChildRef<crate::supervisor::SupervisorActor>,
    /// The `mcp.toml` files, later ones overriding earlier ones by name.
    pub files: Vec<PathBuf>,
    /// Whether the workspace's own `mcp.toml` may run.
    pub trust: Arc<WorkspaceTrust>,
    /// The soft open-file limit servers start with (the daemon's own when `None`).
    pub open_file_limit: Option<u64>,
}

impl Launcher {
    /// The child spec of `server`, whose actor's address goes to `slot`.
    pub fn spec(
        &self,
        server: &Arc<ServerConfig>,
        slot: crate::supervisor::ChildRef<McpServerActor>,
    ) -> crate::supervisor::ChildSpec {
        let recipe = Recipe {
            config: Arc::clone(server),
            workspace: self.workspace.clone(),
            table: Arc::clone(&self.table),
            open_file_limit: self.open_file_limit,
        };
        crate::supervisor::ChildSpec::worker_in(
            servers::child_name(&server.name),
            server.restart.kind,
            slot,
            self.arbiter.clone(),
            move || Ok(recipe.clone()),
            McpServerActor::build,
        )
        .own_budget(server.restart.policy)
        .shutdown_timeout(Duration::from_secs(2))
    }

    /// Reads the configuration files again and applies the difference (`ReloadMcp`):
    /// unchanged servers run on, changed ones restart, removed ones stop, new ones start,
    /// and capsules' servers waiting for a name the files gave up start too.
    pub fn reload(&self) -> McpReloadReport {
        let reload = self.table.reload(self.read_config());
        tracing::info!(report = ?reload.report, "MCP configuration reloaded");
        self.stop(reload.stop);
        self.start(reload.start);
        self.start_waiting();
        McpReloadReport {
            servers: self.table.list(),
            ..reload.report
        }
    }

    /// The configuration files, read now; their bad entries are logged. The workspace's
    /// file is read only when the workspace is trusted; otherwise its servers are listed as
    /// untrusted.
    pub fn read_config(&self) -> config::McpConfig {
        let trust = self.trust.check();
        let own = config_dir(self.trust.workspace()).join(config::FILE);
        let held = (!trust.allows()).then_some(own);
        let files: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|f| Some(*f) != held.as_ref())
            .cloned()
            .collect();
        let mut config = config::load(&files);
        if let Some(file) = held {
            let why = trust.message.unwrap_or_default();
            config.held = config::held(&file, &why, &config);
        }
        for error in &config.errors {
            tracing::error!("MCP configuration: {error}");
        }
        for held in &config.held {
            tracing::warn!(server = %held.name, file = %held.source.display(), "MCP server not run: its workspace is not trusted");
        }
        config
    }

    /// Starts the servers a capsule declares. A name already taken (by `mcp.toml` or
    /// another capsule) is refused: logged, and listed as invalid, until the name is free
    /// ([`start_waiting`](Self::start_waiting)).
    pub fn start_for(&self, capsule: &str, servers: &[ServerConfig]) {
        for server in servers {
            let server = Arc::new(server.clone());
            match self.table.add(capsule, Arc::clone(&server)) {
                Ok(slot) => self.start(vec![(server, slot)]),
                Err(e) => tracing::error!(%capsule, "{e}"),
            }
        }
    }

    /// Stops the servers `capsule` declared (its unloading).
    pub fn stop_for(&self, capsule: &str) {
        self.stop(self.table.remove_owned_by(capsule));
    }

    /// Starts the capsules' servers refused for a name that is free now (after a reload).
    pub fn start_waiting(&self) {
        self.start(self.table.admit_waiting());
    }

    /// Stops the servers of every capsule (a new `capsules` supervisor starts with none
    /// loaded; each capsule's servers start again as it loads).
    pub fn stop_all_capsules(&self) {
        self.stop(self.table.remove_all_capsules());
    }

    /// Starts each server (a server of the name still stopping starts once it is gone).
    fn start(&self, servers: Vec<servers::ToStart>) {
        let Some(supervisor) = self.supervisor.get() else {
            return;
        };
        for (server, slot) in servers {
            supervisor.do_send(crate::supervisor::StartChild(self.spec(&server, slot)));
        }
    }

    fn stop(&self, servers: Vec<String>) {
        let Some(supervisor) = self.supervisor.get() else {
            return;
        };
        for name in servers {
            supervisor.do_send(crate::supervisor::StopChild {
                name: servers::child_name(&name),
            });
        }
    }
}

/// What a server's actor is built from.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The server's configuration.
    pub config: Arc<ServerConfig>,
    /// The working directory when the configuration names none (the workspace root).
    pub workspace: PathBuf,
    /// The shared table of servers.
    pub table: Arc<McpServers>,
    /// The soft open-file limit the server starts with (the daemon's own when `None`).
    pub open_file_limit: Option<u64>,
}

type Service = RunningService<RoleClient, Client>;

/// The connection to a server: its stdin, and its stdout within [`stdout::Bounds`].
type Transport = AsyncRwTransport<
    RoleClient,
    stdout::BoundedLines<tokio::process::ChildStdout>,
    tokio::process::ChildStdin,
>;

/// The actor of one MCP server.
#[derive(Debug)]
pub struct McpServerActor {
    config: Arc<ServerConfig>,
    workspace: PathBuf,
    table: Arc<McpServers>,
    note: ExitNote,
    open_file_limit: Option<u64>,
    peer: Option<rmcp::Peer<RoleClient>>,
    /// The server's process (killed when dropped).
    child: Option<Box<dyn ChildWrapper>>,
    /// The process group (the server is its leader).
    pgid: Option<i32>,
    /// Why the server's stdout was cut off, once it was.
    overflow: stdout::Overflow,
    calls: InFlight,
}

/// The client side of the connection: follows tool-list changes.
#[derive(Debug, Clone)]
struct Client {
    server: String,
    table: Arc<McpServers>,
}

impl ClientHandler for Client {
    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        match context.peer.list_all_tools().await {
            Ok(tools) => {
                tracing::info!(server = %self.server, tools = tools.len(), "MCP tools changed");
                self.table
                    .set_tools(&self.server, tool_infos(&self.server, tools));
            }
            Err(e) => tracing::warn!(server = %self.server, "cannot list changed tools: {e}"),
        }
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("astrid-daemon", env!("CARGO_PKG_VERSION")),
        )
    }
}

fn tool_infos(server: &str, tools: Vec<Tool>) -> Vec<McpToolInfo> {
    tools
        .into_iter()
        .map(|t| McpToolInfo {
            server: server.to_owned(),
            name: t.name.into_owned(),
            description: t.description.map(std::borrow::Cow::into_owned),
            input_schema: json_to_msgpack(&serde_json::Value::Object((*t.input_schema).clone())),
        })
        .collect()
}

/// Makes the server die with the daemon, even with a daemon killed by SIGKILL (which
/// cleans nothing up): the kernel sends the server SIGKILL when the thread that started it
/// ends, and the servers' thread lives as long as the daemon. (What the server started in
/// turn is killed with its process group at every other exit; after a SIGKILL, by the
/// session's next daemon: see [`groups`].)
fn die_with_the_daemon(cmd: &mut tokio::process::Command) {
    use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};
    let daemon = getpid();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the child between fork and exec; it allocates nothing
    // and makes only async-signal-safe system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::KILL))?;
            // A daemon that died before the prctl would never send the signal.
            if getppid() == Some(daemon) {
                Ok(())
            } else {
                Err(std::io::ErrorKind::NotConnected.into())
            }
        });
    }
}

/// Gives the server the soft open-file limit `soft` (the one the daemon started with,
/// before raising its own), within the hard limit it inherits.
fn limit_open_files(cmd: &mut tokio::process::Command, soft: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the child between fork and exec; it allocates nothing
    // and makes only async-signal-safe system calls (prlimit).
    unsafe {
        cmd.pre_exec(move || {
            let Rlimit { maximum, .. } = getrlimit(Resource::Nofile);
            let current = maximum.map_or(soft, |hard| soft.min(hard));
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(current),
                    maximum,
                },
            )?;
            Ok(())
        });
    }
}

/// `command` itself when it has a `/`; else the first executable of that name in the
/// daemon's `PATH` (or the name as is, which then fails to start with "not found").
fn find_program(command: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    if command.contains('/') {
        return PathBuf::from(command);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(command))
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| PathBuf::from(command))
}

/// A JSON value as a MessagePack value (the wire's), through serde.
pub fn json_to_msgpack(value: &serde_json::Value) -> rmpv::Value {
    rmpv::ext::to_value(value).unwrap_or(rmpv::Value::Nil)
}

/// Most items (scalars, arrays, maps) in a tool's arguments: a JSON tree costs tens of bytes
/// an item, many times what the item takes in MessagePack.
pub const MAX_ARGUMENT_ITEMS: usize = 65_536;

/// A MessagePack value as JSON: maps need string keys, binary becomes an array of bytes.
///
/// # Errors
///
/// When the value has no JSON form (a map with non-string keys), or more than
/// [`MAX_ARGUMENT_ITEMS`] items.
pub fn msgpack_to_json(value: &crate::protocol::RawValue) -> Result<serde_json::Value, String> {
    json_shaped(&mut Cursor::new(value.as_bytes()), &mut 0)?;
    serde_json::to_value(value).map_err(|e| e.to_string())
}

/// Walks one value, counting its items into `items`, and checks that its maps are keyed by
/// strings; stops at the first item past [`MAX_ARGUMENT_ITEMS`].
fn json_shaped(cursor: &mut Cursor<'_>, items: &mut usize) -> Result<(), String> {
    *items += 1;
    if *items > MAX_ARGUMENT_ITEMS {
        return Err(format!(
            "more than {MAX_ARGUMENT_ITEMS} items (values, arrays and maps)"
        ));
    }
    // The value was checked when it arrived: reading it cannot fail, and nesting is bounded.
    match cursor.item().map_err(|e| e.to_string())? {
        Item::Array(n) => (0..n).try_for_each(|_| json_shaped(cursor, items)),
        Item::Map(n) => (0..n).try_for_each(|_| {
            if !matches!(cursor.item().map_err(|e| e.to_string())?, Item::Str(_)) {
                return Err("a map with keys that are not strings has no JSON form".into());
            }
            *items += 1;
            json_shaped(cursor, items)
        }),
        _ => Ok(()),
    }
}

impl McpServerActor {
    /// The actor of the recipe's server, on the current thread.
    pub fn build(recipe: Recipe, note: ExitNote, _: &mut Context<Self>) -> Self {
        Self {
            config: recipe.config,
            workspace: recipe.workspace,
            table: recipe.table,
            note,
            open_file_limit: recipe.open_file_limit,
            peer: None,
            child: None,
            pgid: None,
            overflow: stdout::Overflow::default(),
            calls: InFlight::default(),
        }
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    /// Notes why the server is down, answers the calls in flight, and stops (the supervisor
    /// restarts it).
    fn crash(&mut self, reason: String, ctx: &mut Context<Self>) {
        tracing::warn!(server = %self.config.name, "MCP server down: {reason}");
        self.calls.fail_all(&self.config.name, &reason);
        self.note.fail(reason);
        self.peer = None;
        ctx.stop();
    }

    /// Why the connection failed: the server's message over the bound, if that is what
    /// ended it, else `what` happened.
    fn why(&self, what: String) -> String {
        self.overflow.reason().map_or(what, str::to_owned)
    }

    /// Starts the process in a process group of its own, with exactly the configured
    /// environment plus the daemon's mark ([`groups::MARK_VAR`]) and the servers' open-file
    /// limit; returns it, the connection over its stdin and stdout, and its stderr.
    fn spawn(
        &self,
    ) -> std::io::Result<(
        Box<dyn ChildWrapper>,
        Transport,
        Option<tokio::process::ChildStderr>,
    )> {
        let config = &self.config;
        // The server's environment is not the daemon's: a bare name is looked up in the
        // daemon's PATH here, not in the server's.
        let mut cmd = tokio::process::Command::new(find_program(&config.command));
        cmd.args(&config.args)
            .env_clear()
            .current_dir(config.cwd.as_deref().unwrap_or(&self.workspace));
        for name in &config.inherit_env {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.envs(&config.env)
            .env(groups::MARK_VAR, self.table.groups().mark())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_the_daemon(&mut cmd);
        if let Some(soft) = self.open_file_limit {
            limit_open_files(&mut cmd, soft);
        }
        let mut child = process_wrap::tokio::CommandWrap::from(cmd)
            .wrap(process_wrap::tokio::ProcessGroup::leader())
            .wrap(process_wrap::tokio::KillOnDrop)
            .spawn()?;
        let piped = || std::io::Error::other("a standard stream of the server is not piped");
        let stdin = child.stdin().take().ok_or_else(piped)?;
        let stdout = child.stdout().take().ok_or_else(piped)?;
        let stderr = child.stderr().take();
        let bounds = stdout::Bounds::default();
        let stdout = stdout::BoundedLines::new(stdout, bounds, self.overflow.clone());
        // The SDK's own bound on a line (its newline included) is never reached first.
        let transport =
            AsyncRwTransport::new_client(stdout, stdin).with_max_line_length(bounds.bytes + 1);
        Ok((child, transport, stderr))
    }

    /// Sends `signal` to the server's whole process group.
    fn signal_group(&self, signal: rustix::process::Signal) {
        if let Some(pgid) = self.pgid.and_then(rustix::process::Pid::from_raw) {
            // The group may be gone already (ESRCH).
            let _ = rustix::process::kill_process_group(pgid, signal);
        }
    }

    /// Asks the server whether it is still there; one that does not answer is hung.
    fn check_alive(&mut self, why: &'static str, ctx: &mut Context<Self>) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        let ping = async move {
            let request = PingRequest {
                method: rmcp::model::PingRequestMethod,
                extensions: rmcp::model::Extensions::default(),
            };
            tokio::time::timeout(PING_TIMEOUT, peer.send_request(request.into())).await
        };
        ctx.spawn(
            ping.into_actor(self)
                .map(move |answer, act, ctx| match answer {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => act.crash(format!("no answer to ping ({why}): {e}"), ctx),
                    Err(_) => act.crash(
                        format!(
                            "stopped answering: no answer to ping within {} ms ({why})",
                            PING_TIMEOUT.as_millis()
                        ),
                        ctx,
                    ),
                }),
        );
    }

    fn connected(&mut self, service: Service, tools: Vec<Tool>, ctx: &mut Context<Self>) {
        let info = service
            .peer_info()
            .and_then(|p| p.server_info.clone())
            .map_or_else(
                || "(unnamed)".to_owned(),
                |i| format!("{} {}", i.name, i.version),
            );
        tracing::info!(server = %self.config.name, %info, tools = tools.len(), "MCP server ready");
        self.peer = Some(service.peer().clone());
        self.table.ready(
            &self.config.name,
            info,
            tool_infos(&self.config.name, tools),
        );
        // The connection ends when the server exits or its output closes.
        ctx.spawn(service.waiting().into_actor(self).map(|quit, act, ctx| {
            let reason = match quit {
                Ok(rmcp::service::QuitReason::Cancelled) => return,
                Ok(reason) => format!("the server closed the connection ({reason:?})"),
                Err(e) => format!("the connection task failed: {e}"),
            };
            act.crash(act.why(reason), ctx);
        }));
        ctx.run_interval(KEEPALIVE, |act, ctx| act.check_alive("keepalive", ctx));
    }
}

impl Actor for McpServerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (child, transport, stderr) = match self.spawn() {
            Ok(spawned) => spawned,
            Err(e) => {
                let reason = format!("cannot start `{}`: {e}", self.config.command);
                return self.crash(reason, ctx);
            }
        };
        let pid = child.id();
        self.child = Some(child);
        self.pgid = pid.and_then(|p| i32::try_from(p).ok());
        if let Some(pgid) = self.pgid {
            self.table.groups().track(pgid);
        }
        self.table.spawned(self.name(), pid);
        if let Some(stderr) = stderr {
            // What the server logs goes to the daemon's log, line by line, within bounds.
            ctx.spawn(self::stderr::forward(self.config.name.clone(), stderr).into_actor(self));
        }
        let client = Client {
            server: self.config.name.clone(),
            table: Arc::clone(&self.table),
        };
        let handshake = async move {
            let service = tokio::time::timeout(HANDSHAKE_TIMEOUT, client.serve(transport))
                .await
                .map_err(|_| {
                    format!(
                        "no answer to `initialize` within {} s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    )
                })?
                .map_err(|e| format!("the `initialize` handshake failed: {e}"))?;
            let tools = tokio::time::timeout(HANDSHAKE_TIMEOUT, service.list_all_tools())
                .await
                .map_err(|_| "no answer to `tools/list`".to_owned())?
                .map_err(|e| format!("`tools/list` failed: {e}"))?;
            Ok::<_, String>((service, tools))
        };
        // Not `ctx.wait`: a stop must not wait for a server that never answers. Calls are
        // routed here only once the server is running.
        ctx.spawn(
            handshake
                .into_actor(self)
                .map(|outcome, act, ctx| match outcome {
                    Ok((service, tools)) => act.connected(service, tools, ctx),
                    Err(reason) => act.crash(act.why(reason), ctx),
                }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Stopped without a crash: a reload, the daemon's shutdown, an injected fault (a
        // panic too: actix runs `stopped` as it drops the actor's context).
        self.calls.fail_all(&self.config.name, "its actor stopped");
        // Whatever ended the actor, the server's process group goes with it: SIGTERM now,
        // SIGKILL after a grace period (from a thread, as the arbiter may be stopping).
        self.signal_group(rustix::process::Signal::TERM);
        // The process is killed when dropped, so it is dropped after the grace period too.
        let child = self.child.take();
        if let Some(pgid) = self.pgid.take() {
            let table = Arc::clone(&self.table);
            std::thread::spawn(move || {
                std::thread::sleep(TERM_GRACE);
                if let Some(group) = rustix::process::Pid::from_raw(pgid) {
                    let _ =
                        rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                }
                drop(child);
                table.groups().ended(pgid);
            });
        }
    }
}

impl Handler<CallTool> for McpServerActor {
    type Result = ResponseFuture<Result<McpToolResult, McpError>>;

    fn handle(&mut self, msg: CallTool, ctx: &mut Context<Self>) -> Self::Result {
        let timeout = self.config.call_timeout;
        let tool = msg.tool;
        let Some(peer) = self.peer.clone() else {
            let server = self.config.name.clone();
            return Box::pin(std::future::ready(Err(McpError::NotReady(server))));
        };
        // Answered when the server answers, or when it goes away first.
        let (id, answer) = self.calls.open(&self.config.name);
        let params = CallToolRequestParams::new(tool.clone()).with_arguments(msg.arguments);
        let call = async move { tokio::time::timeout(timeout, peer.call_tool(params)).await };
        ctx.spawn(call.into_actor(self).map(move |answer, act, ctx| {
            let result = act.tool_result(tool, timeout, answer, ctx);
            act.calls.answer(id, result);
        }));
        Box::pin(answer)
    }
}

/// A call's outcome: the server's answer, or the deadline passed first.
type Answered =
    Result<Result<rmcp::model::CallToolResult, rmcp::ServiceError>, tokio::time::error::Elapsed>;

impl McpServerActor {
    /// What the server's answer to a call of `tool` means.
    fn tool_result(
        &mut self,
        tool: String,
        timeout: Duration,
        answer: Answered,
        ctx: &mut Context<Self>,
    ) -> Result<McpToolResult, McpError> {
        let server = self.config.name.clone();
        let result = match answer {
            Ok(Ok(result)) => result,
            Ok(Err(rmcp::ServiceError::McpError(e))) => {
                return Err(McpError::Remote {
                    server,
                    message: e.message.into_owned(),
                });
            }
            Ok(Err(e)) => {
                return Err(McpError::Gone {
                    server,
                    reason: self.why(e.to_string()),
                });
            }
            Err(_) => {
                // A slow tool, or a server that stopped answering: ask.
                self.check_alive("a call ran past its deadline", ctx);
                return Err(McpError::Deadline {
                    server,
                    tool,
                    timeout,
                });
            }
        };
        Ok(McpToolResult {
            server,
            tool,
            content: result
                .content
                .iter()
                .map(|c| json_to_msgpack(&serde_json::to_value(c).unwrap_or_default()))
                .collect(),
            structured: result.structured_content.as_ref().map(json_to_msgpack),
            is_error: result.is_error.unwrap_or(false),
        })
    }
}

impl Handler<Terminate> for McpServerActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Inject> for McpServerActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        if msg.0 == Fault::Trap {
            // Not a capsule: the supervisor refuses `trap` before it gets here.
            return;
        }
        apply_fault(msg.0, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RawValue;

    fn raw(value: &rmpv::Value) -> RawValue {
        RawValue::from_value(value).unwrap()
    }

    #[test]
    fn arguments_become_json_within_their_bounds() {
        let args = raw(&rmpv::Value::Map(vec![
            ("text".into(), "hi".into()),
            (
                "n".into(),
                rmpv::Value::Array(vec![1.into(), rmpv::Value::Nil]),
            ),
        ]));
        assert_eq!(
            msgpack_to_json(&args).unwrap(),
            serde_json::json!({"text": "hi", "n": [1, null]})
        );
        let numbered = raw(&rmpv::Value::Map(vec![(1.into(), 2.into())]));
        assert!(
            msgpack_to_json(&numbered)
                .unwrap_err()
                .contains("not strings")
        );
        // The array and its items: one item too many, refused before any JSON is built.
        let items = |n: usize| raw(&rmpv::Value::Array(vec![rmpv::Value::Nil; n]));
        assert!(msgpack_to_json(&items(MAX_ARGUMENT_ITEMS - 1)).is_ok());
        let error = msgpack_to_json(&items(MAX_ARGUMENT_ITEMS)).unwrap_err();
        assert!(error.contains("more than 65536 items"), "{error}");
    }
}
