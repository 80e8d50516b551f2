//! What [`export_command!`](crate::export_command), [`export_event!`](crate::export_event)
//! and [`export_intercept!`](crate::export_intercept) expand to: the allocator the host
//! writes into, taking those bytes back, and running one command, event or interception.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, Once, PoisonError};

use crate::host::{self, Level};
use crate::intercept::Verdict;
use crate::msgpack::{self, Command, Value};

/// The last reply: the host reads it after the export returns, so it lives until the next
/// call begins. (A `Mutex` only for a safe `static`: wasm32 here has no threads.)
static REPLY: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// `len` bytes from the global allocator (a dangling, never-freed address for 0 bytes).
/// Out of memory aborts, which traps.
#[must_use]
pub fn alloc(len: usize) -> *mut u8 {
    if len == 0 {
        return NonNull::dangling().as_ptr();
    }
    let Ok(layout) = Layout::array::<u8>(len) else {
        std::process::abort();
    };
    // SAFETY: the layout's size is not zero.
    let ptr = unsafe { std::alloc::alloc(layout) };
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    ptr
}

/// Takes back the `len` bytes at `ptr` that the host wrote into memory from [`alloc`].
///
/// # Safety
///
/// `ptr` must come from `alloc(len)`, with `len` bytes written, and not be taken twice.
#[allow(clippy::same_length_and_capacity)] // exactly the capacity `alloc` allocated
pub unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    // SAFETY: allocated by the global allocator with `Layout::array::<u8>(len)` (the
    // caller's guarantee), so it is a `Vec<u8>` of capacity `len`, all initialised.
    unsafe { Vec::from_raw_parts(ptr, len, len) }
}

/// `ptr << 32 | len`.
#[must_use]
pub fn pack(ptr: *const u8, len: usize) -> i64 {
    let bits = ((ptr as usize as u64) << 32) | len as u64;
    bits.cast_signed()
}

/// Runs `handler` on the command input at `ptr..ptr + len` and returns where the reply is.
///
/// # Safety
///
/// As [`take`].
pub unsafe fn command(
    ptr: *mut u8,
    len: usize,
    handler: fn(&Command) -> Result<Value, String>,
) -> i64 {
    // SAFETY: the caller's guarantee.
    let input = unsafe { begin(ptr, len) };
    let reply = match msgpack::decode_command(&input) {
        Ok(cmd) => handler(&cmd).unwrap_or_else(error),
        Err(e) => error(format!("bad command input: {e}")),
    };
    drop(input);
    finish(&reply)
}

/// Runs `handler` on the event at `ptr..ptr + len`; returns 0 (the host ignores the reply).
/// An `Err` from the handler, or an input that cannot be read, is logged at warn level.
///
/// # Safety
///
/// As [`take`].
pub unsafe fn event(
    ptr: *mut u8,
    len: usize,
    handler: fn(&str, &Value) -> Result<(), String>,
) -> i64 {
    // SAFETY: the caller's guarantee.
    let input = unsafe { begin(ptr, len) };
    let decoded = msgpack::decode_event(&input);
    drop(input);
    let outcome = match decoded {
        Ok(event) => handler(&event.topic, &event.payload)
            .map_err(|e| format!("event on `{}`: {e}", event.topic)),
        Err(e) => Err(format!("bad event input: {e}")),
    };
    if let Err(message) = outcome {
        host::log(Level::Warn, &message);
    }
    0
}

/// Runs `handler` on the event at `ptr..ptr + len` and returns where its verdict is. An input
/// that cannot be read is logged at error level and let through unchanged.
///
/// # Safety
///
/// As [`take`].
pub unsafe fn intercept(ptr: *mut u8, len: usize, handler: fn(&str, &Value) -> Verdict) -> i64 {
    // SAFETY: the caller's guarantee.
    let input = unsafe { begin(ptr, len) };
    let decoded = msgpack::decode_event(&input);
    drop(input);
    let verdict = match decoded {
        Ok(event) => handler(&event.topic, &event.payload),
        Err(e) => {
            host::log(Level::Error, &format!("bad intercept input: {e}"));
            Verdict::Continue(None)
        }
    };
    finish(&verdict.to_value())
}

/// What every export does first: installs the panic hook (once), frees the previous reply
/// (the host read it when the previous call returned) and takes the input back.
///
/// # Safety
///
/// As [`take`].
unsafe fn begin(ptr: *mut u8, len: usize) -> Vec<u8> {
    static PANIC_HOOK: Once = Once::new();
    PANIC_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| host::log(Level::Error, &info.to_string())));
    });
    drop(std::mem::take(&mut *reply_slot()));
    // SAFETY: the caller's guarantee.
    unsafe { take(ptr, len) }
}

/// Keeps `reply`'s bytes until the next call and returns where they are.
fn finish(reply: &Value) -> i64 {
    let mut slot = reply_slot();
    *slot = reply.encode();
    pack(slot.as_ptr(), slot.len())
}

fn reply_slot() -> MutexGuard<'static, Vec<u8>> {
    REPLY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The reply `{"error": message}`.
fn error(message: String) -> Value {
    Value::Map(vec![("error".into(), Value::Str(message))])
}
