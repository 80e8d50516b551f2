//! The one mapping from kernel errors to wire codes: no other file decides which
//! [`ErrorCode`] an error gets. The conversation's own errors (`ProtocolError`) are mapped
//! in the protocol crate, beside them.

use astrid_protocol::{ErrorBody, ErrorCode};

use super::KernelError;
use crate::approvals::ApprovalError;
use crate::audit::AuditError;
use crate::bus::BusError;
use crate::caps::CapsError;
use crate::capsule::CapsuleError;
use crate::capsule::crashes::CrashError;
use crate::mcp::McpError;
use crate::runtime::ReplyError;
use crate::store::StoreError;
use crate::supervisor::{CallError, SupervisorError};
use crate::trust::TrustError;
use crate::trust::snapshot::SnapshotError;
use crate::vfs::VfsError;

impl From<&KernelError> for ErrorBody {
    fn from(e: &KernelError) -> Self {
        let code = match e {
            KernelError::Call(CallError::NotStarted { .. } | CallError::Unavailable { .. })
            | KernelError::Bus(BusError::UnknownSubscriber(_) | BusError::Stopped) => {
                ErrorCode::Unavailable
            }
            KernelError::Call(CallError::Timeout { .. }) => ErrorCode::Timeout,
            KernelError::Capsules(e) => capsule_code(e),
            KernelError::Crash(CrashError::Damaged { .. } | CrashError::Io { .. }) => {
                ErrorCode::IoError
            }
            KernelError::Bus(BusError::InvalidTopic { .. } | BusError::InvalidPattern { .. }) => {
                ErrorCode::InvalidTopic
            }
            KernelError::Supervisor(SupervisorError::UnknownChild(_))
            | KernelError::Approval(ApprovalError::Unknown(_))
            | KernelError::Vfs(VfsError::NotFound { .. })
            | KernelError::Crash(CrashError::NotFound(_)) => ErrorCode::NotFound,
            KernelError::Supervisor(SupervisorError::NotRunning { .. }) => ErrorCode::NotRunning,
            KernelError::Supervisor(SupervisorError::ShuttingDown) | KernelError::ShuttingDown => {
                ErrorCode::ShuttingDown
            }
            KernelError::PublishForbidden { .. }
            | KernelError::Bus(BusError::Denied { .. })
            | KernelError::Caps(CapsError::FromManifest { .. })
            | KernelError::Vfs(VfsError::Reserved { .. }) => ErrorCode::Forbidden,
            KernelError::FaultInjectionDisabled => ErrorCode::FaultInjectionDisabled,
            KernelError::Store(StoreError::UnknownNamespace(_)) => ErrorCode::UnknownNamespace,
            KernelError::Store(StoreError::QuotaExceeded { .. }) => ErrorCode::QuotaExceeded,
            KernelError::Store(StoreError::InvalidKey { .. })
            | KernelError::Caps(CapsError::InvalidSubject(_) | CapsError::InvalidResource(_))
            | KernelError::Vfs(VfsError::InvalidPath { .. })
            | KernelError::BadFault { .. }
            | KernelError::Crash(CrashError::BadId(_))
            | KernelError::Supervisor(
                SupervisorError::Duplicate(_) | SupervisorError::FaultNotApplicable { .. },
            ) => ErrorCode::InvalidArgument,
            KernelError::Store(StoreError::ValueTooLarge { .. })
            | KernelError::Bus(BusError::PayloadTooLarge { .. } | BusError::TooManyPatterns(_))
            | KernelError::Vfs(VfsError::TooLarge { .. }) => ErrorCode::TooLarge,
            KernelError::Store(StoreError::Storage { .. } | StoreError::Aborted)
            | KernelError::Approval(ApprovalError::Grant { .. })
            | KernelError::Caps(CapsError::Storage { .. })
            | KernelError::Audit(AuditError::Storage { .. } | AuditError::Aborted) => {
                ErrorCode::StorageFailed
            }
            KernelError::Vfs(VfsError::Escape { .. } | VfsError::Symlink { .. }) => {
                ErrorCode::PathEscape
            }
            KernelError::Vfs(VfsError::Io { .. }) => ErrorCode::IoError,
            KernelError::Mcp(e) => match e {
                McpError::UnknownServer(_) => ErrorCode::NotFound,
                McpError::Invalid { .. } | McpError::Failed { .. } => ErrorCode::McpFailed,
                McpError::NotReady(_) | McpError::Gone { .. } => ErrorCode::Unavailable,
                McpError::Deadline { .. } => ErrorCode::Timeout,
                McpError::Remote { .. } => ErrorCode::McpError,
                McpError::BadArguments(_) => ErrorCode::InvalidArgument,
                McpError::Denied { .. } => ErrorCode::Forbidden,
            },
            KernelError::TaskFailed { .. } => ErrorCode::Internal,
            KernelError::Trust(e) => match e {
                TrustError::Path { .. }
                | TrustError::Snapshot {
                    source: SnapshotError::Unsupported { .. },
                    ..
                } => ErrorCode::InvalidArgument,
                TrustError::Snapshot {
                    source: SnapshotError::TooLarge(_),
                    ..
                } => ErrorCode::TooLarge,
                TrustError::Snapshot {
                    source: SnapshotError::Io { .. },
                    ..
                }
                | TrustError::Store(_) => ErrorCode::IoError,
            },
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

impl From<&ReplyError> for ErrorBody {
    fn from(e: &ReplyError) -> Self {
        let code = match e {
            ReplyError::TooLarge { .. } => ErrorCode::TooLarge,
            ReplyError::Encoding(_) | ReplyError::Unanswered => ErrorCode::Internal,
        };
        Self {
            code,
            message: e.to_string(),
        }
    }
}

/// The code of a capsule error, wherever it is met: in the router (through
/// [`KernelError`]) or in a capsule's own answer (which writes it straight into the
/// connection).
fn capsule_code(e: &CapsuleError) -> ErrorCode {
    match e {
        CapsuleError::Restarting(_) => ErrorCode::Unavailable,
        CapsuleError::Deadline { .. } => ErrorCode::Timeout,
        CapsuleError::Failed { .. } => ErrorCode::CapsuleFailed,
        CapsuleError::Crashed { .. } => ErrorCode::CapsuleCrashed,
        CapsuleError::Guest { .. } => ErrorCode::CapsuleError,
        CapsuleError::NotFound(_)
        | CapsuleError::UnknownCommand(_)
        | CapsuleError::BuiltinCommand(_)
        | CapsuleError::UnknownSetting { .. } => ErrorCode::NotFound,
        CapsuleError::InputTooLarge { .. } => ErrorCode::TooLarge,
        CapsuleError::BadSetting { .. } | CapsuleError::BadInstall { .. } => ErrorCode::BadRequest,
        CapsuleError::SettingsUnsaved { .. } => ErrorCode::StorageFailed,
    }
}

impl From<&CapsuleError> for ErrorBody {
    fn from(e: &CapsuleError) -> Self {
        Self {
            code: capsule_code(e),
            message: e.to_string(),
        }
    }
}
