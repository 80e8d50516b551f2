//! `astrid chaos PLAN.toml`: runs a chaos plan against the workspace's daemon (or one of its
//! own, with `--fresh`) and reports. The steps, each in a module of its own: the plan file
//! ([`plan`], with [`template`]), the fault schedule from the seed ([`schedule`]), the run
//! ([`drive`]), and the report ([`report`]); this file connects them: the daemon, the checks
//! before the run (fault injection accepted, targets, capsules and commands present), and
//! the checks after it (acknowledged writes, the audit chain, the daemon up).
//!
//! Exit status: 0 when every invariant holds, [`EXIT_INVARIANT`] when one fails, 1 when the
//! plan cannot run (a bad plan, no daemon, fault injection refused).

mod drive;
mod plan;
mod report;
mod schedule;
mod template;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use astrid::client::{Client, ClientError};
use astrid::protocol::{
    ChildState, CommandInfo, CommandOutput, ErrorCode, Fault, FaultInjected, KvValue,
    McpServerInfo, McpServerState, NodeKind, Request, TreeNode, Verification,
};
use futures_util::StreamExt as _;

use self::drive::{Outcome, Record, Run};
use self::plan::{Action, End, MAX_DURATION, MIN_DURATION, Plan, PlanError, Verify};
use self::report::{Check, Inputs, Report};
use self::template::Values;
use crate::CliError;
use crate::args::{ChaosArgs, Global};
use crate::daemon::{Mode, Target};

/// Exit status when an invariant fails.
pub(crate) const EXIT_INVARIANT: u8 = 3;
/// Longest wait for the plan's MCP servers to be running before the run.
const MCP_READY: Duration = Duration::from_secs(15);
/// Longest wait after the run for restarts to finish (no node restarting or stopping).
const SETTLE: Duration = Duration::from_secs(10);
/// Acknowledged keys read back at once.
const READ_BACK_IN_FLIGHT: usize = 32;
/// The actor name of the probe that asks whether the daemon accepts faults: no actor has
/// it, so a daemon that accepts faults refuses it as unknown and injects nothing.
const PROBE: &str = "astrid-chaos:probe";
/// Wrong keys or values a check names at most.
const SHOWN: usize = 5;

