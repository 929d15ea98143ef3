//! VMCS regions and typed access to the current VMCS.
//!
//! Field access goes through [`Current`], a token that exists only while a VMCS is
//! current on this CPU (returned by [`VmcsRegion::load`]), so a vmread/vmwrite without a
//! current VMCS cannot be written. Writable and read-only fields are different types
//! (`vmx::fields`), so writing a read-only field does not compile.

use super::fields::{Field16, Field32, Field64, FieldNatural, ReadOnly32, ReadOnly64, ReadOnlyNatural};
use super::instr::{self, VmFail};
use crate::mm::{paging, phys};
use core::marker::PhantomData;

/// One 4 KiB VMCS region, owned by one vCPU.
#[derive(Debug)]
pub struct VmcsRegion {
    phys: u64,
}

impl VmcsRegion {
    /// A zeroed region stamped with the CPU's VMCS revision id (SDM Vol. 3C "Format of
    /// the VMCS Region"), then VMCLEARed so it is in the clear, inactive state.
    pub fn allocate(revision_id: u32) -> Option<Self> {
        let phys = phys::allocate()?;
        let virt = paging::phys_to_virt(phys) as *mut u32;
        // SAFETY: a fresh frame owned by us, reached through the direct map.
        unsafe {
            core::ptr::write_bytes(virt as *mut u8, 0, 4096);
            virt.write_volatile(revision_id);
        }
        // SAFETY: the region was just initialised and is not current anywhere.
        if unsafe { instr::vmclear(phys) }.is_err() {
            phys::deallocate(phys);
            return None;
        }
        Some(Self { phys })
    }

    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Makes this VMCS current on this CPU.
    ///
    /// # Safety
    /// The region must not be current on another CPU (a vCPU runs on one CPU, and
    /// migrating it needs a VMCLEAR on the old CPU first).
    pub unsafe fn load(&self) -> Result<Current, VmFail> {
        // SAFETY: forwarded to the caller.
        unsafe { instr::vmptrld(self.phys) }?;
        Ok(Current { _not_send: PhantomData })
    }

    /// Writes this VMCS back to memory and makes it inactive and clear, so that any CPU
    /// may load it next (VM entry then needs VMLAUNCH).
    ///
    /// # Safety
    /// VMX root operation; no `Current` token for this VMCS may be used afterwards
    /// (VMCLEAR of the current VMCS leaves no current VMCS).
    pub unsafe fn clear(&self) -> Result<(), VmFail> {
        // SAFETY: forwarded to the caller.
        unsafe { instr::vmclear(self.phys) }
    }
}

impl Drop for VmcsRegion {
    fn drop(&mut self) {
        // SAFETY: a region being dropped is no longer used by any vCPU.
        let _ = unsafe { instr::vmclear(self.phys) };
        phys::deallocate(self.phys);
    }
}

/// Proof that a VMCS is current on this CPU. Not `Send`: the current VMCS is per-CPU.
pub struct Current {
    _not_send: PhantomData<*const ()>,
}

#[cold]
fn write_failed(encoding: u32, value: u64, e: instr::VmFail) {
    log::warn!("vmwrite {encoding:#x} = {value:#x} failed: {e:?}");
}

impl Current {
    #[inline(always)]
    fn write(&self, encoding: u32, value: u64) {
        // SAFETY: a VMCS is current (this token exists). A failed write means an
        // unsupported field on this CPU: VM entry then reports the inconsistency.
        if let Err(e) = unsafe { instr::vmwrite(encoding, value) } {
            write_failed(encoding, value, e);
        }
    }

    #[inline(always)]
    fn read(&self, encoding: u32) -> u64 {
        // SAFETY: a VMCS is current (this token exists).
        unsafe { instr::vmread_or_zero(encoding) }
    }

    #[inline]
    pub fn write16(&self, field: Field16, value: u16) {
        self.write(field.encoding(), u64::from(value));
    }

    #[inline]
    pub fn write32(&self, field: Field32, value: u32) {
        self.write(field.encoding(), u64::from(value));
    }

    #[inline]
    pub fn write64(&self, field: Field64, value: u64) {
        self.write(field.encoding(), value);
    }

    #[inline]
    pub fn write_natural(&self, field: FieldNatural, value: u64) {
        self.write(field.encoding(), value);
    }

    #[inline]
    pub fn read16(&self, field: Field16) -> u16 {
        self.read(field.encoding()) as u16
    }

    #[inline]
    pub fn read32(&self, field: Field32) -> u32 {
        self.read(field.encoding()) as u32
    }

    #[inline]
    pub fn read64(&self, field: Field64) -> u64 {
        self.read(field.encoding())
    }

    #[inline]
    pub fn read_natural(&self, field: FieldNatural) -> u64 {
        self.read(field.encoding())
    }

    #[inline]
    pub fn read_ro32(&self, field: ReadOnly32) -> u32 {
        self.read(field.encoding()) as u32
    }

    #[inline]
    pub fn read_ro64(&self, field: ReadOnly64) -> u64 {
        self.read(field.encoding())
    }

    #[inline]
    pub fn read_ro_natural(&self, field: ReadOnlyNatural) -> u64 {
        self.read(field.encoding())
    }
}
