//! What a capsule's host imports do, apart from moving bytes in and out of its memory
//! (that glue is in `sandbox.rs`): check the capability store, then ask the kernel service,
//! and turn every outcome into one of the ABI's error codes.
//!
//! Host imports run on the capsule's thread, inside a call into the guest, so they wait for
//! the services' answers there: through `wait`, which parks the thread until the answer
//! or the call's deadline, whichever comes first. The services run on other threads, so the
//! wait never waits on itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use actix::dev::{Request, ToEnvelope};
use actix::{Actor, Handler, Message};

use super::backlog::Backlog;
use super::config::{CapsuleConfig, ConfigError};
use super::crashes::CrashSink;
use super::faults::CapsuleFaults;
use super::http::{self, Hop};
use super::pauses::CallPauses;
use crate::approvals::{AskApproval, Decision};
use crate::audit::Record;
use crate::bus::topic::validate_topic;
use crate::bus::{BusActor, Publish};
use crate::caps::resource::Access;
use crate::caps::{Check, Refused, Verdict};
use crate::capsule::child_name;
use crate::mcp::servers::McpServers;
use crate::mcp::{CallTool, McpError};
use crate::metrics::CapsuleMetrics;
use crate::protocol::{DEFAULT_MAX_FRAME_LEN, RawValue};
use crate::runtime::Services;
use crate::store::{Delete, Get, Namespaces, Put, StoreError};
use crate::supervisor::ChildRef;
use crate::vfs::path::VfsPath;
use crate::vfs::{CapsuleRead, CapsuleWrite, VfsError};

/// Why a host import failed, as the guest sees it (a negative return value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// The capability is missing (the denial is audited by the capability store).
    Denied = -1,
    /// No such key or file.
    NotFound = -2,
    /// Bad UTF-8, key, topic or path, or a range outside the guest's memory.
    Invalid = -3,
    /// A value or file over the limit.
    TooLarge = -4,
    /// The service is down or failed, or the call's deadline passed.
    Failed = -5,
}

impl HostError {
    /// Every error, in code order (`-1` to `-5`): the codes an import `fail` fault may give.
    pub const ALL: [Self; 5] = [
        Self::Denied,
        Self::NotFound,
        Self::Invalid,
        Self::TooLarge,
        Self::Failed,
    ];

    /// The code handed to the guest.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The kernel services one capsule's imports reach, and who it is.
#[derive(Debug, Clone)]
pub struct Host {
    capsule: String,
    actor: String,
    namespace: String,
    services: Option<Services>,
    mcp: Option<Arc<McpServers>>,
    /// Its events the bus has not handled yet (shared by every instance of the capsule).
    backlog: Arc<Mutex<Backlog<Request<BusActor, Publish>>>>,
    /// Its settings (shared by every instance, and with the registry that sets them).
    config: Arc<CapsuleConfig>,
    /// Its injected faults (shared by every instance).
    faults: Arc<CapsuleFaults>,
    /// Where its crashes are kept (none: not kept).
    crashes: Option<Arc<CrashSink>>,
    /// What its call running paused for the user (shared by every instance).
    pauses: Arc<CallPauses>,
    /// Its calls' counters (shared by every instance; see [`crate::metrics`]).
    metrics: Arc<CapsuleMetrics>,
}

/// How much longer than the user's time a capsule waits for the approvals actor's answer
/// (which comes at that time at the latest).
const APPROVAL_MARGIN: Duration = Duration::from_secs(1);

/// `mcp_call`'s input.
#[derive(Debug, serde::Deserialize)]
struct McpCallInput {
    server: String,
    tool: String,
    #[serde(default)]
    arguments: Option<RawValue>,
}

impl Host {
    /// Imports for capsule `capsule`, served by `services` and the MCP servers of `mcp`,
    /// with its settings `config`.
    pub fn new(
        capsule: &str,
        services: Services,
        mcp: Arc<McpServers>,
        config: Arc<CapsuleConfig>,
    ) -> Self {
        Self {
            services: Some(services),
            mcp: Some(mcp),
            config,
            ..Self::detached(capsule)
        }
    }

