//! The uses of `ask:` grants waiting for the user: numbered, bounded (in all and per
//! capsule), each with the channel its capsule waits on and when it expires. Plain code,
//! tested on its own; the actor (`mod.rs`) adds the bus, the clock and the audit log.

use std::collections::BTreeMap;

use tokio::sync::oneshot;

use crate::protocol::PendingApproval;

/// Requests waiting at once, in all.
pub const MAX_PENDING: usize = 64;
/// Requests waiting at once, per capsule.
pub const MAX_PENDING_PER_CAPSULE: usize = 4;

/// How a request ended, for the capsule that waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Approved,
    /// Refused, with why (for the log).
    Denied(String),
}

#[derive(Debug)]
struct Waiting {
    shown: PendingApproval,
    reply: oneshot::Sender<Decision>,
}

/// The waiting requests.
#[derive(Debug, Default)]
pub struct Table {
    next: u64,
    waiting: BTreeMap<u64, Waiting>,
}

impl Table {
    /// Adds a request (its `id` is assigned here).
    ///
    /// # Errors
    ///
    /// Why, with the channel given back, when a bound is reached.
    pub fn open(
        &mut self,
        mut shown: PendingApproval,
        reply: oneshot::Sender<Decision>,
    ) -> Result<PendingApproval, (String, oneshot::Sender<Decision>)> {
        if self.waiting.len() >= MAX_PENDING {
            return Err((
                format!("{MAX_PENDING} approvals are waiting already"),
                reply,
            ));
        }
        let mine = self
            .waiting
            .values()
            .filter(|w| w.shown.capsule == shown.capsule)
            .count();
        if mine >= MAX_PENDING_PER_CAPSULE {
            return Err((
                format!(
                    "capsule `{}` has {mine} approvals waiting already",
                    shown.capsule
                ),
                reply,
            ));
        }
        self.next += 1;
        shown.id = self.next;
        self.waiting.insert(
            shown.id,
            Waiting {
                shown: shown.clone(),
                reply,
            },
        );
        Ok(shown)
    }

    /// Takes request `id` out, with the channel to answer it on.
    pub fn settle(&mut self, id: u64) -> Option<(PendingApproval, oneshot::Sender<Decision>)> {
        self.waiting.remove(&id).map(|w| (w.shown, w.reply))
    }

    /// What is waiting, oldest first.
    pub fn list(&self) -> Vec<PendingApproval> {
        self.waiting.values().map(|w| w.shown.clone()).collect()
    }

    /// Forgets requests whose capsule gave up waiting (its call ended first).
    pub fn forget_abandoned(&mut self) -> Vec<PendingApproval> {
        let gone: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        gone.into_iter()
            .filter_map(|id| self.waiting.remove(&id).map(|w| w.shown))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(capsule: &str) -> PendingApproval {
        PendingApproval {
            id: 0,
            capsule: capsule.into(),
            access: "kv".into(),
            grant: "ask:kv".into(),
            asked_ms: 0,
            expires_ms: 0,
        }
    }

    #[test]
    fn requests_are_numbered_settled_once_and_bounded_per_capsule() {
        let mut table = Table::default();
        let mut kept = Vec::new();
        for n in 1..=MAX_PENDING_PER_CAPSULE {
            let (tx, rx) = oneshot::channel();
            let shown = table.open(request("a"), tx).unwrap();
            assert_eq!(shown.id, n as u64);
            kept.push(rx);
        }
        let (tx, _rx) = oneshot::channel();
        let (why, _) = table.open(request("a"), tx).unwrap_err();
        assert!(why.contains("capsule `a` has 4 approvals waiting"), "{why}");
        let (tx, _other) = oneshot::channel();
        assert!(
            table.open(request("b"), tx).is_ok(),
            "another capsule is not held back"
        );
        assert_eq!(table.list().len(), MAX_PENDING_PER_CAPSULE + 1);

        let (shown, reply) = table.settle(1).unwrap();
        assert_eq!(shown.capsule, "a");
        reply.send(Decision::Approved).unwrap();
        assert!(table.settle(1).is_none(), "settled once");
        assert_eq!(kept.remove(0).try_recv().unwrap(), Decision::Approved);

        drop(kept.remove(0));
        let gone = table.forget_abandoned();
        assert_eq!(gone.iter().map(|g| g.id).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn the_total_is_bounded() {
        let mut table = Table::default();
        let mut kept = Vec::new();
        for n in 0..MAX_PENDING {
            let (tx, rx) = oneshot::channel();
            table.open(request(&format!("c{n}")), tx).unwrap();
            kept.push(rx);
        }
        let (tx, _rx) = oneshot::channel();
        let (why, _) = table.open(request("late"), tx).unwrap_err();
        assert!(why.contains("64 approvals are waiting"), "{why}");
    }
}
