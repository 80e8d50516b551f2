//! What a service manager's watchdog may ask of a running kernel: whether the supervision
//! tree answers (the root supervisor and the socket listener, each within a deadline) and how
//! many clients it serves. A kernel whose actors no longer run, or whose listener is wedged,
//! fails the probe, so the watchdog stops vouching for it and the service manager restarts it.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;

use super::KernelActors;
use crate::listener::ListenerInfo;
use crate::session::Connections;
use crate::supervisor::{GetTree, SupervisorActor};

/// A cheap, cloneable view of a running kernel for health checks.
#[derive(Debug, Clone)]
pub struct Health {
    supervisor: Addr<SupervisorActor>,
    actors: KernelActors,
    connections: Arc<Connections>,
}

impl Health {
    pub(super) fn new(
        supervisor: Addr<SupervisorActor>,
        actors: KernelActors,
        connections: Arc<Connections>,
    ) -> Self {
        Self {
            supervisor,
            actors,
            connections,
        }
    }

    /// Whether the root supervisor and the listener both answer within `within`.
    pub async fn answers(&self, within: Duration) -> bool {
        let root = tokio::time::timeout(within, self.supervisor.send(GetTree)).await;
        if !matches!(root, Ok(Ok(_))) {
            return false;
        }
        self.actors
            .listener
            .call(ListenerInfo, within)
            .await
            .is_ok()
    }

    /// Authenticated client connections.
    pub fn clients(&self) -> usize {
        self.connections.authenticated()
    }
}
