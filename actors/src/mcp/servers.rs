//! The configured MCP servers: shared between the `mcp` supervisor (which starts one child
//! per valid server and reports their exits and restarts), the server actors (which record
//! their process, what the server says it is, and its tools), and sessions (which list
//! servers and tools, and route calls, without an actor hop). It lives as long as the
//! kernel, so a restarted `mcp` supervisor starts over from the configuration files.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::McpServerActor;
use super::config::{McpConfig, ServerConfig};
use super::groups::ServerGroups;
use super::messages::{McpError, McpReloadReport, McpServerInfo, McpServerState, McpToolInfo};
use crate::supervisor::{ChildRef, ChildState, SupervisorEvent};

/// What the supervision-tree name of a server's actor starts with.
pub const CHILD_PREFIX: &str = "mcp:";

/// The supervision-tree name of server `name`'s actor.
pub fn child_name(server: &str) -> String {
    format!("{CHILD_PREFIX}{server}")
}

#[derive(Debug)]
struct Entry {
    /// The capsule that declared it, or `None` for `mcp.toml`.
    owner: Option<String>,
    config: Arc<ServerConfig>,
    actor: ChildRef<McpServerActor>,
    state: McpServerState,
    restarts: u32,
    last_failure: Option<String>,
    pid: Option<u32>,
    server_info: Option<String>,
    tools: Vec<McpToolInfo>,
}

