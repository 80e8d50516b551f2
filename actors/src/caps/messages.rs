//! Messages handled by [`CapabilitiesActor`](super::CapabilitiesActor), grants, and errors.
//!
//! Senders: the session router (`GrantCapability`, `RevokeCapability`, `ListCapabilities`),
//! the capsule loader (manifest grants), and every host function ([`Check`], [`Refused`]).

use std::collections::BTreeMap;
use std::time::Duration;

use actix::Message;

use super::resource::{Access, ResourceError};
pub use astrid_protocol::payload::caps::{Grant, GrantSource};

/// Why a capability operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// Subjects are capsule names: lowercase letters, digits and `-`.
    #[error("invalid subject `{0}`: capsule names are lowercase letters, digits and '-'")]
    InvalidSubject(String),
    /// The resource does not parse.
    #[error(transparent)]
    InvalidResource(#[from] ResourceError),
    /// Manifest grants change with the manifest, not through the API.
    #[error(
        "`{resource}` is granted to `{subject}` by its manifest; edit the manifest and reload to remove it"
    )]
    FromManifest {
        /// Subject.
        subject: String,
        /// Resource.
        resource: String,
    },
    /// The database failed; nothing was changed.
    #[error("the capability database failed during {op}; nothing was changed")]
    Storage {
        /// What was being done.
        op: &'static str,
        /// The database error.
        #[source]
        source: redb::Error,
    },
}

/// Grants `resource` to `subject` (idempotent); persisted before the answer.
#[derive(Debug, Message)]
#[rtype(result = "Result<Grant, CapsError>")]
pub struct GrantCapability {
    /// Capsule name.
    pub subject: String,
    /// Resource.
    pub resource: String,
}

/// Revokes a runtime grant; answers whether it existed.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, CapsError>")]
pub struct RevokeCapability {
    /// Capsule name.
    pub subject: String,
    /// Resource, exactly as granted.
    pub resource: String,
}

/// Lists grants, of one subject or of all.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Grant>")]
pub struct ListCapabilities {
    /// Only this subject's.
    pub subject: Option<String>,
}

/// Replaces a subject's manifest grants (at capsule load; empty to clear).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), CapsError>")]
pub struct SetManifestGrants {
    /// Capsule name.
    pub subject: String,
    /// Grants from its manifest, as written.
    pub resources: Vec<String>,
    /// How long the user has to approve each use of some of its `ask:` grants (by the grant
    /// as written); the others wait until the call's deadline.
    pub approval_timeouts: BTreeMap<String, Duration>,
}

/// Whether `subject` may perform `access`. Denied unless a grant allows it (a denial is
/// audited), or allowed once the user approves it when only an `ask:` grant covers it.
#[derive(Debug, Message)]
#[rtype(result = "Verdict")]
pub struct Check {
    /// Capsule name.
    pub subject: String,
    /// What it attempts.
    pub access: Access,
}

/// The answer to [`Check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A grant allows it.
    Allowed,
    /// Nothing allows it (audited).
    Denied,
    /// Only an `ask:` grant covers it: allowed if the user approves.
    Ask {
        /// That grant, as written.
        grant: String,
        /// How long the user has to answer; none: until the call's deadline.
        timeout: Option<Duration>,
    },
}

/// A denial decided elsewhere (the VFS refusing a capsule's path: a symbolic link, a
/// reserved path), audited like the store's own, within the same budget.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Refused {
    /// Capsule name.
    pub subject: String,
    /// What it attempted.
    pub access: Access,
    /// Why it was refused, for the audit log (`denied: ...`).
    pub reason: String,
}
