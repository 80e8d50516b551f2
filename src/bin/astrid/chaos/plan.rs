//! Chaos plan files: the TOML as written ([`RawPlan`], strict: an unknown key is an error),
//! and the checked [`Plan`] the runner uses, with every bound a plan may ask for. Each
//! error names the file, the key (as a path, `workload[1].rate`) and what is wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use astrid::protocol::Fault;
use astrid_actors::settings::{FieldError, TomlError, parse_toml, within};
use serde::Deserialize;

use super::template::{Placeholder, Template};

/// Longest run (`duration`), and the horizon of the fault schedule of a run bounded by
/// `requests` instead.
pub(crate) const MAX_DURATION: Duration = Duration::from_mins(10);
/// Shortest run.
pub(crate) const MIN_DURATION: Duration = Duration::from_millis(100);
/// Most requests in one run (`requests`; a run bounded by `duration` stops sending there
/// too).
pub(crate) const MAX_REQUESTS: u64 = 1_000_000;
/// Most `[[workload]]` entries.
pub(crate) const MAX_WORKLOADS: usize = 16;
/// Most clients of one workload entry.
pub(crate) const MAX_CLIENTS: u32 = 64;
/// Most clients of all entries together.
pub(crate) const MAX_TOTAL_CLIENTS: u32 = 256;
/// Highest `rate`, requests per second per client.
pub(crate) const MAX_RATE: f64 = 1000.0;
/// Default `rate`.
pub(crate) const DEFAULT_RATE: f64 = 10.0;
/// Most `[[fault]]` rules.
pub(crate) const MAX_RULES: usize = 32;
/// Most times in one rule's `at`.
pub(crate) const MAX_AT: usize = 1000;
/// Default length of a tick, the unit of `probability`.
pub(crate) const DEFAULT_TICK: Duration = Duration::from_millis(100);
/// Bounds of `tick` and `every`.
pub(crate) const MIN_TICK: Duration = Duration::from_millis(10);
/// Longest `tick`.
pub(crate) const MAX_TICK: Duration = Duration::from_secs(10);
/// Default reply deadline: a request without a reply after this long counts as unanswered.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// Bounds of `deadline`.
pub(crate) const DEADLINE_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_mins(1));
/// Most capsule folders in `capsules`.
pub(crate) const MAX_CAPSULES: usize = 32;
/// Most MCP servers in `[[mcp]]`.
pub(crate) const MAX_MCP: usize = 8;
/// Longest template (a command line, a key, a value, a topic).
pub(crate) const MAX_TEMPLATE: usize = 1024;

/// A plan file's content as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    seed: Option<u64>,
    duration: Option<String>,
    requests: Option<u64>,
    deadline: Option<String>,
    tick: Option<String>,
    #[serde(default)]
    capsules: Vec<String>,
    #[serde(default)]
    mcp: Vec<RawMcp>,
    #[serde(default)]
    workload: Vec<RawWorkload>,
    #[serde(default)]
    fault: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMcp {
    name: String,
    command: String,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    command: Option<String>,
    request: Option<String>,
    key: Option<String>,
    value: Option<String>,
    topic: Option<String>,
    payload: Option<String>,
    clients: Option<u32>,
    rate: Option<f64>,
    verify: Option<RawVerify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    command: String,
    equals: Option<String>,
    at_least: Option<String>,
    contains_line: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    target: String,
    fault: toml::Value,
    at: Option<Vec<String>>,
    every: Option<String>,
    probability: Option<f64>,
    start: Option<String>,
    times: Option<u32>,
}

