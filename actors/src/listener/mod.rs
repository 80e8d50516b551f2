//! The socket listener: accepts connections on the session socket, refuses peers of another
//! uid (or whose uid cannot be read) before reading a byte, refuses connections past the caps
//! (`Limits::max_connections`, `Limits::max_unauthenticated`) with a refusal frame, and
//! starts one [`SessionActor`] per connection. Its refusals, like the sessions', are counted
//! in windows (`refusals.rs`). In ephemeral mode it also watches for idleness (a timer runs
//! only while no client is connected) and asks the kernel to shut down. It has no periodic
//! timer. It is the built-in capsule `astrid-capsule-cli`.
//!
//! The listening socket is bound once by the kernel; each listener incarnation accepts on a
//! duplicate of it, so a listener crash loses no pending connection and needs no rebind.
//! Sessions are not stopped by a listener crash: the connection table is shared.
//!
//! Handles: [`Terminate`] (stop accepting, drain sessions, stop), [`Inject`], and
//! [`ListenerInfo`] (asked by the kernel at boot to verify the listener serves).

use std::io;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, SpawnHandle,
    StreamHandler,
};
use tokio::net::UnixStream;
use tokio_stream::wrappers::UnixListenerStream;

use crate::protocol::{ErrorBody, ProtocolError, Welcome, encode_frame};
use crate::session::{Drain, Peer, SessionActor, SessionDeps};
use crate::supervisor::{Inject, Terminate, apply_fault};

/// Asks the listener whether it is accepting; answered with the connections accepted so far.
#[derive(Debug, Message)]
#[rtype(result = "u64")]
pub struct ListenerInfo;

/// The listener actor.
#[derive(Debug)]
pub struct ListenerActor {
    socket: Option<StdUnixListener>,
    deps: Arc<SessionDeps>,
    idle_grace: Option<Duration>,
    uid: u32,
    accepting: Option<SpawnHandle>,
    draining_since: Option<Instant>,
}

impl ListenerActor {
    /// A listener accepting on `socket` (a duplicate of the kernel's bound socket). With
    /// `idle_grace`, it asks for shutdown once no client has been connected for that long.
    pub fn new(
        socket: StdUnixListener,
        deps: Arc<SessionDeps>,
        idle_grace: Option<Duration>,
    ) -> Self {
        Self {
            socket: Some(socket),
            deps,
            idle_grace,
            uid: rustix::process::geteuid().as_raw(),
            accepting: None,
            draining_since: None,
        }
    }

    fn accept(&mut self, stream: UnixStream) {
        let cred = stream.peer_cred().map(|c| (c.uid(), c.pid()));
        let admitted = check_peer(cred, self.uid).and_then(|peer| {
            let limits = &self.deps.limits;
            self.deps
                .connections
                .check_room(limits.max_connections, limits.max_unauthenticated)
                .map(|()| peer)
                .map_err(|e| (Some(peer), e))
        });
        match admitted {
            Ok(peer) => {
                SessionActor::start(stream, peer, Arc::clone(&self.deps));
            }
            Err((peer, error)) => {
                refuse(&stream, &error);
                let who = describe_peer(peer);
                self.deps.connections.refuse(
                    &who,
                    &error,
                    &self.deps.services.audit,
                    self.deps.limits.refusal_window,
                );
            }
        }
    }

    fn check_idle(&mut self) {
        if let (Some(grace), Some(idle)) = (self.idle_grace, self.deps.connections.idle_for())
            && idle >= grace
        {
            tracing::info!(?grace, "no client for the idle grace; shutting down");
            self.deps
                .shutdown
                .request(format!("idle: no client for {} ms", grace.as_millis()));
            // Ask once; the kernel's shutdown stops this actor in turn.
            self.idle_grace = None;
        }
    }

    fn check_drained(&mut self, ctx: &mut Context<Self>) {
        let Some(since) = self.draining_since else {
            return;
        };
        let open = self.deps.connections.len();
        if open == 0 {
            ctx.stop();
        } else if since.elapsed() >= self.deps.limits.drain_timeout {
            tracing::warn!(open, "sessions did not drain in time; closing anyway");
            ctx.stop();
        }
    }
}

/// Who the peer is, if it may be served: a peer whose credentials cannot be read is refused,
/// as is one of another uid than the daemon's. On refusal, the peer as far as it is known.
fn check_peer(
    cred: io::Result<(u32, Option<i32>)>,
    daemon: u32,
) -> Result<Peer, (Option<Peer>, ProtocolError)> {
    let (uid, pid) = cred.map_err(|e| (None, ProtocolError::PeerUnknown(e.to_string())))?;
    let peer = Peer {
        pid,
        uid: Some(uid),
    };
    if uid == daemon {
        Ok(peer)
    } else {
        Err((Some(peer), ProtocolError::PeerUid { peer: uid, daemon }))
    }
}

