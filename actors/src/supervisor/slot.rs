//! One child's place in a supervisor: its spec, its current incarnation (generation,
//! control, state), its restart history and budget, and a removal in progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::SpawnHandle;
use tokio::sync::oneshot;

use super::child::{ChildControl, ChildSpec};
use super::policy::{Backoff, RestartIntensity};
use super::types::{ChildState, Failure, TreeNode};

/// A child of a supervisor.
pub(super) struct Slot {
    /// Stable for the slot's life (slots are added and removed at run time).
    pub(super) id: u64,
    pub(super) spec: ChildSpec,
    /// The slot's own restart window, when its spec has its own budget.
    pub(super) own_window: Option<RestartIntensity>,
    /// Answered once the child is stopped and removed ([`StopChild`](super::StopChild)).
    pub(super) removal: Option<Removal>,
    pub(super) generation: u64,
    pub(super) state: ChildState,
    pub(super) control: Option<Box<dyn ChildControl>>,
    pub(super) stop_requested: Arc<AtomicBool>,
    pub(super) restarts: u32,
    pub(super) backoff: Backoff,
    pub(super) started_at: Option<Instant>,
    pub(super) last_failure: Option<(String, Instant)>,
    pub(super) pending_restart: Option<SpawnHandle>,
    /// A fatal fault was delivered to the current incarnation: it is about to die, and a
    /// second one would cost no second restart, so it is refused.
    pub(super) doomed: bool,
}

impl Slot {
    pub(super) fn new(id: u64, spec: ChildSpec) -> Self {
        Self {
            id,
            own_window: spec.budget.map(|_| RestartIntensity::default()),
            removal: None,
            spec,
            generation: 0,
            state: ChildState::Stopped,
            control: None,
            stop_requested: Arc::new(AtomicBool::new(false)),
            restarts: 0,
            backoff: Backoff::default(),
            started_at: None,
            last_failure: None,
            pending_restart: None,
            doomed: false,
        }
    }

    /// Asks the running child to stop; its exit then counts as requested.
    pub(super) fn request_stop(&mut self) {
        self.stop_requested.store(true, Ordering::Release);
        self.state = ChildState::Stopping;
        if let Some(control) = &self.control {
            control.terminate();
        }
    }

    /// Gives up on a child that did not stop in time: its exit report will be stale.
    pub(super) fn abandon(&mut self, supervisor: &str) {
        tracing::warn!(
            %supervisor,
            child = %self.spec.name,
            "did not stop within {:?}; abandoning it",
            self.spec.shutdown_timeout
        );
        self.control = None;
        self.generation += 1;
        self.state = ChildState::Stopped;
    }

    /// The child as a node of the tree, at `now`.
    pub(super) fn node(&self, now: Instant) -> TreeNode {
        let running = matches!(self.state, ChildState::Running | ChildState::Stopping);
        TreeNode {
            name: self.spec.name.clone(),
            kind: self.spec.kind,
            restart: Some(self.spec.restart),
            state: self.state,
            restarts: self.restarts,
            uptime_ms: self
                .started_at
                .filter(|_| running)
                .map(|t| millis(now.saturating_duration_since(t))),
            last_failure: self.last_failure.as_ref().map(|(reason, at)| Failure {
                reason: reason.clone(),
                ago_ms: millis(now.saturating_duration_since(*at)),
            }),
            detail: None,
            children: self.spec.describe.as_ref().map(|d| d()).unwrap_or_default(),
        }
    }
}

/// A removal in progress ([`StopChild`](super::StopChild)).
pub(super) struct Removal {
    pub(super) waiters: Vec<oneshot::Sender<()>>,
    pub(super) timer: Option<SpawnHandle>,
    /// A child of the same name, to start once this one is gone (its [`StartChild`](super::StartChild) came
    /// while this one was stopping).
    pub(super) successor: Option<ChildSpec>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
