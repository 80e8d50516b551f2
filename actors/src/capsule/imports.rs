//! The host imports as the guest calls them (module `astrid`): each reads its arguments out
//! of the guest's memory within bounds, asks [`Host`] to do the work, and hands results back
//! through the guest's allocator. The numbers they return are the ABI's (see the README's
//! "Capsule ABI").
//!
//! Every import goes through one [`hook`] between the guest and its work, which
//! - in a replay, answers from the recording and does no work (see `tape.rs`);
//! - applies an armed import fault (see `faults.rs`): `fail` gives the guest the fault's code
//!   without doing the work, `delay` waits (until the call's deadline at most), then works;
//! - records what the import gave the guest, for a crash bundle.
//!
//! So an import is split in three: read its arguments and do the work (a closure that
//! answers a [`HostGiven`]), the hook, and hand the result over to the guest.

use std::time::{Duration, Instant};

use wasmer::{AsStoreMut, FunctionEnvMut, Memory, RuntimeError, TypedFunction};

use super::config::ConfigError;
use super::host::{Host, HostError};
use super::http;
use super::log;
use super::sandbox::CallError;
use super::tape::Tape;
use crate::protocol::{HostGiven, ImportEffect};
use crate::rate::RateBudget;

/// What host functions see.
pub(super) struct HostState {
    pub(super) memory: Option<Memory>,
    pub(super) alloc: Option<TypedFunction<i32, i32>>,
    pub(super) host: Host,
    /// The running call's deadline; host imports wait for services until then.
    pub(super) deadline: Instant,
    /// What the guest may still write to the daemon's log.
    pub(super) log: RateBudget,
    /// The most bytes the guest's memory may hold (`limits.memory_pages`).
    pub(super) ceiling: usize,
    /// The record of the instance's calls, or the recording a replay follows.
    pub(super) tape: Tape,
    /// Set by an import's work when what it gives the guest is a secret, which is never
    /// recorded.
    pub(super) secret: bool,
}

/// A required setting was unset: the call ends with this message (see `config_get`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Unconfigured(pub(super) String);

pub(super) fn offset(ptr: i32) -> Result<u64, CallError> {
    u64::try_from(ptr).map_err(|_| CallError::Garbage(format!("astrid_alloc returned {ptr}")))
}

/// `ptr << 32 | len`, both unsigned 32-bit.
pub(super) fn unpack(packed: i64) -> (u32, u32) {
    let bits = packed.cast_unsigned();
    let high = u32::try_from(bits >> 32).unwrap_or(u32::MAX);
    let low = u32::try_from(bits & 0xffff_ffff).unwrap_or(u32::MAX);
    (high, low)
}

/// Copies `len` bytes at `ptr` out of the guest's memory (at most `max`).
pub(super) fn read_guest(
    env: &FunctionEnvMut<'_, HostState>,
    ptr: i32,
    len: i32,
    max: usize,
) -> Result<Vec<u8>, HostError> {
    let memory = env.data().memory.as_ref().ok_or(HostError::Failed)?;
    let (Ok(ptr), Ok(len)) = (u64::try_from(ptr), usize::try_from(len)) else {
        return Err(HostError::Invalid);
    };
    if len > max {
        return Err(HostError::TooLarge);
    }
    let view = memory.view(env);
    // Checked before allocating: a range outside the memory costs the host nothing.
    if ptr.saturating_add(len as u64) > view.data_size() {
        return Err(HostError::Invalid);
    }
    let mut bytes = vec![0; len];
    view.read(ptr, &mut bytes).map_err(|_| HostError::Invalid)?;
    Ok(bytes)
}

/// `Failed` once the call's deadline has passed: an import then does nothing at all (no
/// copy of the guest's bytes, no message to a service), so that a guest looping on imports
/// past its deadline costs the host only the trip, until its fuel ends the call.
pub(super) fn live(env: &FunctionEnvMut<'_, HostState>) -> Result<(), HostError> {
    if Instant::now() >= env.data().deadline {
        Err(HostError::Failed)
    } else {
        Ok(())
    }
}

/// A UTF-8 string (key, topic, path) out of the guest's memory.
pub(super) fn read_str(
    env: &FunctionEnvMut<'_, HostState>,
    ptr: i32,
    len: i32,
) -> Result<String, HostError> {
    String::from_utf8(read_guest(env, ptr, len, MAX_NAME)?).map_err(|_| HostError::Invalid)
}

/// Longest key, topic or path a guest may pass.
const MAX_NAME: usize = 4096;
/// Largest value or file a guest may pass (the services apply their own, lower limits).
const MAX_DATA: usize = 64 * 1024 * 1024;

