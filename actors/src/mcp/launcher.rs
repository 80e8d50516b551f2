//! Making MCP servers' child specs: from `mcp.toml` at boot and on reload (under the
//! workspace's trust), and from capsule manifests' `[[mcp_server]]` at run time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::config::ServerConfig;
use super::faults::McpFaults;
use super::messages::McpReloadReport;
use super::servers::McpServers;
use super::{McpServerActor, config, servers};
use crate::trust::WorkspaceTrust;
use crate::trust::snapshot::config_dir;

/// Makes the child specs of servers, at boot (from `mcp.toml`) and at run time (from
/// capsule manifests' `[[mcp_server]]`, started and stopped with their capsule).
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The servers' thread.
    pub arbiter: actix::ArbiterHandle,
    /// The working directory of servers whose configuration names none.
    pub workspace: PathBuf,
    /// The shared table of servers.
    pub table: Arc<McpServers>,
    /// The `mcp` supervisor, for servers started at run time.
    pub supervisor: crate::supervisor::ChildRef<crate::supervisor::SupervisorActor>,
    /// The `mcp.toml` files, later ones overriding earlier ones by name.
    pub files: Vec<PathBuf>,
    /// Whether the workspace's own `mcp.toml` may run.
    pub trust: Arc<WorkspaceTrust>,
    /// The soft open-file limit servers start with (the daemon's own when `None`).
    pub open_file_limit: Option<u64>,
    /// The daemon's metrics (each server's calls are counted there).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Launcher {
    /// The child spec of `server`, whose actor's address goes to `slot`.
    pub fn spec(
        &self,
        server: &Arc<ServerConfig>,
        slot: crate::supervisor::ChildRef<McpServerActor>,
    ) -> crate::supervisor::ChildSpec {
        let recipe = Recipe {
            config: Arc::clone(server),
            workspace: self.workspace.clone(),
            table: Arc::clone(&self.table),
            open_file_limit: self.open_file_limit,
            faults: Arc::default(),
            calls: self.metrics.mcp.of(&server.name),
        };
        crate::supervisor::ChildSpec::worker_in(
            servers::child_name(&server.name),
            server.restart.kind,
            slot,
            self.arbiter.clone(),
            move || Ok(recipe.clone()),
            McpServerActor::build,
        )
        .own_budget(server.restart.policy)
        .shutdown_timeout(Duration::from_secs(2))
        .accepts(crate::supervisor::FaultFamily::Mcp)
    }

    /// Reads the configuration files again and applies the difference (`ReloadMcp`):
    /// unchanged servers run on, changed ones restart, removed ones stop, new ones start,
    /// and capsules' servers waiting for a name the files gave up start too.
    pub fn reload(&self) -> McpReloadReport {
        let reload = self.table.reload(self.read_config());
        tracing::info!(report = ?reload.report, "MCP configuration reloaded");
        self.stop(reload.stop);
        self.start(reload.start);
        self.start_waiting();
        McpReloadReport {
            servers: self.table.list(),
            ..reload.report
        }
    }

    /// The configuration files, read now; their bad entries are logged. The workspace's
    /// file is read only when the workspace is trusted; otherwise its servers are listed as
    /// untrusted.
    pub fn read_config(&self) -> config::McpConfig {
        let trust = self.trust.check();
        let own = config_dir(self.trust.workspace()).join(config::FILE);
        let held = (!trust.allows()).then_some(own);
        let files: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|f| Some(*f) != held.as_ref())
            .cloned()
            .collect();
        let mut config = config::load(&files);
        if let Some(file) = held {
            let why = trust.message.unwrap_or_default();
            config.held = config::held(&file, &why, &config);
        }
        for error in &config.errors {
            tracing::error!("MCP configuration: {error}");
        }
        for held in &config.held {
            tracing::warn!(server = %held.name, file = %held.source.display(), "MCP server not run: its workspace is not trusted");
        }
        config
    }

    /// Starts the servers a capsule declares. A name already taken (by `mcp.toml` or
    /// another capsule) is refused: logged, and listed as invalid, until the name is free
    /// ([`start_waiting`](Self::start_waiting)).
    pub fn start_for(&self, capsule: &str, servers: &[ServerConfig]) {
        for server in servers {
            let server = Arc::new(server.clone());
            match self.table.add(capsule, Arc::clone(&server)) {
                Ok(slot) => self.start(vec![(server, slot)]),
                Err(e) => tracing::error!(%capsule, "{e}"),
            }
        }
    }

    /// Stops the servers `capsule` declared (its unloading).
    pub fn stop_for(&self, capsule: &str) {
        self.stop(self.table.remove_owned_by(capsule));
    }

    /// Starts the capsules' servers refused for a name that is free now (after a reload).
    pub fn start_waiting(&self) {
        self.start(self.table.admit_waiting());
    }

    /// Stops the servers of every capsule (a new `capsules` supervisor starts with none
    /// loaded; each capsule's servers start again as it loads).
    pub fn stop_all_capsules(&self) {
        self.stop(self.table.remove_all_capsules());
    }

    /// Starts each server (a server of the name still stopping starts once it is gone).
    fn start(&self, servers: Vec<servers::ToStart>) {
        let Some(supervisor) = self.supervisor.get() else {
            return;
        };
        for (server, slot) in servers {
            supervisor.do_send(crate::supervisor::StartChild(self.spec(&server, slot)));
        }
    }

    fn stop(&self, servers: Vec<String>) {
        let Some(supervisor) = self.supervisor.get() else {
            return;
        };
        for name in servers {
            self.metrics.mcp.forget(&name);
            supervisor.do_send(crate::supervisor::StopChild {
                name: servers::child_name(&name),
            });
        }
    }
}

/// What a server's actor is built from.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The server's configuration.
    pub config: Arc<ServerConfig>,
    /// The working directory when the configuration names none (the workspace root).
    pub workspace: PathBuf,
    /// The shared table of servers.
    pub table: Arc<McpServers>,
    /// The soft open-file limit the server starts with (the daemon's own when `None`).
    pub open_file_limit: Option<u64>,
    /// Its injected faults (shared by every incarnation).
    pub faults: Arc<McpFaults>,
    /// Its calls' counters (shared by every incarnation).
    pub calls: Arc<crate::metrics::McpCalls>,
}