/// A checked plan.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The file it came from.
    pub(crate) file: PathBuf,
    /// Seed of the fault schedule; `None` when the plan names none (the runner picks one).
    pub(crate) seed: Option<u64>,
    /// When the run ends.
    pub(crate) end: End,
    /// Reply deadline.
    pub(crate) deadline: Duration,
    /// Length of a tick (the unit of `probability`).
    pub(crate) tick: Duration,
    /// Capsule folders the plan needs, resolved against the plan's folder.
    pub(crate) capsules: Vec<PathBuf>,
    /// MCP servers the plan needs.
    pub(crate) mcp: Vec<McpServer>,
    /// What the clients send.
    pub(crate) workload: Vec<Workload>,
    /// When which faults are injected.
    pub(crate) rules: Vec<Rule>,
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum End {
    /// After this long.
    After(Duration),
    /// Once this many requests were sent (and answered or given up).
    Requests(u64),
}

impl End {
    /// The horizon of the fault schedule.
    pub(crate) fn horizon(self) -> Duration {
        match self {
            Self::After(d) => d,
            Self::Requests(_) => MAX_DURATION,
        }
    }
}

/// One `[[mcp]]` entry: an MCP server the plan needs (with `--fresh`, the fresh home's
/// `mcp.toml` lists it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct McpServer {
    /// Its name (`mcp:<name>` in the tree).
    pub(crate) name: String,
    /// The program: a path (relative: to the plan's folder), or a name looked up in `PATH`.
    pub(crate) command: String,
    /// Its arguments.
    pub(crate) args: Vec<String>,
}

/// One `[[workload]]` entry.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    /// What each request is.
    pub(crate) action: Action,
    /// Concurrent clients, each with a connection of its own.
    pub(crate) clients: u32,
    /// Requests per second per client (each client has one request in flight at most).
    pub(crate) rate: f64,
    /// What is checked at the end, for a command.
    pub(crate) verify: Option<Verify>,
}

/// What one request of a workload entry does.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// `InvokeCommand`.
    Command { name: String, args: Vec<Template> },
    /// `Ping`.
    Ping,
    /// `KvPut`; acknowledged keys are read back at the end.
    KvPut { key: Template, value: Template },
    /// `KvGet`.
    KvGet { key: Template },
    /// `Publish`, with a string payload.
    Publish { topic: Template, payload: Template },
}

impl Action {
    /// How the report names the entry.
    pub(crate) fn label(&self) -> String {
        match self {
            Self::Command { name, args } => {
                let mut text = format!("/{name}");
                for a in args {
                    text.push(' ');
                    text.push_str(&a.to_string());
                }
                text
            }
            Self::Ping => "ping".into(),
            Self::KvPut { key, .. } => format!("kv_put {key}"),
            Self::KvGet { key } => format!("kv_get {key}"),
            Self::Publish { topic, .. } => format!("publish {topic}"),
        }
    }
}

/// A workload command's check at the end of the run: `command` is run once and its output
/// (a string as is, anything else as compact JSON) must satisfy every condition given.
#[derive(Debug, Clone)]
pub(crate) struct Verify {
    /// The command, without the slash.
    pub(crate) name: String,
    /// Its arguments.
    pub(crate) args: Vec<String>,
    /// The output equals this (`{acked}`, `{sent}` filled in).
    pub(crate) equals: Option<Template>,
    /// The output is an integer at least this.
    pub(crate) at_least: Option<Template>,
    /// For every acknowledged request, this (`{n}`, `{client}` of that request) is a line of
    /// the output.
    pub(crate) contains_line: Option<Template>,
}

/// One `[[fault]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    /// Actor name, as `astrid ps` shows it.
    pub(crate) target: String,
    /// The fault.
    pub(crate) fault: Fault,
    /// When.
    pub(crate) when: When,
    /// At most this many times.
    pub(crate) times: Option<u32>,
    /// Whether the fault ends its target's incarnation ([`Fault::is_crash`]: `panic`,
    /// `stop`, `trap`), so that each injection must restart it once.
    pub(crate) crash: bool,
}

/// When a rule fires.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum When {
    /// At these times after the start.
    At(Vec<Duration>),
    /// At `start`, then every `every`.
    Every { every: Duration, start: Duration },
    /// At each tick from `start` on, with probability `p`.
    Probability { p: f64, start: Duration },
}