    /// Imports with no kernel behind them: every call but `log` fails (for tests of the
    /// sandbox alone).
    pub fn detached(capsule: &str) -> Self {
        Self {
            capsule: capsule.to_owned(),
            actor: child_name(capsule),
            namespace: Namespaces::of_capsule(capsule),
            services: None,
            mcp: None,
            backlog: Arc::default(),
            config: Arc::new(CapsuleConfig::new(capsule, Vec::new(), BTreeMap::new())),
            faults: Arc::default(),
            crashes: None,
            pauses: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// The same imports, whose capsule's crashes are kept by `sink`.
    #[must_use]
    pub fn with_crashes(self, sink: CrashSink) -> Self {
        Self {
            crashes: Some(Arc::new(sink)),
            ..self
        }
    }

    /// The same imports, whose capsule's calls are counted in `metrics`.
    #[must_use]
    pub fn with_metrics(self, metrics: Arc<CapsuleMetrics>) -> Self {
        Self { metrics, ..self }
    }

    /// The capsule's call counters.
    pub fn metrics(&self) -> &CapsuleMetrics {
        &self.metrics
    }

    /// Where the capsule's crashes are kept, if they are.
    pub fn crash_sink(&self) -> Option<&CrashSink> {
        self.crashes.as_deref()
    }

    /// Imports with no kernel behind them and the settings `config` (for tests).
    pub fn detached_with(capsule: &str, config: Arc<CapsuleConfig>) -> Self {
        Self {
            config,
            ..Self::detached(capsule)
        }
    }

    /// `http_request`: the guest's request map `request`, made hop by hop as `http.rs`
    /// describes, each hop checked against the capsule's `net:http:` grants and audited;
    /// the response map, with a body of at most `max_body` bytes.
    ///
    /// # Errors
    ///
    /// `Denied` outside the grants (audited by the capability store), `Invalid` for a
    /// malformed request, `TooLarge` past a bound, `Failed` for a name that does not
    /// resolve, a connection that fails or drops, the deadline, or a redirect that cannot be
    /// followed.
    pub fn http_request(
        &self,
        request: &[u8],
        deadline: Instant,
        max_body: usize,
    ) -> Result<Vec<u8>, HostError> {
        let mut request = http::prepare(request)?;
        let mut hops = 0;
        let mut deadline = deadline;
        loop {
            let url = request.url().clone();
            let target = http::audit_target(request.method(), &url);
            let mut access = http::access(&url);
            deadline = self.allow(Access::NetHttp(access.clone()), deadline)?;
            let left = deadline.saturating_duration_since(Instant::now());
            let addrs = http::resolve(&url, left).inspect_err(|e| {
                let outcome = format!("error {}: the name did not resolve in time", e.code());
                self.audit_outcome("http_request", &target, outcome);
            })?;
            if addrs.iter().any(|a| !http::is_public(a.ip())) {
                access.private = true;
                deadline = self.allow(Access::NetHttp(access), deadline)?;
            }
            match request.hop(addrs, deadline, max_body, hops < http::MAX_REDIRECTS) {
                Ok(Hop::Done {
                    encoded,
                    status,
                    size,
                }) => {
                    let outcome = format!("{status}, {size} bytes");
                    self.audit_outcome("http_request", &target, outcome);
                    return Ok(encoded);
                }
                Ok(Hop::Redirect { status, to }) => {
                    self.audit_outcome("http_request", &target, format!("{status}, redirect"));
                    if request.redirect(status, &to).is_err() {
                        let outcome = "a redirect to a URL that is not http(s)".to_owned();
                        self.audit_outcome("http_request", &target, outcome);
                        return Err(HostError::Failed);
                    }
                    hops += 1;
                }
                Err((e, why)) => {
                    let outcome = format!("error {}: {why}", e.code());
                    self.audit_outcome("http_request", &target, outcome);
                    return Err(e);
                }
            }
        }
    }

    /// `config_get`: the value of one of the capsule's settings.
    ///
    /// # Errors
    ///
    /// See [`ConfigError`].
    pub fn config_get(&self, name: &str) -> Result<String, ConfigError> {
        self.config.get(name)
    }

    /// Whether `name` is one of the capsule's secret settings (its value is never kept in
    /// a crash bundle).
    pub fn config_secret(&self, name: &str) -> bool {
        self.config.decl(name).is_some_and(|d| d.secret)
    }

    /// The capsule's injected faults.
    pub fn faults(&self) -> &CapsuleFaults {
        &self.faults
    }

    /// What its call running paused for the user.
    pub fn pauses(&self) -> &CallPauses {
        &self.pauses
    }

    /// The capsule's name.
    pub fn capsule(&self) -> &str {
        &self.capsule
    }

    /// The event bus, when there is a kernel behind.
    pub(crate) fn bus(&self) -> Option<ChildRef<BusActor>> {
        self.services.as_ref().map(|s| s.bus.clone())
    }

    fn services(&self) -> Result<&Services, HostError> {
        self.services.as_ref().ok_or(HostError::Failed)
    }

    /// Whether the capsule may perform `access`: a grant allows it, or the user approves it
    /// (an `ask:` grant; see [`Host::approve`]). Answers the call's deadline, pushed back by
    /// the time it waited for the user.
    fn allow(&self, access: Access, deadline: Instant) -> Result<Instant, HostError> {
        let services = self.services()?;
        let shown = access.to_string();
        let check = Check {
            subject: self.capsule.clone(),
            access,
        };
        match ask(&services.caps, check, deadline)? {
            Verdict::Allowed => Ok(deadline),
            Verdict::Denied => Err(HostError::Denied),
            Verdict::Ask { grant, timeout } => {
                self.approve(services, shown, grant, timeout, deadline)
            }
        }
    }

    /// Asks the user to approve `access` under the `ask:` grant `grant`, and waits on this
    /// thread for the answer: at most `timeout` (the grant's, from the manifest), else the
    /// rest of the call's `deadline`. The wait is a pause of the call (`pauses.rs`): it does
    /// not count against the call's deadline.
    fn approve(
        &self,
        services: &Services,
        access: String,
        grant: String,
        timeout: Option<Duration>,
        deadline: Instant,
    ) -> Result<Instant, HostError> {
        let asked = Instant::now();
        let timeout = timeout.unwrap_or_else(|| deadline.saturating_duration_since(asked));
        let question = AskApproval {
            capsule: self.capsule.clone(),
            access,
            grant,
            timeout,
        };
        self.pauses.pausing(timeout + APPROVAL_MARGIN);
        let answer = ask(
            &services.approvals,
            question,
            asked + timeout + APPROVAL_MARGIN,
        );
        let waited = asked.elapsed();
        self.pauses.paused(waited);
        match answer? {
            Decision::Approved => Ok(deadline + waited),
            Decision::Denied(why) => {
                tracing::info!(capsule = %self.capsule, "use not approved: {why}");
                Err(HostError::Denied)
            }
        }
    }

    fn audit(&self, action: &'static str, target: &str, outcome: Result<(), HostError>) {
        let outcome = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("error {}", e.code()),
        };
        self.audit_outcome(action, target, outcome);
    }

    fn audit_outcome(&self, action: &'static str, target: &str, outcome: String) {
        if let Some(audit) = self.services.as_ref().and_then(|s| s.audit.get()) {
            audit.do_send(Record::new(self.actor.clone(), action, target, outcome));
        }
    }

    /// `publish`: an event on `topic` from `capsule:<name>`. Handed to the bus without
    /// waiting for it to be delivered: the capsule may be the bus's interceptor for an event
    /// in flight (the bus waits for it), and its own event simply follows that one.
    ///
    /// The permission is checked before the payload is looked at; the payload is then
    /// checked (one value, not nested too deep, at most a frame) and kept as its bytes. Failed
    /// while the capsule's earlier events fill its [`Backlog`].
    pub(crate) fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<(), HostError> {
        validate_topic(topic).map_err(|_| HostError::Invalid)?;
        self.allow(Access::BusPublish(topic.to_owned()), deadline)?;
        if payload.len() > DEFAULT_MAX_FRAME_LEN {
            return Err(HostError::TooLarge);
        }
        let len = payload.len();
        let payload = RawValue::from_slice(payload).map_err(|_| HostError::Invalid)?;
        let bus = self.services()?.bus.get().ok_or(HostError::Failed)?;
        if !bus.connected() {
            return Err(HostError::Failed);
        }
        let mut backlog = self.backlog.lock().unwrap_or_else(PoisonError::into_inner);
        if !backlog.admit(len) {
            return Err(HostError::Failed);
        }
        let answer = bus.send(Publish {
            topic: topic.to_owned(),
            payload,
            source: self.actor.clone(),
        });
        backlog.push(answer, len);
        Ok(())
    }

    /// `kv_get`.
    pub(crate) fn kv_get(&self, key: &str, deadline: Instant) -> Result<Vec<u8>, HostError> {
        let deadline = self.allow(Access::Kv, deadline)?;
        let get = Get {
            namespace: self.namespace.clone(),
            key: key.to_owned(),
        };
        ask(&self.services()?.store, get, deadline)?
            .map_err(|e| store_error(&e))?
            .ok_or(HostError::NotFound)
    }

    /// `kv_put`: answered once durable, with its audit entry.
    pub(crate) fn kv_put(
        &self,
        key: &str,
        value: Vec<u8>,
        deadline: Instant,
    ) -> Result<(), HostError> {
        let deadline = self.allow(Access::Kv, deadline)?;
        let put = Put {
            namespace: self.namespace.clone(),
            key: key.to_owned(),
            value,
            audit: Some(Record::new(self.actor.clone(), "kv_put", key, "ok")),
        };
        let result = ask(&self.services()?.store, put, deadline)?.map_err(|e| store_error(&e));
        if result.is_err() {
            self.audit("kv_put", key, result);
        }
        result
    }

    /// `kv_delete`: `NotFound` when the key did not exist.
    pub(crate) fn kv_delete(&self, key: &str, deadline: Instant) -> Result<(), HostError> {
        let deadline = self.allow(Access::Kv, deadline)?;
        let delete = Delete {
            namespace: self.namespace.clone(),
            key: key.to_owned(),
            audit: Some(Record::new(self.actor.clone(), "kv_delete", key, "ok")),
        };
        let existed = ask(&self.services()?.store, delete, deadline)?.map_err(|e| store_error(&e));
        match existed {
            Ok(true) => Ok(()),
            Ok(false) => Err(HostError::NotFound),
            Err(e) => {
                self.audit("kv_delete", key, Err(e));
                Err(e)
            }
        }
    }

    /// `vfs_read`: the whole file. The grant is checked on the normalized path, which is
    /// what is opened (no link is followed: see [`CapsuleRead`]).
    pub(crate) fn vfs_read(&self, path: &str, deadline: Instant) -> Result<Vec<u8>, HostError> {
        let path = normalized(path)?;
        let access = Access::VfsRead(path.clone());
        let deadline = self.allow(access.clone(), deadline)?;
        let read = CapsuleRead { path };
        ask(&self.services()?.vfs, read, deadline)?
            .map(|r| r.data)
            .map_err(|e| self.vfs_error(&access, &e))
    }

    /// `vfs_write`: atomic, parents created; audited. Checked as [`Host::vfs_read`].
    pub(crate) fn vfs_write(
        &self,
        path: &str,
        data: Vec<u8>,
        deadline: Instant,
    ) -> Result<(), HostError> {
        let path = normalized(path)?;
        let access = Access::VfsWrite(path.clone());
        let deadline = self.allow(access.clone(), deadline)?;
        let write = CapsuleWrite {
            path: path.clone(),
            data,
        };
        let result = ask(&self.services()?.vfs, write, deadline)?
            .map(drop)
            .map_err(|e| self.vfs_error(&access, &e));
        if result != Err(HostError::Denied) {
            self.audit("vfs_write", &path, result);
        }
        result
    }

    /// The guest's code for a VFS error; a refusal by the VFS (a symbolic link, a reserved
    /// path) is a denial, audited as one by the capability store.
    fn vfs_error(&self, access: &Access, e: &VfsError) -> HostError {
        let refusal = match e {
            VfsError::Symlink { link, .. } => format!("denied: `{link}` is a symbolic link"),
            VfsError::Reserved { .. } => "denied: reserved to the daemon".to_owned(),
            VfsError::NotFound { .. } => return HostError::NotFound,
            VfsError::InvalidPath { .. } | VfsError::Escape { .. } => return HostError::Invalid,
            VfsError::TooLarge { .. } => return HostError::TooLarge,
            VfsError::Io { .. } => return HostError::Failed,
        };
        if let Some(caps) = self.services.as_ref().and_then(|s| s.caps.get()) {
            caps.do_send(Refused {
                subject: self.capsule.clone(),
                access: access.clone(),
                reason: refusal,
            });
        }
        HostError::Denied
    }
}

impl Host {
    /// `mcp_call`: `{server, tool, arguments}` in, the tool's result out (MessagePack, as
    /// `CallMcpTool` answers it; a tool that reports an error is a result with `is_error`).
    /// Needs `mcp:call:<server>/<tool>`; audited.
    pub(crate) fn mcp_call(&self, input: &[u8], deadline: Instant) -> Result<Vec<u8>, HostError> {
        let input: McpCallInput = rmp_serde::from_slice(input).map_err(|_| HostError::Invalid)?;
        let target = format!("{}/{}", input.server, input.tool);
        let deadline = self.allow(
            Access::McpCall {
                server: input.server.clone(),
                tool: input.tool.clone(),
            },
            deadline,
        )?;
        let result = self.call_tool(input, deadline);
        self.audit(
            "mcp_call",
            &target,
            result.as_ref().map(drop).map_err(|e| *e),
        );
        result
    }

