//! The command calls waiting for one capsule.
//!
//! Sessions push calls; the capsule's thread (see `runner.rs`) takes them one by one and
//! answers each straight into the caller's connection. Only a call that finds the capsule
//! resting wakes it ([`Runner::nudge`]: an unpark of its thread, or a thread started when it
//! has none): under load, calls queue up while it works and cost no wake-up at all.
//!
//! A thread woken from sleep starts late (tens of microseconds on a virtual machine, more
//! than a whole call). So when calls come close together, the thread watches the empty
//! queue for a moment before it sleeps ([`CallQueue::linger`]): it does so only when the
//! last call came within [`LINGER`] of the queue emptying, and never longer than that, so
//! an idle or lightly used capsule costs no CPU. Capsule threads linger at
//! most one fewer at a time than there are cores ([`LingerSlots`]), so that spinning never
//! takes every core from the sessions feeding them.
//!
//! A call is owed an answer by its deadline (the manifest's, plus a margin for the hops),
//! whatever the capsule does: the registry sweeps the queues, and answers `timeout` for
//! every call, waiting or running, that is past it (a capsule whose guest computes past its
//! deadline, or which was told to hang). The sweep runs only while calls wait or run: the
//! first call pushed while it is idle arms it ([`Sweeper`]), and it disarms itself once
//! every queue is empty. When the capsule's actor dies, its supervisor's report empties the
//! queue: those calls never ran, and are answered so.
//!
//! Each call taken gets a ticket: a thread that outlived its incarnation (stopped by a
//! fault in the middle of a call) cannot take the answer of a call its successor runs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use actix::{Message, Recipient};

use super::messages::{Answer, Call, CallFailure};
use super::runner::{Runner, RunnerSlot};

/// The queue of one capsule's calls, shared by sessions, its thread and the registry.
#[derive(Debug)]
pub struct CallQueue {
    /// The thread of the capsule's current incarnation.
    runner: RunnerSlot,
    /// The manifest's call deadline, as reported to clients.
    deadline: Duration,
    /// How long a caller waits at most: the deadline plus a margin.
    patience: Duration,
    state: Mutex<State>,
    /// Calls waiting, for the capsule's thread to watch without taking the lock.
    waiting: AtomicUsize,
    /// The daemon's lingering budget.
    slots: Arc<LingerSlots>,
    /// The deadline sweep, armed by calls.
    sweeper: Arc<Sweeper>,
}

/// Asks the registry to sweep the queues after [`Sweeper::EVERY`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SweepDue;

/// Whether the deadline sweep is running, shared by every capsule's queue: the first call
/// pushed while it is not arms it, and the sweep disarms itself once no call waits or runs
/// anywhere. So an idle daemon has no sweep timer at all.
#[derive(Debug, Default)]
pub struct Sweeper {
    armed: AtomicBool,
    /// The registry, which runs the sweep (set by each incarnation as it starts).
    registry: Mutex<Option<Recipient<SweepDue>>>,
}

impl Sweeper {
    /// How often the queues are checked against their deadlines while calls wait or run.
    pub const EVERY: Duration = Duration::from_millis(50);

    /// The registry that sweeps from now on; with `pending` calls, the sweep is armed anew
    /// (an earlier registry may have died with it armed).
    pub fn attach(&self, registry: Recipient<SweepDue>, pending: bool) {
        *self.registry.lock().unwrap_or_else(PoisonError::into_inner) = Some(registry);
        self.armed.store(false, Ordering::Release);
        if pending {
            self.arm();
        }
    }

    /// Arms the sweep if it is not running.
    pub fn arm(&self) {
        if self.armed.load(Ordering::Acquire) || self.armed.swap(true, Ordering::AcqRel) {
            return;
        }
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(registry) = registry {
            // A registry that is gone leaves it armed; the next one attaches afresh.
            registry.do_send(SweepDue);
        }
    }

    /// After a sweep: whether to sweep again. With nothing `pending`, the sweep disarms,
    /// unless a call came meanwhile (`still_pending` is asked again after disarming, so
    /// that a call pushed in between is not left without a sweep).
    pub fn again(&self, pending: bool, still_pending: impl FnOnce() -> bool) -> bool {
        if pending {
            return true;
        }
        self.armed.store(false, Ordering::Release);
        still_pending() && !self.armed.swap(true, Ordering::AcqRel)
    }

    /// Whether a sweep is due.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }
}

/// How many capsule threads may linger at once, shared by every capsule's queue.
#[derive(Debug)]
pub struct LingerSlots {
    free: AtomicUsize,
}

impl LingerSlots {
    /// Room for `slots` lingering threads at once.
    pub fn new(slots: usize) -> Self {
        Self {
            free: AtomicUsize::new(slots),
        }
    }

