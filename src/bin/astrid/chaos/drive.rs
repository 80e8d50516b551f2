//! The run itself: one task per workload client (a connection each, one request in flight,
//! paced at the entry's rate), one task injecting the schedule's faults, and a progress line
//! on stderr every second. What happened is returned as plain records for the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use astrid::client::{Client, ClientError};
use astrid::paths::SessionFiles;
use astrid::protocol::{ErrorCode, FaultInjected, Request, to_payload};
use astrid_actors::capsule::NEVER_RAN;
use serde::de::IgnoredAny;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::plan::{Action, End, MAX_REQUESTS, Plan, Rule, Workload};
use super::schedule::Planned;
use super::template::Values;

/// Name the runner's connections give in their handshake.
pub(crate) const CLIENT_NAME: &str = "astrid-chaos";
/// Pause between attempts to reconnect a client whose connection closed.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A result.
    Ok,
    /// An error reply; `crashed` when it says the request itself crashed its capsule
    /// (`capsule_crashed` with the guest's reason, not the "stopped before answering" of a
    /// request caught in someone else's crash).
    Error { code: &'static str, crashed: bool },
    /// No reply within the deadline.
    Unanswered,
    /// The connection closed (or failed) before the reply.
    Disconnected,
}

/// One request of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    /// Index of its workload entry.
    pub(crate) entry: usize,
    /// Its client within the entry.
    pub(crate) client: u32,
    /// Its number within the entry (`{n}`).
    pub(crate) n: u64,
    /// When it was sent, after the start.
    pub(crate) sent: Duration,
    /// How long until its reply (or until it was given up).
    pub(crate) took: Duration,
    /// How it ended.
    pub(crate) outcome: Outcome,
}

impl Record {
    /// When it ended, after the start.
    pub(crate) fn done(&self) -> Duration {
        self.sent + self.took
    }
}

/// How one planned fault went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Injected {
    /// The daemon applied it.
    Yes,
    /// The daemon refused it (e.g. `not_running`: the target was restarting).
    Refused { code: &'static str, message: String },
    /// No answer within the deadline, or the connection closed.
    Unanswered,
}

/// One planned fault, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Injection {
    /// The schedule's entry.
    pub(crate) planned: Planned,
    /// When it was sent, after the start.
    pub(crate) sent: Duration,
    /// When it was acknowledged (or given up), after the start.
    pub(crate) at: Duration,
    /// What the daemon said.
    pub(crate) outcome: Injected,
}

/// What the run produced.
#[derive(Debug, Default)]
pub(crate) struct Run {
    pub(crate) records: Vec<Record>,
    pub(crate) injections: Vec<Injection>,
    /// How long the workload ran.
    pub(crate) elapsed: Duration,
    /// Whether a run bounded by `duration` stopped early at [`MAX_REQUESTS`].
    pub(crate) capped: bool,
    /// Set when the daemon refused fault injection (the run stopped at once).
    pub(crate) disabled: Option<String>,
}

/// Counters the progress line shows.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    unanswered: AtomicU64,
    injected: AtomicU64,
    refused: AtomicU64,
}

/// What every task of the run shares.
struct Shared {
    files: SessionFiles,
    start: Instant,
    deadline: Duration,
    stop: CancellationToken,
    /// Requests still allowed.
    tickets: AtomicU64,
    /// The next `{n}` of each entry.
    numbers: Vec<AtomicU64>,
    counters: Counters,
    disabled: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn take_ticket(&self) -> bool {
        self.tickets
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1))
            .is_ok()
    }

    /// A connection, retried until it succeeds or the run stops.
    async fn connect(&self) -> Option<Client> {
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            if let Ok(Ok(mut client)) =
                tokio::time::timeout(self.deadline, Client::connect(&self.files, CLIENT_NAME)).await
            {
                client.set_call_timeout(Some(self.deadline));
                return Some(client);
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(RECONNECT_PAUSE) => {}
            }
        }
    }
}

/// The request for number `n` of `action`'s client `client`.
pub(crate) fn request(action: &Action, values: Values) -> Request {
    match action {
        Action::Command { name, args } => Request::InvokeCommand {
            name: name.clone(),
            args: args.iter().map(|a| a.render(values)).collect(),
        },
        Action::Ping => Request::Ping,
        Action::KvPut { key, value } => Request::KvPut {
            key: key.render(values),
            value: value.render(values).into_bytes(),
        },
        Action::KvGet { key } => Request::KvGet {
            key: key.render(values),
        },
        Action::Publish { topic, payload } => Request::Publish {
            topic: topic.render(values),
            payload: to_payload(&payload.render(values))
                .unwrap_or_else(|_| astrid::protocol::RawValue::nil()),
        },
    }
}

