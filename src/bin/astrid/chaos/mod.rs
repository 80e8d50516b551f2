//! `astrid chaos PLAN.toml`: runs a chaos plan against the workspace's daemon (or one of its
//! own, with `--fresh`) and reports. The steps, each in a module of its own: the plan file
//! ([`plan`], with [`template`]), the fault schedule from the seed ([`schedule`]), the home
//! of a `--fresh` run ([`fresh`]), the checks before and after the run ([`checks`]: targets,
//! capsules, commands and MCP servers present; acknowledged writes read back), the run
//! ([`drive`]), and the report ([`report`]); this file connects them: the daemon, fault
//! injection accepted, the tree settled after the run, the audit chain and the daemon up.
//!
//! Exit status: 0 when every invariant holds, [`EXIT_INVARIANT`] when one fails, 1 when the
//! plan cannot run (a bad plan, no daemon, fault injection refused).

mod checks;
mod drive;
mod fresh;
mod plan;
mod report;
mod schedule;
mod template;

use std::path::PathBuf;
use std::time::Duration;

use astrid::client::{Client, ClientError};
use astrid::protocol::{
    ChildState, ErrorCode, Fault, FaultInjected, NodeKind, Request, TreeNode, Verification,
};

use self::checks::{preflight, read_back, verify};
use self::fresh::Fresh;
use self::plan::{End, MAX_DURATION, MIN_DURATION, Plan, PlanError};
use self::report::{Inputs, Report};
use crate::CliError;
use crate::args::{ChaosArgs, Global};
use crate::daemon::{Mode, Target};

/// Exit status when an invariant fails.
pub(crate) const EXIT_INVARIANT: u8 = 3;
/// Longest wait after the run for restarts to finish (no node restarting or stopping).
const SETTLE: Duration = Duration::from_secs(10);
/// The actor name of the probe that asks whether the daemon accepts faults: no actor has
/// it, so a daemon that accepts faults refuses it as unknown and injects nothing.
const PROBE: &str = "astrid-chaos:probe";

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
