//! The kernel's supervision tree: which actors run, in which order, on which thread, and
//! what the tree tells the rest of the system (bus events and audit entries) when an actor
//! starts, crashes, restarts or gives up.

use crate::capsule::crashes::CrashStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Addr, Arbiter, AsyncContext, Context};
use serde::Serialize;
use tokio::sync::oneshot;

use super::stores::Stores;
use super::{BootError, Kernel, KernelConfig, KernelInfo, LISTENER, ShutdownHandle};
use crate::approvals::ApprovalsActor;
use crate::audit::{AuditActor, Record};
use crate::bus::intercept::Interceptors;
use crate::bus::{BusActor, Pattern, Publish};
use crate::caps::CapabilitiesActor;
use crate::capsule::cache::CompileCache;
use crate::capsules::install::InstalledStore;
use crate::capsules::loaded::LoadedCapsules;
use crate::capsules::settings::SettingsDir;
use crate::capsules::{CapsulesActor, RegistryDeps};
use crate::listener::ListenerActor;
use crate::mcp::Launcher;
use crate::mcp::groups::{self, ServerGroups};
use crate::mcp::servers::McpServers;
use crate::metrics::Metrics;
use crate::protocol::to_payload;
use crate::relay::Relay;
use crate::runtime::{KernelFiles, Services};
use crate::session::SessionDeps;
use crate::session::{Connections, SessionInfo, Token};
use crate::store::{Namespaces, StoreActor};
use crate::supervisor::{
    ChildRef, ChildSpec, ChildState, FaultFamily, NodeKind, RestartType, SupervisorActor,
    SupervisorEvent, TreeNode,
};
use crate::trust::WorkspaceTrust;
use crate::vfs::VfsActor;

/// The current addresses of the kernel actors (each swapped on restart).
#[derive(Debug, Clone)]
pub struct KernelActors {
    /// Event bus.
    pub bus: ChildRef<BusActor>,
    /// Audit log.
    pub audit: ChildRef<AuditActor>,
    /// Key-value store.
    pub store: ChildRef<StoreActor>,
    /// Capability store.
    pub caps: ChildRef<CapabilitiesActor>,
    /// Workspace file system.
    pub vfs: ChildRef<VfsActor>,
    /// Approvals of `ask:` grants.
    pub approvals: ChildRef<ApprovalsActor>,
    /// The capsules supervisor (the registry's and every capsule's parent).
    pub capsule_supervisor: ChildRef<SupervisorActor>,
    /// Capsule registry.
    pub capsules: ChildRef<CapsulesActor>,
    /// The MCP supervisor (every MCP server's parent).
    pub mcp: ChildRef<SupervisorActor>,
    /// Socket listener.
    pub listener: ChildRef<ListenerActor>,
}

impl KernelActors {
    fn new() -> Self {
        Self {
            bus: ChildRef::new("bus"),
            audit: ChildRef::new("audit"),
            store: ChildRef::new("store"),
            caps: ChildRef::new("capabilities"),
            vfs: ChildRef::new("vfs"),
            approvals: ChildRef::new("approvals"),
            capsule_supervisor: ChildRef::new("capsules"),
            capsules: ChildRef::new("registry"),
            mcp: ChildRef::new("mcp"),
            listener: ChildRef::new(LISTENER),
        }
    }

    /// The service handles, for the floors above the services.
    pub fn services(&self) -> Services {
        Services {
            bus: self.bus.clone(),
            audit: self.audit.clone(),
            store: self.store.clone(),
            caps: self.caps.clone(),
            vfs: self.vfs.clone(),
            approvals: self.approvals.clone(),
        }
    }
}

/// What the tree needs that was prepared before it: the files, the token, the databases.
pub(super) struct Prepared {
    pub(super) token: Token,
    pub(super) files: Arc<KernelFiles>,
    pub(super) stores: Stores,
}

/// The static facts sessions report about this daemon.
fn kernel_info(config: &KernelConfig) -> Arc<KernelInfo> {
    Arc::new(KernelInfo {
        pid: std::process::id(),
        version: config.version.clone(),
        session_id: config.session_id,
        session_name: config.files.name().to_owned(),
        workspace: config.workspace.clone(),
        socket: config.files.socket(),
        ephemeral: config.ephemeral,
        idle_grace: config.idle_grace,
        fault_injection: config.allow_fault_injection,
        hosting: config.hosting,
        started_at: Instant::now(),
        config_file: config.config_file.clone(),
        settings: config.settings.clone(),
    })
}

