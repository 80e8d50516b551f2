//! One capsule's WebAssembly instance on wasmer: compiled with metering and a memory
//! ceiling, called through the host ABI (version [`ABI_VERSION`], documented in the
//! README's "Capsule ABI" section) under a wall-clock deadline, every way a guest can fail
//! told apart. Plain code (no actor), tested with WAT modules. A [`Sandbox`] is not `Send`
//! (wasmer's `Store` is not): build it on the thread that will call it.
//!
//! The guest exports `memory`, `astrid_alloc(len) -> ptr` and one `(ptr, len) -> i64`
//! function per [`Entry`]; inputs and replies are MessagePack, a reply located by
//! `ptr << 32 | len`. Host imports (module `astrid`) move bytes between the guest's memory
//! and [`Host`], which does the work (`imports.rs`); `tunables.rs` caps memories and tables.
//!
//! Metering: each call may spend [`Limits::fuel`] points (one per operator); a guest that
//! runs out is stopped with [`CallError::OutOfFuel`]. Memory: the linear memory cannot grow
//! past [`Limits::memory_pages`] (`memory.grow` returns -1 to the guest beyond it), and no
//! table past [`MAX_TABLE_ELEMENTS`](super::inspect::MAX_TABLE_ELEMENTS) (`table.grow` returns -1); what a module declares is
//! checked before it is compiled (see `inspect.rs`). The engine enables a fixed set of
//! WebAssembly features ([`features`]): not threads (a guest could block its thread forever
//! in `memory.atomic.wait`), exceptions (every `throw` allocates host memory that lives as
//! long as the instance) or more than one memory. Time:
//! host imports wait for services only until the call's deadline, and a call that ends
//! after its deadline is a failure ([`CallError::Deadline`]), whatever it answered (the time
//! it waited for the user's approval aside: `pauses.rs`). Nothing
//! preempts a guest that computes past its deadline: its fuel ends it. (wasmer's signal-based
//! host interrupt was tried and dropped: a signal landing in host code while a guest called
//! an import could deadlock the thread or abort the process.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use Type::{I32, I64};
use wasmer::sys::vm::TrapCode;
use wasmer::sys::{CompilerConfig, Cranelift, EngineBuilder, Features, NativeEngineExt};
use wasmer::wasmparser::Operator;
use wasmer::{
    Engine, ExternType, Function, FunctionEnv, FunctionType, Global, Instance, Memory, Module,
    RuntimeError, Store, Type, TypedFunction, Value, imports,
};
use wasmer_middlewares::Metering;

use super::host::Host;
use super::imports::{
    HostState, Unconfigured, host_clock_now, host_config_get, host_http_request, host_kv_delete,
    host_kv_get, host_kv_put, host_log, host_mcp_call, host_publish, host_random_fill,
    host_vfs_read, host_vfs_write, offset, unpack,
};
use super::inspect::{self, InspectError};
use super::log;
use super::tape::Tape;
use super::tunables::Capped;
use crate::capsule::Limits;
use crate::protocol::{CallEnd, CrashKind, CrashLimits};

/// The ABI version this host implements: its major version (a module of another major
/// version would not fit).
pub const ABI_VERSION: u32 = 1;
/// The ABI's minor version: imports added since 1.0 (`clock_now`, `random_fill`,
/// `config_get` and `http_request` in 1.1). A module built for an earlier minor version loads unchanged.
pub const ABI_MINOR: u32 = 1;

/// Why a module could not be made into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Not a valid module (or WAT text).
    #[error("the module does not compile: {0}")]
    Compile(String),
    /// It imports something the host does not provide, or its memory is too large.
    #[error("the module cannot be instantiated: {0}")]
    Instantiate(String),
    /// A required export is missing or has the wrong type.
    #[error("the module does not export {0}")]
    Export(String),
    /// The module is larger, or declares more, than the host allows (see `inspect.rs`).
    #[error("the module is over a limit: {0}")]
    Limit(String),
}

impl From<InspectError> for LoadError {
    fn from(e: InspectError) -> Self {
        match e {
            InspectError::Malformed(reason) => Self::Compile(reason),
            InspectError::Limit(reason) => Self::Limit(reason),
        }
    }
}

