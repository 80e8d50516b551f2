//! What a supervisor tells about its children: the live tree ([`GetTree`], reaching into
//! nested supervisors, for `astrid ps`) and one child's summary ([`GetChild`]).

use std::time::Instant;

use actix::{Addr, Context, Handler, ResponseFuture};

use super::messages::{ChildSummary, GetChild, GetTree};
use super::types::{ChildState, NodeKind, TreeNode};
use super::{Phase, SupervisorActor};

impl SupervisorActor {
    /// The supervisors nested under this one, with their position among the children.
    pub(super) fn nested(&self) -> Vec<(usize, Addr<SupervisorActor>)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.control.is_some())
            .filter_map(|(i, s)| Some((i, s.spec.subtree.as_ref()?.get()?)))
            .collect()
    }
}

impl Handler<GetTree> for SupervisorActor {
    type Result = ResponseFuture<TreeNode>;

    fn handle(&mut self, _: GetTree, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let state = match self.phase {
            Phase::Running => ChildState::Running,
            Phase::ShuttingDown { .. } => ChildState::Stopping,
            Phase::Stopped => ChildState::Stopped,
        };
        let in_window = self.intensity.in_window(now, &self.policy);
        let mut node = TreeNode {
            name: self.name.clone(),
            kind: NodeKind::Supervisor,
            restart: None,
            state,
            restarts: u32::try_from(in_window).unwrap_or(u32::MAX),
            uptime_ms: None,
            last_failure: None,
            detail: Some(format!(
                "one_for_one, at most {} restarts in {:?}",
                self.policy.intensity, self.policy.period
            )),
            children: self.slots.iter().map(|s| s.node(now)).collect(),
        };
        let nested = self.nested();
        Box::pin(async move {
            // A nested supervisor shows its own children and budget (it answers at once: it
            // lives on this thread or answers from its own).
            for (i, addr) in nested {
                if let Ok(sub) = addr.send(GetTree).await {
                    node.children[i].children = sub.children;
                    node.children[i].detail = sub.detail;
                }
            }
            node
        })
    }
}

impl Handler<GetChild> for SupervisorActor {
    type Result = Option<ChildSummary>;

    fn handle(&mut self, msg: GetChild, _: &mut Context<Self>) -> Self::Result {
        self.slots
            .iter()
            .find(|s| s.spec.name == msg.name)
            .map(|s| ChildSummary {
                state: s.state,
                restarts: s.restarts,
                last_failure: s.last_failure.as_ref().map(|(r, _)| r.clone()),
            })
    }
}
