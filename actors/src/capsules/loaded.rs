//! The capsules that are loaded: shared between the registry (which loads and unloads
//! them, and sweeps their call queues for deadlines while calls wait), the capsules supervisor's event sink
//! (which tracks whether each runs, restarts or has failed, and empties the call queue of
//! one whose actor ended), and sessions (which queue `InvokeCommand` calls through it
//! without a hop through the registry). It lives as long as the kernel, so a restarted
//! registry finds what its predecessor loaded.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use super::BUILTIN_COMMANDS;
use super::messages::CapsuleError;
use crate::capsule::{CallQueue, LingerSlots, RunnerSlot, Sweeper};
use crate::supervisor::{ChildState, SupervisorEvent};

pub use crate::capsule::{CHILD_PREFIX, child_name};

/// One loaded capsule.
#[derive(Debug)]
pub(crate) struct Capsule {
    /// Hash of its manifest and module when loaded.
    pub(crate) fingerprint: u64,
    /// Its folder.
    pub(crate) dir: PathBuf,
    /// Its name, shared by the answers to its calls.
    pub(crate) name: Arc<str>,
    /// Its command calls.
    pub(crate) queue: Arc<CallQueue>,
    /// Its current incarnation's runner (its thread, when it has one).
    pub(crate) runner: RunnerSlot,
    /// Its slash commands.
    pub(crate) commands: Vec<String>,
    /// As its supervisor last reported.
    pub(crate) state: ChildState,
    /// Restarts so far.
    pub(crate) restarts: u32,
    /// Its last failure.
    pub(crate) last_failure: Option<String>,
}

/// Where a command goes.
#[derive(Debug, Clone)]
pub struct Route {
    /// The capsule that offers it.
    pub capsule: Arc<str>,
    /// The capsule's call queue.
    pub queue: Arc<CallQueue>,
}

#[derive(Debug, Default)]
struct Inner {
    capsules: BTreeMap<String, Capsule>,
    /// Command name to capsule name.
    commands: HashMap<String, String>,
}

/// The table of loaded capsules.
#[derive(Debug, Default)]
pub struct LoadedCapsules {
    inner: RwLock<Inner>,
    /// How many capsule threads may linger by their queues at once, shared by all queues.
    linger_slots: Arc<LingerSlots>,
    /// The deadline sweep, armed by the queues' calls.
    sweeper: Arc<Sweeper>,
}

impl LoadedCapsules {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lingering budget every capsule's queue shares (see [`LingerSlots`]).
    pub fn linger_slots(&self) -> &Arc<LingerSlots> {
        &self.linger_slots
    }

    /// The deadline sweep every capsule's queue arms (see [`Sweeper`]).
    pub fn sweeper(&self) -> &Arc<Sweeper> {
        &self.sweeper
    }

    /// Whether capsule `name` has a thread now (running or lingering), if it is loaded.
    pub fn has_thread(&self, name: &str) -> Option<bool> {
        let inner = self.read();
        let capsule = inner.capsules.get(name)?;
        Some(capsule.runner.get().is_some_and(|r| r.has_thread()))
    }

    /// Where `command` goes, or why it cannot go anywhere now.
    ///
    /// # Errors
    ///
    /// [`CapsuleError::UnknownCommand`] ([`CapsuleError::BuiltinCommand`] for a command of
    /// the interactive session), [`CapsuleError::Failed`] past the capsule's
    /// budget, [`CapsuleError::Restarting`] during its backoff.
    pub fn route(&self, command: &str) -> Result<Route, CapsuleError> {
        // As `GetCommands` lists it, or without its slash.
        let command = command.strip_prefix('/').unwrap_or(command);
        let inner = self.read();
        let Some(name) = inner.commands.get(command) else {
            let builtin = BUILTIN_COMMANDS.iter().any(|(name, _)| *name == command);
            return Err(if builtin {
                CapsuleError::BuiltinCommand(command.to_owned())
            } else {
                CapsuleError::UnknownCommand(command.to_owned())
            });
        };
        let capsule = &inner.capsules[name];
        match capsule.state {
            ChildState::Failed => Err(CapsuleError::Failed {
                capsule: name.clone(),
                reason: capsule.last_failure.clone().unwrap_or_default(),
            }),
            ChildState::Running => Ok(Route {
                capsule: Arc::clone(&capsule.name),
                queue: Arc::clone(&capsule.queue),
            }),
            _ => Err(CapsuleError::Restarting(name.clone())),
        }
    }

