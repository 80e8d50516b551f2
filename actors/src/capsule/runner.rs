//! The thread that runs one incarnation of a capsule's guest, started on demand and retired
//! when idle, so that an idle capsule costs neither a thread nor an instance.
//!
//! A [`Runner`] belongs to one incarnation of the capsule's actor. It holds the compiled
//! module (wasmer's `Module` and `Engine` are `Send` and `Sync`) and what the guest is to do:
//! the command calls waiting in the capsule's [`CallQueue`] (it is [nudged](Runner::nudge)
//! when they come) and the [`Job`]s its actor hands it (events, interception, a hang). The
//! first of them starts a thread, which instantiates the module (a wasmer `Store` is not
//! `Send`: the instance lives and dies on that thread) and works until nothing is left. It
//! then waits the linger (`--capsule-linger`, [`CAPSULE_LINGER`](crate::runtime::CAPSULE_LINGER)
//! by default) for more, and retires, dropping the instance with it: the next call starts a
//! thread and a fresh instance, as after a restart. So the guest's memory
//! lasts while calls come less than the linger apart; what a capsule must keep longer
//! goes in its key-value namespace.
//!
//! Each capsule has its own thread while it works, so a capsule stuck in a long call never
//! delays another's. A failed call (a trap, fuel, a deadline, garbage) closes the runner:
//! its instance cannot be trusted, the thread drops it and ends, and the actor is told why
//! ([`Runner::new`]'s channel) so that it stops and its supervisor starts a new incarnation;
//! the thread then keeps a crash bundle of it (see `crashes.rs`), off the restart's path.
//! When the actor ends for any other reason it [closes](Runner::close) the runner; a call
//! running then finishes, and its answer goes out only if its queue still holds it (see
//! the tickets of `queue.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

use super::crashes::Crashed;
use super::host::Host;
use super::messages::CallFailure;
use super::queue::CallQueue;
use super::sandbox::{CallError, Compiled, Entry, Sandbox};
use crate::bus::intercept::Verdict;
use crate::protocol::{CrashKind, RawValue, raw};
use crate::rate::RateBudget;

/// Calls run per turn before the thread lets the actor's jobs in.
const CALLS_PER_TURN: usize = 64;

/// Bytes of input buffer kept between calls.
const INPUT_KEPT: usize = 64 * 1024;

/// What a capsule's actor hands its thread, done in order.
#[derive(Debug)]
pub enum Job {
    /// A bus event for `astrid_event`; `done` is answered (or dropped) once it ran.
    Event {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: RawValue,
        /// Told when the event has been handled.
        done: oneshot::Sender<()>,
    },
    /// An event for `astrid_intercept`; the verdict goes to `reply`.
    Intercept {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: RawValue,
        /// Where the verdict goes.
        reply: oneshot::Sender<Result<Verdict, CallFailure>>,
    },
    /// The guest takes no call for this long (the `hang` fault).
    Hang(Duration),
}

/// The runner of a capsule's current incarnation, swapped on every restart; the capsule's
/// queue wakes it through this.
#[derive(Debug, Clone, Default)]
pub struct RunnerSlot(Arc<RwLock<Option<Arc<Runner>>>>);

impl RunnerSlot {
    /// The current runner, if an incarnation has started.
    pub fn get(&self) -> Option<Arc<Runner>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, runner: Arc<Runner>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(runner);
    }
}

/// One incarnation's guest, run on a thread of its own while there is work.
#[derive(Debug)]
pub struct Runner {
    compiled: Compiled,
    host: Host,
    /// The capsule's calls (not owned: the queue owns the slot that holds the runner).
    queue: Weak<CallQueue>,
    linger: Duration,
    state: Mutex<State>,
    /// Where a failure goes (taken by the first).
    crashed: Mutex<Option<oneshot::Sender<String>>>,
    /// Events too large for the capsule's memory are skipped; this budget bounds the log
    /// lines saying so.
    skipped: Mutex<RateBudget>,
}

#[derive(Debug, Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Calls wait in the queue.
    work: bool,
    /// The thread, while there is one.
    thread: Option<Thread>,
    /// Threads started so far.
    started: u64,
    /// No more work is taken: the incarnation is over.
    closed: bool,
}

