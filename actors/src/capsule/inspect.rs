//! What a capsule's module may declare, checked on its bytes before it is compiled: every
//! structure a module makes the host allocate (memories, tables, element and data
//! segments, functions, globals, types, exports) has a host-wide ceiling here, so that a
//! hostile module is refused at load with the limit it breaks, instead of costing memory
//! at every instantiation. Pure: bytes in, a verdict out.
//!
//! The ceilings are fixed for the host (not per manifest), far above what real capsules
//! use: a Rust capsule built for `wasm32-unknown-unknown` has one memory, one funcref table
//! of a few dozen entries, a few globals and a few hundred functions. Linear memory alone
//! is per manifest (`limits.memory_pages`); data segments are held to it too, since their
//! bytes are only useful inside that memory. What a table may grow to at run time is held
//! by the sandbox's tunables to the same [`MAX_TABLE_ELEMENTS`].

use wasmer::wasmparser::{
    BinaryReaderError, DataSectionReader, ElementItems, ElementSectionReader, MemorySectionReader,
    Parser, Payload, TableSectionReader,
};

/// Largest module file (`.wasm`, or `.wat` text, and the binary made from it): 8 MiB.
pub const MAX_MODULE_BYTES: u64 = 8 << 20;
/// Most tables a module may define.
pub const MAX_TABLES: u32 = 8;
/// Most elements a table may hold, declared or grown to (a `table.grow` past it returns
/// -1): 65,536 elements, 512 KiB of the host's memory per table.
pub const MAX_TABLE_ELEMENTS: u32 = 65_536;
/// Most element segments.
pub const MAX_ELEMENT_SEGMENTS: u32 = 10_000;
/// Most items in all element segments together.
pub const MAX_ELEMENT_ITEMS: u64 = 65_536;
/// Most data segments.
pub const MAX_DATA_SEGMENTS: u32 = 10_000;
/// Most functions, imported and defined.
pub const MAX_FUNCTIONS: u32 = 100_000;
/// Largest code section (all function bodies together): 4 MiB. Compiling is what costs the
/// host most at load: measured in a debug build, about 100 MiB for a second or two for
/// 4 MiB of code in bodies of 256 KiB (the module's data, which is not compiled, may take
/// the rest of [`MAX_MODULE_BYTES`]).
pub const MAX_CODE_BYTES: u64 = 4 << 20;
/// Largest function body: 256 KiB. A body costs about 40 times its size while it is
/// compiled, two or so at a time (measured: 40 MiB for 1 MiB, 200 MiB for one of 7 MB).
pub const MAX_FUNCTION_BYTES: u64 = 256 << 10;
/// Most globals.
pub const MAX_GLOBALS: u32 = 10_000;
/// Most function types.
pub const MAX_TYPES: u32 = 10_000;
/// Most exports.
pub const MAX_EXPORTS: u32 = 10_000;

/// Bytes in a WebAssembly page.
const PAGE: u64 = 64 * 1024;

/// Why a module breaks a limit of this module (or cannot be read to tell).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    /// The bytes are not a module.
    #[error("{0}")]
    Malformed(String),
    /// The module declares more than a limit allows.
    #[error("{0}")]
    Limit(String),
}

/// Checks the size of a module file (or of the binary made from WAT text).
///
/// # Errors
///
/// [`InspectError::Limit`] over [`MAX_MODULE_BYTES`].
pub fn check_size(len: u64) -> Result<(), InspectError> {
    if len > MAX_MODULE_BYTES {
        return Err(InspectError::Limit(format!(
            "it is {len} bytes; the limit is {MAX_MODULE_BYTES} bytes (8 MiB)"
        )));
    }
    Ok(())
}

