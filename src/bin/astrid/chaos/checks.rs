//! The checks around a chaos run: before it, that the daemon has what the plan names (each
//! rule's target, each capsule, command and MCP server; a missing one is named by its key);
//! after it, that every acknowledged write is there (keys read back, `verify` commands).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use astrid::client::Client;
use astrid::protocol::{
    CommandInfo, CommandOutput, KvValue, McpServerInfo, McpServerState, NodeKind, Request, TreeNode,
};
use futures_util::StreamExt as _;

use super::ChaosError;
use super::drive::{Outcome, Record, Run};
use super::plan::{Action, Plan, Verify};
use super::report::Check;
use super::template::Values;
use crate::CliError;

/// Longest wait for the plan's MCP servers to be running before the run.
const MCP_READY: Duration = Duration::from_secs(15);
/// Acknowledged keys read back at once.
const READ_BACK_IN_FLIGHT: usize = 32;
/// Wrong keys or values a check names at most.
const SHOWN: usize = 5;

/// Checks that the plan's targets, capsules and commands are there; returns each command's
/// capsule.
pub(super) async fn preflight(
    client: &Client,
    plan: &Plan,
) -> Result<HashMap<String, String>, CliError> {
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

/// Reads back every key an acknowledged `kv_put` wrote: it must hold the value of that
/// write, or, for a key written more than once, one of the values written to it.
pub(super) async fn read_back(client: &Client, plan: &Plan, run: &Run) -> Vec<Check> {
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
pub(super) async fn verify(client: &Client, v: &Verify, entry: usize, records: &[Record]) -> Check {
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
