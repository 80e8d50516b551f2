//! The guest side of the Astrid capsule host ABI, version 1, for Rust capsules built for
//! `wasm32-unknown-unknown`. No dependencies.
//!
//! A capsule is a `cdylib` that names its command handler once:
//!
//! ```ignore
//! use astrid_capsule_sdk::{Command, Value, export_command};
//!
//! export_command!(handle);
//!
//! fn handle(cmd: &Command) -> Result<Value, String> {
//!     match cmd.command.as_str() {
//!         "ping" => Ok("pong".into()),
//!         other => Err(format!("unknown command `{other}`")),
//!     }
//! }
//! ```
//!
//! [`export_command!`] defines the exports `astrid_alloc` and `astrid_command` (the linker
//! exports `memory`). A handler's `Ok` value is the reply; an `Err` message becomes the reply
//! `{"error": message}`, which the client sees as `capsule_error`. A panic is logged at error
//! level and then traps, which the host treats as a crash (`capsule_crashed`).
//!
//! Memory: `astrid_alloc` allocates with the global allocator; the bytes the host writes
//! there (the command input, a `kv_get` value, a `vfs_read` file) are taken back as a `Vec`
//! and freed when dropped. The reply is kept until the next call, when it is freed. A capsule
//! thus uses memory in proportion to what one call needs, however many calls it serves.
//!
//! [`msgpack`] builds with no target; [`host`] and the export functions exist only for
//! `wasm32`.

pub mod msgpack;

pub use msgpack::{Command, Value};

#[cfg(target_arch = "wasm32")]
pub mod host;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod abi;

/// Defines the capsule's exports `astrid_alloc` and `astrid_command`, the latter calling
/// `$handler: fn(&Command) -> Result<Value, String>` for each command.
#[macro_export]
macro_rules! export_command {
    ($handler:path) => {
        /// Room for `len` bytes that the host writes (ABI v1 export).
        #[unsafe(no_mangle)]
        pub extern "C" fn astrid_alloc(len: usize) -> *mut u8 {
            $crate::abi::alloc(len)
        }

        /// Runs one command (ABI v1 export): reads the input at `ptr..ptr + len` and
        /// returns where the reply is, as `ptr << 32 | len`.
        ///
        /// # Safety
        ///
        /// `ptr..ptr + len` must be the bytes of one `astrid_alloc(len)`, which this call
        /// takes over (the host's contract).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn astrid_command(ptr: *mut u8, len: usize) -> i64 {
            // SAFETY: passed on from the host's contract, above.
            unsafe { $crate::abi::command(ptr, len, $handler) }
        }
    };
}
