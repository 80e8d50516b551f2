//! The one place where a request becomes work. [`Request::route`] (generated in the protocol
//! crate from each request's declaration) is the exhaustive match; the [`Routes`]
//! implementation below is the router's table, one line per request, each calling the
//! function of its domain: the kernel itself (`kernel.rs`), capsules (`capsules.rs`), the
//! key-value store (`kv.rs`), capabilities and audit (`caps.rs`), workspace files
//! (`vfs.rs`), MCP servers (`mcp.rs`), workspace trust (`trust.rs`) and crash bundles
//! (`crashes.rs`). A request added to
//! the protocol without a line here does not compile.
//!
//! `Ping` is answered here and `InvokeCommand` is queued for its capsule; everything else
//! is sent to the actor that owns it, under the call deadline, as a future spawned into the
//! session so replies leave in completion order. Every request but those two is written to
//! the audit log with its outcome; a request that changes state is answered only once its
//! entry is durable, the others are recorded without waiting.

mod approvals;
mod caps;
mod capsules;
mod crashes;
mod kernel;
mod kv;
mod mcp;
mod trust;
mod vfs;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{ActorFutureExt, AsyncContext, Context, MailboxError};
use serde::Serialize;
use tokio::sync::oneshot;

use super::{SessionActor, SessionDeps};
use crate::audit::{AuditActor, Record};
use crate::error::KernelError;
use crate::protocol::{
    ApprovalAnswer, Effect, ErrorBody, ErrorCode, Fault, RawValue, Request, Routes, SettingValue,
};
use crate::store::{self, StoreActor};
use crate::supervisor::{CallError, ChildRef, SupervisorActor};

/// The audit entry a request will get, once its outcome is known: written when the audit
/// policy records the request's kind, and for a denial whatever the policy says.
#[derive(Debug)]
pub(in crate::session) struct AuditNote {
    audit: ChildRef<AuditActor>,
    actor: String,
    action: &'static str,
    target: String,
    /// The policy records this kind of request.
    recorded: bool,
    durable: bool,
    timeout: Duration,
}

impl AuditNote {
    /// The entry of a successful request, for work that writes it itself (see
    /// `run_written`); `None` when the policy does not record the request.
    fn entry(&self) -> Option<Record> {
        self.recorded
            .then(|| Record::new(self.actor.clone(), self.action, self.target.clone(), "ok"))
    }

    /// Whether an outcome is recorded: the policy's say, except that a denial (`forbidden`,
    /// `unauthorized`, or a path that leads out of the workspace) always is.
    fn records(&self, error: Option<&ErrorBody>) -> bool {
        self.recorded
            || error.is_some_and(|e| {
                matches!(
                    e.code,
                    ErrorCode::Forbidden | ErrorCode::Unauthorized | ErrorCode::PathEscape
                )
            })
    }

    /// Records the outcome, waiting for durability when the request changes state.
    async fn finish<T>(self, result: &Result<T, KernelError>) {
        let error = result.as_ref().err().map(ErrorBody::from);
        if !self.records(error.as_ref()) {
            return;
        }
        let outcome = error.map_or_else(|| "ok".to_owned(), |e| e.to_string());
        if self.durable {
            let (audit, timeout) = (self.audit.clone(), self.timeout);
            let record = Record::new(self.actor, self.action, self.target, outcome);
            record_durably(&audit, record, timeout).await;
        } else {
            self.send(outcome);
        }
    }

    /// Records a refusal without waiting.
    pub(super) fn refused(self, error: &ErrorBody) {
        if self.records(Some(error)) {
            self.send(error.to_string());
        }
    }

    /// Records a success without waiting (requests that change no state).
    pub(super) fn ok(self) {
        if self.recorded {
            self.send("ok");
        }
    }

    fn send(self, outcome: impl Into<String>) {
        if let Some(audit) = self.audit.get() {
            audit.do_send(Record::new(self.actor, self.action, self.target, outcome));
        }
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

/// One request on its way to the function that serves it: the session, the request's id and
/// what its audit entry will say.
pub(super) struct Dispatch<'a> {
    session: &'a mut SessionActor,
    ctx: &'a mut Context<SessionActor>,
    id: u64,
    action: &'static str,
    target: String,
    recorded: bool,
    durable: bool,
}

impl<'a> Dispatch<'a> {
    /// What every session shares.
    fn deps(&self) -> Arc<SessionDeps> {
        Arc::clone(&self.session.deps)
    }

    /// The call deadline.
    fn timeout(&self) -> Duration {
        self.session.deps.limits.call_timeout
    }

    /// Names what the request is about, when the request itself left it implicit.
    fn set_target(&mut self, target: String) {
        self.target = target;
    }

