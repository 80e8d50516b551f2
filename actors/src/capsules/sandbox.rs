//! One capsule's WebAssembly instance on wasmer: compiled with metering and a memory
//! ceiling, called through the host ABI, every way a guest can fail told apart. Plain code
//! (no actor), tested with WAT modules. A [`Sandbox`] is not `Send` (wasmer's `Store` is
//! not): build it on the thread that will call it.
//!
//! ABI version 1 (the guest's side):
//!
//! - exports `memory`;
//! - exports `astrid_alloc(len: i32) -> i32`: room for `len` bytes the host may write;
//! - exports `astrid_handle(ptr: i32, len: i32) -> i64`: handles the MessagePack input at
//!   `ptr..ptr+len` and returns where its MessagePack reply is, as `ptr << 32 | len`;
//! - may import `astrid.log(level: i32, ptr: i32, len: i32)`: a UTF-8 line for the daemon's
//!   log (0 error, 1 warn, 2 info, 3 debug).
//!
//! Metering: each call may spend [`Limits::fuel`] points (one per operator); a guest that
//! runs out is stopped with [`CallError::OutOfFuel`]. Memory: the linear memory cannot grow
//! past [`Limits::memory_pages`] (`memory.grow` returns -1 to the guest beyond it).

use std::ptr::NonNull;
use std::sync::Arc;

use wasmer::sys::vm::{TrapCode, VMMemory, VMMemoryDefinition, VMTable, VMTableDefinition};
use wasmer::sys::{BaseTunables, CompilerConfig, Cranelift, NativeEngineExt, Tunables};
use wasmer::wasmparser::Operator;
use wasmer::{
    Engine, Function, FunctionEnv, FunctionEnvMut, Instance, Memory, MemoryError, MemoryStyle,
    MemoryType, Module, Pages, RuntimeError, Store, TableStyle, TableType, TypedFunction, imports,
};
use wasmer_middlewares::Metering;
use wasmer_middlewares::metering::{MeteringPoints, get_remaining_points, set_remaining_points};

use super::manifest::Limits;

/// The ABI version this host implements.
pub const ABI_VERSION: u32 = 1;

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
}

/// A compiled module, ready to be instantiated any number of times (`Send` and `Sync`).
#[derive(Clone)]
pub struct Compiled {
    engine: Engine,
    module: Module,
    limits: Limits,
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
/// [`LoadError::Compile`] for anything that is not a valid module.
pub fn compile(bytes: &[u8], limits: Limits) -> Result<Compiled, LoadError> {
    let mut compiler = Cranelift::default();
    compiler.push_middleware(Arc::new(Metering::new(limits.fuel, |_: &Operator| 1)));
    let mut engine: Engine = compiler.into();
    engine.set_tunables(CappedMemory {
        pages: Pages(limits.memory_pages),
        base: BaseTunables::new(),
    });
    let module = Module::new(&engine, bytes).map_err(|e| LoadError::Compile(e.to_string()))?;
    Ok(Compiled {
        engine,
        module,
        limits,
    })
}

/// What host functions see.
struct HostState {
    memory: Option<Memory>,
    capsule: String,
}

/// One instance of a capsule's module, with its store.
pub struct Sandbox {
    store: Store,
    instance: Instance,
    memory: Memory,
    alloc: TypedFunction<i32, i32>,
    handle: TypedFunction<(i32, i32), i64>,
    fuel: u64,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("fuel", &self.fuel)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Instantiates `compiled` for capsule `capsule` (named in its log lines).
    ///
    /// # Errors
    ///
    /// [`LoadError::Instantiate`] or [`LoadError::Export`].
    pub fn new(compiled: &Compiled, capsule: &str) -> Result<Self, LoadError> {
        let mut store = Store::new(compiled.engine.clone());
        let env = FunctionEnv::new(
            &mut store,
            HostState {
                memory: None,
                capsule: capsule.to_owned(),
            },
        );
        let imports = imports! {
            "astrid" => {
                "log" => Function::new_typed_with_env(&mut store, &env, host_log),
            }
        };
        let instance = Instance::new(&mut store, &compiled.module, &imports)
            .map_err(|e| LoadError::Instantiate(e.to_string()))?;
        let memory = instance
            .exports
            .get_memory("memory")
            .map_err(|_| LoadError::Export("a memory named `memory`".into()))?
            .clone();
        env.as_mut(&mut store).memory = Some(memory.clone());
        let alloc = instance
            .exports
            .get_typed_function(&store, "astrid_alloc")
            .map_err(|_| LoadError::Export("`astrid_alloc(i32) -> i32`".into()))?;
        let handle = instance
            .exports
            .get_typed_function(&store, "astrid_handle")
            .map_err(|_| LoadError::Export("`astrid_handle(i32, i32) -> i64`".into()))?;
        Ok(Self {
            store,
            instance,
            memory,
            alloc,
            handle,
            fuel: compiled.limits.fuel,
        })
    }

