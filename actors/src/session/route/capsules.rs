//! The capsule registry's requests, and `InvokeCommand`, which goes straight to the capsule's
//! queue: the capsule's actor writes the answer into the connection itself.

use super::{Dispatch, call};
use crate::capsule::{Answer, Call};
use crate::capsules::loaded::Route;
use crate::capsules::{
    GetCapsuleMetadata, GetCommands, InspectCapsule, InstallCapsule, ListCapsules, ListSettings,
    ReloadCapsules, SetSetting, UninstallCapsule,
};
use crate::error::KernelError;
use crate::protocol::ErrorBody;

/// `ListCapsules`.
pub(super) fn list(d: Dispatch<'_>) {
    let ask = call(&d.session.deps.registry, ListCapsules, d.timeout());
    d.run(ask);
}

/// `ReloadCapsules`.
pub(super) fn reload(d: Dispatch<'_>) {
    let ask = call(&d.session.deps.registry, ReloadCapsules, d.timeout());
    d.run(ask);
}

/// `GetCommands`.
pub(super) fn commands(d: Dispatch<'_>) {
    let ask = call(&d.session.deps.registry, GetCommands, d.timeout());
    d.run(ask);
}

/// `GetCapsuleMetadata`.
pub(super) fn metadata(d: Dispatch<'_>, name: Option<String>) {
    let ask = call(
        &d.session.deps.registry,
        GetCapsuleMetadata { name },
        d.timeout(),
    );
    d.run(async move { Ok(ask.await??) });
}

/// `ListSettings`.
pub(super) fn settings(d: Dispatch<'_>, capsule: String) {
    let ask = call(
        &d.session.deps.registry,
        ListSettings { capsule },
        d.timeout(),
    );
    d.run(async move { Ok(ask.await??) });
}

/// `SetSetting` (a value) and `UnsetSetting` (`None`): answered once durable.
pub(super) fn set_setting(d: Dispatch<'_>, capsule: String, name: String, value: Option<String>) {
    let msg = SetSetting {
        capsule,
        name,
        value,
    };
    let ask = call(&d.session.deps.registry, msg, d.timeout());
    d.run(async move { Ok(ask.await??) });
}

/// `InspectCapsule`: validating a folder compiles its module, which may take a while: the
/// deadline is at least 60 s.
pub(super) fn inspect(d: Dispatch<'_>, path: String) {
    let timeout = d.timeout().max(INSTALL_TIMEOUT);
    let ask = call(&d.session.deps.registry, InspectCapsule { path }, timeout);
    d.run(async move { Ok(ask.await??) });
}

/// `InstallCapsule`, answered once the capsules are reloaded.
pub(super) fn install(d: Dispatch<'_>, path: String, digest: String) {
    let timeout = d.timeout().max(INSTALL_TIMEOUT);
    let ask = call(
        &d.session.deps.registry,
        InstallCapsule { path, digest },
        timeout,
    );
    d.run(async move { Ok(ask.await??) });
}

/// `UninstallCapsule`, answered once the capsules are reloaded.
pub(super) fn uninstall(d: Dispatch<'_>, name: String) {
    let ask = call(
        &d.session.deps.registry,
        UninstallCapsule { name },
        d.timeout(),
    );
    d.run(async move { Ok(ask.await??) });
}

/// The least deadline of inspecting and installing, which compile a module.
const INSTALL_TIMEOUT: std::time::Duration = std::time::Duration::from_mins(1);

/// `InvokeCommand`: queued for the capsule's actor through the table of loaded capsules; the
/// actor writes the answer straight into this connection. Not audited itself.
pub(super) fn invoke(d: Dispatch<'_>, command: String, args: Vec<String>) {
    let (session, id) = (d.session, d.id);
    let Route { capsule, queue } = match session.deps.capsules.route(&command) {
        Ok(route) => route,
        Err(e) => return session.reply_err(Some(id), &ErrorBody::from(&KernelError::from(e))),
    };
    let reply = match session.take_reply(id) {
        Ok(reply) => reply,
        Err(error) => return session.reply_err(Some(id), &ErrorBody::from(&error)),
    };
    queue.push(Call {
        command,
        args,
        answer: Answer::new(capsule, reply),
    });
}
