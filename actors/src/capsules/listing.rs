//! What the registry tells about capsules: the listing that `ListCapsules` and status show
//! (states from the supervision tree), and the manifest-level metadata of
//! `GetCapsuleMetadata`, for the built-in capsule and every discovered one.

use actix::ResponseFuture;

use super::discovery::{BUILTIN_CLI, Discovered};
use super::messages::{
    CapsuleInfo, CapsuleMetadata, CapsuleOrigin, CapsuleState, CommandInfo, HookInfo,
};
use super::settings::SettingsDir;
use super::{BUILTIN_COMMANDS, CapsulesActor, manifest};
use crate::supervisor::{ChildState, ChildSummary, GetChild};

impl CapsulesActor {
    pub(super) fn builtin_metadata(&self) -> CapsuleMetadata {
        CapsuleMetadata {
            name: BUILTIN_CLI.to_owned(),
            version: Some(self.deps.version.clone()),
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
            settings: Vec::new(),
        }
    }

    pub(super) fn listing(&self) -> ResponseFuture<Vec<CapsuleInfo>> {
        let kernel = self.deps.kernel.clone();
        let child_name = self.deps.builtin_child.clone();
        let builtin = self.builtin_metadata();
        let discovered: Vec<CapsuleInfo> = self
            .discovered
            .iter()
            .map(|d| self.discovered_info(d))
            .collect();
        Box::pin(async move {
            let child = kernel
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

    pub(super) fn discovered_info(&self, c: &Discovered) -> CapsuleInfo {
        let path = Some(c.dir.display().to_string());
        if let Some(why) = &c.untrusted {
            let manifest = c.manifest.as_ref().ok();
            return CapsuleInfo {
                name: c.name.clone(),
                version: manifest.map(|m| m.package.version.clone()),
                description: manifest.and_then(|m| m.package.description.clone()),
                state: CapsuleState::Untrusted,
                origin: c.origin,
                path,
                restarts: 0,
                error: Some(why.clone()),
            };
        }
        let manifest = match &c.manifest {
            Ok(m) => m,
            Err(e) => {
                return CapsuleInfo {
                    name: c.name.clone(),
                    version: None,
                    description: None,
                    state: CapsuleState::Invalid,
                    origin: c.origin,
                    path,
                    restarts: 0,
                    error: Some(e.clone()),
                };
            }
        };
        let (state, restarts, error) = match (
            self.load_errors.get(&c.name),
            self.deps.loaded.state(&c.name),
        ) {
            (Some(e), _) => (CapsuleState::Invalid, 0, Some(e.clone())),
            (None, Some((state, restarts, failure))) => {
                let state = capsule_state(state);
                let error = (state != CapsuleState::Running)
                    .then_some(failure)
                    .flatten();
                (state, restarts, error)
            }
            (None, None) => (CapsuleState::Stopped, 0, None),
        };
        CapsuleInfo {
            name: c.name.clone(),
            version: Some(manifest.package.version.clone()),
            description: manifest.package.description.clone(),
            state,
            origin: c.origin,
            path,
            restarts,
            error,
        }
    }
}

pub(super) fn capsule_state(state: ChildState) -> CapsuleState {
    match state {
        ChildState::Running => CapsuleState::Running,
        ChildState::Restarting => CapsuleState::Restarting,
        ChildState::Stopping | ChildState::Stopped => CapsuleState::Stopped,
        ChildState::Failed => CapsuleState::Failed,
    }
}

/// The built-in capsule's listing entry: its state is its actor's state.
pub(super) fn builtin_info(
    meta: CapsuleMetadata,
    child: Option<ChildSummary>,
    child_name: &str,
) -> CapsuleInfo {
    let (state, restarts, error) = match child {
        Some(c) => {
            let state = capsule_state(c.state);
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

pub(super) fn hooks(hooks: &[manifest::Hook]) -> Vec<HookInfo> {
    hooks
        .iter()
        .map(|h| HookInfo {
            topic: h.topic.clone(),
            priority: h.priority,
        })
        .collect()
}

/// The metadata of `c`; of its settings, only whether each is set is told (from `settings`).
pub(super) fn discovered_metadata(c: &Discovered, settings: &SettingsDir) -> CapsuleMetadata {
    let manifest = c.manifest.as_ref().ok();
    let values = settings.load(&c.name).unwrap_or_default();
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
        settings: manifest
            .map(|m| {
                let mut listed = super::settings::listing(m, &values);
                for setting in &mut listed {
                    setting.value = None;
                }
                listed
            })
            .unwrap_or_default(),
    }
}
