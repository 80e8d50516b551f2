//! The capsule registry: the built-in `astrid-capsule-cli` (the socket listener) and the
//! capsule folders found under the home and the workspace, loaded as capsule actors.
//!
//! The registry is the first child of the `capsules` supervisor, and loads each valid
//! capsule as another child of it: `capsule:<name>`, an actor on the supervisor's thread
//! whose guest runs on a thread of its own while it has work (see `capsule/runner.rs`), with the
//! manifest's restart type and a restart budget of its own (so a capsule that keeps
//! crashing ends `failed` and nothing else is touched). Loading a capsule compiles its
//! module, gives it its manifest grants and its key-value namespace, and routes its
//! commands (see `loaded.rs`).
//!
//! At start, and on `ReloadCapsules`, the registry rescans the folders and reconciles what
//! is loaded with what is on disk, by content hash: unchanged capsules keep running,
//! changed ones are stopped and started again, removed ones are stopped, new ones are
//! started, and failed ones are started again. The built-in capsule's state is the
//! listener actor's state, asked of the kernel supervisor.
//!
//! Handles: [`ListCapsules`], [`ReloadCapsules`], [`GetCommands`], [`GetCapsuleMetadata`],
//! [`ListSettings`] and [`SetSetting`] (in `settings.rs`), [`InspectCapsule`],
//! [`InstallCapsule`] and [`UninstallCapsule`] (in `install.rs`),
//! [`SweepDue`] (calls wait: their deadlines are checked every [`Sweeper::EVERY`] until no
//! call waits or runs), and the supervision messages [`Terminate`] and [`Inject`].

pub mod archive;
pub mod discovery;
pub mod install;
mod listing;
pub mod loaded;
pub mod manifest;
mod messages;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use actix::fut::{ActorFutureExt, wrap_future};
use actix::{
    Actor, ActorContext, Addr, Arbiter, AsyncContext, Context, Handler, MessageResult,
    ResponseActFuture, ResponseFuture,
};

use self::discovery::{Discovered, discover};
use self::install::InstalledStore;
use self::listing::discovered_metadata;
use self::loaded::{LoadedCapsules, child_name};
pub use self::messages::{
    CapsuleError, CapsuleInfo, CapsuleMetadata, CapsuleOrigin, CapsuleState, CommandInfo,
    GetCapsuleMetadata, GetCommands, HookInfo, InspectCapsule, InstallCapsule, ListCapsules,
    ListSettings, ReloadCapsules, ReloadReport, SetSetting, UninstallCapsule,
};
use self::settings::SettingsDir;
use crate::bus::Pattern;
use crate::bus::intercept::{Interceptor, Interceptors};
use crate::caps::SetManifestGrants;
use crate::capsule::cache::CompileCache;
use crate::capsule::config::CapsuleConfig;
use crate::capsule::crashes::{CrashSink, CrashStore};
use crate::capsule::sandbox::Compiled;
use crate::capsule::{
    CallQueue, CapsuleActor, CapsuleInterceptor, Host, Recipe, RunnerSlot, SweepDue, Sweeper,
};
use crate::mcp::Launcher;
use crate::runtime::Services;
use crate::store::Namespaces;
use crate::supervisor::{
    ChildRef, ChildSpec, ChildState, Inject, StartChild, StopChild, SupervisorActor, Terminate,
    apply_fault,
};
use crate::trust::WorkspaceTrust;

/// The slash commands the built-in capsule offers; the `astrid` chat session implements them.
pub const BUILTIN_COMMANDS: &[(&str, &str)] = &[
    ("status", "Show the daemon's status"),
    ("capsules", "List capsules and their state"),
    ("commands", "List the commands you can run"),
    ("ps", "Show the live supervision tree"),
    ("quit", "Leave the session"),
];

