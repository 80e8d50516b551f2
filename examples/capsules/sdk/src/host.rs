//! The host functions (module `astrid`), with safe wrappers. Only what a capsule calls is
//! imported: the linker drops the rest, so a capsule that calls none of the ABI 1.1 imports
//! (`clock_now`, `random_fill`, `config_get`, `http_request`) loads on a 1.0 host too. Each
//! needs its capability in `Capsule.toml` (`kv`, `vfs:read:<glob>`, `vfs:write:<glob>`,
//! `bus:publish:<pattern>`, `net:http:<scheme>://<host>...`), except `log`, `clock_now`,
//! `random_fill` and `config_get` (the capsule's own settings).

use std::fmt;

use crate::abi;
use crate::msgpack::Value;

#[link(wasm_import_module = "astrid")]
unsafe extern "C" {
    #[link_name = "log"]
    fn astrid_log(level: i32, ptr: *const u8, len: usize);
    #[link_name = "publish"]
    fn astrid_publish(topic: *const u8, topic_len: usize, data: *const u8, len: usize) -> i32;
    #[link_name = "kv_get"]
    fn astrid_kv_get(key: *const u8, key_len: usize) -> i64;
    #[link_name = "kv_put"]
    fn astrid_kv_put(key: *const u8, key_len: usize, value: *const u8, len: usize) -> i32;
    #[link_name = "kv_delete"]
    fn astrid_kv_delete(key: *const u8, key_len: usize) -> i32;
    #[link_name = "vfs_read"]
    fn astrid_vfs_read(path: *const u8, path_len: usize) -> i64;
    #[link_name = "vfs_write"]
    fn astrid_vfs_write(path: *const u8, path_len: usize, data: *const u8, len: usize) -> i32;
    #[link_name = "clock_now"]
    fn astrid_clock_now() -> i64;
    #[link_name = "random_fill"]
    fn astrid_random_fill(ptr: *mut u8, len: usize) -> i32;
    #[link_name = "config_get"]
    fn astrid_config_get(key: *const u8, key_len: usize) -> i64;
    #[link_name = "http_request"]
    fn astrid_http_request(request: *const u8, len: usize) -> i64;
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// 0.
    Error = 0,
    /// 1.
    Warn = 1,
    /// 2.
    Info = 2,
    /// 3.
    Debug = 3,
}

/// A host function's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub i32);

impl HostError {
    /// The capability is missing (the denial is audited).
    pub const DENIED: HostError = HostError(-1);
    /// No such key or file.
    pub const NOT_FOUND: HostError = HostError(-2);
    /// Bad UTF-8, key, topic or path, or a range outside memory.
    pub const INVALID: HostError = HostError(-3);
    /// Too large.
    pub const TOO_LARGE: HostError = HostError(-4);
    /// The service is unavailable, or a storage or I/O error.
    pub const FAILED: HostError = HostError(-5);
}

impl fmt::Display for HostError {
    /// `code <n>`, to follow what failed: `kv_get count: code -1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}", self.0)
    }
}

/// `0` is success; anything else an error code.
fn status(code: i32) -> Result<(), HostError> {
    if code == 0 {
        Ok(())
    } else {
        Err(HostError(code))
    }
}

/// A packed location of bytes the host wrote through `astrid_alloc`, taken back; `-2` is
/// `None`, any other negative number an error. (A location is never negative: memory is at
/// most 4096 pages, so addresses stay below 2^31.)
fn bytes(packed: i64) -> Result<Option<Vec<u8>>, HostError> {
    if packed < 0 {
        let code = i32::try_from(packed).unwrap_or(HostError::FAILED.0);
        return match HostError(code) {
            HostError::NOT_FOUND => Ok(None),
            error => Err(error),
        };
    }
    let bits = packed.cast_unsigned();
    #[allow(clippy::cast_possible_truncation)] // both halves are 32-bit by construction
    let (ptr, len) = (
        (bits >> 32) as usize as *mut u8,
        (bits & 0xffff_ffff) as usize,
    );
    // SAFETY: the host copied the value into memory it got from `astrid_alloc(len)`, and
    // this is the only place that takes it back.
    Ok(Some(unsafe { abi::take(ptr, len) }))
}

/// Writes a line to the daemon log (no capability needed).
pub fn log(level: Level, line: &str) {
    // SAFETY: the host reads `line` during the call.
    unsafe { astrid_log(level as i32, line.as_ptr(), line.len()) }
}

/// Publishes `payload` on `topic` (`bus:publish:<pattern>`); the event's source is
/// `capsule:<name>`.
///
/// # Errors
///
/// The host's error code.
pub fn publish(topic: &str, payload: &Value) -> Result<(), HostError> {
    publish_raw(topic, &payload.encode())
}

/// Publishes `payload`, already MessagePack, on `topic` (`bus:publish:<pattern>`).
///
/// # Errors
///
/// The host's error code (`-3` when `payload` is not one MessagePack value).
pub fn publish_raw(topic: &str, payload: &[u8]) -> Result<(), HostError> {
    // SAFETY: the host reads both ranges during the call.
    status(unsafe { astrid_publish(topic.as_ptr(), topic.len(), payload.as_ptr(), payload.len()) })
}

