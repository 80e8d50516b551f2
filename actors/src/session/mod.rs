//! One client connection: handshake, then any number of requests in flight, replies in
//! completion order, and pushed events for the connection's subscriptions.
//!
//! Reads are a framed stream; writes go through the outbox (`outbox.rs`). Requests that need another
//! actor run as futures spawned into this actor's context, so a slow request never delays a
//! fast one and every one of them is answered: with its result, with `timeout` past the call
//! deadline, or with `unavailable` when the actor serving it dies.
//!
//! Handles: the frame stream, the event stream from the bus, and [`Drain`] (from the
//! listener at shutdown). Started by the listener; never restarted (a temporary child).

mod connections;
pub mod refusals;
mod route;
mod subscription;
mod token;
mod writer;

use std::sync::Arc;

use crate::capsules::loaded::LoadedCapsules;

use actix::{
    Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, SpawnHandle, StreamHandler,
};
use bytes::BytesMut;
use serde::Serialize;
use tokio::net::UnixStream;
use tokio_util::codec::FramedRead;

pub use self::connections::{Connections, SessionInfo};
use self::subscription::BusLink;
pub use self::token::Token;
use self::writer::{CatchUp, Writer};
use crate::audit::{AuditHealth, Record};
use crate::bus::{Deregister, Pattern, Publish};
use crate::capsules::CapsulesActor;
use crate::metrics::Timer;
use crate::protocol::codec::MAX_HANDSHAKE_LEN;
use crate::protocol::{
    ErrorBody, FrameCodec, FrameError, Hello, PROTOCOL_VERSION, ProtocolError, Welcome, decode_map,
    decode_request, to_payload,
};
use crate::runtime::outbox::{HIGH_WATER, Outbox};
use crate::runtime::{KernelInfo, Limits, Services, ShutdownHandle};
use crate::supervisor::ChildRef;
use crate::supervisor::SupervisorActor;

/// Longest client name kept from a handshake.
const MAX_CLIENT_NAME: usize = 64;

/// What every session needs, shared by all of them.
#[derive(Debug)]
pub struct SessionDeps {
    /// Static facts about this daemon.
    pub info: Arc<KernelInfo>,
    /// The token clients must present.
    pub token: Token,
    /// Frame, time and queue limits.
    pub limits: Limits,
    /// The root supervisor (tree and fault injection).
    pub supervisor: Addr<SupervisorActor>,
    /// The kernel services.
    pub services: Services,
    /// The capsule registry.
    pub registry: ChildRef<CapsulesActor>,
    /// The latest audit verification, for status.
    pub audit_health: Arc<AuditHealth>,
    /// The connection table.
    pub connections: Arc<Connections>,
    /// Requests a graceful shutdown.
    pub shutdown: ShutdownHandle,
    /// Topics clients may publish to.
    pub client_publish: Vec<Pattern>,
    /// Loaded capsules, to route `InvokeCommand`.
    pub capsules: Arc<LoadedCapsules>,
    /// The MCP servers: their table, to list them and route `CallMcpTool`, and the
    /// launcher, to reload their configuration.
    pub mcp: crate::mcp::Launcher,
    /// The workspace's trust, for the trust requests and status.
    pub trust: Arc<crate::trust::WorkspaceTrust>,
    /// Which requests are recorded in the audit log.
    pub audit_policy: Arc<crate::audit::AuditPolicy>,
    /// Capsules' crash bundles (`<home>/crashes/`).
    pub crashes: crate::capsule::crashes::CrashStore,
    /// The daemon's metrics (requests are recorded as they are answered).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Who is on the other end of a connection, as the kernel reported it at accept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peer {
    /// Process id.
    pub pid: Option<i32>,
    /// User id.
    pub uid: Option<u32>,
}

/// Stop reading, answer what is in flight, flush, close. Sent by the listener at shutdown.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Open,
    Draining,
    Closing,
}

/// `client:3 (astrid-cli, pid 42, uid 1000)`: a connection as audit entries name it.
fn describe(id: u64, client: Option<&str>, peer: Peer) -> String {
    let who = format!("client:{id}");
    let mut facts = Vec::new();
    if let Some(name) = client {
        facts.push(name.to_owned());
    }
    if let Some(pid) = peer.pid {
        facts.push(format!("pid {pid}"));
    }
    if let Some(uid) = peer.uid {
        facts.push(format!("uid {uid}"));
    }
    if facts.is_empty() {
        who
    } else {
        format!("{who} ({})", facts.join(", "))
    }
}

/// The session actor.
#[derive(Debug)]
pub struct SessionActor {
    id: u64,
    deps: Arc<SessionDeps>,
    out: Outbox,
    phase: Phase,
    reading: Option<SpawnHandle>,
    read_closed: bool,
    client: Option<String>,
    peer: Peer,
    /// Who this connection is, for audit entries (see `describe`).
    who: String,
    link: BusLink,
    /// The request being dispatched, timed for its metrics: taken by whatever answers it
    /// (a [`ReplyTo`](crate::runtime::ReplyTo), or a reply written during the dispatch).
    current: Option<Timer>,
}