    /// Takes a slot, if one is free; it is given back when the guard drops.
    fn take(&self) -> Option<SlotTaken<'_>> {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                free.checked_sub(1)
            })
            .ok()
            .map(|_| SlotTaken(self))
    }
}

impl Default for LingerSlots {
    /// One fewer than the machine's cores (none on a single core, where spinning would only
    /// keep the caller from running).
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::new(cores - 1)
    }
}

/// A lingering slot, taken until dropped.
struct SlotTaken<'a>(&'a LingerSlots);

impl Drop for SlotTaken<'_> {
    fn drop(&mut self) {
        self.0.free.fetch_add(1, Ordering::AcqRel);
    }
}

/// How long a capsule's thread watches its empty queue before it sleeps, at most; it does
/// so only while calls come at least this close together.
pub const LINGER: Duration = Duration::from_micros(50);

#[derive(Debug, Default)]
struct State {
    waiting: VecDeque<(Instant, Call)>,
    /// The call the capsule's thread is running: its ticket, when it was queued, and its
    /// answer (taken by the sweep if it runs past its deadline).
    running: Option<(u64, Instant, Answer)>,
    /// How much longer the running call's caller waits: the time the call paused for the
    /// user (see `pauses.rs`).
    held: Duration,
    /// Tickets handed out so far.
    tickets: u64,
    /// The capsule's thread was told of waiting calls, or is working: it is awake.
    nudged: bool,
    /// When the capsule's thread found the queue empty, if it still is.
    idle_since: Option<Instant>,
    /// The last call came within [`LINGER`] of the queue emptying: the thread lingers.
    close: bool,
}

impl State {
    fn pop(&mut self, count: &AtomicUsize) -> Option<(Instant, Call)> {
        let next = self.waiting.pop_front();
        count.store(self.waiting.len(), Ordering::Release);
        next
    }
}