/// What the registry needs from the rest of the kernel.
#[derive(Debug, Clone)]
pub struct RegistryDeps {
    /// Capsule roots, in precedence order (later roots override earlier ones by name).
    pub roots: Vec<(CapsuleOrigin, PathBuf)>,
    /// The kernel supervisor (for the built-in capsule's state).
    pub kernel: Addr<SupervisorActor>,
    /// The listener's child name there.
    pub builtin_child: String,
    /// The daemon's version (the built-in capsule's).
    pub version: String,
    /// The kernel services capsules' host imports reach.
    pub services: Services,
    /// Key-value namespaces; each capsule gets one.
    pub namespaces: Arc<Namespaces>,
    /// The table of loaded capsules, shared with sessions.
    pub loaded: Arc<LoadedCapsules>,
    /// Compiled modules kept on disk.
    pub cache: CompileCache,
    /// The bus's interceptors; capsules' `[[interceptor]]` hooks go here.
    pub interceptors: Arc<Interceptors>,
    /// The MCP servers: capsules' `mcp_call` reaches them, and capsules' `[[mcp_server]]`
    /// are started and stopped with them.
    pub mcp: Launcher,
    /// Whether the workspace's own capsules may run.
    pub trust: Arc<WorkspaceTrust>,
    /// How long a capsule's thread with nothing to do waits before it retires.
    pub linger: std::time::Duration,
    /// Where the values of capsules' settings are kept.
    pub settings: SettingsDir,
    /// The record of capsules installed into the home (`astrid install`).
    pub installed: InstalledStore,
    /// Where capsules' crash bundles are kept.
    pub crashes: CrashStore,
    /// The daemon's metrics (each capsule's calls are counted there).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The capsule registry actor.
#[derive(Debug)]
pub struct CapsulesActor {
    deps: RegistryDeps,
    /// The `capsules` supervisor: capsule actors are its children.
    parent: Addr<SupervisorActor>,
    discovered: Vec<Discovered>,
    /// Capsules with a valid manifest that could not be loaded, and why.
    load_errors: BTreeMap<String, String>,
    /// The settings of loaded capsules, shared with their instances.
    configs: BTreeMap<String, Arc<CapsuleConfig>>,
}

/// What a reconciliation does to loaded capsules.
#[derive(Debug, Default)]
struct Plan {
    start: Vec<Discovered>,
    stop: Vec<String>,
    restarted: Vec<String>,
}

impl CapsulesActor {
    /// A registry whose capsules are children of `parent`.
    pub fn new(deps: RegistryDeps, parent: Addr<SupervisorActor>) -> Self {
        Self {
            deps,
            parent,
            discovered: Vec::new(),
            load_errors: BTreeMap::new(),
            configs: BTreeMap::new(),
        }
    }

