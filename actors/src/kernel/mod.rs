//! Boot and run the kernel: open the databases (verifying the audit chain), bind the
//! socket, write the token, start the supervision tree, verify every kernel actor and the
//! built-in CLI listener, write the ready file; then wait for the tree to stop and remove the
//! session files.
//!
//! The order is the contract clients rely on: the socket and token exist before any actor
//! runs, and the ready file appears only once the listener serves.

mod config;
mod health;
mod stores;
mod tree;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Arbiter};
use tokio::sync::oneshot;

pub use self::config::{
    DEFAULT_DB_CACHE, HomeLayout, KernelConfig, SessionFiles, session_name, workspace_capsules,
};
pub use self::health::Health;
pub use self::tree::KernelActors;
use crate::audit::Record;
use crate::bus::topic::TopicRule;
use crate::capsules::ListCapsules;
use crate::listener::ListenerInfo;
use crate::mcp::servers::McpServers;
use crate::runtime::KernelFiles;
pub use crate::runtime::{Hosting, KernelInfo, Limits, ShutdownHandle, ShutdownHook};
use crate::session::Drain;
use crate::session::{Connections, Token};
use crate::socket::{self, SocketError};
use crate::supervisor::{
    ChildState, GetTree, ShutdownTree, SupervisorActor, SupervisorExit, TreeNode,
};

/// Name of the listener in the supervision tree.
pub const LISTENER: &str = "listener";

/// Longest a boot check waits for an actor.
const BOOT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the kernel could not boot. Every file it created is removed before this is returned.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A database could not be opened (damaged, or locked by another process).
    #[error("cannot open the database {path}")]
    Store {
        /// Database file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: redb::Error,
    },
    /// The ledger's journal could not be opened or replayed into its database.
    #[error("cannot open the ledger {path}")]
    Ledger {
        /// Journal file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: crate::ledger::LedgerError,
    },
    /// The directory holding newly created database or journal files could not be synced,
    /// so they might not survive a crash.
    #[error("cannot make the files created in {path} durable (sync of the directory failed)")]
    SyncDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The socket could not be bound.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The token could not be created or written.
    #[error("cannot write the token file {path}")]
    Token {
        /// Token path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A client publish pattern in the configuration is invalid.
    #[error("invalid client publish pattern `{pattern}`: {rule}")]
    PublishPattern {
        /// The pattern.
        pattern: String,
        /// The rule it breaks.
        rule: TopicRule,
    },
    /// A kernel actor is not running after start.
    #[error("kernel actor `{name}` did not start: {reason}")]
    ChildNotRunning {
        /// Actor name.
        name: String,
        /// Its last failure.
        reason: String,
    },
    /// The built-in CLI capsule (the listener) does not serve.
    #[error("the built-in capsule astrid-capsule-cli (the socket listener) is not running: {0}")]
    CliProxyMissing(String),
    /// The ready file could not be written.
    #[error("cannot write the ready file {path}")]
    Ready {
        /// Ready file path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The root supervisor died during boot.
    #[error("the root supervisor stopped during boot")]
    SupervisorGone,
}

/// How the kernel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelExit {
    /// A requested shutdown completed.
    Clean {
        /// Why it was requested.
        reason: String,
    },
    /// A kernel actor exhausted the restart budget; everything was stopped.
    Escalated {
        /// The actor.
        child: String,
        /// Its last failure.
        reason: String,
    },
    /// The root supervisor itself died.
    SupervisorDied,
}

/// A booted kernel.
#[derive(Debug)]
pub struct Kernel {
    supervisor: Addr<SupervisorActor>,
    shutdown: ShutdownHandle,
    exit: oneshot::Receiver<SupervisorExit>,
    files: Arc<KernelFiles>,
    info: Arc<KernelInfo>,
    connections: Arc<Connections>,
    actors: KernelActors,
    drain_timeout: Duration,
    /// Threads of the actors that block on disk; stopped once the tree has stopped.
    arbiters: Vec<Arbiter>,
    /// The MCP servers, whose process groups are killed last.
    mcp: Arc<McpServers>,
}

