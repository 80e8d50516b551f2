//! The kernel's own requests: status, configuration, shutdown, the supervision tree, fault
//! injection, and publishing on the bus.

use std::sync::Arc;

use super::{Dispatch, ask_supervisor, call, record_durably};
use crate::bus::{BusError, GetBusStats, Publish, topic::validate_topic};
use crate::capsule::HostError;
use crate::capsule::sandbox::import_names;
use crate::capsules::ListCapsules;
use crate::error::KernelError;
use crate::metrics::Snapshot;
use crate::protocol::{
    ConfigReport, Fault, FaultInjected, ImportEffect, PROTOCOL_VERSION, RawValue, ShutdownAck,
    Status,
};
use crate::session::SessionDeps;
use crate::store;
use crate::supervisor::{GetTree, InjectFault, NodeKind, TreeNode};

/// `GetStatus`.
pub(super) fn status(d: Dispatch<'_>) {
    let deps = d.deps();
    d.run(status_of(deps));
}

/// `GetMetrics`: the live counters, with what the bus, the store, the connection table and
/// the tree count themselves, as OpenMetrics text.
pub(super) fn metrics(d: Dispatch<'_>) {
    let deps = d.deps();
    let tree = ask_supervisor(&deps.supervisor, GetTree, d.timeout());
    d.run(async move {
        let t = deps.limits.call_timeout;
        let a = &deps.services;
        let (bus, store, tree) = tokio::join!(
            a.bus.call(GetBusStats, t),
            a.store.call(store::GetStoreStats, t),
            tree
        );
        let mut restarts = Vec::new();
        if let Ok(root) = &tree {
            actor_restarts(root, &mut restarts);
        }
        let snapshot = Snapshot {
            uptime: deps.info.started_at.elapsed(),
            bus: bus.ok(),
            store: store.ok(),
            connections: deps.connections.counts(),
            restarts,
        };
        Ok(deps.metrics.encode(snapshot))
    });
}

/// Every worker and capsule of the tree, with its restarts. Sessions are never restarted,
/// and a supervisor's node counts its children's restarts in its window, not its own.
fn actor_restarts(node: &TreeNode, out: &mut Vec<(String, u32)>) {
    if matches!(node.kind, NodeKind::Worker | NodeKind::Capsule) {
        out.push((node.name.clone(), node.restarts));
    }
    for child in &node.children {
        actor_restarts(child, out);
    }
}

/// `GetConfig`: the settings the daemon's edge resolved at boot, and the audit policy.
pub(super) fn config(d: Dispatch<'_>) {
    let deps = d.deps();
    let report = ConfigReport {
        file: deps.info.config_file.display().to_string(),
        settings: deps.info.settings.clone(),
        audit_policy: deps.audit_policy.rules(),
    };
    d.run(async move { Ok(report) });
}

/// `Shutdown`: asks the kernel to stop; the first reason asked is the one recorded.
pub(super) fn shutdown(d: Dispatch<'_>, reason: String) {
    let reason = if reason.is_empty() {
        format!("requested by {}", d.session.source())
    } else {
        reason
    };
    let reason = d.session.deps.shutdown.request(reason);
    let ack = ShutdownAck {
        shutting_down: true,
        reason,
    };
    d.run(async move { Ok(ack) });
}

/// `GetSupervisionTree`.
pub(super) fn tree(d: Dispatch<'_>) {
    let ask = ask_supervisor(&d.session.deps.supervisor, GetTree, d.timeout());
    d.run(ask);
}