    /// Scans the capsule folders again. The workspace's capsules take part only when the
    /// workspace is trusted; otherwise they are listed as untrusted, override nothing, and
    /// never run.
    fn rescan(&mut self) -> Vec<Discovered> {
        let trust = self.deps.trust.check();
        let (runnable, held): (Vec<_>, Vec<_>) = self
            .deps
            .roots
            .iter()
            .cloned()
            .partition(|(origin, _)| *origin != CapsuleOrigin::Workspace || trust.allows());
        let mut found = discover(&runnable);
        let records = self.deps.installed.load().unwrap_or_else(|e| {
            tracing::error!("cannot read the record of installed capsules: {e}");
            Vec::new()
        });
        for c in found.iter_mut().filter(|c| c.origin == CapsuleOrigin::Home) {
            c.untrusted = self.deps.installed.changed(&records, &c.name, &c.dir);
        }
        let why = trust.message.unwrap_or_default();
        for root in held {
            for mut c in discover(&[root]) {
                c.untrusted = Some(why.clone());
                found.push(c);
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        for c in &found {
            match (&c.manifest, &c.untrusted) {
                (_, Some(_)) => {
                    tracing::warn!(capsule = %c.name, dir = %c.dir.display(), "capsule not run: it is not trusted");
                }
                (Ok(_), None) => {
                    tracing::info!(capsule = %c.name, dir = %c.dir.display(), "capsule found");
                }
                (Err(e), None) => {
                    tracing::warn!(capsule = %c.name, "capsule manifest invalid: {e}");
                }
            }
        }
        std::mem::replace(&mut self.discovered, found)
    }

    /// Compares what is loaded with what was just discovered.
    fn plan(&self, restart_failed: bool) -> Plan {
        let loaded = self.deps.loaded.fingerprints();
        let mut plan = Plan::default();
        let valid: BTreeSet<&str> = self
            .discovered
            .iter()
            .filter(|d| d.runnable())
            .map(|d| d.name.as_str())
            .collect();
        for name in loaded.keys().filter(|n| !valid.contains(n.as_str())) {
            plan.stop.push(name.clone());
        }
        for d in self.discovered.iter().filter(|d| d.runnable()) {
            match loaded.get(&d.name) {
                None => plan.start.push(d.clone()),
                Some((fingerprint, dir, _)) if *fingerprint != d.fingerprint || *dir != d.dir => {
                    plan.stop.push(d.name.clone());
                    plan.start.push(d.clone());
                }
                Some((_, _, ChildState::Failed)) if restart_failed => {
                    plan.stop.push(d.name.clone());
                    plan.start.push(d.clone());
                    plan.restarted.push(d.name.clone());
                }
                Some(_) => {}
            }
        }
        plan
    }

    /// Carries out `plan`: stops first (their commands stop routing at once), then starts.
    /// Modules are compiled meanwhile on the blocking pool, not on this (the sessions')
    /// thread.
    fn apply(&mut self, plan: Plan) -> impl actix::ActorFuture<Self, Output = Vec<String>> + use<> {
        let (cache, sources) = (self.deps.cache.clone(), plan.start.clone());
        let compiling = tokio::task::spawn_blocking(move || {
            let compiled = sources
                .iter()
                .map(|d| compile(d, &cache))
                .collect::<Vec<_>>();
            cache.prune(crate::capsule::cache::UNUSED_FOR);
            compiled
        });
        let mut stopping = Vec::new();
        for name in plan.stop {
            self.deps.interceptors.remove(&name);
            self.deps.mcp.stop_for(&name);
            self.deps.loaded.remove(&name);
            self.deps.metrics.capsules.forget(&name);
            let stop = self.parent.send(StopChild {
                name: child_name(&name),
            });
            stopping.push(async move {
                if let Err(e) = stop.await {
                    tracing::warn!(capsule = %name, "stopping: {e}");
                }
            });
        }
        let ready = async move {
            futures_util::future::join_all(stopping).await;
            compiling.await
        };
        wrap_future::<_, Self>(ready).map(move |compiled, act, _| {
            let compiled = compiled.unwrap_or_else(|e| {
                let failed = Err(format!("compilation did not finish: {e}"));
                plan.start.iter().map(|_| failed.clone()).collect()
            });
            for (d, compiled) in plan.start.iter().zip(compiled) {
                act.load(d, compiled);
            }
            // Names that capsules gave up (unloaded, failed to load, or no longer
            // declared) go to the capsules refused them.
            act.deps.mcp.start_waiting();
            plan.restarted
        })
    }

    /// Loads one capsule from its compiled module: grants its manifest capabilities, opens
    /// its namespace, and starts its actor.
    fn load(&mut self, d: &Discovered, compiled: Result<Compiled, String>) {
        let Ok(manifest) = &d.manifest else { return };
        let name = d.name.clone();
        self.load_errors.remove(&name);
        let compiled = match compiled {
            Ok(compiled) => compiled,
            Err(e) => {
                tracing::error!(capsule = %name, "cannot load: {e}");
                self.load_errors.insert(name, e);
                return;
            }
        };
        if let Some(caps) = self.deps.services.caps.get() {
            caps.do_send(SetManifestGrants {
                subject: name.clone(),
                resources: manifest.capabilities.clone(),
                approval_timeouts: manifest.approval_timeouts.clone(),
            });
        }
        self.deps.namespaces.register(Namespaces::of_capsule(&name));
        let actor = ChildRef::new("capsule");
        let runner = RunnerSlot::default();
        let queue = Arc::new(CallQueue::new(
            runner.clone(),
            manifest.limits.call_timeout,
            Arc::clone(self.deps.loaded.linger_slots()),
            Arc::clone(self.deps.loaded.sweeper()),
        ));
        let values = self.deps.settings.load(&name).unwrap_or_else(|e| {
            tracing::error!(capsule = %name, "cannot read its settings, so none is set: {e}");
            BTreeMap::new()
        });
        let config = Arc::new(CapsuleConfig::new(&name, manifest.settings.clone(), values));
        self.configs.insert(name.clone(), Arc::clone(&config));
        let sink = CrashSink {
            store: self.deps.crashes.clone(),
            module_path: d.dir.join(&manifest.module),
            module_hash: compiled.hash().unwrap_or_default().to_owned(),
        };
        let recipe = Recipe {
            compiled,
            host: Host::new(
                &name,
                self.deps.services.clone(),
                Arc::clone(&self.deps.mcp.table),
                config,
            )
            .with_crashes(sink)
            .with_metrics(self.deps.metrics.capsules.of(&name)),
            subscriptions: manifest.subscriptions.clone(),
            queue: Arc::clone(&queue),
            runner: runner.clone(),
            linger: self.deps.linger,
        };
        // The actor holds no instance: it lives on this (the supervisor's) thread, and its
        // runner starts a thread of its own when there is work.
        let spec = ChildSpec::worker_in(
            child_name(&name),
            manifest.restart.kind,
            actor.clone(),
            Arbiter::current(),
            move || Ok(recipe.clone()),
            CapsuleActor::build,
        )
        .own_budget(manifest.restart.policy)
        .capsule()
        .shutdown_timeout(manifest.limits.call_timeout + std::time::Duration::from_secs(1));
        let hooks: Vec<(Pattern, i32)> = manifest
            .interceptors
            .iter()
            .filter_map(|h| Some((Pattern::parse(&h.topic).ok()?, h.priority)))
            .collect();
        if !hooks.is_empty() {
            let handler: Arc<dyn Interceptor> = Arc::new(CapsuleInterceptor {
                actor: actor.clone(),
                timeout: manifest.limits.call_timeout + std::time::Duration::from_millis(250),
            });
            self.deps.interceptors.set(&name, hooks, &handler);
        }
        let taken = self.deps.loaded.insert(
            &name,
            loaded::Capsule {
                fingerprint: d.fingerprint,
                dir: d.dir.clone(),
                name: Arc::from(name.as_str()),
                queue,
                runner,
                commands: manifest.commands.iter().map(|c| c.name.clone()).collect(),
                state: ChildState::Running,
                restarts: 0,
                last_failure: None,
            },
        );
        for command in taken {
            tracing::warn!(capsule = %name, %command, "command already offered by another capsule; not routed here");
        }
        self.parent.do_send(StartChild(spec));
        self.deps.mcp.start_for(&name, &manifest.mcp_servers);
        tracing::info!(capsule = %name, "capsule loaded");
    }
}

/// Reads a capsule's module and compiles it (or takes it from the cache).
fn compile(d: &Discovered, cache: &CompileCache) -> Result<Compiled, String> {
    let Ok(manifest) = &d.manifest else {
        return Err("invalid manifest".into());
    };
    let file = d.dir.join(&manifest.module);
    let bytes = crate::files::read_bounded(&file, crate::capsule::inspect::MAX_MODULE_BYTES)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (compiled, source) = cache
        .load(&bytes, manifest.limits)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    tracing::debug!(capsule = %d.name, ?source, "module ready");
    Ok(compiled.with_hash(blake3::hash(&bytes).to_hex().as_str()))
}

impl Actor for CapsulesActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.rescan();
        tracing::info!(found = self.discovered.len(), "capsule folders scanned");
        // Requests wait until the capsules are loaded (boot waits on `ListCapsules`).
        let plan = self.plan(false);
        ctx.wait(self.apply(plan).map(|_, _, _| ()));
        // Calls past their deadline are answered `timeout` (whatever their capsule does):
        // swept while calls wait, from the first call on.
        let loaded = &self.deps.loaded;
        loaded
            .sweeper()
            .attach(ctx.address().recipient(), loaded.pending());
    }
}

impl CapsulesActor {
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let loaded = Arc::clone(&self.deps.loaded);
        let pending = loaded.sweep();
        if loaded.sweeper().again(pending, || loaded.pending()) {
            ctx.run_later(Sweeper::EVERY, Self::sweep);
        }
    }
}