impl Entry {
    /// A server about to start.
    fn new(
        owner: Option<String>,
        config: Arc<ServerConfig>,
        actor: ChildRef<McpServerActor>,
    ) -> Self {
        Self {
            owner,
            config,
            actor,
            state: McpServerState::Starting,
            restarts: 0,
            last_failure: None,
            pid: None,
            server_info: None,
            tools: Vec::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    servers: BTreeMap<String, Entry>,
    /// `mcp.toml` entries that could not be used, and those of an untrusted workspace.
    invalid: Vec<McpServerInfo>,
    /// Capsule-declared servers refused (their name was taken), by capsule.
    refused: Vec<(String, McpServerInfo)>,
    /// Every server a loaded capsule declared, accepted or refused, in the order declared:
    /// a new `mcp` supervisor declares them again, after the configuration files' servers.
    declared: Vec<(String, Arc<ServerConfig>)>,
}

impl Inner {
    /// Lists capsule `capsule`'s server, unless its name is taken; returns the slot for its
    /// actor.
    fn admit(
        &mut self,
        capsule: &str,
        config: Arc<ServerConfig>,
    ) -> Result<ChildRef<McpServerActor>, String> {
        if let Some(other) = self.servers.get(&config.name) {
            let owner = other.owner.as_deref().map_or_else(
                || other.config.source.display().to_string(),
                |c| format!("capsule `{c}`"),
            );
            return Err(self.refuse(capsule, &config, &owner));
        }
        let actor = ChildRef::new("mcp server");
        let name = config.name.clone();
        let entry = Entry::new(Some(capsule.to_owned()), config, actor.clone());
        self.servers.insert(name, entry);
        Ok(actor)
    }

    /// Lists capsule `capsule`'s server as refused, its name being taken by `owner`;
    /// returns why.
    fn refuse(&mut self, capsule: &str, config: &ServerConfig, owner: &str) -> String {
        let reason = format!(
            "{}: MCP server `{}` is already configured by {owner}",
            config.source.display(),
            config.name
        );
        let info = invalid(config.name.clone(), &config.source, reason.clone());
        self.refused.push((capsule.to_owned(), info));
        reason
    }

    /// The configuration files' bad entries, listed as invalid, and the servers of an
    /// untrusted workspace, listed as untrusted.
    fn set_invalid(&mut self, config: &McpConfig) {
        self.invalid = config
            .errors
            .iter()
            .map(|e| {
                let name = e.server.clone().unwrap_or_default();
                invalid(name, &e.file, e.to_string())
            })
            .collect();
        self.invalid
            .extend(config.held.iter().map(|h| McpServerInfo {
                state: McpServerState::Untrusted,
                command: h.command.clone(),
                ..invalid(h.name.clone(), &h.source, h.reason.clone())
            }));
    }

    /// Forgets the servers of the capsules `owned` picks, and their refusals; returns the
    /// names of their servers, to stop.
    fn remove_capsules(&mut self, owned: impl Fn(&str) -> bool) -> Vec<String> {
        let names: Vec<String> = self
            .servers
            .iter()
            .filter(|(_, e)| e.owner.as_deref().is_some_and(&owned))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &names {
            self.servers.remove(name);
        }
        self.refused.retain(|(capsule, _)| !owned(capsule));
        self.declared.retain(|(capsule, _)| !owned(capsule));
        names
    }
}

/// A server to start, and the slot for its actor.
pub type ToStart = (Arc<ServerConfig>, ChildRef<McpServerActor>);

/// What a reload of the configuration files does.
#[derive(Debug, Default)]
pub struct Reload {
    /// Servers to stop (removed, changed, or a capsule's whose name the files take).
    pub stop: Vec<String>,
    /// Servers to start (added or changed), after those stop.
    pub start: Vec<ToStart>,
    /// The report, but for the listing.
    pub report: McpReloadReport,
}

/// The table of configured servers, and the process groups of their processes.
#[derive(Debug, Default)]
pub struct McpServers(RwLock<Inner>, ServerGroups);

/// How an entry that cannot run is listed.
fn invalid(name: String, source: &std::path::Path, error: String) -> McpServerInfo {
    McpServerInfo {
        name,
        state: McpServerState::Invalid,
        restarts: 0,
        tools: 0,
        pid: None,
        command: Vec::new(),
        source: source.display().to_string(),
        server_info: None,
        error: Some(error),
    }
}

/// Where a tool call goes.
#[derive(Debug, Clone)]
pub struct Route {
    /// The server's actor.
    pub actor: ChildRef<McpServerActor>,
    /// The server's call deadline.
    pub timeout: Duration,
}

impl McpServers {
    /// An empty table, whose servers' process groups go to `groups`.
    pub fn new(groups: ServerGroups) -> Self {
        Self(RwLock::default(), groups)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts over from `config`, then from what loaded capsules declared: every valid
    /// server gets a slot for its actor (returned, to start), every bad entry is listed as
    /// invalid, and a capsule's server whose name the files now take is refused.
    pub fn reset(&self, config: McpConfig) -> Vec<ToStart> {
        let mut inner = self.write();
        // Capsules' servers that ran keep their names (unless the files now take them).
        let mut declared = inner.declared.clone();
        declared.sort_by_key(|(capsule, config)| {
            let owner = inner
                .servers
                .get(&config.name)
                .and_then(|e| e.owner.as_deref());
            owner != Some(capsule.as_str())
        });
        inner.servers.clear();
        inner.refused.clear();
        inner.set_invalid(&config);
        let mut started = Vec::new();
        for server in config.servers {
            let config = Arc::new(server);
            let actor = ChildRef::new("mcp server");
            started.push((Arc::clone(&config), actor.clone()));
            inner
                .servers
                .insert(config.name.clone(), Entry::new(None, config, actor));
        }
        for (capsule, config) in declared {
            if let Ok(actor) = inner.admit(&capsule, Arc::clone(&config)) {
                started.push((config, actor));
            }
        }
        started
    }

    /// Applies the configuration files read again: the files' servers whose entry is
    /// unchanged run on, changed ones restart, removed ones stop, new ones start (taking
    /// their name from a capsule's server, as at boot).
    pub fn reload(&self, config: McpConfig) -> Reload {
        let mut inner = self.write();
        inner.set_invalid(&config);
        let mut out = Reload::default();
        let new: BTreeMap<String, ServerConfig> = config
            .servers
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let gone: Vec<String> = inner
            .servers
            .iter()
            .filter(|(name, e)| e.owner.is_none() && !new.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            inner.servers.remove(&name);
            out.stop.push(name.clone());
            out.report.removed.push(name);
        }
        for (name, config) in new {
            let held = inner
                .servers
                .get(&name)
                .map(|e| (e.owner.clone(), Arc::clone(&e.config)));
            let list = match &held {
                Some((None, old)) if **old == config => {
                    out.report.unchanged.push(name);
                    continue;
                }
                Some((None, _)) => &mut out.report.changed,
                Some((Some(capsule), theirs)) => {
                    inner.refuse(capsule, theirs, &config.source.display().to_string());
                    &mut out.report.added
                }
                None => &mut out.report.added,
            };
            list.push(name.clone());
            if held.is_some() {
                out.stop.push(name.clone());
            }
            let config = Arc::new(config);
            let actor = ChildRef::new("mcp server");
            out.start.push((Arc::clone(&config), actor.clone()));
            inner.servers.insert(name, Entry::new(None, config, actor));
        }
        out
    }

    /// Adds a server declared by capsule `capsule`; returns the slot for its actor.
    ///
    /// # Errors
    ///
    /// When the name is taken; the refusal is listed as an invalid entry too.
    pub fn add(
        &self,
        capsule: &str,
        config: Arc<ServerConfig>,
    ) -> Result<ChildRef<McpServerActor>, String> {
        let mut inner = self.write();
        inner
            .declared
            .push((capsule.to_owned(), Arc::clone(&config)));
        inner.admit(capsule, config)
    }

    /// Forgets the servers capsule `capsule` declared (and the refusals of its names);
    /// returns their names, to stop.
    pub fn remove_owned_by(&self, capsule: &str) -> Vec<String> {
        self.write().remove_capsules(|owner| owner == capsule)
    }

    /// Forgets the servers every capsule declared (a new `capsules` supervisor loads its
    /// capsules afresh); returns their names, to stop.
    pub fn remove_all_capsules(&self) -> Vec<String> {
        self.write().remove_capsules(|_| true)
    }

    /// Admits the capsules' servers refused for a name that is free now (its holder was
    /// unloaded, or came back without it), in the order declared; returns them, to start.
    pub fn admit_waiting(&self) -> Vec<ToStart> {
        let mut inner = self.write();
        let waiting: Vec<(String, Arc<ServerConfig>)> = inner
            .declared
            .iter()
            .filter(|(_, config)| !inner.servers.contains_key(&config.name))
            .cloned()
            .collect();
        let mut admitted = Vec::new();
        for (capsule, config) in waiting {
            // The first declared gets the name; the others are refused again, naming it.
            inner
                .refused
                .retain(|(c, info)| !(*c == capsule && info.name == config.name));
            if let Ok(actor) = inner.admit(&capsule, Arc::clone(&config)) {
                admitted.push((config, actor));
            }
        }
        admitted
    }

    fn update(&self, server: &str, f: impl FnOnce(&mut Entry)) {
        if let Some(entry) = self.write().servers.get_mut(server) {
            f(entry);
        }
    }

    /// The server's process started.
    pub(crate) fn spawned(&self, server: &str, pid: Option<u32>) {
        self.update(server, |e| {
            e.pid = pid;
            e.state = McpServerState::Starting;
        });
    }

    /// The server finished its handshake: it is running, with these tools.
    pub(crate) fn ready(&self, server: &str, server_info: String, tools: Vec<McpToolInfo>) {
        self.update(server, |e| {
            e.state = McpServerState::Running;
            e.server_info = Some(server_info);
            e.tools = tools;
        });
    }

    /// The server's tools changed (`notifications/tools/list_changed`).
    pub(crate) fn set_tools(&self, server: &str, tools: Vec<McpToolInfo>) {
        self.update(server, |e| e.tools = tools);
    }

    /// Follows the `mcp` supervisor's reports.
    pub fn on_event(&self, event: &SupervisorEvent) {
        let Some(report) = event.report() else { return };
        let Some(name) = report.child.strip_prefix(CHILD_PREFIX) else {
            return;
        };
        // A (re)started actor has yet to finish its handshake.
        let state = match report.state {
            ChildState::Running | ChildState::Stopping => McpServerState::Starting,
            ChildState::Restarting => McpServerState::Restarting,
            ChildState::Stopped => McpServerState::Stopped,
            ChildState::Failed => McpServerState::Failed,
        };
        let (restarts, failure) = (report.restarts, report.failure);
        self.update(name, |e| {
            // A start is reported before the handshake: keep `Running` if it got there.
            if !(state == McpServerState::Starting && e.state == McpServerState::Running) {
                e.state = state;
            }
            if state != McpServerState::Starting && state != McpServerState::Running {
                e.pid = None;
                e.server_info = None;
                e.tools.clear();
            }
            if let Some(n) = restarts {
                e.restarts = n;
            }
            if let Some(reason) = failure {
                e.last_failure = Some(reason.to_owned());
            }
        });
    }

    /// Every configured server, valid ones first in name order.
    pub fn list(&self) -> Vec<McpServerInfo> {
        let inner = self.read();
        let mut all: Vec<McpServerInfo> = inner
            .servers
            .values()
            .map(|e| McpServerInfo {
                name: e.config.name.clone(),
                state: e.state,
                restarts: e.restarts,
                tools: e.tools.len(),
                pid: e.pid,
                command: std::iter::once(e.config.command.clone())
                    .chain(e.config.args.iter().cloned())
                    .collect(),
                source: e.config.source.display().to_string(),
                server_info: e.server_info.clone(),
                error: e.last_failure.clone(),
            })
            .collect();
        all.extend(inner.invalid.iter().cloned());
        all.extend(inner.refused.iter().map(|(_, info)| info.clone()));
        all
    }

    /// The tools of `server`, or of every running server.
    ///
    /// # Errors
    ///
    /// [`McpError::UnknownServer`] and [`McpError::Invalid`].
    pub fn tools(&self, server: Option<&str>) -> Result<Vec<McpToolInfo>, McpError> {
        let inner = self.read();
        match server {
            None => Ok(inner
                .servers
                .values()
                .flat_map(|e| e.tools.iter().cloned())
                .collect()),
            Some(name) => match inner.servers.get(name) {
                Some(e) => Ok(e.tools.clone()),
                None => Err(Self::missing(&inner, name)),
            },
        }
    }

    fn missing(inner: &Inner, name: &str) -> McpError {
        match inner.invalid.iter().find(|i| i.name == name) {
            Some(bad) => McpError::Invalid {
                server: name.to_owned(),
                reason: bad.error.clone().unwrap_or_default(),
            },
            None => McpError::UnknownServer(name.to_owned()),
        }
    }

    /// Where a call to `server` goes, or why it cannot go now.
    ///
    /// # Errors
    ///
    /// Unknown, invalid, failed, or not ready.
    pub fn route(&self, server: &str) -> Result<Route, McpError> {
        let inner = self.read();
        let Some(e) = inner.servers.get(server) else {
            return Err(Self::missing(&inner, server));
        };
        match e.state {
            McpServerState::Running => Ok(Route {
                actor: e.actor.clone(),
                timeout: e.config.call_timeout,
            }),
            McpServerState::Failed | McpServerState::Stopped => Err(McpError::Failed {
                server: server.to_owned(),
                reason: e.last_failure.clone().unwrap_or_else(|| "stopped".into()),
            }),
            _ => Err(McpError::NotReady(server.to_owned())),
        }
    }

    /// The servers' process groups.
    pub fn groups(&self) -> &ServerGroups {
        &self.1
    }

    /// Process ids of the servers running now.
    pub fn pids(&self) -> Vec<u32> {
        self.read().servers.values().filter_map(|e| e.pid).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::mcp::config::parse;

    fn server(name: &str, file: &str) -> Arc<ServerConfig> {
        let text = format!("[[server]]\nname = \"{name}\"\ncommand = \"x\"\n");
        let (mut servers, errors) = parse(Path::new(file), &text);
        assert!(errors.is_empty(), "{errors:?}");
        Arc::new(servers.pop().unwrap())
    }

    /// Name, state and source of each server, then of each refusal.
    fn listed(table: &McpServers) -> Vec<(String, McpServerState, String)> {
        table
            .list()
            .into_iter()
            .map(|s| (s.name, s.state, s.source))
            .collect()
    }

    fn row(name: &str, state: McpServerState, source: &str) -> (String, McpServerState, String) {
        (name.to_owned(), state, source.to_owned())
    }

    #[test]
    fn a_name_goes_to_the_first_declarer_and_passes_on_once_free() {
        use McpServerState::{Invalid, Starting};
        let table = McpServers::default();
        let file = McpConfig {
            servers: vec![(*server("f", "/h/mcp.toml")).clone()],
            errors: Vec::new(),
            held: Vec::new(),
        };
        assert_eq!(table.reset(file.clone()).len(), 1);
        assert!(table.add("a", server("s", "/a/Capsule.toml")).is_ok());
        assert!(table.add("b", server("s", "/b/Capsule.toml")).is_err());
        assert!(table.add("b", server("f", "/b/Capsule.toml")).is_err());
        let before = listed(&table);
        assert_eq!(
            before,
            [
                row("f", Starting, "/h/mcp.toml"),
                row("s", Starting, "/a/Capsule.toml"),
                row("s", Invalid, "/b/Capsule.toml"),
                row("f", Invalid, "/b/Capsule.toml"),
            ]
        );

        // `a` restarting keeps its name: it declares it again before anyone is admitted.
        assert_eq!(table.remove_owned_by("a"), ["s"]);
        assert!(table.add("a", server("s", "/a/Capsule.toml")).is_ok());
        assert!(table.admit_waiting().is_empty());
        // A new `mcp` supervisor: the files first, then the capsules that held their names.
        let started: Vec<String> = table
            .reset(file)
            .into_iter()
            .map(|(c, _)| c.source.display().to_string())
            .collect();
        assert_eq!(started, ["/h/mcp.toml", "/a/Capsule.toml"]);
        assert_eq!(listed(&table), before);

        // `a` gone: `b` gets `s`, and is still refused `f`.
        assert_eq!(table.remove_owned_by("a"), ["s"]);
        let admitted = table.admit_waiting();
        assert_eq!(admitted.len(), 1);
        assert_eq!(admitted[0].0.source, Path::new("/b/Capsule.toml"));
        assert_eq!(
            listed(&table),
            [
                row("f", Starting, "/h/mcp.toml"),
                row("s", Starting, "/b/Capsule.toml"),
                row("f", Invalid, "/b/Capsule.toml"),
            ]
        );
        assert!(table.admit_waiting().is_empty());
        assert_eq!(table.remove_all_capsules(), ["s"]);
        assert_eq!(listed(&table), [row("f", Starting, "/h/mcp.toml")]);
    }

    #[test]
    fn a_reload_applies_only_what_changed_and_the_files_win_names_as_at_boot() {
        use McpServerState::{Invalid, Starting};
        let config = |names: &[(&str, &str)]| McpConfig {
            servers: names
                .iter()
                .map(|(name, args)| {
                    let mut s = (*server(name, "/h/mcp.toml")).clone();
                    s.args = vec![(*args).to_owned()];
                    s
                })
                .collect(),
            errors: Vec::new(),
            held: Vec::new(),
        };
        let table = McpServers::default();
        table.reset(config(&[("keep", "1"), ("change", "1"), ("drop", "1")]));
        assert!(table.add("c", server("s", "/c/Capsule.toml")).is_ok());

        let reload = table.reload(config(&[("keep", "1"), ("change", "2"), ("s", "1")]));
        let report = &reload.report;
        assert_eq!(report.added, ["s"]);
        assert_eq!(report.removed, ["drop"]);
        assert_eq!(report.changed, ["change"]);
        assert_eq!(report.unchanged, ["keep"]);
        // The capsule's `s` stops: the files take its name, as they would at boot.
        assert_eq!(reload.stop, ["drop", "change", "s"]);
        let started: Vec<&str> = reload.start.iter().map(|(c, _)| c.name.as_str()).collect();
        assert_eq!(started, ["change", "s"]);
        assert_eq!(
            listed(&table),
            [
                row("change", Starting, "/h/mcp.toml"),
                row("keep", Starting, "/h/mcp.toml"),
                row("s", Starting, "/h/mcp.toml"),
                row("s", Invalid, "/c/Capsule.toml"),
            ]
        );
        assert!(table.admit_waiting().is_empty());

        // The files give `s` up again: the capsule's server gets it back.
        let reload = table.reload(config(&[("keep", "1"), ("change", "2")]));
        assert_eq!(reload.report.removed, ["s"]);
        assert_eq!(reload.report.unchanged, ["change", "keep"]);
        assert_eq!(table.admit_waiting().len(), 1);
        assert_eq!(
            listed(&table)[2],
            row("s", Starting, "/c/Capsule.toml"),
            "{:?}",
            listed(&table)
        );
    }
}