/// How a call ended, and whether the connection must be made again.
fn outcome(result: Result<IgnoredAny, ClientError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(ClientError::Remote(body)) => Outcome::Error {
            code: body.code.as_str(),
            crashed: body.code == ErrorCode::CapsuleCrashed && !body.message.contains(NEVER_RAN),
        },
        Err(ClientError::Timeout { .. }) => Outcome::Unanswered,
        Err(ClientError::Decode(_) | ClientError::Encode(_)) => Outcome::Error {
            code: "bad_reply",
            crashed: false,
        },
        Err(_) => Outcome::Disconnected,
    }
}

async fn client_loop(
    shared: Arc<Shared>,
    entry: usize,
    work: Workload,
    client: u32,
) -> Vec<Record> {
    let mut records = Vec::new();
    let period = Duration::from_secs_f64(1.0 / work.rate);
    // Clients of an entry are spread over one period, not all sent at once.
    let offset = period.mul_f64(f64::from(client) / f64::from(work.clients));
    let mut pace = tokio::time::interval_at(shared.start + offset, period);
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let Some(mut conn) = shared.connect().await else {
        return records;
    };
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => break,
            _ = pace.tick() => {}
        }
        if shared.stop.is_cancelled() || !shared.take_ticket() {
            break;
        }
        let n = shared.numbers[entry].fetch_add(1, Ordering::Relaxed) + 1;
        let values = Values {
            n,
            client,
            ..Values::default()
        };
        let req = request(&work.action, values);
        let sent = shared.start.elapsed();
        shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        let result = conn.call::<IgnoredAny>(req).await;
        let took = shared.start.elapsed().saturating_sub(sent);
        let outcome = outcome(result);
        let counter = match outcome {
            Outcome::Ok => &shared.counters.ok,
            Outcome::Error { .. } => &shared.counters.errors,
            Outcome::Unanswered | Outcome::Disconnected => &shared.counters.unanswered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        records.push(Record {
            entry,
            client,
            n,
            sent,
            took,
            outcome,
        });
        if outcome == Outcome::Disconnected {
            match shared.connect().await {
                Some(c) => conn = c,
                None => break,
            }
        }
    }
    records
}

async fn injector(shared: Arc<Shared>, schedule: Vec<Planned>, rules: Vec<Rule>) -> Vec<Injection> {
    let mut done = Vec::new();
    let Some(mut conn) = shared.connect().await else {
        return done;
    };
    for planned in schedule {
        tokio::select! {
            () = shared.stop.cancelled() => break,
            () = tokio::time::sleep_until(shared.start + planned.at) => {}
        }
        let Rule { target, fault, .. } = rules[planned.rule].clone();
        let sent = shared.start.elapsed();
        let result = conn
            .call::<FaultInjected>(Request::InjectFault { target, fault })
            .await;
        let at = shared.start.elapsed();
        let outcome = match result {
            Ok(_) => {
                shared.counters.injected.fetch_add(1, Ordering::Relaxed);
                Injected::Yes
            }
            Err(ClientError::Remote(body)) => {
                if body.code == ErrorCode::FaultInjectionDisabled {
                    *shared
                        .disabled
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(body.message);
                    shared.stop.cancel();
                    break;
                }
                shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                Injected::Refused {
                    code: body.code.as_str(),
                    message: body.message,
                }
            }
            Err(e) => {
                if !matches!(e, ClientError::Timeout { .. }) {
                    match shared.connect().await {
                        Some(c) => conn = c,
                        None => break,
                    }
                }
                Injected::Unanswered
            }
        };
        done.push(Injection {
            planned,
            sent,
            at,
            outcome,
        });
    }
    done
}

async fn progress(shared: Arc<Shared>, end: End) {
    let mut every = tokio::time::interval_at(
        shared.start + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let c = &shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let of = match end {
            End::After(d) => format!(
                "{:.0}s/{}",
                shared.start.elapsed().as_secs_f64(),
                humantime::format_duration(d)
            ),
            End::Requests(n) => format!(
                "{:.0}s, {}/{n} requests",
                shared.start.elapsed().as_secs_f64(),
                load(&c.sent)
            ),
        };
        eprintln!(
            "chaos: {of}: {} sent, {} ok, {} errors, {} unanswered; faults {} injected, {} refused",
            load(&c.sent),
            load(&c.ok),
            load(&c.errors),
            load(&c.unanswered),
            load(&c.injected),
            load(&c.refused),
        );
    }
}