/// Why a plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("cannot read the plan {}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {message}", file.display())]
    Syntax { file: PathBuf, message: String },
    #[error("{}: `{key}`: {reason}", file.display())]
    Key {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

impl Plan {
    /// Reads and checks the plan in `file`.
    pub(crate) fn load(file: &Path) -> Result<Self, PlanError> {
        let text = std::fs::read_to_string(file).map_err(|source| PlanError::Read {
            file: file.to_owned(),
            source,
        })?;
        // Absolute, so that what is resolved against it still holds from another folder
        // (an MCP server's command in a fresh home's `mcp.toml`).
        let base =
            std::path::absolute(file.parent().unwrap_or(Path::new(""))).map_err(|source| {
                PlanError::Read {
                    file: file.to_owned(),
                    source,
                }
            })?;
        Self::parse(&text, file, &base)
    }

    /// Checks plan text; `file` names it in errors, capsule folders are taken from `base`.
    pub(crate) fn parse(text: &str, file: &Path, base: &Path) -> Result<Self, PlanError> {
        let raw: RawPlan = parse_toml(text).map_err(|e| match e {
            TomlError::Syntax(message) => PlanError::Syntax {
                file: file.to_owned(),
                message,
            },
            TomlError::Field(f) => key_error(file, f),
        })?;
        let mut plan = check(raw, base).map_err(|f| key_error(file, f))?;
        file.clone_into(&mut plan.file);
        Ok(plan)
    }
}

fn key_error(file: &Path, f: FieldError) -> PlanError {
    PlanError::Key {
        file: file.to_owned(),
        key: f.field,
        reason: f.reason,
    }
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError::new(key, reason)
}

fn check(raw: RawPlan, base: &Path) -> Result<Plan, FieldError> {
    let end = match (&raw.duration, raw.requests) {
        (Some(_), Some(_)) => {
            return Err(err("requests", "give `duration` or `requests`, not both"));
        }
        (None, None) => {
            return Err(err(
                "duration",
                "missing: give `duration` (e.g. \"10s\") or `requests` (a count)",
            ));
        }
        (Some(text), None) => End::After(within("duration", text, (MIN_DURATION, MAX_DURATION))?),
        (None, Some(n)) => {
            if n == 0 || n > MAX_REQUESTS {
                return Err(err(
                    "requests",
                    format!("{n} is outside 1..={MAX_REQUESTS}"),
                ));
            }
            End::Requests(n)
        }
    };
    let deadline = match &raw.deadline {
        Some(text) => within("deadline", text, DEADLINE_RANGE)?,
        None => DEFAULT_DEADLINE,
    };
    let tick = match &raw.tick {
        Some(text) => within("tick", text, (MIN_TICK, MAX_TICK))?,
        None => DEFAULT_TICK,
    };
    if raw.capsules.len() > MAX_CAPSULES {
        return Err(err(
            "capsules",
            format!("{} folders, more than {MAX_CAPSULES}", raw.capsules.len()),
        ));
    }
    let capsules = raw.capsules.iter().map(|c| base.join(c)).collect();
    let mcp = check_mcp(raw.mcp, base)?;
    if raw.workload.is_empty() {
        return Err(err(
            "workload",
            "missing: at least one [[workload]] entry (a `command` or a `request`)",
        ));
    }
    if raw.workload.len() > MAX_WORKLOADS {
        return Err(err(
            "workload",
            format!("{} entries, more than {MAX_WORKLOADS}", raw.workload.len()),
        ));
    }
    let mut workload = Vec::new();
    for (i, w) in raw.workload.into_iter().enumerate() {
        workload.push(check_workload(&format!("workload[{i}]"), w)?);
    }
    let total: u32 = workload.iter().map(|w| w.clients).sum();
    if total > MAX_TOTAL_CLIENTS {
        return Err(err(
            "workload",
            format!("{total} clients in all, more than {MAX_TOTAL_CLIENTS}"),
        ));
    }
    if raw.fault.len() > MAX_RULES {
        return Err(err(
            "fault",
            format!("{} rules, more than {MAX_RULES}", raw.fault.len()),
        ));
    }
    let mut rules = Vec::new();
    for (i, r) in raw.fault.into_iter().enumerate() {
        rules.push(check_rule(&format!("fault[{i}]"), r, tick)?);
    }
    Ok(Plan {
        file: PathBuf::new(),
        seed: raw.seed,
        end,
        deadline,
        tick,
        capsules,
        mcp,
        workload,
        rules,
    })
}

/// The `[[mcp]]` servers, commands with a `/` resolved against `base`.
fn check_mcp(servers: Vec<RawMcp>, base: &Path) -> Result<Vec<McpServer>, FieldError> {
    if servers.len() > MAX_MCP {
        return Err(err(
            "mcp",
            format!("{} servers, more than {MAX_MCP}", servers.len()),
        ));
    }
    let mut mcp = Vec::new();
    for (i, m) in servers.into_iter().enumerate() {
        if m.name.trim().is_empty() {
            return Err(err(format!("mcp[{i}].name"), "empty"));
        }
        if m.command.trim().is_empty() {
            return Err(err(format!("mcp[{i}].command"), "empty"));
        }
        let command = if m.command.contains('/') {
            base.join(&m.command).to_string_lossy().into_owned()
        } else {
            m.command
        };
        mcp.push(McpServer {
            name: m.name,
            command,
            args: m.args,
        });
    }
    Ok(mcp)
}

/// The placeholders of a request's templates.
const REQUEST: &[Placeholder] = &[Placeholder::N, Placeholder::Client];
/// The placeholders of a whole-run check.
const TOTALS: &[Placeholder] = &[Placeholder::Acked, Placeholder::Sent];

fn template(key: &str, text: &str, allowed: &[Placeholder]) -> Result<Template, FieldError> {
    if text.len() > MAX_TEMPLATE {
        return Err(err(
            key,
            format!("{} bytes, more than {MAX_TEMPLATE}", text.len()),
        ));
    }
    Template::parse(text, allowed).map_err(|reason| err(key, reason))
}

/// A command line split at spaces: the name (a leading `/` dropped) and its arguments.
fn command_line(key: &str, text: &str) -> Result<(String, Vec<String>), FieldError> {
    let mut words = text.split_whitespace();
    let name = words
        .next()
        .map(|w| w.strip_prefix('/').unwrap_or(w))
        .filter(|w| !w.is_empty())
        .ok_or_else(|| err(key, "empty: give a command such as \"/echo hi {n}\""))?;
    if name.contains(['{', '}']) {
        return Err(err(key, "the command name cannot hold a placeholder"));
    }
    Ok((name.to_owned(), words.map(str::to_owned).collect()))
}

#[allow(clippy::too_many_lines, reason = "one match over the kinds of request")]
fn check_workload(at: &str, w: RawWorkload) -> Result<Workload, FieldError> {
    let key = |k: &str| format!("{at}.{k}");
    let clients = w.clients.unwrap_or(1);
    if !(1..=MAX_CLIENTS).contains(&clients) {
        return Err(err(
            key("clients"),
            format!("{clients} is outside 1..={MAX_CLIENTS}"),
        ));
    }
    let rate = w.rate.unwrap_or(DEFAULT_RATE);
    if !(rate > 0.0 && rate <= MAX_RATE) {
        return Err(err(
            key("rate"),
            format!("{rate} is outside (0, {MAX_RATE}] requests per second per client"),
        ));
    }
    // Which of the optional keys each kind takes.
    let present = [
        ("key", w.key.is_some()),
        ("value", w.value.is_some()),
        ("topic", w.topic.is_some()),
        ("payload", w.payload.is_some()),
        ("verify", w.verify.is_some()),
    ];
    let only = |allowed: &[&str], kind: &str| -> Result<(), FieldError> {
        match present
            .iter()
            .find(|(name, given)| *given && !allowed.contains(name))
        {
            Some((name, _)) => Err(err(key(name), format!("not a key of {kind}"))),
            None => Ok(()),
        }
    };
    let required = |value: Option<String>, name: &str, kind: &str| {
        value.ok_or_else(|| err(key(name), format!("missing: {kind} needs it")))
    };
    let action = match (w.command, w.request.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(err(key("request"), "give `command` or `request`, not both"));
        }
        (None, None) => {
            return Err(err(
                key("command"),
                "missing: give a `command` (\"/echo {n}\") or a `request` (ping, kv_put, \
                 kv_get, publish)",
            ));
        }
        (Some(line), None) => {
            only(&["verify"], "a command")?;
            let (name, words) = command_line(&key("command"), &line)?;
            let args = words
                .iter()
                .map(|word| template(&key("command"), word, REQUEST))
                .collect::<Result<_, _>>()?;
            Action::Command { name, args }
        }
        (None, Some("ping")) => {
            only(&[], "`request = \"ping\"`")?;
            Action::Ping
        }
        (None, Some("kv_put")) => {
            let kind = "`request = \"kv_put\"`";
            only(&["key", "value"], kind)?;
            let k = required(w.key, "key", kind)?;
            let value = w.value.unwrap_or_else(|| "{client}:{n}".into());
            Action::KvPut {
                key: template(&key("key"), &k, REQUEST)?,
                value: template(&key("value"), &value, REQUEST)?,
            }
        }
        (None, Some("kv_get")) => {
            let kind = "`request = \"kv_get\"`";
            only(&["key"], kind)?;
            let k = required(w.key, "key", kind)?;
            Action::KvGet {
                key: template(&key("key"), &k, REQUEST)?,
            }
        }
        (None, Some("publish")) => {
            let kind = "`request = \"publish\"`";
            only(&["topic", "payload"], kind)?;
            let topic = required(w.topic, "topic", kind)?;
            let payload = w.payload.unwrap_or_else(|| "{n}".into());
            Action::Publish {
                topic: template(&key("topic"), &topic, REQUEST)?,
                payload: template(&key("payload"), &payload, REQUEST)?,
            }
        }
        (None, Some(other)) => {
            return Err(err(
                key("request"),
                format!("unknown request `{other}`: use ping, kv_put, kv_get or publish"),
            ));
        }
    };
    let verify = match w.verify {
        None => None,
        Some(v) => Some(check_verify(&key("verify"), v)?),
    };
    Ok(Workload {
        action,
        clients,
        rate,
        verify,
    })
}