impl Handler<SweepDue> for CapsulesActor {
    type Result = ();

    fn handle(&mut self, _: SweepDue, ctx: &mut Context<Self>) {
        ctx.run_later(Sweeper::EVERY, Self::sweep);
    }
}

impl Handler<ListCapsules> for CapsulesActor {
    type Result = ResponseFuture<Vec<CapsuleInfo>>;

    fn handle(&mut self, _: ListCapsules, _: &mut Context<Self>) -> Self::Result {
        self.listing()
    }
}

impl Handler<ReloadCapsules> for CapsulesActor {
    type Result = ResponseActFuture<Self, ReloadReport>;

    fn handle(&mut self, _: ReloadCapsules, _: &mut Context<Self>) -> Self::Result {
        let mut before = self.rescan();
        // What may run is compared: a capsule whose workspace became trusted is added.
        before.retain(|b| b.untrusted.is_none());
        let (mut added, mut changed, mut unchanged) = (Vec::new(), Vec::new(), Vec::new());
        for now in self.discovered.iter().filter(|d| d.untrusted.is_none()) {
            match before.iter().find(|b| b.name == now.name) {
                None => added.push(now.name.clone()),
                Some(b) if b.fingerprint != now.fingerprint || b.dir != now.dir => {
                    changed.push(now.name.clone());
                }
                Some(_) => unchanged.push(now.name.clone()),
            }
        }
        let removed = before
            .iter()
            .filter(|b| {
                !self
                    .discovered
                    .iter()
                    .any(|n| n.name == b.name && n.untrusted.is_none())
            })
            .map(|b| b.name.clone())
            .collect();
        tracing::info!(?added, ?removed, ?changed, "capsules rescanned");
        let plan = self.plan(true);
        Box::pin(self.apply(plan).then(move |restarted, act, _| {
            let listing = act.listing();
            wrap_future(async move {
                ReloadReport {
                    added,
                    removed,
                    changed,
                    unchanged,
                    restarted,
                    capsules: listing.await,
                }
            })
        }))
    }
}

