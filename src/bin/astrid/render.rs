//! Human-readable output of results; `--json` bypasses this file entirely.

use std::fmt::Write as _;
use std::time::Duration;

use astrid::protocol::{
    AuditEntry, CapsuleInfo, CapsuleMetadata, CommandInfo, CommandOutput, ConfigReport, Event,
    Grant, McpReloadReport, McpServerInfo, McpToolInfo, McpToolResult, PolicyRule, PruneReport,
    ReloadReport, Status, TreeNode, TrustInfo, TrustReport, TrustState,
};

fn duration(ms: u64) -> String {
    // Whole seconds are enough for people; under a second, show milliseconds.
    if ms < 1000 {
        return format!("{ms}ms");
    }
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

fn or_dash(s: Option<&str>) -> &str {
    s.unwrap_or("-")
}

pub(crate) fn status(s: &Status) -> String {
    let mut out = String::new();
    let mode = match s.idle_grace_ms {
        Some(grace) if s.ephemeral => {
            format!(
                "ephemeral (exits {} after the last client leaves)",
                duration(grace)
            )
        }
        _ if s.service_manager => "persistent, run by a service manager (systemd)".to_owned(),
        _ => "persistent".to_owned(),
    };
    let capsules = s
        .capsules
        .iter()
        .map(|c| format!("{} ({})", c.name, state_word(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let bus = s.bus.as_ref().map_or_else(
        || "unavailable".to_owned(),
        |b| {
            format!(
                "{} published, {} delivered, {} dropped, {} subscribers",
                b.published,
                b.delivered,
                b.dropped,
                b.subscribers.len()
            )
        },
    );
    let _ = writeln!(out, "astrid-daemon {} (protocol {})", s.version, s.protocol);
    let rows = [
        ("pid", s.pid.to_string()),
        ("uptime", duration(s.uptime_ms)),
        ("session", format!("{} ({})", s.session, s.session_id)),
        ("workspace", s.workspace.clone()),
        ("mode", mode),
        ("socket", s.socket.clone()),
        ("clients", s.connected_clients.to_string()),
        ("capsules", capsules),
        ("events", bus),
        (
            "faults",
            if s.fault_injection {
                "injection allowed"
            } else {
                "injection disabled"
            }
            .to_owned(),
        ),
    ];
    for (key, value) in rows {
        let _ = writeln!(out, "  {key:<10} {value}");
    }
    if let Some(trust) = &s.trust {
        let _ = writeln!(out, "  {:<10} {}", "trust", trust_line(trust));
    }
    if !s.unavailable.is_empty() {
        let _ = writeln!(out, "  {:<10} {}", "degraded", s.unavailable.join(", "));
    }
    out
}

fn state_word(c: &CapsuleInfo) -> String {
    serde_json::to_value(c.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub(crate) fn capsules(list: &[CapsuleInfo]) -> String {
    let mut out = format!(
        "{:<24} {:<10} {:<11} {:<10} {}\n",
        "NAME", "VERSION", "STATE", "ORIGIN", "NOTE"
    );
    for c in list {
        let origin = serde_json::to_value(c.origin)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let note = c
            .error
            .clone()
            .or_else(|| c.description.clone())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<11} {:<10} {}",
            c.name,
            or_dash(c.version.as_deref()),
            state_word(c),
            origin,
            note
        );
    }
    out
}

pub(crate) fn commands(list: &[CommandInfo]) -> String {
    let mut out = String::new();
    for c in list {
        let _ = writeln!(out, "/{:<14} {}  [{}]", c.name, c.description, c.capsule);
    }
    if list.is_empty() {
        out.push_str("no commands\n");
    }
    out
}

/// A command's output: a string as is, anything else as JSON.
pub(crate) fn mcp_servers(list: &[McpServerInfo]) -> String {
    let mut out = format!(
        "{:<20} {:<11} {:>8} {:>6} {:>8}  {}\n",
        "NAME", "STATE", "RESTARTS", "TOOLS", "PID", "NOTE"
    );
    for s in list {
        let state = serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let pid = s.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let note = s
            .error
            .clone()
            .or_else(|| s.server_info.clone())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<20} {:<11} {:>8} {:>6} {:>8}  {}",
            or_dash(Some(&s.name).filter(|n| !n.is_empty()).map(String::as_str)),
            state,
            s.restarts,
            s.tools,
            pid,
            note
        );
    }
    out
}

pub(crate) fn mcp_tools(list: &[McpToolInfo]) -> String {
    let mut out = String::new();
    for t in list {
        let _ = writeln!(
            out,
            "{}/{}  {}",
            t.server,
            t.name,
            t.description.as_deref().unwrap_or("")
        );
    }
    out
}

/// A tool's result: its text content as is, other content and structured content as JSON.
pub(crate) fn mcp_result(result: &McpToolResult) -> String {
    let mut out = String::new();
    for block in &result.content {
        let text = block
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("text")))
            .and_then(|(_, v)| v.as_str());
        if let Some(text) = text {
            let _ = writeln!(out, "{text}");
        } else {
            let json = serde_json::to_string(block).unwrap_or_else(|_| format!("{block:?}"));
            let _ = writeln!(out, "{json}");
        }
    }
    if result.content.is_empty()
        && let Some(structured) = &result.structured
    {
        let json =
            serde_json::to_string_pretty(structured).unwrap_or_else(|_| format!("{structured:?}"));
        let _ = writeln!(out, "{json}");
    }
    out
}

