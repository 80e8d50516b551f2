//! The capsule registry: the built-in `astrid-capsule-cli` (the socket listener) and the
//! capsule folders found under the home and the workspace.
//!
//! The registry rescans on `ReloadCapsules` and reports what changed. Found capsules are
//! listed with their manifest data; this build has no WebAssembly runtime, so they are shown
//! as `not_loaded` and contribute no commands. The built-in capsule's state is the listener
//! actor's state, asked of the supervisor.
//!
//! Handles: [`ListCapsules`], [`ReloadCapsules`], [`GetCommands`], [`GetCapsuleMetadata`],
//! and the supervision messages [`Terminate`] and [`Inject`].

pub mod discovery;
pub mod manifest;
mod messages;
pub mod sandbox;

use std::path::PathBuf;

use actix::{Actor, ActorContext, Addr, Context, Handler, MessageResult, ResponseFuture};

use self::discovery::{BUILTIN_CLI, Discovered, discover};
pub use self::messages::{
    CapsuleError, CapsuleInfo, CapsuleMetadata, CapsuleOrigin, CapsuleState, CommandInfo,
    GetCapsuleMetadata, GetCommands, HookInfo, ListCapsules, ReloadCapsules, ReloadReport,
};
use crate::supervisor::{
    ChildState, ChildSummary, GetChild, Inject, SupervisorActor, Terminate, apply_fault,
};

/// The slash commands the built-in capsule offers; the `astrid` chat session implements them.
const BUILTIN_COMMANDS: &[(&str, &str)] = &[
    ("status", "Show the daemon's status"),
    ("capsules", "List capsules and their state"),
    ("commands", "List the commands you can run"),
    ("ps", "Show the live supervision tree"),
    ("quit", "Leave the session"),
];

/// The capsule registry actor.
#[derive(Debug)]
pub struct CapsulesActor {
    roots: Vec<(CapsuleOrigin, PathBuf)>,
    discovered: Vec<Discovered>,
    supervisor: Addr<SupervisorActor>,
    builtin_child: String,
    version: String,
}

impl CapsulesActor {
    /// A registry scanning `roots` in order (later roots override earlier ones by name).
    /// The built-in capsule's state is that of the supervisor's child `builtin_child`.
    pub fn new(
        roots: Vec<(CapsuleOrigin, PathBuf)>,
        supervisor: Addr<SupervisorActor>,
        builtin_child: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        Self {
            roots,
            discovered: Vec::new(),
            supervisor,
            builtin_child: builtin_child.into(),
            version: version.into(),
        }
    }

    fn rescan(&mut self) -> Vec<Discovered> {
        let found = discover(&self.roots);
        for c in &found {
            match &c.manifest {
                Ok(_) => tracing::info!(capsule = %c.name, dir = %c.dir.display(), "capsule found"),
                Err(e) => tracing::warn!(capsule = %c.name, "capsule manifest invalid: {e}"),
            }
        }
        std::mem::replace(&mut self.discovered, found)
    }

    fn builtin_metadata(&self) -> CapsuleMetadata {
        CapsuleMetadata {
            name: BUILTIN_CLI.to_owned(),
            version: Some(self.version.clone()),
            description: Some(
                "Built-in socket listener: accepts clients and bridges them to the kernel".into(),
            ),
            origin: CapsuleOrigin::Builtin,
            path: None,
            overrides: None,
            commands: BUILTIN_COMMANDS
                .iter()
                .map(|(name, description)| CommandInfo {
                    name: (*name).to_owned(),
                    description: (*description).to_owned(),
                    capsule: BUILTIN_CLI.to_owned(),
                })
                .collect(),
            providers: Vec::new(),
            interceptors: Vec::new(),
        }
    }

    fn listing(&self) -> ResponseFuture<Vec<CapsuleInfo>> {
        let supervisor = self.supervisor.clone();
        let child_name = self.builtin_child.clone();
        let builtin = self.builtin_metadata();
        let discovered: Vec<CapsuleInfo> = self.discovered.iter().map(discovered_info).collect();
        Box::pin(async move {
            let child = supervisor
                .send(GetChild {
                    name: child_name.clone(),
                })
                .await
                .ok()
                .flatten();
            let mut all = vec![builtin_info(builtin, child, &child_name)];
            all.extend(discovered);
            all
        })
    }
}