impl Handler<GetCommands> for CapsulesActor {
    type Result = MessageResult<GetCommands>;

    fn handle(&mut self, _: GetCommands, _: &mut Context<Self>) -> Self::Result {
        let mut all = self.builtin_metadata().commands;
        for (command, capsule) in self.deps.loaded.commands() {
            let description = self
                .discovered
                .iter()
                .find(|d| d.name == capsule && d.untrusted.is_none())
                .and_then(|d| d.manifest.as_ref().ok())
                .and_then(|m| m.commands.iter().find(|c| c.name == command))
                .and_then(|c| c.description.clone())
                .unwrap_or_default();
            all.push(CommandInfo {
                name: command,
                description,
                capsule,
            });
        }
        MessageResult(all)
    }
}

impl Handler<GetCapsuleMetadata> for CapsulesActor {
    type Result = Result<Vec<CapsuleMetadata>, CapsuleError>;

    fn handle(&mut self, msg: GetCapsuleMetadata, _: &mut Context<Self>) -> Self::Result {
        let mut all = vec![self.builtin_metadata()];
        let settings = &self.deps.settings;
        all.extend(
            self.discovered
                .iter()
                .map(|d| discovered_metadata(d, settings)),
        );
        match msg.name {
            None => Ok(all),
            Some(name) => {
                let one: Vec<_> = all.into_iter().filter(|m| m.name == name).collect();
                if one.is_empty() {
                    Err(CapsuleError::NotFound(name))
                } else {
                    Ok(one)
                }
            }
        }
    }
}

impl Handler<Terminate> for CapsulesActor {
    type Result = ();

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Inject> for CapsulesActor {
    type Result = ();

    fn handle(&mut self, msg: Inject, ctx: &mut Context<Self>) {
        apply_fault(&msg.0, ctx);
    }
}