impl CallQueue {
    /// The queue of the capsule whose threads `runner` reaches, whose calls have
    /// `deadline`, lingering within the budget `slots`, swept by `sweeper`.
    pub fn new(
        runner: RunnerSlot,
        deadline: Duration,
        slots: Arc<LingerSlots>,
        sweeper: Arc<Sweeper>,
    ) -> Self {
        Self {
            runner,
            deadline,
            patience: deadline + Duration::from_millis(250),
            state: Mutex::new(State::default()),
            waiting: AtomicUsize::new(0),
            slots,
            sweeper,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The manifest's call deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Queues `call`, tells the capsule's thread if it is not awake, and arms the deadline
    /// sweep.
    pub fn push(&self, call: Call) {
        let nudge = {
            let mut state = self.lock();
            let now = Instant::now();
            state.waiting.push_back((now, call));
            self.waiting.store(state.waiting.len(), Ordering::Release);
            let nudge = !std::mem::replace(&mut state.nudged, true);
            if nudge {
                state.close = state
                    .idle_since
                    .is_some_and(|idle| now.saturating_duration_since(idle) <= LINGER);
            }
            nudge
        };
        self.sweeper.arm();
        if nudge {
            // With no incarnation now, the call waits for the next one (which looks at the
            // queue as it starts), the supervisor's report of its end (which empties the
            // queue), or the sweep.
            if let Some(runner) = self.runner.get() {
                runner.nudge();
            }
        }
    }

    /// Wakes `runner` (a new incarnation's) if calls are waiting for it.
    pub(crate) fn resume(&self, runner: &Arc<Runner>) {
        let waiting = {
            let mut state = self.lock();
            state.nudged |= !state.waiting.is_empty();
            !state.waiting.is_empty()
        };
        if waiting {
            runner.nudge();
        }
    }

    /// The next call to run, with its ticket, or `None` when the queue is empty (then see
    /// [`linger`](Self::linger) and [`rest`](Self::rest)). Its answer is kept here until
    /// [`finish`](Self::finish).
    pub fn next(&self) -> Option<(u64, String, Vec<String>)> {
        let mut state = self.lock();
        let Some((queued, call)) = state.pop(&self.waiting) else {
            state.idle_since.get_or_insert_with(Instant::now);
            return None;
        };
        state.idle_since = None;
        let Call {
            command,
            args,
            answer,
        } = call;
        state.tickets += 1;
        let ticket = state.tickets;
        let late = state.running.replace((ticket, queued, answer));
        state.held = Duration::ZERO;
        drop(state);
        drop(late);
        Some((ticket, command, args))
    }

    /// With the queue empty: when calls have been coming close together and a lingering
    /// slot is free, watches it until [`LINGER`] after it emptied, and says whether a call
    /// came meanwhile.
    pub fn linger(&self) -> bool {
        let until = {
            let state = self.lock();
            match state.idle_since {
                Some(idle) if state.close => idle + LINGER,
                _ => return false,
            }
        };
        let Some(_slot) = self.slots.take() else {
            return false;
        };
        while Instant::now() < until {
            if self.waiting.load(Ordering::Acquire) > 0 {
                return true;
            }
            std::hint::spin_loop();
        }
        self.lock().close = false;
        false
    }

    /// Lets the capsule's thread sleep if the queue is still empty (the next call wakes
    /// it); `false` when a call came in the meantime.
    pub fn rest(&self) -> bool {
        let mut state = self.lock();
        if state.waiting.is_empty() {
            state.nudged = false;
            true
        } else {
            false
        }
    }

    /// The answer of the call of `ticket` that just ran, unless the sweep answered it
    /// already (or the queue was emptied since).
    pub fn finish(&self, ticket: u64) -> Option<Answer> {
        let mut state = self.lock();
        match state.running {
            Some((running, ..)) if running == ticket => {
                state.running.take().map(|(_, _, answer)| answer)
            }
            _ => None,
        }
    }

    /// The running call's caller waits `held` longer than the deadline's patience (the
    /// call paused that long for the user).
    pub fn hold_running(&self, held: Duration) {
        self.lock().held = held;
    }

    /// Answers `timeout` to every call past its caller's patience.
    pub fn sweep(&self, now: Instant) {
        let mut late = Vec::new();
        {
            let mut state = self.lock();
            let held = state.held;
            if state
                .running
                .as_ref()
                .is_some_and(|(_, queued, _)| now >= *queued + self.patience + held)
            {
                late.extend(state.running.take().map(|(_, _, answer)| answer));
            }
            while state
                .waiting
                .front()
                .is_some_and(|(queued, _)| now >= *queued + self.patience)
            {
                late.extend(state.pop(&self.waiting).map(|(_, call)| call.answer));
            }
        }
        for answer in late {
            answer.fail(CallFailure::Deadline(self.deadline));
        }
    }

    /// Empties the queue: its actor is gone. The calls are answered as never run.
    pub fn clear(&self) {
        let (waiting, running) = {
            let mut state = self.lock();
            state.nudged = false;
            self.waiting.store(0, Ordering::Release);
            (std::mem::take(&mut state.waiting), state.running.take())
        };
        drop(running);
        drop(waiting);
    }

    /// Calls waiting or running.
    pub fn len(&self) -> usize {
        let state = self.lock();
        state.waiting.len() + usize::from(state.running.is_some())
    }

    /// Whether no call is waiting or running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::outbox::testing::{Connection, field};

    fn code(frame: &rmpv::Value) -> &str {
        field(field(frame, "error"), "code").as_str().unwrap_or("")
    }

    fn queue() -> CallQueue {
        CallQueue::new(
            RunnerSlot::default(),
            Duration::from_millis(100),
            Arc::new(LingerSlots::new(1)),
            Arc::new(Sweeper::default()),
        )
    }

    fn call(conn: &Connection, id: u64, command: &str) -> Call {
        Call {
            command: command.into(),
            args: vec!["a".into()],
            answer: Answer::new(Arc::from("echo"), conn.take(id)),
        }
    }

    #[tokio::test]
    async fn the_sweep_runs_only_while_calls_wait() {
        let sweeper = Sweeper::default();
        assert!(!sweeper.is_armed());
        sweeper.arm();
        assert!(sweeper.is_armed());
        // Calls still waiting: it sweeps again.
        assert!(sweeper.again(true, || unreachable!()));
        assert!(sweeper.is_armed());
        // None: it stops, and the next call arms it again.
        assert!(!sweeper.again(false, || false));
        assert!(!sweeper.is_armed());
        sweeper.arm();
        assert!(sweeper.is_armed());
        // A call pushed while it stopped (it found the sweep still armed, so it sent no
        // word): the sweep goes on.
        assert!(sweeper.again(false, || true));
        assert!(sweeper.is_armed());
        // A queue's calls arm it.
        let q = queue();
        assert!(!q.sweeper.is_armed());
        let conn = Connection::new();
        q.push(call(&conn, 1, "one"));
        assert!(q.sweeper.is_armed());
    }

    #[tokio::test]
    async fn calls_run_in_order_and_answer_their_clients() {
        let mut conn = Connection::new();
        let q = queue();
        q.push(call(&conn, 1, "one"));
        q.push(call(&conn, 2, "two"));
        assert!(q.lock().nudged, "the first call tells the capsule's thread");
        let (ticket, command, args) = q.next().unwrap();
        assert_eq!(
            (command.as_str(), args.as_slice()),
            ("one", &["a".to_owned()][..])
        );
        q.finish(ticket)
            .unwrap()
            .send(&command, Ok(&[0xa3, b'o', b'u', b't'][..]));
        let frame = conn.next().await;
        assert_eq!(field(&frame, "id"), &rmpv::Value::from(1));
        let result = field(&frame, "result");
        assert_eq!(field(result, "capsule"), &rmpv::Value::from("echo"));
        assert_eq!(field(result, "command"), &rmpv::Value::from("one"));
        assert_eq!(field(result, "output"), &rmpv::Value::from("out"));
        let (ticket, command, _) = q.next().unwrap();
        assert!(q.finish(ticket - 1).is_none(), "another call's ticket");
        q.finish(ticket)
            .unwrap()
            .send(&command, Err(CallFailure::Guest("no".into())));
        assert_eq!(code(&conn.next().await), "capsule_error");
        assert!(q.next().is_none());
        assert!(q.lock().nudged, "the thread is awake until it rests");
        assert!(q.rest());
        assert!(
            !q.lock().nudged,
            "a resting thread waits for the next call's wake-up"
        );
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn the_sweep_answers_calls_past_their_deadline() {
        let mut conn = Connection::new();
        let q = queue();
        q.push(call(&conn, 1, "slow"));
        q.push(call(&conn, 2, "queued"));
        let (ticket, _running, _) = q.next().unwrap();
        q.sweep(Instant::now());
        assert_eq!(q.len(), 2, "nothing is late yet");
        q.sweep(Instant::now() + Duration::from_millis(400));
        for id in [1, 2] {
            let frame = conn.next().await;
            assert_eq!(field(&frame, "id"), &rmpv::Value::from(id));
            assert_eq!(code(&frame), "timeout");
        }
        assert!(
            q.finish(ticket).is_none(),
            "the late call was answered already"
        );
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn calls_of_an_incarnation_that_ended_are_answered_as_never_run() {
        let mut conn = Connection::new();
        let q = queue();
        q.push(call(&conn, 1, "running"));
        q.push(call(&conn, 2, "waiting"));
        let _ = q.next().unwrap();
        q.clear();
        for id in [1, 2] {
            let frame = conn.next().await;
            assert_eq!(field(&frame, "id"), &rmpv::Value::from(id));
            assert_eq!(code(&frame), "capsule_crashed");
        }
        assert!(
            !q.lock().nudged,
            "the next incarnation is told of the next call"
        );
        assert_eq!(conn.in_flight(), 0);
    }

    #[tokio::test]
    async fn the_thread_lingers_only_while_calls_come_close_together() {
        let mut conn = Connection::new();
        let q = queue();
        let run = |q: &CallQueue| {
            let (ticket, command, _) = q.next().expect("a call is waiting");
            q.finish(ticket).unwrap().send(&command, Ok(&[0xc0][..]));
        };

        // The first call ever: nothing tells how close the next one will be.
        q.push(call(&conn, 1, "first"));
        run(&q);
        assert!(q.next().is_none());
        assert!(!q.linger(), "no call came close to an emptying yet");
        assert!(q.rest());

        // A call right after the queue emptied: the thread lingers, and with nothing
        // coming, rests once `LINGER` is over and forgets the closeness.
        q.push(call(&conn, 2, "close"));
        assert!(q.lock().close);
        run(&q);
        assert!(q.next().is_none());
        assert!(!q.linger());
        assert!(!q.lock().close);
        assert!(q.rest());

        // A call long after the queue emptied: no lingering.
        q.lock().idle_since = Instant::now().checked_sub(10 * LINGER);
        q.push(call(&conn, 3, "far"));
        assert!(!q.lock().close);
        run(&q);
        assert!(q.next().is_none());
        assert!(!q.linger());
        assert!(q.rest());

        // While lingering, a call that comes is seen (and needs no message).
        q.lock().idle_since = Some(Instant::now());
        q.push(call(&conn, 4, "close again"));
        assert!(q.lock().close);
        run(&q);
        assert!(q.next().is_none());
        q.push(call(&conn, 5, "while lingering"));
        assert!(q.lock().nudged, "the thread is awake: no wake-up");
        assert!(q.linger());
        run(&q);
        assert!(q.next().is_none());

        // With the daemon's lingering slots all taken, the thread rests instead.
        q.push(call(&conn, 6, "close, no slot"));
        run(&q);
        assert!(q.next().is_none());
        assert!(q.lock().close);
        let taken = q.slots.take().unwrap();
        q.push(call(&conn, 7, "unseen while resting"));
        assert!(!q.linger(), "no slot is free");
        drop(taken);
        run(&q);
        assert!(q.next().is_none());

        // A call between finding the queue empty and resting keeps the thread awake.
        q.push(call(&conn, 8, "just in time"));
        assert!(!q.rest());
        run(&q);
        for id in 1..=8 {
            assert_eq!(field(&conn.next().await, "id"), &rmpv::Value::from(id));
        }
        assert!(q.is_empty());
    }
}