/// Why a call failed. The sandbox stays usable after every one of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The guest trapped: `unreachable`, an out-of-bounds access, a stack overflow...
    #[error("the capsule trapped: {0}")]
    Trap(String),
    /// The guest spent its metering points for this call (an endless loop, say).
    #[error("the capsule ran out of fuel ({0} points)")]
    OutOfFuel(u64),
    /// The guest returned something that is not a reply (a range outside its memory).
    #[error("the capsule returned garbage: {0}")]
    Garbage(String),
    /// The call ended after its deadline.
    #[error("the capsule did not answer within {} ms", .0.as_millis())]
    Deadline(Duration),
    /// The guest asked for a required setting the user has not set: the call ends with
    /// this message, and the capsule is not at fault (it is not restarted for it).
    #[error("{0}")]
    Unconfigured(String),
}

/// The guest functions the host calls, one per kind of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `astrid_command`: a slash command (required).
    Command,
    /// `astrid_event`: a bus event the capsule subscribed to.
    Event,
    /// `astrid_intercept`: an event on its way to subscribers.
    Intercept,
}

impl CallError {
    /// The kind of crash it is, for a crash bundle (none for an unset setting, which is
    /// not one).
    pub fn kind(&self) -> Option<CrashKind> {
        match self {
            Self::Trap(_) => Some(CrashKind::Trap),
            Self::OutOfFuel(_) => Some(CrashKind::OutOfFuel),
            Self::Garbage(_) => Some(CrashKind::Garbage),
            Self::Deadline(_) => Some(CrashKind::Deadline),
            Self::Unconfigured(_) => None,
        }
    }
}

impl Entry {
    /// The export's name.
    pub fn export(self) -> &'static str {
        match self {
            Self::Command => "astrid_command",
            Self::Event => "astrid_event",
            Self::Intercept => "astrid_intercept",
        }
    }
}

/// A compiled module, ready to be instantiated any number of times (`Send` and `Sync`).
#[derive(Clone)]
pub struct Compiled {
    engine: Engine,
    module: Module,
    limits: Limits,
    /// BLAKE3 of the module file's bytes (hex), when the registry loaded it.
    hash: Option<Arc<str>>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Compiles `bytes` (a `.wasm` module or `.wat` text) under `limits`. Each module gets an
/// engine of its own: a `Metering` middleware serves one module only.
///
/// # Errors
///
/// [`LoadError::Compile`] for anything that is not a valid module, [`LoadError::Limit`]
/// for one over a limit of `inspect.rs`.
pub fn compile(bytes: &[u8], limits: Limits) -> Result<Compiled, LoadError> {
    compile_binary(&binary(bytes, limits)?, limits)
}

/// Compiles `wasm`, a binary module already checked by [`binary`].
pub(crate) fn compile_binary(wasm: &[u8], limits: Limits) -> Result<Compiled, LoadError> {
    let engine = engine(limits);
    let module = Module::new(&engine, wasm).map_err(|e| LoadError::Compile(e.to_string()))?;
    check_abi(&module)?;
    Ok(Compiled {
        engine,
        module,
        limits,
        hash: None,
    })
}

/// The binary module of `bytes` (WAT text is translated), checked against the limits of
/// `inspect.rs`, before anything is compiled.
pub(crate) fn binary(bytes: &[u8], limits: Limits) -> Result<Vec<u8>, LoadError> {
    inspect::check_size(bytes.len() as u64)?;
    let wasm = wasmer::wat2wasm(bytes).map_err(|e| LoadError::Compile(e.to_string()))?;
    inspect::check(&wasm, limits.memory_pages)?;
    Ok(wasm.into_owned())
}

/// The WebAssembly features a capsule may use: those of the MVP, bulk memory, reference
/// types, SIMD, multiple values and extended constants. Not threads, exceptions, several
/// memories, 64-bit memories, tail calls, relaxed SIMD or wide arithmetic.
pub fn features() -> Features {
    let mut features = Features::none();
    features
        .bulk_memory(true)
        .reference_types(true)
        .simd(true)
        .multi_value(true)
        .extended_const(true);
    features
}

/// A Cranelift engine with its own metering middleware, the [`features`] capsules may use,
/// and the memory and table ceilings of `limits`.
pub(crate) fn engine(limits: Limits) -> Engine {
    let mut compiler = Cranelift::default();
    compiler.push_middleware(Arc::new(Metering::new(limits.fuel, |_: &Operator| 1)));
    let mut engine: Engine = EngineBuilder::new(compiler)
        .set_features(Some(features()))
        .into();
    engine.set_tunables(Capped::new(limits.memory_pages));
    engine
}

impl Compiled {
    /// A module deserialized with `engine` (from [`engine`]) for `limits`.
    pub(crate) fn from_parts(engine: Engine, module: Module, limits: Limits) -> Self {
        Self {
            engine,
            module,
            limits,
            hash: None,
        }
    }

