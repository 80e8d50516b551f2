//! Starting a graceful shutdown, from anywhere: a client's `Shutdown`, a signal, the idle
//! timer, or an escalation. The first request wins; it withdraws the ready file and the
//! socket path (so no new client finds a dying daemon), tells subscribers, runs the daemon's
//! hook, and asks the root supervisor to stop the tree in reverse order.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use actix::Addr;
use serde::Serialize;

use super::services::Services;
use crate::audit::Record;
use crate::bus::Publish;
use crate::files::{remove_if_exists, write_private};
use crate::protocol::to_payload;
use crate::socket::BoundSocket;
use crate::supervisor::{ShutdownTree, SupervisorActor};

/// Called once, on the first shutdown request, with its reason (the daemon arms a
/// force-exit watchdog here).
pub type ShutdownHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The session files the kernel owns while it runs.
#[derive(Debug)]
pub(crate) struct KernelFiles {
    socket: Mutex<Option<BoundSocket>>,
    token: PathBuf,
    ready: PathBuf,
}

impl KernelFiles {
    pub(crate) fn new(socket: BoundSocket, token: PathBuf, ready: PathBuf) -> Self {
        Self {
            socket: Mutex::new(Some(socket)),
            token,
            ready,
        }
    }

    /// A duplicate of the listening socket for a new listener incarnation.
    pub(crate) fn listener_copy(&self) -> Result<UnixListener, String> {
        let guard = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        let socket = guard
            .as_ref()
            .ok_or("the socket is closed (shutting down)")?;
        socket
            .listener
            .try_clone()
            .map_err(|e| format!("cannot duplicate the listening socket: {e}"))
    }

    pub(crate) fn write_ready(&self, contents: &str) -> std::io::Result<()> {
        write_private(&self.ready, contents.as_bytes())
    }

    /// Removes the ready file and the socket path, and closes the kernel's listening socket.
    pub(crate) fn withdraw(&self) {
        if let Err(e) = remove_if_exists(&self.ready) {
            tracing::warn!(path = %self.ready.display(), "cannot remove the ready file: {e}");
        }
        let socket = self
            .socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(socket) = socket {
            socket.remove_file();
        }
    }

    /// Everything `withdraw` does, plus the token file.
    pub(crate) fn cleanup(&self) {
        self.withdraw();
        if let Err(e) = remove_if_exists(&self.token) {
            tracing::warn!(path = %self.token.display(), "cannot remove the token file: {e}");
        }
    }
}

struct Inner {
    reason: Mutex<Option<String>>,
    supervisor: Addr<SupervisorActor>,
    files: Arc<KernelFiles>,
    services: Services,
    hook: Option<ShutdownHook>,
}

/// Requests a graceful shutdown. Cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("requested", &self.requested())
            .finish_non_exhaustive()
    }
}

impl ShutdownHandle {
    pub(crate) fn new(
        supervisor: Addr<SupervisorActor>,
        files: Arc<KernelFiles>,
        services: Services,
        hook: Option<ShutdownHook>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                reason: Mutex::new(None),
                supervisor,
                files,
                services,
                hook,
            }),
        }
    }

    /// Starts shutting down for `reason`, unless a shutdown already started. Returns the
    /// reason in effect (the first one).
    pub fn request(&self, reason: impl Into<String>) -> String {
        let reason = {
            let mut current = self
                .inner
                .reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(first) = &*current {
                return first.clone();
            }
            let reason = reason.into();
            *current = Some(reason.clone());
            reason
        };
        tracing::info!("shutdown requested: {reason}");
        self.inner.files.withdraw();
        if let Some(hook) = &self.inner.hook {
            hook(&reason);
        }
        // The audit actor stops after every other one, so this entry is committed.
        if let Some(audit) = self.inner.services.audit.get() {
            audit.do_send(Record::new("kernel", "shutdown", reason.as_str(), "ok"));
        }
        if let Some(bus) = self.inner.services.bus.get() {
            #[derive(Serialize)]
            struct Payload<'a> {
                reason: &'a str,
            }
            bus.do_send(Publish {
                topic: "astrid.kernel.shutdown".to_owned(),
                payload: to_payload(&Payload { reason: &reason }).unwrap_or_default(),
                source: "kernel".to_owned(),
            });
        }
        self.inner.supervisor.do_send(ShutdownTree {
            reason: reason.clone(),
        });
        reason
    }

    /// The reason of the shutdown in progress, if any.
    pub fn requested(&self) -> Option<String> {
        self.inner
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