impl Runner {
    /// The runner of `compiled`, whose imports `host` serves and whose calls wait in
    /// `queue`; a failure is sent, with its reason, on `crashed`. Its thread retires after
    /// `linger` without work.
    pub fn new(
        compiled: Compiled,
        host: Host,
        queue: &Arc<CallQueue>,
        linger: Duration,
        crashed: oneshot::Sender<String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            compiled,
            host,
            queue: Arc::downgrade(queue),
            linger,
            state: Mutex::default(),
            crashed: Mutex::new(Some(crashed)),
            skipped: Mutex::new(RateBudget::new(1, 1, Instant::now())),
        })
    }

    /// The imports of the capsule it runs.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The module it runs.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls wait in the queue: wakes the thread, or starts one.
    pub fn nudge(self: &Arc<Self>) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.work = true;
        self.wake(&mut state);
    }

    /// Hands `job` to the thread (started if need be). A closed runner drops it, which
    /// answers its sender as if the capsule had crashed.
    pub fn push(self: &Arc<Self>, job: Job) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.jobs.push_back(job);
        self.wake(&mut state);
    }

    /// Ends the incarnation: nothing more runs; a running call finishes, and the thread
    /// then drops the instance and ends.
    pub fn close(&self) {
        let jobs = {
            let mut state = self.lock();
            state.closed = true;
            if let Some(thread) = &state.thread {
                thread.unpark();
            }
            std::mem::take(&mut state.jobs)
        };
        // Their senders see the capsule as crashed.
        drop(jobs);
    }

    /// Whether a thread is running (or lingering) now.
    pub fn has_thread(&self) -> bool {
        self.lock().thread.is_some()
    }

    /// Threads this runner has started so far.
    pub fn threads_started(&self) -> u64 {
        self.lock().started
    }

    fn wake(self: &Arc<Self>, state: &mut State) {
        if let Some(thread) = &state.thread {
            thread.unpark();
            return;
        }
        let runner = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("capsule:{}", self.host.capsule()))
            .spawn(move || runner.run());
        match spawned {
            Ok(handle) => {
                state.thread = Some(handle.thread().clone());
                state.started += 1;
            }
            Err(e) => {
                // Out of threads: the work waits for the sweep, and the capsule restarts.
                tracing::error!(capsule = %self.host.capsule(), "cannot start a thread: {e}");
                state.closed = true;
                state.jobs.clear();
                self.crash(format!("cannot start a thread: {e}"));
            }
        }
    }

    /// The next thing to do, or `None` when the thread is to end (closed, or idle for
    /// the whole linger); waits in between.
    fn next(&self) -> Option<Turn> {
        let mut state = self.lock();
        let mut idle_since: Option<Instant> = None;
        loop {
            if state.closed {
                state.thread = None;
                return None;
            }
            if let Some(job) = state.jobs.pop_front() {
                return Some(Turn::Job(job));
            }
            if std::mem::take(&mut state.work) {
                return Some(Turn::Calls);
            }
            let now = Instant::now();
            let until = *idle_since.get_or_insert(now) + self.linger;
            if now >= until {
                state.thread = None;
                return None;
            }
            drop(state);
            std::thread::park_timeout(until - now);
            state = self.lock();
        }
    }

    /// The thread's life.
    fn run(self: Arc<Self>) {
        let mut guest = Guest {
            runner: &self,
            sandbox: None,
            input: Vec::new(),
        };
        // The instance goes with the thread (see `Runner::next`).
        let _gone = MemoryGone(self.host.metrics());
        while let Some(job) = self.next() {
            let crashed = match job {
                Turn::Calls => guest.calls(),
                Turn::Job(job) => guest.job(job),
            };
            if let Err(reason) = crashed {
                // Its memory cannot be trusted: dropped, and the actor is told; then the
                // crash is kept, off the restart's path.
                let crashed = guest.crashed(reason.clone());
                self.close();
                self.crash(reason);
                if let Some(sink) = self.host.crash_sink() {
                    sink.keep(self.host.capsule(), self.compiled.crash_limits(), crashed);
                }
            }
        }
    }

    fn crash(&self, reason: String) {
        let tell = self
            .crashed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tell) = tell {
            let _ = tell.send(reason);
        }
    }
}