impl Kernel {
    /// Boots the kernel inside the current actix system.
    ///
    /// # Errors
    ///
    /// See [`BootError`]. On error, the tree is stopped and the socket and token files are
    /// removed.
    pub async fn boot(mut config: KernelConfig) -> Result<Self, BootError> {
        let files = config.files.clone();
        let stores = stores::open_all(
            &config.state_dir,
            config.files.name(),
            config.db_cache,
            config.audit_retention,
        )?;
        tracing::info!(state = %config.state_dir.display(), "databases opened");
        let bound = if let Some(listener) = config.activated_socket.take() {
            tracing::info!(socket = %files.socket().display(), "using the socket the service manager passed");
            socket::adopt(listener, &files.socket())?
        } else {
            tracing::info!(socket = %files.socket().display(), "binding the socket");
            socket::bind(&files.socket())?
        };
        let token = Token::generate()
            .and_then(|t| t.write(&files.token()).map(|()| t))
            .map_err(|source| {
                bound.remove_file();
                BootError::Token {
                    path: files.token(),
                    source,
                }
            })?;
        tracing::info!(token = %files.token().display(), "token written");
        let kernel_files = Arc::new(KernelFiles::new(bound, files.token(), files.ready()));
        let prepared = tree::Prepared {
            token,
            files: Arc::clone(&kernel_files),
            stores,
        };
        let kernel = match tree::start(&config, prepared) {
            Ok(kernel) => kernel,
            Err(e) => {
                kernel_files.cleanup();
                return Err(e);
            }
        };
        if let Err(e) = kernel.verify().await {
            tracing::error!("boot failed: {e}");
            kernel.abort().await;
            return Err(e);
        }
        let ready = format!(
            "pid={}\nprotocol={}\n",
            kernel.info.pid,
            crate::protocol::PROTOCOL_VERSION
        );
        if let Err(source) = kernel.files.write_ready(&ready) {
            kernel.abort().await;
            return Err(BootError::Ready {
                path: files.ready(),
                source,
            });
        }
        kernel.connections.start_idle_tracking();
        if let Some(audit) = kernel.actors.audit.get() {
            let target = format!(
                "astrid-daemon {} pid {}",
                kernel.info.version, kernel.info.pid
            );
            audit.do_send(Record::new("kernel", "boot", target, "ok"));
        }
        tracing::info!(ready = %files.ready().display(), "kernel booted");
        Ok(kernel)
    }

    async fn verify(&self) -> Result<(), BootError> {
        let tree = self
            .supervisor
            .send(GetTree)
            .await
            .map_err(|_| BootError::SupervisorGone)?;
        for child in tree.children.iter().filter(|c| c.name != LISTENER) {
            if child.state != ChildState::Running {
                return Err(BootError::ChildNotRunning {
                    name: child.name.clone(),
                    reason: failure_of(child),
                });
            }
        }
        let capsules = &self.actors.capsules;
        let found = capsules
            .call(ListCapsules, BOOT_CHECK_TIMEOUT)
            .await
            .map_err(|e| BootError::ChildNotRunning {
                name: capsules.name().to_owned(),
                reason: e.to_string(),
            })?;
        tracing::info!(capsules = found.len(), "capsules listed");
        verify_cli_proxy(&tree)?;
        self.actors
            .listener
            .call(ListenerInfo, BOOT_CHECK_TIMEOUT)
            .await
            .map_err(|e| BootError::CliProxyMissing(e.to_string()))?;
        Ok(())
    }

    /// Stops the tree after a failed boot and removes the files.
    async fn abort(self) {
        self.supervisor.do_send(ShutdownTree {
            reason: "boot failed".into(),
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), self.exit).await;
        self.files.cleanup();
        self.mcp.groups().kill_all();
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }

    /// Requests shutdown from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Facts about this daemon.
    pub fn info(&self) -> &KernelInfo {
        &self.info
    }

    /// The root supervisor.
    pub fn supervisor(&self) -> &Addr<SupervisorActor> {
        &self.supervisor
    }

    /// The MCP servers (whose process groups a forced exit must kill).
    pub fn mcp(&self) -> Arc<McpServers> {
        Arc::clone(&self.mcp)
    }

    /// The kernel actors' current addresses.
    pub fn actors(&self) -> &KernelActors {
        &self.actors
    }

    /// A handle that tells whether the tree answers, for a service manager's watchdog.
    pub fn health(&self) -> Health {
        Health::new(
            self.supervisor.clone(),
            self.actors.clone(),
            Arc::clone(&self.connections),
        )
    }

    /// Waits until the tree has stopped, removes the session files, and says why it stopped.
    pub async fn wait(self) -> KernelExit {
        let exit = self.exit.await;
        // The listener drains sessions when it stops; if it was down at that moment, any
        // session still open gets the same chance to send its last replies here.
        drain_sessions(&self.connections, self.drain_timeout).await;
        self.files.cleanup();
        // Servers that did not go on SIGTERM, and whatever they started, go now.
        self.mcp.groups().kill_all();
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        match exit {
            Ok(SupervisorExit::Normal { reason }) => KernelExit::Clean { reason },
            Ok(SupervisorExit::Escalated { child, reason }) => {
                KernelExit::Escalated { child, reason }
            }
            Err(_) => {
                tracing::error!("the root supervisor died");
                KernelExit::SupervisorDied
            }
        }
    }
}

/// Asks every open session to finish and waits until they are gone, at most `timeout`.
async fn drain_sessions(connections: &Connections, timeout: Duration) {
    if connections.is_empty() {
        return;
    }
    for session in connections.sessions() {
        session.do_send(Drain);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while !connections.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn failure_of(node: &TreeNode) -> String {
    node.last_failure
        .as_ref()
        .map_or_else(|| format!("it is {}", node.state), |f| f.reason.clone())
}

/// The listener stands for the built-in `astrid-capsule-cli`; the daemon is useless without
/// it, so boot fails unless it is running.
///
/// # Errors
///
/// [`BootError::CliProxyMissing`] naming what is wrong.
pub fn verify_cli_proxy(tree: &TreeNode) -> Result<(), BootError> {
    match tree.children.iter().find(|c| c.name == LISTENER) {
        Some(node) if node.state == ChildState::Running => Ok(()),
        Some(node) => Err(BootError::CliProxyMissing(failure_of(node))),
        None => Err(BootError::CliProxyMissing(
            "no listener in the supervision tree".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::{NodeKind, RestartType};

    fn node(name: &str, state: ChildState) -> TreeNode {
        TreeNode {
            name: name.into(),
            kind: NodeKind::Worker,
            restart: Some(RestartType::Permanent),
            state,
            restarts: 0,
            uptime_ms: None,
            last_failure: None,
            detail: None,
            children: Vec::new(),
        }
    }

    fn root(children: Vec<TreeNode>) -> TreeNode {
        TreeNode {
            children,
            kind: NodeKind::Supervisor,
            ..node("kernel", ChildState::Running)
        }
    }

    #[test]
    fn boot_requires_a_running_listener() {
        assert!(verify_cli_proxy(&root(vec![node(LISTENER, ChildState::Running)])).is_ok());
        let missing = verify_cli_proxy(&root(vec![node("bus", ChildState::Running)]));
        assert!(matches!(missing, Err(BootError::CliProxyMissing(m)) if m.contains("no listener")));
        let down = verify_cli_proxy(&root(vec![node(LISTENER, ChildState::Restarting)]));
        assert!(matches!(down, Err(BootError::CliProxyMissing(m)) if m.contains("restarting")));
    }
}