/// The value of `key` in the capsule's namespace, `None` when there is none (`kv`).
///
/// # Errors
///
/// The host's error code, other than not found.
pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
    // SAFETY: the host reads `key` during the call.
    bytes(unsafe { astrid_kv_get(key.as_ptr(), key.len()) })
}

/// Sets `key` to `value`; returns once durable (`kv`).
///
/// # Errors
///
/// The host's error code.
pub fn kv_put(key: &str, value: &[u8]) -> Result<(), HostError> {
    // SAFETY: the host reads both ranges during the call.
    status(unsafe { astrid_kv_put(key.as_ptr(), key.len(), value.as_ptr(), value.len()) })
}

/// Deletes `key`: `true` when it existed (`kv`).
///
/// # Errors
///
/// The host's error code, other than not found.
pub fn kv_delete(key: &str) -> Result<bool, HostError> {
    // SAFETY: the host reads `key` during the call.
    match status(unsafe { astrid_kv_delete(key.as_ptr(), key.len()) }) {
        Ok(()) => Ok(true),
        Err(HostError::NOT_FOUND) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The bytes of workspace file `path`, `None` when it does not exist (`vfs:read:<glob>`).
///
/// # Errors
///
/// The host's error code, other than not found.
pub fn vfs_read(path: &str) -> Result<Option<Vec<u8>>, HostError> {
    // SAFETY: the host reads `path` during the call.
    bytes(unsafe { astrid_vfs_read(path.as_ptr(), path.len()) })
}

/// Replaces workspace file `path` with `data`, atomically, creating its parent directories
/// (`vfs:write:<glob>`).
///
/// # Errors
///
/// The host's error code.
pub fn vfs_write(path: &str, data: &[u8]) -> Result<(), HostError> {
    // SAFETY: the host reads both ranges during the call.
    status(unsafe { astrid_vfs_write(path.as_ptr(), path.len(), data.as_ptr(), data.len()) })
}

/// The wall clock, in milliseconds since the Unix epoch.
pub fn clock_now() -> u64 {
    // SAFETY: no arguments.
    u64::try_from(unsafe { astrid_clock_now() }).unwrap_or(0)
}

/// Fills `buf` from the host's CSPRNG (at most 1 MiB at once).
///
/// # Errors
///
/// The host's error code.
pub fn random_fill(buf: &mut [u8]) -> Result<(), HostError> {
    // SAFETY: the host writes `buf` during the call.
    status(unsafe { astrid_random_fill(buf.as_mut_ptr(), buf.len()) })
}

/// The value of the capsule's setting `key` (declared in `[[config]]`): the one the user set,
/// else its default. A required setting that is unset ends the call with an error naming the
/// command that sets it; this function does not return then.
///
/// # Errors
///
/// The host's error code: `-3` for a key the manifest does not declare.
pub fn config_get(key: &str) -> Result<String, HostError> {
    // SAFETY: the host reads `key` during the call.
    let value = bytes(unsafe { astrid_config_get(key.as_ptr(), key.len()) })?
        .ok_or(HostError::NOT_FOUND)?;
    String::from_utf8(value).map_err(|_| HostError::INVALID)
}

/// An HTTP request for [`http_request`].
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// `GET` when empty.
    pub method: String,
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// The body (none when empty).
    pub body: Vec<u8>,
    /// A time limit shorter than the call's, if any.
    pub timeout_ms: Option<u64>,
}

/// What [`http_request`] returns.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Response headers (lowercase names; repeated ones joined with `, `).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Makes an HTTP request (`net:http:<scheme>://<host>[:<port>][/<path-glob>]` for every hop,
/// redirects included). Any status is a response.
///
/// # Errors
///
/// The host's error code: `-1` outside the grants, `-3` a malformed request, `-4` past a
/// bound, `-5` a failed, dropped or late connection.
pub fn http_request(request: &HttpRequest) -> Result<HttpResponse, HostError> {
    let mut map = vec![("url".to_owned(), Value::Str(request.url.clone()))];
    if !request.method.is_empty() {
        map.push(("method".to_owned(), Value::Str(request.method.clone())));
    }
    if !request.headers.is_empty() {
        let headers = request
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
            .collect();
        map.push(("headers".to_owned(), Value::Map(headers)));
    }
    if !request.body.is_empty() {
        map.push(("body".to_owned(), Value::Bin(request.body.clone())));
    }
    if let Some(ms) = request.timeout_ms {
        map.push((
            "timeout_ms".to_owned(),
            Value::Int(i64::try_from(ms).unwrap_or(i64::MAX)),
        ));
    }
    let encoded = Value::Map(map).encode();
    // SAFETY: the host reads `encoded` during the call.
    let reply = bytes(unsafe { astrid_http_request(encoded.as_ptr(), encoded.len()) })?
        .ok_or(HostError::NOT_FOUND)?;
    let value = crate::msgpack::decode(&reply).map_err(|_| HostError::INVALID)?;
    let status = value
        .get("status")
        .and_then(Value::as_int)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or(HostError::INVALID)?;
    let headers = match value.get("headers") {
        Some(Value::Map(entries)) => entries
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect(),
        _ => Vec::new(),
    };
    let body = match value.get("body") {
        Some(Value::Bin(b)) => b.clone(),
        _ => Vec::new(),
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}
