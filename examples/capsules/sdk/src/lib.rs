//! The guest side of the Astrid capsule host ABI, version 1.1, for Rust capsules built for
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
//! Events and interception are optional, next to `export_command!`:
//!
//! ```ignore
//! use astrid_capsule_sdk::{Value, Verdict, export_event, export_intercept};
//!
//! export_event!(on_event); // needs `[bus] subscribe` in Capsule.toml
//! export_intercept!(on_intercept); // needs `[[interceptor]]`
//!
//! fn on_event(topic: &str, payload: &Value) -> Result<(), String> {
//!     astrid_capsule_sdk::host::log(astrid_capsule_sdk::host::Level::Info, topic);
//!     Ok(())
//! }
//!
//! fn on_intercept(_topic: &str, payload: &Value) -> Verdict {
//!     match payload.as_str() {
//!         Some("no") => Verdict::Deny("not this".into()),
//!         _ => Verdict::Continue(None),
//!     }
//! }
//! ```
//!
//! [`export_event!`] defines `astrid_event`: the handler gets each event's topic and payload;
//! an `Err` is logged at warn level (the host ignores the reply either way).
//! [`export_intercept!`] defines `astrid_intercept`: the handler's [`Verdict`] becomes the
//! reply `{"action": ..., "payload"?: ..., "reason"?: ...}`. Both need `export_command!` in
//! the same crate (it defines `astrid_alloc`, and `astrid_command` is required anyway).
//!
//! [`msgpack`] and [`intercept`] build with no target; [`host`] and the export functions
//! exist only for `wasm32`.

pub mod intercept;
pub mod msgpack;

pub use intercept::Verdict;
pub use msgpack::{Command, Event, Value};

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

/// Defines the capsule's export `astrid_event`, calling
/// `$handler: fn(&str, &Value) -> Result<(), String>` with the topic and payload of each
/// event of its `[bus] subscribe` patterns. An `Err` is logged at warn level. Use it with
/// [`export_command!`], which defines `astrid_alloc`.
#[macro_export]
macro_rules! export_event {
    ($handler:path) => {
        /// Receives one bus event (ABI v1 export): reads `{"topic", "payload"}` at
        /// `ptr..ptr + len`; returns 0, as the host ignores the reply.
        ///
        /// # Safety
        ///
        /// `ptr..ptr + len` must be the bytes of one `astrid_alloc(len)`, which this call
        /// takes over (the host's contract).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn astrid_event(ptr: *mut u8, len: usize) -> i64 {
            // SAFETY: passed on from the host's contract, above.
            unsafe { $crate::abi::event(ptr, len, $handler) }
        }
    };
}

/// Defines the capsule's export `astrid_intercept`, calling
/// `$handler: fn(&str, &Value) -> Verdict` with the topic and payload of each event that
/// matches one of its `[[interceptor]]` patterns. Use it with [`export_command!`], which
/// defines `astrid_alloc`.
#[macro_export]
macro_rules! export_intercept {
    ($handler:path) => {
        /// Decides on one event before it is delivered (ABI v1 export): reads
        /// `{"topic", "payload"}` at `ptr..ptr + len` and returns where the verdict is, as
        /// `ptr << 32 | len`.
        ///
        /// # Safety
        ///
        /// `ptr..ptr + len` must be the bytes of one `astrid_alloc(len)`, which this call
        /// takes over (the host's contract).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn astrid_intercept(ptr: *mut u8, len: usize) -> i64 {
            // SAFETY: passed on from the host's contract, above.
            unsafe { $crate::abi::intercept(ptr, len, $handler) }
        }
    };
}