/// Copies `data` into memory the guest allocates with `astrid_alloc`; returns its packed
/// location. An `astrid_alloc` that traps (or runs out of fuel) inside the host call makes
/// the whole call trap: the guest's memory cannot be trusted after it.
pub(super) fn give_guest(
    env: &mut FunctionEnvMut<'_, HostState>,
    data: &[u8],
) -> Result<Result<i64, HostError>, RuntimeError> {
    let Ok(len) = i32::try_from(data.len()) else {
        return Ok(Err(HostError::TooLarge));
    };
    let (state, mut store) = env.data_and_store_mut();
    let (Some(alloc), Some(memory)) = (state.alloc.clone(), state.memory.clone()) else {
        return Ok(Err(HostError::Failed));
    };
    let ptr = alloc
        .call(&mut store.as_store_mut(), len)
        .map_err(|e| RuntimeError::new(format!("astrid_alloc failed inside a host call: {e}")))?;
    let written = u64::try_from(ptr)
        .ok()
        .and_then(|at| memory.view(&store).write(at, data).ok());
    let (Some(()), Ok(ptr), Ok(len)) = (written, u32::try_from(ptr), u32::try_from(len)) else {
        return Err(RuntimeError::new(format!(
            "astrid_alloc returned {ptr}, which cannot hold {len} bytes"
        )));
    };
    Ok(Ok((i64::from(ptr) << 32) | i64::from(len)))
}

