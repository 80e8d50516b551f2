//! The report of a run: requests answered or not, errors by code, latency with and without
//! faults active, the faults injected and refused, recovery times, restarts per actor and
//! capsule, and the invariants checked. [`Report::build`] is a pure function of the run's
//! records, the supervision tree before and after, and the end-of-run checks; the same
//! report is printed as text or, with `--json`, as JSON.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use astrid::protocol::{ChildState, Fault, NodeKind, TreeNode};
use serde::Serialize;

use super::drive::{Exits, Injected, Outcome, Record, Run};
use super::plan::{Action, Plan};
use super::schedule::Planned;

/// What the runner checked after the run, besides the requests themselves.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    /// What was checked, e.g. `kv_put chaos/{client}/{n}: 120 keys read back`.
    pub(crate) what: String,
    /// Whether it held.
    pub(crate) ok: bool,
    /// Why not, or what was seen.
    pub(crate) detail: String,
}

/// Everything [`Report::build`] needs.
#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) seed: u64,
    pub(crate) schedule: &'a [Planned],
    pub(crate) run: &'a Run,
    /// Command name → the capsule that offers it.
    pub(crate) commands: &'a HashMap<String, String>,
    pub(crate) before: &'a TreeNode,
    pub(crate) after: Option<&'a TreeNode>,
    /// The exits the supervisor announced during the run; none when they were not all
    /// seen.
    pub(crate) exits: Option<&'a Exits>,
    /// Acknowledged writes read back, and the workload's `verify` checks.
    pub(crate) writes: Vec<Check>,
    /// The audit chain: `Ok(entries)` or why it does not verify.
    pub(crate) audit: Result<u64, String>,
    /// Whether the daemon answered a ping at the end.
    pub(crate) up: Result<(), String>,
}

/// Latency figures, in microseconds (none when there were no replies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Stats {
    pub(crate) count: usize,
    pub(crate) p50_us: Option<u64>,
    pub(crate) p99_us: Option<u64>,
    pub(crate) max_us: Option<u64>,
}

impl Stats {
    /// Nearest-rank percentiles of `samples` (microseconds).
    pub(crate) fn of(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        let rank = |p: usize| -> Option<u64> {
            if samples.is_empty() {
                return None;
            }
            // Nearest rank: the smallest value with at least p% of the samples at or below.
            let k = (samples.len() * p).div_ceil(100).max(1);
            samples.get(k - 1).copied()
        };
        Self {
            count: samples.len(),
            p50_us: rank(50),
            p99_us: rank(99),
            max_us: samples.last().copied(),
        }
    }
}

/// Requests of one workload entry, or of all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Totals {
    pub(crate) sent: u64,
    pub(crate) answered: u64,
    pub(crate) ok: u64,
    /// Error replies by code.
    pub(crate) errors: BTreeMap<String, u64>,
    /// No reply within the deadline.
    pub(crate) unanswered: u64,
    /// The connection closed before the reply.
    pub(crate) disconnected: u64,
}

impl Totals {
    fn add(&mut self, outcome: Outcome) {
        self.sent += 1;
        match outcome {
            Outcome::Ok => {
                self.ok += 1;
                self.answered += 1;
            }
            Outcome::Error { code, .. } => {
                self.answered += 1;
                *self.errors.entry(code.to_owned()).or_default() += 1;
            }
            Outcome::Unanswered => self.unanswered += 1,
            Outcome::Disconnected => self.disconnected += 1,
        }
    }
}

/// One workload entry's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EntryReport {
    pub(crate) workload: String,
    pub(crate) clients: u32,
    pub(crate) rate: f64,
    #[serde(flatten)]
    pub(crate) totals: Totals,
}

/// Latency of answered requests, all and split by whether a fault was active while they
/// were in flight.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) all: Stats,
    pub(crate) faults_active: Stats,
    pub(crate) no_faults: Stats,
}