/// Checks what the binary module `wasm` declares against this module's ceilings, with
/// `memory_pages` the capsule's memory ceiling.
///
/// # Errors
///
/// [`InspectError::Limit`] naming the first limit broken; [`InspectError::Malformed`] when
/// the sections cannot be read (the compiler would refuse the module anyway).
pub fn check(wasm: &[u8], memory_pages: u32) -> Result<(), InspectError> {
    check_size(wasm.len() as u64)?;
    let mut tally = Tally {
        memory_pages,
        ..Tally::default()
    };
    for payload in Parser::new(0).parse_all(wasm) {
        tally.add(payload.map_err(malformed)?)?;
    }
    Ok(())
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(malformed)`"
)]
fn malformed(e: BinaryReaderError) -> InspectError {
    InspectError::Malformed(e.to_string())
}

fn limit(reason: String) -> Result<(), InspectError> {
    Err(InspectError::Limit(reason))
}

/// What the sections read so far declare, where a limit spans several sections.
#[derive(Debug, Default)]
struct Tally {
    memory_pages: u32,
    functions: u32,
    memories: u32,
    element_items: u64,
    data_bytes: u64,
}

impl Tally {
    fn add(&mut self, payload: Payload<'_>) -> Result<(), InspectError> {
        match payload {
            Payload::TypeSection(types) => at_most("function types", types.count(), MAX_TYPES),
            // Only functions can be imported (see `sandbox::check_abi`).
            Payload::ImportSection(imports) => {
                self.functions = self.functions.saturating_add(imports.count());
                Ok(())
            }
            Payload::FunctionSection(defined) => {
                self.functions = self.functions.saturating_add(defined.count());
                at_most("functions", self.functions, MAX_FUNCTIONS)
            }
            Payload::TableSection(tables) => Self::tables(tables),
            Payload::MemorySection(memories) => self.memories(memories),
            Payload::TagSection(_) => {
                limit("it declares exception tags; exceptions are not supported".into())
            }
            Payload::GlobalSection(globals) => at_most("globals", globals.count(), MAX_GLOBALS),
            Payload::ExportSection(exports) => at_most("exports", exports.count(), MAX_EXPORTS),
            Payload::ElementSection(elements) => self.elements(elements),
            Payload::CodeSectionStart { size, .. } if u64::from(size) > MAX_CODE_BYTES => limit(
                format!("its code is {size} bytes; the limit is {MAX_CODE_BYTES} bytes (4 MiB)"),
            ),
            Payload::CodeSectionEntry(body) => {
                let range = body.range();
                let len = range.end - range.start;
                if len > MAX_FUNCTION_BYTES {
                    return limit(format!(
                        "a function's body is {len} bytes; the limit is {MAX_FUNCTION_BYTES} \
                         bytes (256 KiB)"
                    ));
                }
                Ok(())
            }
            Payload::DataSection(segments) => self.data(segments),
            _ => Ok(()),
        }
    }

    fn tables(tables: TableSectionReader<'_>) -> Result<(), InspectError> {
        at_most("tables", tables.count(), MAX_TABLES)?;
        for table in tables {
            let initial = table.map_err(malformed)?.ty.initial;
            if initial > u64::from(MAX_TABLE_ELEMENTS) {
                return limit(format!(
                    "it declares a table of {initial} elements; a table may hold at most \
                     {MAX_TABLE_ELEMENTS}"
                ));
            }
        }
        Ok(())
    }

    fn memories(&mut self, memories: MemorySectionReader<'_>) -> Result<(), InspectError> {
        for memory in memories {
            let memory = memory.map_err(malformed)?;
            self.memories += 1;
            if memory.shared || memory.memory64 {
                return limit(
                    "it declares a shared or 64-bit memory; a capsule has one plain 32-bit \
                     memory"
                        .into(),
                );
            }
            if memory.initial > u64::from(self.memory_pages) {
                return limit(format!(
                    "its memory starts at {} pages; `limits.memory_pages` is {}",
                    memory.initial, self.memory_pages
                ));
            }
        }
        at_most("memories", self.memories, 1)
    }

    fn elements(&mut self, elements: ElementSectionReader<'_>) -> Result<(), InspectError> {
        at_most("element segments", elements.count(), MAX_ELEMENT_SEGMENTS)?;
        for element in elements {
            self.element_items += u64::from(match element.map_err(malformed)?.items {
                ElementItems::Functions(f) => f.count(),
                ElementItems::Expressions(_, e) => e.count(),
            });
        }
        if self.element_items > MAX_ELEMENT_ITEMS {
            return limit(format!(
                "its element segments hold {} items; the limit is {MAX_ELEMENT_ITEMS}",
                self.element_items
            ));
        }
        Ok(())
    }

    fn data(&mut self, segments: DataSectionReader<'_>) -> Result<(), InspectError> {
        at_most("data segments", segments.count(), MAX_DATA_SEGMENTS)?;
        for segment in segments {
            self.data_bytes += segment.map_err(malformed)?.data.len() as u64;
        }
        let memory_bytes = u64::from(self.memory_pages) * PAGE;
        if self.data_bytes > memory_bytes {
            return limit(format!(
                "its data segments hold {} bytes, more than its memory ceiling of \
                 {memory_bytes} bytes (`limits.memory_pages` = {})",
                self.data_bytes, self.memory_pages
            ));
        }
        Ok(())
    }
}

fn at_most(what: &str, count: u32, max: u32) -> Result<(), InspectError> {
    if count > max {
        return Err(InspectError::Limit(format!(
            "it declares {count} {what}; the limit is {max}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wat(text: &str) -> Vec<u8> {
        wasmer::wat2wasm(text.as_bytes()).unwrap().into_owned()
    }

    fn limit(text: &str) -> String {
        match check(&wat(text), 16) {
            Err(InspectError::Limit(reason)) => reason,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn an_ordinary_module_passes() {
        let echo = include_str!("../../../examples/capsules/echo/echo.wat");
        check(&wat(echo), 16).unwrap();
        check(
            &wat(
                r#"(module (memory 16) (table 100 funcref) (global i32 (i32.const 0))
                (data (i32.const 0) "x") (elem (i32.const 0) func $f) (func $f))"#,
            ),
            16,
        )
        .unwrap();
    }

    #[test]
    fn tables_are_capped_in_number_and_size() {
        check(&wat("(module (table 65536 funcref))"), 16).unwrap();
        assert!(limit("(module (table 65537 funcref))").contains("65537 elements"));
        assert!(limit("(module (table 10000000 externref))").contains("at most 65536"));
        let nine = "(table 1 funcref)".repeat(9);
        assert!(limit(&format!("(module {nine})")).contains("9 tables"));
        // A large declared maximum is fine: growth is capped at run time.
        check(&wat("(module (table 1 4000000000 funcref))"), 16).unwrap();
    }

    #[test]
    fn one_plain_memory_within_the_ceiling() {
        assert!(limit("(module (memory 17))").contains("17 pages"));
        assert!(limit("(module (memory 1) (memory 1))").contains("2 memories"));
        assert!(limit("(module (memory 1 1 shared))").contains("shared"));
        check(&wat("(module (memory 16))"), 16).unwrap();
    }

    #[test]
    fn segments_are_capped() {
        // Data beyond the memory ceiling (16 pages, 1 MiB).
        let big = "\\00".repeat(600 * 1024);
        let text = format!(r#"(module (memory 1) (data "{big}") (data "{big}"))"#);
        assert!(limit(&text).contains("data segments hold 1228800 bytes"));
        let many = "(data \"\")".repeat(10_001);
        assert!(limit(&format!("(module (memory 1) {many})")).contains("10001 data segments"));
        let items = "$f ".repeat(40_000);
        let text = format!("(module (func $f) (elem func {items}) (elem func {items}))");
        assert!(limit(&text).contains("80000 items"));
    }

    #[test]
    fn counts_are_capped() {
        let globals = "(global i32 (i32.const 0))".repeat(10_001);
        assert!(limit(&format!("(module {globals})")).contains("10001 globals"));
        let types = "(type (func))".repeat(10_001);
        assert!(limit(&format!("(module {types})")).contains("10001 function types"));
        let functions = "(func)".repeat(100_001);
        assert!(limit(&format!("(module {functions})")).contains("100001 functions"));
        let tags = "(module (tag))";
        assert!(limit(tags).contains("exception"));
    }

    #[test]
    fn function_bodies_are_capped() {
        // `local.get 0 local.get 0 i32.add local.set 0` is 7 bytes.
        let body = |ops: usize| {
            format!(
                "(module (func (param i32) {}))",
                "local.get 0 local.get 0 i32.add local.set 0 ".repeat(ops)
            )
        };
        check(&wat(&body(37_400)), 16).unwrap();
        assert!(limit(&body(37_500)).contains("a function's body is 2625"));
        let bodies = |n: usize| {
            let one = "local.get 0 local.get 0 i32.add local.set 0 ".repeat(37_000);
            format!("(module {})", format!("(func (param i32) {one})").repeat(n))
        };
        check(&wat(&bodies(16)), 16).unwrap();
        assert!(limit(&bodies(17)).contains("its code is 44"));
    }

    #[test]
    fn size_is_capped() {
        check_size(MAX_MODULE_BYTES).unwrap();
        assert!(matches!(
            check_size(MAX_MODULE_BYTES + 1),
            Err(InspectError::Limit(reason)) if reason.contains("8 MiB")
        ));
        assert!(matches!(
            check(b"\0asm\x01\0\0\0\x01", 16),
            Err(InspectError::Malformed(_))
        ));
    }
}