fn check_verify(at: &str, v: RawVerify) -> Result<Verify, FieldError> {
    let key = |k: &str| format!("{at}.{k}");
    let (name, args) = command_line(&key("command"), &v.command)?;
    if v.equals.is_none() && v.at_least.is_none() && v.contains_line.is_none() {
        return Err(err(
            at,
            "says nothing to check: give `equals`, `at_least` or `contains_line`",
        ));
    }
    Ok(Verify {
        name,
        args,
        equals: v
            .equals
            .map(|t| template(&key("equals"), &t, TOTALS))
            .transpose()?,
        at_least: v
            .at_least
            .map(|t| template(&key("at_least"), &t, TOTALS))
            .transpose()?,
        contains_line: v
            .contains_line
            .map(|t| template(&key("contains_line"), &t, REQUEST))
            .transpose()?,
    })
}

/// The fault of a rule: the CLI's text form (`trap`, `hang:2s`, `import:kv_put,fail=-5`),
/// or the wire form as a table (`{ hang = { millis = 2000 } }`), within the daemon's bounds.
fn rule_fault(key: &str, value: toml::Value) -> Result<Fault, FieldError> {
    let fault = match value {
        toml::Value::String(text) => match crate::fault::parse_fault(&text) {
            Ok(fault) => fault,
            Err(crate::CliError::BadFault(bad)) => {
                return Err(err(
                    key,
                    format!("`{}` is not a fault: {}", bad.text, bad.why),
                ));
            }
            Err(other) => return Err(err(key, other.to_string())),
        },
        table => {
            let shown = table.to_string();
            table.try_into::<Fault>().map_err(|e| {
                err(
                    key,
                    format!(
                        "{shown} is not a fault in the wire form, such as \
                         {{ hang = {{ millis = 2000 }} }} ({})",
                        e.to_string().trim()
                    ),
                )
            })?
        }
    };
    fault.validate().map_err(|reason| err(key, reason))?;
    Ok(fault)
}

