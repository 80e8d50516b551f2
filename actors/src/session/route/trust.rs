//! The trust requests (`TrustWorkspace`, `UntrustWorkspace`, `ListTrust`): run on the
//! blocking pool (they read and hash the workspace's `.astrid/`), and, when the workspace is
//! the daemon's own, followed at once by a rescan of the capsule folders and the `mcp.toml`
//! files, so that what the new trust allows starts and what it no longer allows stops.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Dispatch, blocking, call};
use crate::capsules::ReloadCapsules;
use crate::error::KernelError;
use crate::protocol::TrustReport;
use crate::session::SessionDeps;

/// `ListTrust`.
pub(super) fn list(d: Dispatch<'_>) {
    let trust = Arc::clone(&d.session.deps.trust);
    d.run(blocking("listed trusted workspaces", move || {
        Ok(trust.list()?)
    }));
}

/// `TrustWorkspace` (`trusting`) and `UntrustWorkspace`.
pub(super) fn change(mut d: Dispatch<'_>, path: Option<String>, trusting: bool) {
    let deps = d.deps();
    if path.is_none() {
        d.set_target(deps.trust.workspace().display().to_string());
    }
    d.run(apply(deps, path.map(PathBuf::from), trusting));
}

/// Trusts or untrusts `path`, then applies the change when it is the daemon's workspace.
async fn apply(
    deps: Arc<SessionDeps>,
    path: Option<PathBuf>,
    trusting: bool,
) -> Result<TrustReport, KernelError> {
    let trust = Arc::clone(&deps.trust);
    let (info, removed, own) = blocking("changed a workspace's trust", move || {
        let own = trust.is_own(path.as_deref());
        let (info, removed) = if trusting {
            (trust.trust(path.as_deref())?, false)
        } else {
            trust.untrust(path.as_deref())?
        };
        Ok((info, removed, own))
    })
    .await?;
    let mut report = TrustReport {
        trust: info,
        removed,
        capsules: None,
        mcp: None,
    };
    if own {
        let t = deps.limits.call_timeout;
        report.capsules = Some(call(&deps.registry, ReloadCapsules, t).await?);
        let launcher = deps.mcp.clone();
        let mcp = blocking("reloaded the MCP configuration", move || {
            Ok(launcher.reload())
        });
        report.mcp = Some(mcp.await?);
    }
    Ok(report)
}