    /// The state, restarts and last failure of a loaded capsule.
    pub(crate) fn state(&self, name: &str) -> Option<(ChildState, u32, Option<String>)> {
        self.read()
            .capsules
            .get(name)
            .map(|c| (c.state, c.restarts, c.last_failure.clone()))
    }

    /// Fingerprints and folders of what is loaded.
    pub(crate) fn fingerprints(&self) -> BTreeMap<String, (u64, PathBuf, ChildState)> {
        self.read()
            .capsules
            .iter()
            .map(|(n, c)| (n.clone(), (c.fingerprint, c.dir.clone(), c.state)))
            .collect()
    }

    /// Adds a capsule being started; its commands route to it unless another capsule has
    /// them already (those are returned, and not routed).
    pub(crate) fn insert(&self, name: &str, capsule: Capsule) -> Vec<String> {
        let mut inner = self.write();
        let mut taken = Vec::new();
        for command in &capsule.commands {
            match inner.commands.get(command) {
                Some(owner) if owner != name => taken.push(command.clone()),
                _ => {
                    inner.commands.insert(command.clone(), name.to_owned());
                }
            }
        }
        inner.capsules.insert(name.to_owned(), capsule);
        taken
    }

    /// Removes a capsule (its commands stop routing at once); its actor is stopped by its
    /// supervisor, and ends its runner.
    pub(crate) fn remove(&self, name: &str) {
        let mut inner = self.write();
        inner.commands.retain(|_, owner| owner != name);
        inner.capsules.remove(name);
    }

    /// Forgets everything (a new capsules supervisor starts with no children), ending the
    /// capsules' runners (their actors died with the old supervisor).
    pub(crate) fn clear(&self) {
        let mut inner = self.write();
        inner.commands.clear();
        for (_, capsule) in std::mem::take(&mut inner.capsules) {
            if let Some(runner) = capsule.runner.get() {
                runner.close();
            }
        }
    }

    /// Follows the capsules supervisor's reports.
    pub(crate) fn on_event(&self, event: &SupervisorEvent) {
        let Some(report) = event.report() else { return };
        let Some(name) = report.child.strip_prefix(CHILD_PREFIX) else {
            return;
        };
        let state = report.state;
        let mut ended = None;
        if let Some(capsule) = self.write().capsules.get_mut(name) {
            if state != ChildState::Running {
                ended = Some(Arc::clone(&capsule.queue));
            }
            capsule.state = state;
            if let Some(n) = report.restarts {
                capsule.restarts = n;
            }
            if let Some(reason) = report.failure {
                capsule.last_failure = Some(reason.to_owned());
            }
        }
        if let Some(queue) = ended {
            // Its actor has ended: what it had queued will never run.
            queue.clear();
        }
    }

    /// Answers `timeout` to every call past its deadline (see [`CallQueue::sweep`]);
    /// returns whether calls still wait or run.
    pub(crate) fn sweep(&self) -> bool {
        let now = Instant::now();
        let queues: Vec<Arc<CallQueue>> = self
            .read()
            .capsules
            .values()
            .map(|c| Arc::clone(&c.queue))
            .collect();
        let mut pending = false;
        for queue in queues {
            queue.sweep(now);
            pending |= !queue.is_empty();
        }
        pending
    }

    /// Whether any call waits or runs.
    pub(crate) fn pending(&self) -> bool {
        self.read().capsules.values().any(|c| !c.queue.is_empty())
    }

    /// Commands of loaded capsules, in capsule order: `(command, capsule)`.
    pub(crate) fn commands(&self) -> Vec<(String, String)> {
        let inner = self.read();
        let mut all: Vec<(String, String)> = inner
            .commands
            .iter()
            .map(|(c, n)| (c.clone(), n.clone()))
            .collect();
        all.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
        all
    }
}