impl SessionActor {
    /// Starts a session on an accepted connection and records it in the connection table.
    pub fn start(stream: UnixStream, peer: Peer, deps: Arc<SessionDeps>) -> Addr<Self> {
        let id = deps.connections.next_id();
        let (read, write) = stream.into_split();
        let max_frame = deps.limits.max_frame_len;
        // Until the handshake, a peer can make the session buffer a few KiB at most.
        let codec = FrameCodec::new(max_frame).first_frame_limit(MAX_HANDSHAKE_LEN);
        let table = Arc::clone(&deps.connections);
        let metrics = Arc::clone(&deps.metrics);
        let addr = Self::create(move |ctx| {
            // The writer is spawned after the reader so a batch of replies is written in the
            // same poll that handled the batch of requests.
            let reading = ctx.add_stream(FramedRead::new(read, codec));
            ctx.spawn(Writer);
            Self {
                id,
                deps,
                out: Outbox::new(write, max_frame, id, Arc::clone(&metrics)),
                phase: Phase::Handshake,
                reading: Some(reading),
                read_closed: false,
                client: None,
                peer,
                who: describe(id, None, peer),
                link: BusLink::default(),
                current: None,
            }
        });
        table.open(id, peer.pid, addr.clone());
        addr
    }

    /// `client:<n>`, the source of events this client publishes.
    fn source(&self) -> String {
        format!("client:{}", self.id)
    }

    /// Answers request `id` (counted when it is the request being dispatched).
    fn reply_ok<T: Serialize + ?Sized>(&mut self, id: u64, result: &T) {
        self.out.reply_ok(id, result);
        if let Some(timer) = self.current.take() {
            self.out.count(timer, Ok(()));
        }
    }

    /// Answers request `id`, or the connection, with an error (counted when it answers the
    /// request being dispatched).
    fn reply_err(&mut self, id: Option<u64>, error: &ErrorBody) {
        self.out.reply_err(id, error);
        if let Some(timer) = self.current.take() {
            self.out.count(timer, Err(error.code));
        }
    }

    /// Who this connection is, for audit entries.
    fn audit_actor(&self) -> String {
        self.who.clone()
    }

    /// Records a request that was refused before reaching any actor (not awaited).
    fn audit_refusal(&self, action: &str, target: String, error: &ErrorBody) {
        if let Some(audit) = self.deps.services.audit.get() {
            audit.do_send(Record::new(
                self.audit_actor(),
                action,
                target,
                error.to_string(),
            ));
        }
    }

    /// Refuses the handshake and closes. The refusal is audited and logged with the others
    /// (counted while they are frequent: see `listener/refusals.rs`).
    fn refuse(&mut self, error: &ProtocolError, ctx: &mut Context<Self>) {
        tracing::debug!(connection = self.id, "handshake refused: {error}");
        self.deps.connections.refuse(
            &self.who,
            error,
            &self.deps.services.audit,
            self.deps.limits.refusal_window,
        );
        if let Err(e) = self.out.frame(&Welcome::refused(ErrorBody::from(error))) {
            tracing::error!(connection = self.id, "cannot encode a refusal: {e}");
        }
        self.close(ctx);
    }

    /// Answers a fatal protocol error with a connection-level error frame and closes.
    fn fail(&mut self, error: &ProtocolError, ctx: &mut Context<Self>) {
        tracing::info!(connection = self.id, "closing: {error}");
        self.reply_err(None, &ErrorBody::from(error));
        self.close(ctx);
    }

    /// Stops reading; the writer ends the session once everything pending is written.
    fn close(&mut self, ctx: &mut Context<Self>) {
        if self.phase == Phase::Closing {
            return;
        }
        self.phase = Phase::Closing;
        self.stop_reading(ctx);
        self.out.close();
        // A client that never reads must not keep the session alive.
        ctx.run_later(self.deps.limits.write_timeout, |_, ctx| ctx.stop());
    }

    fn stop_reading(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.reading.take() {
            ctx.cancel_future(handle);
        }
    }

    /// Closes once nothing is left to answer, if the client is gone or we are draining.
    fn close_if_done(&mut self, ctx: &mut Context<Self>) {
        if (self.read_closed || self.phase == Phase::Draining) && self.out.in_flight() == 0 {
            self.close(ctx);
        }
    }

    /// Pauses the session while the client is far behind in reading.
    fn apply_backpressure(&mut self, ctx: &mut Context<Self>) {
        if self.out.pending() > HIGH_WATER {
            ctx.wait(CatchUp::new(self.deps.limits.write_timeout));
        }
    }

