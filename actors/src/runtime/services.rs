//! The kernel services as the floors above them see them: one bundle of handles to the bus,
//! the audit log, the key-value store, the capability store, the workspace files and the
//! approvals. Sessions
//! and capsules' host calls are given this bundle, never the whole tree.

use crate::approvals::ApprovalsActor;
use crate::audit::AuditActor;
use crate::bus::BusActor;
use crate::caps::CapabilitiesActor;
use crate::store::StoreActor;
use crate::supervisor::ChildRef;
use crate::vfs::VfsActor;

/// The current addresses of the kernel services (each swapped on restart: a clone follows
/// the restarts of the actor it names).
#[derive(Debug, Clone)]
pub struct Services {
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
    /// Approvals of capsules' `ask:` grants.
    pub approvals: ChildRef<ApprovalsActor>,
}
