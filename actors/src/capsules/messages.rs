//! Messages handled by [`CapsulesActor`](super::CapsulesActor) and the listings it returns.
//!
//! Senders: the session router (for `ListCapsules`, `ReloadCapsules`, `GetCommands`,
//! `GetCapsuleMetadata` and status) and the kernel at boot.

pub use crate::capsule::CapsuleError;
use actix::Message;
pub use astrid_protocol::payload::capsules::{
    CapsuleInfo, CapsuleMetadata, CapsuleOrigin, CapsuleState, CommandInfo, HookInfo, ReloadReport,
};

/// Lists every capsule.
#[derive(Debug, Message)]
#[rtype(result = "Vec<CapsuleInfo>")]
pub struct ListCapsules;

/// Rescans the capsule folders.
#[derive(Debug, Message)]
#[rtype(result = "ReloadReport")]
pub struct ReloadCapsules;

/// Lists the slash commands of running capsules.
#[derive(Debug, Message)]
#[rtype(result = "Vec<CommandInfo>")]
pub struct GetCommands;

/// Manifest metadata of one capsule, or of all when `name` is `None`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<CapsuleMetadata>, CapsuleError>")]
pub struct GetCapsuleMetadata {
    /// Capsule name.
    pub name: Option<String>,
}
