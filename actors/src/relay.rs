//! Delivering answers on the thread that waits for them, in bulk.
//!
//! Waking a task on another arbiter costs a system call (the target's event loop is woken
//! through an eventfd) for every task woken. The ledger's syncer thread answers dozens of
//! writers per `fdatasync`, all of them sessions on the main arbiter; through a [`Relay`]
//! it hands over all of those answers with one wake-up, and they are delivered there as
//! local wake-ups, which cost no system call.

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

type Job = Box<dyn FnOnce() + Send>;

/// Runs jobs on the arbiter that created it (or in place, for [`Relay::direct`]).
#[derive(Debug, Clone, Default)]
pub struct Relay(Option<UnboundedSender<Job>>);

impl Relay {
    /// A relay to the current arbiter: jobs sent from any thread run there, in order.
    /// Must be called from within an actix system.
    pub fn on_current_arbiter() -> Self {
        let (tx, mut rx) = unbounded_channel::<Job>();
        actix::spawn(async move {
            while let Some(job) = rx.recv().await {
                job();
            }
        });
        Self(Some(tx))
    }

    /// Runs jobs where they are sent from.
    pub fn direct() -> Self {
        Self(None)
    }

    /// Runs `job` on the relay's arbiter, or right here if there is none (or it stopped).
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        match &self.0 {
            Some(tx) => {
                if let Err(unsent) = tx.send(Box::new(job)) {
                    (unsent.0)();
                }
            }
            None => job(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn jobs_run_on_the_relay_thread_in_order() {
        let relay = Relay::on_current_arbiter();
        let here = std::thread::current().id();
        let (tx, mut rx) = unbounded_channel();
        std::thread::spawn(move || {
            for n in 0..3 {
                let tx = tx.clone();
                relay.run(move || {
                    let _ = tx.send((n, std::thread::current().id()));
                });
            }
        });
        for n in 0..3 {
            let (got, thread) = rx.recv().await.unwrap();
            assert_eq!((got, thread), (n, here));
        }
    }

    #[test]
    fn a_direct_relay_runs_in_place() {
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&ran);
        Relay::direct().run(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