    fn call_tool(&self, input: McpCallInput, deadline: Instant) -> Result<Vec<u8>, HostError> {
        let arguments = match input.arguments {
            None => serde_json::Map::new(),
            Some(value) if value.is_nil() => serde_json::Map::new(),
            Some(value) => match crate::mcp::msgpack_to_json(&value) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => return Err(HostError::Invalid),
            },
        };
        let table = self.mcp.as_ref().ok_or(HostError::Failed)?;
        let route = table.route(&input.server).map_err(|e| match e {
            McpError::UnknownServer(_) => HostError::NotFound,
            _ => HostError::Failed,
        })?;
        let call = CallTool {
            tool: input.tool,
            arguments,
        };
        let result = ask(&route.actor, call, deadline)?.map_err(|_| HostError::Failed)?;
        rmp_serde::to_vec_named(&result).map_err(|_| HostError::Failed)
    }
}

fn store_error(e: &StoreError) -> HostError {
    match e {
        StoreError::InvalidKey { .. } | StoreError::UnknownNamespace(_) => HostError::Invalid,
        StoreError::ValueTooLarge { .. } | StoreError::QuotaExceeded { .. } => HostError::TooLarge,
        _ => HostError::Failed,
    }
}

/// A guest's workspace path, normalized (`./a//b/` is `a/b`), or `Invalid` when it can
/// never be valid (absolute, `..`, empty, NUL, too long; see [`VfsPath`]).
fn normalized(raw: &str) -> Result<String, HostError> {
    VfsPath::parse(raw)
        .map(|p| p.as_str().to_owned())
        .map_err(|_| HostError::Invalid)
}

/// Sends `msg` to the service and waits for the answer on this thread, until `deadline`.
fn ask<A, M>(service: &ChildRef<A>, msg: M, deadline: Instant) -> Result<M::Result, HostError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    let addr = service.get().ok_or(HostError::Failed)?;
    if let Some(held) = service.delay() {
        // The `delay` fault holds the message first, within the call's deadline.
        std::thread::sleep(held.min(deadline.saturating_duration_since(Instant::now())));
        if Instant::now() >= deadline {
            return Err(HostError::Failed);
        }
    }
    match wait(addr.send(msg), deadline) {
        Some(Ok(answer)) => Ok(answer),
        Some(Err(_)) | None => Err(HostError::Failed),
    }
}