    /// The same module, known to come from a file whose bytes hash to `hash`.
    #[must_use]
    pub fn with_hash(self, hash: &str) -> Self {
        Self {
            hash: Some(Arc::from(hash)),
            ..self
        }
    }

    /// BLAKE3 of the module file's bytes, when known.
    pub fn hash(&self) -> Option<&str> {
        self.hash.as_deref()
    }

    /// The compiled module.
    pub(crate) fn module(&self) -> &Module {
        &self.module
    }

    /// Whether the module exports the function for `entry` (known without an instance).
    pub fn has(&self, entry: Entry) -> bool {
        self.module.exports().any(|e| e.name() == entry.export())
    }

    /// The most bytes the guest's memory may hold (see [`Sandbox::memory_ceiling`]).
    pub fn memory_ceiling(&self) -> usize {
        ceiling(self.limits)
    }

    /// The wall-clock deadline of each call.
    pub fn call_timeout(&self) -> Duration {
        self.limits.call_timeout
    }

    /// The limits it was compiled for, as a crash bundle records them.
    pub fn crash_limits(&self) -> CrashLimits {
        CrashLimits {
            fuel: self.limits.fuel,
            memory_pages: self.limits.memory_pages,
            call_timeout_ms: u64::try_from(self.limits.call_timeout.as_millis())
                .unwrap_or(u64::MAX),
        }
    }
}

/// Bytes of `limits.memory_pages`.
fn ceiling(limits: Limits) -> usize {
    usize::try_from(limits.memory_pages)
        .unwrap_or(usize::MAX)
        .saturating_mul(64 * 1024)
}

/// The names of the host imports (module `astrid`), as an import fault names them.
pub fn import_names() -> impl Iterator<Item = &'static str> {
    IMPORTS.iter().map(|(name, ..)| *name)
}

/// The host imports, with their signatures (module `astrid`).
const IMPORTS: &[(&str, &[Type], &[Type])] = &[
    ("log", &[I32, I32, I32], &[]),
    ("publish", &[I32, I32, I32, I32], &[I32]),
    ("kv_get", &[I32, I32], &[I64]),
    ("kv_put", &[I32, I32, I32, I32], &[I32]),
    ("kv_delete", &[I32, I32], &[I32]),
    ("vfs_read", &[I32, I32], &[I64]),
    ("vfs_write", &[I32, I32, I32, I32], &[I32]),
    ("mcp_call", &[I32, I32], &[I64]),
    ("clock_now", &[], &[I64]),
    ("random_fill", &[I32, I32], &[I32]),
    ("config_get", &[I32, I32], &[I64]),
    ("http_request", &[I32, I32], &[I64]),
];

/// Checks a module against the ABI before anything runs, so that a capsule that could
/// never work is reported at load, with what is wrong.
pub(crate) fn check_abi(module: &Module) -> Result<(), LoadError> {
    let handler = FunctionType::new([I32, I32], [I64]);
    let export = |name: &str| {
        module
            .exports()
            .find(|e| e.name() == name)
            .map(|e| e.ty().clone())
    };
    if !matches!(export("memory"), Some(ExternType::Memory(_))) {
        return Err(LoadError::Export("a memory named `memory`".into()));
    }
    let alloc = FunctionType::new([I32], [I32]);
    if !matches!(export("astrid_alloc"), Some(ExternType::Function(f)) if f == alloc) {
        return Err(LoadError::Export("`astrid_alloc(i32) -> i32`".into()));
    }
    for entry in [Entry::Command, Entry::Event, Entry::Intercept] {
        match export(entry.export()) {
            Some(ExternType::Function(f)) if f == handler => {}
            None if entry != Entry::Command => {}
            _ => {
                return Err(LoadError::Export(format!(
                    "`{}(i32, i32) -> i64`",
                    entry.export()
                )));
            }
        }
    }
    for import in module.imports() {
        let known = IMPORTS
            .iter()
            .find(|(name, ..)| import.module() == "astrid" && *name == import.name());
        let fits = match (known, import.ty()) {
            (Some((_, params, results)), ExternType::Function(f)) => {
                f.params() == *params && f.results() == *results
            }
            _ => false,
        };
        if !fits {
            return Err(LoadError::Instantiate(format!(
                "it imports `{}.{}` ({:?}), which the host does not provide with that type; \
                 see the README's \"Capsule ABI\"",
                import.module(),
                import.name(),
                import.ty()
            )));
        }
    }
    Ok(())
}

