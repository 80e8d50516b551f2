//! The one place where a request becomes work: `Ping` is answered here, everything else is
//! sent to the actor that owns it, under the call deadline, as a future spawned into the
//! session so replies leave in completion order.
//!
//! Every request but `Ping` is written to the audit log with its outcome. A request that
//! changes state is answered only once its entry is durable; the others are recorded without
//! waiting.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{ActorFutureExt, AsyncContext, Context, MailboxError};
use serde::Serialize;
use tokio::sync::oneshot;

use super::{SessionActor, SessionDeps};
use crate::audit::{AuditActor, Record, Tail, VerifyChain};
use crate::bus::{BusError, GetBusStats, Publish, topic::validate_topic};
use crate::caps::{GrantCapability, ListCapabilities, RevokeCapability};
use crate::capsule::{Answer, Call};
use crate::capsules::loaded::Route;
use crate::capsules::{GetCapsuleMetadata, GetCommands, ListCapsules, ReloadCapsules};
use crate::error::KernelError;
use crate::mcp::{self, CallTool, McpError, McpToolResult};
use crate::protocol::{
    ErrorBody, FaultInjected, KvValue, PROTOCOL_VERSION, RawValue, Removed, Request, ShutdownAck,
    Status, Written,
};
use crate::store::{self, CLIENT_NAMESPACE, StoreActor};
use crate::supervisor::{ChildRef, GetTree, InjectFault, SupervisorActor};
use crate::vfs;

/// `KvList` returns at most this many keys when no limit is given.
const DEFAULT_LIST_LIMIT: usize = 1000;
/// Upper bound of `KvList` sizes.
const MAX_LISTING: usize = 10_000;
/// Upper bound of `AuditTail` sizes (entries are up to a few KiB each).
const MAX_TAIL: usize = 1000;

/// The audit entry a request will get, once its outcome is known.
#[derive(Debug)]
pub(super) struct AuditNote {
    audit: ChildRef<AuditActor>,
    actor: String,
    action: &'static str,
    target: String,
    durable: bool,
    timeout: Duration,
}

impl AuditNote {
    /// The entry of a successful request, for work that writes it itself (see
    /// `run_written`).
    fn entry(&self) -> Record {
        Record::new(self.actor.clone(), self.action, self.target.clone(), "ok")
    }

    /// Records the outcome, waiting for durability when the request changes state.
    async fn finish<T>(self, result: &Result<T, KernelError>) {
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => ErrorBody::from(e).to_string(),
        };
        if self.durable {
            let (audit, timeout) = (self.audit.clone(), self.timeout);
            let record = Record::new(self.actor, self.action, self.target, outcome);
            record_durably(&audit, record, timeout).await;
        } else {
            self.record(outcome);
        }
    }

    /// Records the outcome without waiting (requests that change no state).
    pub(super) fn record(self, outcome: impl Into<String>) {
        if let Some(audit) = self.audit.get() {
            audit.do_send(Record::new(self.actor, self.action, self.target, outcome));
        }
    }

    /// Names what the request is about, when the request itself left it implicit.
    pub(super) fn set_target(&mut self, target: String) {
        self.target = target;
    }
}