pub(crate) fn output(out: &CommandOutput) -> String {
    if let Some(text) = out.output.as_str() {
        return format!("{text}\n");
    }
    let json =
        serde_json::to_string_pretty(&out.output).unwrap_or_else(|_| format!("{:?}", out.output));
    format!("{json}\n")
}

pub(crate) fn metadata(list: &[CapsuleMetadata]) -> String {
    let mut out = String::new();
    for m in list {
        let _ = writeln!(out, "{} {}", m.name, or_dash(m.version.as_deref()));
        if let Some(d) = &m.description {
            let _ = writeln!(out, "  {d}");
        }
        let _ = writeln!(out, "  path: {}", m.path.as_deref().unwrap_or("(built in)"));
        if let Some(o) = &m.overrides {
            let _ = writeln!(out, "  overrides: {o}");
        }
        for c in &m.commands {
            let _ = writeln!(out, "  command /{}: {}", c.name, c.description);
        }
        for p in &m.providers {
            let _ = writeln!(out, "  provider {} (priority {})", p.topic, p.priority);
        }
        for i in &m.interceptors {
            let _ = writeln!(out, "  interceptor {} (priority {})", i.topic, i.priority);
        }
        for s in &m.settings {
            let state = match (s.set, s.required) {
                (true, _) => "set",
                (false, true) => "not set, required",
                (false, false) => "not set, has a default",
            };
            let secret = if s.secret { ", secret" } else { "" };
            let _ = writeln!(out, "  setting {} ({state}{secret})", s.name);
        }
    }
    out
}

/// What a reload did, then the listing after it.
fn changes(
    added: &[String],
    removed: &[String],
    changed: &[String],
    unchanged: &[String],
) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    format!(
        "added: {}\nremoved: {}\nchanged: {}\nunchanged: {}\n\n",
        list(added),
        list(removed),
        list(changed),
        list(unchanged),
    )
}

pub(crate) fn reload(r: &ReloadReport) -> String {
    changes(&r.added, &r.removed, &r.changed, &r.unchanged) + &capsules(&r.capsules)
}

pub(crate) fn mcp_reload(r: &McpReloadReport) -> String {
    changes(&r.added, &r.removed, &r.changed, &r.unchanged) + &mcp_servers(&r.servers)
}

fn trust_word(state: TrustState) -> &'static str {
    match state {
        TrustState::Trusted => "trusted",
        TrustState::Changed => "changed since trusted",
        TrustState::Untrusted => "not trusted",
        TrustState::Home => "the home (trusted)",
        TrustState::None => "nothing to trust",
    }
}

/// A workspace's trust in one line: the state, and why when it is not trusted.
fn trust_line(t: &TrustInfo) -> String {
    match (&t.message, t.allows()) {
        (Some(why), false) => format!("{}: {why}", trust_word(t.state)),
        _ => trust_word(t.state).to_owned(),
    }
}

/// What `astrid trust` and `astrid untrust` did.
pub(crate) fn trust_report(r: &TrustReport) -> String {
    let t = &r.trust;
    let mut out = format!("{}: {}\n", t.path, trust_line(t));
    if t.state == TrustState::Trusted {
        let files = if t.files.is_empty() {
            "no files yet".to_owned()
        } else {
            t.files.join(", ")
        };
        let _ = writeln!(out, "trusted with: {files}");
    }
    if r.removed {
        out.push_str("no longer trusted\n");
    }
    if let Some(c) = &r.capsules {
        let _ = write!(out, "\ncapsules\n{}", reload(c));
    }
    if let Some(m) = &r.mcp {
        let _ = write!(out, "\nMCP servers\n{}", mcp_reload(m));
    }
    out
}

/// `astrid trust --list`.
pub(crate) fn trusted(list: &[TrustInfo]) -> String {
    if list.is_empty() {
        return "no workspace is trusted\n".to_owned();
    }
    let mut out = String::new();
    for t in list {
        let _ = writeln!(out, "{}  {}", t.path, trust_line(t));
    }
    out
}

