//! Boot and run the kernel: bind the socket, write the token, start the supervision tree,
//! verify every kernel actor and the built-in CLI listener, write the ready file; then wait
//! for the tree to stop and remove the session files.
//!
//! The order is the contract clients rely on: the socket and token exist before any actor
//! runs, and the ready file appears only once the listener serves.

mod config;
mod shutdown;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, AsyncContext, Context};
use serde::Serialize;
use tokio::sync::oneshot;

pub use self::config::{
    HomeLayout, KernelConfig, KernelInfo, Limits, SessionFiles, ShutdownHook, session_name,
    workspace_capsules,
};
use self::shutdown::KernelFiles;
pub use self::shutdown::ShutdownHandle;
use crate::bus::{BusActor, Pattern, Publish, topic::TopicRule};
use crate::capsules::{CapsulesActor, ListCapsules};
use crate::listener::socket::{self, SocketError};
use crate::listener::{Connections, ListenerActor, ListenerInfo, Token};
use crate::protocol::to_payload;
use crate::session::{Drain, SessionDeps};
use crate::supervisor::{
    ChildRef, ChildSpec, ChildState, GetTree, NodeKind, RestartType, ShutdownTree, SupervisorActor,
    SupervisorEvent, SupervisorExit, TreeNode,
};

/// Name of the listener in the supervision tree.
pub const LISTENER: &str = "listener";

/// Longest a boot check waits for an actor.
const BOOT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the kernel could not boot. Every file it created is removed before this is returned.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
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
    drain_timeout: Duration,
}

