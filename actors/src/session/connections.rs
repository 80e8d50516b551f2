//! The table of open client connections, shared by the listener (which adds entries, checks
//! the connection caps, and drains them at shutdown) and the sessions (which authenticate and
//! remove themselves). It outlives listener restarts, so counts, idle tracking and the
//! refusals being counted (`refusals.rs`) survive a listener crash.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::Addr;

use super::refusals::Refusals;
use crate::audit::AuditActor;
use crate::protocol::ProtocolError;
use crate::session::SessionActor;
use crate::supervisor::ChildRef;
pub use astrid_protocol::payload::session::SessionInfo;

#[derive(Debug)]
struct Entry {
    client: Option<String>,
    pid: Option<i32>,
    connected_at: Instant,
    addr: Addr<SessionActor>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    /// Entries without a client name yet (still in their handshake).
    unauthenticated: usize,
    /// Set while there are no connections, once idle tracking has begun.
    idle_since: Option<Instant>,
    tracking: bool,
    accepted: u64,
}

/// Open connections, idle tracking, and refusals before authentication.
#[derive(Debug, Default)]
pub struct Connections {
    table: Mutex<Table>,
    refusals: Refusals,
    /// Told when the last connection goes (and when idle tracking begins).
    idle: tokio::sync::Notify,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Allocates the next connection number.
    pub fn next_id(&self) -> u64 {
        let mut t = self.lock();
        t.next_id += 1;
        t.next_id
    }

    /// Records an accepted connection.
    pub fn open(&self, id: u64, pid: Option<i32>, addr: Addr<SessionActor>) {
        let mut t = self.lock();
        t.accepted += 1;
        t.idle_since = None;
        t.unauthenticated += 1;
        t.entries.insert(
            id,
            Entry {
                client: None,
                pid,
                connected_at: Instant::now(),
                addr,
            },
        );
    }

    /// Records a successful handshake.
    pub fn authenticate(&self, id: u64, client: &str) {
        let mut t = self.lock();
        if let Some(e) = t.entries.get_mut(&id)
            && e.client.replace(client.to_owned()).is_none()
        {
            t.unauthenticated -= 1;
        }
    }

    /// Whether one more connection fits under the caps: at most `max_total` open, at most
    /// `max_unauthenticated` of them still in their handshake.
    ///
    /// # Errors
    ///
    /// The cap that one more connection would pass.
    pub fn check_room(
        &self,
        max_total: usize,
        max_unauthenticated: usize,
    ) -> Result<(), ProtocolError> {
        let t = self.lock();
        if t.entries.len() >= max_total {
            Err(ProtocolError::TooManyConnections(max_total))
        } else if t.unauthenticated >= max_unauthenticated {
            Err(ProtocolError::TooManyUnauthenticated(max_unauthenticated))
        } else {
            Ok(())
        }
    }

    /// Refusals before authentication, being counted.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Notes that `who` was refused with `error` (see `refusals.rs`): the first refusal
    /// after a quiet spell is reported to `audit` at once, and arms the timer that ends its
    /// window (`window` long) and each one after it that sees refusals. Call from an actor.
    pub fn refuse(
        self: &Arc<Self>,
        who: &str,
        error: &ProtocolError,
        audit: &ChildRef<AuditActor>,
        window: Duration,
    ) {
        let Some(refused) = self.refusals.refuse(Instant::now(), who, error) else {
            return;
        };
        refused.report(audit);
        let (connections, audit) = (Arc::clone(self), audit.clone());
        actix::spawn(async move {
            while let Some(end) = connections.refusals.ends_at(window) {
                tokio::time::sleep_until(end.into()).await;
                if let Some(counted) = connections.refusals.tick(Instant::now(), window) {
                    counted.report(&audit);
                }
            }
        });
    }

    /// Forgets a closed connection; the idle clock starts when the last one goes.
    pub fn close(&self, id: u64) {
        let mut t = self.lock();
        if let Some(e) = t.entries.remove(&id)
            && e.client.is_none()
        {
            t.unauthenticated -= 1;
        }
        if t.entries.is_empty() && t.tracking {
            t.idle_since = Some(Instant::now());
            self.idle.notify_one();
        }
    }

    /// Starts idle tracking (at readiness): from now on, no connections means idle.
    pub fn start_idle_tracking(&self) {
        let mut t = self.lock();
        t.tracking = true;
        if t.entries.is_empty() {
            t.idle_since = Some(Instant::now());
            self.idle.notify_one();
        }
    }

    /// Waits until no connection is open (at once if none was open since the last wait).
    pub async fn went_idle(&self) {
        self.idle.notified().await;
    }

    /// How long there have been no connections, if none are open and tracking has begun.
    pub fn idle_for(&self) -> Option<Duration> {
        self.lock().idle_since.map(|t| t.elapsed())
    }

    /// Open connections, authenticated or not.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connections that completed the handshake.
    pub fn authenticated(&self) -> usize {
        let t = self.lock();
        t.entries.len() - t.unauthenticated
    }

    /// Connections still in their handshake.
    pub fn unauthenticated(&self) -> usize {
        self.lock().unauthenticated
    }

    /// Connections accepted since boot.
    pub fn accepted(&self) -> u64 {
        self.lock().accepted
    }

    /// The counts the metrics report: accepted, open, in their handshake, refused.
    pub fn counts(&self) -> crate::metrics::ConnectionCounts {
        let (accepted, open, handshaking) = {
            let t = self.lock();
            (t.accepted, t.entries.len(), t.unauthenticated)
        };
        crate::metrics::ConnectionCounts {
            accepted,
            open: u64::try_from(open).unwrap_or(u64::MAX),
            handshaking: u64::try_from(handshaking).unwrap_or(u64::MAX),
            refused: self.refusals.totals(),
        }
    }

    /// Addresses of every open session.
    pub fn sessions(&self) -> Vec<Addr<SessionActor>> {
        self.lock()
            .entries
            .values()
            .map(|e| e.addr.clone())
            .collect()
    }

    /// Every open connection, oldest first.
    pub fn infos(&self) -> Vec<SessionInfo> {
        self.lock()
            .entries
            .iter()
            .map(|(&id, e)| SessionInfo {
                id,
                client: e.client.clone(),
                pid: e.pid,
                authenticated: e.client.is_some(),
                connected_ms: u64::try_from(e.connected_at.elapsed().as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect()
    }
}
