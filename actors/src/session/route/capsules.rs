//! The capsule registry's requests, and `InvokeCommand`, which goes straight to the capsule's
//! queue: the capsule's actor writes the answer into the connection itself.

use super::{Dispatch, call};
use crate::capsule::{Answer, Call};
use crate::capsules::loaded::Route;
use crate::capsules::{
    GetCapsuleMetadata, GetCommands, ListCapsules, ListSettings, ReloadCapsules, SetSetting,
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

/// `InvokeCommand`: queued for the capsule's actor through the table of loaded capsules; the
/// actor writes the answer straight into this connection. Not audited itself.
pub(super) fn invoke(d: Dispatch<'_>, command: String, args: Vec<String>) {
    let (session, id) = (d.session, d.id);
    let Route { capsule, queue } = match session.deps.capsules.route(&command) {
        Ok(route) => route,
        Err(e) => return session.reply_err(Some(id), &ErrorBody::from(&KernelError::from(e))),
    };
    let reply = match session.out.take(id, session.deps.limits.max_in_flight) {
        Ok(reply) => reply,
        Err(error) => return session.reply_err(Some(id), &ErrorBody::from(&error)),
    };
    queue.push(Call {
        command,
        args,
        answer: Answer::new(capsule, reply),
    });
}