fn check_rule(at: &str, r: RawRule, tick: Duration) -> Result<Rule, FieldError> {
    let key = |k: &str| format!("{at}.{k}");
    if r.target.trim().is_empty() {
        return Err(err(
            key("target"),
            "empty: name an actor as `astrid ps` shows it",
        ));
    }
    let fault = rule_fault(&key("fault"), r.fault)?;
    let span = (Duration::ZERO, MAX_DURATION);
    let start = r
        .start
        .as_deref()
        .map(|t| within(&key("start"), t, span))
        .transpose()?;
    let when = match (r.at, r.every, r.probability) {
        (Some(times), None, None) => {
            if start.is_some() {
                return Err(err(key("start"), "not with `at`"));
            }
            if times.is_empty() || times.len() > MAX_AT {
                return Err(err(
                    key("at"),
                    format!("{} times: give 1 to {MAX_AT}", times.len()),
                ));
            }
            let mut at_times = Vec::new();
            for (i, t) in times.iter().enumerate() {
                at_times.push(within(&format!("{}[{i}]", key("at")), t, span)?);
            }
            When::At(at_times)
        }
        (None, Some(every), None) => {
            let every = within(&key("every"), &every, (MIN_TICK, MAX_DURATION))?;
            When::Every {
                every,
                start: start.unwrap_or(every),
            }
        }
        (None, None, Some(p)) => {
            if !(0.0..=1.0).contains(&p) {
                return Err(err(key("probability"), format!("{p} is outside 0..=1")));
            }
            When::Probability {
                p,
                start: start.unwrap_or(tick),
            }
        }
        (None, None, None) => {
            return Err(err(
                key("at"),
                "missing: say when, with `at` (a list of times), `every` (a duration) or \
                 `probability` (per tick)",
            ));
        }
        _ => {
            return Err(err(
                at,
                "give one of `at`, `every` and `probability`, not several",
            ));
        }
    };
    if r.times == Some(0) {
        return Err(err(key("times"), "0: give at least 1, or leave it out"));
    }
    Ok(Rule {
        target: r.target,
        crash: fault.is_crash(),
        fault,
        when,
        times: r.times,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Plan, String> {
        Plan::parse(text, Path::new("p.toml"), Path::new("/plans")).map_err(|e| e.to_string())
    }

    const BASE: &str = "duration = \"2s\"\n[[workload]]\ncommand = \"/echo {n}\"\n";

    #[test]
    fn a_full_plan_parses_with_its_defaults() {
        let plan = parse(
            "seed = 7\nduration = \"3s\"\ncapsules = [\"../capsules/echo\"]\n\
             [[workload]]\ncommand = \"/note-add hello {client}-{n}\"\nclients = 4\nrate = 20\n\
             verify = { command = \"/note-count\", at_least = \"{acked}\" }\n\
             [[workload]]\nrequest = \"kv_put\"\nkey = \"k/{client}/{n}\"\n\
             [[fault]]\ntarget = \"capsule:notes\"\nfault = \"trap\"\nat = [\"1s\", \"2s\"]\n\
             [[fault]]\ntarget = \"store\"\nfault = { hang = { millis = 300 } }\nevery = \"1s\"\ntimes = 2\n\
             [[fault]]\ntarget = \"capsule:echo\"\nfault = \"hang:50ms\"\nprobability = 0.25\n",
        )
        .unwrap();
        assert_eq!(plan.seed, Some(7));
        assert_eq!(plan.end, End::After(Duration::from_secs(3)));
        assert_eq!(plan.deadline, DEFAULT_DEADLINE);
        assert_eq!(plan.tick, DEFAULT_TICK);
        assert_eq!(plan.capsules, [PathBuf::from("/plans/../capsules/echo")]);
        assert_eq!(plan.workload[0].clients, 4);
        assert_eq!(
            plan.workload[0].action.label(),
            "/note-add hello {client}-{n}"
        );
        assert!(plan.workload[0].verify.is_some());
        assert_eq!(plan.workload[1].clients, 1);
        assert!((plan.workload[1].rate - DEFAULT_RATE).abs() < f64::EPSILON);
        let Action::KvPut { value, .. } = &plan.workload[1].action else {
            panic!("{:?}", plan.workload[1].action)
        };
        assert_eq!(value.to_string(), "{client}:{n}");
        assert_eq!(plan.rules[0].fault, Fault::Trap);
        assert!(plan.rules[0].crash);
        assert_eq!(
            plan.rules[0].when,
            When::At(vec![Duration::from_secs(1), Duration::from_secs(2)])
        );
        assert_eq!(plan.rules[1].fault, Fault::Hang { millis: 300 });
        assert!(!plan.rules[1].crash);
        assert_eq!(plan.rules[1].times, Some(2));
        assert_eq!(
            plan.rules[1].when,
            When::Every {
                every: Duration::from_secs(1),
                start: Duration::from_secs(1)
            }
        );
        assert_eq!(plan.rules[2].fault, Fault::Hang { millis: 50 });
        assert_eq!(
            plan.rules[2].when,
            When::Probability {
                p: 0.25,
                start: DEFAULT_TICK
            }
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases = [
            ("bogus = 1\n", "p.toml: `bogus`: unknown field `bogus`"),
            (
                "duration = \"2s\"\n[[workload]]\ncommand = \"/echo\"\nspeed = 3\n",
                "p.toml: `workload[0].speed`: unknown field `speed`",
            ),
            (
                "duration = \"soon\"\n[[workload]]\nrequest = \"ping\"\n",
                "p.toml: `duration`: `soon` is not a duration",
            ),
            (
                "duration = \"11m\"\n[[workload]]\nrequest = \"ping\"\n",
                "p.toml: `duration`: 11m is outside 100ms..=10m",
            ),
            (
                "duration = \"2s\"\n[[workload]]\nrequest = \"ping\"\nclients = 65\n",
                "p.toml: `workload[0].clients`: 65 is outside 1..=64",
            ),
            (
                "duration = \"2s\"\n[[workload]]\nrequest = \"ping\"\nrate = 5000\n",
                "p.toml: `workload[0].rate`: 5000 is outside",
            ),
            (
                "duration = \"2s\"\n[[workload]]\nrequest = \"kv_put\"\n",
                "p.toml: `workload[0].key`: missing",
            ),
            (
                "duration = \"2s\"\n[[workload]]\nrequest = \"ping\"\ntopic = \"x\"\n",
                "p.toml: `workload[0].topic`: not a key of",
            ),
            (
                "duration = \"2s\"\n[[workload]]\ncommand = \"/echo {m}\"\n",
                "p.toml: `workload[0].command`: unknown placeholder `{m}`",
            ),
            (
                "requests = 10\nduration = \"1s\"\n[[workload]]\nrequest = \"ping\"\n",
                "p.toml: `requests`: give `duration` or `requests`, not both",
            ),
            ("seed = 1\n", "p.toml: `duration`: missing"),
            (
                "requests = 2000000\n[[workload]]\nrequest = \"ping\"\n",
                "p.toml: `requests`: 2000000 is outside 1..=1000000",
            ),
            (
                "duration = \"2s\"\n[[workload]]\nrequest = \"ping\"\n[[mcp]]\nname = \"x\"\n",
                "p.toml: `mcp[0]`: missing field `command`",
            ),
            (
                &format!("{BASE}[[fault]]\ntarget = \"bus\"\nfault = \"explode\"\nat = [\"1s\"]\n"),
                "p.toml: `fault[0].fault`: `explode` is not a fault: ",
            ),
            (
                &format!("{BASE}[[fault]]\ntarget = \"bus\"\nfault = \"panic\"\n"),
                "p.toml: `fault[0].at`: missing",
            ),
            (
                &format!(
                    "{BASE}[[fault]]\ntarget = \"bus\"\nfault = \"panic\"\nevery = \"1s\"\nprobability = 0.5\n"
                ),
                "p.toml: `fault[0]`: give one of",
            ),
            (
                &format!(
                    "{BASE}[[fault]]\ntarget = \"bus\"\nfault = \"panic\"\nprobability = 1.5\n"
                ),
                "p.toml: `fault[0].probability`: 1.5 is outside 0..=1",
            ),
            (
                &format!("{BASE}[[fault]]\ntarget = \"bus\"\nfault = \"panic\"\nevery = \"1ms\"\n"),
                "p.toml: `fault[0].every`: 1ms is outside 10ms..=10m",
            ),
            ("duration = \n", "p.toml: not valid TOML"),
        ];
        for (text, want) in cases {
            let got = parse(text).unwrap_err();
            assert!(got.starts_with(want), "{text:?}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn bounds_on_clients_in_all_and_on_rules() {
        let many = "[[workload]]\nrequest = \"ping\"\nclients = 64\n".repeat(5);
        let got = parse(&format!("duration = \"1s\"\n{many}")).unwrap_err();
        assert!(got.contains("320 clients in all, more than 256"), "{got}");
        let rules = "[[fault]]\ntarget = \"bus\"\nfault = \"panic\"\nat = [\"1s\"]\n".repeat(33);
        let got = parse(&format!("{BASE}{rules}")).unwrap_err();
        assert!(got.contains("`fault`: 33 rules, more than 32"), "{got}");
    }

    #[test]
    fn every_fault_kind_is_taken_in_text_or_wire_form_within_the_daemons_bounds() {
        let rule = |fault: &str| {
            parse(&format!(
                "{BASE}[[fault]]\ntarget = \"capsule:notes\"\nfault = {fault}\nat = [\"1s\"]\n"
            ))
            .map(|plan| plan.rules[0].clone())
        };
        let delay = rule("\"delay:200ms,for=1s\"").unwrap();
        assert_eq!(
            delay.fault,
            Fault::Delay {
                millis: 200,
                for_millis: 1000
            }
        );
        assert!(!delay.crash);
        let import = rule("\"import:kv_put,fail=-5,times=3\"").unwrap();
        assert_eq!(import.fault.to_string(), "import:kv_put,fail=-5,times=3");
        let storage = rule("{ storage = { op = \"fsync\", times = 2 } }").unwrap();
        assert_eq!(storage.fault.to_string(), "storage:fsync,times=2");
        assert_eq!(rule("\"trap\"").unwrap().fault, Fault::Trap);
        let err = rule("\"hang:2h\"").unwrap_err();
        assert!(
            err.starts_with("p.toml: `fault[0].fault`: `hang:2h` is not a fault"),
            "{err}"
        );
        let err = rule("{ hang = { millis = 7200000 } }").unwrap_err();
        assert!(
            err.contains("`fault[0].fault`: a hang may last at most 1h"),
            "{err}"
        );
        let err = rule("{ explode = {} }").unwrap_err();
        assert!(err.contains("is not a fault in the wire form"), "{err}");
    }
}
