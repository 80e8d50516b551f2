//! Group commit for the actors that write to redb (store and audit).
//!
//! A writer submits an operation and gets a receiver for its outcome; the actor schedules one
//! flush (with `ctx.notify`, which runs after every message already in the mailbox) and
//! commits everything pending in a single durable transaction. Writes that arrive while a
//! commit is in flight queue in the mailbox and share the next one, so many clients are not
//! serialized on fsync. Nothing is acknowledged before its transaction is durable; if the
//! commit fails, every operation in it fails.

use tokio::sync::oneshot;

/// Operations waiting for the next commit.
#[derive(Debug)]
pub(crate) struct GroupCommit<Op, Out> {
    pending: Vec<(Op, oneshot::Sender<Out>)>,
    scheduled: bool,
}

impl<Op, Out> Default for GroupCommit<Op, Out> {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            scheduled: false,
        }
    }
}

impl<Op, Out> GroupCommit<Op, Out> {
    /// Queues `op`; returns where its outcome will arrive, and whether the caller must
    /// schedule a flush (true for the first operation after a flush).
    pub(crate) fn submit(&mut self, op: Op) -> (oneshot::Receiver<Out>, bool) {
        let (tx, rx) = oneshot::channel();
        (rx, self.submit_with(op, tx))
    }

    /// Queues `op`, whose outcome goes to `tx`; returns whether the caller must schedule a
    /// flush.
    pub(crate) fn submit_with(&mut self, op: Op, tx: oneshot::Sender<Out>) -> bool {
        self.pending.push((op, tx));
        let schedule = !self.scheduled;
        self.scheduled = true;
        schedule
    }

    /// Takes everything pending for one commit.
    pub(crate) fn take(&mut self) -> Vec<(Op, oneshot::Sender<Out>)> {
        self.scheduled = false;
        std::mem::take(&mut self.pending)
    }
}

/// Answers the writers of one commit, in order: each its own result, or all the same error.
pub(crate) fn answer<T, E: Clone>(
    senders: Vec<oneshot::Sender<Result<T, E>>>,
    outcome: Result<Vec<T>, E>,
) {
    match outcome {
        Ok(results) => {
            for (tx, result) in senders.into_iter().zip(results) {
                let _ = tx.send(Ok(result));
            }
        }
        Err(error) => {
            for tx in senders {
                let _ = tx.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_submit_after_a_flush_schedules_one() {
        let mut g = GroupCommit::<u8, u8>::default();
        let (_a, first) = g.submit(1);
        let (_b, second) = g.submit(2);
        assert!(first && !second);
        let batch = g.take();
        assert_eq!(batch.iter().map(|(op, _)| *op).collect::<Vec<_>>(), [1, 2]);
        let (_c, again) = g.submit(3);
        assert!(again);
    }

    #[test]
    fn answers_reach_each_writer_or_all_share_the_error() {
        let (a, mut ra) = oneshot::channel::<Result<u8, &str>>();
        let (b, mut rb) = oneshot::channel();
        answer(vec![a, b], Ok(vec![1, 2]));
        assert_eq!(
            (ra.try_recv().unwrap(), rb.try_recv().unwrap()),
            (Ok(1), Ok(2))
        );
        let (a, mut ra) = oneshot::channel::<Result<u8, &str>>();
        let (b, mut rb) = oneshot::channel();
        answer(vec![a, b], Err("full"));
        assert_eq!(
            (ra.try_recv().unwrap(), rb.try_recv().unwrap()),
            (Err("full"), Err("full"))
        );
    }

    #[test]
    fn outcomes_reach_their_submitters() {
        let mut g = GroupCommit::<u8, u8>::default();
        let (mut a, _) = g.submit(1);
        let (mut b, _) = g.submit(2);
        for (op, tx) in g.take() {
            tx.send(op * 10).unwrap();
        }
        assert_eq!(a.try_recv().unwrap(), 10);
        assert_eq!(b.try_recv().unwrap(), 20);
    }
}
