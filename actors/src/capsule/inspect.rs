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

use wasmer::wasmparser::{ElementItems, Parser, Payload};

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
    let malformed =
        |e: wasmer::wasmparser::BinaryReaderError| InspectError::Malformed(e.to_string());
    let mut functions = 0u32;
    let mut memories = 0u32;
    let mut element_items = 0u64;
    let mut data_bytes = 0u64;
    let memory_bytes = u64::from(memory_pages) * PAGE;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(malformed)? {
            Payload::TypeSection(types) => at_most("function types", types.count(), MAX_TYPES)?,
            Payload::ImportSection(imports) => {
                // Only functions can be imported (see `sandbox::check_abi`).
                functions = functions.saturating_add(imports.count());
            }
            Payload::FunctionSection(defined) => {
                functions = functions.saturating_add(defined.count());
                at_most("functions", functions, MAX_FUNCTIONS)?;
            }
            Payload::TableSection(tables) => {
                at_most("tables", tables.count(), MAX_TABLES)?;
                for table in tables {
                    let table = table.map_err(malformed)?;
                    if table.ty.initial > u64::from(MAX_TABLE_ELEMENTS) {
                        return Err(InspectError::Limit(format!(
                            "it declares a table of {} elements; a table may hold at most \
                             {MAX_TABLE_ELEMENTS}",
                            table.ty.initial
                        )));
                    }
                }
            }
            Payload::MemorySection(section) => {
                for memory in section {
                    let memory = memory.map_err(malformed)?;
                    memories += 1;
                    if memory.shared || memory.memory64 {
                        return Err(InspectError::Limit(
                            "it declares a shared or 64-bit memory; a capsule has one plain \
                             32-bit memory"
                                .into(),
                        ));
                    }
                    if memory.initial > u64::from(memory_pages) {
                        return Err(InspectError::Limit(format!(
                            "its memory starts at {} pages; `limits.memory_pages` is {memory_pages}",
                            memory.initial
                        )));
                    }
                }
                at_most("memories", memories, 1)?;
            }
            Payload::TagSection(_) => {
                return Err(InspectError::Limit(
                    "it declares exception tags; exceptions are not supported".into(),
                ));
            }
            Payload::GlobalSection(globals) => at_most("globals", globals.count(), MAX_GLOBALS)?,
            Payload::ExportSection(exports) => at_most("exports", exports.count(), MAX_EXPORTS)?,
            Payload::ElementSection(elements) => {
                at_most("element segments", elements.count(), MAX_ELEMENT_SEGMENTS)?;
                for element in elements {
                    let items = match element.map_err(malformed)?.items {
                        ElementItems::Functions(f) => f.count(),
                        ElementItems::Expressions(_, e) => e.count(),
                    };
                    element_items += u64::from(items);
                }
                if element_items > MAX_ELEMENT_ITEMS {
                    return Err(InspectError::Limit(format!(
                        "its element segments hold {element_items} items; the limit is \
                         {MAX_ELEMENT_ITEMS}"
                    )));
                }
            }
            Payload::DataSection(segments) => {
                at_most("data segments", segments.count(), MAX_DATA_SEGMENTS)?;
                for segment in segments {
                    data_bytes += segment.map_err(malformed)?.data.len() as u64;
                }
                if data_bytes > memory_bytes {
                    return Err(InspectError::Limit(format!(
                        "its data segments hold {data_bytes} bytes, more than its memory \
                         ceiling of {memory_bytes} bytes (`limits.memory_pages` = {memory_pages})"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
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