/// Reports the instance's memory gone when the thread ends, however it ends.
struct MemoryGone<'a>(&'a crate::metrics::CapsuleMetrics);

impl Drop for MemoryGone<'_> {
    fn drop(&mut self) {
        self.0.set_memory(0);
    }
}

/// What the thread takes next.
enum Turn {
    /// Run the calls waiting in the queue.
    Calls,
    /// A job from the actor.
    Job(Job),
}

/// `astrid_command`'s input.
#[derive(Serialize)]
struct CommandInput<'a> {
    command: &'a str,
    args: &'a [String],
}

/// `astrid_intercept`'s reply. Its payload is written back into MessagePack as serde reads
/// it (see [`RawValue`]), never into a tree.
#[derive(serde::Deserialize)]
struct InterceptReply {
    action: String,
    #[serde(default)]
    payload: Option<RawValue>,
    #[serde(default)]
    reason: Option<String>,
}

/// The guest as one thread holds it: the instance, made at its first call.
struct Guest<'a> {
    runner: &'a Runner,
    sandbox: Option<Sandbox>,
    /// The last command's input, kept for its buffer.
    input: Vec<u8>,
}

/// A failure that ends the incarnation, with its reason.
type Crash = String;

impl Guest<'_> {
    fn name(&self) -> &str {
        self.runner.host.capsule()
    }

    /// What a crash bundle keeps of the incarnation that just failed for `reason`; the
    /// instance is dropped.
    fn crashed(&mut self, reason: String) -> Crashed {
        self.runner.host.metrics().set_memory(0);
        match self.sandbox.take() {
            Some(mut sandbox) => {
                let (calls, calls_dropped) = sandbox.take_calls();
                Crashed {
                    kind: None,
                    message: reason,
                    backtrace: sandbox.backtrace().to_vec(),
                    calls,
                    calls_dropped,
                }
            }
            None => Crashed {
                kind: Some(CrashKind::Start),
                message: reason,
                ..Crashed::default()
            },
        }
    }

    /// Runs a job from the actor.
    fn job(&mut self, job: Job) -> Result<(), Crash> {
        match job {
            Job::Event {
                topic,
                payload,
                done,
            } => {
                let outcome = self.deliver(&topic, &payload);
                drop(done);
                outcome
            }
            Job::Intercept {
                topic,
                payload,
                reply,
            } => {
                let (verdict, crash) = self.intercept(&topic, &payload);
                let _ = reply.send(verdict);
                crash.map_or(Ok(()), Err)
            }
            Job::Hang(how_long) => {
                let until = Instant::now() + how_long;
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    if self.runner.lock().closed {
                        break;
                    }
                    std::thread::park_timeout(left);
                }
                Ok(())
            }
        }
    }

    /// Runs the calls waiting in the queue, answering each straight into its caller's
    /// connection, until it is empty (then lingering by it while calls come close together)
    /// or for [`CALLS_PER_TURN`] calls (then the actor's jobs get a turn).
    fn calls(&mut self) -> Result<(), Crash> {
        let Some(queue) = self.runner.queue.upgrade() else {
            // The capsule was unloaded.
            return Ok(());
        };
        // A call that pauses for the user holds its caller as long (see `pauses.rs`).
        let held = Arc::downgrade(&queue);
        self.runner
            .host
            .pauses()
            .set_hold(Some(Box::new(move |extra| {
                if let Some(queue) = held.upgrade() {
                    queue.hold_running(extra);
                }
            })));
        let outcome = self.run_calls(&queue);
        self.runner.host.pauses().set_hold(None);
        outcome
    }

    /// [`Self::calls`]' loop.
    fn run_calls(&mut self, queue: &Arc<CallQueue>) -> Result<(), Crash> {
        let mut ran = 0;
        loop {
            if self.runner.lock().closed {
                return Ok(());
            }
            if ran == CALLS_PER_TURN {
                // More may be waiting: after the actor's jobs.
                self.runner.lock().work = true;
                return Ok(());
            }
            let Some((ticket, command, args)) = queue.next() else {
                if queue.linger() || !queue.rest() {
                    continue;
                }
                return Ok(());
            };
            ran += 1;
            let (outcome, crash) = self.invoke(&command, &args);
            if let Some(answer) = queue.finish(ticket) {
                match outcome {
                    Ok(output) => answer.send(&command, Ok(&output)),
                    Err(failure) => answer.send(&command, Err(failure)),
                }
            }
            if let Some(reason) = crash {
                return Err(reason);
            }
        }
    }

    /// The instance, made now if there is none.
    fn sandbox(&mut self) -> Result<&mut Sandbox, CallFailure> {
        if self.sandbox.is_none() {
            let made = Sandbox::new(&self.runner.compiled, self.runner.host.clone());
            match made {
                Ok(sandbox) => self.sandbox = Some(sandbox),
                Err(e) => {
                    tracing::error!(capsule = %self.name(), "cannot start: {e}");
                    return Err(CallFailure::Crashed(e.to_string()));
                }
            }
        }
        self.sandbox
            .as_mut()
            .ok_or_else(|| CallFailure::Crashed("no instance".into()))
    }

    /// Calls the guest; a failure that ends the incarnation comes with its reason.
    fn call(
        &mut self,
        entry: Entry,
        input: &[u8],
    ) -> (Result<Vec<u8>, CallFailure>, Option<Crash>) {
        let ceiling = self.runner.compiled.memory_ceiling();
        if input.len() > ceiling {
            let failure = CallFailure::TooLarge {
                len: input.len(),
                ceiling,
            };
            return (Err(failure), None);
        }
        if let Some(wait) = self.runner.host.faults().delay() {
            // The `delay` fault: the call starts late; one held past the call's deadline
            // fails as a slow call does, without running.
            let timeout = self.runner.compiled.call_timeout();
            std::thread::sleep(wait.min(timeout));
            if wait >= timeout {
                return (Err(CallFailure::Deadline(timeout)), None);
            }
        }
        let runner = self.runner;
        let metrics = runner.host.metrics();
        let sandbox = match self.sandbox() {
            Ok(sandbox) => sandbox,
            Err(failure) => {
                metrics.failed(CrashKind::Start);
                let reason = failure.to_string();
                return (Err(failure), Some(reason));
            }
        };
        let started = Instant::now();
        let outcome = sandbox.call(entry, input);
        metrics.call(entry as usize, started.elapsed(), sandbox.fuel_used());
        metrics.set_memory(sandbox.memory_bytes());
        if let Some(kind) = outcome.as_ref().err().and_then(CallError::kind) {
            metrics.failed(kind);
        }
        match outcome {
            Ok(reply) => (Ok(reply), None),
            Err(CallError::Unconfigured(message)) => {
                // Not the guest's bug: the call fails with the message, and the instance,
                // interrupted inside a host import, is replaced at the next call.
                self.sandbox = None;
                (Err(CallFailure::Guest(message)), None)
            }
            Err(error) => {
                tracing::warn!(capsule = %self.name(), %error, "call failed; restarting the capsule");
                let reason = error.to_string();
                let failure = match error {
                    CallError::Deadline(after) => CallFailure::Deadline(after),
                    other => CallFailure::Crashed(other.to_string()),
                };
                (Err(failure), Some(reason))
            }
        }
    }

    /// Runs one command; its output is the guest's reply, one MessagePack value.
    fn invoke(
        &mut self,
        command: &str,
        args: &[String],
    ) -> (Result<Vec<u8>, CallFailure>, Option<Crash>) {
        self.input.clear();
        if let Err(e) =
            rmp_serde::encode::write_named(&mut self.input, &CommandInput { command, args })
        {
            let failure = CallFailure::Crashed(format!("cannot encode the input: {e}"));
            return (Err(failure), None);
        }
        let input = std::mem::take(&mut self.input);
        let (reply, crash) = self.call(Entry::Command, &input);
        self.input = input;
        let mut reply = match reply {
            Ok(reply) => reply,
            Err(failure) => return (Err(failure), crash),
        };
        match raw::value_len(&reply) {
            Ok(len) => reply.truncate(len),
            Err(e) => {
                // A reply that is not MessagePack is garbage, as a bad range is.
                self.runner.host.metrics().failed(CrashKind::Garbage);
                let reason = garbage_command(&e);
                return (Err(CallFailure::Crashed(reason.clone())), Some(reason));
            }
        }
        match raw::error_message(&reply) {
            Some(message) => (Err(CallFailure::Guest(message)), None),
            None => (Ok(reply), None),
        }
    }

    /// Hands an event to `astrid_event`, if the guest has one.
    fn deliver(&mut self, topic: &str, payload: &RawValue) -> Result<(), Crash> {
        if !self.runner.compiled.has(Entry::Event) {
            return Ok(());
        }
        let (outcome, crash) = self.call_with_event(Entry::Event, topic, payload);
        if let Err(error @ CallFailure::TooLarge { .. }) = outcome {
            // Skipped, not a crash: whoever publishes cannot spend the capsule's budget.
            let mut skipped = self
                .runner
                .skipped
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if skipped.admit(Instant::now()) {
                let also = skipped.take_dropped();
                tracing::warn!(capsule = %self.name(), %topic, skipped_before = also, "event skipped: {error}");
            }
        }
        crash.map_or(Ok(()), Err)
    }

    /// Calls `entry` with `{topic, payload}`, written around the payload's bytes into the
    /// input buffer.
    fn call_with_event(
        &mut self,
        entry: Entry,
        topic: &str,
        payload: &RawValue,
    ) -> (Result<Vec<u8>, CallFailure>, Option<Crash>) {
        let mut input = std::mem::take(&mut self.input);
        input.clear();
        raw::write_event_input(&mut input, topic, payload);
        let reply = self.call(entry, &input);
        // A payload may be large: its copy is not kept for the next call.
        input.clear();
        input.shrink_to(INPUT_KEPT);
        self.input = input;
        reply
    }

    /// Asks `astrid_intercept` about an event.
    fn intercept(
        &mut self,
        topic: &str,
        payload: &RawValue,
    ) -> (Result<Verdict, CallFailure>, Option<Crash>) {
        let reply = match self.call_with_event(Entry::Intercept, topic, payload) {
            // An interceptor that cannot see an event cannot let it pass.
            (Err(error @ CallFailure::TooLarge { .. }), _) => {
                let verdict = Verdict::Deny(format!("not checked by `{}`: {error}", self.name()));
                return (Ok(verdict), None);
            }
            (Err(failure), crash) => return (Err(failure), crash),
            (Ok(reply), _) => reply,
        };
        if let Some(verdict) = verdict(&reply) {
            (Ok(verdict), None)
        } else {
            self.runner.host.metrics().failed(CrashKind::Garbage);
            (
                Err(CallFailure::Crashed(GARBAGE_VERDICT.into())),
                Some(GARBAGE_VERDICT.into()),
            )
        }
    }
}