/// `peer (pid 42, uid 1001)`: a refused connection as audit entries name it.
fn describe_peer(peer: Option<Peer>) -> String {
    let facts: Vec<String> = peer
        .iter()
        .flat_map(|p| {
            let pid = p.pid.map(|pid| format!("pid {pid}"));
            let uid = p.uid.map(|uid| format!("uid {uid}"));
            pid.into_iter().chain(uid)
        })
        .collect();
    if facts.is_empty() {
        "peer".to_owned()
    } else {
        format!("peer ({})", facts.join(", "))
    }
}

/// Best-effort refusal frame before dropping a connection that must not be served: one
/// non-blocking write of a small frame, nothing read.
fn refuse(stream: &UnixStream, error: &ProtocolError) {
    let mut buf = bytes::BytesMut::new();
    if encode_frame(&mut buf, &Welcome::refused(ErrorBody::from(error))).is_ok() {
        let _ = stream.try_write(&buf);
    }
}

impl Actor for ListenerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let accepting = self.socket.take().and_then(|socket| {
            socket.set_nonblocking(true).ok()?;
            tokio::net::UnixListener::from_std(socket).ok()
        });
        let Some(listener) = accepting else {
            tracing::error!("cannot accept on the session socket");
            ctx.stop();
            return;
        };
        self.accepting = Some(ctx.add_stream(UnixListenerStream::new(listener)));
        if let Some(grace) = self.idle_grace {
            // No periodic check: a timer runs only while no client is connected.
            let connections = Arc::clone(&self.deps.connections);
            let idle = async move {
                loop {
                    match connections.idle_for() {
                        Some(idle) => match grace.checked_sub(idle) {
                            Some(left) if !left.is_zero() => tokio::time::sleep(left).await,
                            _ => return,
                        },
                        None => connections.went_idle().await,
                    }
                }
            };
            ctx.spawn(actix::fut::wrap_future::<_, Self>(idle).map(|(), act, _| act.check_idle()));
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // What was counted so far is recorded (the audit log stops after the listener).
        if let Some(counted) = self.deps.connections.refusals().flush(Instant::now()) {
            counted.report(&self.deps.services.audit);
        }
    }
}

impl StreamHandler<io::Result<UnixStream>> for ListenerActor {
    fn handle(&mut self, item: io::Result<UnixStream>, ctx: &mut Context<Self>) {
        match item {
            Ok(stream) => self.accept(stream),
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                // Out of descriptors: pause rather than spin on the same error.
                ctx.wait(actix::fut::wrap_future(tokio::time::sleep(
                    Duration::from_millis(100),
                )));
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.draining_since.is_none() {
            tracing::error!("the listening socket closed");
            ctx.stop();
        }
    }
}

impl Handler<Terminate> for ListenerActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        if self.draining_since.is_some() {
            return;
        }
        self.draining_since = Some(Instant::now());
        if let Some(handle) = self.accepting.take() {
            ctx.cancel_future(handle);
        }
        for session in self.deps.connections.sessions() {
            session.do_send(Drain);
        }
        self.check_drained(ctx);
        ctx.run_interval(Duration::from_millis(10), Self::check_drained);
    }
}

impl Handler<Inject> for ListenerActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply_fault(&msg.0, ctx);
    }
}

impl Handler<ListenerInfo> for ListenerActor {
    type Result = u64;

    fn handle(&mut self, _: ListenerInfo, _: &mut Context<Self>) -> u64 {
        self.deps.connections.accepted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_whose_credentials_cannot_be_read_is_refused() {
        let (peer, error) = check_peer(Err(io::Error::other("EINVAL")), 1000).unwrap_err();
        assert_eq!(peer, None);
        assert!(matches!(error, ProtocolError::PeerUnknown(_)));
        assert_eq!(
            ErrorBody::from(&error).code,
            crate::protocol::ErrorCode::Unauthorized
        );
    }

    #[test]
    fn only_peers_of_the_daemon_uid_are_served() {
        let peer = check_peer(Ok((1000, Some(42))), 1000).unwrap();
        assert_eq!(
            peer,
            Peer {
                pid: Some(42),
                uid: Some(1000)
            }
        );
        let (peer, error) = check_peer(Ok((1001, Some(42))), 1000).unwrap_err();
        assert_eq!(peer.and_then(|p| p.uid), Some(1001));
        assert!(matches!(
            error,
            ProtocolError::PeerUid {
                peer: 1001,
                daemon: 1000
            }
        ));
    }
}