pub(crate) fn tree(root: &TreeNode) -> String {
    let mut out = format!(
        "{:<30} {:<10} {:<10} {:>8}  {}\n",
        "NAME", "RESTART", "STATE", "RESTARTS", "DETAIL"
    );
    tree_lines(&mut out, root, &mut node);
    out
}

/// One line of `astrid ps`.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the shape `tree_lines` calls"
)]
fn node(out: &mut String, n: &TreeNode, name: &str) {
    let restart = n.restart.map_or_else(
        || "-".to_owned(),
        |r| {
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        },
    );
    let mut detail = Vec::new();
    if let Some(d) = &n.detail {
        detail.push(d.clone());
    }
    if let Some(up) = n.uptime_ms {
        detail.push(format!("up {}", duration(up)));
    }
    if let Some(f) = &n.last_failure {
        detail.push(format!(
            "last failure: {} ({} ago)",
            f.reason,
            duration(f.ago_ms)
        ));
    }
    let _ = writeln!(
        out,
        "{name:<30} {restart:<10} {:<10} {:>8}  {}",
        n.state.as_str(),
        n.restarts,
        detail.join("; ")
    );
}

/// Draws `root` and its descendants one line each, as `astrid ps` and `astrid top` do:
/// `row` writes the line of a node given its name behind the branches that lead to it.
pub(crate) fn tree_lines(
    out: &mut String,
    root: &TreeNode,
    row: &mut impl FnMut(&mut String, &TreeNode, &str),
) {
    fn walk(
        out: &mut String,
        n: &TreeNode,
        lead: &str,
        child_lead: &str,
        row: &mut impl FnMut(&mut String, &TreeNode, &str),
    ) {
        row(out, n, &format!("{lead}{}", n.name));
        let last = n.children.len().saturating_sub(1);
        for (i, c) in n.children.iter().enumerate() {
            let (branch, next) = if i == last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            walk(
                out,
                c,
                &format!("{child_lead}{branch}"),
                &format!("{child_lead}{next}"),
                row,
            );
        }
    }
    walk(out, root, "", "", row);
}

pub(crate) fn grants(list: &[Grant]) -> String {
    if list.is_empty() {
        return "no capabilities granted\n".to_owned();
    }
    let mut out = format!("{:<20} {:<9} {}\n", "CAPSULE", "SOURCE", "RESOURCE");
    for g in list {
        let source = serde_json::to_value(g.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(out, "{:<20} {:<9} {}", g.subject, source, g.resource);
    }
    out
}

pub(crate) fn audit(entries: &[AuditEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let _ = writeln!(
            out,
            "#{:<6} {} {} {} {} -> {}",
            e.seq,
            e.time_ms,
            e.actor,
            e.action,
            if e.target.is_empty() { "-" } else { &e.target },
            e.outcome
        );
    }
    out
}

pub(crate) fn config(report: &ConfigReport) -> String {
    let mut out = format!("# {}\n", report.file);
    let width = report
        .settings
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for s in &report.settings {
        let _ = writeln!(out, "{:<width$}  {:<12} ({})", s.name, s.value, s.source);
    }
    let set: Vec<&PolicyRule> = report
        .audit_policy
        .iter()
        .filter(|r| r.source != "default")
        .collect();
    if !set.is_empty() {
        out.push_str("[audit_policy]\n");
        for r in set {
            let _ = writeln!(out, "{} = \"{}\"  (config)", r.request, r.level);
        }
    }
    out
}

pub(crate) fn prune(r: &PruneReport) -> String {
    let so_far = r.pruned.map_or_else(String::new, |p| {
        format!("; entries {}..={} pruned in all", p.first, p.last)
    });
    if r.removed == 0 {
        format!(
            "nothing to prune: the log is within its retention ({} entries{so_far})\n",
            r.kept
        )
    } else {
        format!(
            "pruned {} entries by {}: {} kept, the anchor included{so_far}\n",
            r.removed, r.reason, r.kept
        )
    }
}

pub(crate) fn audit_policy(rules: &[PolicyRule]) -> String {
    let width = rules.iter().map(|r| r.request.len()).max().unwrap_or(0);
    let mut out = String::new();
    for r in rules {
        let _ = writeln!(
            out,
            "{:<width$}  {:<8}  {:<7}  {}",
            r.request, r.level, r.source, r.why
        );
    }
    out
}

pub(crate) fn event(e: &Event) -> String {
    let payload = serde_json::to_string(&e.payload).unwrap_or_else(|_| "?".into());
    format!("[{}] {} from {}: {}", e.seq, e.topic, e.source, payload)
}