/// Builds the root supervisor with its children and starts it.
pub(super) fn start(config: &KernelConfig, prepared: Prepared) -> Result<Kernel, BootError> {
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
    let info = kernel_info(config);
    let actors = KernelActors::new();
    let connections = Arc::new(Connections::default());
    let Prepared {
        token,
        files,
        stores,
    } = prepared;
    let metrics = Arc::new(Metrics::new(stores.ledger.metrics()));

    let ctx = Context::<SupervisorActor>::new();
    let supervisor = ctx.address();
    let shutdown = ShutdownHandle::new(
        supervisor.clone(),
        Arc::clone(&files),
        actors.services(),
        config.on_shutdown.clone(),
    );
    // Capabilities, the VFS, and the MCP servers each get a thread.
    let arbiters: Vec<Arbiter> = (0..3).map(|_| Arbiter::new()).collect();
    // What the servers of a daemon killed by SIGKILL left goes before any server starts.
    let record = config.files.mcp_groups();
    groups::sweep(&record);
    let trust = WorkspaceTrust::new(config.home.root(), config.workspace.clone());
    let launcher = Launcher {
        arbiter: arbiters[2].handle(),
        workspace: config.workspace.clone(),
        table: Arc::new(McpServers::new(ServerGroups::new(Some(record)))),
        supervisor: actors.mcp.clone(),
        files: config.mcp_files.clone(),
        trust: Arc::clone(&trust),
        open_file_limit: config.mcp_open_file_limit,
        metrics: Arc::clone(&metrics),
    };
    let mcp = Arc::clone(&launcher.table);
    let deps = Arc::new(SessionDeps {
        info: Arc::clone(&info),
        token,
        limits: config.limits,
        supervisor: supervisor.clone(),
        services: actors.services(),
        registry: actors.capsules.clone(),
        audit_health: Arc::clone(&stores.audit_health),
        connections: Arc::clone(&connections),
        shutdown: shutdown.clone(),
        client_publish,
        capsules: Arc::new(LoadedCapsules::default()),
        mcp: launcher,
        trust,
        audit_policy: Arc::new(config.audit_policy.clone()),
        crashes: CrashStore::new(config.home.crashes()),
        metrics: Arc::clone(&metrics),
    });
    let children = children(
        config,
        &supervisor,
        &actors,
        &arbiters,
        deps,
        &files,
        &stores,
    );

    let sink_actors = actors.services();
    let sink_shutdown = shutdown.clone();
    let (exit_tx, exit_rx) = oneshot::channel();
    let root = SupervisorActor::new("kernel", config.restart_policy, children)
        .on_exit(exit_tx)
        .on_event(move |event| {
            if let SupervisorEvent::Escalated { child, reason } = &event {
                sink_shutdown.request(format!("`{child}` exceeded the restart budget: {reason}"));
            }
            report(&sink_actors, &event);
        });
    ctx.run(root);
    tracing::info!("supervision tree started");
    Ok(Kernel {
        supervisor,
        shutdown,
        exit: exit_rx,
        files,
        info,
        connections,
        actors,
        drain_timeout: config.limits.drain_timeout,
        arbiters,
        mcp,
    })
}

