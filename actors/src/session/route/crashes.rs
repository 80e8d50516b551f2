//! The crash-bundle requests (`ListCrashes`, `GetCrash`, `RemoveCrash`, `ReplayCrash`):
//! file work and replays, run on the blocking pool (see `capsule/crashes.rs` and
//! `capsule/replay.rs`).

use super::{Dispatch, blocking};
use crate::capsule::replay::replay;

/// `ListCrashes`.
pub(super) fn list(d: Dispatch<'_>) {
    let store = d.session.deps.crashes.clone();
    d.run(blocking("listed crash bundles", move || Ok(store.list()?)));
}

/// `GetCrash`.
pub(super) fn get(d: Dispatch<'_>, id: String) {
    let store = d.session.deps.crashes.clone();
    d.run(blocking("read a crash bundle", move || Ok(store.get(&id)?)));
}

/// `RemoveCrash`.
pub(super) fn remove(d: Dispatch<'_>, id: Option<String>) {
    let store = d.session.deps.crashes.clone();
    d.run(blocking("removed crash bundles", move || {
        let removed = store.remove(id.as_deref())?;
        Ok(crate::protocol::CrashesRemoved { removed })
    }));
}

/// `ReplayCrash`.
pub(super) fn replay_crash(d: Dispatch<'_>, id: String) {
    let store = d.session.deps.crashes.clone();
    d.run(blocking("replayed a crash", move || {
        Ok(replay(&store, &id)?)
    }));
}