type Handler = TypedFunction<(i32, i32), i64>;

/// One instance of a capsule's module, with its store.
pub struct Sandbox {
    store: Store,
    memory: Memory,
    /// The metering middleware's globals (looked up once, set on every call).
    remaining: Global,
    exhausted: Global,
    alloc: TypedFunction<i32, i32>,
    entries: [Option<Handler>; 3],
    env: FunctionEnv<HostState>,
    fuel: u64,
    call_timeout: Duration,
    /// Bytes the linear memory may grow to: no input larger than this can be handed over.
    memory_ceiling: usize,
    /// The WebAssembly backtrace of the last failed call, innermost frame first.
    backtrace: Vec<String>,
    /// Metering points the last call spent.
    fuel_used: u64,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("fuel", &self.fuel)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Instantiates `compiled`; its imports are served by `host`.
    ///
    /// # Errors
    ///
    /// [`LoadError::Instantiate`] or [`LoadError::Export`].
    pub fn new(compiled: &Compiled, host: Host) -> Result<Self, LoadError> {
        Self::with_tape(compiled, host, Tape::default())
    }

    /// Instantiates `compiled` with `tape`: a recorder for a live instance, a player for a
    /// replay (whose imports then answer from the recording, without `host`).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub(crate) fn with_tape(
        compiled: &Compiled,
        host: Host,
        tape: Tape,
    ) -> Result<Self, LoadError> {
        let mut store = Store::new(compiled.engine.clone());
        let env = FunctionEnv::new(
            &mut store,
            HostState {
                memory: None,
                alloc: None,
                host,
                deadline: Instant::now(),
                log: log::budget(Instant::now()),
                ceiling: ceiling(compiled.limits),
                tape,
                secret: false,
            },
        );
        let imports = imports! {
            "astrid" => {
                "log" => Function::new_typed_with_env(&mut store, &env, host_log),
                "publish" => Function::new_typed_with_env(&mut store, &env, host_publish),
                "kv_get" => Function::new_typed_with_env(&mut store, &env, host_kv_get),
                "kv_put" => Function::new_typed_with_env(&mut store, &env, host_kv_put),
                "kv_delete" => Function::new_typed_with_env(&mut store, &env, host_kv_delete),
                "vfs_read" => Function::new_typed_with_env(&mut store, &env, host_vfs_read),
                "vfs_write" => Function::new_typed_with_env(&mut store, &env, host_vfs_write),
                "mcp_call" => Function::new_typed_with_env(&mut store, &env, host_mcp_call),
                "clock_now" => Function::new_typed_with_env(&mut store, &env, host_clock_now),
                "random_fill" => Function::new_typed_with_env(&mut store, &env, host_random_fill),
                "config_get" => Function::new_typed_with_env(&mut store, &env, host_config_get),
                "http_request" => Function::new_typed_with_env(&mut store, &env, host_http_request),
            }
        };
        let instance = Instance::new(&mut store, &compiled.module, &imports)
            .map_err(|e| LoadError::Instantiate(e.to_string()))?;
        let memory = instance
            .exports
            .get_memory("memory")
            .map_err(|_| LoadError::Export("a memory named `memory`".into()))?
            .clone();
        let alloc: TypedFunction<i32, i32> = instance
            .exports
            .get_typed_function(&store, "astrid_alloc")
            .map_err(|_| LoadError::Export("`astrid_alloc(i32) -> i32`".into()))?;
        let entry = |e: Entry| -> Result<Option<Handler>, LoadError> {
            match instance.exports.get_extern(e.export()) {
                None if e != Entry::Command => Ok(None),
                _ => instance
                    .exports
                    .get_typed_function(&store, e.export())
                    .map(Some)
                    .map_err(|_| LoadError::Export(format!("`{}(i32, i32) -> i64`", e.export()))),
            }
        };
        let entries = [
            entry(Entry::Command)?,
            entry(Entry::Event)?,
            entry(Entry::Intercept)?,
        ];
        let metering = |name: &str| {
            instance.exports.get_global(name).cloned().map_err(|_| {
                LoadError::Instantiate(format!("the metering global `{name}` is missing"))
            })
        };
        let remaining = metering("wasmer_metering_remaining_points")?;
        let exhausted = metering("wasmer_metering_points_exhausted")?;
        let state = env.as_mut(&mut store);
        state.memory = Some(memory.clone());
        state.alloc = Some(alloc.clone());
        Ok(Self {
            store,
            memory,
            remaining,
            exhausted,
            alloc,
            entries,
            env,
            fuel: compiled.limits.fuel,
            call_timeout: compiled.limits.call_timeout,
            memory_ceiling: ceiling(compiled.limits),
            backtrace: Vec::new(),
            fuel_used: 0,
        })
    }

    /// The most bytes the guest's memory may hold: an input larger than this cannot be
    /// handed to it (the caller refuses it instead of crashing the capsule over it).
    pub fn memory_ceiling(&self) -> usize {
        self.memory_ceiling
    }

    /// Whether the guest exports the function for `entry`.
    pub fn has(&self, entry: Entry) -> bool {
        self.entries[entry as usize].is_some()
    }

    /// Hands `input` (MessagePack) to the guest's function for `entry` and returns its
    /// reply, within the call's fuel and deadline.
    ///
    /// # Errors
    ///
    /// See [`CallError`]. A missing optional export is a [`CallError::Trap`].
    pub fn call(&mut self, entry: Entry, input: &[u8]) -> Result<Vec<u8>, CallError> {
        let Some(handler) = self.entries[entry as usize].clone() else {
            return Err(CallError::Trap(format!(
                "the module does not export `{}`",
                entry.export()
            )));
        };
        let len = i32::try_from(input.len())
            .map_err(|_| CallError::Garbage("the input is larger than 2 GiB".into()))?;
        let started = Instant::now();
        let deadline = started + self.call_timeout;
        self.env.as_mut(&mut self.store).deadline = deadline;
        let fuel = Value::I64(i64::try_from(self.fuel).unwrap_or(i64::MAX));
        let refuel = self
            .remaining
            .set(&mut self.store, fuel)
            .and_then(|()| self.exhausted.set(&mut self.store, Value::I32(0)));
        if let Err(e) = refuel {
            return Err(CallError::Trap(format!("cannot set the call's fuel: {e}")));
        }
        self.backtrace.clear();
        let state = self.env.as_mut(&mut self.store);
        state.tape.begin(entry, input);
        state.host.pauses().begin();
        let mut reply = self.run(&handler, input, len);
        let paused = self.env.as_ref(&self.store).host.pauses().total();
        if started.elapsed().saturating_sub(paused) > self.call_timeout {
            // Late: the caller has been told `timeout`; what the guest did is not trusted.
            reply = Err(CallError::Deadline(self.call_timeout));
        }
        let fuel_used = self.spent();
        self.fuel_used = fuel_used;
        let end = CallEnd {
            failure: reply.as_ref().err().and_then(CallError::kind),
            message: reply.as_ref().err().map(ToString::to_string),
            fuel_used,
        };
        let state = self.env.as_mut(&mut self.store);
        state.tape.end(end);
        let dropped = state.log.take_dropped();
        if dropped > 0 {
            tracing::warn!(
                capsule = %state.host.capsule(),
                dropped,
                "capsule log lines dropped: a capsule may log {} lines at once, then {} a second",
                log::BURST,
                log::PER_SECOND
            );
        }
        reply
    }

    /// Metering points the last call spent.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used
    }

    /// Bytes of the instance's linear memory now.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.view(&self.store).data_size()
    }

    /// Metering points the call that just ended spent.
    fn spent(&mut self) -> u64 {
        if self
            .exhausted
            .get(&mut self.store)
            .i32()
            .is_some_and(|e| e > 0)
        {
            return self.fuel;
        }
        let left = self
            .remaining
            .get(&mut self.store)
            .i64()
            .unwrap_or_default();
        self.fuel
            .saturating_sub(u64::try_from(left).unwrap_or_default())
    }

    /// The WebAssembly backtrace of the last failed call, innermost frame first (empty
    /// when it did not trap inside the guest).
    pub fn backtrace(&self) -> &[String] {
        &self.backtrace
    }

    /// The instance's tape (its record of calls, or the recording it replays).
    pub(crate) fn tape(&mut self) -> &mut Tape {
        &mut self.env.as_mut(&mut self.store).tape
    }

    /// The calls recorded since the instance was made, and how many earlier ones were
    /// dropped (none in a replay).
    pub(crate) fn take_calls(&mut self) -> (Vec<crate::protocol::RecordedCall>, u64) {
        match std::mem::take(self.tape()) {
            Tape::Record(recorder) => recorder.into_calls(),
            Tape::Replay(_) => (Vec::new(), 0),
        }
    }

    fn run(&mut self, handler: &Handler, input: &[u8], len: i32) -> Result<Vec<u8>, CallError> {
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| self.failure(e))?;
        self.memory
            .view(&self.store)
            .write(offset(ptr)?, input)
            .map_err(|e| CallError::Garbage(format!("astrid_alloc returned {ptr}: {e}")))?;
        let packed = handler
            .call(&mut self.store, ptr, len)
            .map_err(|e| self.failure(e))?;
        let (reply_ptr, reply_len) = unpack(packed);
        let view = self.memory.view(&self.store);
        // Checked before allocating: the guest's claim is not to be trusted.
        if u64::from(reply_ptr) + u64::from(reply_len) > view.data_size() {
            return Err(CallError::Garbage(format!(
                "a reply of {reply_len} bytes at {reply_ptr} is outside its memory of {} bytes",
                view.data_size()
            )));
        }
        let mut reply = vec![0; usize::try_from(reply_len).unwrap_or_default()];
        view.read(u64::from(reply_ptr), &mut reply)
            .map_err(|e| CallError::Garbage(e.to_string()))?;
        Ok(reply)
    }

    /// Memory pages the guest uses now.
    pub fn memory_pages(&self) -> u32 {
        self.memory.view(&self.store).size().0
    }

    fn failure(&mut self, error: RuntimeError) -> CallError {
        self.backtrace = error.trace().iter().map(frame).collect();
        if self
            .exhausted
            .get(&mut self.store)
            .i32()
            .is_some_and(|e| e > 0)
        {
            return CallError::OutOfFuel(self.fuel);
        }
        if let Some(missing) = error.downcast_ref::<Unconfigured>() {
            return CallError::Unconfigured(missing.to_string());
        }
        let message = error.message();
        match error.to_trap() {
            Some(TrapCode::StackOverflow) => CallError::Trap("stack overflow".into()),
            Some(TrapCode::HeapAccessOutOfBounds) => {
                CallError::Trap("out-of-bounds memory access".into())
            }
            Some(TrapCode::UnreachableCodeReached) => CallError::Trap("unreachable".into()),
            _ => CallError::Trap(message),
        }
    }
}