/// The root supervisor's children, in start order. Actors whose handlers block on disk get
/// an arbiter (thread) each; the rest share the supervisor's.
fn children(
    config: &KernelConfig,
    supervisor: &Addr<SupervisorActor>,
    actors: &KernelActors,
    arbiters: &[Arbiter],
    deps: Arc<SessionDeps>,
    files: &Arc<KernelFiles>,
    stores: &Stores,
) -> Vec<ChildSpec> {
    let loaded = Arc::clone(&deps.capsules);
    let mcp = deps.mcp.clone();
    let permanent = RestartType::Permanent;
    let (queue, queue_bytes) = (config.limits.event_queue, config.limits.event_queue_bytes);
    // An event must fit a frame to reach a client.
    let max_frame = config.limits.max_frame_len;
    let (audit_ledger, health) = (Arc::clone(&stores.ledger), Arc::clone(&stores.audit_health));
    // Sessions run on this (the supervisor's) arbiter: the store and the audit log answer
    // them through it.
    let sessions_relay = Relay::on_current_arbiter();
    let audit_relay = sessions_relay.clone();
    let namespaces = Arc::new(Namespaces::default());
    let interceptors = Arc::new(Interceptors::default());
    let bus_interceptors = Arc::clone(&interceptors);
    let (kv_ledger, store_namespaces, store_limits) = (
        Arc::clone(&stores.ledger),
        Arc::clone(&namespaces),
        config.store_limits,
    );
    let (caps_db, caps_audit) = (Arc::clone(&stores.caps), actors.audit.clone());
    let (workspace, vfs_limits) = (config.workspace.clone(), config.vfs_limits);
    let home = config.home.root().to_owned();
    let registry = RegistryDeps {
        roots: config.capsule_roots.clone(),
        kernel: supervisor.clone(),
        builtin_child: LISTENER.to_owned(),
        version: config.version.clone(),
        services: actors.services(),
        namespaces,
        loaded,
        cache: CompileCache::new(config.state_dir.join("capsule-cache")),
        interceptors: Arc::clone(&interceptors),
        mcp: mcp.clone(),
        trust: Arc::clone(&deps.trust),
        linger: config.limits.capsule_linger,
        settings: SettingsDir::new(config.home.settings()),
        installed: InstalledStore::new(&home),
        crashes: deps.crashes.clone(),
        metrics: Arc::clone(&deps.metrics),
    };
    let idle_grace = config.ephemeral.then_some(config.idle_grace);
    let sessions = Arc::clone(&deps.connections);
    let listener_files = Arc::clone(files);
    vec![
        ChildSpec::worker("bus", permanent, actors.bus.clone(), move || {
            Ok(BusActor::new(queue)
                .with_queue_bytes(queue_bytes)
                .with_max_frame(max_frame)
                .with_interceptors(Arc::clone(&bus_interceptors)))
        }),
        // The audit log and the store never wait for the disk (see their docs): on the
        // sessions' arbiter, recording or writing costs no thread hop.
        ChildSpec::worker("audit", permanent, actors.audit.clone(), move || {
            Ok(
                AuditActor::new(Arc::clone(&audit_ledger), Arc::clone(&health))
                    .answer_on(audit_relay.clone()),
            )
        })
        .accepts(FaultFamily::Storage),
        ChildSpec::worker("store", permanent, actors.store.clone(), move || {
            Ok(StoreActor::new(
                Arc::clone(&kv_ledger),
                Arc::clone(&store_namespaces),
                store_limits,
            )
            .answer_on(sessions_relay.clone()))
        })
        .accepts(FaultFamily::Storage),
        ChildSpec::worker_on(
            "capabilities",
            permanent,
            actors.caps.clone(),
            arbiters[0].handle(),
            move || CapabilitiesActor::new(Arc::clone(&caps_db), caps_audit.clone()),
        ),
        ChildSpec::worker_on(
            "vfs",
            permanent,
            actors.vfs.clone(),
            arbiters[1].handle(),
            move || {
                VfsActor::new(&workspace, vfs_limits)
                    .map(|vfs| vfs.reserving_home(&workspace, &home))
                    .map_err(|e| e.to_string())
            },
        ),
        approvals(actors),
        capsules_supervisor(config, actors, registry),
        mcp_supervisor(config, actors, mcp),
        ChildSpec::worker(LISTENER, permanent, actors.listener.clone(), move || {
            let socket = listener_files.listener_copy()?;
            Ok(ListenerActor::new(socket, Arc::clone(&deps), idle_grace))
        })
        .shutdown_timeout(config.limits.drain_timeout + Duration::from_secs(1))
        .describe_children(move || sessions.infos().iter().map(session_node).collect()),
    ]
}