/// One planned fault and what came of it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FaultLine {
    /// Planned time, after the start.
    pub(crate) at_ms: u64,
    /// When the daemon answered the injection.
    pub(crate) answered_ms: u64,
    pub(crate) rule: usize,
    pub(crate) target: String,
    /// The fault as text, e.g. `hang for 2000 ms`.
    pub(crate) fault: String,
    /// The fault in the wire form.
    pub(crate) wire: serde_json::Value,
    /// Whether it counts as a crash of its target.
    pub(crate) crash: bool,
    /// `injected`, `refused` or `unanswered`.
    pub(crate) outcome: &'static str,
    /// For a refusal: the code and message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    /// For a crash fault: from the injection to the target's next success (a request that
    /// reaches the target, sent after the injection, answered with a result); none when it
    /// never came, and for other faults.
    pub(crate) recovery_ms: Option<u64>,
}

/// The faults of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Faults {
    pub(crate) scheduled: usize,
    pub(crate) injected: usize,
    pub(crate) refused: usize,
    pub(crate) unanswered: usize,
    /// Planned faults the run ended before.
    pub(crate) not_reached: usize,
    pub(crate) list: Vec<FaultLine>,
}

/// Recovery times after crash faults, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Recovery {
    pub(crate) crashes: usize,
    pub(crate) recovered: usize,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
}

/// Restarts of one actor or capsule during the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodeRestarts {
    pub(crate) name: String,
    pub(crate) restarts: u32,
    /// Crash faults acknowledged for it.
    pub(crate) crash_faults: u32,
    /// Crashes of its own (see [`Report::build`]).
    pub(crate) own_crashes: u32,
    /// Up to three reasons of its exits that name no injected fault, as the supervisor
    /// announced them (none without crashes of its own).
    pub(crate) own_reasons: Vec<String>,
    /// `crash_faults + own_crashes`; none when it is not checked (a supervisor above it
    /// was faulted, and restarted it with the rest of its children).
    pub(crate) expected: Option<u32>,
    /// Its state at the end.
    pub(crate) state: String,
}

/// One invariant and whether it held.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Invariant {
    pub(crate) name: &'static str,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) plan: String,
    pub(crate) seed: u64,
    pub(crate) duration_ms: u64,
    /// Whether every invariant held.
    pub(crate) ok: bool,
    pub(crate) requests: Totals,
    pub(crate) workload: Vec<EntryReport>,
    pub(crate) latency: Latency,
    pub(crate) faults: Faults,
    pub(crate) recovery: Recovery,
    pub(crate) restarts: Vec<NodeRestarts>,
    pub(crate) checks: Vec<Check>,
    pub(crate) invariants: Vec<Invariant>,
    /// Notes on the run itself (e.g. the request cap was reached).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) notes: Vec<String>,
}

/// `n thing` or `n things`.
fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[allow(clippy::cast_precision_loss, reason = "milliseconds for display")]
fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|u| (u as f64 / 10.0).round() / 100.0)
}

/// How long a fault lasts by itself: a hang its length, a delay its span; none for the
/// others (a crash lasts until its target serves again, a counted fault until it is used).
fn span(fault: &Fault) -> Duration {
    match fault {
        Fault::Hang { millis }
        | Fault::Delay {
            for_millis: millis, ..
        } => Duration::from_millis(*millis),
        _ => Duration::ZERO,
    }
}

/// Whether a request of `action` reaches `target` (an actor name): a capsule's commands
/// reach `capsule:<name>`, key-value requests `store`, publishing `bus`; any request counts
/// for any other target (the listener, the registry, a supervisor, ...).
pub(crate) fn reaches(target: &str, action: &Action, commands: &HashMap<String, String>) -> bool {
    if let Some(capsule) = target.strip_prefix("capsule:") {
        return matches!(action, Action::Command { name, .. }
            if commands.get(name).is_some_and(|c| c == capsule));
    }
    match target {
        "store" => matches!(action, Action::KvPut { .. } | Action::KvGet { .. }),
        "bus" => matches!(action, Action::Publish { .. }),
        _ => true,
    }
}

/// The successes that reach one target, by send time, with the earliest reply among those
/// sent at or after each.
struct Successes {
    sent: Vec<Duration>,
    first_done: Vec<Duration>,
}