/// Appends `record` and waits until it is durable, retrying while the audit actor restarts.
async fn record_durably(audit: &ChildRef<AuditActor>, record: Record, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match audit.call(record.clone(), timeout).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => {
                tracing::error!(action = %record.action, "audit entry not written: {e}");
                return;
            }
            Err(e) if Instant::now() >= deadline => {
                tracing::error!(action = %record.action, "audit entry not written: {e}");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

impl SessionActor {
    pub(super) fn dispatch(&mut self, id: u64, request: Request, ctx: &mut Context<Self>) {
        let request = match request {
            Request::Ping => return self.reply_ok(id, "pong"),
            Request::InvokeCommand { name, args } => return self.invoke(id, name, args),
            other => other,
        };
        let deps = Arc::clone(&self.deps);
        let note = AuditNote {
            audit: deps.actors.audit.clone(),
            actor: self.audit_actor(),
            action: request.name(),
            target: request.target(),
            durable: request.mutates(),
            timeout: deps.limits.call_timeout,
        };
        let t = deps.limits.call_timeout;
        let a = &deps.actors;
        match request {
            Request::Ping => {}
            Request::GetStatus => self.run(id, ctx, note, status(Arc::clone(&deps))),
            Request::Shutdown { reason } => {
                let reason = if reason.is_empty() {
                    format!("requested by {}", self.source())
                } else {
                    reason
                };
                let reason = deps.shutdown.request(reason);
                let ack = ShutdownAck {
                    shutting_down: true,
                    reason,
                };
                self.run(id, ctx, note, async move { Ok(ack) });
            }
            Request::ListCapsules => {
                self.run(id, ctx, note, call(&a.capsules, ListCapsules, t));
            }
            Request::ReloadCapsules => {
                self.run(id, ctx, note, call(&a.capsules, ReloadCapsules, t));
            }
            Request::GetCommands => self.run(id, ctx, note, call(&a.capsules, GetCommands, t)),
            Request::GetCapsuleMetadata { name } => {
                let ask = call(&a.capsules, GetCapsuleMetadata { name }, t);
                self.run(id, ctx, note, async move { Ok(ask.await??) });
            }
            Request::GetSupervisionTree => {
                self.run(id, ctx, note, ask_supervisor(&deps.supervisor, GetTree, t));
            }
            Request::Subscribe { pattern } => self.subscribe(id, pattern, note, ctx),
            Request::Unsubscribe { pattern } => self.unsubscribe(id, pattern, note, ctx),
            Request::Publish { topic, payload } => {
                if let Err(e) = check_publish(&deps, &topic) {
                    return self.refuse_request(id, note, &e);
                }
                let msg = Publish {
                    topic,
                    payload,
                    source: self.source(),
                };
                let ask = call(&a.bus, msg, t);
                self.run(id, ctx, note, async move { Ok(ask.await??) });
            }
            Request::InjectFault { target, fault } => {
                if !deps.info.fault_injection {
                    return self.refuse_request(id, note, &KernelError::FaultInjectionDisabled);
                }
                tracing::warn!(connection = self.id, %target, %fault, "fault injection requested");
                let msg = InjectFault {
                    target: target.clone(),
                    fault,
                };
                let ask = ask_supervisor(&deps.supervisor, msg, t);
                self.run(id, ctx, note, async move {
                    ask.await??;
                    Ok(FaultInjected { target, fault })
                });
            }
            other => self.dispatch_services(id, other, note, ctx),
        }
    }

    /// `InvokeCommand`: queued for the capsule's actor through the table of loaded
    /// capsules; the actor writes the answer straight into this connection.
    fn invoke(&mut self, id: u64, command: String, args: Vec<String>) {
        let Route { capsule, queue } = match self.deps.capsules.route(&command) {
            Ok(route) => route,
            Err(e) => return self.reply_err(Some(id), &ErrorBody::from(&KernelError::from(e))),
        };
        let reply = match self.out.take(id, self.deps.limits.max_in_flight) {
            Ok(reply) => reply,
            Err(error) => return self.reply_err(Some(id), &ErrorBody::from(&error)),
        };
        queue.push(Call {
            command,
            args,
            answer: Answer::new(capsule, reply),
        });
    }

    /// The kernel-service requests: key-value store, capabilities, audit, workspace files.
    fn dispatch_services(
        &mut self,
        id: u64,
        request: Request,
        note: AuditNote,
        ctx: &mut Context<Self>,
    ) {
        match request {
            Request::KvGet { .. }
            | Request::KvPut { .. }
            | Request::KvDelete { .. }
            | Request::KvList { .. } => self.dispatch_kv(id, request, note, ctx),
            Request::VfsRead { .. }
            | Request::VfsWrite { .. }
            | Request::VfsList { .. }
            | Request::VfsStat { .. }
            | Request::VfsRemove { .. }
            | Request::VfsMkdir { .. } => self.dispatch_vfs(id, request, note, ctx),
            Request::ListMcpServers
            | Request::ReloadMcp
            | Request::ListMcpTools { .. }
            | Request::CallMcpTool { .. } => self.dispatch_mcp(id, request, note, ctx),
            Request::TrustWorkspace { .. }
            | Request::UntrustWorkspace { .. }
            | Request::ListTrust => self.dispatch_trust(id, request, note, ctx),
            _ => self.dispatch_caps_audit(id, request, note, ctx),
        }
    }

    fn dispatch_mcp(
        &mut self,
        id: u64,
        request: Request,
        note: AuditNote,
        ctx: &mut Context<Self>,
    ) {
        let deps = Arc::clone(&self.deps);
        match request {
            Request::ListMcpServers => {
                let servers = deps.mcp.table.list();
                self.run(id, ctx, note, async move { Ok(servers) });
            }
            Request::ReloadMcp => {
                // Off this thread: checking the workspace's trust reads and hashes files.
                let launcher = deps.mcp.clone();
                let reload = blocking("reloaded the MCP configuration", move || {
                    Ok(launcher.reload())
                });
                self.run(id, ctx, note, reload);
            }
            Request::ListMcpTools { server } => {
                let tools = deps
                    .mcp
                    .table
                    .tools(server.as_deref())
                    .map_err(KernelError::from);
                self.run(id, ctx, note, async move { tools });
            }
            Request::CallMcpTool {
                server,
                tool,
                arguments,
            } => {
                let call = call_mcp_tool(&deps, &server, tool, arguments);
                self.run(id, ctx, note, call);
            }
            _ => {}
        }
    }

    fn dispatch_kv(&mut self, id: u64, request: Request, note: AuditNote, ctx: &mut Context<Self>) {
        let store = self.deps.actors.store.clone();
        let t = self.deps.limits.call_timeout;
        let ns = || CLIENT_NAMESPACE.to_owned();
        match request {
            Request::KvGet { key } => {
                let ask = call(
                    &store,
                    store::Get {
                        namespace: ns(),
                        key: key.clone(),
                    },
                    t,
                );
                self.run(id, ctx, note, async move {
                    Ok(KvValue {
                        value: ask.await??,
                        key,
                    })
                });
            }
            Request::KvPut { key, value } => {
                let bytes = value.len() as u64;
                let put = store::Put {
                    namespace: ns(),
                    key: key.clone(),
                    value,
                    audit: Some(note.entry()),
                };
                let ask = write(&store, store::Write::Put(put), t);
                self.run_written(id, ctx, note, async move {
                    ask.await?;
                    Ok(Written { target: key, bytes })
                });
            }
            Request::KvDelete { key } => {
                let delete = store::Delete {
                    namespace: ns(),
                    key: key.clone(),
                    audit: Some(note.entry()),
                };
                let ask = write(&store, store::Write::Delete(delete), t);
                self.run_written(id, ctx, note, async move {
                    let removed = ask.await?;
                    Ok(Removed {
                        target: key,
                        removed,
                    })
                });
            }
            Request::KvList { prefix, limit } => {
                let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT).min(MAX_LISTING);
                let list = store::List {
                    namespace: ns(),
                    prefix,
                    limit,
                };
                let ask = call(&store, list, t);
                self.run(id, ctx, note, async move { Ok(ask.await??) });
            }
            _ => {}
        }
    }

    fn dispatch_caps_audit(
        &mut self,
        id: u64,
        request: Request,
        note: AuditNote,
        ctx: &mut Context<Self>,
    ) {
        let a = self.deps.actors.clone();
        let t = self.deps.limits.call_timeout;
        match request {
            Request::GrantCapability { subject, resource } => {
                let ask = call(&a.caps, GrantCapability { subject, resource }, t);
                self.run(id, ctx, note, async move { Ok(ask.await??) });
            }
            Request::RevokeCapability { subject, resource } => {
                let target = format!("{subject}:{resource}");
                let ask = call(&a.caps, RevokeCapability { subject, resource }, t);
                self.run(id, ctx, note, async move {
                    let removed = ask.await??;
                    Ok(Removed { target, removed })
                });
            }
            Request::ListCapabilities { subject } => {
                self.run(
                    id,
                    ctx,
                    note,
                    call(&a.caps, ListCapabilities { subject }, t),
                );
            }
            Request::AuditTail { n, from } => {
                let n = n.unwrap_or(20).min(MAX_TAIL);
                let ask = call(&a.audit, Tail { n, from }, t);
                self.run(id, ctx, note, async move { Ok(ask.await??) });
            }
            Request::AuditVerify => {
                let ask = call(&a.audit, VerifyChain, t);
                self.run(id, ctx, note, async move { Ok(ask.await??) });
            }
            _ => {}
        }
    }

    fn dispatch_vfs(
        &mut self,
        id: u64,
        request: Request,
        note: AuditNote,
        ctx: &mut Context<Self>,
    ) {
        let vfs = self.deps.actors.vfs.clone();
        let t = self.deps.limits.call_timeout;
        match request {
            Request::VfsRead { path, offset, len } => {
                let ask = call(&vfs, vfs::Read { path, offset, len }, t);
                self.run(id, ctx, note, async move { Ok(ask.await??) });
            }
            Request::VfsWrite {
                path,
                data,
                create_dirs,
            } => {
                let write = vfs::Write {
                    path: path.clone(),
                    data,
                    create_dirs,
                };
                let ask = call(&vfs, write, t);
                self.run(id, ctx, note, async move {
                    let bytes = ask.await??;
                    Ok(Written {
                        target: path,
                        bytes,
                    })
                });
            }
            Request::VfsList { path } => {
                let ask = call(&vfs, vfs::List { path }, t);
                self.run(id, ctx, note, async move { Ok(ask.await??) });
            }
            Request::VfsStat { path } => {
                let ask = call(&vfs, vfs::Stat { path }, t);
                self.run(id, ctx, note, async move { Ok(ask.await??) });
            }
            Request::VfsRemove { path, recursive } => {
                let ask = call(
                    &vfs,
                    vfs::Remove {
                        path: path.clone(),
                        recursive,
                    },
                    t,
                );
                self.run(id, ctx, note, async move {
                    ask.await??;
                    Ok(Removed {
                        target: path,
                        removed: true,
                    })
                });
            }
            Request::VfsMkdir { path, parents } => {
                let ask = call(
                    &vfs,
                    vfs::Mkdir {
                        path: path.clone(),
                        parents,
                    },
                    t,
                );
                self.run(id, ctx, note, async move {
                    ask.await??;
                    Ok(Written {
                        target: path,
                        bytes: 0,
                    })
                });
            }
            _ => {}
        }
    }

    /// Runs `work` concurrently with the session, records its outcome, and replies.
    pub(super) fn run<T, F>(&mut self, id: u64, ctx: &mut Context<Self>, note: AuditNote, work: F)
    where
        T: Serialize + 'static,
        F: Future<Output = Result<T, KernelError>> + 'static,
    {
        self.call(id, ctx, async move {
            let result = work.await;
            note.finish(&result).await;
            result
        });
    }

    /// Like [`run`](Self::run), for work that writes the note's entry itself when it
    /// succeeds: a key-value write carries its entry into the ledger, durable with it. Only
    /// a failure is recorded here.
    pub(super) fn run_written<T, F>(
        &mut self,
        id: u64,
        ctx: &mut Context<Self>,
        note: AuditNote,
        work: F,
    ) where
        T: Serialize + 'static,
        F: Future<Output = Result<T, KernelError>> + 'static,
    {
        self.call(id, ctx, async move {
            let result = work.await;
            if result.is_err() {
                note.finish(&result).await;
            }
            result
        });
    }

    /// Answers a request refused before any work, and records the refusal.
    pub(super) fn refuse_request(&mut self, id: u64, note: AuditNote, error: &KernelError) {
        let body = ErrorBody::from(error);
        note.record(body.to_string());
        self.reply_err(Some(id), &body);
    }

    /// Runs `work` concurrently with the session and replies with its outcome.
    pub(super) fn call<T, F>(&mut self, id: u64, ctx: &mut Context<Self>, work: F)
    where
        T: Serialize + 'static,
        F: Future<Output = Result<T, KernelError>> + 'static,
    {
        let reply = match self.out.take(id, self.deps.limits.max_in_flight) {
            Ok(reply) => reply,
            Err(error) => return self.reply_err(Some(id), &ErrorBody::from(&error)),
        };
        ctx.spawn(
            actix::fut::wrap_future(work).map(move |result, act: &mut Self, ctx| {
                match result {
                    Ok(value) => reply.ok(&value),
                    Err(error) => reply.err(&ErrorBody::from(&error)),
                }
                act.apply_backpressure(ctx);
                act.close_if_done(ctx);
            }),
        );
    }
}

/// `CallMcpTool`: to the server's actor, under the server's deadline (plus a margin for
/// the hops).
fn call_mcp_tool(
    deps: &SessionDeps,
    server: &str,
    tool: String,
    arguments: RawValue,
) -> impl Future<Output = Result<McpToolResult, KernelError>> + 'static {
    let prepared = (|| {
        let arguments = match arguments {
            value if value.is_nil() => serde_json::Map::new(),
            value => match mcp::msgpack_to_json(&value) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(other) => return Err(McpError::BadArguments(format!("got {other}"))),
                Err(e) => return Err(McpError::BadArguments(e)),
            },
        };
        let route = deps.mcp.table.route(server)?;
        Ok((route, CallTool { tool, arguments }))
    })();
    async move {
        let (route, call) = prepared?;
        let margin = Duration::from_millis(500);
        Ok(route.actor.call(call, route.timeout + margin).await??)
    }
}