/// One frame of a backtrace: `module!function @ 0xoffset`.
fn frame(frame: &wasmer::FrameInfo) -> String {
    let function = frame.function_name().map_or_else(
        || format!("<wasm function {}>", frame.func_index()),
        ToOwned::to_owned,
    );
    format!(
        "{}!{function} @ 0x{:x}",
        frame.module_name(),
        frame.module_offset()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capsule::inspect::MAX_TABLE_ELEMENTS;

    /// A guest whose `astrid_command` runs `body` (with `$ptr` and `$len` the input) and
    /// echoes its input back, over a bump allocator at 1024.
    fn guest(body: &str) -> String {
        format!(
            r#"(module
                (import "astrid" "log" (func $log (param i32 i32 i32)))
                (memory (export "memory") 1)
                (data (i32.const 16) "hello from wasm")
                (func (export "astrid_alloc") (param $len i32) (result i32) (i32.const 1024))
                (func $recurse (result i32) (call $recurse))
                (func (export "astrid_command") (param $ptr i32) (param $len i32) (result i64)
                    {body}
                    (i64.or
                        (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
                        (i64.extend_i32_u (local.get $len)))))"#
        )
    }

    fn sandbox(body: &str, limits: Limits) -> Sandbox {
        let compiled = compile(guest(body).as_bytes(), limits).unwrap();
        Sandbox::new(&compiled, Host::detached("test")).unwrap()
    }

    #[test]
    fn a_call_round_trips_the_input_and_host_imports_work() {
        let mut s = sandbox(
            "(call $log (i32.const 2) (i32.const 16) (i32.const 15))",
            Limits::default(),
        );
        assert_eq!(
            s.call(Entry::Command, b"\x92\x01\x02").unwrap(),
            b"\x92\x01\x02"
        );
        assert_eq!(s.call(Entry::Command, b"again").unwrap(), b"again");
    }

    #[test]
    fn every_failure_is_told_apart_and_the_sandbox_survives_it() {
        let cases = [
            ("unreachable", CallError::Trap("unreachable".into())),
            (
                "(drop (i32.load (i32.const 0x7ffffff0)))",
                CallError::Trap("out-of-bounds memory access".into()),
            ),
            (
                "(drop (call $recurse))",
                CallError::Trap("stack overflow".into()),
            ),
            ("(loop br 0)", CallError::OutOfFuel(100_000)),
        ];
        for (body, expected) in cases {
            let limits = Limits {
                fuel: 100_000,
                ..Limits::default()
            };
            // Each body fails only when the input is "bad"; "ok" passes through.
            let guarded = format!(
                "(if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 98)) (then {body}))"
            );
            let mut s = sandbox(&guarded, limits);
            assert_eq!(
                s.call(Entry::Command, b"bad").unwrap_err(),
                expected,
                "{body}"
            );
            assert_eq!(
                s.call(Entry::Command, b"ok").unwrap(),
                b"ok",
                "usable after {body}"
            );
        }
    }

    #[test]
    fn memory_cannot_grow_past_the_limit() {
        let limits = Limits {
            memory_pages: 4,
            ..Limits::default()
        };
        // Grow by 2 pages (to 3): fine; then by 2 more (to 5): refused with -1.
        let body = "(if (i32.eq (memory.grow (i32.const 2)) (i32.const -1)) (then unreachable))
                    (if (i32.ne (memory.grow (i32.const 2)) (i32.const -1)) (then unreachable))";
        let mut s = sandbox(body, limits);
        assert_eq!(s.call(Entry::Command, b"x").unwrap(), b"x");
        assert_eq!(s.memory_pages(), 3);
        // A module that starts larger than the limit does not load.
        let big = compile(
            br#"(module (memory (export "memory") 8)
                (func (export "astrid_alloc") (param i32) (result i32) (i32.const 0))
                (func (export "astrid_command") (param i32 i32) (result i64) (i64.const 0)))"#,
            limits,
        );
        assert!(
            matches!(&big, Err(LoadError::Limit(reason)) if reason.contains("starts at 8 pages")),
            "{big:?}"
        );
    }

    /// A guest with a funcref table declared as `table`, whose command grows it by `delta`
    /// and replies with what `table.grow` returned (a MessagePack int32), then the size.
    fn table_guest(table: &str, delta: u32) -> String {
        format!(
            r#"(module
                (memory (export "memory") 1)
                (table $t {table} funcref)
                (func (export "astrid_alloc") (param i32) (result i32) (i32.const 1024))
                (func (export "astrid_command") (param i32 i32) (result i64)
                    (i32.store8 (i32.const 0) (i32.const 0x92))
                    (i32.store8 (i32.const 1) (i32.const 0xd2))
                    (i32.store (i32.const 2)
                        (call $be (table.grow $t (ref.null func) (i32.const {delta}))))
                    (i32.store8 (i32.const 6) (i32.const 0xd2))
                    (i32.store (i32.const 7) (call $be (table.size $t)))
                    (i64.const 11))
                (func $be (param $x i32) (result i32)
                    (i32.or (i32.or
                        (i32.shl (local.get $x) (i32.const 24))
                        (i32.shl (i32.and (local.get $x) (i32.const 0xff00)) (i32.const 8)))
                      (i32.or
                        (i32.and (i32.shr_u (local.get $x) (i32.const 8)) (i32.const 0xff00))
                        (i32.shr_u (local.get $x) (i32.const 24))))))"#
        )
    }

    fn grow(table: &str, delta: u32) -> (i64, i64) {
        let compiled = compile(table_guest(table, delta).as_bytes(), Limits::default()).unwrap();
        let mut s = Sandbox::new(&compiled, Host::detached("t")).unwrap();
        let reply = s.call(Entry::Command, b"").unwrap();
        let value = rmpv::decode::read_value(&mut reply.as_slice()).unwrap();
        let pair = value.as_array().unwrap();
        (pair[0].as_i64().unwrap(), pair[1].as_i64().unwrap())
    }

    #[test]
    fn tables_cannot_grow_past_the_limit() {
        let max = MAX_TABLE_ELEMENTS;
        // No declared maximum, or one above the limit: held to the limit.
        assert_eq!(grow("1", max - 1), (1, i64::from(max)));
        assert_eq!(grow("1", max), (-1, 1));
        assert_eq!(grow("1", 0x1000_0000), (-1, 1));
        assert_eq!(grow("1 4000000000", max), (-1, 1));
        // A lower declared maximum still holds.
        assert_eq!(grow("1 10", 10), (-1, 1));
        assert_eq!(grow("1 10", 9), (1, 10));
    }

    #[test]
    fn threads_exceptions_and_extra_memories_do_not_compile() {
        let exports = r#"(func (export "astrid_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "astrid_command") (param i32 i32) (result i64) (i64.const 0))"#;
        for bad in [
            // Would block the capsule's thread for good.
            r#"(memory (export "memory") 1 1 shared)
               (func (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1))))"#,
            r#"(memory (export "memory") 1)
               (func (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1))))"#,
            // Every throw would allocate host memory for the instance's lifetime.
            r#"(memory (export "memory") 1) (tag $e) (func (throw $e))"#,
            r#"(memory (export "memory") 1) (func (try_table (catch_all 0) (nop)))"#,
            r#"(memory (export "memory") 1) (memory 1)"#,
            r#"(memory (export "memory") i64 1)"#,
        ] {
            let module = format!("(module {bad} {exports})");
            let result = compile(module.as_bytes(), Limits::default());
            assert!(
                matches!(result, Err(LoadError::Compile(_) | LoadError::Limit(_))),
                "{bad}: {result:?}"
            );
        }
    }

    #[test]
    fn garbage_replies_and_bad_modules_are_errors() {
        // A reply range past the end of memory.
        let mut s = sandbox(
            "(return (i64.const 0x0000fff0_00100000))",
            Limits::default(),
        );
        assert!(matches!(
            s.call(Entry::Command, b"x"),
            Err(CallError::Garbage(_))
        ));
        assert!(matches!(
            compile(b"not a module", Limits::default()),
            Err(LoadError::Compile(_))
        ));
        assert!(matches!(
            compile(b"(module)", Limits::default()),
            Err(LoadError::Export(e)) if e.contains("memory")
        ));
        let exports = r#"(memory (export "memory") 1)
            (func (export "astrid_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "astrid_command") (param i32 i32) (result i64) (i64.const 0))"#;
        let module = |extra: &str| format!("(module {extra} {exports})");
        assert!(compile(module("").as_bytes(), Limits::default()).is_ok());
        for bad in [
            r#"(import "env" "nope" (func))"#,
            r#"(import "astrid" "nope" (func))"#,
            r#"(import "astrid" "kv_get" (func (param i32 i32) (result i32)))"#,
        ] {
            assert!(
                matches!(
                    compile(module(bad).as_bytes(), Limits::default()),
                    Err(LoadError::Instantiate(_))
                ),
                "{bad}"
            );
        }
        let wrong_handler = r#"(module (memory (export "memory") 1)
            (func (export "astrid_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "astrid_command") (param i32) (result i64) (i64.const 0)))"#;
        assert!(matches!(
            compile(wrong_handler.as_bytes(), Limits::default()),
            Err(LoadError::Export(e)) if e.contains("astrid_command")
        ));
    }
}