impl Successes {
    fn new(
        records: &[Record],
        plan: &Plan,
        target: &str,
        commands: &HashMap<String, String>,
    ) -> Self {
        let ok: Vec<&Record> = records
            .iter()
            .filter(|r| {
                r.outcome == Outcome::Ok
                    && reaches(target, &plan.workload[r.entry].action, commands)
            })
            .collect();
        let sent = ok.iter().map(|r| r.sent).collect();
        let mut first_done = vec![Duration::MAX; ok.len()];
        let mut best = Duration::MAX;
        for (i, r) in ok.iter().enumerate().rev() {
            best = best.min(r.done());
            first_done[i] = best;
        }
        Self { sent, first_done }
    }

    /// How long after `at` the first success sent at or after `at` was answered.
    fn after(&self, at: Duration) -> Option<Duration> {
        let i = self.sent.partition_point(|s| *s < at);
        self.first_done.get(i).map(|done| done.saturating_sub(at))
    }
}

/// Nodes of a tree by name, with their kind and supervisor chain (sessions left out).
fn flatten(
    node: &TreeNode,
    parents: &mut Vec<String>,
    out: &mut BTreeMap<String, (TreeNode, Vec<String>)>,
) {
    if node.kind == NodeKind::Session {
        return;
    }
    let mut shallow = node.clone();
    shallow.children.clear();
    out.insert(node.name.clone(), (shallow, parents.clone()));
    parents.push(node.name.clone());
    for child in &node.children {
        flatten(child, parents, out);
    }
    parents.pop();
}

fn nodes(tree: &TreeNode) -> BTreeMap<String, (TreeNode, Vec<String>)> {
    let mut out = BTreeMap::new();
    flatten(tree, &mut Vec::new(), &mut out);
    out
}