/// Sends a write to the store under the deadline; it is answered straight from where it
/// becomes durable (see [`store::Deferred`]), not through the store's mailbox.
fn write(
    store: &ChildRef<StoreActor>,
    write: store::Write,
    timeout: Duration,
) -> impl Future<Output = Result<bool, KernelError>> + 'static {
    let actor = store.name();
    let (reply, answer) = oneshot::channel();
    let sent = store
        .get()
        .map(|addr| addr.do_send(store::Deferred { write, reply }))
        .ok_or(KernelError::NotStarted { actor });
    async move {
        sent?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => Ok(outcome?),
            // Dropped unanswered: the store stopped with the write in its mailbox.
            Ok(Err(_)) => Err(KernelError::mailbox(actor, timeout, MailboxError::Closed)),
            Err(_) => Err(KernelError::mailbox(actor, timeout, MailboxError::Timeout)),
        }
    }
}

/// Runs blocking `work` (file reading, hashing) on the blocking pool, not on the sessions'
/// thread; `task` names it if it panics.
pub(super) fn blocking<T: Send + 'static>(
    task: &'static str,
    work: impl FnOnce() -> Result<T, KernelError> + Send + 'static,
) -> impl Future<Output = Result<T, KernelError>> + 'static {
    let handle = tokio::task::spawn_blocking(work);
    async move {
        handle
            .await
            .unwrap_or(Err(KernelError::TaskFailed { task }))
    }
}