/// Why a plan did not run, or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChaosError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{}: {source}", file.display())]
    Schedule {
        file: PathBuf,
        source: schedule::TooMany,
    },
    #[error(
        "--duration {}: outside {}..={}",
        humantime::format_duration(*given),
        humantime::format_duration(MIN_DURATION),
        humantime::format_duration(MAX_DURATION)
    )]
    Duration { given: Duration },
    #[error(
        "the daemon of session `{session}` does not accept faults ({message}): stop it (`astrid \
         stop`) and run `astrid chaos` again, which starts one that does; or start one with \
         `astrid start --allow-fault-injection`; or run the plan with `--fresh`, against a \
         daemon of its own"
    )]
    FaultsDisabled { session: String, message: String },
    #[error("{}: `fault[{rule}].target`: no actor `{target}` in the daemon's tree (`astrid ps` shows: {known})", file.display())]
    UnknownTarget {
        file: PathBuf,
        rule: usize,
        target: String,
        known: String,
    },
    #[error(
        "{}: capsule `{name}` (from {}) is not loaded: install it (`astrid install {}`), or run \
         the plan with `--fresh`",
        file.display(),
        folder.display(),
        folder.display()
    )]
    CapsuleMissing {
        file: PathBuf,
        name: String,
        folder: PathBuf,
    },
    #[error("{}: `{key}`: cannot read the capsule folder {}: {reason}", file.display(), folder.display())]
    CapsuleFolder {
        file: PathBuf,
        key: String,
        folder: PathBuf,
        reason: String,
    },
    #[error(
        "{}: `{key}`: no command `{name}` (`astrid commands` lists them; is its capsule loaded?)",
        file.display()
    )]
    UnknownCommand {
        file: PathBuf,
        key: String,
        name: String,
    },
    #[error(
        "{}: `mcp[{index}]`: MCP server `{name}` is not running ({state}): list it in the \
         home's or the workspace's mcp.toml (`astrid mcp ls` shows the servers), or run the \
         plan with `--fresh`",
        file.display()
    )]
    McpMissing {
        file: PathBuf,
        index: usize,
        name: String,
        state: String,
    },
    #[error("cannot make a fresh home")]
    Fresh(#[source] std::io::Error),
    #[error("invariants failed: {}", .0.join(", "))]
    Invariants(Vec<&'static str>),
}

/// Runs `astrid chaos`.
pub(crate) async fn run(global: &Global, args: ChaosArgs) -> Result<(), CliError> {
    let quiet = args.quiet || global.json;
    let say = |text: &str| {
        if !quiet {
            eprintln!("chaos: {text}");
        }
    };
    let mut plan = Plan::load(&args.plan).map_err(ChaosError::from)?;
    if let Some(given) = args.duration {
        if !(MIN_DURATION..=MAX_DURATION).contains(&given) {
            return Err(ChaosError::Duration { given }.into());
        }
        plan.end = End::After(given);
    }
    let seed = args.seed.or(plan.seed).unwrap_or_else(random_seed);
    let schedule =
        schedule::build(seed, &plan.rules, plan.end.horizon(), plan.tick).map_err(|source| {
            ChaosError::Schedule {
                file: plan.file.clone(),
                source,
            }
        })?;
    say(&format!(
        "{} with seed {seed}: {} faults scheduled{}",
        plan.file.display(),
        schedule.len(),
        match plan.end {
            End::After(d) => format!(" over {}", humantime::format_duration(d)),
            End::Requests(n) => format!(", {n} requests"),
        }
    ));
    for p in schedule.iter().take(20) {
        let rule = &plan.rules[p.rule];
        say(&format!(
            "  at {:.3}s: {} into {}",
            p.at.as_secs_f64(),
            rule.fault,
            rule.target
        ));
    }
    if schedule.len() > 20 {
        say(&format!("  ... and {} more", schedule.len() - 20));
    }

    let fresh = if args.fresh {
        Some(Fresh::new(&plan)?)
    } else {
        None
    };
    let target = match &fresh {
        Some(f) => Target::new(&f.global(global))?,
        None => Target::new(global)?,
    };
    let result = run_against(&target, &plan, seed, &schedule, quiet).await;
    if let Some(f) = fresh {
        // Its daemon goes with it (not only after its idle grace), then its folders.
        let _ = target.stop(Duration::from_secs(10)).await;
        drop(f);
    }
    let report = result?;
    if global.json {
        let text = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
        println!("{text}");
    } else {
        print!("{}", report.text());
    }
    if report.ok {
        Ok(())
    } else {
        Err(ChaosError::Invariants(report.failed()).into())
    }
}

async fn run_against(
    target: &Target,
    plan: &Plan,
    seed: u64,
    schedule: &[schedule::Planned],
    quiet: bool,
) -> Result<Report, CliError> {
    let (mut client, _) = target.connect_or_start(Mode::EphemeralFaults).await?;
    client.set_call_timeout(Some(plan.deadline));
    if !plan.rules.is_empty() {
        probe_faults(&client, target.files.name()).await?;
    }
    let commands = preflight(&client, plan).await?;
    let watch = drive::ExitWatch::start(&target.files).await?;
    let before = client.tree().await?;
    let run = drive::drive(&target.files, plan, schedule, quiet).await;
    if let Some(message) = run.disabled {
        return Err(ChaosError::FaultsDisabled {
            session: target.files.name().to_owned(),
            message,
        }
        .into());
    }
    // The control connection may have gone with a faulted listener: a new one for the end.
    let mut client = match Client::connect(&target.files, drive::CLIENT_NAME).await {
        Ok(c) => c,
        Err(_) => client,
    };
    client.set_call_timeout(Some(plan.deadline));
    let after = settle(&client).await;
    let exits = watch.stop().await;
    // A crashed bus forgets its subscriptions: exits after it were not seen.
    let bus_crashed = run.injections.iter().any(|i| {
        let rule = &plan.rules[i.planned.rule];
        i.outcome == drive::Injected::Yes && rule.crash && rule.target == "bus"
    });
    let exits = (exits.complete && !bus_crashed).then_some(exits);
    let mut writes = read_back(&client, plan, &run).await;
    for (entry, w) in plan.workload.iter().enumerate() {
        if let Some(v) = &w.verify {
            writes.push(verify(&client, v, entry, &run.records).await);
        }
    }
    let audit = match client.call::<Verification>(Request::AuditVerify).await {
        Ok(v) if v.ok => Ok(v.entries),
        Ok(v) => Err(format!(
            "broken at entry {}: {}",
            v.first_bad.unwrap_or_default(),
            v.reason.unwrap_or_default()
        )),
        Err(e) => Err(format!("AuditVerify failed: {}", astrid::error_chain(&e))),
    };
    let up = client
        .ping()
        .await
        .map_err(|e| format!("no answer to a ping: {}", astrid::error_chain(&e)));
    Ok(Report::build(Inputs {
        plan,
        seed,
        schedule,
        run: &run,
        commands: &commands,
        before: &before,
        after: after.as_ref(),
        exits: exits.as_ref(),
        writes,
        audit,
        up,
    }))
}

/// Whether the daemon accepts faults, asked by injecting into an actor that does not exist.
async fn probe_faults(client: &Client, session: &str) -> Result<(), CliError> {
    let probe = Request::InjectFault {
        target: PROBE.into(),
        fault: Fault::Hang { millis: 0 },
    };
    match client.call::<FaultInjected>(probe).await {
        Err(ClientError::Remote(body)) if body.code == ErrorCode::FaultInjectionDisabled => {
            Err(ChaosError::FaultsDisabled {
                session: session.to_owned(),
                message: body.code.as_str().to_owned(),
            }
            .into())
        }
        Err(ClientError::Remote(_)) | Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Checks that the plan's targets, capsules and commands are there; returns each command's
/// capsule.
async fn preflight(client: &Client, plan: &Plan) -> Result<HashMap<String, String>, CliError> {
    let file = || plan.file.clone();
    let tree = client.tree().await?;
    for (rule, r) in plan.rules.iter().enumerate() {
        if tree.find(&r.target).is_none() {
            let mut known = Vec::new();
            names(&tree, &mut known);
            return Err(ChaosError::UnknownTarget {
                file: file(),
                rule,
                target: r.target.clone(),
                known: known.join(", "),
            }
            .into());
        }
    }
    let loaded = client.capsules().await?;
    for (i, folder) in plan.capsules.iter().enumerate() {
        let name = capsule_name(folder).map_err(|reason| ChaosError::CapsuleFolder {
            file: file(),
            key: format!("capsules[{i}]"),
            folder: folder.clone(),
            reason,
        })?;
        if !loaded.iter().any(|c| c.name == name) {
            return Err(ChaosError::CapsuleMissing {
                file: file(),
                name,
                folder: folder.clone(),
            }
            .into());
        }
    }
    let list: Vec<CommandInfo> = client.call(Request::GetCommands).await?;
    let commands: HashMap<String, String> = list.into_iter().map(|c| (c.name, c.capsule)).collect();
    for (i, w) in plan.workload.iter().enumerate() {
        let mut wanted = Vec::new();
        if let Action::Command { name, .. } = &w.action {
            wanted.push((format!("workload[{i}].command"), name));
        }
        if let Some(v) = &w.verify {
            wanted.push((format!("workload[{i}].verify.command"), &v.name));
        }
        for (key, name) in wanted {
            if !commands.contains_key(name) {
                return Err(ChaosError::UnknownCommand {
                    file: file(),
                    key,
                    name: name.clone(),
                }
                .into());
            }
        }
    }
    for (index, server) in plan.mcp.iter().enumerate() {
        wait_mcp(client, plan, index, &server.name).await?;
    }
    Ok(commands)
}

/// Waits until MCP server `name` runs (it may still be starting when the daemon is ready).
async fn wait_mcp(client: &Client, plan: &Plan, index: usize, name: &str) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + MCP_READY;
    loop {
        let servers: Vec<McpServerInfo> = client.call(Request::ListMcpServers).await?;
        let found = servers.iter().find(|s| s.name == name);
        let state = match found {
            Some(s) if s.state == McpServerState::Running => return Ok(()),
            Some(s) => {
                let mut state = serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                if let Some(error) = &s.error {
                    let _ = write!(state, ": {error}");
                }
                state
            }
            None => "not configured".to_owned(),
        };
        let settled = matches!(
            found.map(|s| s.state),
            None | Some(McpServerState::Failed | McpServerState::Invalid | McpServerState::Stopped)
        );
        if settled || tokio::time::Instant::now() >= deadline {
            return Err(ChaosError::McpMissing {
                file: plan.file.clone(),
                index,
                name: name.to_owned(),
                state,
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(node: &TreeNode, out: &mut Vec<String>) {
    if node.kind != NodeKind::Session {
        out.push(node.name.clone());
    }
    for child in &node.children {
        names(child, out);
    }
}

/// The `[package] name` of the capsule in `folder`.
fn capsule_name(folder: &Path) -> Result<String, String> {
    let manifest = folder.join("Capsule.toml");
    let text =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: no [package] name", manifest.display()))
}

/// The tree once nothing is restarting or stopping and two reads 100 ms apart agree on
/// every node's state and restarts (restarts of faults acknowledged at the end take their
/// backoff first), or the last read after [`SETTLE`].
async fn settle(client: &Client) -> Option<TreeNode> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut last: Option<TreeNode> = None;
    loop {
        let now = client.tree().await.ok();
        if let (Some(a), Some(b)) = (&last, &now)
            && shape(a) == shape(b)
            && shape(b).iter().all(|(_, state, _)| {
                !matches!(state, ChildState::Restarting | ChildState::Stopping)
            })
        {
            return now;
        }
        if tokio::time::Instant::now() >= deadline {
            return now.or(last);
        }
        if now.is_some() {
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every node but the sessions (which come and go with connections): name, state, restarts.
fn shape(node: &TreeNode) -> Vec<(String, ChildState, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        if n.kind != NodeKind::Session {
            out.push((n.name.clone(), n.state, n.restarts));
        }
        stack.extend(&n.children);
    }
    out
}

/// Reads back every key an acknowledged `kv_put` wrote: it must hold the value of that
/// write, or, for a key written more than once, one of the values written to it.
async fn read_back(client: &Client, plan: &Plan, run: &Run) -> Vec<Check> {
    let mut checks = Vec::new();
    for (entry, w) in plan.workload.iter().enumerate() {
        let Action::KvPut { key, value } = &w.action else {
            continue;
        };
        let values = |r: &Record| Values {
            n: r.n,
            client: r.client,
            ..Values::default()
        };
        // Every value sent to each key; the keys with an acknowledged write.
        let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut acked = BTreeMap::new();
        for r in run.records.iter().filter(|r| r.entry == entry) {
            let k = key.render(values(r));
            let v = value.render(values(r));
            if r.outcome == Outcome::Ok {
                acked.insert(k.clone(), v.clone());
            }
            sent.entry(k).or_default().push(v);
        }
        let reads = futures_util::stream::iter(acked.keys().cloned())
            .map(|k| async move {
                let got = client
                    .call::<KvValue>(Request::KvGet { key: k.clone() })
                    .await;
                (k, got)
            })
            .buffer_unordered(READ_BACK_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut wrong = Vec::new();
        for (k, got) in reads {
            let problem = match got {
                Err(e) => Some(format!("{k}: cannot read it back: {e}")),
                Ok(KvValue { value: None, .. }) => Some(format!("{k} is missing")),
                Ok(KvValue {
                    value: Some(bytes), ..
                }) => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let written = &sent[&k];
                    let fits = if written.len() == 1 {
                        text == acked[&k]
                    } else {
                        written.contains(&text)
                    };
                    (!fits).then(|| format!("{k} holds `{text}`, not `{}`", acked[&k]))
                }
            };
            wrong.extend(problem);
        }
        wrong.sort();
        let ok = wrong.is_empty();
        checks.push(Check {
            what: format!(
                "{}: {} acknowledged keys read back",
                w.action.label(),
                acked.len()
            ),
            ok,
            detail: if ok {
                "all there".into()
            } else {
                shown(&wrong)
            },
        });
    }
    checks
}

fn shown(items: &[String]) -> String {
    let mut text = items[..items.len().min(SHOWN)].join("; ");
    if items.len() > SHOWN {
        let _ = write!(text, "; and {} more", items.len() - SHOWN);
    }
    text
}

/// A command's output as the CLI prints it: a string as is, anything else as JSON.
fn output_text(out: &CommandOutput) -> String {
    out.output.as_str().map_or_else(
        || serde_json::to_string(&out.output).unwrap_or_default(),
        str::to_owned,
    )
}

/// Runs a workload entry's `verify` command and checks its output.
async fn verify(client: &Client, v: &Verify, entry: usize, records: &[Record]) -> Check {
    let mine: Vec<&Record> = records.iter().filter(|r| r.entry == entry).collect();
    let acked: Vec<&Record> = mine
        .iter()
        .copied()
        .filter(|r| r.outcome == Outcome::Ok)
        .collect();
    let totals = Values {
        acked: acked.len() as u64,
        sent: mine.len() as u64,
        ..Values::default()
    };
    let mut what = format!("/{}", v.name);
    for a in &v.args {
        what.push(' ');
        what.push_str(a);
    }
    let request = Request::InvokeCommand {
        name: v.name.clone(),
        args: v.args.clone(),
    };
    let output = match client.call::<CommandOutput>(request).await {
        Ok(out) => output_text(&out),
        Err(e) => {
            return Check {
                what,
                ok: false,
                detail: format!("it failed: {}", astrid::error_chain(&e)),
            };
        }
    };
    let mut problems = Vec::new();
    let mut passed = Vec::new();
    if let Some(equals) = &v.equals {
        let want = equals.render(totals);
        if output.trim() == want.trim() {
            passed.push(format!("= {want}"));
        } else {
            problems.push(format!(
                "answered `{}`, not `{want}` ({equals})",
                clip(&output)
            ));
        }
    }
    if let Some(at_least) = &v.at_least {
        let want = at_least.render(totals);
        match (output.trim().parse::<i128>(), want.trim().parse::<i128>()) {
            (Ok(got), Ok(min)) if got >= min => passed.push(format!(">= {want}")),
            (Ok(got), Ok(_)) => {
                problems.push(format!("answered {got}, less than {want} ({at_least})"));
            }
            _ => problems.push(format!(
                "`{}` or `{want}` is not an integer ({at_least})",
                clip(&output)
            )),
        }
    }
    if let Some(line) = &v.contains_line {
        let lines: std::collections::HashSet<&str> = output.lines().collect();
        let missing: Vec<String> = acked
            .iter()
            .map(|r| {
                line.render(Values {
                    n: r.n,
                    client: r.client,
                    ..Values::default()
                })
            })
            .filter(|l| !lines.contains(l.as_str()))
            .map(|l| format!("`{l}` is missing"))
            .collect();
        if missing.is_empty() {
            passed.push(format!("has the {} acknowledged lines", acked.len()));
        } else {
            problems.push(format!(
                "{} of {} acknowledged lines missing: {}",
                missing.len(),
                acked.len(),
                shown(&missing)
            ));
        }
    }
    what.push_str(": ");
    what.push_str(&passed.join(", "));
    if problems.is_empty() {
        Check {
            what,
            ok: true,
            detail: "holds".into(),
        }
    } else {
        Check {
            what: what.trim_end_matches([':', ' ']).to_owned(),
            ok: false,
            detail: problems.join("; "),
        }
    }
}

/// At most 200 characters of `text`, for messages.
fn clip(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// A seed when neither the plan nor `--seed` gives one: from the clock and the pid (it is
/// printed and in the report, to replay the schedule).
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let low = u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or_default();
    let mut rng = schedule::Rng::new(low ^ u64::from(std::process::id()).rotate_left(32));
    rng.next_u64()
}

/// A fresh home and workspace (`--fresh`), with the plan's capsules in the home and its
/// MCP servers in the home's `mcp.toml`; removed when dropped.
struct Fresh {
    dir: tempfile::TempDir,
}

impl Fresh {
    fn new(plan: &Plan) -> Result<Self, CliError> {
        let dir = tempfile::Builder::new()
            .prefix("astrid-chaos-")
            .tempdir_in("/tmp")
            .map_err(ChaosError::Fresh)?;
        let capsules = dir.path().join("home").join("capsules");
        std::fs::create_dir_all(&capsules).map_err(ChaosError::Fresh)?;
        std::fs::create_dir_all(dir.path().join("workspace")).map_err(ChaosError::Fresh)?;
        for (i, folder) in plan.capsules.iter().enumerate() {
            copy_capsule(folder, &capsules).map_err(|e| ChaosError::CapsuleFolder {
                file: plan.file.clone(),
                key: format!("capsules[{i}]"),
                folder: folder.clone(),
                reason: e.to_string(),
            })?;
        }
        if !plan.mcp.is_empty() {
            let servers: Vec<toml::Value> = plan
                .mcp
                .iter()
                .map(|m| {
                    let mut table = toml::Table::new();
                    table.insert("name".into(), m.name.clone().into());
                    table.insert("command".into(), m.command.clone().into());
                    let args: Vec<toml::Value> = m.args.iter().map(|a| a.clone().into()).collect();
                    table.insert("args".into(), args.into());
                    toml::Value::Table(table)
                })
                .collect();
            let mut file = toml::Table::new();
            file.insert("server".into(), servers.into());
            std::fs::write(dir.path().join("home").join("mcp.toml"), file.to_string())
                .map_err(ChaosError::Fresh)?;
        }
        Ok(Self { dir })
    }

    /// The global options with this home and workspace.
    fn global(&self, global: &Global) -> Global {
        Global {
            home: Some(self.dir.path().join("home")),
            session: uuid::Uuid::nil(),
            workspace: Some(self.dir.path().join("workspace")),
            idle_grace: global.idle_grace,
            json: global.json,
        }
    }
}

/// Copies the files of capsule folder `src` (not its subfolders: sources and build output
/// are not needed to run it) into `root/<folder name>`.
fn copy_capsule(src: &Path, root: &Path) -> std::io::Result<()> {
    let name = src
        .canonicalize()?
        .file_name()
        .map(ToOwned::to_owned)
        .ok_or_else(|| std::io::Error::other("a folder without a name"))?;
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
        }
    }
    Ok(())
}