/// Why an interceptor's reply that is not a verdict ends the incarnation.
const GARBAGE_VERDICT: &str = "the capsule returned garbage: not an interceptor reply";

/// Why a command's reply that is not MessagePack ends the incarnation.
fn garbage_command(e: &impl std::fmt::Display) -> String {
    format!("the capsule returned garbage: {e}")
}

/// The verdict of an interceptor's reply, if it is one. Its payload goes on to every
/// subscriber: held to the depth of command output.
fn verdict(reply: &[u8]) -> Option<Verdict> {
    raw::value_len(reply)
        .ok()
        .and_then(|_| rmp_serde::from_slice::<InterceptReply>(reply).ok())
        .and_then(|r| match r.action.as_str() {
            "continue" => Some(Verdict::Continue(r.payload)),
            "finish" => Some(Verdict::Finish(r.payload)),
            "deny" => Some(Verdict::Deny(r.reason.unwrap_or_default())),
            _ => None,
        })
}

/// Why a reply the guest gave `entry` ends the incarnation, if it does: the checks the
/// runner makes of a reply the sandbox accepted (a replay makes them too).
pub(crate) fn garbage(entry: Entry, reply: &[u8]) -> Option<String> {
    match entry {
        Entry::Command => raw::value_len(reply).err().map(|e| garbage_command(&e)),
        Entry::Intercept => verdict(reply).is_none().then(|| GARBAGE_VERDICT.to_owned()),
        Entry::Event => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capsule::Limits;
    use crate::capsule::queue::{LingerSlots, Sweeper};
    use crate::capsule::sandbox::compile;

    /// A guest whose interceptor always answers `{"action": "continue"}`.
    const CONTINUE: &str = r#"(module
        (memory (export "memory") 1)
        (data (i32.const 16) "\81\a6action\a8continue")
        (func (export "astrid_alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "astrid_command") (param i32 i32) (result i64) (i64.const 0))
        (func (export "astrid_intercept") (param i32 i32) (result i64)
            (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 17))))"#;

    fn ask(runner: &Arc<Runner>) -> Option<Result<Verdict, CallFailure>> {
        let (reply, verdict) = oneshot::channel();
        runner.push(Job::Intercept {
            topic: "a.b".into(),
            payload: RawValue::from_slice(b"\xc0").unwrap(),
            reply,
        });
        verdict.blocking_recv().ok()
    }

    fn wait_retired(runner: &Runner) {
        let end = Instant::now() + Duration::from_secs(10);
        while runner.has_thread() {
            assert!(Instant::now() < end, "the thread never retired");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_thread_starts_on_demand_and_retires_with_its_instance_when_idle() {
        let compiled = compile(CONTINUE.as_bytes(), Limits::default()).unwrap();
        let queue = Arc::new(CallQueue::new(
            RunnerSlot::default(),
            Duration::from_secs(1),
            Arc::new(LingerSlots::new(0)),
            Arc::new(Sweeper::default()),
        ));
        let (crashed, mut crash) = oneshot::channel();
        let linger = Duration::from_millis(30);
        let runner = Runner::new(compiled, Host::detached("t"), &queue, linger, crashed);
        assert!(!runner.has_thread(), "no thread until there is work");
        assert_eq!(runner.threads_started(), 0);

        assert!(matches!(ask(&runner), Some(Ok(Verdict::Continue(None)))));
        assert_eq!(runner.threads_started(), 1);
        // Work that comes within the linger finds the same thread.
        assert!(matches!(ask(&runner), Some(Ok(Verdict::Continue(None)))));
        assert_eq!(runner.threads_started(), 1);
        wait_retired(&runner);
        // The next job starts another.
        assert!(matches!(ask(&runner), Some(Ok(Verdict::Continue(None)))));
        assert_eq!(runner.threads_started(), 2);
        assert!(crash.try_recv().is_err(), "nothing failed");

        // A closed runner takes nothing more: its jobs' senders see it gone.
        runner.close();
        wait_retired(&runner);
        assert!(ask(&runner).is_none());
        assert_eq!(runner.threads_started(), 2);
    }

    #[test]
    fn a_failed_call_ends_the_incarnation_and_says_why() {
        // No `astrid_event`/`astrid_intercept` export: interception traps.
        let echo = r#"(module (memory (export "memory") 1)
            (func (export "astrid_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "astrid_command") (param i32 i32) (result i64) (i64.const 0)))"#;
        let compiled = compile(echo.as_bytes(), Limits::default()).unwrap();
        let queue = Arc::new(CallQueue::new(
            RunnerSlot::default(),
            Duration::from_secs(1),
            Arc::new(LingerSlots::new(0)),
            Arc::new(Sweeper::default()),
        ));
        let (crashed, crash) = oneshot::channel();
        let runner = Runner::new(
            compiled,
            Host::detached("t"),
            &queue,
            crate::runtime::CAPSULE_LINGER,
            crashed,
        );
        let failure = ask(&runner).unwrap().unwrap_err();
        assert!(
            failure.to_string().contains("astrid_intercept"),
            "{failure}"
        );
        let reason = crash.blocking_recv().unwrap();
        assert!(reason.contains("astrid_intercept"), "{reason}");
        // Its thread ended at once, without lingering.
        wait_retired(&runner);
        assert!(ask(&runner).is_none());
    }
}