    /// Hands `input` (MessagePack) to the guest's `astrid_handle` and returns its reply.
    ///
    /// # Errors
    ///
    /// See [`CallError`].
    pub fn call(&mut self, input: &[u8]) -> Result<Vec<u8>, CallError> {
        let len = i32::try_from(input.len())
            .map_err(|_| CallError::Garbage("the input is larger than 2 GiB".into()))?;
        set_remaining_points(&mut self.store, &self.instance, self.fuel);
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| self.failure(e))?;
        self.memory
            .view(&self.store)
            .write(offset(ptr)?, input)
            .map_err(|e| CallError::Garbage(format!("astrid_alloc returned {ptr}: {e}")))?;
        let packed = self
            .handle
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
        if matches!(
            get_remaining_points(&mut self.store, &self.instance),
            MeteringPoints::Exhausted
        ) {
            return CallError::OutOfFuel(self.fuel);
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

fn offset(ptr: i32) -> Result<u64, CallError> {
    u64::try_from(ptr).map_err(|_| CallError::Garbage(format!("astrid_alloc returned {ptr}")))
}

/// `ptr << 32 | len`, both unsigned 32-bit.
fn unpack(packed: i64) -> (u32, u32) {
    let bits = packed.cast_unsigned();
    let high = u32::try_from(bits >> 32).unwrap_or(u32::MAX);
    let low = u32::try_from(bits & 0xffff_ffff).unwrap_or(u32::MAX);
    (high, low)
}

/// `astrid.log(level, ptr, len)`.
#[allow(
    clippy::needless_pass_by_value,
    reason = "wasmer hands host functions their environment by value"
)]
fn host_log(env: FunctionEnvMut<'_, HostState>, level: i32, ptr: i32, len: i32) {
    let state = env.data();
    let Some(memory) = &state.memory else {
        return;
    };
    let (Ok(ptr), Ok(len)) = (u64::try_from(ptr), usize::try_from(len)) else {
        return;
    };
    let mut bytes = vec![0; len.min(4096)];
    if memory.view(&env).read(ptr, &mut bytes).is_err() {
        tracing::warn!(capsule = %state.capsule, "log line outside the capsule's memory");
        return;
    }
    let line = String::from_utf8_lossy(&bytes);
    let capsule = &state.capsule;
    match level {
        0 => tracing::error!(capsule = %capsule, "{line}"),
        1 => tracing::warn!(capsule = %capsule, "{line}"),
        2 => tracing::info!(capsule = %capsule, "{line}"),
        _ => tracing::debug!(capsule = %capsule, "{line}"),
    }
}

/// Tunables that keep every linear memory at or below `pages`.
struct CappedMemory {
    pages: Pages,
    base: BaseTunables,
}

impl CappedMemory {
    fn capped(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        if ty.minimum > self.pages {
            return Err(MemoryError::Generic(format!(
                "the module asks for {} pages at start; the limit is {}",
                ty.minimum.0, self.pages.0
            )));
        }
        let mut capped = *ty;
        capped.maximum = Some(ty.maximum.map_or(self.pages, |m| m.min(self.pages)));
        Ok(capped)
    }
}

// wasmer's `Tunables` has two `unsafe fn`s (the VM hands over where to build the memory or
// table); these only pass their arguments on to wasmer's own `BaseTunables`.
#[allow(unsafe_code)]
impl Tunables for CappedMemory {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        let capped = self.capped(memory).unwrap_or(*memory);
        self.base.memory_style(&capped)
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
    ) -> Result<VMMemory, MemoryError> {
        self.base.create_host_memory(&self.capped(ty)?, style)
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let capped = self.capped(ty)?;
        // SAFETY: the caller's guarantee about `vm_definition_location` is passed on as is.
        unsafe {
            self.base
                .create_vm_memory(&capped, style, vm_definition_location)
        }
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(ty, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        // SAFETY: as above.
        unsafe { self.base.create_vm_table(ty, style, vm_definition_location) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest whose `astrid_handle` runs `body` (with `$ptr` and `$len` the input) and
    /// echoes its input back, over a bump allocator at 1024.
    fn guest(body: &str) -> String {
        format!(
            r#"(module
                (import "astrid" "log" (func $log (param i32 i32 i32)))
                (memory (export "memory") 1)
                (data (i32.const 16) "hello from wasm")
                (func (export "astrid_alloc") (param $len i32) (result i32) (i32.const 1024))
                (func $recurse (result i32) (call $recurse))
                (func (export "astrid_handle") (param $ptr i32) (param $len i32) (result i64)
                    {body}
                    (i64.or
                        (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
                        (i64.extend_i32_u (local.get $len)))))"#
        )
    }

    fn sandbox(body: &str, limits: Limits) -> Sandbox {
        let compiled = compile(guest(body).as_bytes(), limits).unwrap();
        Sandbox::new(&compiled, "test").unwrap()
    }

    #[test]
    fn a_call_round_trips_the_input_and_host_imports_work() {
        let mut s = sandbox(
            "(call $log (i32.const 2) (i32.const 16) (i32.const 15))",
            Limits::default(),
        );
        assert_eq!(s.call(b"\x92\x01\x02").unwrap(), b"\x92\x01\x02");
        assert_eq!(s.call(b"again").unwrap(), b"again");
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
            assert_eq!(s.call(b"bad").unwrap_err(), expected, "{body}");
            assert_eq!(s.call(b"ok").unwrap(), b"ok", "usable after {body}");
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
        assert_eq!(s.call(b"x").unwrap(), b"x");
        assert_eq!(s.memory_pages(), 3);
        // A module that starts larger than the limit does not load.
        let big = compile(
            br#"(module (memory (export "memory") 8)
                (func (export "astrid_alloc") (param i32) (result i32) (i32.const 0))
                (func (export "astrid_handle") (param i32 i32) (result i64) (i64.const 0)))"#,
            limits,
        )
        .unwrap();
        assert!(matches!(
            Sandbox::new(&big, "big"),
            Err(LoadError::Instantiate(_))
        ));
    }

    #[test]
    fn garbage_replies_and_bad_modules_are_errors() {
        // A reply range past the end of memory.
        let mut s = sandbox(
            "(return (i64.const 0x0000fff0_00100000))",
            Limits::default(),
        );
        assert!(matches!(s.call(b"x"), Err(CallError::Garbage(_))));
        assert!(matches!(
            compile(b"not a module", Limits::default()),
            Err(LoadError::Compile(_))
        ));
        let no_exports = compile(b"(module)", Limits::default()).unwrap();
        assert!(matches!(
            Sandbox::new(&no_exports, "x"),
            Err(LoadError::Export(_))
        ));
        let unknown_import = compile(
            br#"(module (import "env" "nope" (func)))"#,
            Limits::default(),
        )
        .unwrap();
        assert!(matches!(
            Sandbox::new(&unknown_import, "x"),
            Err(LoadError::Instantiate(_))
        ));
    }
}