/// Sends `msg` to a kernel actor under the deadline, without borrowing the caller.
pub(super) fn call<A, M>(
    actor: &ChildRef<A>,
    msg: M,
    timeout: Duration,
) -> impl Future<Output = Result<M::Result, KernelError>> + 'static
where
    A: actix::Actor + actix::Handler<M>,
    A::Context: actix::dev::ToEnvelope<A, M>,
    M: actix::Message + Send + 'static,
    M::Result: Send,
{
    let actor = actor.clone();
    async move { actor.call(msg, timeout).await }
}

fn ask_supervisor<M>(
    supervisor: &actix::Addr<SupervisorActor>,
    msg: M,
    timeout: Duration,
) -> impl Future<Output = Result<M::Result, KernelError>> + 'static
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
    SupervisorActor: actix::Handler<M>,
{
    let request = supervisor.send(msg).timeout(timeout);
    async move {
        request
            .await
            .map_err(|e| KernelError::mailbox("supervisor", timeout, e))
    }
}

fn check_publish(deps: &SessionDeps, topic: &str) -> Result<(), KernelError> {
    validate_topic(topic).map_err(|rule| BusError::InvalidTopic {
        topic: topic.to_owned(),
        rule,
    })?;
    if deps.client_publish.iter().any(|p| p.matches(topic)) {
        Ok(())
    } else {
        Err(KernelError::PublishForbidden {
            topic: topic.to_owned(),
            allowed: deps
                .client_publish
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

async fn status(deps: Arc<SessionDeps>) -> Result<Status, KernelError> {
    let t = deps.limits.call_timeout;
    let a = &deps.actors;
    let (bus, capsules, store) = tokio::join!(
        a.bus.call(GetBusStats, t),
        a.capsules.call(ListCapsules, t),
        a.store.call(store::GetStoreStats, t)
    );
    let mut unavailable = Vec::new();
    let bus = bus
        .inspect_err(|_| unavailable.push(a.bus.name().to_owned()))
        .ok();
    let capsules = capsules
        .inspect_err(|_| unavailable.push(a.capsules.name().to_owned()))
        .unwrap_or_default();
    let store = store
        .inspect_err(|_| unavailable.push(a.store.name().to_owned()))
        .ok();
    let info = &deps.info;
    Ok(Status {
        pid: info.pid,
        version: info.version.clone(),
        protocol: PROTOCOL_VERSION,
        session: info.session_name.clone(),
        session_id: info.session_id.to_string(),
        workspace: info.workspace.display().to_string(),
        socket: info.socket.display().to_string(),
        ephemeral: info.ephemeral,
        idle_grace_ms: info
            .ephemeral
            .then(|| u64::try_from(info.idle_grace.as_millis()).unwrap_or(u64::MAX)),
        uptime_ms: u64::try_from(info.started_at.elapsed().as_millis()).unwrap_or(u64::MAX),
        connected_clients: deps.connections.authenticated(),
        capsules,
        bus,
        store,
        unavailable,
        fault_injection: info.fault_injection,
        audit: deps.audit_health.get(),
        trust: Some(deps.trust.last()),
    })
}