    /// The session, the request's id, its audit note and the session's context.
    fn into_parts(
        self,
    ) -> (
        &'a mut SessionActor,
        u64,
        AuditNote,
        &'a mut Context<SessionActor>,
    ) {
        let note = AuditNote {
            audit: self.session.deps.services.audit.clone(),
            actor: self.session.audit_actor(),
            action: self.action,
            target: self.target,
            recorded: self.recorded,
            durable: self.durable,
            timeout: self.session.deps.limits.call_timeout,
        };
        (self.session, self.id, note, self.ctx)
    }

    /// Runs `work`, records its outcome and replies (see [`SessionActor::run`]).
    fn run<T, F>(self, work: F)
    where
        T: Serialize + 'static,
        F: Future<Output = Result<T, KernelError>> + 'static,
    {
        let (session, id, note, ctx) = self.into_parts();
        session.run(id, ctx, note, work);
    }

    /// Runs the work `make` builds from the request's audit entry, for work that writes the
    /// entry itself (see [`SessionActor::run_written`]).
    fn run_written<T, F>(self, make: impl FnOnce(Option<Record>) -> F)
    where
        T: Serialize + 'static,
        F: Future<Output = Result<T, KernelError>> + 'static,
    {
        let (session, id, note, ctx) = self.into_parts();
        let work = make(note.entry());
        session.run_written(id, ctx, note, work);
    }

    /// Refuses the request before any work, and records the refusal.
    fn refuse(self, error: &KernelError) {
        let (session, id, note, _) = self.into_parts();
        session.refuse_request(id, note, error);
    }
}

/// The router's table: each request to the function of its domain.
impl Routes for Dispatch<'_> {
    type Output = ();

    fn ping(self) {
        self.session.reply_ok(self.id, "pong");
    }
    fn get_status(self) {
        kernel::status(self);
    }
    fn get_metrics(self) {
        kernel::metrics(self);
    }
    fn get_config(self) {
        kernel::config(self);
    }
    fn shutdown(self, reason: String) {
        kernel::shutdown(self, reason);
    }
    fn get_supervision_tree(self) {
        kernel::tree(self);
    }
    fn inject_fault(self, target: String, fault: Fault) {
        kernel::inject_fault(self, target, fault);
    }
    fn subscribe(self, pattern: String) {
        let (session, id, note, ctx) = self.into_parts();
        session.subscribe(id, pattern, note, ctx);
    }
    fn unsubscribe(self, pattern: String) {
        let (session, id, note, ctx) = self.into_parts();
        session.unsubscribe(id, pattern, note, ctx);
    }
    fn publish(self, topic: String, payload: RawValue) {
        kernel::publish(self, topic, payload);
    }
    fn list_capsules(self) {
        capsules::list(self);
    }
    fn reload_capsules(self) {
        capsules::reload(self);
    }
    fn get_commands(self) {
        capsules::commands(self);
    }
    fn invoke_command(self, name: String, args: Vec<String>) {
        capsules::invoke(self, name, args);
    }
    fn get_capsule_metadata(self, name: Option<String>) {
        capsules::metadata(self, name);
    }
    fn list_settings(self, capsule: String) {
        capsules::settings(self, capsule);
    }
    fn set_setting(self, capsule: String, name: String, value: SettingValue) {
        capsules::set_setting(self, capsule, name, Some(value.0));
    }
    fn unset_setting(self, capsule: String, name: String) {
        capsules::set_setting(self, capsule, name, None);
    }
    fn inspect_capsule(self, path: String) {
        capsules::inspect(self, path);
    }
    fn install_capsule(self, path: String, digest: String) {
        capsules::install(self, path, digest);
    }
    fn uninstall_capsule(self, name: String) {
        capsules::uninstall(self, name);
    }
    fn list_approvals(self) {
        approvals::list(self);
    }
    fn answer_approval(self, id: u64, answer: ApprovalAnswer) {
        approvals::answer(self, id, answer);
    }
    fn kv_get(self, key: String) {
        kv::get(self, key);
    }
    fn kv_put(self, key: String, value: Vec<u8>) {
        kv::put(self, key, value);
    }
    fn kv_delete(self, key: String) {
        kv::delete(self, key);
    }
    fn kv_list(self, prefix: String, limit: Option<usize>) {
        kv::list(self, prefix, limit);
    }
    fn grant_capability(self, subject: String, resource: String) {
        caps::grant(self, subject, resource);
    }
    fn revoke_capability(self, subject: String, resource: String) {
        caps::revoke(self, subject, resource);
    }
    fn list_capabilities(self, subject: Option<String>) {
        caps::list(self, subject);
    }
    fn audit_tail(self, n: Option<usize>, from: Option<u64>) {
        caps::audit_tail(self, n, from);
    }
    fn audit_verify(self) {
        caps::audit_verify(self);
    }
    fn audit_prune(self) {
        caps::audit_prune(self);
    }
    fn vfs_read(self, path: String, offset: u64, len: Option<u64>) {
        vfs::read(self, path, offset, len);
    }
    fn vfs_write(self, path: String, data: Vec<u8>, create_dirs: bool) {
        vfs::write(self, path, data, create_dirs);
    }
    fn vfs_list(self, path: String) {
        vfs::list(self, path);
    }
    fn vfs_stat(self, path: String) {
        vfs::stat(self, path);
    }
    fn vfs_remove(self, path: String, recursive: bool) {
        vfs::remove(self, path, recursive);
    }
    fn vfs_mkdir(self, path: String, parents: bool) {
        vfs::mkdir(self, path, parents);
    }
    fn list_mcp_servers(self) {
        mcp::servers(self);
    }
    fn reload_mcp(self) {
        mcp::reload(self);
    }
    fn list_mcp_tools(self, server: Option<String>) {
        mcp::tools(self, server.as_deref());
    }
    fn call_mcp_tool(self, server: String, tool: String, arguments: RawValue) {
        mcp::call_tool(self, &server, tool, arguments);
    }
    fn trust_workspace(self, path: Option<String>) {
        trust::change(self, path, true);
    }
    fn untrust_workspace(self, path: Option<String>) {
        trust::change(self, path, false);
    }
    fn list_trust(self) {
        trust::list(self);
    }
    fn list_crashes(self) {
        crashes::list(self);
    }
    fn get_crash(self, id: String) {
        crashes::get(self, id);
    }
    fn remove_crash(self, id: Option<String>) {
        crashes::remove(self, id);
    }
    fn replay_crash(self, id: String) {
        crashes::replay_crash(self, id);
    }
}