/// Runs `future` on this thread until it completes (`Some`) or `deadline` passes (`None`),
/// parking the thread in between.
///
/// The capsule's thread is inside a Tokio task (its actor's) while the guest runs, and that
/// task never yields while it waits here: Tokio's cooperative budget (128 polls of its
/// resources a turn) would run out after that many answers in one guest call, and every
/// later answer would seem never to come. The future is polled outside the budget.
pub(crate) fn wait<F: Future>(future: F, deadline: Instant) -> Option<F::Output> {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(tokio::task::coop::unconstrained(future));
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return Some(out);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::park_timeout(left);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn wait_returns_what_another_thread_sends() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(7).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(wait(rx, deadline), Some(Ok(7)));
        sender.join().unwrap();
    }

    #[test]
    fn wait_answers_any_number_of_times_inside_a_tokio_task() {
        // As on a capsule's thread: one task (the capsule's actor) that waits for many
        // answers in a row, sent from another thread, without ever yielding.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let started = Instant::now();
        let answered = runtime.block_on(async {
            let mut answered = 0;
            for i in 0..1000 {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let sender = std::thread::spawn(move || tx.send(i).unwrap());
                let answer = wait(rx, Instant::now() + Duration::from_secs(1));
                sender.join().unwrap();
                if answer != Some(Ok(i)) {
                    break;
                }
                answered += 1;
            }
            answered
        });
        assert_eq!(answered, 1000);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn wait_gives_up_at_the_deadline() {
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        let start = Instant::now();
        assert!(wait(rx, start + Duration::from_millis(30)).is_none());
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_detached_host_fails_every_service_call() {
        let host = Host::detached("x");
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(host.kv_get("k", deadline), Err(HostError::Failed));
        assert_eq!(
            host.vfs_write("a", b"x".to_vec(), deadline),
            Err(HostError::Failed)
        );
        assert_eq!(
            host.publish("a.b", b"\xc0", deadline),
            Err(HostError::Failed)
        );
        // The permission comes first: without it the payload is not looked at.
        assert_eq!(
            host.publish("a.b", b"\xc1", deadline),
            Err(HostError::Failed)
        );
        assert_eq!(
            host.publish("a b", b"\xc0", deadline),
            Err(HostError::Invalid)
        );
    }
}