/// Runs one host import between the guest and `work` (see the module's docs): `import` is
/// its name, `sizes` the lengths the guest passed.
fn hook(
    env: &mut FunctionEnvMut<'_, HostState>,
    import: &'static str,
    sizes: &[i32],
    work: impl FnOnce(&mut FunctionEnvMut<'_, HostState>) -> HostGiven,
) -> Result<HostGiven, RuntimeError> {
    if let Some(given) = env.data_mut().tape.replayed(import, sizes)? {
        return Ok(given);
    }
    let given = match env.data().host.faults().on_import(import) {
        None => work(env),
        Some(ImportEffect::Fail { code }) => HostGiven::Code(code.into()),
        Some(ImportEffect::Delay { millis }) => {
            let left = env
                .data()
                .deadline
                .saturating_duration_since(Instant::now());
            std::thread::sleep(Duration::from_millis(millis).min(left));
            work(env)
        }
    };
    let state = env.data_mut();
    // Time the call waited for the user does not count against its deadline.
    state.deadline += state.host.pauses().take_fresh();
    let secret = std::mem::take(&mut state.secret);
    state.tape.record(import, sizes, &given, secret);
    Ok(given)
}

/// A status import's work: `0` or an error code.
fn status(result: Result<(), HostError>) -> HostGiven {
    HostGiven::Code(result.map_or_else(|e| e.code().into(), |()| 0))
}

/// A data import's work: the bytes to hand over, or an error code.
fn data(result: Result<Vec<u8>, HostError>) -> HostGiven {
    result.map_or_else(|e| HostGiven::Code(e.code().into()), HostGiven::Bytes)
}

/// What a status import returns.
fn code(given: &HostGiven) -> i32 {
    match given {
        HostGiven::Code(code) => i32::try_from(*code).unwrap_or(HostError::Failed.code()),
        _ => HostError::Failed.code(),
    }
}

/// What a data import returns: the location of the bytes it handed over, or a code.
fn hand_over(
    env: &mut FunctionEnvMut<'_, HostState>,
    given: HostGiven,
) -> Result<i64, RuntimeError> {
    match given {
        HostGiven::Code(code) => Ok(code),
        HostGiven::Bytes(bytes) => give_guest(env, &bytes).map(packed),
        HostGiven::Unconfigured(message) => {
            Err(RuntimeError::user(Box::new(Unconfigured(message))))
        }
        HostGiven::Omitted { .. } | HostGiven::Withheld { .. } => {
            Ok(HostError::Failed.code().into())
        }
    }
}

pub(super) fn packed(result: Result<i64, HostError>) -> i64 {
    result.unwrap_or_else(|e| i64::from(e.code()))
}

/// Converts a pointer or length argument for the hook's record.
fn len(value: i32) -> i32 {
    value.max(0)
}

/// `astrid.log(level, ptr, len)`: within the capsule's log budget (see `log.rs`). A `fail`
/// fault drops the line.
pub(super) fn host_log(
    mut env: FunctionEnvMut<'_, HostState>,
    level: i32,
    ptr: i32,
    len_: i32,
) -> Result<(), RuntimeError> {
    hook(&mut env, "log", &[len(len_)], |env| {
        if !env.data_mut().log.admit(Instant::now()) {
            return HostGiven::Code(0);
        }
        let capsule = env.data().host.capsule().to_owned();
        let max = i32::try_from(log::MAX_LINE).unwrap_or(i32::MAX);
        let Ok(bytes) = read_guest(env, ptr, len_.min(max), log::MAX_LINE) else {
            tracing::warn!(%capsule, "log line outside the capsule's memory");
            return HostGiven::Code(0);
        };
        let line = log::sanitize(&bytes);
        match level {
            0 => tracing::error!(%capsule, "{line}"),
            1 => tracing::warn!(%capsule, "{line}"),
            2 => tracing::info!(%capsule, "{line}"),
            _ => tracing::debug!(%capsule, "{line}"),
        }
        HostGiven::Code(0)
    })?;
    Ok(())
}

/// `astrid.publish(topic_ptr, topic_len, payload_ptr, payload_len) -> i32`.
pub(super) fn host_publish(
    mut env: FunctionEnvMut<'_, HostState>,
    tp: i32,
    tl: i32,
    pp: i32,
    pl: i32,
) -> Result<i32, RuntimeError> {
    let given = hook(&mut env, "publish", &[len(tl), len(pl)], |env| {
        status((|| {
            live(env)?;
            let topic = read_str(env, tp, tl)?;
            let payload = read_guest(env, pp, pl, MAX_DATA)?;
            let state = env.data();
            state.host.publish(&topic, &payload, state.deadline)
        })())
    })?;
    Ok(code(&given))
}

/// `astrid.kv_get(key_ptr, key_len) -> i64`.
pub(super) fn host_kv_get(
    mut env: FunctionEnvMut<'_, HostState>,
    kp: i32,
    kl: i32,
) -> Result<i64, RuntimeError> {
    let given = hook(&mut env, "kv_get", &[len(kl)], |env| {
        data(
            live(env)
                .and_then(|()| read_str(env, kp, kl))
                .and_then(|key| {
                    let state = env.data();
                    state.host.kv_get(&key, state.deadline)
                }),
        )
    })?;
    hand_over(&mut env, given)
}

/// `astrid.kv_put(key_ptr, key_len, value_ptr, value_len) -> i32`.
pub(super) fn host_kv_put(
    mut env: FunctionEnvMut<'_, HostState>,
    kp: i32,
    kl: i32,
    vp: i32,
    vl: i32,
) -> Result<i32, RuntimeError> {
    let given = hook(&mut env, "kv_put", &[len(kl), len(vl)], |env| {
        status((|| {
            live(env)?;
            let key = read_str(env, kp, kl)?;
            let value = read_guest(env, vp, vl, MAX_DATA)?;
            let state = env.data();
            state.host.kv_put(&key, value, state.deadline)
        })())
    })?;
    Ok(code(&given))
}

/// `astrid.kv_delete(key_ptr, key_len) -> i32`.
pub(super) fn host_kv_delete(
    mut env: FunctionEnvMut<'_, HostState>,
    kp: i32,
    kl: i32,
) -> Result<i32, RuntimeError> {
    let given = hook(&mut env, "kv_delete", &[len(kl)], |env| {
        status((|| {
            live(env)?;
            let key = read_str(env, kp, kl)?;
            let state = env.data();
            state.host.kv_delete(&key, state.deadline)
        })())
    })?;
    Ok(code(&given))
}

/// `astrid.vfs_read(path_ptr, path_len) -> i64`.
pub(super) fn host_vfs_read(
    mut env: FunctionEnvMut<'_, HostState>,
    pp: i32,
    pl: i32,
) -> Result<i64, RuntimeError> {
    let given = hook(&mut env, "vfs_read", &[len(pl)], |env| {
        data(
            live(env)
                .and_then(|()| read_str(env, pp, pl))
                .and_then(|path| {
                    let state = env.data();
                    state.host.vfs_read(&path, state.deadline)
                }),
        )
    })?;
    hand_over(&mut env, given)
}

/// `astrid.vfs_write(path_ptr, path_len, data_ptr, data_len) -> i32`.
pub(super) fn host_vfs_write(
    mut env: FunctionEnvMut<'_, HostState>,
    pp: i32,
    pl: i32,
    dp: i32,
    dl: i32,
) -> Result<i32, RuntimeError> {
    let given = hook(&mut env, "vfs_write", &[len(pl), len(dl)], |env| {
        status((|| {
            live(env)?;
            let path = read_str(env, pp, pl)?;
            let data = read_guest(env, dp, dl, MAX_DATA)?;
            let state = env.data();
            state.host.vfs_write(&path, data, state.deadline)
        })())
    })?;
    Ok(code(&given))
}

/// `astrid.mcp_call(request_ptr, request_len) -> i64`.
pub(super) fn host_mcp_call(
    mut env: FunctionEnvMut<'_, HostState>,
    rp: i32,
    rl: i32,
) -> Result<i64, RuntimeError> {
    let given = hook(&mut env, "mcp_call", &[len(rl)], |env| {
        data(
            live(env)
                .and_then(|()| read_guest(env, rp, rl, MAX_DATA))
                .and_then(|request| {
                    let state = env.data();
                    state.host.mcp_call(&request, state.deadline)
                }),
        )
    })?;
    hand_over(&mut env, given)
}

/// `astrid.clock_now() -> i64`: the wall clock, in milliseconds since the Unix epoch. A
/// `fail` fault makes it return the fault's (negative) code, a time before the epoch.
pub(super) fn host_clock_now(mut env: FunctionEnvMut<'_, HostState>) -> Result<i64, RuntimeError> {
    let given = hook(&mut env, "clock_now", &[], |_| {
        HostGiven::Code(i64::try_from(crate::clock::unix_millis()).unwrap_or(i64::MAX))
    })?;
    match given {
        HostGiven::Code(millis) => Ok(millis),
        _ => Ok(HostError::Failed.code().into()),
    }
}

/// Most bytes one `random_fill` call may ask for.
pub(super) const MAX_RANDOM: usize = 1024 * 1024;

/// `astrid.random_fill(ptr, len) -> i32`: fills the guest's `ptr..ptr+len` from the
/// operating system's CSPRNG.
pub(super) fn host_random_fill(
    mut env: FunctionEnvMut<'_, HostState>,
    ptr: i32,
    len_: i32,
) -> Result<i32, RuntimeError> {
    let given = hook(&mut env, "random_fill", &[len(len_)], |env| {
        data((|| {
            live(env)?;
            let Ok(len) = usize::try_from(len_) else {
                return Err(HostError::Invalid);
            };
            if len > MAX_RANDOM {
                return Err(HostError::TooLarge);
            }
            let mut bytes = vec![0; len];
            getrandom::fill(&mut bytes).map_err(|e| {
                tracing::error!(capsule = %env.data().host.capsule(), "the CSPRNG failed: {e}");
                HostError::Failed
            })?;
            Ok(bytes)
        })())
    })?;
    let bytes = match given {
        HostGiven::Bytes(bytes) => bytes,
        other => return Ok(code(&other)),
    };
    let written = (|| {
        let memory = env.data().memory.as_ref().ok_or(HostError::Failed)?;
        let at = u64::try_from(ptr).map_err(|_| HostError::Invalid)?;
        let view = memory.view(&env);
        if at.saturating_add(bytes.len() as u64) > view.data_size() {
            return Err(HostError::Invalid);
        }
        view.write(at, &bytes).map_err(|_| HostError::Invalid)
    })();
    Ok(written.map_or_else(HostError::code, |()| 0))
}

/// `astrid.config_get(key_ptr, key_len) -> i64`: the location of a setting's value (UTF-8).
/// A required setting that is unset ends the call with [`ConfigError::Missing`]'s message,
/// which the client gets as the command's error; the capsule is not restarted for it.
pub(super) fn host_config_get(
    mut env: FunctionEnvMut<'_, HostState>,
    kp: i32,
    kl: i32,
) -> Result<i64, RuntimeError> {
    let given = hook(&mut env, "config_get", &[len(kl)], |env| {
        let key = match live(env).and_then(|()| read_str(env, kp, kl)) {
            Ok(key) => key,
            Err(e) => return HostGiven::Code(e.code().into()),
        };
        env.data_mut().secret = env.data().host.config_secret(&key);
        match env.data().host.config_get(&key) {
            Ok(value) => HostGiven::Bytes(value.into_bytes()),
            Err(ConfigError::Undeclared { .. }) => {
                HostGiven::Code(HostError::Invalid.code().into())
            }
            Err(missing @ ConfigError::Missing { .. }) => {
                HostGiven::Unconfigured(missing.to_string())
            }
        }
    })?;
    hand_over(&mut env, given)
}

/// `astrid.http_request(request_ptr, request_len) -> i64`: the location of the response map
/// (see `http.rs`); its body is at most half the capsule's memory, and 16 MiB.
pub(super) fn host_http_request(
    mut env: FunctionEnvMut<'_, HostState>,
    rp: i32,
    rl: i32,
) -> Result<i64, RuntimeError> {
    let max_request = http::MAX_REQUEST_BODY + http::MAX_HEADER_BYTES + 8192;
    let given = hook(&mut env, "http_request", &[len(rl)], |env| {
        data(
            live(env)
                .and_then(|()| read_guest(env, rp, rl, max_request))
                .and_then(|request| {
                    let state = env.data();
                    let max_body = (state.ceiling / 2).min(http::MAX_RESPONSE_BODY);
                    state.host.http_request(&request, state.deadline, max_body)
                }),
        )
    })?;
    hand_over(&mut env, given)
}