impl Kernel {
    /// Boots the kernel inside the current actix system.
    ///
    /// # Errors
    ///
    /// See [`BootError`]. On error, the tree is stopped and the socket and token files are
    /// removed.
    pub async fn boot(config: KernelConfig) -> Result<Self, BootError> {
        let files = config.files.clone();
        tracing::info!(socket = %files.socket().display(), "binding the socket");
        let bound = socket::bind(&files.socket())?;
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
        let started = start_tree(&config, token, Arc::clone(&kernel_files));
        let (kernel, listener, capsules) = match started {
            Ok(parts) => parts,
            Err(e) => {
                kernel_files.cleanup();
                return Err(e);
            }
        };
        if let Err(e) = kernel.verify(&listener, &capsules).await {
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
        tracing::info!(ready = %files.ready().display(), "kernel booted");
        Ok(kernel)
    }

    async fn verify(
        &self,
        listener: &ChildRef<ListenerActor>,
        capsules: &ChildRef<CapsulesActor>,
    ) -> Result<(), BootError> {
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
        let found = capsules
            .call(ListCapsules, BOOT_CHECK_TIMEOUT)
            .await
            .map_err(|e| BootError::ChildNotRunning {
                name: capsules.name().to_owned(),
                reason: e.to_string(),
            })?;
        tracing::info!(capsules = found.len(), "capsules listed");
        verify_cli_proxy(&tree)?;
        listener
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

    /// Waits until the tree has stopped, removes the session files, and says why it stopped.
    pub async fn wait(self) -> KernelExit {
        let exit = self.exit.await;
        // The listener drains sessions when it stops; if it was down at that moment, any
        // session still open gets the same chance to send its last replies here.
        drain_sessions(&self.connections, self.drain_timeout).await;
        self.files.cleanup();
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

type Started = (Kernel, ChildRef<ListenerActor>, ChildRef<CapsulesActor>);

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

/// The root supervisor's children, in start order: bus, capsules, listener.
fn kernel_children(
    config: &KernelConfig,
    supervisor: &Addr<SupervisorActor>,
    (bus, capsules, listener): (
        ChildRef<BusActor>,
        ChildRef<CapsulesActor>,
        ChildRef<ListenerActor>,
    ),
    deps: Arc<SessionDeps>,
    files: Arc<KernelFiles>,
) -> Vec<ChildSpec> {
    let queue = config.limits.event_queue;
    let roots = config.capsule_roots.clone();
    let version = config.version.clone();
    let registry_supervisor = supervisor.clone();
    let idle_grace = config.ephemeral.then_some(config.idle_grace);
    let sessions = Arc::clone(&deps.connections);
    vec![
        ChildSpec::worker("bus", RestartType::Permanent, bus, move || {
            Ok(BusActor::new(queue))
        }),
        ChildSpec::worker("capsules", RestartType::Permanent, capsules, move || {
            Ok(CapsulesActor::new(
                roots.clone(),
                registry_supervisor.clone(),
                LISTENER,
                version.clone(),
            ))
        }),
        ChildSpec::worker(LISTENER, RestartType::Permanent, listener, move || {
            let socket = files.listener_copy()?;
            Ok(ListenerActor::new(socket, Arc::clone(&deps), idle_grace))
        })
        .shutdown_timeout(config.limits.drain_timeout + Duration::from_secs(1))
        .describe_children(move || sessions.infos().iter().map(session_node).collect()),
    ]
}

/// Builds the root supervisor with its children (bus, capsules, listener) and starts it.
fn start_tree(
    config: &KernelConfig,
    token: Token,
    files: Arc<KernelFiles>,
) -> Result<Started, BootError> {
    let client_publish = config
        .client_publish
        .iter()
        .map(|p| {
            Pattern::parse(p).map_err(|rule| BootError::PublishPattern {
                pattern: p.clone(),
                rule,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let info = Arc::new(KernelInfo {
        pid: std::process::id(),
        version: config.version.clone(),
        session_id: config.session_id,
        session_name: config.files.name().to_owned(),
        workspace: config.workspace.clone(),
        socket: config.files.socket(),
        ephemeral: config.ephemeral,
        idle_grace: config.idle_grace,
        fault_injection: config.allow_fault_injection,
        started_at: Instant::now(),
    });
    let limits = config.limits;
    let bus = ChildRef::<BusActor>::new("bus");
    let capsules = ChildRef::<CapsulesActor>::new("capsules");
    let listener = ChildRef::<ListenerActor>::new(LISTENER);
    let connections = Arc::new(Connections::default());

    let ctx = Context::<SupervisorActor>::new();
    let supervisor = ctx.address();
    let shutdown = ShutdownHandle::new(
        supervisor.clone(),
        Arc::clone(&files),
        bus.clone(),
        config.on_shutdown.clone(),
    );
    let deps = Arc::new(SessionDeps {
        info: Arc::clone(&info),
        token,
        limits,
        supervisor: supervisor.clone(),
        bus: bus.clone(),
        capsules: capsules.clone(),
        connections: Arc::clone(&connections),
        shutdown: shutdown.clone(),
        client_publish,
    });

    let children = kernel_children(
        config,
        &supervisor,
        (bus.clone(), capsules.clone(), listener.clone()),
        deps,
        Arc::clone(&files),
    );

    let events_bus = bus.clone();
    let events_shutdown = shutdown.clone();
    let (exit_tx, exit_rx) = oneshot::channel();
    let root = SupervisorActor::new("kernel", config.restart_policy, children)
        .on_exit(exit_tx)
        .on_event(move |event| {
            if let SupervisorEvent::Escalated { child, reason } = &event {
                events_shutdown.request(format!("`{child}` exceeded the restart budget: {reason}"));
            }
            publish_supervision(&events_bus, &event);
        });
    ctx.run(root);
    tracing::info!("supervision tree started");
    let kernel = Kernel {
        supervisor,
        shutdown,
        exit: exit_rx,
        files,
        info,
        connections,
        drain_timeout: config.limits.drain_timeout,
    };
    Ok((kernel, listener, capsules))
}

fn session_node(s: &crate::listener::SessionInfo) -> TreeNode {
    let who = s.client.as_deref().unwrap_or("(handshake)");
    let detail = match s.pid {
        Some(pid) => format!("{who}, pid {pid}"),
        None => who.to_owned(),
    };
    TreeNode {
        name: format!("session:{}", s.id),
        kind: NodeKind::Session,
        restart: Some(RestartType::Temporary),
        state: ChildState::Running,
        restarts: 0,
        uptime_ms: Some(s.connected_ms),
        last_failure: None,
        detail: Some(detail),
        children: Vec::new(),
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

fn publish_supervision(bus: &ChildRef<BusActor>, event: &SupervisorEvent) {
    #[derive(Serialize)]
    struct Exited<'a> {
        child: &'a str,
        reason: &'a str,
        restart_in_ms: Option<u64>,
    }
    #[derive(Serialize)]
    struct Restarted<'a> {
        child: &'a str,
        restarts: u32,
    }
    #[derive(Serialize)]
    struct Escalated<'a> {
        child: &'a str,
        reason: &'a str,
    }
    let Some(bus) = bus.get() else {
        return;
    };
    let (topic, payload) = match event {
        SupervisorEvent::ChildExited {
            child,
            reason,
            restart_in,
        } => (
            "astrid.supervisor.child_exited",
            to_payload(&Exited {
                child,
                reason,
                restart_in_ms: restart_in.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }),
        ),
        SupervisorEvent::ChildRestarted { child, restarts } => (
            "astrid.supervisor.child_restarted",
            to_payload(&Restarted {
                child,
                restarts: *restarts,
            }),
        ),
        SupervisorEvent::Escalated { child, reason } => (
            "astrid.supervisor.escalated",
            to_payload(&Escalated { child, reason }),
        ),
    };
    bus.do_send(Publish {
        topic: topic.to_owned(),
        payload: payload.unwrap_or(rmpv::Value::Nil),
        source: "supervisor".to_owned(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
