//! The tunables that cap what a guest can make the host allocate: linear memory within the
//! capsule's `memory_pages`, tables within [`MAX_TABLE_ELEMENTS`].

use std::ptr::NonNull;

use wasmer::sys::vm::{VMMemory, VMMemoryDefinition, VMTable, VMTableDefinition};
use wasmer::sys::{BaseTunables, Tunables};
use wasmer::{MemoryError, MemoryStyle, MemoryType, Pages, TableStyle, TableType};

use super::inspect::MAX_TABLE_ELEMENTS;

/// Tunables that keep every linear memory at or below `pages`, and every table at or below
/// [`MAX_TABLE_ELEMENTS`].
pub(super) struct Capped {
    pages: Pages,
    base: BaseTunables,
}

impl Capped {
    /// Memories capped at `memory_pages` pages.
    pub(super) fn new(memory_pages: u32) -> Self {
        Self {
            pages: Pages(memory_pages),
            base: BaseTunables::new(),
        }
    }

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

    /// Without a maximum, a table grows as far as `table.grow` asks (wasmer checks nothing
    /// else), filling every new element inside the host call.
    fn capped_table(ty: &TableType) -> Result<TableType, String> {
        if ty.minimum > MAX_TABLE_ELEMENTS {
            return Err(format!(
                "the module asks for a table of {} elements; the limit is {MAX_TABLE_ELEMENTS}",
                ty.minimum
            ));
        }
        let mut capped = *ty;
        capped.maximum = Some(
            ty.maximum
                .map_or(MAX_TABLE_ELEMENTS, |m| m.min(MAX_TABLE_ELEMENTS)),
        );
        Ok(capped)
    }
}

// wasmer's `Tunables` has two `unsafe fn`s (the VM hands over where to build the memory or
// table); these only pass their arguments on to wasmer's own `BaseTunables`.
#[allow(unsafe_code)]
impl Tunables for Capped {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        let capped = self.capped(memory).unwrap_or(*memory);
        self.base.memory_style(&capped)
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        let capped = Self::capped_table(table).unwrap_or(*table);
        self.base.table_style(&capped)
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
        self.base.create_host_table(&Self::capped_table(ty)?, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        let capped = Self::capped_table(ty)?;
        // SAFETY: as above.
        unsafe {
            self.base
                .create_vm_table(&capped, style, vm_definition_location)
        }
    }
}
