//! What the kernel hands the floors above its services (sessions, the listener, capsules):
//! the bundle of service handles, the limits, facts about the daemon, the handle that starts
//! a shutdown, and a connection's outbox with the handle that answers one request
//! ([`ReplyTo`]) from any thread. Nothing here imports the kernel, the sessions or the capsules, so they
//! can all use it without an import loop.

mod info;
mod limits;
pub mod outbox;
mod services;
mod shutdown;

pub use self::info::{Hosting, KernelInfo};
pub use self::limits::{CAPSULE_LINGER, Limits};
pub use self::outbox::{ReplyError, ReplyTo};
pub use self::services::Services;
pub(crate) use self::shutdown::KernelFiles;
pub use self::shutdown::{ShutdownHandle, ShutdownHook};