/// Runs `plan`'s workload and `schedule` against the daemon of `files`; progress on stderr
/// unless `quiet`.
pub(crate) async fn drive(
    files: &SessionFiles,
    plan: &Plan,
    schedule: &[Planned],
    quiet: bool,
) -> Run {
    let tickets = match plan.end {
        End::After(_) => MAX_REQUESTS,
        End::Requests(n) => n,
    };
    let shared = Arc::new(Shared {
        files: files.clone(),
        start: Instant::now(),
        deadline: plan.deadline,
        stop: CancellationToken::new(),
        tickets: AtomicU64::new(tickets),
        numbers: plan.workload.iter().map(|_| AtomicU64::new(0)).collect(),
        counters: Counters::default(),
        disabled: std::sync::Mutex::new(None),
    });
    let mut clients = Vec::new();
    for (entry, work) in plan.workload.iter().enumerate() {
        for client in 0..work.clients {
            clients.push(tokio::spawn(client_loop(
                Arc::clone(&shared),
                entry,
                work.clone(),
                client,
            )));
        }
    }
    let injector = tokio::spawn(injector(
        Arc::clone(&shared),
        schedule.to_vec(),
        plan.rules.clone(),
    ));
    let progress = (!quiet).then(|| tokio::spawn(progress(Arc::clone(&shared), plan.end)));
    // The end of a run bounded by `duration`; for one bounded by `requests`, the longest a
    // run may last (its clients stop earlier, once the requests are sent).
    let stop = shared.stop.clone();
    let (start, horizon) = (shared.start, plan.end.horizon());
    let timer = tokio::spawn(async move {
        tokio::time::sleep_until(start + horizon).await;
        stop.cancel();
    });
    let mut run = Run::default();
    for client in clients {
        if let Ok(records) = client.await {
            run.records.extend(records);
        }
    }
    run.elapsed = shared.start.elapsed();
    shared.stop.cancel();
    timer.abort();
    run.injections = injector.await.unwrap_or_default();
    if let Some(p) = progress {
        let _ = p.await;
    }
    run.records.sort_by_key(|r| (r.sent, r.entry, r.client));
    run.capped = matches!(plan.end, End::After(_)) && shared.tickets.load(Ordering::Relaxed) == 0;
    run.disabled = shared
        .disabled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    run
}

/// A child's exit, as the supervisor announced it on `astrid.supervisor.child_exited`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    /// The child's name in the tree.
    pub(crate) child: String,
    /// Why it exited, e.g. `panicked: injected fault`.
    pub(crate) reason: String,
}

/// The exits seen while watching; `complete` is false when the watch lost its connection
/// (exits may have gone unseen).
#[derive(Debug, Clone, Default)]
pub(crate) struct Exits {
    pub(crate) list: Vec<Exit>,
    pub(crate) complete: bool,
}

/// Watches the supervisor's exit announcements from before the run until [`ExitWatch::stop`].
#[derive(Debug)]
pub(crate) struct ExitWatch {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Exits>,
}

/// The topic of exits.
const EXITED: &str = "astrid.supervisor.child_exited";

impl ExitWatch {
    /// Subscribes (on a connection of its own) and starts watching.
    pub(crate) async fn start(files: &SessionFiles) -> Result<Self, ClientError> {
        let mut client = Client::connect(files, CLIENT_NAME).await?;
        let _: astrid::protocol::Subscribed = client
            .call(Request::Subscribe {
                pattern: EXITED.into(),
            })
            .await?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut exits = Exits {
                list: Vec::new(),
                complete: true,
            };
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    event = client.next_event() => {
                        let Some(event) = event else {
                            exits.complete = false;
                            break;
                        };
                        if event.topic == EXITED
                            && let Some(exit) = exit_of(&event.payload)
                        {
                            exits.list.push(exit);
                        }
                    }
                }
            }
            exits
        });
        Ok(Self { stop, task })
    }

    /// Stops watching; returns what was seen.
    pub(crate) async fn stop(self) -> Exits {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// `{child, reason, ...}` from an exit event's payload.
fn exit_of(payload: &rmpv::Value) -> Option<Exit> {
    let field = |name: &str| {
        payload
            .as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned)
    };
    Some(Exit {
        child: field("child")?,
        reason: field("reason").unwrap_or_default(),
    })
}
