//! The actor of one MCP server: starting its process, the `initialize` handshake, tools,
//! calls under the deadline, keepalive pings, and ending the process group with the actor.

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

use super::calls::InFlight;
use super::config::ServerConfig;
use super::convert::json_to_msgpack;
use super::faults::McpFaults;
use super::messages::{CallTool, McpError, McpToolInfo, McpToolResult};
use super::process::{die_with_the_daemon, find_program, limit_open_files};
use super::servers::McpServers;
use super::{HANDSHAKE_TIMEOUT, KEEPALIVE, PING_TIMEOUT, TERM_GRACE};
use super::{Recipe, groups, stderr, stdout};
use crate::metrics::{McpCalls, McpOutcome};
use crate::supervisor::{ExitNote, Fault, Inject, Terminate, apply_fault};

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
    faults: Arc<McpFaults>,
    /// Its calls, by outcome (the daemon's metrics).
    counted: Arc<McpCalls>,
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
            faults: recipe.faults,
            counted: recipe.calls,
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
        let stdout = stdout::BoundedLines::new(stdout, bounds, self.overflow.clone())
            .corrupting(Arc::clone(&self.faults));
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
            self.counted.record(McpOutcome::Unavailable);
            let server = self.config.name.clone();
            return Box::pin(std::future::ready(Err(McpError::NotReady(server))));
        };
        // Answered when the server answers, or when it goes away first.
        let (id, answer) = self.calls.open(&self.config.name);
        let params = CallToolRequestParams::new(tool.clone()).with_arguments(msg.arguments);
        let faults = self.faults.next_call();
        let call = async move {
            tokio::time::timeout(timeout, async move {
                let answer = peer.call_tool(params).await;
                if let Some(delay) = faults.delay {
                    tracing::warn!("injected fault: an MCP reply delayed");
                    tokio::time::sleep(delay).await;
                }
                answer
            })
            .await
        };
        ctx.spawn(call.into_actor(self).map(move |answer, act, ctx| {
            let result = act.tool_result(tool, timeout, answer, ctx);
            act.counted.record(match &result {
                Ok(r) if r.is_error => McpOutcome::ToolError,
                Ok(_) => McpOutcome::Ok,
                Err(McpError::Remote { .. }) => McpOutcome::Refused,
                Err(McpError::Deadline { .. }) => McpOutcome::Timeout,
                Err(_) => McpOutcome::Unavailable,
            });
            act.calls.answer(id, result);
        }));
        if faults.kill {
            // The call is in flight (its request about to be written): the server dies
            // under it, and the caller learns it from the connection's end.
            tracing::warn!(server = %self.config.name, "injected fault: MCP server killed mid-call");
            self.signal_group(rustix::process::Signal::KILL);
        }
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
        if self.faults.inject(&msg.0) {
            tracing::warn!(server = %self.config.name, fault = %msg.0, "injected fault");
        } else {
            apply_fault(&msg.0, ctx);
        }
    }
}