    fn handshake(&mut self, body: &[u8], ctx: &mut Context<Self>) {
        let hello: Hello = match decode_map(body) {
            Ok(h) => h,
            Err(e) => return self.refuse(&ProtocolError::HandshakeRequired(e), ctx),
        };
        // The version is checked first, so a mismatch reveals nothing about the token.
        if hello.protocol != u64::from(PROTOCOL_VERSION) {
            let error = ProtocolError::ProtocolMismatch {
                client: hello.protocol,
                server: PROTOCOL_VERSION,
            };
            return self.refuse(&error, ctx);
        }
        if !self.deps.token.matches(&hello.token) {
            return self.refuse(&ProtocolError::Unauthorized, ctx);
        }
        let mut client = hello.client;
        if let Some((cut, _)) = client.char_indices().nth(MAX_CLIENT_NAME) {
            client.truncate(cut);
        }
        self.deps.connections.authenticate(self.id, &client);
        tracing::debug!(connection = self.id, %client, peer = ?self.peer, "client connected");
        let info = &self.deps.info;
        let welcome = Welcome {
            ok: true,
            protocol: Some(PROTOCOL_VERSION),
            daemon: Some(format!("astrid-daemon {}", info.version)),
            session: Some(info.session_name.clone()),
            connection: Some(self.id),
            workspace: Some(info.workspace.display().to_string()),
            error: None,
        };
        if let Err(e) = self.out.frame(&welcome) {
            tracing::error!(connection = self.id, "cannot encode the welcome: {e}");
        }
        self.phase = Phase::Open;
        self.publish_lifecycle("astrid.client.connected", &client);
        self.who = describe(self.id, Some(&client), self.peer);
        self.client = Some(client);
    }

    fn publish_lifecycle(&self, topic: &str, client: &str) {
        #[derive(Serialize)]
        struct Lifecycle<'a> {
            connection: u64,
            client: &'a str,
            pid: Option<i32>,
        }
        let payload = to_payload(&Lifecycle {
            connection: self.id,
            client,
            pid: self.peer.pid,
        })
        .unwrap_or_default();
        if let Some(bus) = self.deps.services.bus.get() {
            bus.do_send(Publish {
                topic: topic.to_owned(),
                payload,
                source: "listener".to_owned(),
            });
        }
    }

    fn request(&mut self, body: &[u8], ctx: &mut Context<Self>) {
        if body.is_empty() {
            let error = ErrorBody::from(&ProtocolError::EmptyFrame);
            self.audit_refusal("invalid", String::new(), &error);
            self.deps.metrics.requests.undecoded(error.code);
            return self.reply_err(None, &error);
        }
        match decode_request(body) {
            Ok(frame) => {
                self.current = Some(Timer::start(&frame.request));
                if self.phase == Phase::Draining {
                    let error = ErrorBody::from(&ProtocolError::ShuttingDown);
                    return self.reply_err(Some(frame.id), &error);
                }
                self.dispatch(frame.id, frame.request, ctx);
                // Answered, or handed to whatever answers it.
                self.current = None;
            }
            Err((id, error)) => {
                let error = ErrorBody::from(&error);
                self.audit_refusal("invalid", String::new(), &error);
                self.reply_err(id, &error);
                self.deps.metrics.requests.undecoded(error.code);
            }
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.deps.limits.handshake_timeout;
        ctx.run_later(timeout, move |act, ctx| {
            if act.phase == Phase::Handshake {
                act.refuse(&ProtocolError::HandshakeTimeout(timeout), ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.out.release();
        self.deps.connections.close(self.id);
        if let (Some(id), Some(bus)) = (self.link.subscriber(), self.deps.services.bus.get()) {
            bus.do_send(Deregister(id));
        }
        if let Some(client) = self.client.take() {
            tracing::debug!(connection = self.id, %client, "client disconnected");
            self.publish_lifecycle("astrid.client.disconnected", &client);
        }
    }
}

impl StreamHandler<Result<BytesMut, FrameError>> for SessionActor {
    fn handle(&mut self, item: Result<BytesMut, FrameError>, ctx: &mut Context<Self>) {
        match item {
            Ok(body) => match self.phase {
                Phase::Handshake => self.handshake(&body, ctx),
                Phase::Open | Phase::Draining => self.request(&body, ctx),
                Phase::Closing => {}
            },
            Err(error @ (FrameError::TooLarge { .. } | FrameError::FirstTooLarge { .. })) => {
                let error = ProtocolError::Frame(error);
                if self.phase == Phase::Handshake {
                    self.refuse(&error, ctx);
                } else {
                    self.fail(&error, ctx);
                }
            }
            Err(error) => {
                // Truncated frame or read error: the client is gone or broken.
                tracing::debug!(connection = self.id, "read ended: {error}");
                self.read_closed = true;
                self.out.watch_idle();
                self.stop_reading(ctx);
                self.close_if_done(ctx);
            }
        }
        self.apply_backpressure(ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.read_closed = true;
        self.out.watch_idle();
        self.reading = None;
        self.close_if_done(ctx);
    }
}

impl Handler<Drain> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) {
        match self.phase {
            Phase::Handshake => self.close(ctx),
            Phase::Open => {
                // Requests already read are answered (`shutting_down` for new ones); the
                // connection closes as soon as nothing is in flight.
                self.phase = Phase::Draining;
                self.out.watch_idle();
                self.close_if_done(ctx);
            }
            Phase::Draining | Phase::Closing => {}
        }
    }
}