impl SessionActor {
    /// Serves a decoded request: its facts are read once, then [`Request::route`] hands it to
    /// its line of the table above.
    pub(super) fn dispatch(&mut self, id: u64, request: Request, ctx: &mut Context<Self>) {
        let effect = request.effect();
        let target = match effect {
            Effect::Unaudited => String::new(),
            Effect::Reads | Effect::Mutates => request.target(),
        };
        let action = request.name();
        let recorded = self.deps.audit_policy.records(action);
        request.route(Dispatch {
            session: self,
            ctx,
            id,
            action,
            target,
            recorded,
            durable: effect == Effect::Mutates,
        });
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
        note.refused(&body);
        self.reply_err(Some(id), &body);
    }

    /// Takes request `id` with the timer of the request being dispatched (see
    /// [`Outbox::take`](crate::runtime::outbox::Outbox)); when it is refused, the timer is
    /// left for the error reply.
    pub(super) fn take_reply(
        &mut self,
        id: u64,
    ) -> Result<crate::runtime::ReplyTo, crate::protocol::ProtocolError> {
        let timer = self.current.take();
        let taken = self.out.take(id, self.deps.limits.max_in_flight, timer);
        if taken.is_err() {
            self.current = timer;
        }
        taken
    }

    /// Runs `work` concurrently with the session and replies with its outcome.
    pub(super) fn call<T, F>(&mut self, id: u64, ctx: &mut Context<Self>, work: F)
    where
        T: Serialize + 'static,
        F: Future<Output = Result<T, KernelError>> + 'static,
    {
        let reply = match self.take_reply(id) {
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

/// Sends a write to the store under the deadline; it is answered straight from where it
/// becomes durable (see [`store::Deferred`]), not through the store's mailbox.
fn write(
    store: &ChildRef<StoreActor>,
    write: store::Write,
    timeout: Duration,
) -> impl Future<Output = Result<bool, KernelError>> + use<> {
    let actor = store.name();
    let (reply, answer) = oneshot::channel();
    let store = store.clone();
    async move {
        // The `delay` fault holds the write before it reaches the store.
        let left = store.held(timeout).await?;
        store
            .get()
            .map(|addr| addr.do_send(store::Deferred { write, reply }))
            .ok_or(CallError::NotStarted { actor })?;
        match tokio::time::timeout(left, answer).await {
            Ok(Ok(outcome)) => Ok(outcome?),
            // Dropped unanswered: the store stopped with the write in its mailbox.
            Ok(Err(_)) => Err(CallError::mailbox(actor, timeout, MailboxError::Closed).into()),
            Err(_) => Err(CallError::mailbox(actor, timeout, MailboxError::Timeout).into()),
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
    async move { Ok(actor.call(msg, timeout).await?) }
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
            .map_err(|e| CallError::mailbox("supervisor", timeout, e).into())
    }
}