/// The built-in capsule's listing entry: its state is its actor's state.
fn builtin_info(
    meta: CapsuleMetadata,
    child: Option<ChildSummary>,
    child_name: &str,
) -> CapsuleInfo {
    let (state, restarts, error) = match child {
        Some(c) => {
            let state = match c.state {
                ChildState::Running => CapsuleState::Running,
                ChildState::Restarting => CapsuleState::Restarting,
                ChildState::Stopping | ChildState::Stopped => CapsuleState::Stopped,
                ChildState::Failed => CapsuleState::Failed,
            };
            let error = (state != CapsuleState::Running)
                .then_some(c.last_failure)
                .flatten();
            (state, c.restarts, error)
        }
        None => (
            CapsuleState::Failed,
            0,
            Some(format!("`{child_name}` is not in the supervision tree")),
        ),
    };
    CapsuleInfo {
        name: meta.name,
        version: meta.version,
        description: meta.description,
        state,
        origin: CapsuleOrigin::Builtin,
        path: None,
        restarts,
        error,
    }
}

fn discovered_info(c: &Discovered) -> CapsuleInfo {
    let path = Some(c.dir.display().to_string());
    match &c.manifest {
        Ok(m) => CapsuleInfo {
            name: c.name.clone(),
            version: Some(m.package.version.clone()),
            description: m.package.description.clone(),
            state: CapsuleState::NotLoaded,
            origin: c.origin,
            path,
            restarts: 0,
            error: Some("this build has no WebAssembly capsule runtime".into()),
        },
        Err(e) => CapsuleInfo {
            name: c.name.clone(),
            version: None,
            description: None,
            state: CapsuleState::Invalid,
            origin: c.origin,
            path,
            restarts: 0,
            error: Some(e.clone()),
        },
    }
}

fn hooks(hooks: &[manifest::Hook]) -> Vec<HookInfo> {
    hooks
        .iter()
        .map(|h| HookInfo {
            topic: h.topic.clone(),
            priority: h.priority,
        })
        .collect()
}

fn discovered_metadata(c: &Discovered) -> CapsuleMetadata {
    let manifest = c.manifest.as_ref().ok();
    CapsuleMetadata {
        name: c.name.clone(),
        version: manifest.map(|m| m.package.version.clone()),
        description: manifest.and_then(|m| m.package.description.clone()),
        origin: c.origin,
        path: Some(c.dir.display().to_string()),
        overrides: c.overrides.as_ref().map(|p| p.display().to_string()),
        commands: manifest
            .map(|m| {
                m.commands
                    .iter()
                    .map(|cmd| CommandInfo {
                        name: cmd.name.clone(),
                        description: cmd.description.clone().unwrap_or_default(),
                        capsule: c.name.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        providers: manifest.map(|m| hooks(&m.providers)).unwrap_or_default(),
        interceptors: manifest.map(|m| hooks(&m.interceptors)).unwrap_or_default(),
    }
}

impl Actor for CapsulesActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.rescan();
        tracing::info!(found = self.discovered.len(), "capsule folders scanned");
    }
}

impl Handler<ListCapsules> for CapsulesActor {
    type Result = ResponseFuture<Vec<CapsuleInfo>>;

    fn handle(&mut self, _: ListCapsules, _: &mut Context<Self>) -> Self::Result {
        self.listing()
    }
}

impl Handler<ReloadCapsules> for CapsulesActor {
    type Result = ResponseFuture<ReloadReport>;

    fn handle(&mut self, _: ReloadCapsules, _: &mut Context<Self>) -> Self::Result {
        let before = self.rescan();
        let (mut added, mut changed, mut unchanged) = (Vec::new(), Vec::new(), Vec::new());
        for now in &self.discovered {
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
            .filter(|b| !self.discovered.iter().any(|n| n.name == b.name))
            .map(|b| b.name.clone())
            .collect();
        tracing::info!(?added, ?removed, ?changed, "capsules rescanned");
        let listing = self.listing();
        Box::pin(async move {
            ReloadReport {
                added,
                removed,
                changed,
                unchanged,
                capsules: listing.await,
            }
        })
    }
}

impl Handler<GetCommands> for CapsulesActor {
    type Result = MessageResult<GetCommands>;

    fn handle(&mut self, _: GetCommands, _: &mut Context<Self>) -> Self::Result {
        // Only running capsules offer commands; discovered ones are not loaded.
        MessageResult(self.builtin_metadata().commands)
    }
}

impl Handler<GetCapsuleMetadata> for CapsulesActor {
    type Result = Result<Vec<CapsuleMetadata>, CapsuleError>;

    fn handle(&mut self, msg: GetCapsuleMetadata, _: &mut Context<Self>) -> Self::Result {
        let mut all = vec![self.builtin_metadata()];
        all.extend(self.discovered.iter().map(discovered_metadata));
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
        apply_fault(msg.0, ctx);
    }
}