/// The approvals actor: it asks through the bus, gives `always` grants to the capability
/// store, and records each decision in the audit log.
fn approvals(actors: &KernelActors) -> ChildSpec {
    let (bus, caps, audit) = (
        actors.bus.clone(),
        actors.caps.clone(),
        actors.audit.clone(),
    );
    ChildSpec::worker(
        "approvals",
        RestartType::Permanent,
        actors.approvals.clone(),
        move || {
            Ok(ApprovalsActor::new(
                bus.clone(),
                caps.clone(),
                audit.clone(),
            ))
        },
    )
}

/// The capsules supervisor: the registry, then one child per loaded capsule (each with a
/// restart budget of its own). A new incarnation starts with no capsules: none loaded, no
/// interceptor hooks, no capsule's MCP servers (each capsule's come back as it loads again).
fn capsules_supervisor(
    config: &KernelConfig,
    actors: &KernelActors,
    registry: RegistryDeps,
) -> ChildSpec {
    let (registry_ref, policy) = (actors.capsules.clone(), config.restart_policy);
    ChildSpec::nested(
        "capsules",
        RestartType::Permanent,
        actors.capsule_supervisor.clone(),
        move |parent| {
            registry.loaded.clear();
            registry.interceptors.clear();
            registry.mcp.stop_all_capsules();
            let deps = registry.clone();
            let registry_child = ChildSpec::worker(
                "registry",
                RestartType::Permanent,
                registry_ref.clone(),
                move || Ok(CapsulesActor::new(deps.clone(), parent.clone())),
            );
            let loaded = Arc::clone(&registry.loaded);
            let events = registry.services.clone();
            SupervisorActor::new("capsules", policy, vec![registry_child]).on_event(move |event| {
                loaded.on_event(&event);
                report(&events, &event);
            })
        },
    )
}

/// The MCP supervisor: one child per configured server, each with a restart budget of its
/// own, all on the launcher's thread. A new incarnation reads the configuration files again.
fn mcp_supervisor(config: &KernelConfig, actors: &KernelActors, launcher: Launcher) -> ChildSpec {
    let (events, policy) = (actors.services(), config.restart_policy);
    ChildSpec::nested(
        "mcp",
        RestartType::Permanent,
        actors.mcp.clone(),
        move |_| {
            let children = launcher
                .table
                .reset(launcher.read_config())
                .into_iter()
                .map(|(server, slot)| launcher.spec(&server, slot))
                .collect();
            let (table, events) = (Arc::clone(&launcher.table), events.clone());
            SupervisorActor::new("mcp", policy, children).on_event(move |event| {
                table.on_event(&event);
                report(&events, &event);
            })
        },
    )
}

fn session_node(s: &SessionInfo) -> TreeNode {
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

/// Tells subscribers (on `astrid.supervisor.*`) and the audit log what happened in the tree.
fn report(services: &Services, event: &SupervisorEvent) {
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
    struct Named<'a> {
        child: &'a str,
        reason: &'a str,
    }
    let (topic, payload, record) = match event {
        SupervisorEvent::ChildStarted { child } => (
            "astrid.supervisor.child_started",
            to_payload(&Named { child, reason: "" }),
            Record::new("supervisor", "start", child, "ok"),
        ),
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
            Record::new("supervisor", "exit", child, reason.as_str()),
        ),
        SupervisorEvent::ChildRestarted { child, restarts } => (
            "astrid.supervisor.child_restarted",
            to_payload(&Restarted {
                child,
                restarts: *restarts,
            }),
            Record::new(
                "supervisor",
                "restart",
                child,
                format!("ok (restart {restarts})"),
            ),
        ),
        SupervisorEvent::ChildFailed { child, reason } => (
            "astrid.supervisor.child_failed",
            to_payload(&Named { child, reason }),
            Record::new("supervisor", "failed", child, reason.as_str()),
        ),
        SupervisorEvent::Escalated { child, reason } => (
            "astrid.supervisor.escalated",
            to_payload(&Named { child, reason }),
            Record::new("supervisor", "failed", child, reason.as_str()),
        ),
    };
    if let Some(audit) = services.audit.get() {
        audit.do_send(record);
    }
    if let Some(bus) = services.bus.get() {
        bus.do_send(Publish {
            topic: topic.to_owned(),
            payload: payload.unwrap_or_default(),
            source: "supervisor".to_owned(),
        });
    }
}