impl Report {
    /// Builds the report.
    #[allow(
        clippy::too_many_lines,
        reason = "one pass over the run, section by section"
    )]
    pub(crate) fn build(inputs: Inputs<'_>) -> Self {
        let Inputs {
            plan,
            seed,
            schedule,
            run,
            commands,
            before,
            after,
            exits,
            writes,
            audit,
            up,
        } = inputs;
        let end = run.elapsed;

        // Requests.
        let mut requests = Totals::default();
        let mut entries: Vec<Totals> = plan.workload.iter().map(|_| Totals::default()).collect();
        for r in &run.records {
            requests.add(r.outcome);
            entries[r.entry].add(r.outcome);
        }

        // Faults and recovery.
        let mut successes: HashMap<&str, Successes> = HashMap::new();
        let mut faults = Faults {
            scheduled: schedule.len(),
            not_reached: schedule.len().saturating_sub(run.injections.len()),
            ..Faults::default()
        };
        let mut windows = Vec::new();
        let mut recoveries = Vec::new();
        let mut crash_faults: BTreeMap<&str, u32> = BTreeMap::new();
        for inj in &run.injections {
            let rule = &plan.rules[inj.planned.rule];
            let (outcome, code, message) = match &inj.outcome {
                Injected::Yes => ("injected", None, None),
                Injected::Refused { code, message } => {
                    ("refused", Some((*code).to_owned()), Some(message.clone()))
                }
                Injected::Unanswered => ("unanswered", None, None),
            };
            let mut recovery = None;
            match inj.outcome {
                Injected::Yes => {
                    faults.injected += 1;
                    let found = successes.entry(rule.target.as_str()).or_insert_with(|| {
                        Successes::new(&run.records, plan, &rule.target, commands)
                    });
                    let next = found.after(inj.at);
                    // Active from its injection until its span is over and its target
                    // served again (or the end of the run).
                    let until = next
                        .map_or(end, |r| inj.at + r)
                        .max(inj.at + span(&rule.fault));
                    windows.push((inj.sent, until));
                    if rule.crash {
                        *crash_faults.entry(rule.target.as_str()).or_default() += 1;
                        recovery = next;
                        recoveries.push(next);
                    }
                }
                Injected::Refused { .. } => faults.refused += 1,
                Injected::Unanswered => faults.unanswered += 1,
            }
            let wire: &Fault = &rule.fault;
            faults.list.push(FaultLine {
                at_ms: millis(inj.planned.at),
                answered_ms: millis(inj.at),
                rule: inj.planned.rule,
                target: rule.target.clone(),
                fault: rule.fault.to_string(),
                wire: serde_json::to_value(wire).unwrap_or_default(),
                crash: rule.crash,
                outcome,
                code,
                message,
                recovery_ms: recovery.map(millis),
            });
        }
        let recovered: Vec<u64> = recoveries.iter().flatten().map(|d| micros(*d)).collect();
        let recovery_stats = Stats::of(recovered);
        let recovery = Recovery {
            crashes: recoveries.len(),
            recovered: recovery_stats.count,
            p50_ms: ms(recovery_stats.p50_us),
            p99_ms: ms(recovery_stats.p99_us),
            max_ms: ms(recovery_stats.max_us),
        };

        // Latency, split by whether a fault was active while the request was in flight: from
        // its injection being sent to its target's recovery (or the end of the run).
        let active = |r: &Record| {
            windows
                .iter()
                .any(|(from, to)| r.sent <= *to && *from <= r.done())
        };
        let (mut all, mut with, mut without) = (Vec::new(), Vec::new(), Vec::new());
        for r in &run.records {
            if !matches!(r.outcome, Outcome::Ok | Outcome::Error { .. }) {
                continue;
            }
            let us = micros(r.took);
            all.push(us);
            if active(r) {
                with.push(us);
            } else {
                without.push(us);
            }
        }
        let latency = Latency {
            all: Stats::of(all),
            faults_active: Stats::of(with),
            no_faults: Stats::of(without),
        };

        // Restarts: one per crash fault acknowledged plus one per crash of the target's own.
        // Its own crashes are its exits the supervisor announced beyond the crash faults
        // (a guest's trap, a call past its deadline, a crash a fault caused further on); when
        // the announcements were not all seen, they are the workload's `capsule_crashed`
        // replies that name the guest's own failure.
        let mut by_replies: BTreeMap<String, u32> = BTreeMap::new();
        for r in &run.records {
            if let (Outcome::Error { crashed: true, .. }, Action::Command { name, .. }) =
                (r.outcome, &plan.workload[r.entry].action)
                && let Some(capsule) = commands.get(name)
            {
                *by_replies.entry(format!("capsule:{capsule}")).or_default() += 1;
            }
        }
        let mut by_exits: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        if let Some(exits) = exits {
            for e in &exits.list {
                by_exits.entry(&e.child).or_default().push(&e.reason);
            }
        }
        let old = nodes(before);
        let mut restarts = Vec::new();
        let mut mismatches = Vec::new();
        if let Some(after) = after {
            for (name, (node, parents)) in nodes(after) {
                if node.kind == NodeKind::Supervisor {
                    continue;
                }
                let was = old.get(&name).map_or(0, |(n, _)| n.restarts);
                let count = node.restarts.saturating_sub(was);
                let faults = crash_faults.get(name.as_str()).copied().unwrap_or(0);
                let (own, reasons, unseen) = match exits {
                    Some(_) => {
                        let seen = by_exits.get(name.as_str()).map_or(&[][..], Vec::as_slice);
                        let exited = u32::try_from(seen.len()).unwrap_or(u32::MAX);
                        let mut reasons: Vec<String> = seen
                            .iter()
                            .filter(|r| !r.contains("injected fault"))
                            .map(|r| (*r).to_owned())
                            .collect();
                        reasons.sort();
                        reasons.dedup();
                        reasons.truncate(3);
                        if exited <= faults {
                            reasons.clear();
                        }
                        (
                            exited.saturating_sub(faults),
                            reasons,
                            faults.saturating_sub(exited),
                        )
                    }
                    None => (by_replies.get(&name).copied().unwrap_or(0), Vec::new(), 0),
                };
                let want = faults + own;
                if count == 0 && want == 0 {
                    continue;
                }
                let faulted_above = parents
                    .iter()
                    .any(|p| crash_faults.contains_key(p.as_str()));
                let checked = (!faulted_above).then_some(want);
                if checked.is_some_and(|w| w != count || unseen > 0) {
                    let mut text = format!(
                        "{name}: {count} restarts for {faults} crash faults and {own} crashes \
                         of its own"
                    );
                    if unseen > 0 {
                        let _ = write!(text, " ({unseen} crash faults made it exit no time)");
                    }
                    if node.state == ChildState::Failed {
                        text.push_str(" (failed: its restart budget ran out)");
                    }
                    mismatches.push(text);
                }
                restarts.push(NodeRestarts {
                    name,
                    restarts: count,
                    crash_faults: faults,
                    own_crashes: own,
                    own_reasons: reasons,
                    expected: checked,
                    state: node.state.to_string(),
                });
            }
        }
        let crashes: u32 = restarts
            .iter()
            .map(|r| r.crash_faults + r.own_crashes)
            .sum();

        // Invariants.
        let lost = requests.unanswered + requests.disconnected;
        let mut invariants = vec![Invariant {
            name: "no_request_unanswered",
            ok: lost == 0,
            detail: if lost == 0 {
                format!(
                    "{} of {} requests answered",
                    requests.answered, requests.sent
                )
            } else {
                format!(
                    "{} requests got no reply within {} and {} lost their connection",
                    requests.unanswered,
                    humantime::format_duration(plan.deadline),
                    requests.disconnected
                )
            },
        }];
        let failed: Vec<&Check> = writes.iter().filter(|c| !c.ok).collect();
        invariants.push(Invariant {
            name: "no_acknowledged_write_lost",
            ok: failed.is_empty(),
            detail: if writes.is_empty() {
                "nothing to check: no kv_put workload and no `verify`".into()
            } else if failed.is_empty() {
                writes
                    .iter()
                    .map(|c| c.what.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            } else {
                failed
                    .iter()
                    .map(|c| format!("{}: {}", c.what, c.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        });
        invariants.push(match audit {
            Ok(entries) => Invariant {
                name: "audit_chain_verifies",
                ok: true,
                detail: format!("{entries} entries verified"),
            },
            Err(why) => Invariant {
                name: "audit_chain_verifies",
                ok: false,
                detail: why,
            },
        });
        invariants.push(Invariant {
            name: "daemon_up",
            ok: up.is_ok(),
            detail: up
                .err()
                .unwrap_or_else(|| "it answered a ping after the run".into()),
        });
        invariants.push(Invariant {
            name: "restarts_equal_crashes",
            ok: after.is_some() && mismatches.is_empty(),
            detail: if after.is_none() {
                "the supervision tree could not be read after the run".into()
            } else if mismatches.is_empty() {
                format!(
                    "{}, as many restarts",
                    plural(crashes as usize, "crash", "crashes")
                )
            } else {
                mismatches.join("; ")
            },
        });

        let mut notes = Vec::new();
        if run.capped {
            notes.push(format!(
                "the run stopped early, at the cap of {} requests",
                super::plan::MAX_REQUESTS
            ));
        }
        let workload = plan
            .workload
            .iter()
            .zip(entries)
            .map(|(w, totals)| EntryReport {
                workload: w.action.label(),
                clients: w.clients,
                rate: w.rate,
                totals,
            })
            .collect();
        Self {
            plan: plan.file.display().to_string(),
            seed,
            duration_ms: millis(end),
            ok: invariants.iter().all(|i| i.ok),
            requests,
            workload,
            latency,
            faults,
            recovery,
            restarts,
            checks: writes,
            invariants,
            notes,
        }
    }

    /// The names of the invariants that failed.
    pub(crate) fn failed(&self) -> Vec<&'static str> {
        self.invariants
            .iter()
            .filter(|i| !i.ok)
            .map(|i| i.name)
            .collect()
    }

    /// The report as text.
    #[allow(clippy::too_many_lines, reason = "one section after the other")]
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let r = &self.requests;
        let _ = writeln!(
            out,
            "chaos: {} (seed {}), {:.1} s",
            self.plan,
            self.seed,
            Duration::from_millis(self.duration_ms).as_secs_f64()
        );
        let _ = writeln!(
            out,
            "requests: {} sent, {} answered ({} ok, {} errors), {} unanswered, {} disconnected",
            r.sent,
            r.answered,
            r.ok,
            r.errors.values().sum::<u64>(),
            r.unanswered,
            r.disconnected
        );
        for (code, n) in &r.errors {
            let _ = writeln!(out, "  {code}: {n}");
        }
        for w in &self.workload {
            let t = &w.totals;
            let _ = writeln!(
                out,
                "  {} ({} at {}/s): {} sent, {} ok, {} errors, {} unanswered",
                w.workload,
                plural(w.clients as usize, "client", "clients"),
                w.rate,
                t.sent,
                t.ok,
                t.errors.values().sum::<u64>(),
                t.unanswered + t.disconnected
            );
        }
        let line = |s: &Stats| match (s.p50_us, s.p99_us, s.max_us) {
            (Some(a), Some(b), Some(c)) => format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({})",
                ms(Some(a)).unwrap_or_default(),
                ms(Some(b)).unwrap_or_default(),
                ms(Some(c)).unwrap_or_default(),
                plural(s.count, "reply", "replies")
            ),
            _ => "no replies".into(),
        };
        let _ = writeln!(out, "latency: {}", line(&self.latency.all));
        let _ = writeln!(
            out,
            "  with faults active: {}",
            line(&self.latency.faults_active)
        );
        let _ = writeln!(
            out,
            "  without faults:     {}",
            line(&self.latency.no_faults)
        );
        let f = &self.faults;
        let _ = writeln!(
            out,
            "faults: {} scheduled, {} injected, {} refused, {} unanswered, {} not reached",
            f.scheduled, f.injected, f.refused, f.unanswered, f.not_reached
        );
        for l in &f.list {
            let mut text = format!(
                "  {:>7.3}s {} {}: {}",
                Duration::from_millis(l.at_ms).as_secs_f64(),
                l.target,
                l.fault,
                l.outcome
            );
            if let (Some(code), Some(message)) = (&l.code, &l.message) {
                let _ = write!(text, " ({code}: {message})");
            }
            if let Some(ms) = l.recovery_ms {
                let _ = write!(text, ", recovered in {ms} ms");
            } else if l.outcome == "injected" && l.crash {
                text.push_str(", no success after it");
            }
            let _ = writeln!(out, "{text}");
        }
        let rec = &self.recovery;
        if rec.crashes > 0 {
            let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} ms"));
            let _ = writeln!(
                out,
                "recovery after {} ({} recovered): p50 {}, p99 {}, max {}",
                plural(rec.crashes, "crash fault", "crash faults"),
                rec.recovered,
                show(rec.p50_ms),
                show(rec.p99_ms),
                show(rec.max_ms)
            );
        }
        if self.restarts.is_empty() {
            let _ = writeln!(out, "restarts: none");
        } else {
            let _ = writeln!(out, "restarts:");
            for r in &self.restarts {
                let expected =
                    r.expected
                        .map_or("not checked: a supervisor above was faulted".into(), |e| {
                            format!(
                                "{e} expected: {}, {} of its own",
                                plural(r.crash_faults as usize, "crash fault", "crash faults"),
                                r.own_crashes
                            )
                        });
                let _ = writeln!(
                    out,
                    "  {}: {} ({expected}), {}",
                    r.name, r.restarts, r.state
                );
                if !r.own_reasons.is_empty() {
                    let _ = writeln!(out, "    its own: {}", r.own_reasons.join("; "));
                }
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        let _ = writeln!(out, "invariants:");
        for i in &self.invariants {
            let word = if i.ok { "pass" } else { "FAIL" };
            let _ = writeln!(out, "  {word} {}: {}", i.name, i.detail);
        }
        let verdict = if self.ok {
            "every invariant holds".to_owned()
        } else {
            format!("failed: {}", self.failed().join(", "))
        };
        let _ = writeln!(out, "{verdict}");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use astrid::protocol::RestartType;

    use super::*;
    use crate::chaos::drive::{Exit, Injection};

    fn node(name: &str, kind: NodeKind, restarts: u32, children: Vec<TreeNode>) -> TreeNode {
        TreeNode {
            name: name.into(),
            kind,
            restart: Some(RestartType::Transient),
            state: ChildState::Running,
            restarts,
            uptime_ms: None,
            last_failure: None,
            detail: None,
            children,
        }
    }

    fn tree(echo: u32, notes: u32) -> TreeNode {
        node(
            "root",
            NodeKind::Supervisor,
            0,
            vec![
                node("store", NodeKind::Worker, 0, vec![]),
                node(
                    "capsules",
                    NodeKind::Supervisor,
                    echo + notes,
                    vec![
                        node("capsule:echo", NodeKind::Capsule, echo, vec![]),
                        node("capsule:notes", NodeKind::Capsule, notes, vec![]),
                    ],
                ),
            ],
        )
    }

    fn plan() -> Plan {
        let text = "duration = \"10s\"\n\
            [[workload]]\ncommand = \"/echo {n}\"\n\
            [[workload]]\ncommand = \"/note-add {n}\"\n\
            [[fault]]\ntarget = \"capsule:echo\"\nfault = \"trap\"\nat = [\"1s\", \"2s\", \"3s\"]\n";
        Plan::parse(text, Path::new("p.toml"), Path::new(".")).unwrap()
    }

    fn rec(entry: usize, sent_ms: u64, took_ms: u64, outcome: Outcome) -> Record {
        Record {
            entry,
            client: 0,
            n: 0,
            sent: Duration::from_millis(sent_ms),
            took: Duration::from_millis(took_ms),
            outcome,
        }
    }

    fn inj(rule: usize, at_ms: u64, outcome: Injected) -> Injection {
        Injection {
            planned: Planned {
                at: Duration::from_millis(at_ms),
                rule,
            },
            sent: Duration::from_millis(at_ms),
            at: Duration::from_millis(at_ms),
            outcome,
        }
    }

    fn commands() -> HashMap<String, String> {
        [("echo", "echo"), ("note-add", "notes")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    }

    fn build(run: &Run, after: &TreeNode, writes: Vec<Check>) -> Report {
        build_seen(run, after, writes, None)
    }

    fn build_seen(
        run: &Run,
        after: &TreeNode,
        writes: Vec<Check>,
        exits: Option<&Exits>,
    ) -> Report {
        let plan = plan();
        let schedule: Vec<Planned> = run.injections.iter().map(|i| i.planned).collect();
        let commands = commands();
        Report::build(Inputs {
            plan: &plan,
            seed: 1,
            schedule: &schedule,
            run,
            commands: &commands,
            before: &tree(0, 0),
            after: Some(after),
            exits,
            writes,
            audit: Ok(10),
            up: Ok(()),
        })
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = Stats::of((1..=100).rev().collect());
        assert_eq!(
            (s.count, s.p50_us, s.p99_us, s.max_us),
            (100, Some(50), Some(99), Some(100))
        );
        let one = Stats::of(vec![7]);
        assert_eq!(
            (one.p50_us, one.p99_us, one.max_us),
            (Some(7), Some(7), Some(7))
        );
        assert_eq!(Stats::of(Vec::new()), Stats::default());
    }

    #[test]
    fn recovery_is_from_the_crash_to_the_next_success_of_its_target() {
        let crashed = Outcome::Error {
            code: "capsule_crashed",
            crashed: false,
        };
        let run = Run {
            records: vec![
                rec(0, 900, 5, Outcome::Ok),
                rec(0, 1000, 2, crashed),
                // Another capsule's success does not count for echo.
                rec(1, 1001, 1, Outcome::Ok),
                rec(0, 1003, 4, Outcome::Ok),
                rec(0, 2500, 1, Outcome::Ok),
            ],
            injections: vec![
                inj(0, 1000, Injected::Yes),
                inj(
                    0,
                    2000,
                    Injected::Refused {
                        code: "not_running",
                        message: "restarting".into(),
                    },
                ),
                inj(0, 3000, Injected::Yes),
            ],
            elapsed: Duration::from_secs(4),
            ..Run::default()
        };
        let report = build(&run, &tree(2, 0), vec![]);
        assert_eq!(report.faults.injected, 2);
        assert_eq!(report.faults.refused, 1);
        assert_eq!(report.faults.list[0].recovery_ms, Some(7));
        assert_eq!(report.faults.list[2].recovery_ms, None);
        assert_eq!(report.recovery.crashes, 2);
        assert_eq!(report.recovery.recovered, 1);
        assert_eq!(report.recovery.max_ms, Some(7.0));
        // Sent in 1000..=1007 or from 3000 on: with faults active.
        assert_eq!(report.latency.faults_active.count, 3);
        assert_eq!(report.latency.no_faults.count, 2);
        assert_eq!(report.requests.errors["capsule_crashed"], 1);
        assert!(report.ok, "{}", report.text());
    }

    #[test]
    fn restarts_must_equal_crash_faults_plus_the_workloads_own_crashes() {
        let own = Outcome::Error {
            code: "capsule_crashed",
            crashed: true,
        };
        let run = Run {
            records: vec![rec(1, 100, 1, own), rec(1, 200, 1, own)],
            injections: vec![inj(0, 1000, Injected::Yes)],
            elapsed: Duration::from_secs(2),
            ..Run::default()
        };
        // echo: 1 fault, notes: 2 crashes of its own.
        let good = build(&run, &tree(1, 2), vec![]);
        assert!(good.ok, "{}", good.text());
        let restarts: Vec<(String, u32, Option<u32>)> = good
            .restarts
            .iter()
            .map(|r| (r.name.clone(), r.restarts, r.expected))
            .collect();
        assert_eq!(
            restarts,
            [
                ("capsule:echo".into(), 1, Some(1)),
                ("capsule:notes".into(), 2, Some(2))
            ]
        );
        let bad = build(&run, &tree(1, 3), vec![]);
        assert_eq!(bad.failed(), ["restarts_equal_crashes"]);
        assert!(
            bad.text()
                .contains("capsule:notes: 3 restarts for 0 crash faults and 2 crashes of its own"),
            "{}",
            bad.text()
        );
    }

    #[test]
    fn with_the_exits_announced_own_crashes_are_exits_beyond_the_crash_faults() {
        let exit = |child: &str, reason: &str| Exit {
            child: child.into(),
            reason: reason.into(),
        };
        let run = Run {
            injections: vec![inj(0, 1000, Injected::Yes)],
            elapsed: Duration::from_secs(2),
            ..Run::default()
        };
        let exits = Exits {
            list: vec![
                exit("capsule:echo", "trapped: injected fault"),
                exit(
                    "capsule:notes",
                    "failed: the capsule did not answer within 5000 ms",
                ),
                exit(
                    "capsule:notes",
                    "failed: the capsule did not answer within 5000 ms",
                ),
            ],
            complete: true,
        };
        let good = build_seen(&run, &tree(1, 2), vec![], Some(&exits));
        assert!(good.ok, "{}", good.text());
        let notes = &good.restarts[1];
        assert_eq!((notes.crash_faults, notes.own_crashes), (0, 2));
        assert_eq!(
            notes.own_reasons,
            ["failed: the capsule did not answer within 5000 ms"]
        );
        // A crash fault acknowledged that made its target exit no time fails.
        let none = Exits {
            list: Vec::new(),
            complete: true,
        };
        let bad = build_seen(&run, &tree(1, 0), vec![], Some(&none));
        assert_eq!(bad.failed(), ["restarts_equal_crashes"]);
        assert!(
            bad.text().contains("made it exit no time"),
            "{}",
            bad.text()
        );
        // A restart for which no exit was announced fails too.
        let bad = build_seen(&run, &tree(2, 0), vec![], Some(&exits));
        assert_eq!(bad.failed(), ["restarts_equal_crashes"], "{}", bad.text());
    }

    #[test]
    fn unanswered_requests_and_lost_writes_fail_their_invariants() {
        let run = Run {
            records: vec![
                rec(0, 100, 10_000, Outcome::Unanswered),
                rec(0, 200, 1, Outcome::Ok),
            ],
            elapsed: Duration::from_secs(1),
            ..Run::default()
        };
        let lost = Check {
            what: "kv_put k/{n}: 1 key read back".into(),
            ok: false,
            detail: "k/1 is missing".into(),
        };
        let report = build(&run, &tree(0, 0), vec![lost]);
        assert_eq!(
            report.failed(),
            ["no_request_unanswered", "no_acknowledged_write_lost"]
        );
        let text = report.text();
        assert!(
            text.contains(
                "FAIL no_acknowledged_write_lost: kv_put k/{n}: 1 key read back: k/1 is missing"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("failed: no_request_unanswered, no_acknowledged_write_lost\n"),
            "{text}"
        );
    }
}