/// `InjectFault`: refused unless the daemon allows fault injection, and when the fault is
/// out of its bounds. The injection is checked, then recorded durably, then delivered: it is
/// in the audit log before it takes effect, so a storage fault cannot fail its own entry,
/// and a fault that takes the audit log down is recorded all the same. A delivery that
/// fails after the check (the target crashed meanwhile) is recorded too.
pub(super) fn inject_fault(d: Dispatch<'_>, target: String, fault: Fault) {
    if !d.session.deps.info.fault_injection {
        return d.refuse(&KernelError::FaultInjectionDisabled);
    }
    if let Err(why) = fault.validate().and_then(|()| check_import(&fault)) {
        return d.refuse(&KernelError::BadFault { fault, why });
    }
    tracing::warn!(connection = d.session.id, %target, %fault, "fault injection requested");
    let supervisor = d.session.deps.supervisor.clone();
    let audit = d.session.deps.services.audit.clone();
    let timeout = d.timeout();
    d.run_written(move |entry| async move {
        let msg = |dry_run| InjectFault {
            target: target.clone(),
            fault: fault.clone(),
            dry_run,
        };
        ask_supervisor(&supervisor, msg(true), timeout).await??;
        if let Some(entry) = entry {
            record_durably(&audit, entry, timeout).await;
        }
        ask_supervisor(&supervisor, msg(false), timeout).await??;
        Ok(FaultInjected { target, fault })
    });
}

/// An import fault must name one of the ABI's imports and fail with one of its codes.
fn check_import(fault: &Fault) -> Result<(), String> {
    let Fault::Import(import) = fault else {
        return Ok(());
    };
    if !import_names().any(|name| name == import.import) {
        let known = import_names().collect::<Vec<_>>().join(", ");
        return Err(format!(
            "`{}` is not a host import; the imports are: {known}",
            import.import
        ));
    }
    if let ImportEffect::Fail { code } = import.effect
        && !HostError::ALL.iter().any(|e| e.code() == code)
    {
        let codes = HostError::ALL
            .iter()
            .map(|e| format!("{} ({e:?})", e.code()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!(
            "{code} is not one of the ABI's error codes: {codes}"
        ));
    }
    Ok(())
}

/// `Publish`: only to the topics clients may publish to.
pub(super) fn publish(d: Dispatch<'_>, topic: String, payload: RawValue) {
    if let Err(e) = check_publish(&d.session.deps, &topic) {
        return d.refuse(&e);
    }
    let msg = Publish {
        topic,
        payload,
        source: d.session.source(),
    };
    let ask = call(&d.session.deps.services.bus, msg, d.timeout());
    d.run(async move { Ok(ask.await??) });
}

fn check_publish(deps: &SessionDeps, topic: &str) -> Result<(), KernelError> {
    validate_topic(topic).map_err(|rule| BusError::InvalidTopic {
        topic: topic.to_owned(),
        rule,
    })?;
    if deps.client_publish.iter().any(|p| p.matches(topic)) {
        Ok(())
    } else {
        Err(KernelError::PublishForbidden {
            topic: topic.to_owned(),
            allowed: deps
                .client_publish
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

async fn status_of(deps: Arc<SessionDeps>) -> Result<Status, KernelError> {
    let t = deps.limits.call_timeout;
    let a = &deps.services;
    let (bus, capsules, store) = tokio::join!(
        a.bus.call(GetBusStats, t),
        deps.registry.call(ListCapsules, t),
        a.store.call(store::GetStoreStats, t)
    );
    let mut unavailable = Vec::new();
    let bus = bus
        .inspect_err(|_| unavailable.push(a.bus.name().to_owned()))
        .ok();
    let capsules = capsules
        .inspect_err(|_| unavailable.push(deps.registry.name().to_owned()))
        .unwrap_or_default();
    let store = store
        .inspect_err(|_| unavailable.push(a.store.name().to_owned()))
        .ok();
    let info = &deps.info;
    Ok(Status {
        pid: info.pid,
        version: info.version.clone(),
        protocol: PROTOCOL_VERSION,
        session: info.session_name.clone(),
        session_id: info.session_id.to_string(),
        workspace: info.workspace.display().to_string(),
        socket: info.socket.display().to_string(),
        ephemeral: info.ephemeral,
        idle_grace_ms: info
            .ephemeral
            .then(|| u64::try_from(info.idle_grace.as_millis()).unwrap_or(u64::MAX)),
        uptime_ms: u64::try_from(info.started_at.elapsed().as_millis()).unwrap_or(u64::MAX),
        connected_clients: deps.connections.authenticated(),
        capsules,
        bus,
        store,
        unavailable,
        fault_injection: info.fault_injection,
        audit: deps.audit_health.get(),
        trust: Some(deps.trust.last()),
        logs_to_journal: info.hosting.logs_to_journal,
        service_manager: info.hosting.service_manager,
    })
}
